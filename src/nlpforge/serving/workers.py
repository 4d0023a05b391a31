"""Worker processes: each loads one model version and predicts the batches the server sends it.

A worker is a spawned process holding a handler, talking to the server over a pipe:

    worker = WorkerProcess("models/stars", task="text-classification", backend="torch", threads=2)
    worker.start()                                # blocks until the model is loaded
    worker.call("predict", ["Loved it", "Meh"])   # [{"label": 5, ...}, {"label": 3, ...}]
    worker.stop()

Separate processes keep a model's crash or hang from taking the server down: the caller sees
`WorkerCrashed` or `WorkerTimeout`, and starts a fresh one.
"""
import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback

from nlpforge.errors import NlpforgeError, RequestError, ServingError

log = logging.getLogger("nlpforge.serving")


def _context():
    """A forkserver that has imported torch and transformers once: a worker then starts in a fraction of a
    second instead of several (spawn), and without fork's hazards in a threaded server."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["nlpforge.serving.preload"])
    return context


def warm_up() -> None:
    """Start the forkserver (importing torch and transformers) now, so the first register is quick too."""
    from multiprocessing import forkserver

    _context()
    forkserver.ensure_running()


class WorkerCrashed(Exception):
    """The worker process died while holding a batch."""


class WorkerTimeout(Exception):
    """The worker did not answer within the response timeout."""


class HandlerFailed(Exception):
    """The handler raised an unexpected error on a batch; the worker process is still alive and serving."""


def worker_main(connection, folder: str, task: str, backend: str, threads: int, device: str = "cpu",
                worker_id: int = 0) -> None:
    """Entry point of a worker process: load, report ready, then answer batches until told to stop."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["OMP_NUM_THREADS"] = str(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when workers stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from nlpforge.serving.handler import handler_for, worker_device

    try:
        handler = handler_for(task)
        handler.setup(folder, backend=backend, threads=threads, device=worker_device(device, worker_id))
    except Exception as error:  # noqa: BLE001 - reported to the server, which answers the register call
        message = error.message if isinstance(error, NlpforgeError) else traceback.format_exc(limit=3)
        connection.send(("failed", message))
        return
    connection.send(("ready", os.getpid()))
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return  # the server is gone
        if message is None:
            return
        kind, batch = message
        try:
            outputs = handler.explain(batch) if kind == "explain" else handler.predict(batch)
            connection.send(("ok", outputs))
        except NlpforgeError as error:  # a bad input: the client's error, answered with its status
            connection.send(("request_error", (error.message, getattr(error, "status", 400))))
        except Exception:  # noqa: BLE001 - a bug in a handler must not kill the worker
            connection.send(("error", traceback.format_exc(limit=5)))


class WorkerProcess:
    """One worker process and the server's end of its pipe. `call` is blocking: run it in a thread."""

    def __init__(self, folder: str, task: str, backend: str, threads: int, worker_id: int = 0,
                 start_timeout: float = 300.0, device: str = "cpu"):
        self.folder, self.task, self.backend, self.threads = str(folder), task, backend, threads
        self.device = device
        self.worker_id = worker_id
        self.start_timeout = start_timeout
        self.process = None
        self.connection = None
        self.pid = None
        self.status = "STOPPED"
        self.started_at = 0.0
        self.aborted = False
        self.lock = threading.Lock()

    def start(self) -> None:
        context = _context()
        here, there = context.Pipe(duplex=True)
        self.status = "STARTING"
        self.process = context.Process(target=worker_main, daemon=True, name=f"nlpforge-worker-{self.worker_id}",
                                       args=(there, self.folder, self.task, self.backend, self.threads, self.device,
                                             self.worker_id))
        self.process.start()
        there.close()
        self.connection = here
        if self.aborted:  # abort() came before there was a process to kill
            self.kill()
            raise ServingError(f"{self.folder}: the worker was stopped while it loaded the model")
        if not here.poll(self.start_timeout):
            self.kill()
            raise ServingError(f"{self.folder}: the worker did not load the model within {self.start_timeout:.0f}s")
        try:
            state, detail = here.recv()
        except (EOFError, OSError):
            self.kill()
            raise ServingError(f"{self.folder}: the worker died while loading the model; see the server log") from None
        if state != "ready":
            self.kill()
            raise ServingError(f"{self.folder}: the worker cannot load the model: {detail}")
        self.pid, self.status, self.started_at = detail, "READY", time.time()

    def call(self, kind: str, batch: list, timeout: float) -> list:
        """Send a batch and wait for its outputs; raises WorkerCrashed, WorkerTimeout, HandlerFailed or
        RequestError."""
        with self.lock:
            try:
                self.connection.send((kind, batch))
                if not self.connection.poll(timeout):
                    self.kill()
                    raise WorkerTimeout(f"worker {self.pid} gave no answer within {timeout:.0f}s")
                state, detail = self.connection.recv()
            except (EOFError, OSError, BrokenPipeError) as error:
                self.status = "CRASHED"
                raise WorkerCrashed(f"worker {self.pid} died ({type(error).__name__}, "
                                    f"exit code {self.process.exitcode if self.process else None})") from None
        if state == "ok":
            return detail
        if state == "request_error":
            message, status = detail
            raise RequestError(message, status=status)
        raise HandlerFailed(f"worker {self.pid}: the handler raised an error:\n{detail}")

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is None:
            return
        try:
            self.connection.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.process.join(timeout)
        self.kill()

    def abort(self) -> None:
        """Stop a worker that is loading, from another thread: start() then raises ServingError at once."""
        self.aborted = True
        process = self.process
        if process is not None and process.pid is not None:
            try:
                process.kill()
            except (OSError, ValueError):  # already gone
                pass

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        if self.connection is not None:
            self.connection.close()
        self.status = "STOPPED"

    def describe(self) -> dict:
        started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.started_at)) if self.started_at else None
        return {"id": str(self.worker_id), "pid": self.pid, "status": self.status, "startTime": started,
                "memoryUsage": 0, "gpu": self.device != "cpu"}
