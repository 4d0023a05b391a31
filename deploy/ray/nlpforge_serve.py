"""Ray Serve deployment of `nlpforge serve`: each replica runs the model server on local ports and relays
the requests Ray routes to it.

    cd deploy/ray && serve run --working-dir . serve_config.yaml
    curl -X POST http://127.0.0.1:8000/predictions/stars -T review.txt
    nlpforge models list --management-url http://127.0.0.1:8000/management --key-file key_file.json

Why a whole `nlpforge serve` per replica rather than `nlpforge.load(...)` and predict in the replica:
clients keep the API they already speak (TorchServe's /predictions and /explanations, KServe v1,
`nlpforge models ...`, the SDK's Predictor), and every replica keeps what the server does besides
predicting: dynamic batching over worker processes restarted on a crash, model versions with A/B
weights, sticky keys and a shadow, the shared state in the model store, data capture, Prometheus
metrics. A replica that called predict itself would be a second, smaller server to keep in step.
The cost is one local HTTP hop per request. The server runs as a child process, so a crash in it
cannot take the Ray actor down unnoticed: `check_health` sees it and Ray replaces the replica.

Requests under `management_prefix` (default /management) go to the server's management API, the
others to its inference API. The application's `args` in serve_config.yaml are `nlpforge serve`
settings (model_store, models, batch_size, ...), checked when the application is built; host and
ports are each replica's own.
"""
import json
import logging
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import httpx
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from nlpforge.errors import ConfigError
from nlpforge.sdk.predictor import free_ports
from nlpforge.serving.client import InferenceClient
from nlpforge.serving.settings import ServeSettings
from nlpforge.settings import from_flat

log = logging.getLogger("ray.serve")

REPLICA_OWN = ("host", "inference_port", "management_port", "metrics_port")
# Hop-by-hop headers (RFC 9110 7.6.1) and those httpx sets itself from the body it relays.
NOT_RELAYED = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
               "transfer-encoding", "upgrade", "host", "content-length", "content-encoding"}


def server_settings(args: dict, ports: dict | None = None) -> ServeSettings:
    """The replica's `nlpforge serve` settings: `args` of serve_config.yaml on 127.0.0.1 and the given ports."""
    given = sorted(set(args) & set(REPLICA_OWN))
    if given:
        raise ConfigError(f"serve_config.yaml args: {', '.join(given)} are chosen by each replica; remove them")
    ports = ports or {name: 0 for name in REPLICA_OWN[1:]}
    return from_flat(ServeSettings, {**args, "host": "127.0.0.1", **ports}, where="serve_config.yaml args")


def _relayed(headers) -> dict:
    return {name: value for name, value in headers.items() if name.lower() not in NOT_RELAYED}


@serve.deployment(health_check_period_s=10, health_check_timeout_s=30, graceful_shutdown_timeout_s=40)
class NlpforgeServer:
    """One `nlpforge serve` child process on free local ports, and a relay to it."""

    def __init__(self, args: dict, management_prefix: str = "/management", startup_timeout: float = 600.0):
        self.settings = server_settings(args, free_ports("127.0.0.1"))
        self.management_prefix = management_prefix.rstrip("/")
        self.folder = Path(tempfile.mkdtemp(prefix="nlpforge-ray-"))
        settings_file = self.folder / "serve.json"
        settings_file.write_text(json.dumps(asdict(self.settings), indent=1), encoding="utf-8")
        self.process = subprocess.Popen([sys.executable, "-m", "nlpforge", "serve", "--config", str(settings_file)],
                                        stdin=subprocess.DEVNULL)
        base = "http://127.0.0.1:{}"
        self.inference_url = base.format(self.settings.inference_port)
        self.management_url = base.format(self.settings.management_port)
        self._wait_for_ping(startup_timeout)
        timeout = httpx.Timeout(self.settings.request_timeout + 5)
        self.inference = httpx.AsyncClient(base_url=self.inference_url, timeout=timeout)
        self.management = httpx.AsyncClient(base_url=self.management_url, timeout=timeout)

    def _wait_for_ping(self, timeout: float) -> None:
        client, deadline = InferenceClient(self.inference_url, timeout=5), time.monotonic() + timeout
        while not client.ping():
            if self.process.poll() is not None:
                raise RuntimeError(f"nlpforge serve exited with code {self.process.returncode} before answering "
                                   "/ping; its error is in the replica's log above")
            if time.monotonic() > deadline:
                self.process.terminate()
                raise RuntimeError(f"nlpforge serve did not answer /ping within {timeout:.0f}s")
            time.sleep(0.5)

    async def __call__(self, request: Request) -> Response:
        path = request.url.path
        root = request.scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        client = self.inference
        if self.management_prefix and (path == self.management_prefix
                                       or path.startswith(self.management_prefix + "/")):
            client, path = self.management, path[len(self.management_prefix):] or "/"
        answer = await client.request(request.method, path, params=request.url.query, content=await request.body(),
                                      headers=_relayed(request.headers))
        return Response(answer.content, status_code=answer.status_code, headers=_relayed(answer.headers))

    async def check_health(self) -> None:
        """Ray replaces the replica when this raises: the server exited, or /ping is not healthy."""
        if self.process.poll() is not None:
            raise RuntimeError(f"nlpforge serve exited with code {self.process.returncode}")
        answer = await self.inference.get("/ping", timeout=20)
        if answer.status_code != 200:
            raise RuntimeError(f"nlpforge serve /ping answered {answer.status_code}: {answer.text[:200]}")

    def __del__(self):
        """SIGTERM lets the server finish accepted requests (--shutdown-timeout) before it exits."""
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(self.settings.shutdown_timeout + 5)
            except subprocess.TimeoutExpired:
                process.kill()


def build(args: dict):
    """The application of serve_config.yaml (`import_path: nlpforge_serve:build`): `args` are `nlpforge
    serve` settings, plus management_prefix and startup_timeout (seconds until /ping answers)."""
    args = dict(args)
    management_prefix = args.pop("management_prefix", "/management")
    startup_timeout = float(args.pop("startup_timeout", 600.0))
    server_settings(args)
    return NlpforgeServer.bind(args, management_prefix, startup_timeout)
