"""Two `nlpforge serve --shared-state` replicas on one model store, behind a real HAProxy: a management call on
one replica is seen by the other within the stated time, sticky keys route alike on both, and killing one
replica under load loses no request (the balancer retries it on the other).

The tests share two replicas and run in file order: the last one kills a replica."""
import asyncio
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from balancer_support import haproxy, start_replica, wait_until_healthy
from nlpforge.cli import main
from nlpforge.errors import ServingError
from nlpforge.serving.metrics import ServerMetrics
from nlpforge.serving.registry import ModelRegistry
from nlpforge.serving.replicas import SharedState
from nlpforge.serving.security import read_key

POLL = 0.5
PROPAGATION = 1.0  # replicas.py: a routing change reaches every replica within the poll plus a read


@pytest.fixture(scope="module")
def store(tiny_model, tmp_path_factory):
    store = tmp_path_factory.mktemp("shared-store")
    shutil.copytree(tiny_model.output, store / "tiny")
    return store


@pytest.fixture(scope="module")
def replicas(store, tmp_path_factory):
    """r1 and r2 start at once, both asked for tiny=tiny: one loads it and writes the state, the other adopts it."""
    logs = tmp_path_factory.mktemp("logs")
    started = [start_replica(name, store, logs, "--models", "tiny=tiny", "--shared-state-poll", str(POLL),
                             "--capture-dir", str(logs / f"capture-{name}")) for name in ("r1", "r2")]
    try:
        for replica in started:
            wait_until_healthy(replica)
        yield started
    finally:
        for replica in started:
            replica.stop()


@pytest.fixture(scope="module")
def balancer(replicas, tmp_path_factory):
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not on PATH: install the Debian package haproxy (the Makefile does)")
    with haproxy(replicas, tmp_path_factory.mktemp("haproxy")) as balancer:
        yield balancer


def management(replica, store) -> httpx.Client:
    key = read_key(store / "key_file.json")  # one key file in the shared store: the same keys on every replica
    return httpx.Client(base_url=replica.url("management"), timeout=120, headers={"Authorization": f"Bearer {key}"})


def predict(url: str, version: str = "", **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/predictions/tiny{'/' + version if version else ''}", content="a great film",
                      timeout=60, **kwargs)


def wait_for(check, timeout: float):
    """Seconds until `check()` is true, polling every 10 ms; fails after `timeout`."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"not within {timeout} s"
        time.sleep(0.01)
    return time.monotonic() - started


def traffic(replica, store) -> dict:
    return management(replica, store).get("/models/tiny/traffic").json()


@pytest.fixture(scope="module")
def version_2(replicas, store):
    """Version 2.0 registered through r1 only (batch size 4); the seconds until r2 served it too."""
    r1, r2 = replicas
    response = management(r1, store).post("/models", params={"url": "tiny", "model_name": "tiny",
                                                             "model_version": "2.0", "batch_size": 4})
    assert response.status_code == 200, response.text
    return wait_for(lambda: predict(r2.url(), "2.0").status_code == 200, timeout=60)


def test_both_replicas_serve_the_model_they_started_with(replicas, store):
    state = json.loads((store / ".nlpforge-replicas" / "state.json").read_text())
    assert list(state["models"]) == ["tiny"] and list(state["models"]["tiny"]["versions"]) == ["1.0"]
    for replica in replicas:
        response = predict(replica.url())
        assert response.status_code == 200 and response.headers["x-model-version"] == "1.0"


def test_a_version_registered_on_one_replica_serves_from_both(replicas, version_2, store):
    r1, r2 = replicas
    assert version_2 < 30  # the poll, then one worker starting
    for replica in replicas:
        response = predict(replica.url(), "2.0")
        assert response.status_code == 200 and response.headers["x-model-version"] == "2.0"
        described, = management(replica, store).get("/models/tiny/2.0").json()
        assert described["modelUrl"] == "tiny" and described["batchSize"] == 4  # same url and options
    refused = management(r2, store).post("/models", params={"url": "tiny", "model_name": "tiny",
                                                            "model_version": "2.0"})
    assert refused.status_code == 409


def test_the_balancer_serves_the_new_version_from_both_replicas(replicas, version_2, balancer):
    answers = [predict(balancer.url, "2.0") for _ in range(6)]
    assert all(a.status_code == 200 and a.headers["x-model-version"] == "2.0" for a in answers)
    assert {a.headers["x-replica"] for a in answers} == {"r1", "r2"}  # roundrobin: both answered


def test_traffic_shadow_and_promote_reach_the_other_replica_within_the_stated_time(replicas, version_2, store):
    r1, r2 = replicas
    changes = [(r1, "put", "/models/tiny/traffic", {"weights": {"2.0": 30, "1.0": 70}, "shadow": "2.0"}),
               (r2, "put", "/models/tiny/2.0/set-default", None),
               (r1, "put", "/models/tiny/1.0/set-default", None),
               (r2, "put", "/models/tiny/traffic", {"weights": {"1.0": 50, "2.0": 50}, "shadow": None})]
    for source, method, path, body in changes:
        other = r2 if source is r1 else r1
        response = management(source, store).request(method, path, json=body)
        assert response.status_code == 200, response.text
        expected = traffic(source, store)
        took = wait_for(lambda: traffic(other, store) == expected, timeout=10)
        assert took < PROPAGATION, (path, body, took)
    assert traffic(r1, store) == {"defaultVersion": "1.0", "weights": {"1.0": 50.0, "2.0": 50.0}, "shadow": None}


def test_sticky_keys_route_the_same_way_on_every_replica(replicas, version_2, store):
    r1, r2 = replicas
    management(r2, store).put("/models/tiny/traffic", json={"weights": {"2.0": 37.5, "1.0": 62.5}})
    wait_for(lambda: traffic(r1, store)["weights"] == {"2.0": 37.5, "1.0": 62.5}, timeout=10)
    picked = {}
    for replica in replicas:
        with httpx.Client(base_url=replica.url(), timeout=60) as client:
            picked[replica.name] = [client.post("/predictions/tiny", content="a great film",
                                                headers={"X-Sticky-Key": f"user-{i}"}).headers["x-model-version"]
                                    for i in range(50)]
    assert picked["r1"] == picked["r2"]
    assert set(picked["r1"]) == {"1.0", "2.0"}  # the split is real: both versions take keys
    management(r1, store).put("/models/tiny/1.0/set-default")


def test_unregistering_on_one_replica_removes_the_version_from_both(replicas, version_2, store):
    r1, r2 = replicas
    management(r1, store).put("/models/tiny/1.0/set-default")
    response = management(r2, store).delete("/models/tiny/2.0")
    assert response.status_code == 200, response.text
    assert wait_for(lambda: predict(r1.url(), "2.0").status_code == 404, timeout=10) < PROPAGATION
    assert [d["modelVersion"] for d in management(r1, store).get("/models/tiny/all").json()] == ["1.0"]


def test_registrations_on_both_replicas_at_once_both_hold(replicas, store):
    r1, r2 = replicas

    def versions(replica) -> list[str]:
        return sorted(d["modelVersion"] for d in management(replica, store).get("/models/tiny/all").json())

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda pair: management(pair[0], store).post("/models", params={
            "url": "tiny", "model_name": "tiny", "model_version": pair[1], "initial_workers": 0}),
            [(r1, "3.0"), (r2, "4.0")]))
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    for replica in replicas:
        wait_for(lambda: versions(replica) == ["1.0", "3.0", "4.0"], timeout=30)
    state = json.loads((store / ".nlpforge-replicas" / "state.json").read_text())
    assert sorted(state["models"]["tiny"]["versions"]) == ["1.0", "3.0", "4.0"]
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda pair: management(pair[0], store).delete(f"/models/tiny/{pair[1]}"),
                                [(r1, "4.0"), (r2, "3.0")]))
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    for replica in replicas:
        wait_for(lambda: versions(replica) == ["1.0"], timeout=10)


def test_a_corrupt_state_file_is_reported_and_the_last_good_state_served(replicas, store):
    r1, r2 = replicas
    path = store / ".nlpforge-replicas" / "state.json"
    routing = traffic(r2, store)
    path.write_text("{not json", encoding="utf-8")
    wait_for(lambda: "is not a valid shared state" in r2.log.read_text(), timeout=10)  # the watcher logs it
    for replica in replicas:
        assert predict(replica.url()).status_code == 200 and traffic(replica, store) == routing
    refused = management(r1, store).put("/models/tiny/traffic", json={"weights": {"1.0": 100}})
    assert refused.status_code == 503
    assert f"shared state file {path} is not a valid shared state" in refused.json()["message"]
    assert "Delete the file" in refused.json()["message"]
    path.unlink()  # the fix the message gives: the next call writes it again from r1's models
    assert management(r1, store).put("/models/tiny/traffic", json={"weights": {"1.0": 100}}).status_code == 200
    assert wait_for(lambda: traffic(r2, store)["weights"] == {"1.0": 100.0}, timeout=10) < PROPAGATION
    assert list(json.loads(path.read_text())["models"]["tiny"]["versions"]) == ["1.0"]


def test_bad_shared_state_stops_a_start_in_one_line(tmp_path, capsys):
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / ".nlpforge-replicas").write_text("", encoding="utf-8")  # a file where the state folder goes
    with pytest.raises(SystemExit) as failed:
        main(["serve", "--model-store", str(blocked), "--shared-state", "--inference-port", "0",
              "--management-port", "0", "--metrics-port", "0"])
    error = capsys.readouterr().err
    assert failed.value.code != 0 and len(error.strip().splitlines()) == 1 and "Traceback" not in error
    assert f"--model-store (with --shared-state) {blocked / '.nlpforge-replicas'}: is a file" in error
    corrupt = tmp_path / "corrupt"
    (corrupt / ".nlpforge-replicas").mkdir(parents=True)
    (corrupt / ".nlpforge-replicas" / "state.json").write_text('{"format": 1, "revision": 3, "models": []}')
    with pytest.raises(ServingError, match="is not a valid shared state .*\"models\" an object.*Delete the file"):
        SharedState(corrupt, ModelRegistry(corrupt, ServerMetrics())).open()


def test_killing_a_replica_under_load_loses_no_request(replicas, balancer):
    r1, r2 = replicas
    total, concurrency, kill_after = 300, 8, 60
    before = balancer.counters()
    answers = []

    async def run():
        async with httpx.AsyncClient(base_url=balancer.url, timeout=60) as client:
            async def sender(first):
                for i in range(first, total, concurrency):
                    response = await client.post("/predictions/tiny", content=f"great film {i}")
                    answers.append((response.status_code, response.headers.get("x-replica")))

            async def killer():
                while len(answers) < kill_after:
                    await asyncio.sleep(0.005)
                r2.kill()
                return len(answers)
            return (await asyncio.gather(killer(), *(sender(k) for k in range(concurrency))))[0]
    killed_at = asyncio.run(run())
    after = balancer.counters()
    assert len(answers) == total
    assert [status for status, _ in answers].count(200) == total, answers
    assert {replica for _, replica in answers[:killed_at]} == {"r1", "r2"}
    assert {replica for _, replica in answers[-100:]} == {"r1"}
    assert after["wretr"] + after["wredis"] > before["wretr"] + before["wredis"]  # requests the balancer retried


class RecordingTransport:
    """What uvicorn's protocol writes, call by call, in place of a socket."""

    def __init__(self):
        self.writes, self.closed = [], False

    def write(self, data):
        self.writes.append(bytes(data))

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


def test_a_response_leaves_in_one_write_so_a_killed_replica_never_sends_half_of_one():
    """Head and body in one write: a SIGKILL lands before the response (the balancer retries) or after it."""
    import uvicorn
    from uvicorn.server import ServerState

    from nlpforge.serving.server import _whole_responses_protocol

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"13")]})
        await send({"type": "http.response.body", "body": b'{"label": 5}\n'})

    async def exchange(requests: bytes) -> RecordingTransport:
        config = uvicorn.Config(app, lifespan="off", access_log=False)
        config.load()
        protocol = _whole_responses_protocol()(config, ServerState(), {}, asyncio.get_running_loop())
        transport = RecordingTransport()
        protocol.connection_made(transport)
        protocol.data_received(requests)
        for _ in range(50):
            await asyncio.sleep(0)
        protocol.connection_lost(None)
        return transport

    request = b"POST /predictions/tiny HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\ngreat"
    one = asyncio.run(exchange(request))
    assert len(one.writes) == 1, one.writes
    assert one.writes[0].startswith(b"HTTP/1.1 200 OK") and one.writes[0].endswith(b'\r\n\r\n{"label": 5}\n')
    closing = asyncio.run(exchange(request.replace(b"Host: x", b"Host: x\r\nConnection: close")))
    assert len(closing.writes) == 1 and closing.writes[0].endswith(b'{"label": 5}\n') and closing.closed
