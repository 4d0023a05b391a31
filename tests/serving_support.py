"""Helpers shared by the serving tests: a server on free ports in a background thread."""
import contextlib

import httpx

from nlpforge.serving import ServerThread, ServeSettings


@contextlib.contextmanager
def running_server(store, **overrides):
    settings = ServeSettings.of(model_store=str(store), inference_port=0, management_port=0, metrics_port=0,
                                threads=1, **overrides)
    server = ServerThread(settings).start()
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    """A TCP port that nothing listens on now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_ports() -> dict:
    """Free inference, management and metrics ports, as deploy_model and ServeSettings name them."""
    return {name: free_port() for name in ("inference_port", "management_port", "metrics_port")}


def management(server, token: str | None = "auto") -> httpx.Client:
    if token == "auto":
        token = server.state.keys.management if server.state.keys else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url("management"), headers=headers, timeout=120)


def inference(server, **kwargs) -> httpx.Client:
    return httpx.Client(base_url=server.url("inference"), timeout=60, **kwargs)


def metric(server, name: str, **labels) -> float:
    """The sum of a Prometheus series' samples whose labels include `labels`."""
    return metric_in(httpx.get(server.url("metrics") + "/metrics").text, name, **labels)


def metric_in(text: str, name: str, **labels) -> float:
    """The sum of the samples of series `name` whose labels include `labels`, in a scrape's `text`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def prepare_store(store, model_folder) -> None:
    """A model store holding what the bad-request table (test_serving_bad_requests.py) names: a copy of a
    model ("toy"), folders whose nlpforge.json is malformed, and a symbolic link that leads outside."""
    import shutil
    from pathlib import Path

    store = Path(store)
    shutil.copytree(model_folder, store / "toy")
    for name, meta in {"meta-list": "[]", "meta-task-list": '{"task": ["x"]}'}.items():
        (store / name).mkdir()
        (store / name / "nlpforge.json").write_text(meta, encoding="utf-8")
    (store / "escape").symlink_to(Path(model_folder).resolve(), target_is_directory=True)
