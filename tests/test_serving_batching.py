"""The batching loop with stand-in workers: an input a loop has taken but not yet run (it waits for its batch
to fill) is answered when the version is removed, and goes to another worker when its worker scales away; a
worker scaled away finishes the batch it runs."""
import asyncio
import time

import pytest

from nlpforge.errors import RequestError

from nlpforge.serving.batching import VersionRuntime, VersionSpec
from nlpforge.serving.metrics import ServerMetrics
from nlpforge.serving.settings import VersionOptions


class Worker:
    """Answers each input with (its id, the input) at once; stopping it is recorded."""

    def __init__(self, worker_id: int, seconds: float = 0.0):
        self.worker_id, self.status, self.stopped = worker_id, "READY", False
        self.seconds = seconds  # how long a batch takes

    def call(self, kind, items, timeout):
        time.sleep(self.seconds)
        return [(self.worker_id, item) for item in items]

    def stop(self):
        self.stopped = True


def runtime(**options) -> VersionRuntime:
    """Batches of up to 4 that wait up to 300 ms to fill: one input sits in a loop's batch that long."""
    options = VersionOptions.of(**{"batch_size": 4, "max_batch_delay": 300.0, "workers": 0, **options})
    return VersionRuntime(VersionSpec("m", "1.0", "folder", "folder", "text-classification", options),
                          ServerMetrics())


def add(runtime: VersionRuntime, worker: Worker, loop: bool = True) -> None:
    runtime.workers.append(worker)
    if loop:
        runtime.loops[worker.worker_id] = asyncio.create_task(runtime._loop(worker))


async def taken(runtime: VersionRuntime) -> None:
    """Until a loop holds the queued input in its batch."""
    while runtime.pending:
        await asyncio.sleep(0.001)


def test_removing_a_version_answers_the_input_a_loop_is_batching():
    async def scenario():
        version = runtime()
        add(version, Worker(0))
        future, = version.submit(["a great film"])
        await taken(version)
        await version.close()  # drains: waits for the batch that holds the input
        return future

    future = asyncio.run(asyncio.wait_for(scenario(), timeout=10))
    assert future.result() == (0, "a great film")


def test_an_input_held_by_a_worker_that_scales_away_runs_on_another():
    async def scenario():
        version = runtime()
        kept, leaving = Worker(0), Worker(1)
        add(version, kept, loop=False)
        add(version, leaving)  # the last worker, the one scale(1) stops; only its loop runs yet
        future, = version.submit(["a great film"])
        await taken(version)
        version.loops[kept.worker_id] = asyncio.create_task(version._loop(kept))
        await version.scale(1)
        answer = await asyncio.wait_for(future, timeout=5)
        await version.close()
        return answer, leaving.stopped, version.in_flight

    answer, stopped, in_flight = asyncio.run(asyncio.wait_for(scenario(), timeout=10))
    assert answer == (0, "a great film") and stopped and in_flight == 0


def test_scaling_to_zero_finishes_the_running_batch_and_refuses_the_queued_inputs_at_once():
    async def scenario():
        version = runtime(workers=1)
        add(version, Worker(0, seconds=0.5))
        futures = version.submit([f"film {i}" for i in range(6)])  # a batch of 4 runs; 2 wait
        while version.in_flight < 4:
            await asyncio.sleep(0.001)
        started = time.perf_counter()
        await version.scale(0)
        results = await asyncio.gather(*futures, return_exceptions=True)
        return results, time.perf_counter() - started, len(version.pending)

    results, seconds, queued = asyncio.run(asyncio.wait_for(scenario(), timeout=10))
    assert results[:4] == [(0, f"film {i}") for i in range(4)]
    assert all(isinstance(r, RequestError) and r.status == 503 and "scaled to 0 workers" in r.message
               for r in results[4:])
    assert seconds < 2 and queued == 0


def test_scaling_to_zero_runs_the_batch_its_worker_is_filling():
    async def scenario():
        version = runtime(workers=1, max_batch_delay=5000.0)
        add(version, Worker(0))
        futures = version.submit(["a great film", "an awful film"])
        await taken(version)
        await version.scale(0)
        return await asyncio.wait_for(asyncio.gather(*futures), timeout=1)

    assert asyncio.run(asyncio.wait_for(scenario(), timeout=10)) == [(0, "a great film"), (0, "an awful film")]


def test_a_version_with_no_worker_running_or_loading_refuses_inputs_at_once():
    async def scenario():
        version = runtime(workers=1)  # asked for one, but none runs or loads: nothing would take the input
        with pytest.raises(RequestError, match="has no worker running") as refused:
            version.submit(["a great film"])
        assert refused.value.status == 503 and not version.pending

    asyncio.run(scenario())


def test_a_worker_that_crashes_while_it_is_scaled_away_is_not_restarted():
    from nlpforge.serving.workers import WorkerCrashed

    class Crashing(Worker):
        def call(self, kind, items, timeout):
            time.sleep(0.2)
            raise WorkerCrashed("the worker process died")

    async def scenario():
        version = runtime(workers=1)
        restarts = []
        version._restart = lambda worker, reason: restarts.append(reason)  # would load the model again
        add(version, Crashing(0))
        future, = version.submit(["a great film"])
        while version.in_flight < 1:
            await asyncio.sleep(0.001)
        await version.scale(0)
        return await asyncio.gather(future, return_exceptions=True), restarts

    (result,), restarts = asyncio.run(asyncio.wait_for(scenario(), timeout=10))
    assert restarts == [] and isinstance(result, RequestError) and result.status == 503
    assert "while its worker was being scaled away" in result.message
