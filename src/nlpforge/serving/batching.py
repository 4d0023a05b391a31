"""Dynamic batching for one model version: a bounded queue and one batching loop per worker.

    runtime = VersionRuntime(spec, metrics)
    await runtime.start()                           # starts spec.workers processes
    outputs = await runtime.submit(["Loved it"])    # waits for the batch that holds it
    await runtime.scale(2)
    await runtime.close()                           # finishes what was accepted, then stops workers

Each worker's loop takes the oldest input, then waits up to `max_batch_delay` ms for more, up to
`batch_size`; under load the queue already holds a full batch and nothing waits. A full queue
refuses new inputs with 503 and a Retry-After. A crashed or hung worker is restarted (counted in
`nlpforge_worker_restarts_total`, logged) and a crashed batch is tried once more on the new one. A
worker that cannot start again is retried after growing pauses (RESTART_PAUSES), then given up; a
version left with no worker (given up, or a scale-up whose worker failed to load) fails its queued
inputs and answers 503 until it is scaled or registered again. An error raised by the handler fails
only its batch (503, as TorchServe's "Prediction failed"): the worker is not restarted for it.

A worker scaled away finishes the batch it runs; one still filling its batch hands it to the workers
that stay, or runs it when none stay. Scaled to 0, the inputs still queued get a 503 at once. A version
removed while a worker loads stops that worker, and the register waiting for it answers 409.
"""
import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from nlpforge.errors import RequestError, ServingError
from nlpforge.serving.metrics import ServerMetrics
from nlpforge.serving.settings import VersionOptions
from nlpforge.serving.workers import HandlerFailed, WorkerCrashed, WorkerProcess, WorkerTimeout

log = logging.getLogger("nlpforge.serving")

RESTART_PAUSES = (0.0, 1.0, 2.0, 4.0, 8.0)  # seconds before each try to restart a worker; then it is given up


@dataclass
class VersionSpec:
    """One served model version: what it is, and how it is served."""

    name: str
    version: str
    folder: str
    url: str
    task: str
    options: VersionOptions
    threads: int = 1              # options.threads, or the cores shared out among the workers
    text_columns: tuple = ()      # what the model was trained on (two: it reads text pairs)


@dataclass
class Pending:
    kind: str
    item: object
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class VersionRuntime:
    """The queue, batching loops and worker processes of one model version."""

    def __init__(self, spec: VersionSpec, metrics: ServerMetrics):
        self.spec = spec
        self.metrics = metrics
        self.labels = (spec.name, spec.version)
        self.pending: collections.deque[Pending] = collections.deque()
        self.wakeup = asyncio.Event()
        self.workers: list[WorkerProcess] = []
        self.loops: dict[int, asyncio.Task] = {}
        self.executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix=f"{spec.name}-{spec.version}")
        self.in_flight = 0
        self.next_worker_id = 0
        self.closing = False
        self.restarts = 0
        self.failure: str | None = None  # why the last worker was given up; cleared when one starts again
        self.batch_seconds = 0.0  # totals for the Retry-After estimate
        self.inputs_done = 0
        self.max_workers = spec.options.workers  # TorchServe's max_worker, as last given
        self.loading = 0  # workers being started now
        self.starting: set[WorkerProcess] = set()  # their processes, stopped by close() if it comes first
        self.retiring: list[WorkerProcess] = []  # scaled away, finishing the batch they run
        self.scaling = asyncio.Lock()  # one scale at a time, so two cannot both start the missing workers

    # --- workers -------------------------------------------------------------------------------------
    async def _start_worker(self) -> WorkerProcess:
        options = self.spec.options
        worker = WorkerProcess(self.spec.folder, self.spec.task, options.backend, self.spec.threads,
                               worker_id=self.next_worker_id, start_timeout=options.startup_timeout,
                               device=options.device)
        self.next_worker_id += 1
        self.loading += 1
        self.starting.add(worker)
        try:
            await asyncio.get_running_loop().run_in_executor(self.executor, worker.start)
        except ServingError:
            if not self.closing:
                raise
        finally:
            self.loading -= 1
            self.starting.discard(worker)
        if self.closing:  # unregistered while it loaded; close() has shut the executor down, so a thread of its own
            await asyncio.to_thread(worker.stop)
            raise self._removed_error()
        self.workers.append(worker)
        self.loops[worker.worker_id] = asyncio.create_task(self._loop(worker))
        self.metrics.workers.labels(*self.labels).set(len(self.workers))
        log.info("model %s version %s: worker %s ready (pid %s)", *self.labels, worker.worker_id, worker.pid)
        return worker

    async def start(self) -> None:
        await self.scale(self.spec.options.workers)

    @property
    def scaled_to_zero(self) -> bool:
        """Whether it was asked to run no worker (min_worker=0), and none runs or loads."""
        return self.spec.options.workers == 0 and not self.workers and not self.loading

    @property
    def live(self) -> bool:
        """Whether a worker is up to take inputs now."""
        return any(w.status == "READY" for w in self.workers)

    def _removed_error(self) -> RequestError:
        return RequestError(f"model {self.spec.name} version {self.spec.version} was removed while its worker "
                            "loaded", status=409)

    async def scale(self, count: int) -> None:
        """Start or stop workers until `count` run (the caller has checked `count` against VersionOptions);
        0 stops them all, and requests then get a 503 that says how to scale up. A worker that fails to start
        raises its ServingError; with none left running, the version answers 503 naming why."""
        async with self.scaling:
            if self.closing:
                raise RequestError(f"model {self.spec.name} version {self.spec.version} is being removed; there is "
                                   "nothing to scale", status=409)
            self.spec.options = self.spec.options.override(workers=count)
            while len(self.workers) < count:
                try:
                    await self._start_worker()
                except ServingError as error:
                    if not self.workers:
                        self._no_worker_left(f"its worker failed to start ({error.message})")
                    raise
                self.failure = None
            while len(self.workers) > count:
                await self._retire(self.workers[-1])
            self.metrics.workers.labels(*self.labels).set(len(self.workers))
            if not self.workers:
                self._fail_pending(self._no_worker_error())

    async def _retire(self, worker: WorkerProcess) -> None:
        """Scale one worker away: its loop finishes the batch it runs (or hands over one it is filling), then the
        process stops."""
        self.workers.remove(worker)
        self.retiring.append(worker)
        self.wakeup.set()  # a loop waiting for inputs or for its batch to fill looks again, and sees it is gone
        try:
            task = self.loops.pop(worker.worker_id, None)
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
            await asyncio.get_running_loop().run_in_executor(self.executor, worker.stop)
        finally:
            self.retiring.remove(worker)

    async def _restart(self, worker: WorkerProcess, reason: str) -> bool:
        """Replace a crashed or hung worker's process; returns False when it was given up."""
        self.restarts += 1
        self.metrics.worker_restarts.labels(*self.labels, reason).inc()
        log.error("model %s version %s: worker %s (pid %s) %s; restarting it", *self.labels, worker.worker_id,
                  worker.pid, reason)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, worker.kill)
        failure = "the server is stopping"
        for attempt, pause in enumerate(RESTART_PAUSES, 1):
            await asyncio.sleep(pause)
            if self.closing:
                break
            try:
                await loop.run_in_executor(self.executor, worker.start)
                log.info("model %s version %s: worker %s restarted (pid %s)", *self.labels, worker.worker_id,
                         worker.pid)
                return True
            except ServingError as error:
                failure = error.message
                log.error("model %s version %s: restart %d of %d failed (%s)", *self.labels, attempt,
                          len(RESTART_PAUSES), failure)
        self._give_up(worker, f"its worker failed to restart ({failure})")
        return False

    def _give_up(self, worker: WorkerProcess, failure: str) -> None:
        """Drop a worker that cannot start; the last one's going fails the queued inputs."""
        if worker in self.workers:  # not when it was being scaled away
            self.workers.remove(worker)
        self.loops.pop(worker.worker_id, None)
        self.metrics.workers.labels(*self.labels).set(len(self.workers))
        if not self.closing and not self.workers and worker not in self.retiring:
            self._no_worker_left(failure)

    def _no_worker_left(self, failure: str) -> None:
        """No worker runs where one should: remember why, and fail what is queued (nothing would run it)."""
        self.failure = failure
        log.error("model %s version %s has no worker: %s", *self.labels, failure)
        self._fail_pending(self._failed_error())

    def _fail_pending(self, error: RequestError) -> None:
        while self.pending:
            _fail([self.pending.popleft()], error)
        self.metrics.queue_depth.labels(*self.labels).set(0)

    def _failed_error(self) -> RequestError:
        return RequestError(f"model {self.spec.name} version {self.spec.version} has no worker: {self.failure}; "
                            f"fix the model folder, then scale it (PUT /models/{self.spec.name}/"
                            f"{self.spec.version}?min_worker=1&synchronous=true) or register it again", status=503)

    def _no_worker_error(self) -> RequestError:
        """Why a version with no worker running or loading cannot take inputs."""
        if self.failure:
            return self._failed_error()
        if self.spec.options.workers == 0:
            return RequestError(f"model {self.spec.name} version {self.spec.version} is scaled to 0 workers; scale "
                                f"it up first: PUT /models/{self.spec.name}/{self.spec.version}?min_worker=1"
                                "&synchronous=true", status=503)
        return RequestError(f"model {self.spec.name} version {self.spec.version} has no worker running; retry, or "
                            f"scale it: PUT /models/{self.spec.name}/{self.spec.version}?min_worker=1"
                            "&synchronous=true", status=503, headers={"Retry-After": "1"})

    # --- requests ------------------------------------------------------------------------------------
    def room(self) -> int:
        return self.spec.options.queue_size - len(self.pending)

    def submit(self, items: list, kind: str = "predict") -> list[asyncio.Future]:
        """Queue inputs; returns one future per input. Raises a 503 RequestError when the queue is full."""
        if self.closing:
            raise RequestError(f"model {self.spec.name} version {self.spec.version} is being removed; retry",
                               status=503, headers={"Retry-After": "1"})
        if not self.workers and not self.loading:  # nothing would ever take the inputs
            raise self._no_worker_error()
        if len(items) > self.room():
            self.metrics.rejected.labels(*self.labels).inc(len(items))
            retry = max(1, round(len(self.pending) * self._seconds_per_input()))
            raise RequestError(f"model {self.spec.name} version {self.spec.version} has {len(self.pending)} inputs "
                               f"queued (limit {self.spec.options.queue_size}); retry after {retry}s", status=503,
                               headers={"Retry-After": str(retry)})
        loop = asyncio.get_running_loop()
        futures = []
        for item in items:
            future = loop.create_future()
            self.pending.append(Pending(kind, item, future))
            futures.append(future)
        self.metrics.queue_depth.labels(*self.labels).set(len(self.pending))
        self.wakeup.set()
        return futures

    def _seconds_per_input(self) -> float:
        if not self.inputs_done:
            return 0.05
        return self.batch_seconds / self.inputs_done / max(1, len(self.workers))

    def _take(self, batch: list[Pending]) -> None:
        """Move the oldest queued input into `batch`; it counts as in flight from here, so a drain waits for it."""
        batch.append(self.pending.popleft())
        self.in_flight += 1

    async def _next_batch(self, worker: WorkerProcess, batch: list[Pending]) -> None:
        """Fill `batch` (given empty) with the oldest input, then what arrives within max_batch_delay; stop
        early, as it is, when `worker` is scaled away or given up."""
        while not self.pending:
            if worker not in self.workers:
                return
            self.wakeup.clear()
            await self.wakeup.wait()
        if worker not in self.workers:
            return
        self._take(batch)
        deadline = time.perf_counter() + self.spec.options.max_batch_delay / 1000
        while len(batch) < self.spec.options.batch_size and worker in self.workers:
            if self.pending:
                self._take(batch)
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self.wakeup.clear()
            try:
                await asyncio.wait_for(self.wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        self.metrics.queue_depth.labels(*self.labels).set(len(self.pending))

    async def _loop(self, worker: WorkerProcess) -> None:
        while worker in self.workers:
            taken: list[Pending] = []
            try:
                await self._next_batch(worker, taken)
                if taken and worker in self.retiring and self.workers:  # scaled away while filling: hand it over
                    self._hand_back(taken)
                    continue
                batch = [p for p in taken if not p.future.done()]  # the client gave up or timed out
                for kind in ("predict", "explain"):
                    part = [p for p in batch if p.kind == kind]
                    if part and worker not in self.workers and worker not in self.retiring:
                        _fail(part, RequestError("the worker serving this input could not be restarted; retry",
                                                 status=503, headers={"Retry-After": "1"}))  # given up meanwhile
                    elif part:
                        await self._run(worker, kind, part)
            except asyncio.CancelledError:  # the version is removed
                unanswered = [p for p in taken if not p.future.done()]
                if self.workers and not self.closing:
                    self._hand_back(unanswered)
                else:
                    _fail(unanswered, RequestError("the model was removed before this input ran", status=503))
                raise
            finally:
                self.in_flight -= len(taken)

    def _hand_back(self, taken: list[Pending]) -> None:
        """Queue inputs a loop took but will not run again, oldest first, for another worker."""
        self.pending.extendleft(reversed([p for p in taken if not p.future.done()]))
        self.metrics.queue_depth.labels(*self.labels).set(len(self.pending))
        self.wakeup.set()

    async def _run(self, worker: WorkerProcess, kind: str, batch: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        for p in batch:
            self.metrics.waited(*self.labels, started - p.enqueued)
        items = [p.item for p in batch]
        for attempt in (1, 2):
            try:
                outputs = await loop.run_in_executor(self.executor, worker.call, kind, items,
                                                     self.spec.options.response_timeout)
                break
            except RequestError as error:
                return _fail(batch, error)
            except HandlerFailed as error:
                log.error("model %s version %s: %s", *self.labels, error)
                return _fail(batch, RequestError(f"the model failed on this input ({str(error).splitlines()[-1]}); "
                                                 "see the server log", status=503))
            except (WorkerTimeout, WorkerCrashed) as error:
                if worker in self.retiring:  # no restart: it is going
                    return _fail(batch, RequestError(f"{error}, while its worker was being scaled away; retry",
                                                     status=503, headers={"Retry-After": "1"}))
                if isinstance(error, WorkerTimeout):
                    restarted = await self._restart(worker, "timeout")
                    return _fail(batch, RequestError(f"{error}; the worker was "
                                                     f"{'restarted' if restarted else 'given up'}", status=504))
                if not await self._restart(worker, "crash"):
                    return _fail(batch, self._failed_error() if self.failure else
                                 RequestError(f"the worker crashed on this batch and cannot start again ({error})",
                                              status=503, headers={"Retry-After": "1"}))
                if attempt == 2:
                    return _fail(batch, RequestError(f"the worker crashed twice on this batch ({error})",
                                                     status=503, headers={"Retry-After": "1"}))
        elapsed = time.perf_counter() - started
        if kind == "predict":
            self.metrics.batch_size.labels(*self.labels).observe(len(batch))
            self.metrics.batch_time.labels(*self.labels).observe(elapsed)
            self.batch_seconds += elapsed
            self.inputs_done += len(batch)
        for p, output in zip(batch, outputs):
            if not p.future.done():
                p.future.set_result(output)

    # --- shutdown ------------------------------------------------------------------------------------
    async def drain(self, timeout: float = 60.0) -> None:
        """Wait until every accepted input has its answer (or timeout seconds pass, or no worker is left to
        answer)."""
        end = time.perf_counter() + timeout
        while (self.pending or self.in_flight) and self.workers and time.perf_counter() < end:
            await asyncio.sleep(0.01)

    async def close(self, drain: bool = True) -> None:
        self.closing = True
        for worker in [*self.starting, *self.workers, *self.retiring]:
            if worker in self.starting or worker.status == "STARTING":  # loading, or restarting: no use now
                worker.abort()
        async with self.scaling:  # a scale under way ends first: the worker it loads stops (see _start_worker)
            pass
        if drain:
            await self.drain()
        for task in self.loops.values():
            task.cancel()
        await asyncio.gather(*self.loops.values(), return_exceptions=True)
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self.executor, w.stop) for w in self.workers))
        for p in self.pending:
            if not p.future.done():
                p.future.set_exception(RequestError("the model was removed before this input ran", status=503))
        self.workers.clear()
        self.metrics.forget(*self.labels)
        self.executor.shutdown(wait=False)

    def describe(self) -> dict:
        s, o = self.spec, self.spec.options
        return {"modelName": s.name, "modelVersion": s.version, "modelUrl": s.url, "task": s.task,
                "backend": o.backend, "device": o.device, "batchSize": o.batch_size, "maxBatchDelay": o.max_batch_delay,
                "minWorkers": o.workers, "maxWorkers": max(self.max_workers, o.workers), "threadsPerWorker": s.threads,
                "queueSize": o.queue_size, "queued": len(self.pending), "responseTimeout": o.response_timeout,
                "capturePercent": o.capture_percent, "workerRestarts": self.restarts, "failure": self.failure,
                "workers": [w.describe() for w in self.workers] + [
                    {"id": None, "pid": None, "status": "LOADING", "startTime": None, "memoryUsage": 0,
                     "gpu": o.device != "cpu"}
                    for _ in range(self.loading)]}


def _fail(batch: list[Pending], error: Exception) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(error)

