"""The model server: three uvicorn servers (inference, management, metrics) on one event loop.

    nlpforge serve --model-store model_store --models stars=models/stars

or from Python, e.g. in tests (real sockets, a background thread):

    with ServerThread(ServeSettings.of(model_store="store", inference_port=0, ...)) as server:
        httpx.post(f"{server.url('inference')}/predictions/stars", json={"text": "Loved it"})

With `--shared-state`, replicas on one model store serve the same models (replicas.py).

On SIGTERM or SIGINT the servers stop accepting connections, answer every request already
accepted, and only then stop the worker processes.
"""
import asyncio
import contextlib
import inspect
import logging
import signal
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from nlpforge.errors import ConfigError, RequestError
from nlpforge.serving.capture import DataCapture, captured_input
from nlpforge.serving.metrics import ServerMetrics
from nlpforge.serving.registry import ModelRegistry
from nlpforge.serving.replicas import SharedState
from nlpforge.serving.security import load_or_create_keys
from nlpforge.serving.settings import ServeSettings
from nlpforge.serving.workers import warm_up
from nlpforge.settings import check_writable

log = logging.getLogger("nlpforge.serving")


@dataclass
class ServerState:
    """What the three apps share: the registry, metrics, data capture and keys."""

    settings: ServeSettings
    registry: ModelRegistry
    metrics: ServerMetrics
    capture: DataCapture
    keys: object = None
    shared: SharedState | None = None
    ready: bool = False
    background: set = field(default_factory=set)

    async def change(self, action):
        """Run a management action (a function; its result may be awaitable) and return its result; with
        --shared-state, for every replica on the model store."""
        async def run():
            result = action()
            return await result if inspect.isawaitable(result) else result
        return await (self.shared.change(run) if self.shared is not None else run())

    def require(self, kind: str):
        """A FastAPI dependency that checks the token of `kind` when auth is on for it."""
        from fastapi import Request

        enabled = {"management": self.settings.auth, "inference": self.settings.auth_inference,
                   "API": self.keys is not None}[kind]

        async def check(request: Request):
            if enabled:
                self.keys.check(kind, request.headers.get("authorization"))
        return check

    def after_prediction(self, runtime, shadow, items, outputs, request_id: str, values=None) -> None:
        """Capture a sample of the answered inputs and run them on the shadow. Capture records each input as
        `captured_input` makes it of the request's `values` and the decoded `items`, or the items themselves
        when no values are given."""
        spec = runtime.spec
        percent = spec.options.capture_percent
        if percent <= 0 and shadow is None:  # most requests: nothing to record or compare
            return
        captured = items if values is None else [captured_input(value, item) for value, item in zip(values, items)]
        if percent > 0:
            for text, output in zip(captured, outputs):
                if self.capture.record(spec.name, spec.version, percent, text, output, request_id=request_id):
                    self.metrics.captured.labels(spec.name, spec.version).inc()
        if shadow is not None:
            task = asyncio.create_task(self._shadow(runtime, shadow, items, outputs, request_id, captured))
            self.background.add(task)
            task.add_done_callback(self.background.discard)

    async def _shadow(self, runtime, shadow, items, outputs, request_id: str, captured) -> None:
        """Run the same inputs on the shadow version; log and count agreement, capture its answers."""
        try:
            futures = shadow.submit(items)
            shadow_outputs = await asyncio.wait_for(asyncio.gather(*futures), self.settings.request_timeout)
        except (RequestError, asyncio.TimeoutError) as error:
            log.warning("shadow %s/%s skipped a request: %s", shadow.spec.name, shadow.spec.version, error)
            return
        for text, served, shadowed in zip(captured, outputs, shadow_outputs):
            agree = answer_of(served) == answer_of(shadowed)
            self.metrics.shadow.labels(runtime.spec.name, runtime.spec.version, shadow.spec.version,
                                       str(agree).lower()).inc()
            log.info("shadow %s: served %s=%s, shadow %s=%s%s", runtime.spec.name, runtime.spec.version,
                     served.get("label", answer_of(served)), shadow.spec.version,
                     shadowed.get("label", answer_of(shadowed)), "" if agree else " (DIFFERS)")
            self.capture.record(shadow.spec.name, shadow.spec.version, 100.0, text,
                                {**shadowed, "served_version": runtime.spec.version,
                                 "served_label": served.get("label")}, shadow=True, request_id=request_id)


def answer_of(output):
    """An answer with its scores left out, so that a shadow's can be compared with the served one whatever the
    task: a label, a span of the context, the tokens for each mask, the entities."""
    if isinstance(output, dict):
        return {key: answer_of(value) for key, value in output.items()
                if key not in ("truncated", "probabilities") and not isinstance(value, float)}
    if isinstance(output, list):
        return [answer_of(value) for value in output]
    return output


def build_state(settings: ServeSettings) -> ServerState:
    capture = DataCapture(settings.capture_dir or Path(settings.model_store) / "capture",
                          max_bytes=settings.capture_max_bytes, backups=settings.capture_backups)
    metrics = ServerMetrics(capture_folder=capture.folder)  # monitoring schedules write their status there
    registry = ModelRegistry(settings.model_store, metrics)
    state = ServerState(settings, registry, metrics, capture)
    if settings.auth or settings.auth_inference:
        state.keys = load_or_create_keys(settings.key_path)
    if settings.shared_state:
        state.shared = SharedState(settings.model_store, registry, poll=settings.shared_state_poll)
    return state


class _OneWritePerStep:
    """A transport whose writes within one event-loop step reach the socket as one write.

    uvicorn writes a response's head and its body separately. A replica killed between the two
    leaves a client with a head and no body, which no load balancer can retry: the response had
    begun. Written together, a response is either wholly in the kernel's send buffer (which
    still delivers it after the process dies) or not sent at all, so the balancer retries it.
    """

    def __init__(self, transport: asyncio.Transport):
        self._transport = transport
        self._pending: list[bytes] = []

    def write(self, data) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(bytes(data))

    def writelines(self, lines) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


def _whole_responses_protocol() -> type:
    """uvicorn's HTTP protocol, writing each response in one piece (see _OneWritePerStep)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class WholeResponses(AutoHTTPProtocol):
        def connection_made(self, transport):
            super().connection_made(_OneWritePerStep(transport))

    return WholeResponses


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

            async def startup(self, sockets=None):
                try:
                    await super().startup(sockets=sockets)
                except SystemExit:  # uvicorn exits when it cannot listen (it has logged why); serve() says so
                    self.should_exit = True

        config = uvicorn.Config(app, host=host, port=port, log_level=settings.log_level, access_log=False,
                                lifespan="off", timeout_graceful_shutdown=int(settings.shutdown_timeout),
                                timeout_keep_alive=30, limit_concurrency=None, backlog=2048,
                                http=_whole_responses_protocol())
        return Server(config)


def _host_problem(host: str) -> str | None:
    """Why no port at all can be bound on `host` (a name that does not resolve, an address not of this machine),
    or None when the host is fine, so the ports themselves are the problem."""
    try:
        addresses = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as error:
        return (f"--host {host}: the name does not resolve to an address ({error}); give an address of this machine, "
                "e.g. 127.0.0.1 (or 0.0.0.0 for every interface)")
    failed = None
    for family, kind, proto, _, address in addresses:  # one address that binds is enough ("localhost": ::1 may not)
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.bind(address)   # port 0: any free port, so only the address itself can fail
            return None
        except OSError as error:
            failed = error
    return (f"--host {host}: cannot listen there ({failed.strerror or failed}); give an address of this machine, "
            "e.g. 127.0.0.1 (or 0.0.0.0 for every interface)")


async def serve(settings: ServeSettings, stop: asyncio.Event | None = None, started=None,
                install_signals: bool = True) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT); `started(state, ports)` is called once listening."""
    from nlpforge.serving.inference import inference_app
    from nlpforge.serving.management import management_app, metrics_app

    problem = _host_problem(settings.host)
    if problem:
        raise ConfigError(problem)
    check_writable(settings.model_store, "--model-store", folder=True)
    if settings.capture_dir:
        check_writable(settings.capture_dir, "--capture-dir", folder=True)
    Path(settings.model_store).mkdir(parents=True, exist_ok=True)
    state = build_state(settings)
    if state.shared is not None:
        state.shared.open()
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
            raise ConfigError(f"cannot listen on {settings.host} ports {[p for _, p in apps]} (the log above says "
                              "why); is another server running on them? choose other ports or --host")
        await asyncio.sleep(0.02)
    ports = [s.servers[0].sockets[0].getsockname()[1] for s in servers]
    warming = loop.run_in_executor(None, warm_up)  # imports torch in the forkserver while we wait
    log.info("nlpforge serving: inference http://%s:%s, management http://%s:%s, metrics http://%s:%s",
             settings.host, ports[0], settings.host, ports[1], settings.host, ports[2])
    if state.keys is not None:
        log.info("token auth on (management%s); keys in %s", ", inference" if settings.auth_inference else "",
                 settings.key_path)

    async def load_models():
        for entry in settings.models:
            name, _, path = entry.partition("=")
            if name in state.registry.models:
                log.info("model %s: served as the shared state says; %s is not loaded again", name, path)
                continue
            await state.registry.register(path, name, None, settings.version)
            log.info("model %s loaded from %s", name, path)

    try:
        if state.shared is not None:
            await state.shared.join(load_models)
        else:
            await load_models()
    except Exception:
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        await state.registry.close()
        raise
    watching = asyncio.create_task(state.shared.watch()) if state.shared is not None else None
    state.ready = True
    if started is not None:
        started(state, ports)
    await stop.wait()
    log.info("shutting down: finishing accepted requests")
    if watching is not None:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
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
