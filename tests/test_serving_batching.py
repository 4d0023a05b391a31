"""The batching loop with stand-in workers: an input a loop has taken but not yet run (it waits for its batch
to fill) is answered when the version is removed, and goes to another worker when its worker scales away."""
import asyncio

from nlpforge.serving.batching import VersionRuntime, VersionSpec
from nlpforge.serving.metrics import ServerMetrics
from nlpforge.serving.settings import VersionOptions


class Worker:
    """Answers each input with (its id, the input) at once; stopping it is recorded."""

    def __init__(self, worker_id: int):
        self.worker_id, self.status, self.stopped = worker_id, "READY", False

    def call(self, kind, items, timeout):
        return [(self.worker_id, item) for item in items]

    def stop(self):
        self.stopped = True


def runtime() -> VersionRuntime:
    """Batches of up to 4 that wait up to 300 ms to fill: one input sits in a loop's batch that long."""
    options = VersionOptions.of(batch_size=4, max_batch_delay=300.0, workers=0)
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
