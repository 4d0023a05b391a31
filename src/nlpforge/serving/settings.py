"""The model server's settings: the server's own, and how each model version is served.

`VersionOptions` is the one home of a version's options, their defaults and their limits: the
`nlpforge serve` flags (defaults for every version), a config file, the management API's register
parameters and the registry all build and validate it.

    settings = ServeSettings.of(model_store="store", batch_size=16)   # --batch-size 16 for every version
    options = settings.version.override(batch_size=32, workers=2)      # one register call; checked again
"""
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

from nlpforge.errors import ConfigError
from nlpforge.settings import Settings, group, setting


@dataclass
class VersionOptions(Settings):
    """How one model version is served: TorchServe's register parameters, plus ours."""

    backend: Literal["torch", "onnx", "onnx-int8"] = setting("torch", "inference backend: torch, onnx or onnx-int8")
    device: Literal["cpu", "cuda"] = setting("cpu", "where workers run the model: cpu, or cuda (the workers share "
                                                    "the visible GPUs round-robin, as in TorchServe)")
    batch_size: int = setting(8, "largest batch per worker call", min=1, max=1024)
    max_batch_delay: float = setting(10.0, "ms a worker waits for a batch to fill", min=0, max=10_000)
    workers: int = setting(1, "worker processes (TorchServe's initial_workers); 0 loads none until scaled up",
                           min=0, max=16)
    threads: int | None = setting(None, "torch/ONNX threads per worker (default: cores / workers)", min=1, max=256)
    queue_size: int = setting(256, "inputs that may wait; more get 503 + Retry-After", min=1, max=100_000)
    startup_timeout: float = setting(300.0, "seconds a worker may take to load the model", min=1, max=3600)
    response_timeout: float = setting(120.0, "seconds before a worker that gives no answer is restarted",
                                      min=1, max=3600)
    capture_percent: float = setting(0.0, "% of requests written to data capture", min=0, max=100)

    def override(self, **given) -> "VersionOptions":
        """These options with the given (non-None) values replaced, validated again."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ConfigError(f"unknown version option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return replace(self, **{k: v for k, v in given.items() if v is not None})


def help_of(name: str) -> str:
    """The one-line help of a VersionOptions field (the management API documents its parameters with it)."""
    return next(f.metadata["help"] for f in fields(VersionOptions) if f.name == name)


HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110's token: what a header's name may be


@dataclass
class ServeSettings(Settings):
    """Serve nlpforge models behind a TorchServe-compatible REST API."""

    model_store: str = setting("", "folder of model folders / .tar.gz files; relative model URLs are read here",
                               required=True)
    models: list[str] = setting([], "models to load at start, as name=path (path relative to the model store); "
                                    "repeat the flag or separate with commas")
    version: VersionOptions = group(VersionOptions, "defaults for every model version")
    host: str = setting("127.0.0.1", "address to bind; 0.0.0.0 exposes the server to the network")
    inference_port: int = setting(8080, "port of the inference API (0: any free port)", min=0, max=65535)
    management_port: int = setting(8081, "port of the management API (0: any free port)", min=0, max=65535)
    metrics_port: int = setting(8082, "port of the Prometheus metrics (0: any free port)", min=0, max=65535)
    request_timeout: float = setting(60.0, "seconds before a waiting request gets 504", min=0.001)
    max_request_bytes: int = setting(1_000_000, "largest request body; bigger ones get 413", min=1)
    max_batch_items: int = setting(64, "most inputs in one request; more get 413", min=1)
    max_text_chars: int = setting(100_000, "longest text in characters; longer ones get 413", min=1)
    auth: bool = setting(True, "require the management key from the key file on the management API")
    auth_inference: bool = setting(False, "require the inference key on the inference API too (TorchServe's "
                                          "default; nlpforge's is off, as its ports bind 127.0.0.1)")
    key_file: str | None = setting(None, "TorchServe-style key file (default: <model-store>/key_file.json)")
    sticky_header: str = setting("X-Sticky-Key", "request header whose value pins a client to one A/B version")
    capture_dir: str | None = setting(None, "data capture folder (default: <model-store>/capture)")
    capture_max_bytes: int = setting(10_000_000, "bytes per capture file before it rotates", min=1)
    capture_backups: int = setting(5, "rotated capture files kept per model version", min=0)
    shared_state: bool = setting(False, "share models, versions and traffic with every server on this model store "
                                        "(replicas behind a load balancer), in <model-store>/.nlpforge-replicas")
    shared_state_poll: float = setting(0.5, "seconds between looks at the shared state file (--shared-state); a "
                                            "change reaches every replica within this plus a read",
                                       min=0.05, max=60)
    shutdown_timeout: float = setting(30.0, "seconds to finish accepted requests after SIGTERM", min=0)
    log_level: Literal["debug", "info", "warning", "error"] = setting("info", "server log level")

    def check(self):
        if not self.model_store:
            raise ConfigError("--model-store is required")
        if not self.host.strip():
            # an empty host makes uvicorn bind every interface, and the inference API has no key by default
            raise ConfigError("--host is empty, which would listen on every interface; give an address, e.g. "
                              "127.0.0.1 (or 0.0.0.0 to listen on every interface on purpose)")
        self.models = [m for entry in self.models for m in entry.split(",") if m]
        bad = [m for m in self.models if "=" not in m]
        if bad:
            raise ConfigError(f"--models takes name=path, e.g. stars=models/stars, not {bad[0]!r}")
        # Checked here, before any port opens: the registry would refuse a bad name only once the server is up,
        # and the server then takes half a minute to stop (its worker start-up is under way).
        from nlpforge.serving.registry import valid_name

        names = [m.partition("=")[0] for m in self.models]
        for entry, name in zip(self.models, names):
            if not valid_name(name):
                raise ConfigError(f"--models {entry!r}: the name {name!r} must be 1-100 ASCII letters, digits, '-', "
                                  "'_' or '.', starting with a letter or digit")
            if names.count(name) > 1:
                raise ConfigError(f"--models names {name!r} more than once; give each model once (register more "
                                  "versions with `nlpforge models register --version`)")
        if not HEADER_NAME.fullmatch(self.sticky_header):  # a name no request can carry: never sticky, silently
            raise ConfigError(f"--sticky-header {self.sticky_header!r}: not a header name; use ASCII letters, digits "
                              "and -, e.g. X-Sticky-Key")
        ports = [p for p in (self.inference_port, self.management_port, self.metrics_port) if p]
        if len(set(ports)) < len(ports):
            raise ConfigError(f"--inference-port, --management-port and --metrics-port must differ (given "
                              f"{self.inference_port}, {self.management_port}, {self.metrics_port}); choose three "
                              "ports")

    @property
    def key_path(self) -> Path:
        return Path(self.key_file) if self.key_file else Path(self.model_store) / "key_file.json"
