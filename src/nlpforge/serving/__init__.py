"""Serving: nlpforge model folders behind a TorchServe-compatible REST API.

    settings.py     the server's settings, and VersionOptions: how one model version is served
    server.py       the three uvicorn servers, graceful shutdown, ServerThread
    inference.py    /ping, /predictions, /explanations, KServe v1 (port 8080)
    management.py   /models register/list/describe/scale/unregister/set-default/traffic (8081), /metrics (8082)
    registry.py     models, versions, A/B weights, shadow, promote
    batching.py     per-version bounded queue and dynamic batching over worker processes
    workers.py      the worker processes, restarted on crash or hang
    handler.py      the handler contract; one TaskHandler serves every task through nlpforge.tasks
    client.py       the management and inference client (the CLI and the SDK use it)
    capture.py      sampled request/response capture to rotating JSONL
    metrics.py      Prometheus series per model and version
    security.py     TorchServe-style key file and bearer tokens
    replicas.py     --shared-state: replicas on one model store share versions and traffic through one file
"""
from nlpforge.serving.handler import Handler, TaskHandler
from nlpforge.serving.server import ServerThread, serve
from nlpforge.serving.settings import ServeSettings, VersionOptions

__all__ = ["Handler", "TaskHandler", "ServeSettings", "ServerThread", "VersionOptions", "serve"]
