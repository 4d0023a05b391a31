"""Versions and A/B traffic: a weighted split, sticky clients, a shadow that never answers, promote."""
import asyncio
import json
import random

import httpx
import pytest

from nlpforge.serving.registry import Routing
from serving_support import inference, management, metric, running_server


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("store"), auth=False) as server:
        client = management(server)
        for version in ("1.0", "2.0", "3.0"):
            response = client.post("/models", params={"url": str(tiny_model.output), "model_name": "tiny",
                                                      "model_version": version, "batch_size": 16,
                                                      "max_batch_delay": 5})
            assert response.status_code == 200, response.text
        yield server


def served_versions(server, count: int, headers=None) -> list[str]:
    async def run():
        async with httpx.AsyncClient(base_url=server.url("inference"), timeout=60,
                                     limits=httpx.Limits(max_connections=32)) as client:
            semaphore = asyncio.Semaphore(32)

            async def one(i):
                async with semaphore:
                    response = await client.post("/predictions/tiny", content=f"great film {i}",
                                                 headers=headers(i) if headers else None)
                    assert response.status_code == 200, response.text
                    return response.headers["x-model-version"]
            return await asyncio.gather(*(one(i) for i in range(count)))
    return asyncio.run(run())


def test_weighted_split_over_1000_requests(server):
    client = management(server)
    assert client.put("/models/tiny/traffic", json={"weights": {"1.0": 90, "2.0": 10}}).status_code == 200
    versions = served_versions(server, 1000)
    share = versions.count("2.0") / len(versions)
    # binomial(1000, 0.1): standard deviation 0.0095, so +-0.04 is over 4 sigma
    assert 0.06 <= share <= 0.14, share
    assert set(versions) == {"1.0", "2.0"}
    client.put("/models/tiny/1.0/set-default")


def test_sticky_header_pins_a_client_to_one_version():
    routing = Routing(default="1.0", weights=(("1.0", 50.0), ("2.0", 50.0)))
    rng = random.Random(0)
    for key in (f"user-{i}" for i in range(200)):
        assert len({routing.pick(key, rng) for _ in range(5)}) == 1
    picks = [routing.pick(f"user-{i}", rng) for i in range(2000)]
    assert 0.45 <= picks.count("2.0") / len(picks) <= 0.55


def test_sticky_header_over_http(server):
    client = management(server)
    client.put("/models/tiny/traffic", json={"weights": {"1.0": 50, "2.0": 50}})
    versions = served_versions(server, 60, headers=lambda i: {"X-Sticky-Key": f"user-{i % 6}"})
    by_user = {}
    for i, version in enumerate(versions):
        by_user.setdefault(i % 6, set()).add(version)
    assert all(len(v) == 1 for v in by_user.values())
    client.put("/models/tiny/1.0/set-default")


def test_shadow_gets_a_copy_and_never_answers(server):
    client = management(server)
    assert client.put("/models/tiny/traffic", json={"shadow": "3.0"}).json()["shadow"] == "3.0"
    before = metric(server, "nlpforge_shadow_comparisons_total", model="tiny", shadow_version="3.0")
    versions = served_versions(server, 40)
    assert set(versions) == {"1.0"}
    for _ in range(100):  # shadow answers arrive after the client's
        done = metric(server, "nlpforge_shadow_comparisons_total", model="tiny", shadow_version="3.0") - before
        if done >= 40:
            break
        asyncio.run(asyncio.sleep(0.05))
    assert done == 40
    assert metric(server, "nlpforge_requests_total", model="tiny", version="3.0") == 0
    lines = [json.loads(line) for line in
             server.state.capture.path("tiny", "3.0").read_text(encoding="utf-8").splitlines()]
    assert len(lines) >= 40 and all(line["shadow"] and line["prediction"]["served_version"] == "1.0"
                                    for line in lines)
    response = inference(server).post("/predictions/tiny", content="great")
    assert response.headers["x-model-version"] == "1.0" and "served_version" not in response.json()
    client.put("/models/tiny/traffic", json={"shadow": None})


def test_promote_is_atomic_under_load(server):
    client = management(server)
    client.put("/models/tiny/traffic", json={"weights": {"1.0": 100}, "shadow": "2.0"})

    async def run():
        async with httpx.AsyncClient(base_url=server.url("inference"), timeout=60) as http:
            async def traffic():
                return await asyncio.gather(*(http.post("/predictions/tiny", content=f"great {i}")
                                              for i in range(60)))
            load = asyncio.create_task(traffic())
            await asyncio.sleep(0.05)
            async with httpx.AsyncClient(base_url=server.url("management")) as m:
                promoted = await m.put("/models/tiny/2.0/set-default")
            return promoted, await load
    promoted, responses = asyncio.run(run())
    assert promoted.status_code == 200
    assert promoted.json()["routing"] == {"defaultVersion": "2.0", "weights": {}, "shadow": None}
    assert all(r.status_code == 200 for r in responses)
    assert {r.headers["x-model-version"] for r in responses} <= {"1.0", "2.0"}
    assert inference(server).post("/predictions/tiny", content="x y").headers["x-model-version"] == "2.0"
