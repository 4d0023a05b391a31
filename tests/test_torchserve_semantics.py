"""TorchServe's management semantics, as its own test data (test/postman/management_data.json) expects them."""
import time

import httpx
import pytest

from conftest import run_cli
from serving_support import inference, management, metric, running_server


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("store")) as server:
        response = management(server).post("/models", params={"url": str(tiny_model.output), "model_name": "tiny"})
        assert response.status_code == 200, response.text
        yield server


def register(server, tiny_model, name, **params) -> httpx.Response:
    return management(server).post("/models", params={"url": str(tiny_model.output), "model_name": name, **params})


def wait_for_workers(server, name, count, timeout=120.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        described = management(server).get(f"/models/{name}").json()[0]
        if [w["status"] for w in described["workers"]] == ["READY"] * count:
            return described
        time.sleep(0.2)
    raise AssertionError(f"{name} did not reach {count} ready workers: {described}")


def test_a_trailing_slash_answers_like_the_path_without_it(server, tiny_model):
    assert register(server, tiny_model, "slash").status_code == 200
    client = management(server)
    assert client.get("/models/slash/").status_code == 200
    response = client.delete("/models/slash/", params={"synchronous": "true"})
    assert response.status_code == 200, response.text
    assert client.get("/models/slash").status_code == 404
    assert client.get("/models/").status_code == 200


@pytest.mark.parametrize("params", [{"limit": "", "next_page_token": ""}, {"limit": -1},
                                    {"limit": 1, "next_page_token": -1}, {"limit": 5000}])
def test_listing_is_as_tolerant_as_torchserve(server, params):
    response = management(server).get("/models", params=params)
    assert response.status_code == 200, response.text
    assert "tiny" in [m["modelName"] for m in response.json()["models"]]


@pytest.mark.parametrize("params, words", [
    ({"runtime": "python4"}, "runtime 'python4'"),
    ({"handler": "serve/ts/torch_handler/image_classifier.py:handle"}, "handler"),
    ({"number_gpu": 1}, "number_gpu 1"),
    ({"startup_timeout": 0}, "startup-timeout"),
    ({"s3_sse_kms": "true"}, "unknown register parameter(s) s3_sse_kms"),
    ({"batch_size": "dd"}, "batch_size"),
])
def test_torchserve_register_parameters_are_answered_not_ignored(server, tiny_model, params, words):
    response = register(server, tiny_model, "refused", **params)
    assert response.status_code == 400, response.text
    assert words in response.json()["message"]
    assert management(server).get("/models/refused").status_code == 404


def test_startup_timeout_runtime_and_zero_gpus_are_honoured(server, tiny_model):
    response = register(server, tiny_model, "honoured", startup_timeout=77, runtime="python3", number_gpu=0)
    assert response.status_code == 200, response.text
    runtime = server.state.registry.version("honoured", None)
    assert [w.start_timeout for w in runtime.workers] == [77]
    assert management(server).delete("/models/honoured").status_code == 200


def test_the_device_is_described_and_a_missing_gpu_is_named(server, tiny_model):
    import torch

    response = register(server, tiny_model, "on-cpu", device="cpu")
    assert response.status_code == 200, response.text
    described, = management(server).get("/models/on-cpu").json()
    assert described["device"] == "cpu" and [w["gpu"] for w in described["workers"]] == [False]
    assert management(server).delete("/models/on-cpu").status_code == 200
    refused = register(server, tiny_model, "on-tpu", device="tpu")
    assert refused.status_code == 400 and "device" in refused.json()["message"], refused.text
    if torch.cuda.is_available():
        return  # the rest is what a machine without a GPU answers
    refused = register(server, tiny_model, "on-gpu", device="cuda")
    assert refused.status_code >= 400 and "sees no CUDA GPU" in refused.json()["message"], refused.text
    assert "device cpu" in refused.json()["message"]
    assert management(server).get("/models/on-gpu").status_code == 404


def test_scale_is_asynchronous_by_default_and_honours_max_worker(server, tiny_model):
    assert register(server, tiny_model, "scaled").status_code == 200
    client = management(server)
    response = client.put("/models/scaled", params={"min_worker": 2, "max_worker": 3})
    assert response.status_code == 202 and response.json() == {"status": "Processing worker updates..."}
    described = wait_for_workers(server, "scaled", 2)
    assert described["minWorkers"] == 2 and described["maxWorkers"] == 3
    response = client.put("/models/scaled/1.0", params={"min_worker": 1, "synchronous": "true"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "Workers scaled to 1 for model: scaled, version: 1.0"
    assert len(client.get("/models/scaled").json()[0]["workers"]) == 1
    response = client.put("/models/scaled", params={"min_worker": 2, "max_worker": 1})
    assert response.status_code == 400 and "max_worker cannot be less than min_worker" in response.json()["message"]
    assert client.put("/models/scaled", params={"number_gpu": 2}).status_code == 400
    assert client.delete("/models/scaled").status_code == 200


def test_scale_to_zero_then_a_clear_503_and_back(server, tiny_model):
    assert register(server, tiny_model, "zero").status_code == 200
    client = management(server)
    assert client.put("/models/zero", params={"min_worker": 0, "synchronous": "true"}).status_code == 200
    assert client.get("/models/zero").json()[0]["workers"] == []
    response = inference(server).post("/predictions/zero", content="great")
    assert response.status_code == 503 and "min_worker=1" in response.json()["message"], response.text
    assert inference(server).get("/ping").json() == {"status": "Healthy"}  # scaled to zero on purpose
    for params in ({"timeout": 0}, {}):  # TorchServe's update with only a timeout, or nothing: one worker
        assert client.put("/models/zero", params=params).status_code == 202
        wait_for_workers(server, "zero", 1)
        assert inference(server).post("/predictions/zero", content="great").json()["label"] == "pos"
        assert client.put("/models/zero", params={"min_worker": 0, "synchronous": "true"}).status_code == 200
    assert client.delete("/models/zero").status_code == 200


def test_an_asynchronous_register_is_listed_at_once(server, tiny_model):
    client = management(server)
    assert register(server, tiny_model, "early", synchronous="false", initial_workers=1).status_code == 202
    described = client.get("/models/early")
    assert described.status_code == 200, described.text
    assert [w["status"] for w in described.json()[0]["workers"]] in (["LOADING"], ["READY"])
    assert "early" in [m["modelName"] for m in client.get("/models").json()["models"]]
    assert client.put("/models/early", params={"min_worker": 2, "synchronous": "true"}).status_code == 200
    assert [w["status"] for w in client.get("/models/early").json()[0]["workers"]] == ["READY", "READY"]
    assert client.delete("/models/early").status_code == 200


def test_unregister_right_after_an_asynchronous_register(server, tiny_model):
    client = management(server)
    assert register(server, tiny_model, "brief", synchronous="false", initial_workers=1).status_code == 202
    assert client.delete("/models/brief").status_code == 200
    time.sleep(3)  # the load that was under way ends without bringing the model back
    assert client.get("/models/brief").status_code == 404
    assert register(server, tiny_model, "brief").status_code == 200
    assert client.delete("/models/brief").status_code == 200


def test_torchserve_readings_of_odd_register_parameters(server, tiny_model):
    """What TorchServe's data expects: a non-boolean `synchronous` is false, a negative initial_workers is 0, an
    empty url names no model (404), and an asynchronous register that asked for no workers answers 200."""
    client = management(server)
    response = register(server, tiny_model, "odd", synchronous="nan")
    assert response.status_code == 200 and "starting" in response.json()["status"], response.text
    assert client.delete("/models/odd").status_code == 200
    assert register(server, tiny_model, "none", initial_workers=-1).status_code == 200
    assert client.get("/models/none").json()[0]["workers"] == []
    assert client.delete("/models/none").status_code == 200
    response = client.post("/models", params={"url": "", "model_name": "empty"})
    assert response.status_code == 404 and "url is empty" in response.json()["message"]
    response = client.post("/models", params={"url": "model\x00.tar.gz", "model_name": "nul"})
    assert response.status_code == 400 and "control character" in response.json()["message"]
    assert client.put("/models/tiny", params={"min_worker": 1, "synchronous": "-1"}).status_code == 202


def test_requests_by_class_are_written_as_torchserve_writes_them(server):
    """TorchServe's own metrics check: `Requests2XX{Level="Host",Hostname="...",} 1.0`, present from the start."""
    import re

    import httpx

    text = httpx.get(server.url("metrics") + "/metrics").text
    for status_class in "245":
        assert re.search(rf'^Requests{status_class}XX\{{Level="Host",Hostname=".*",\}} \d+\.\d+$', text, re.M), text


def test_torchserve_metric_names_beside_ours(server):
    before = metric(server, "ts_inference_requests_total", model_name="tiny", model_version="1.0")
    assert inference(server).post("/predictions/tiny", content="great").status_code == 200
    assert inference(server).post("/predictions/tiny", json={"txt": "x"}).status_code == 400
    assert metric(server, "ts_inference_requests_total", model_name="tiny", model_version="1.0") == before + 2
    assert metric(server, "ts_inference_latency_microseconds", model_name="tiny") > 0
    assert metric(server, "ts_queue_latency_microseconds", model_name="tiny") > 0
    assert metric(server, "Requests2XX", Level="Host") >= 1 and metric(server, "Requests4XX", Level="Host") >= 1
    assert metric(server, "nlpforge_requests_total", model="tiny", status="200") >= 1


def test_token_api_replaces_a_key_with_the_api_key(server, tmp_path):
    """TorchServe's `/token?type=management|inference`: only the API key may call it; the old key stops working
    at once and the key file holds the new one."""
    import json

    keys = server.state.keys
    old = keys.management
    client = httpx.Client(base_url=server.url("management"), timeout=60)
    bearer = {"Authorization": f"Bearer {keys.api}"}
    assert client.get("/token", params={"type": "management"},
                      headers={"Authorization": f"Bearer {old}"}).status_code == 401
    assert client.get("/token", params={"type": "root"}, headers=bearer).status_code == 400
    response = client.get("/token", params={"type": "management"}, headers=bearer)
    assert response.status_code == 200, response.text
    new = response.json()["management"]["key"]
    assert new != old and json.loads(keys.path.read_text())["management"]["key"] == new
    assert client.get("/models", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    assert client.get("/models", headers={"Authorization": f"Bearer {new}"}).status_code == 200
    inference_key = client.post("/token", params={"type": "inference"}, headers=bearer).json()["inference"]["key"]
    assert json.loads(keys.path.read_text())["inference"]["key"] == inference_key == keys.inference
    result = run_cli(["models", "token", "inference", "--management-url", server.url("management"),
                      "--key-file", str(keys.path)])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["inference"]["key"] == keys.inference != inference_key
    with running_server(tmp_path, auth=False) as open_server:
        response = httpx.get(open_server.url("management") + "/token", params={"type": "management"})
        assert response.status_code == 404 and "--no-auth" in response.json()["message"]

