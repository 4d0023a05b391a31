"""The model server: three uvicorn servers (inference, management, metrics) on one event loop.

    nlpforge serve --model-store model_store --models stars=models/stars

or from Python, e.g. in tests (real sockets, a background thread):

    with ServerThread(ServeSettings(model_store="store", inference_port=0, ...)) as server:
        httpx.post(f"{server.inference_url}/predictions/stars", json={"text": "Loved it"})

On SIGTERM or SIGINT the servers stop accepting connections, answer every request already
accepted, and only then stop the worker processes.
"""
import asyncio
import contextlib
import logging
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

from nlpforge.errors import ConfigError, RequestError
from nlpforge.serving.capture import DataCapture
from nlpforge.serving.handler import BACKENDS, default_threads
from nlpforge.serving.metrics import ServerMetrics
from nlpforge.serving.registry import ModelRegistry
from nlpforge.serving.security import load_or_create_keys
from nlpforge.serving.workers import warm_up
from nlpforge.training.config import setting

log = logging.getLogger("nlpforge.serving")


@dataclass
class ServeSettings:
    """Serve nlpforge models behind a TorchServe-compatible REST API."""

    model_store: str = setting("", "folder of model folders / .tar.gz files; relative model URLs are read here",
                               required=True)
    models: list[str] = setting([], "models to load at start, as name=path (path relative to the model store)")
    host: str = setting("127.0.0.1", "address to bind; 0.0.0.0 exposes the server to the network")
    inference_port: int = setting(8080, "port of the inference API (0: any free port)")
    management_port: int = setting(8081, "port of the management API (0: any free port)")
    metrics_port: int = setting(8082, "port of the Prometheus metrics (0: any free port)")
    backend: str = setting("torch", "default inference backend: torch, onnx or onnx-int8")
    batch_size: int = setting(8, "default largest batch per worker call")
    max_batch_delay: float = setting(10.0, "default ms a worker waits for a batch to fill")
    workers: int = setting(1, "default worker processes per model version")
    threads: int | None = setting(None, "torch/ONNX threads per worker (default: cores / workers)")
    queue_size: int = setting(256, "default inputs that may wait per version; more get 503 + Retry-After")
    request_timeout: float = setting(60.0, "seconds before a waiting request gets 504")
    response_timeout: float = setting(120.0, "seconds before a worker that gives no answer is restarted")
    max_request_bytes: int = setting(1_000_000, "largest request body; bigger ones get 413")
    max_batch_items: int = setting(64, "most inputs in one request; more get 413")
    max_text_chars: int = setting(100_000, "longest text in characters; longer ones get 413")
    auth: bool = setting(True, "require the management key from the key file on the management API")
    auth_inference: bool = setting(False, "require the inference key on the inference API too")
    key_file: str | None = setting(None, "TorchServe-style key file (default: <model-store>/key_file.json)")
    sticky_header: str = setting("X-Sticky-Key", "request header whose value pins a client to one A/B version")
    capture_dir: str | None = setting(None, "data capture folder (default: <model-store>/capture)")
    capture_percent: float = setting(0.0, "default % of requests written to data capture")
    capture_max_bytes: int = setting(10_000_000, "bytes per capture file before it rotates")
    capture_backups: int = setting(5, "rotated capture files kept per model version")
    shutdown_timeout: float = setting(30.0, "seconds to finish accepted requests after SIGTERM")
    log_level: str = setting("info", "server log level: debug, info, warning or error")

    def __post_init__(self):
        checks = [(bool(self.model_store), "--model-store is required"),
                  (self.backend in BACKENDS, f"--backend must be one of {', '.join(BACKENDS)}"),
                  (self.batch_size >= 1, "--batch-size must be at least 1"),
                  (self.max_batch_delay >= 0, "--max-batch-delay must be at least 0"),
                  (self.workers >= 1, "--workers must be at least 1"),
                  (self.queue_size >= 1, "--queue-size must be at least 1"),
                  (self.request_timeout > 0, "--request-timeout must be positive"),
                  (0 <= self.capture_percent <= 100, "--capture-percent must be 0..100"),
                  (all("=" in m for m in self.models), "--models takes name=path, e.g. stars=models/stars")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def key_path(self) -> Path:
        return Path(self.key_file) if self.key_file else Path(self.model_store) / "key_file.json"


@dataclass
class ServerState:
    """What the three apps share: the registry, metrics, data capture and keys."""

    settings: ServeSettings
    registry: ModelRegistry
    metrics: ServerMetrics
    capture: DataCapture
    keys: object = None
    ready: bool = False
    background: set = field(default_factory=set)

    def require(self, kind: str):
        """A FastAPI dependency that checks the token of `kind` when auth is on for it."""
        from fastapi import Request

        enabled = self.settings.auth if kind == "management" else self.settings.auth_inference

        async def check(request: Request):
            if enabled:
                self.keys.check(kind, request.headers.get("authorization"))
        return check

    def after_prediction(self, runtime, shadow, items, outputs, request_id: str) -> None:
        spec = runtime.spec
        percent = spec.capture_percent
        if percent > 0:
            for text, output in zip(items, outputs):
                if self.capture.record(spec.name, spec.version, percent, text, output, request_id=request_id):
                    self.metrics.captured.labels(spec.name, spec.version).inc()
        if shadow is not None:
            task = asyncio.create_task(self._shadow(runtime, shadow, items, outputs, request_id))
            self.background.add(task)
            task.add_done_callback(self.background.discard)

    async def _shadow(self, runtime, shadow, items, outputs, request_id: str) -> None:
        """Run the same inputs on the shadow version; log and count agreement, capture its answers."""
        try:
            futures = shadow.submit(items)
            shadow_outputs = await asyncio.wait_for(asyncio.gather(*futures), self.settings.request_timeout)
        except (RequestError, asyncio.TimeoutError) as error:
            log.warning("shadow %s/%s skipped a request: %s", shadow.spec.name, shadow.spec.version, error)
            return
        for text, served, shadowed in zip(items, outputs, shadow_outputs):
            agree = served.get("label") == shadowed.get("label")
            self.metrics.shadow.labels(runtime.spec.name, runtime.spec.version, shadow.spec.version,
                                       str(agree).lower()).inc()
            log.info("shadow %s: served %s=%s, shadow %s=%s%s", runtime.spec.name, runtime.spec.version,
                     served.get("label"), shadow.spec.version, shadowed.get("label"), "" if agree else " (DIFFERS)")
            self.capture.record(shadow.spec.name, shadow.spec.version, 100.0, text,
                                {**shadowed, "served_version": runtime.spec.version,
                                 "served_label": served.get("label")}, shadow=True, request_id=request_id)


def build_state(settings: ServeSettings) -> ServerState:
    metrics = ServerMetrics()
    registry = ModelRegistry(settings.model_store, metrics,
                             default_threads=settings.threads or default_threads(settings.workers))
    capture = DataCapture(settings.capture_dir or Path(settings.model_store) / "capture",
                          max_bytes=settings.capture_max_bytes, backups=settings.capture_backups)
    state = ServerState(settings, registry, metrics, capture)
    if settings.auth or settings.auth_inference:
        state.keys = load_or_create_keys(settings.key_path)
    return state


class _Uvicorn:
    """A uvicorn server that leaves signals to us (three servers share one handler)."""

    def __new__(cls, app, host: str, port: int, settings: ServeSettings):
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):
                yield

            def install_signal_handlers(self):
                pass

        config = uvicorn.Config(app, host=host, port=port, log_level=settings.log_level, access_log=False,
                                lifespan="off", timeout_graceful_shutdown=int(settings.shutdown_timeout),
                                timeout_keep_alive=30, limit_concurrency=None, backlog=2048)
        return Server(config)


async def serve(settings: ServeSettings, stop: asyncio.Event | None = None, started=None,
                install_signals: bool = True) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT); `started(state, ports)` is called once listening."""
    from nlpforge.serving.inference import inference_app
    from nlpforge.serving.management import management_app, metrics_app

    Path(settings.model_store).mkdir(parents=True, exist_ok=True)
    state = build_state(settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if install_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    apps = [(inference_app(state), settings.inference_port), (management_app(state), settings.management_port),
            (metrics_app(state), settings.metrics_port)]
    servers = [_Uvicorn(app, settings.host, port, settings) for app, port in apps]
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):  # a port in use: uvicorn logs it and returns
            for s in servers:
                s.should_exit = True
            await asyncio.gather(*tasks, return_exceptions=True)
            raise ConfigError(f"cannot listen on {settings.host} ports {[p for _, p in apps]}; is another server "
                              "running? choose other ports")
        await asyncio.sleep(0.02)
    ports = [s.servers[0].sockets[0].getsockname()[1] for s in servers]
    warming = loop.run_in_executor(None, warm_up)  # imports torch in the forkserver while we wait
    log.info("nlpforge serving: inference http://%s:%s, management http://%s:%s, metrics http://%s:%s",
             settings.host, ports[0], settings.host, ports[1], settings.host, ports[2])
    if state.keys is not None:
        log.info("token auth on (management%s); keys in %s", ", inference" if settings.auth_inference else "",
                 settings.key_path)
    try:
        for entry in settings.models:
            name, _, path = entry.partition("=")
            await state.registry.register(path, name=name, batch_size=settings.batch_size,
                                          max_batch_delay=settings.max_batch_delay, workers=settings.workers,
                                          backend=settings.backend, queue_size=settings.queue_size,
                                          response_timeout=settings.response_timeout,
                                          capture_percent=settings.capture_percent)
            log.info("model %s loaded from %s", name, path)
    except Exception:
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        await state.registry.close()
        raise
    state.ready = True
    if started is not None:
        started(state, ports)
    await stop.wait()
    log.info("shutting down: finishing accepted requests")
    for s in servers:
        s.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*state.background, return_exceptions=True)
    await state.registry.close()
    await asyncio.gather(warming, return_exceptions=True)
    state.capture.close()
    log.info("stopped")


class ServerThread:
    """Run a server in a background thread (tests, notebooks); ports of 0 are resolved after start."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.state = None
        self.ports = None
        self.error = None
        self._started = threading.Event()

    def start(self, timeout: float = 120.0) -> "ServerThread":
        self.loop = asyncio.new_event_loop()
        self.stop_event = None

        def on_start(state, ports):
            self.state, self.ports = state, ports
            self._started.set()

        async def main():
            self.stop_event = asyncio.Event()
            await serve(self.settings, self.stop_event, on_start, install_signals=False)

        def run():
            try:
                self.loop.run_until_complete(main())
            except BaseException as error:  # noqa: BLE001 - reported to start()
                self.error = error
                self._started.set()

        self.thread = threading.Thread(target=run, daemon=True, name="nlpforge-server")
        self.thread.start()
        if not self._started.wait(timeout) or self.error:
            raise RuntimeError(f"the server did not start: {self.error}")
        return self

    def call(self, coroutine, timeout: float = 120.0):
        """Run a coroutine on the server's loop (e.g. registry.register) and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        if self.stop_event is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout)

    def url(self, which: str = "inference") -> str:
        index = {"inference": 0, "management": 1, "metrics": 2}[which]
        return f"http://{self.settings.host}:{self.ports[index]}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
