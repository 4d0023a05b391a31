"""The inference API (port 8080): TorchServe's and KServe v1's prediction routes.

    GET  /ping                                    {"status": "Healthy"}; 500 "Unhealthy" when a model has no live
                                                  worker and none starting
    POST /predictions/{model}[/{version}]         raw text, {"text": ...}, a JSON list, CSV or JSON Lines
                                                  (one input a row), or form fields data, text or body
    POST /explanations/{model}[/{version}]        the prediction plus attention weights
    POST /v1/models/{model}:predict               KServe v1: {"instances": [...]} -> {"predictions": [...]}
    POST /v1/models/{model}:explain               KServe v1: {"instances": [...]} -> {"explanations": [...]}
    GET  /v1/models/{model}                       KServe v1 readiness
    OPTIONS /                                     the OpenAPI description

A single input gets one JSON value back; a list (a JSON list, a text/csv or application/jsonlines
body, several form fields) gets a list. A CSV row of two columns is a text pair. What an input is and what an
answer holds is the model's task's business (nlpforge.tasks): a text, {"text": ...} or
{"text": ..., "text_pair": ...} for a classifier, a text with [MASK] for a masked-LM model. The
served version is in the `X-Model-Version` header. Bad input is a 4xx with {"code", "type",
"message"}, never a 500.

A model folder with SageMaker's code/inference.py (serving/script_handler.py) gets the body and its
Content-Type and Accept as they came, and the answer is the body and content type its output_fn
returned; on the KServe routes it gets the instances as a JSON list and must answer JSON. Its
errors carry the script's status (400, 406, 415, 500). `/ping` names the server's model store in
the `X-Nlpforge-Model-Store` header (a hash of its path), so that a client can tell its own
server from another user's on the same ports.
"""
import asyncio
import csv
import hashlib
import io
import json
import logging
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qsl

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from nlpforge.data.formats import media_format
from nlpforge.data.readers import text_lines
from nlpforge.errors import NlpforgeError, RequestError
from nlpforge.serving.handler import Handler, handler_for

log = logging.getLogger("nlpforge.serving")

BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"anyOf": [
        {"type": "string"},
        {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        {"type": "array", "items": {"anyOf": [{"type": "string"},
                                              {"type": "object", "properties": {"text": {"type": "string"}}}]}}]}},
    "text/plain": {"schema": {"type": "string"}},
    "text/csv": {"schema": {"type": "string", "description": "one input a row; two columns are a text pair"}},
    "application/jsonlines": {"schema": {"type": "string", "description": "one JSON input a line"}}}}}
KSERVE_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["instances"],
    "properties": {"instances": {"type": "array", "items": {"anyOf": [
        {"type": "string"}, {"type": "object", "properties": {"text": {"type": "string"}}}]}}}}}}}}


BODY_FIX = "send fewer or shorter texts at a time, or start the server with a larger --max-request-bytes"
FORM_KEYS = ("data", "text", "body")  # form fields that hold an input (TorchServe's clients send data or body)


async def body_chunks(request: Request, max_bytes: int):
    """The request body's chunks, refused with 413 as soon as they pass `max_bytes`: a chunked body declares
    no length, so the limit holds while it streams, before anything is buffered whole."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(f"the request body has {declared} bytes, over the limit of {max_bytes}; {BODY_FIX}",
                           status=413)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise RequestError(f"the request body is over the limit of {max_bytes} bytes; {BODY_FIX}", status=413)
        yield chunk


async def read_values(request: Request, max_bytes: int, json_only: bool = False) -> tuple[list, bool]:
    """The request's input values and whether it was a list: raw text, JSON, or multipart form parts."""
    from starlette.formparsers import MultiPartParser

    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        parser = MultiPartParser(request.headers, body_chunks(request, max_bytes), max_part_size=max_bytes)
        try:
            form = await parser.parse()
        except RequestError:
            raise
        except Exception as error:  # noqa: BLE001 - python-multipart raises several types on bad bodies
            raise RequestError(f"the multipart body cannot be read ({error}); send valid multipart/form-data") from None
        values = [await v.read() if hasattr(v, "read") else v for _, v in form.multi_items()]
        await form.close()
        if not values:
            raise RequestError("the multipart body has no parts; send the text in a part named 'data'")
        return values, len(values) > 1
    body = b"".join([chunk async for chunk in body_chunks(request, max_bytes)])
    if not json_only and media_format(content_type) == "csv":
        return csv_rows(body), True
    if not json_only and media_format(content_type) == "jsonl":
        return json_lines(body), True
    if not json_only and content_type == "application/x-www-form-urlencoded":
        fields = form_fields(body)
        if fields:
            return fields, len(fields) > 1
        return [body], False  # `curl -d 'Loved it'` sends raw text with this type
    if json_only or content_type.endswith("json") or (not content_type and body.lstrip()[:1] in (b"{", b"[")):
        try:
            value = json.loads(body)
        except (ValueError, UnicodeDecodeError) as error:
            raise RequestError(f"the body is not valid JSON ({error}); send e.g. {{\"text\": \"Loved it\"}}") from None
        except RecursionError:
            raise RequestError("the JSON body is nested too deeply; send a text, {\"text\": ...} or a list of "
                               "them") from None
        if json_only and isinstance(value, dict) and ("instances" in value or "inputs" in value) and \
                not isinstance(value.get("instances"), list):
            raise RequestError('a KServe v1 request holds a list of inputs under "instances", e.g. '
                               '{"instances": ["Loved it"]}')
        if isinstance(value, dict) and isinstance(value.get("instances"), list):
            value = value["instances"]
        elif isinstance(value, dict) and isinstance(value.get("text"), list):
            value = value["text"]
        if isinstance(value, list):
            if not value:
                raise RequestError("the list of inputs is empty; send at least one text")
            return value, True
        return [value], False
    return [body], False


def _text(body: bytes, what: str) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise RequestError(f"the {what} body is not valid UTF-8 (byte {error.start}); send UTF-8 text") from None


def csv_rows(body: bytes) -> list:
    """A text/csv body's inputs, one a row: one column is a text, two are a text pair (blank rows skipped)."""
    try:
        rows = [row for row in csv.reader(io.StringIO(_text(body, "CSV"), newline="")) if row]
    except csv.Error as error:
        raise RequestError(f"the CSV body cannot be read ({error}); send one text a row, quoted as CSV") from None
    if not rows:
        raise RequestError("the CSV body has no rows; send one text a row")
    return [row[0] if len(row) == 1 else tuple(row) for row in rows]


def json_lines(body: bytes) -> list:
    """A JSON Lines body's inputs, one JSON value a line (blank lines skipped)."""
    values = []
    for number, line in enumerate(text_lines(_text(body, "JSON Lines")), 1):
        if not line.strip():
            continue
        try:
            values.append(json.loads(line))
        except ValueError as error:
            raise RequestError(f"line {number} of the JSON Lines body is not valid JSON ({error}); send one JSON "
                               'value a line, e.g. "Loved it" or {"text": "Loved it"}') from None
        except RecursionError:
            raise RequestError(f"line {number} of the JSON Lines body is nested too deeply") from None
    if not values:
        raise RequestError("the JSON Lines body has no lines; send one JSON value a line")
    return values


def form_fields(body: bytes) -> list[str] | None:
    """The inputs of a form-urlencoded body whose every field is one of FORM_KEYS (`curl -d data=...`), like
    multipart fields; None for any other body (`curl -d 'Loved it'` sends raw text under this type)."""
    try:
        fields = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True, errors="strict")
    except ValueError:  # UnicodeDecodeError included
        return None
    if not fields or any(key not in FORM_KEYS for key, _ in fields):
        return None
    return [value for _, value in fields]


MODEL_STORE_HEADER = "X-Nlpforge-Model-Store"


def model_store_id(model_store) -> str:
    """A server's model store as a short id (a hash of its resolved path): tells servers apart, reveals no path."""
    return hashlib.sha256(str(Path(model_store).expanduser().resolve()).encode("utf-8")).hexdigest()[:16]


async def read_raw(request: Request, max_bytes: int, kserve: bool) -> dict:
    """A raw-body handler's request: the body, its media type and Accept; on KServe routes, the instances as a
    JSON list, answered as JSON."""
    if kserve:
        values, is_list = await read_values(request, max_bytes, json_only=True)
        body = json.dumps(values if is_list else values[0], ensure_ascii=False).encode("utf-8")
        return {"body": body, "content_type": "application/json", "accept": "application/json"}
    body = b"".join([chunk async for chunk in body_chunks(request, max_bytes)])
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return {"body": body, "content_type": content_type or None, "accept": request.headers.get("accept")}


def raw_answer(output: dict, kserve: bool):
    """A raw-body handler's answer: a Response of its body and type, or on KServe routes its JSON value."""
    if "error" in output:
        raise RequestError(output["error"], status=output["status"])
    if not kserve:
        return Response(output["body"], media_type=output["content_type"])
    try:
        return json.loads(output["body"])
    except (ValueError, UnicodeDecodeError):
        raise RequestError(f"the model answered {output['content_type']}, not JSON, which KServe's routes need; "
                           "use /predictions/{model} for other types", status=406) from None


def model_headers(runtime) -> dict:
    """The served model and version as response headers; percent-encoded, since a header holds only ASCII."""
    from urllib.parse import quote

    return {"X-Model-Name": quote(runtime.spec.name, safe=""), "X-Model-Version": quote(runtime.spec.version, safe="")}


def status_of(error: NlpforgeError) -> int:
    """The HTTP status of a user error: its own (RequestError, InputError), else 400."""
    return getattr(error, "status", 400)


def error_response(error: NlpforgeError, kind: str | None = None) -> JSONResponse:
    """TorchServe's error body, {"code", "type", "message"}; `kind` overrides the type the status gives."""
    names = {400: "BadRequestException", 401: "AuthenticationException", 404: "ModelNotFoundException",
             405: "MethodNotAllowedException", 406: "NotAcceptableException", 409: "ConflictStatusException",
             413: "RequestTooLargeException", 415: "UnsupportedMediaTypeException", 500: "InternalServerException",
             503: "ServiceUnavailableException", 504: "RequestTimeoutException"}
    status = status_of(error)
    return JSONResponse({"code": status, "type": kind or names.get(status, "RequestException"),
                         "message": error.message},
                        status_code=status, headers=getattr(error, "headers", None) or {})


def methods_at(app: FastAPI, scope) -> list[str]:
    """Every method some route takes at the request's path (Starlette's own 405 names only the first route's)."""
    from starlette.routing import Match

    return sorted({method for route in app.routes if getattr(route, "methods", None)
                   and route.matches(scope)[0] != Match.NONE for method in route.methods})


def routes_of(app: FastAPI) -> str:
    """The app's documented routes, as "GET /ping, POST /predictions/{model_name}, ...", for a 404's message."""
    routes = [f"{method} {route.path}" for route in app.routes if getattr(route, "include_in_schema", False)
              for method in sorted(getattr(route, "methods", None) or ())]
    return ", ".join(dict.fromkeys(routes))


def add_error_handlers(app: FastAPI) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(NlpforgeError)
    async def _user_error(request, error: NlpforgeError):
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, error: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        return error_response(RequestError(f"invalid parameters: {problems}"))

    @app.exception_handler(HTTPException)
    async def _http_error(request, error: HTTPException):
        headers = dict(error.headers or {})
        where = f"{request.method} {request.url.path}"
        allowed = methods_at(app, request.scope) if error.status_code in (404, 405) else []
        if error.status_code == 404 and not allowed:  # no route has this path (not a route's own 404)
            return error_response(RequestError(f"there is no route {where} on the {app.title}; its routes: "
                                               f"{routes_of(app)}", status=404), kind="ResourceNotFoundException")
        if error.status_code == 405 and allowed and request.method not in allowed:
            return error_response(RequestError(f"{where} is not allowed; {request.url.path} takes "
                                               f"{', '.join(allowed)}", status=405,
                                               headers={"Allow": ", ".join(allowed)}))
        return error_response(RequestError(str(error.detail), status=error.status_code, headers=headers))

    @app.options("/", include_in_schema=False)
    async def _describe():
        return JSONResponse(app.openapi())


def inference_app(state) -> FastAPI:
    """The FastAPI app of the inference port; `state` is the server's ServerState."""
    settings = state.settings
    app = FastAPI(title="nlpforge inference API", version="1", docs_url=None, redoc_url=None,
                  description="TorchServe- and KServe-v1-compatible prediction routes")
    add_error_handlers(app)
    auth = [Depends(state.require("inference"))]
    decoders: dict[str, Handler] = {}

    def decoder(task: str) -> Handler:
        if task not in decoders:
            decoders[task] = handler_for(task, settings.max_text_chars)
        return decoders[task]

    async def infer(request: Request, model: str, version: str | None, kind: str = "predict",
                    json_only: bool = False):
        """(the answer: one value or a list, the runtime that gave it); user errors propagate to the
        error handlers after they are counted."""
        started = time.perf_counter()
        served = ("", "")
        try:
            runtime, shadow = state.registry.route(model, version, request.headers.get(settings.sticky_header))
            served = runtime.labels
            handler = decoder(runtime.spec.task)
            if handler.raw_bodies:
                values, is_list = [await read_raw(request, settings.max_request_bytes, json_only)], False
            else:
                values, is_list = await read_values(request, settings.max_request_bytes, json_only)
            if len(values) > settings.max_batch_items:
                raise RequestError(f"the request holds {len(values)} inputs, over the limit of "
                                   f"{settings.max_batch_items}; split it", status=413)
            items = [handler.decode_request(v) for v in values]
            for item in items:
                handler.check_item(item, runtime.spec.text_columns)
            futures = runtime.submit(items, kind)
            try:
                outputs = await asyncio.wait_for(asyncio.gather(*futures), settings.request_timeout)
            except asyncio.TimeoutError:
                raise RequestError(f"no answer within {settings.request_timeout:.0f}s; the server is overloaded "
                                   "or the model is slow, retry later", status=504) from None
            if handler.raw_bodies:
                answer = raw_answer(outputs[0], json_only)
        except NlpforgeError as error:
            state.metrics.answered(*served, status_of(error), time.perf_counter() - started)
            raise
        state.metrics.answered(*served, 200, time.perf_counter() - started)
        if handler.raw_bodies:  # capture what came and went, as text; a shadow needs decoded inputs, so none
            if kind == "predict":
                state.after_prediction(runtime, None, [items[0]["body"].decode("utf-8", "replace")],
                                       [{"content_type": outputs[0]["content_type"],
                                         "body": outputs[0]["body"].decode("utf-8", "replace")}],
                                       request.headers.get("x-request-id") or uuid.uuid4().hex)
            return answer, runtime
        truncated = sum(1 for o in outputs if isinstance(o, dict) and o.get("truncated"))
        if truncated:
            state.metrics.truncated.labels(*served).inc(truncated)
        if kind == "predict":
            request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
            state.after_prediction(runtime, shadow, items, outputs, request_id, values)
        body = [handler.encode_response(o) for o in outputs]
        return body if is_list else body[0], runtime

    def respond(result) -> Response:
        body, runtime = result
        if isinstance(body, Response):
            body.headers.update(model_headers(runtime))
            return body
        return JSONResponse(body, headers=model_headers(runtime))

    store = {MODEL_STORE_HEADER: model_store_id(settings.model_store)}

    @app.get("/ping", summary="Health check")
    async def ping():
        if not state.ready:
            return JSONResponse({"status": "Starting"}, status_code=503, headers={"Retry-After": "1", **store})
        down = state.registry.without_workers()
        if down:  # TorchServe's answer when a model has no worker running
            return JSONResponse({"status": "Unhealthy", "message": f"no live worker for {', '.join(down)}; see "
                                 "the server log, then scale or register the model again"}, status_code=500,
                                headers=store)
        return JSONResponse({"status": "Healthy"}, headers=store)

    @app.post("/predictions/{model_name}", dependencies=auth, openapi_extra=BODY, summary="Predict")
    async def predictions(model_name: str, request: Request):
        return respond(await infer(request, model_name, None))

    @app.post("/predictions/{model_name}/{model_version}", dependencies=auth, openapi_extra=BODY,
              summary="Predict with one version")
    async def predictions_version(model_name: str, model_version: str, request: Request):
        return respond(await infer(request, model_name, model_version))

    @app.post("/explanations/{model_name}", dependencies=auth, openapi_extra=BODY, summary="Attention weights")
    async def explanations(model_name: str, request: Request):
        return respond(await infer(request, model_name, None, "explain"))

    @app.post("/explanations/{model_name}/{model_version}", dependencies=auth, openapi_extra=BODY,
              summary="Attention weights of one version")
    async def explanations_version(model_name: str, model_version: str, request: Request):
        return respond(await infer(request, model_name, model_version, "explain"))

    @app.post("/v1/models/{model_name}:predict", dependencies=auth, openapi_extra=KSERVE_BODY,
              summary="KServe v1 predict")
    async def kserve_predict(model_name: str, request: Request):
        body, runtime = await infer(request, model_name, None, json_only=True)
        return JSONResponse({"predictions": body if isinstance(body, list) else [body]},
                            headers=model_headers(runtime))

    @app.post("/v1/models/{model_name}:explain", dependencies=auth, openapi_extra=KSERVE_BODY,
              summary="KServe v1 explain")
    async def kserve_explain(model_name: str, request: Request):
        body, runtime = await infer(request, model_name, None, "explain", json_only=True)
        return JSONResponse({"explanations": body if isinstance(body, list) else [body]},
                            headers=model_headers(runtime))

    @app.get("/v1/models/{model_name}", dependencies=auth, summary="KServe v1 model readiness")
    async def kserve_model(model_name: str):
        runtime = state.registry.version(model_name, None)
        return {"name": model_name, "ready": runtime.live}

    return app
