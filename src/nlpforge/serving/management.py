"""The management API (port 8081), TorchServe's, plus traffic weights and a shadow; and the metrics app (8082).

    POST   /models?url=...&model_name=...&model_version=...&batch_size=...&max_batch_delay=...&initial_workers=...
    GET    /models?limit=...&next_page_token=...
    GET    /models/{name}[/{version}|/all]
    PUT    /models/{name}[/{version}]?min_worker=...&max_worker=...&synchronous=...   202, or 200 when synchronous
    DELETE /models/{name}[/{version}]
    PUT    /models/{name}/{version}/set-default        promote: default and all traffic, atomically
    GET    /models/{name}/traffic
    PUT    /models/{name}/traffic   {"weights": {"1.0": 90, "2.0": 10}, "shadow": "3.0"}
    GET    /token?type=management|inference             TorchServe's token API: a new key (needs the API key)
    GET    /metrics                                     (metrics port) Prometheus text format

A path with a trailing slash answers as the path without it (TorchServe's clients send
`DELETE /models/m/`), and the register parameters TorchServe has that nlpforge does not use are
answered, never ignored: see `torchserve_parameters`. A repeated query parameter is a 400, and so is
an unknown one on a route that changes something (`DELETE /models/m?model_version=2.0` would otherwise remove every
version of m). With `--shared-state`, register, unregister, traffic and set-default act on every replica on the model
store (replicas.py); scaling stays per replica.
"""
import asyncio
import json
import logging
from dataclasses import fields as dataclass_fields

from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from nlpforge.errors import ConfigError, RequestError
from nlpforge.serving.inference import add_error_handlers
from nlpforge.serving.registry import check_names
from nlpforge.serving.settings import VersionOptions, help_of
from nlpforge.settings import flag_name

log = logging.getLogger("nlpforge.serving")


def management_app(state) -> FastAPI:
    settings = state.settings
    registry = state.registry
    app = FastAPI(title="nlpforge management API", version="1", docs_url=None, redoc_url=None,
                  description="TorchServe-compatible model management, plus traffic weights and shadow versions",
                  dependencies=[Depends(single_parameters)])
    add_error_handlers(app)
    app.add_middleware(WithoutTrailingSlash)
    auth = [Depends(state.require("management")), Depends(route_parameters)]  # in this order

    @app.post("/models", dependencies=auth, summary="Register a model version")
    async def register(
        url: str = Query(..., description="nlpforge model folder or .tar.gz; relative paths are read from "
                                          "the model store"),
        model_name: str | None = Query(None, description="name to serve it under (default: the folder name)"),
        model_version: str | None = Query(None, description="version (default 1.0)"),
        synchronous: str | None = Query(None, description="true (the default): answer once the workers are up; "
                                                          "anything else, as in TorchServe: answer at once"),
        initial_workers: int | None = Query(None, description=help_of("workers") + "; below 0 counts as 0, "
                                                                                    "as in TorchServe"),
        backend: str | None = Query(None, description=help_of("backend")),
        device: str | None = Query(None, description=help_of("device")),
        batch_size: int | None = Query(None, description=help_of("batch_size")),
        max_batch_delay: float | None = Query(None, allow_inf_nan=False, description=help_of("max_batch_delay")),
        threads: int | None = Query(None, description=help_of("threads")),
        queue_size: int | None = Query(None, description=help_of("queue_size")),
        response_timeout: float | None = Query(None, allow_inf_nan=False, description=help_of("response_timeout")),
        capture_percent: float | None = Query(None, allow_inf_nan=False, description=help_of("capture_percent")),
        startup_timeout: float | None = Query(None, allow_inf_nan=False, description=help_of("startup_timeout")),
        runtime: str | None = Query(None, description="TorchServe's runtime: python or python3 (the workers')"),
        handler: str | None = Query(None, description="TorchServe's handler: refused, the model folder's task "
                                                      "picks it"),
        number_gpu: int | None = Query(None, description="GPUs per worker: only 0 (device=cuda gives each worker "
                                                         "one GPU)"),
    ):
        torchserve_parameters(runtime=runtime, handler=handler, number_gpu=number_gpu)
        if initial_workers is not None and initial_workers < 0:
            initial_workers = 0
        # The server's defaults, overridden by what was given, validated by VersionOptions.
        options = version_options(settings.version, workers=initial_workers, backend=backend, device=device,
                                  batch_size=batch_size, max_batch_delay=max_batch_delay, threads=threads,
                                  queue_size=queue_size, response_timeout=response_timeout,
                                  capture_percent=capture_percent, startup_timeout=startup_timeout)
        if not torchserve_bool(synchronous, default=True):
            check_names(model_name, model_version)  # a bad name or path is still a 4xx now, not a log line later
            folder = registry.resolve_url(url)
            registry.check_free(model_name or folder.name, model_version)
            task = asyncio.create_task(state.change(lambda: registry.register(url, model_name, model_version,
                                                                              options)))
            state.background.add(task)
            task.add_done_callback(_log_failure)
            # TorchServe answers 202 only when asked for workers; with its default (none) the model is registered.
            accepted = initial_workers is not None and initial_workers > 0
            return JSONResponse({"status": f"Model \"{model_name or url}\" registered; {options.workers} "
                                           "worker(s) starting"}, status_code=202 if accepted else 200)
        runtime = await state.change(lambda: registry.register(url, model_name, model_version, options))
        spec = runtime.spec
        return {"status": f"Model \"{spec.name}\" Version: {spec.version} registered with {spec.options.workers} "
                          f"initial workers"}

    @app.get("/models", dependencies=auth, summary="List models")
    async def list_models(limit: str | None = Query(None, description="models per page (default 100, most 1000)"),
                          next_page_token: str | None = Query(None)):
        return registry.listing(limit, next_page_token)

    async def token(kind: str = Query(..., alias="type", description="management or inference")):
        if state.keys is None:
            raise RequestError("token auth is off (--no-auth), so there is no key to replace; start the server "
                               "without --no-auth to use keys", status=404)
        key = state.keys.regenerate(kind)
        log.info("the %s key was replaced; the key file %s holds the new one", kind, state.keys.path)
        return {kind: {"key": key}, "key_file": str(state.keys.path)}

    for method in ("GET", "POST"):
        app.add_api_route("/token", token, methods=[method],
                          dependencies=[Depends(state.require("API")), Depends(route_parameters)],
                          operation_id=f"token_{method.lower()}",
                          summary="Replace the management or inference key (needs the API key)")

    @app.get("/models/{model_name}/traffic", dependencies=auth, summary="Traffic weights and shadow")
    async def get_traffic(model_name: str):
        return registry.model(model_name).routing.describe()

    @app.put("/models/{model_name}/traffic", dependencies=auth, summary="Set traffic weights and a shadow")
    async def put_traffic(model_name: str,
                          body: dict | None = Body(None, description='{"weights": {version: weight}, "shadow": '
                                                                     'version, or null to remove it}; either may be '
                                                                     'left out',
                                                   examples=[{"weights": {"1.0": 90, "2.0": 10}, "shadow": None}])):
        body = body or {}
        unknown = sorted(set(body) - {"weights", "shadow"})
        if unknown:
            raise RequestError(f"unknown field(s) {', '.join(map(repr, unknown))} in the traffic body; give "
                               '"weights" ({version: weight}) and/or "shadow" (a version, or null)')
        weights, shadow = body.get("weights"), body.get("shadow", "")
        if weights is not None and not isinstance(weights, dict):
            raise RequestError(f'"weights" must be an object of version: weight, e.g. {{"1.0": 90, "2.0": 10}}, '
                               f"not {json.dumps(weights)[:60]}")
        if shadow is not None and not isinstance(shadow, str):
            raise RequestError(f'"shadow" must be a version name or null, not {json.dumps(shadow)[:60]}')
        routing = await state.change(lambda: registry.set_traffic(model_name, weights, shadow))
        log.info("model %s: traffic set to %s", model_name, routing.describe())
        return routing.describe()

    @app.get("/models/{model_name}", dependencies=auth, summary="Describe the default version")
    async def describe(model_name: str):
        return registry.describe(model_name)

    @app.get("/models/{model_name}/{model_version}", dependencies=auth, summary="Describe a version, or all")
    async def describe_version(model_name: str, model_version: str):
        return registry.describe(model_name, model_version)

    async def scale(model_name: str, model_version: str | None, min_worker: int | None, max_worker: int | None,
                    synchronous: str | None, number_gpu: int | None):
        """TorchServe's update: min_worker defaults to 1 and max_worker to min_worker; 202 at once, or 200 once
        the workers run when synchronous=true."""
        runtime = registry.version(model_name, model_version)
        torchserve_parameters(number_gpu=number_gpu)
        low = 1 if min_worker is None else min_worker
        high = low if max_worker is None else max_worker
        for given, value in (("min_worker", low), ("max_worker", high)):
            try:
                runtime.spec.options.override(workers=value)  # the one check of the worker count
            except ConfigError as error:
                raise RequestError(f"{named(error.message, 'workers', given)}; to stop a model, DELETE it") from None
        if high < low:
            raise RequestError(f"max_worker cannot be less than min_worker (min_worker {low}, max_worker {high}); "
                               "give max_worker >= min_worker")
        runtime.max_workers = high
        version = runtime.spec.version
        if not torchserve_bool(synchronous, default=False):
            task = asyncio.create_task(_logged(runtime.scale(low), f"scaling {model_name} version {version}"))
            state.background.add(task)
            task.add_done_callback(state.background.discard)
            return JSONResponse({"status": "Processing worker updates..."}, status_code=202)
        await runtime.scale(low)
        return {"status": f"Workers scaled to {low} for model: {model_name}, version: {version}"}

    @app.put("/models/{model_name}", dependencies=auth, summary="Scale the default version's workers")
    async def scale_default(model_name: str, min_worker: int | None = Query(None),
                            max_worker: int | None = Query(None), synchronous: str | None = Query(None),
                            number_gpu: int | None = Query(None),
                            timeout: int | None = Query(None, description="TorchServe's: accepted; workers that "
                                                                         "stop finish their batch first")):
        return await scale(model_name, None, min_worker, max_worker, synchronous, number_gpu)

    @app.put("/models/{model_name}/{model_version}", dependencies=auth, summary="Scale a version's workers")
    async def scale_version(model_name: str, model_version: str,
                            min_worker: int | None = Query(None), max_worker: int | None = Query(None),
                            synchronous: str | None = Query(None), number_gpu: int | None = Query(None),
                            timeout: int | None = Query(None)):
        return await scale(model_name, model_version, min_worker, max_worker, synchronous, number_gpu)

    # TorchServe's clients send these to unregister, and its API suite expects a 200 even for timeout=true:
    # accepted, whatever their value, and the answer comes once the version is gone either way.
    unregister_synchronous = Query(None, description="TorchServe's: accepted; the answer comes once it is removed")
    unregister_timeout = Query(None, description="TorchServe's: accepted; accepted inputs are answered first")

    @app.delete("/models/{model_name}", dependencies=auth, summary="Unregister a model")
    async def unregister(model_name: str, synchronous: str | None = unregister_synchronous,
                         timeout: str | None = unregister_timeout):
        removed = await state.change(lambda: registry.unregister(model_name))
        return {"status": f"Model \"{model_name}\" unregistered (versions {', '.join(removed)})"}

    @app.delete("/models/{model_name}/{model_version}", dependencies=auth, summary="Unregister a version")
    async def unregister_version(model_name: str, model_version: str, synchronous: str | None = unregister_synchronous,
                                 timeout: str | None = unregister_timeout):
        await state.change(lambda: registry.unregister(model_name, model_version))
        return {"status": f"Model \"{model_name}\" Version: {model_version} unregistered"}

    @app.put("/models/{model_name}/{model_version}/set-default", dependencies=auth,
             summary="Promote a version: default, all traffic")
    async def set_default(model_name: str, model_version: str):
        routing = await state.change(lambda: registry.set_default(model_name, model_version))
        log.info("model %s: version %s promoted to default", model_name, model_version)
        return {"status": f"Default version successfully updated for model \"{model_name}\" to \"{model_version}\"",
                "routing": routing.describe()}

    return app


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background registration failed: %s", task.exception())


async def _logged(coroutine, what: str) -> None:
    """Run an asynchronous (202) management action; its failure goes to the log, where TorchServe's goes."""
    try:
        await coroutine
    except Exception as error:  # noqa: BLE001 - nobody waits for the answer
        log.error("%s failed: %s", what, getattr(error, "message", error))


# What an unknown-parameter message calls each route's parameters (by route function; others: the route's path).
PARAMETER_GROUPS = {"register": "register", "scale_default": "scale", "scale_version": "scale",
                    "unregister": "unregister", "unregister_version": "unregister", "put_traffic": "traffic",
                    "set_default": "set-default"}


async def single_parameters(request: Request) -> None:
    """Refuse a query parameter given twice (`url=a&url=b`): which one was meant cannot be told."""
    names = [name for name, _ in request.query_params.multi_items()]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise RequestError(f"parameter(s) {', '.join(repeated)} given more than once; give each once")


async def route_parameters(request: Request) -> None:
    """On a route that changes something, refuse a parameter the route does not take: were it ignored,
    `DELETE /models/m?model_version=2.0` would remove every version of m. GET routes ignore unknown ones, as
    TorchServe's do (its clients send e.g. customized=true). A route dependency after the key check, so that a
    request without the key gets its 401, not the route's parameters."""
    route = request.scope.get("route")
    if request.method != "GET" and route is not None:
        known_parameters(request, route)


def known_parameters(request: Request, route) -> None:
    """Refuse query parameters that `route` (a FastAPI route) does not take, listing those it does."""
    def query_parameters(dependant) -> list[str]:  # the route's own, then its dependencies'
        return [p.alias for p in dependant.query_params] + [
            name for sub in dependant.dependencies for name in query_parameters(sub)]

    known = list(dict.fromkeys(query_parameters(route.dependant)))
    unknown = sorted(set(request.query_params) - set(known))
    if not unknown:
        return
    what = PARAMETER_GROUPS.get(route.name, f"{request.method} {route.path}")
    hint = ""
    if "model_version" in unknown and "{model_version}" not in route.path and route.path.count("/") == 2:
        hint = f"; to name a version, put it in the path: {request.method} {route.path}/{{model_version}}"
    raise RequestError(f"unknown {what} parameter(s) {', '.join(unknown)}; known: {', '.join(known) or 'none'}"
                       f"{hint}")


API_NAMES = {"workers": "initial_workers"}  # register parameters named otherwise than their VersionOptions field


def flag_of(field: str) -> str:
    """The `nlpforge serve` flag (without dashes) of a VersionOptions field: `batch-size` for batch_size."""
    return flag_name(next(f for f in dataclass_fields(VersionOptions) if f.name == field))


def named(message: str, field: str, parameter: str) -> str:
    """A VersionOptions message, which names the field by its flag (`batch-size must be ...`), naming the API
    parameter instead (`batch_size must be ...`)."""
    flag = flag_of(field)
    return parameter + message.removeprefix(flag) if message.startswith(flag) else f"{parameter}: {message}"


def version_options(defaults: VersionOptions, **given) -> VersionOptions:
    """`defaults` overridden by the given register parameters, each checked alone so that a message names the
    parameter as the request gave it."""
    for field, value in given.items():
        if value is None:
            continue
        try:
            defaults.override(**{field: value})
        except ConfigError as error:
            parameter = API_NAMES.get(field, field)
            default = getattr(defaults, field)
            raise RequestError(f"{named(error.message, field, parameter)}; give another {parameter}, or leave it "
                               f"out for the server's default ({'' if default is None else f'{default}, '}"
                               f"nlpforge serve --{flag_of(field)})") from None
    return defaults.override(**given)


RUNTIMES = ("python", "python3")


def torchserve_bool(value: str | None, default: bool) -> bool:
    """TorchServe's reading of a boolean parameter: absent is the default, "true" (any case) is true and
    anything else is false, so `synchronous=nan` is a harmless false, as there."""
    return default if value is None else value.strip().lower() == "true"


def torchserve_parameters(runtime: str | None = None, handler: str | None = None,
                          number_gpu: int | None = None) -> None:
    """Answer TorchServe's parameters that nlpforge has no use for: accepted where they already hold, else 400."""
    if runtime is not None and runtime not in RUNTIMES:
        raise RequestError(f"runtime {runtime!r}: nlpforge's workers are Python; give runtime=python or "
                           "python3, or leave it out")
    if handler is not None:
        raise RequestError(f"handler {handler!r}: nlpforge picks the handler from the model folder "
                           "(nlpforge.json's task, or code/inference.py for SageMaker's inference contract); "
                           "leave handler out")
    if number_gpu is not None and number_gpu != 0:
        raise RequestError(f"number_gpu {number_gpu}: nlpforge gives each worker one device; give number_gpu=0 "
                           "or leave it out, and register with device=cuda to run the workers on GPUs")


class WithoutTrailingSlash:
    """ASGI middleware: `/models/m/` is routed as `/models/m`, answered at once instead of a 307 redirect."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/") or "/"}
        await self.app(scope, receive, send)


def metrics_app(state) -> FastAPI:
    app = FastAPI(title="nlpforge metrics API", version="1", docs_url=None, redoc_url=None)
    add_error_handlers(app)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics():
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    return app

