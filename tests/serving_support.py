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


def management(server, token: str | None = "auto") -> httpx.Client:
    if token == "auto":
        token = server.state.keys.management if server.state.keys else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url("management"), headers=headers, timeout=120)


def inference(server, **kwargs) -> httpx.Client:
    return httpx.Client(base_url=server.url("inference"), timeout=60, **kwargs)


def metric(server, name: str, **labels) -> float:
    """The sum of a Prometheus series' samples whose labels include `labels`."""
    text = httpx.get(server.url("metrics") + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total
