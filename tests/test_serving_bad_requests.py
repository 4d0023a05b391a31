"""Bad HTTP requests, one row each: what a careless client, admin or attacker sends, and the 4xx it gets.

A row is (id, api, method, path, request, status, words): `request` holds httpx's arguments (params,
content, json, headers), `words` must be in the JSON message. A new case is a new row; the
schemathesis run (test_serving_fuzz.py) sends the same rows as explicit examples. What needs more
than one request (a worker that dies, a body that streams) has its own test below the table.
"""
import os
import re
import select
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field

import httpx
import pytest

from conftest import assert_user_error, run_cli
from serving_support import inference, management, prepare_store, running_server

NESTED = b"[" * 100_000  # 100 kB: deeper than Python's recursion limit


@dataclass(frozen=True)
class BadRequest:
    id: str
    api: str                      # "inference" or "management"
    method: str
    path: str
    request: dict = field(default_factory=dict)
    status: int = 400
    words: str = ""


def register(**params) -> dict:
    """The request of a register call of the store's copy of the toy model."""
    return {"params": {"url": "toy", "model_name": "fresh", **params}}


BAD_REQUESTS = [
    # bodies nested deeper than a parser can follow
    BadRequest("nested JSON", "inference", "POST", "/predictions/tiny",
               {"content": NESTED, "headers": {"content-type": "application/json"}}, 400, "nested too deeply"),
    BadRequest("nested JSON without a content type", "inference", "POST", "/predictions/tiny",
               {"content": NESTED}, 400, "nested too deeply"),
    BadRequest("nested JSON to one version", "inference", "POST", "/explanations/tiny/1.0",
               {"content": NESTED, "headers": {"content-type": "application/json"}}, 400, "nested too deeply"),
    BadRequest("nested KServe instances", "inference", "POST", "/v1/models/tiny:predict",
               {"content": b'{"instances": ' + NESTED, "headers": {"content-type": "application/json"}}, 400,
               "nested too deeply"),
    BadRequest("nested traffic weights", "management", "PUT", "/models/tiny/traffic",
               {"content": b'{"weights": ' + NESTED, "headers": {"content-type": "application/json"}}, 400, "body"),
    # model folders that are not what they claim
    BadRequest("nlpforge.json holds a list", "management", "POST", "/models", {"params": {"url": "meta-list"}},
               400, "nlpforge.json"),
    BadRequest("nlpforge.json task is a list", "management", "POST", "/models",
               {"params": {"url": "meta-task-list"}}, 400, '"task"'),
    # names and versions: TorchServe's rule, since both become paths and headers
    BadRequest("non-ASCII model name", "management", "POST", "/models", register(model_name="модель"), 400,
               "model_name"),
    BadRequest("model name ..", "management", "POST", "/models", register(model_name=".."), 400, "model_name"),
    BadRequest("model version ..", "management", "POST", "/models", register(model_version=".."), 400,
               "model_version"),
    BadRequest("model name and version ..", "management", "POST", "/models",
               register(model_name="..", model_version=".."), 400, "model_name"),
    BadRequest("model version with a slash", "management", "POST", "/models", register(model_version="1/../../x"),
               400, "model_version"),
    BadRequest("model name starting with a dot", "management", "POST", "/models", register(model_name=".hidden"),
               400, "model_name"),
    BadRequest("model name with a space", "management", "POST", "/models", register(model_name="my model"), 400,
               "model_name"),
    BadRequest("asynchronous register, bad name", "management", "POST", "/models",
               register(model_name="..", synchronous="false"), 400, "model_name"),
    # nothing outside the model store
    BadRequest("url ../", "management", "POST", "/models", register(url="../toy"), 400, "'..'"),
    BadRequest("url that goes out and back in", "management", "POST", "/models", register(url="meta-list/../toy"),
               400, "'..'"),
    BadRequest("file url with ..", "management", "POST", "/models", register(url="file://../toy"), 400, "'..'"),
    BadRequest("url .. asynchronously", "management", "POST", "/models", register(url="../toy", synchronous="false"),
               400, "'..'"),
    BadRequest("url through a link out of the store", "management", "POST", "/models", register(url="escape"), 400,
               "outside"),
    BadRequest("url with a NUL byte", "management", "POST", "/models", register(url="toy\x00"), 400,
               "control character"),
    # every numeric register and scale parameter in its range
    BadRequest("threads -5", "management", "POST", "/models", register(threads=-5), 400, "threads"),
    BadRequest("threads 0", "management", "POST", "/models", register(threads=0), 400, "threads"),
    BadRequest("batch_size 0", "management", "POST", "/models", register(batch_size=0), 400, "batch_size must be"),
    BadRequest("batch_size 10000", "management", "POST", "/models", register(batch_size=10_000), 400,
               "batch_size must be"),
    BadRequest("initial_workers 1000", "management", "POST", "/models", register(initial_workers=1000), 400,
               "workers"),
    BadRequest("queue_size -1", "management", "POST", "/models", register(queue_size=-1), 400, "queue_size must be"),
    BadRequest("max_batch_delay -1", "management", "POST", "/models", register(max_batch_delay=-1), 400,
               "max_batch_delay must be"),
    BadRequest("max_batch_delay nan", "management", "POST", "/models", register(max_batch_delay="nan"), 400,
               "max_batch_delay"),
    BadRequest("response_timeout 0", "management", "POST", "/models", register(response_timeout=0), 400,
               "response_timeout must be"),
    BadRequest("response_timeout inf", "management", "POST", "/models", register(response_timeout="inf"), 400,
               "response_timeout"),
    BadRequest("capture_percent 101", "management", "POST", "/models", register(capture_percent=101), 400,
               "capture_percent must be"),
    BadRequest("capture_percent nan", "management", "POST", "/models", register(capture_percent="nan"), 400,
               "capture_percent"),
    BadRequest("threads not a number", "management", "POST", "/models", register(threads="many"), 400, "threads"),
    BadRequest("scale to -3", "management", "PUT", "/models/tiny/1.0", {"params": {"min_worker": -3}}, 400,
               "min_worker"),
    BadRequest("scale to 1000", "management", "PUT", "/models/tiny", {"params": {"min_worker": 1000}}, 400,
               "min_worker"),
    BadRequest("scale max_worker 0", "management", "PUT", "/models/tiny", {"params": {"max_worker": 0}}, 400,
               "max_worker"),
    BadRequest("scale min above max", "management", "PUT", "/models/tiny",
               {"params": {"min_worker": 2, "max_worker": 1}}, 400, "max_worker"),
    BadRequest("list limit 0", "management", "GET", "/models", {"params": {"limit": 0}}, 400, "limit"),
    BadRequest("list page token not a number", "management", "GET", "/models", {"params": {"next_page_token": "x"}},
               400, "next_page_token"),
    BadRequest("traffic weight -1", "management", "PUT", "/models/tiny/traffic", {"json": {"weights": {"1.0": -1}}},
               400, "weight"),
]


def client_for(server, api: str) -> httpx.Client:
    return inference(server) if api == "inference" else management(server)


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    prepare_store(store, tiny_model.output)
    with running_server(store, max_request_bytes=200_000) as server:
        response = management(server).post("/models", params={"url": "toy", "model_name": "tiny"})
        assert response.status_code == 200, response.text
        yield server


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[case.id for case in BAD_REQUESTS])
def test_a_bad_request_gets_a_clear_4xx(server, case):
    response = client_for(server, case.api).request(case.method, case.path, **case.request)
    assert response.status_code == case.status, response.text
    body = response.json()
    assert body["code"] == case.status and case.words in body["message"], body


def test_the_table_changed_nothing(server):
    assert [m["modelName"] for m in management(server).get("/models").json()["models"]] == ["tiny"]
    response = inference(server).post("/predictions/tiny", content="great")
    assert response.status_code == 200 and response.json()["label"] == "pos"
    assert inference(server).get("/ping").json() == {"status": "Healthy"}


def test_model_headers_are_ascii_and_name_the_served_version(server):
    response = inference(server).post("/predictions/tiny/1.0", content="great")
    assert response.headers["x-model-name"] == "tiny" and response.headers["x-model-version"] == "1.0"


def test_data_capture_stays_inside_its_folder(tmp_path):
    from nlpforge.errors import ServingError
    from nlpforge.serving.capture import DataCapture

    capture = DataCapture(tmp_path / "capture")
    assert capture.path("stars", "1.0") == tmp_path / "capture" / "stars" / "1.0" / "capture.jsonl"
    with pytest.raises(ServingError, match="outside"):
        capture.path("..", "..")


def read_response(sock) -> bytes:
    """One whole HTTP response from `sock`: the headers, then as many body bytes as they announce."""
    response = b""
    while b"\r\n\r\n" not in response or len(response.partition(b"\r\n\r\n")[2]) < int(
            re.search(rb"content-length: (\d+)", response.partition(b"\r\n\r\n")[0], re.I).group(1)):
        received = sock.recv(65536)
        if not received:
            break
        response += received
    return response


def test_a_chunked_multipart_body_is_refused_while_it_streams(server):
    """300 MB in a chunked file part: the 413 comes after about the limit, not after the whole body."""
    boundary = b"nlpforge-boundary"
    part = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="data"; filename="big.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\n")
    chunk = b"great " * 10_000
    sent = 0
    with socket.create_connection((server.settings.host, server.ports[0]), timeout=30) as sock:
        sock.sendall(b"POST /predictions/tiny HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n\r\n")
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        while sent < 300_000_000 and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:  # the server answered and closed the connection
                break
            sent += len(chunk)
        response = read_response(sock)
    assert response.startswith(b"HTTP/1.1 413"), response[:300]
    assert b"over the limit of 200000 bytes" in response and b"--max-request-bytes" in response
    assert sent < 30_000_000, f"the server read {sent} bytes before refusing"


# --- a worker whose model folder is gone --------------------------------------------------------------------
@pytest.fixture
def fragile(tiny_model, tmp_path, monkeypatch):
    """A server of its own (it is made unhealthy), serving a model from a folder the test deletes."""
    from nlpforge.serving import batching

    monkeypatch.setattr(batching, "RESTART_PAUSES", (0.0, 0.1, 0.2))
    shutil.copytree(tiny_model.output, tmp_path / "store" / "doomed")
    with running_server(tmp_path / "store") as server:
        response = management(server).post("/models", params={"url": "doomed", "model_name": "doomed"})
        assert response.status_code == 200, response.text
        yield server


def worker_pids(server, name="doomed") -> list[int]:
    return [w["pid"] for w in management(server).get(f"/models/{name}").json()[0]["workers"]]


def test_a_handler_error_fails_its_request_and_keeps_the_worker(fragile):
    pid, = worker_pids(fragile)
    shutil.rmtree(fragile.state.registry.model_store / "doomed")
    response = inference(fragile).post("/explanations/doomed", content="great")  # loads from the folder
    assert response.status_code == 503 and "see the server log" in response.json()["message"]
    assert worker_pids(fragile) == [pid]
    assert management(fragile).get("/models/doomed").json()[0]["workerRestarts"] == 0
    assert inference(fragile).post("/predictions/doomed", content="great").json()["label"] == "pos"
    assert inference(fragile).get("/ping").json() == {"status": "Healthy"}


def test_a_worker_that_cannot_restart_is_given_up_and_ping_says_unhealthy(fragile, tiny_model):
    pid, = worker_pids(fragile)
    folder = fragile.state.registry.model_store / "doomed"
    shutil.rmtree(folder)
    os.kill(pid, signal.SIGKILL)
    started = time.perf_counter()
    response = inference(fragile).post("/predictions/doomed", content="great")
    assert response.status_code == 503 and "no worker" in response.json()["message"], response.text
    assert time.perf_counter() - started < 30
    again = inference(fragile).post("/predictions/doomed", content="great")  # at once, no 504 after a wait
    assert again.status_code == 503 and "min_worker=1" in again.json()["message"]
    ping = inference(fragile).get("/ping")
    assert ping.status_code == 500 and ping.json()["status"] == "Unhealthy" and "doomed/1.0" in ping.json()["message"]
    described = management(fragile).get("/models/doomed").json()[0]
    assert described["workers"] == [] and "no such model folder" in described["failure"]
    shutil.copytree(tiny_model.output, folder)  # fixed: scaling brings it back
    assert management(fragile).put("/models/doomed", params={"min_worker": 1, "synchronous": "true"}).status_code == 200
    assert inference(fragile).post("/predictions/doomed", content="great").json()["label"] == "pos"
    assert inference(fragile).get("/ping").json() == {"status": "Healthy"}


# --- nlpforge serve --model-store ---------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_serve_refuses_a_model_store_it_cannot_write(tmp_path, where):
    existing = tmp_path / "store.txt"
    existing.write_text("not a folder", encoding="utf-8")
    store = existing if where == "a file" else existing / "store"
    result = run_cli(["serve", "--model-store", store, "--inference-port", "0", "--management-port", "0",
                      "--metrics-port", "0"], timeout=120)
    assert_user_error(result, "--model-store")
    assert "file" in result.stderr
