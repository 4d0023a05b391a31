"""Endpoints: running `nlpforge serve` servers through their management and metrics APIs: models, versions,
traffic weights and the shadow, requests, request rate, latency percentiles, errors, shadow agreement, and a
box that sends a request. A server that does not answer is shown as down.

The request rate compares two looks at the metrics API: the requests counted since the page was last shown
for that model, divided by the seconds between (none on the first look)."""
import json
import time
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse

from nlpforge.errors import NlpforgeError
from nlpforge.ui.app import SERVER_APIS, NotFound, render, server_urls, settings_of, url_host

router = APIRouter()
TIMEOUT = 2.0
_looks: dict[tuple[str, str], tuple[float, float]] = {}  # (metrics URL, model) -> (time, requests) of the last look


def servers(settings) -> list[dict]:
    """{"inference", "management", "metrics", "source"} of every server given with --server (its management and
    metrics APIs on the next two ports) or recorded by the SDK's deploy()."""
    from nlpforge.sdk.predictor import endpoint_records

    found: dict[str, dict] = {}
    for url in settings.server:
        urls = server_urls(url)
        found.setdefault(urls["inference"], {**urls, "source": "--server"})
    for record in endpoint_records(settings.root) if settings.root.is_dir() else []:
        try:
            base = f"http://{url_host(str(record.get('host', '127.0.0.1')))}"
            ports = [int(record[f"{api}_port"]) for api in SERVER_APIS]
        except (KeyError, TypeError, ValueError):
            continue
        if not all(0 < port < 65536 for port in ports):
            continue
        urls = {api: f"{base}:{port}" for api, port in zip(SERVER_APIS, ports)}
        server = found.setdefault(urls["inference"], {**urls, "source": "SDK endpoint"})
        server["source"] += f" {record.get('endpoint_name', '?')}"
    return list(found.values())


def quantile(buckets: list[tuple[float, float]], share: float) -> float | None:
    """Prometheus' histogram_quantile: linear inside the bucket that holds the `share` quantile, from cumulative
    (upper bound, count) pairs; the largest finite bound when it falls in +Inf."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    goal = share * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= goal:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * ((goal - below) / (count - below) if count > below else 1.0)
        lower, below = bound, count
    return lower


def scrape(url: str) -> dict:
    """{model: {"requests", "errors_4xx", "errors_5xx", "versions", "p50", "p90", "p99", "compared",
    "agreement"}} from the Prometheus text of the metrics API."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=TIMEOUT).text
    models: dict[str, dict] = {}
    buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None:
                continue
            entry = models.setdefault(model, {"requests": 0.0, "errors_4xx": 0.0, "errors_5xx": 0.0, "versions": {},
                                              "compared": 0.0, "agreed": 0.0})
            if sample.name == "nlpforge_requests_total":
                status = str(sample.labels.get("status", ""))
                entry["requests"] += sample.value
                version = sample.labels.get("version", "")
                entry["versions"][version] = entry["versions"].get(version, 0.0) + sample.value
                if status[:1] in ("4", "5"):
                    entry[f"errors_{status[0]}xx"] += sample.value
            elif sample.name == "nlpforge_request_latency_seconds_bucket":
                bound = float(sample.labels["le"])
                per_bound = buckets.setdefault(model, {})
                per_bound[bound] = per_bound.get(bound, 0.0) + sample.value
            elif sample.name == "nlpforge_shadow_comparisons_total":
                entry["compared"] += sample.value
                entry["agreed"] += sample.value if sample.labels.get("agree") == "true" else 0.0
    for model, entry in models.items():
        cumulative = sorted(buckets.get(model, {}).items())
        entry["p50"], entry["p90"], entry["p99"] = (quantile(cumulative, q) for q in (0.5, 0.9, 0.99))
        entry["agreement"] = entry["agreed"] / entry["compared"] if entry["compared"] else None
    return models


def request_rate(url: str, model: str, requests: float) -> dict:
    """{"rate", "seconds"}: requests per second since the last look at this model, and how long ago that was."""
    now = time.monotonic()
    before = _looks.get((url, model))
    _looks[(url, model)] = (now, requests)
    if before is None or now <= before[0]:
        return {"rate": None, "seconds": None}
    return {"rate": max(requests - before[1], 0.0) / (now - before[0]), "seconds": now - before[0]}


def server_state(settings, server: dict, details_of: str | None = None) -> dict:
    """The server's health, models, metrics and, for the model `details_of`, its versions and traffic; a server
    that does not answer /ping is down, and an API that fails is named in "error"."""
    from nlpforge.serving.client import InferenceClient, ManagementClient

    ping = InferenceClient(server["inference"], timeout=TIMEOUT)
    state = {**server, "up": ping.ping(), "models": [], "stats": {}, "error": None}
    ping.http.close()
    if not state["up"]:
        return state
    problems = []
    try:
        management = ManagementClient(server["management"], timeout=TIMEOUT,
                                      key_file=str(settings.key_path) if settings.key_path else None)
        try:
            for entry in management.list().get("models", []):
                model = {"name": entry["modelName"], "versions": [], "traffic": {}}
                if entry["modelName"] == details_of:
                    try:  # one model's details that fail (a name the client refuses to send) keep it listed
                        model["versions"] = management.describe(details_of, "all")
                        model["traffic"] = management.traffic(details_of)
                    except NlpforgeError as error:
                        problems.append(f"management API {server['management']}: {error}")
                state["models"].append(model)
        finally:
            management.http.close()
    except NlpforgeError as error:
        problems.append(f"management API {server['management']}: {error}")
    try:
        state["stats"] = scrape(server["metrics"])
    except Exception as error:  # noqa: BLE001 (a metrics port that is down or does not speak Prometheus)
        problems.append(f"metrics API {server['metrics']}: {type(error).__name__}: {error}")
    if problems and not state["models"]:  # the management API refused: the models the metrics name
        state["models"] = [{"name": name, "versions": [], "traffic": {}} for name in state["stats"]]
    state["error"] = "; ".join(problems) or None
    return state


@router.get("/endpoints")
def endpoints_page(request: Request):
    settings = settings_of(request)
    states = [server_state(settings, server) for server in servers(settings)]
    return render(request, "endpoints.html", title="Endpoints", states=states)


def find(settings, name: str, details: bool = True) -> dict:
    """The state of the server that serves model `name`; NotFound when none that answers does."""
    for server in servers(settings):
        state = server_state(settings, server, name if details else None)
        if any(model["name"] == name for model in state["models"]):
            return state
    raise NotFound(f"no running server serves a model named {name!r}; the Endpoints page lists the servers and "
                   "what they serve")


@router.get("/endpoints/{name:path}")
def endpoint_page(request: Request, name: str):
    state = find(settings_of(request), name)
    model = next(m for m in state["models"] if m["name"] == name)
    metrics = state["stats"].get(name, {})
    look = request_rate(state["metrics"], name, metrics.get("requests", 0.0))
    return render(request, "endpoint.html", title=f"Endpoint {name}", state=state, model=model, metrics=metrics,
                  look=look)


def request_body(text: str, text_pair: str) -> dict:
    """What the box sends: a JSON object typed as is, else {"text"} (and "text_pair")."""
    if text.strip().startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
    return {"text": text, **({"text_pair": text_pair} if text_pair else {})}


@router.post("/endpoints/{name:path}/predict")
def endpoint_predict(request: Request, name: str, text: str = Form(""), text_pair: str = Form("")):
    """Send one request to the endpoint; the app relays it, so the page needs no cross-origin access. Every
    answer is JSON, errors included (the page shows it)."""
    from nlpforge.serving.client import InferenceClient

    if not text.strip():
        return JSONResponse({"error": "the request is empty: type a text, or a JSON request body such as "
                                      '{"text": "a fine film"}'}, status_code=400)
    body = request_body(text, text_pair)
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as error:
        bad = error.object[error.start:error.end].encode("unicode_escape").decode()
        return JSONResponse({"error": f"the request holds {bad}, half of a surrogate pair that stands for no "
                                      "character; remove it or write the whole pair"}, status_code=400)
    try:
        state = find(settings_of(request), name, details=False)
    except NotFound as error:
        return JSONResponse({"error": str(error)}, status_code=404)
    key_path = settings_of(request).key_path
    client = InferenceClient(state["inference"], key_file=str(key_path) if key_path else None, timeout=60)
    try:
        response = client.send("POST", f"/predictions/{quote(name, safe='')}", json=body)
    except NlpforgeError as error:
        return JSONResponse({"error": str(error)}, status_code=502)
    finally:
        client.http.close()
    try:
        answer = response.json()
    except ValueError:
        answer = {"text": response.text}
    return JSONResponse({"status": response.status_code, "answer": answer})
