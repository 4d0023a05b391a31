"""Workers under stress: a crash or hang survived, a full queue answered 503, SIGTERM losing nothing,
inference token auth. Workers are paused with SIGSTOP to hold requests in flight deterministically."""
import asyncio
import inspect
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from serving_support import free_port, management, metric, metric_in, running_server


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("store"), auth_inference=True, request_timeout=20) as server:
        yield server


def register(server, model, name, **params):
    response = management(server).post("/models", params={"url": str(model.output), "model_name": name, **params})
    assert response.status_code == 200, response.text
    return management(server).get(f"/models/{name}").json()[0]["workers"][0]["pid"]


async def until(condition, what: str, timeout: float = 60.0) -> None:
    """Poll `condition()` (a function, or a coroutine function) until it is true, letting the event loop run
    between polls; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        holds = condition()
        if inspect.isawaitable(holds):
            holds = await holds
        if holds:
            return
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        await asyncio.sleep(0.01)


def client(server):
    return httpx.Client(base_url=server.url("inference"), timeout=60,
                        headers={"Authorization": f"Bearer {server.state.keys.inference}"})


def test_inference_token_auth(server, tiny_model):
    register(server, tiny_model, "auth")
    plain = httpx.Client(base_url=server.url("inference"))
    assert plain.get("/ping").status_code == 200  # health checks need no token
    missing = plain.post("/predictions/auth", content="great")
    assert missing.status_code == 401 and "Bearer" in missing.json()["message"]
    management_key = {"Authorization": f"Bearer {server.state.keys.management}"}
    assert plain.post("/predictions/auth", content="great", headers=management_key).status_code == 401
    assert client(server).post("/predictions/auth", content="great").json()["label"] == "pos"


def test_a_crashed_worker_is_restarted_and_the_request_answered(server, tiny_model):
    pid = register(server, tiny_model, "crashy")
    os.kill(pid, signal.SIGKILL)
    response = client(server).post("/predictions/crashy", content="an awful film")
    assert response.status_code == 200 and response.json()["label"] == "neg"
    described = management(server).get("/models/crashy").json()[0]
    assert described["workerRestarts"] == 1 and described["workers"][0]["pid"] != pid
    assert metric(server, "nlpforge_worker_restarts_total", model="crashy", reason="crash") == 1
    assert client(server).post("/predictions/crashy", content="great").status_code == 200


def test_a_full_queue_answers_503_with_retry_after(server, tiny_model):
    pid = register(server, tiny_model, "queued", batch_size=1, max_batch_delay=0, queue_size=4)
    runtime = server.state.registry.version("queued", None)

    async def burst():
        async with httpx.AsyncClient(base_url=server.url("inference"), timeout=60,
                                     headers={"Authorization": f"Bearer {server.state.keys.inference}"}) as http:
            first = asyncio.create_task(http.post("/predictions/queued", content="great 0"))
            await until(lambda: runtime.in_flight == 1 and not runtime.pending,
                        "the paused worker taking the first input")
            rest = [asyncio.create_task(http.post("/predictions/queued", content=f"great {i}")) for i in range(1, 10)]
            # every one of the nine has reached the server: it waits in the queue, or was answered (refused) at once
            await until(lambda: len(runtime.pending) + sum(r.done() for r in rest) == len(rest),
                        "the other nine requests reaching the server")
            os.kill(pid, signal.SIGCONT)
            return [await first] + [await r for r in rest]

    os.kill(pid, signal.SIGSTOP)
    try:
        responses = asyncio.run(burst())
    finally:
        os.kill(pid, signal.SIGCONT)
    codes = [r.status_code for r in responses]
    assert codes.count(200) == 5 and codes.count(503) == 5, codes
    refused = [r for r in responses if r.status_code == 503][0]
    assert int(refused.headers["retry-after"]) >= 1 and "queued" in refused.json()["message"]
    assert metric(server, "nlpforge_rejected_total", model="queued") == 5


def test_a_hung_worker_times_out_and_is_replaced(server, tiny_model):
    pid = register(server, tiny_model, "hung", response_timeout=1)
    os.kill(pid, signal.SIGSTOP)
    response = client(server).post("/predictions/hung", content="great")
    assert response.status_code == 504 and "restarted" in response.json()["message"]
    assert metric(server, "nlpforge_worker_restarts_total", model="hung", reason="timeout") == 1
    assert client(server).post("/predictions/hung", content="great").json()["label"] == "pos"



def test_sigterm_finishes_every_accepted_request(tiny_model, tmp_path):
    ports = [free_port() for _ in range(3)]
    command = [sys.executable, "-m", "nlpforge", "serve", "--model-store", str(tmp_path),
               "--models", f"tiny={tiny_model.output}", "--no-auth", "--threads", "1",
               "--inference-port", str(ports[0]), "--management-port", str(ports[1]), "--metrics-port", str(ports[2])]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{ports[0]}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(base + "/ping").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("the server did not become healthy")
        pid = httpx.get(f"http://127.0.0.1:{ports[1]}/models/tiny").json()[0]["workers"][0]["pid"]

        async def run():
            # `probe` opens a new connection for each call, so it sees when the server stops listening
            async with httpx.AsyncClient(base_url=base, timeout=60) as http, \
                    httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as probe:
                requests = [asyncio.create_task(http.post("/predictions/tiny", content=f"great {i}"))
                            for i in range(24)]

                async def all_accepted() -> bool:  # queued, or in the batch the paused worker holds (or answered)
                    text = (await probe.get(f"http://127.0.0.1:{ports[2]}/metrics")).text
                    held = sum(metric_in(text, name, model="tiny")
                               for name in ("nlpforge_queue_depth", "nlpforge_queue_time_seconds_count"))
                    return held + sum(r.done() for r in requests) >= len(requests)

                async def not_listening() -> bool:
                    try:
                        await probe.get(base + "/ping")
                    except httpx.TransportError:  # refused, or cut by the closing server
                        return True
                    return False

                await until(all_accepted, "all 24 requests reaching the server")
                process.send_signal(signal.SIGTERM)
                await until(not_listening, "the server closing its port on SIGTERM")  # the worker is still paused
                os.kill(pid, signal.SIGCONT)
                return await asyncio.gather(*requests)

        os.kill(pid, signal.SIGSTOP)
        responses = asyncio.run(run())
        assert [r.status_code for r in responses] == [200] * 24
        assert process.wait(60) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(base + "/ping")
    finally:
        if process.poll() is None:
            process.kill()
        output = process.stdout.read()
    assert "finishing accepted requests" in output
