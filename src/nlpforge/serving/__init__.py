"""Serving: nlpforge model folders behind a TorchServe-compatible REST API.

    server.py       settings, the three uvicorn servers, graceful shutdown, ServerThread
    inference.py    /ping, /predictions, /explanations, KServe v1 (port 8080)
    management.py   /models register/list/describe/scale/unregister/set-default/traffic (8081), /metrics (8082)
    registry.py     models, versions, A/B weights, shadow, promote
    batching.py     per-version bounded queue and dynamic batching over worker processes
    workers.py      the worker processes, restarted on crash or hang
    handler.py      the handler contract (decode_request, predict on a batch, encode_response)
    onnx_backend.py ONNX export, dynamic int8, ONNX Runtime sessions
    capture.py      sampled request/response capture to rotating JSONL
    metrics.py      Prometheus series per model and version
    security.py     TorchServe-style key file and bearer tokens
"""
from nlpforge.serving.handler import HANDLERS, Handler, TextClassificationHandler
from nlpforge.serving.server import ServerThread, ServeSettings, serve

__all__ = ["HANDLERS", "Handler", "TextClassificationHandler", "ServeSettings", "ServerThread", "serve"]
