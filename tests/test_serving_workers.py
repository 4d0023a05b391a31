"""Workers under stress: a crash or hang survived, a full queue answered 503, SIGTERM losing nothing,
inference token auth. Workers are paused with SIGSTOP to hold requests in flight deterministically."""
import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from serving_support import free_port, management, metric, running_server


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("store"), auth_inference=True, request_timeout=20) as server:
        yield server


def register(server, model, name, **params):
    response = management(server).post("/models", params={"url": str(model.output), "model_name": name, **params})
    assert response.status_code == 200, response.text
    return management(server).get(f"/models/{name}").json()[0]["workers"][0]["pid"]


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

    async def burst():
        async with httpx.AsyncClient(base_url=server.url("inference"), timeout=60,
                                     headers={"Authorization": f"Bearer {server.state.keys.inference}"}) as http:
            first = asyncio.create_task(http.post("/predictions/queued", content="great 0"))
            await asyncio.sleep(0.5)  # the worker holds the first input, paused
            rest = [asyncio.create_task(http.post("/predictions/queued", content=f"great {i}")) for i in range(1, 10)]
            await asyncio.sleep(1.0)
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
            async with httpx.AsyncClient(base_url=base, timeout=60) as http:
                requests = [asyncio.create_task(http.post("/predictions/tiny", content=f"great {i}")) for i in range(24)]
                await asyncio.sleep(1.0)  # all 24 are accepted and waiting on the paused worker
                process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.5)
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
