"""The inference, management and metrics APIs over real sockets, on the bert-tiny toy model."""
import asyncio
import json
import tarfile

import httpx
import numpy as np
import pytest

from serving_support import inference, management, metric, running_server


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    with running_server(store, max_batch_items=16, max_request_bytes=20_000, max_text_chars=5_000) as server:
        client = management(server)
        response = client.post("/models", params={"url": str(tiny_model.output), "model_name": "tiny",
                                                  "batch_size": 8, "max_batch_delay": 50, "capture_percent": 100})
        assert response.status_code == 200, response.text
        yield server


def test_ping_and_options_describe_the_api(server):
    client = inference(server)
    assert client.get("/ping").json() == {"status": "Healthy"}
    paths = client.options("/").json()["paths"]
    assert {"/predictions/{model_name}", "/explanations/{model_name}", "/v1/models/{model_name}:predict",
            "/v1/models/{model_name}:explain"} <= set(paths)
    assert "/models" in httpx.options(server.url("management") + "/").json()["paths"]


@pytest.mark.parametrize("kwargs", [
    {"content": "a great movie"},
    {"content": "a great movie", "headers": {"content-type": "text/plain"}},
    {"json": {"text": "a great movie"}},
    {"json": {"data": "a great movie"}},
    {"json": "a great movie"},
    {"files": {"data": ("review.txt", b"a great movie")}},
])
def test_predictions_accept_torchserve_bodies(server, kwargs):
    response = inference(server).post("/predictions/tiny", **kwargs)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] == "pos" and body["truncated"] is False
    assert set(body["probabilities"]) == {"neg", "pos"}
    assert body["score"] == pytest.approx(max(body["probabilities"].values()))
    assert response.headers["x-model-version"] == "1.0"


def test_a_list_gets_a_list_and_a_version_path_works(server):
    client = inference(server)
    body = client.post("/predictions/tiny/1.0", json=["an awful film", {"text": "superb acting"}]).json()
    assert [b["label"] for b in body] == ["neg", "pos"]
    kserve = client.post("/v1/models/tiny:predict", json={"instances": ["dreadful plot", "wonderful story"]}).json()
    assert [p["label"] for p in kserve["predictions"]] == ["neg", "pos"]
    assert client.get("/v1/models/tiny").json() == {"name": "tiny", "ready": True}


def test_explanations_are_attributions_and_attention_and_agree_with_the_model_folder(server, tiny_model):
    import nlpforge

    body = inference(server).post("/explanations/tiny", json={"text": "great movie"}).json()
    assert body["label"] == "pos" and body["words"] == ["[CLS]", "great", "movie", "[SEP]"]
    assert len(body["importances"]) == 4 and sum(v * v for v in body["importances"]) == pytest.approx(1, abs=1e-3)
    attention = body["attention"]
    assert (attention["layers"], attention["heads"], attention["tokens"]) == (2, 2, body["words"])  # bert-tiny
    assert all(sum(row) == pytest.approx(1.0, abs=1e-3) for layer in attention["weights"] for head in layer
               for row in head)
    kserve = inference(server).post("/v1/models/tiny:explain", json={"instances": ["great movie", "awful"]})
    assert kserve.status_code == 200, kserve.text
    explanations = kserve.json()["explanations"]
    assert [e["label"] for e in explanations] == ["pos", "neg"]
    local = nlpforge.load(tiny_model.output).explain("great movie")[0]
    for served in (body, explanations[0]):
        assert served["words"] == local["words"] and served["attention"]["tokens"] == local["attention"]["tokens"]
        assert served["importances"] == pytest.approx(local["importances"], abs=1e-3)
        assert np.allclose(served["attention"]["weights"], local["attention"]["weights"], atol=1e-4)


def test_long_text_is_truncated_and_flagged(server):
    body = inference(server).post("/predictions/tiny", json={"text": "great film " * 100}).json()
    assert body["truncated"] is True and body["label"] == "pos"


@pytest.mark.parametrize("kwargs, status, words", [
    ({"content": b"{bad", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ({"content": "   "}, 400, "empty"),
    ({"json": []}, 400, "empty"),
    ({"json": {"txt": "x"}}, 400, '"text"'),
    ({"json": {"text": 5}}, 400, "string"),
    ({"content": b"\xff\xfe", "headers": {"content-type": "text/plain"}}, 400, "UTF-8"),
    ({"json": ["great"] * 17}, 413, "limit of 16"),
    ({"json": {"text": "a" * 6000}}, 413, "characters"),
    ({"content": "a" * 30_000}, 413, "bytes"),
])
def test_bad_input_is_a_clear_4xx(server, kwargs, status, words):
    response = inference(server).post("/predictions/tiny", **kwargs)
    assert response.status_code == status, response.text
    assert words in response.json()["message"]
    assert response.json()["code"] == status


def test_unknown_model_or_version_is_404(server):
    client = inference(server)
    assert client.post("/predictions/nope", content="x").status_code == 404
    response = client.post("/predictions/tiny/9.9", content="great")
    assert response.status_code == 404 and "9.9" in response.json()["message"]


def test_management_needs_its_key(server):
    assert management(server, token=None).get("/models").status_code == 401
    response = management(server, token="wrong").get("/models")
    assert response.status_code == 401 and "key" in response.json()["message"]
    assert management(server, token=server.state.keys.api).get("/models").status_code == 200
    # a request without the key learns nothing of a route's parameters: the 401 comes before their check
    assert management(server, token=None).delete("/models/tiny?model_version=1.0").status_code == 401
    assert management(server, token=None).post("/token?type=management&x=1").status_code == 401


def test_register_list_describe_scale_delete(server, tiny_model, tmp_path):
    client = management(server)
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tiny_model.output, arcname="tiny-model")
    assert client.post("/models", params={"url": str(archive), "model_name": "tiny2"}).status_code == 200
    again = client.post("/models", params={"url": str(archive), "model_name": "tiny2"})
    assert again.status_code == 409
    assert client.post("/models", params={"url": "no/such/folder"}).status_code == 404
    assert client.post("/models", params={"url": str(archive), "batch_size": 0}).status_code == 400
    first = client.get("/models", params={"limit": 1}).json()
    assert [m["modelName"] for m in first["models"]] == ["tiny"]
    second = client.get("/models", params={"limit": 1, "next_page_token": first["nextPageToken"]}).json()
    assert [m["modelName"] for m in second["models"]] == ["tiny2"] and "nextPageToken" not in second
    assert client.put("/models/tiny2", params={"min_worker": 2, "synchronous": "true"}).status_code == 200
    described = client.get("/models/tiny2").json()[0]
    assert described["minWorkers"] == 2 and len({w["pid"] for w in described["workers"]}) == 2
    assert inference(server).post("/predictions/tiny2", content="awful").json()["label"] == "neg"
    assert client.delete("/models/tiny2/1.0").status_code == 200
    assert client.get("/models/tiny2").status_code == 404


def test_versions_set_default_and_traffic_routes(server, tiny_model):
    client = management(server)
    assert client.post("/models", params={"url": str(tiny_model.output), "model_name": "tiny",
                                          "model_version": "2.0"}).status_code == 200
    assert len(client.get("/models/tiny/all").json()) == 2
    assert client.get("/models/tiny/2.0").json()[0]["isDefault"] is False
    assert client.delete("/models/tiny/1.0").status_code == 409  # still the default
    assert client.put("/models/tiny/2.0/set-default").status_code == 200
    assert inference(server).post("/predictions/tiny", content="great").headers["x-model-version"] == "2.0"
    traffic = client.put("/models/tiny/traffic", json={"weights": {"1.0": 1, "2.0": 0}}).json()
    assert traffic["weights"] == {"1.0": 1.0, "2.0": 0.0}
    assert inference(server).post("/predictions/tiny", content="great").headers["x-model-version"] == "1.0"
    assert client.put("/models/tiny/traffic", json={"weights": {"7.0": 1}}).status_code == 404
    assert client.put("/models/tiny/1.0/set-default").status_code == 200
    assert client.get("/models/tiny/traffic").json() == {"defaultVersion": "1.0", "weights": {}, "shadow": None}
    assert client.delete("/models/tiny/2.0").status_code == 200


def test_batching_batches_concurrent_requests(server):
    async def burst():
        async with httpx.AsyncClient(base_url=server.url("inference"), timeout=60) as client:
            responses = await asyncio.gather(*(client.post("/predictions/tiny", content=f"great movie {i}")
                                               for i in range(48)))
        return [r.status_code for r in responses]

    before_batches = metric(server, "nlpforge_batch_size_count", model="tiny", version="1.0")
    before_inputs = metric(server, "nlpforge_batch_size_sum", model="tiny", version="1.0")
    assert asyncio.run(burst()) == [200] * 48
    batches = metric(server, "nlpforge_batch_size_count", model="tiny", version="1.0") - before_batches
    inputs = metric(server, "nlpforge_batch_size_sum", model="tiny", version="1.0") - before_inputs
    assert inputs == 48
    assert batches < 48 / 2, f"48 concurrent inputs ran in {batches} batches"


def test_metrics_per_model_and_version(server):
    inference(server).post("/predictions/tiny", content="great")
    assert metric(server, "nlpforge_requests_total", model="tiny", version="1.0", status="200") >= 1
    assert metric(server, "nlpforge_requests_total", model="tiny", status="400") >= 1
    assert metric(server, "nlpforge_request_latency_seconds_count", model="tiny", version="1.0") >= 1
    assert metric(server, "nlpforge_queue_time_seconds_count", model="tiny", version="1.0") >= 1
    assert metric(server, "nlpforge_workers", model="tiny", version="1.0") == 1
    assert "nlpforge_worker_restarts" in httpx.get(server.url("metrics") + "/metrics").text


def test_data_capture_records_version_input_and_prediction(server):
    inference(server).post("/predictions/tiny", headers={"x-request-id": "capture-check"},
                           json={"text": "a superb story"})
    path = server.state.capture.path("tiny", "1.0")
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    mine = [line for line in lines if line.get("request_id") == "capture-check"]
    assert len(mine) == 1
    line = mine[0]
    assert line["model"] == "tiny" and line["version"] == "1.0" and line["input"] == "a superb story"
    assert line["prediction"]["label"] == "pos" and set(line["prediction"]["probabilities"]) == {"neg", "pos"}
    assert line["timestamp"].endswith("Z") and line["shadow"] is False
