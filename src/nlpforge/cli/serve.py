"""`nlpforge serve` and `nlpforge models ...`: run the model server and manage what it serves.

    nlpforge serve --model-store model_store --models stars=models/stars --backend onnx-int8
    nlpforge models register models/stars --name stars --version 2.0
    nlpforge models traffic stars --weight 1.0=90 --weight 2.0=10 --shadow 3.0
    nlpforge models set-default stars 2.0
"""
import asyncio
import inspect
import json
import logging
import math
import os
from pathlib import Path
from typing import Optional

import typer

from nlpforge.cli import app
from nlpforge.cli.options import command_from_settings, option_for
from nlpforge.errors import ConfigError
from nlpforge.serving.settings import ServeSettings, VersionOptions
from nlpforge.settings import leaf_fields

models_app = typer.Typer(no_args_is_help=True, help="Manage the models a running server serves.")
app.add_typer(models_app, name="models")

URL = typer.Option("http://127.0.0.1:8081", "--management-url", help="the server's management API")
KEY_FILE = typer.Option(None, "--key-file", help="key file of the server (default: $NLPFORGE_KEY_FILE, "
                        "then ./model_store/key_file.json)")
TOKEN = typer.Option(None, "--token", help="management key (default: read from the key file)")


def _run_serve(settings: ServeSettings) -> None:
    from nlpforge.serving.server import serve

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(settings))


command_from_settings(app, "serve", ServeSettings, _run_serve,
                      help="Serve models behind a TorchServe-compatible REST API (inference 8080, management "
                           "8081, metrics 8082).")


def _key_file(key_file: Optional[str], needed: bool = True) -> Optional[str]:
    """The key file given, else ./model_store/key_file.json when there is one. A missing one is refused where its
    key is `needed` (no key given otherwise): the server's 401 would blame the key."""
    if key_file is None and Path("model_store/key_file.json").exists():
        return "model_store/key_file.json"
    if needed and key_file is not None and not os.path.exists(key_file):
        raise ConfigError(f"--key-file {key_file!r}: no such file; give the server's key file, "
                          "<model-store>/key_file.json")
    return key_file


def _client(url: str, key_file: Optional[str], token: Optional[str], needed: bool = True):
    from nlpforge.serving.client import ManagementClient

    needed = needed and not (token or os.environ.get("NLPFORGE_MANAGEMENT_KEY"))
    return ManagementClient(url, token=token, key_file=_key_file(key_file, needed))


def _print(value) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def register(url: str = typer.Argument(..., help="model folder or .tar.gz (a relative path found from here is "
                                                 "sent whole; else it is read in the model store)"),
             name: Optional[str] = typer.Option(None, help="name to serve it under (default: folder name)"),
             version: Optional[str] = typer.Option(None, help="version (default 1.0)"),
             management_url: str = URL, key_file: Optional[str] = KEY_FILE, token: Optional[str] = TOKEN,
             **options):
    """Register a model version (TorchServe's POST /models); options not given take the server's defaults."""
    _print(_client(management_url, key_file, token).register(
        url, name, version, **{k: getattr(v, "value", v) for k, v in options.items()}))


# The version options (--batch-size, --workers, ...) come from VersionOptions, the one home of their help and limits.
register.__signature__ = inspect.Signature(
    [p for p in inspect.signature(register).parameters.values() if p.kind != p.VAR_KEYWORD]
    + [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=option)
       for _, f, tp in leaf_fields(VersionOptions) for annotation, option in [option_for(f, tp)]])
models_app.command("register")(register)


@models_app.command("list")
def list_models(management_url: str = URL, key_file: Optional[str] = KEY_FILE, token: Optional[str] = TOKEN):
    """List the served models."""
    _print(_client(management_url, key_file, token).list())


@models_app.command("describe")
def describe(name: str, version: Optional[str] = typer.Argument(None, help="a version, or 'all'"),
             management_url: str = URL, key_file: Optional[str] = KEY_FILE, token: Optional[str] = TOKEN):
    """Describe a model's default version, one version, or all of them."""
    _print(_client(management_url, key_file, token).describe(name, version))


@models_app.command("scale")
def scale(name: str, workers: int = typer.Argument(..., help="worker processes to run"),
          version: Optional[str] = typer.Option(None, help="version (default: the default one)"),
          management_url: str = URL, key_file: Optional[str] = KEY_FILE, token: Optional[str] = TOKEN):
    """Set the number of worker processes of a version."""
    _print(_client(management_url, key_file, token).scale(name, workers, version))


@models_app.command("unregister")
def unregister(name: str, version: Optional[str] = typer.Argument(None, help="one version (default: all)"),
               management_url: str = URL, key_file: Optional[str] = KEY_FILE, token: Optional[str] = TOKEN):
    """Stop serving a model or one of its versions."""
    _print(_client(management_url, key_file, token).unregister(name, version))


@models_app.command("set-default")
def set_default(name: str, version: str, management_url: str = URL, key_file: Optional[str] = KEY_FILE,
                token: Optional[str] = TOKEN):
    """Promote a version: it becomes the default and takes all traffic, atomically."""
    _print(_client(management_url, key_file, token).set_default(name, version))


@models_app.command("traffic")
def traffic(name: str,
            weight: list[str] = typer.Option([], "--weight", help="version=weight, e.g. --weight 1.0=90"),
            shadow: Optional[str] = typer.Option(None, help="version that gets a copy of the traffic"),
            no_shadow: bool = typer.Option(False, "--no-shadow", help="remove the shadow version"),
            management_url: str = URL, key_file: Optional[str] = KEY_FILE, token: Optional[str] = TOKEN):
    """Show, or set, the weighted A/B split and the shadow version."""
    if shadow is not None and no_shadow:
        raise ConfigError(f"--shadow {shadow} and --no-shadow contradict each other; give one of them")
    weights = None
    if weight:
        weights = {}
        for entry in weight:
            version, sep, value = entry.partition("=")
            if not sep:
                raise ConfigError(f"--weight {entry!r}: use version=weight, e.g. 1.0=90")
            if version in weights:
                raise ConfigError(f"--weight {entry!r}: version {version} has a weight already; give each version "
                                  "once")
            try:
                weights[version] = float(value)
            except ValueError:
                raise ConfigError(f"--weight {entry!r}: the weight must be a number") from None
            if not math.isfinite(weights[version]) or weights[version] < 0:
                raise ConfigError(f"--weight {entry!r}: the weight must be a finite number of at least 0, e.g. 1.0=90")
    shadow_value = None if no_shadow else (shadow if shadow is not None else "")
    _print(_client(management_url, key_file, token).traffic(name, weights, shadow_value))


@models_app.command("token")
def token(kind: str = typer.Argument(..., help="the key to replace: management or inference"),
          management_url: str = URL, key_file: Optional[str] = KEY_FILE,
          api_key: Optional[str] = typer.Option(None, "--api-key", help="the API key (default: read from the key "
                                                                         "file)")):
    """Replace the management or inference key (TorchServe's token API); the old one stops working at once."""
    from nlpforge.serving.security import read_key

    client = _client(management_url, key_file, None, needed=not api_key)
    path = _key_file(key_file, needed=not api_key)
    api_key = api_key or (read_key(path, "API") if path else None)
    if not api_key:
        raise ConfigError("the token API needs the server's API key: give --api-key or --key-file "
                          "(the server's <model-store>/key_file.json)")
    _print(client.replace_key(kind, api_key))
