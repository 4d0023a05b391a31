"""Bad input for the model server that once answered 500, hung, or left a worker or a file behind; each section is
one such case, with the answer it gets now."""
import json
import shutil
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from nlpforge.sdk import CSVSerializer, JSONLinesSerializer
from serving_support import inference, management, running_server


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("store"), auth=False, request_timeout=20) as server:
        response = management(server).post("/models", params={"url": str(tiny_model.output), "model_name": "tiny",
                                                               "max_batch_delay": 5})
        assert response.status_code == 200, response.text
        yield server


def store_of(server) -> Path:
    return Path(server.settings.model_store)


# --- archives and urls ----------------------------------------------------------------------------------------
def test_a_truncated_archive_is_a_400_and_leaves_nothing(server, tiny_model):
    store = store_of(server)
    with tarfile.open(store / "whole.tar.gz", "w:gz") as tar:
        tar.add(tiny_model.output, arcname="clf")
    (store / "truncated.tar.gz").write_bytes((store / "whole.tar.gz").read_bytes()[:2000])
    response = management(server).post("/models", params={"url": "truncated.tar.gz"})
    assert response.status_code == 400, response.text
    assert "cannot extract" in response.json()["message"]
    assert list((store / ".extracted").glob("truncated*")) == []


@pytest.mark.parametrize("url", ["a" * 300, "/" + "c" * 300, "d" * 300 + ".tar.gz", "e/" + "f" * 256 + "/g"])
def test_a_url_with_an_overlong_name_is_a_400_naming_the_url(server, url):
    response = management(server).post("/models", params={"url": url})
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert message.startswith(f"url '{url[:100]}") and "over the limit of 255" in message, message


def test_an_archive_whose_name_is_near_the_limit_is_extracted(server, tiny_model):
    name = "h" * 240 + ".tar.gz"
    with tarfile.open(store_of(server) / name, "w:gz") as tar:
        tar.add(tiny_model.output, arcname="clf")
    response = management(server).post("/models", params={"url": name, "model_name": "long",
                                                           "initial_workers": 0})
    assert response.status_code == 200, response.text
    assert management(server).delete("/models/long").status_code == 200


# --- removing a version of weight 0 ---------------------------------------------------------------------------
def test_removing_a_version_of_weight_zero_takes_it_out_of_the_routing(tiny_model, tmp_path):
    from nlpforge.serving.replicas import check_document

    with running_server(tmp_path / "store", auth=False, shared_state=True) as server:
        client = management(server)
        for version in ("1.0", "2.0"):
            response = client.post("/models", params={"url": str(tiny_model.output), "model_name": "c",
                                                      "model_version": version, "initial_workers": 0})
            assert response.status_code == 200, response.text
        response = client.put("/models/c/traffic", json={"weights": {"1.0": 1, "2.0": 0}, "shadow": None})
        assert response.status_code == 200, response.text
        assert client.delete("/models/c/2.0").status_code == 200
        assert client.get("/models/c/traffic").json()["weights"] == {"1.0": 1.0}
        for body in ({}, {"shadow": "1.0"}, {"weights": {"1.0": 3}}):
            response = client.put("/models/c/traffic", json=body)
            assert response.status_code == 200, response.text
        state = json.loads((tmp_path / "store" / ".nlpforge-replicas" / "state.json").read_text())
        check_document(state)  # the replicas' file names only versions it holds
        assert state["models"]["c"]["routing"] == {"default": "1.0", "weights": [["1.0", 3.0]], "shadow": "1.0"}
        response = client.post("/models", params={"url": str(tiny_model.output), "model_name": "c",
                                                  "model_version": "2.0", "initial_workers": 0})
        assert response.status_code == 200, response.text
        assert client.get("/models/c/traffic").json()["weights"] == {"1.0": 3.0}  # no stale weight comes back


# --- removing a version while its worker loads ---------------------------------------------------------------
def worker_pids() -> set[int]:
    """The live worker processes of this test process's servers (the forkserver's children)."""
    pids = set()
    for child in psutil.Process().children():
        try:
            if any("forkserver" in part for part in child.cmdline()):
                pids |= {c.pid for c in child.children() if c.status() != psutil.STATUS_ZOMBIE}
        except psutil.NoSuchProcess:
            pass
    return pids


def wait_until(condition, timeout: float = 30.0, what: str = "the condition") -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"{what} did not hold within {timeout:.0f}s")
        time.sleep(0.05)


def loading(server, name: str) -> bool:
    response = management(server).get(f"/models/{name}")
    return response.status_code == 200 and any(w["status"] == "LOADING" for w in response.json()[0]["workers"])


def test_unregistering_while_a_synchronous_register_loads_answers_409_and_stops_the_worker(server, tiny_model):
    before = worker_pids()
    for _ in range(2):
        with ThreadPoolExecutor(1) as pool:
            registering = pool.submit(management(server).post, "/models", params={
                "url": str(tiny_model.output), "model_name": "r", "initial_workers": 3})
            wait_until(lambda: loading(server, "r"), what="a LOADING worker")
            assert management(server).delete("/models/r").status_code == 200
            response = registering.result(timeout=60)
        assert response.status_code == 409, response.text
        assert "was removed while its worker loaded" in response.json()["message"]
        assert management(server).get("/models/r").status_code == 404
    wait_until(lambda: worker_pids() <= before, what="no worker left behind")


def test_unregistering_right_after_an_asynchronous_register_leaves_no_worker(server, tiny_model):
    before = worker_pids()
    response = management(server).post("/models", params={"url": str(tiny_model.output), "model_name": "a",
                                                           "initial_workers": 1, "synchronous": "false"})
    assert response.status_code == 202, response.text
    wait_until(lambda: management(server).delete("/models/a").status_code == 200, what="the version to be removed")
    time.sleep(3)  # longer than bert-tiny takes to load
    wait_until(lambda: worker_pids() <= before, what="no worker left behind")
    assert management(server).get("/models/a").status_code == 404


# --- a scale-up whose worker cannot start ------------------------------------------------------------------
def test_a_scale_up_whose_worker_fails_answers_503_at_once_naming_why(server, tiny_model):
    folder = store_of(server) / "b"
    shutil.copytree(tiny_model.output, folder)
    client = management(server)
    assert client.post("/models", params={"url": "b", "model_name": "b"}).status_code == 200
    assert client.put("/models/b", params={"min_worker": 0, "synchronous": "true"}).status_code == 200
    weights = folder / "model.safetensors"
    saved = weights.read_bytes()
    weights.unlink()
    response = client.put("/models/b", params={"min_worker": 1, "synchronous": "true"})
    assert response.status_code == 400, response.text
    started = time.monotonic()
    response = inference(server).post("/predictions/b", content="a great film")
    assert response.status_code == 503, response.text
    assert time.monotonic() - started < 10
    message = response.json()["message"]
    assert "its worker failed to start" in message and "min_worker=1" in message, message
    described, = client.get("/models/b").json()
    assert "failed to start" in described["failure"] and described["workers"] == []
    weights.write_bytes(saved)  # fixed: scaling brings it back
    assert client.put("/models/b", params={"min_worker": 1, "synchronous": "true"}).status_code == 200
    assert inference(server).post("/predictions/b", content="a great film").json()["label"] == "pos"
    assert client.get("/models/b").json()[0]["failure"] is None
    assert client.delete("/models/b").status_code == 200


# --- scaling to 0 with inputs waiting -------------------------------------------------------------------------
def test_scaling_to_zero_answers_the_inputs_its_worker_holds(server, tiny_model):
    client = management(server)
    response = client.post("/models", params={"url": str(tiny_model.output), "model_name": "q",
                                              "max_batch_delay": 3000, "batch_size": 64})
    assert response.status_code == 200, response.text
    runtime = server.state.registry.version("q", None)
    # The clients are made first (a few hundred ms on a busy machine), so the ten requests go out together,
    # well within the 3 s the batch waits to fill.
    clients = [inference(server) for _ in range(10)]
    started = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        answers = [pool.submit(http.post, "/predictions/q", content=f"a great film {i}")
                   for i, http in enumerate(clients)]
        wait_until(lambda: runtime.in_flight == 10, what="ten inputs in the worker's batch")
        assert client.put("/models/q", params={"min_worker": 0, "synchronous": "true"}).status_code == 200
        responses = [a.result(timeout=60) for a in answers]
    for http in clients:
        http.close()
    assert [r.status_code for r in responses] == [200] * 10, responses[0].text
    assert time.monotonic() - started < 15
    assert client.get("/models/q").json()[0]["queued"] == 0
    response = inference(server).post("/predictions/q", content="a great film")
    assert response.status_code == 503 and "scaled to 0 workers" in response.json()["message"]
    assert client.delete("/models/q").status_code == 200


# --- request bodies by content type ---------------------------------------------------------------------------
@pytest.mark.parametrize("content_type, body", [
    ("text/csv", b"great\nawful\n"),
    ("text/csv; charset=utf-8", CSVSerializer().serialize(["a great film", "an awful, awful film"])),
    ("application/jsonlines", b'"great"\n"awful"'),
    ("application/x-jsonlines", b'{"text": "great"}\r\n\n{"text": "awful"}\n'),
    ("application/jsonlines", JSONLinesSerializer().serialize(["a great film", {"text": "an awful film"}])),
    ("", b' \n ["great", "awful"]'),
    ("application/x-www-form-urlencoded", b"data=great&text=awful"),
])
def test_a_body_of_rows_gets_one_answer_a_row(server, content_type, body):
    response = inference(server).post("/predictions/tiny", content=body, headers={"content-type": content_type})
    assert response.status_code == 200, response.text
    assert [answer["label"] for answer in response.json()] == ["pos", "neg"]


@pytest.mark.parametrize("body", [b"Loved every minute, a great film", b"great=1", b"data=great"])
def test_a_form_body_is_raw_text_unless_its_fields_are_inputs(server, body):
    response = inference(server).post("/predictions/tiny", content=body,
                                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "pos"  # one answer, not a list


@pytest.mark.parametrize("content_type, body, message", [
    ("text/csv", b"\n\n", "the CSV body has no rows"),
    ("text/csv", b"great,film\n", "reads one text"),
    ("text/csv", b"\xff\xfe", "not valid UTF-8"),
    ("application/jsonlines", b'"great"\n{"text": \n', "line 2 of the JSON Lines body is not valid JSON"),
    ("application/jsonlines", b" \n", "the JSON Lines body has no lines"),
])
def test_a_bad_body_of_rows_is_a_400_naming_the_problem(server, content_type, body, message):
    response = inference(server).post("/predictions/tiny", content=body, headers={"content-type": content_type})
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]


# --- data capture ---------------------------------------------------------------------------------------------
def test_capture_writes_a_lone_surrogate_and_line_separators_as_escapes(tmp_path):
    from nlpforge.serving.capture import DataCapture

    capture = DataCapture(tmp_path)
    texts = ["a\ud800b", "one\u2028two\u2029three\x85four", "plain"]
    for text in texts:
        assert capture.record("m", "1.0", 100, text, {"label": "pos"})
    capture.close()
    content = capture.path("m", "1.0").read_text(encoding="utf-8")
    lines = content.splitlines()
    assert len(lines) == 3 and not any(c in content for c in "\u2028\u2029\x85")
    assert [json.loads(line)["input"] for line in lines] == texts


# --- management parameters ------------------------------------------------------------------------------------
@pytest.mark.parametrize("params, message", [
    ({"batch_size": -1}, "batch_size must be between 1 and 1024, not -1; give another batch_size, or leave it out "
                         "for the server's default (8, nlpforge serve --batch-size)"),
    ({"initial_workers": 1000}, "initial_workers must be between 0 and 16, not 1000"),
    ({"backend": "tf"}, "backend must be one of torch, onnx, onnx-int8, not 'tf'"),
    ({"threads": 0}, "threads must be between 1 and 256, not 0; give another threads, or leave it out for the "
                     "server's default (1, nlpforge serve --threads)"),  # running_server gives threads=1
])
def test_register_messages_name_the_api_parameter(server, tiny_model, params, message):
    response = management(server).post("/models", params={"url": str(tiny_model.output), "model_name": "p",
                                                           **params})
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith(message), response.text
    assert "workers is initial_workers" not in response.json()["message"]


@pytest.mark.parametrize("method, path, params", [
    ("post", "/models", [("url", "x"), ("url", "y")]),
    ("put", "/models/tiny", [("min_worker", "1"), ("min_worker", "2")]),
    ("get", "/models", [("limit", "1"), ("limit", "2")]),
])
def test_a_repeated_parameter_is_refused(server, method, path, params):
    response = management(server).request(method, path, params=params)
    assert response.status_code == 400, response.text
    assert f"parameter(s) {params[0][0]} given more than once" in response.json()["message"]


@pytest.mark.parametrize("path", ["/models/tiny", "/models/tiny/1.0"])
def test_scaling_refuses_unknown_parameters(server, path):
    response = management(server).put(path, params={"min_workers": 2, "synchronous": "true"})
    assert response.status_code == 400, response.text
    assert response.json()["message"] == ("unknown scale parameter(s) min_workers; known: min_worker, max_worker, "
                                          "synchronous, number_gpu, timeout")
    assert len(management(server).get("/models/tiny").json()[0]["workers"]) == 1
