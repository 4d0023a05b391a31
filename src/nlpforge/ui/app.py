"""The web app: settings, page layout, error pages and the page modules it mounts.

    app = create_app(UISettings.of(jobs_root="jobs", models=["models"]))
    uvicorn.run(app, host="127.0.0.1", port=8090)

A page module exposes `router` (an APIRouter) and renders with `render(request, "page.html", ...)`;
`settings_of(request)` gives it the UISettings. User mistakes (an unknown run, model or job) are
`NotFound` (a 404 page); a missing folder is an empty state with a hint on the page itself.

The app answers only requests that name its own address in their Host header, and takes a POST only from its
own pages (Origin, else Referer): another site's page cannot post labels or predictions through the user's
browser, not even by pointing a name of its own at 127.0.0.1.
"""
import errno
import hmac
import importlib
import ipaddress
import logging
import os
import secrets
import socket
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from nlpforge.errors import ConfigError, NlpforgeError
from nlpforge.settings import JOBS_ROOT_ENV, Settings, jobs_root, setting

log = logging.getLogger("nlpforge.ui")
HERE = Path(__file__).parent
# (path, title, module) in the order of the navigation bar.
PAGES = [("/jobs", "Jobs", "jobs"), ("/experiments", "Experiments", "experiments"), ("/tuning", "Tuning", "tuning"),
         ("/models", "Models", "models"), ("/endpoints", "Endpoints", "endpoints"),
         ("/monitoring", "Monitoring", "monitoring"), ("/attention", "Attention", "attention"),
         ("/review", "Review", "review")]
TOKEN_COOKIE = "nlpforge_ui_token"
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
EVERY_INTERFACE = ("0.0.0.0", "::")
SERVER_APIS = ("inference", "management", "metrics")  # on a server's port and the next two


@dataclass
class UISettings(Settings):
    """Look at jobs, experiments, tuning, models, endpoints, drift and the review queue in a browser."""

    jobs_root: str | None = setting(None, "jobs folder: SDK jobs, tuning studies, endpoints and the MLflow store "
                                          "(default: $NLPFORGE_JOBS_ROOT, then ./jobs)")
    models: list[str] = setting([], "model folders, or folders holding model folders, for the Models and "
                                    "Attention pages; repeat the flag or separate with commas")
    server: list[str] = setting([], "inference URL of a running `nlpforge serve` whose management and metrics APIs "
                                    "are on the next two ports (SDK endpoints of the jobs root are found without "
                                    "it); repeat for several")
    key_file: str | None = setting(None, "the server's key file, for its management API (default: "
                                         "<jobs root>/_model_store/key_file.json, then ./model_store/key_file.json)")
    capture: str | None = setting(None, "data capture folder for the Review page (default: <jobs "
                                        "root>/_model_store/capture, then ./model_store/capture)")
    monitor: list[str] = setting([], "monitoring schedule or run folders for the Monitoring page")
    review_threshold: float = setting(0.6, "captured predictions less confident than this are queued for review",
                                      min=0.0, max=1.0)
    host: str = setting("127.0.0.1", "address to bind; any other than loopback needs --token")
    port: int = setting(8090, "port of the web app (0: any free port)", min=0, max=65535)
    token: str | None = setting(None, "a token the browser must give once (?token=...); required off loopback")

    def check(self):
        self.models = [m for entry in self.models for m in entry.split(",") if m]
        if not self.host.strip():
            # uvicorn would listen on every interface
            raise ConfigError("--host is empty, which would listen on every interface; give an address, e.g. "
                              "127.0.0.1 (or 0.0.0.0 with --token to listen on every interface on purpose)")
        for url in self.server:
            server_urls(url)
        if self.root.exists() and not self.root.is_dir():  # a missing one is fine: the pages say how to make it
            given = (f"--jobs-root {self.jobs_root}" if self.jobs_root else f"${JOBS_ROOT_ENV} ({self.root})"
                     if os.environ.get(JOBS_ROOT_ENV) else f"the default jobs folder {self.root}")
            raise ConfigError(f"{given}: is a file; name the folder the jobs were written to "
                              "(Estimator(jobs_root=...), default ./jobs)")
        if not self.token and not is_loopback(self.host):
            raise ConfigError(f"--host {self.host} exposes the app beyond this machine; give --token too "
                              f"(e.g. --token {secrets.token_urlsafe(16)}) or bind 127.0.0.1")

    @property
    def root(self) -> Path:
        """The jobs folder, resolved; it may not exist (the pages then show how to make one)."""
        return jobs_root(self.jobs_root)

    def first_existing(self, given: str | None, *candidates: Path) -> Path | None:
        if given:
            return Path(given)
        return next((path for path in candidates if path.exists()), None)

    @property
    def capture_folder(self) -> Path | None:
        return self.first_existing(self.capture, self.root / "_model_store" / "capture",
                                   Path("model_store") / "capture")

    @property
    def key_path(self) -> Path | None:
        return self.first_existing(self.key_file, self.root / "_model_store" / "key_file.json",
                                   Path("model_store") / "key_file.json")


def url_host(host: str) -> str:
    """A host as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def server_urls(url: str) -> dict:
    """{"inference", "management", "metrics"}: the URLs of a server given with --server by its inference URL,
    whose other two APIs are on the next two ports; ConfigError naming the flag when it cannot be one."""
    import httpx

    example = "give the inference URL of a running `nlpforge serve`, e.g. http://127.0.0.1:8080"
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        port = 8080 if parts.port is None else parts.port
    except ValueError as error:
        raise ConfigError(f"--server {url}: not a URL ({error}); {example}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--server {url}: no http(s) host in it; {example}")
    if not 1 <= port <= 65535 - 2:
        raise ConfigError(f"--server {url}: port {port} cannot be an inference port (the management and metrics "
                          f"APIs are on the next two ports, at most 65535); {example}")
    urls = {api: f"{parts.scheme}://{url_host(parts.hostname)}:{port + i}" for i, api in enumerate(SERVER_APIS)}
    try:
        httpx.URL(urls["inference"])
    except httpx.InvalidURL as error:
        raise ConfigError(f"--server {url}: not a URL ({error}); {example}") from None
    return urls


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_names(host: str) -> set[str] | None:
    """The names a browser may reach the app by (the name in a request's Host header): the address it listens on
    and, on loopback, the other names of loopback; None when it listens on every interface, whose names this
    machine may have many of (--token guards the app there)."""
    if host in EVERY_INTERFACE:
        return None
    names = {host.lower().strip("[]")}
    return names | {"127.0.0.1", "localhost", "::1"} if is_loopback(host) else names


def split_address(netloc: str, default_port: int = 80) -> tuple[str, int] | None:
    """(name, port) of "name:port" as a Host header or URL holds it; None when it is not one."""
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return parts.hostname, default_port if port is None else port


def foreign_request(request, settings) -> str | None:
    """Why a request is refused (a Host header not naming the app's address, as DNS rebinding sends; a POST
    from another site's page), or None."""
    server = request.scope.get("server") or (None, None)
    port = server[1]
    home = f"http://{url_host(settings.host)}" + (f":{port}" if port else "")
    given = request.headers.get("host", "")
    address = split_address(given)
    # With a token, a page of another site cannot use the app, whatever name reaches it (a proxy's, a tunnel's).
    names = None if settings.token else host_names(settings.host)
    # The name is checked, not the port: a tunnel (ssh -L 9000:localhost:8090) reaches the app by another port.
    if address is None or (names is not None and address[0] not in names):
        return (f"this app answers at {home}, not at {given or 'no address'!r} (the request's Host header); "
                f"open {home} (a site that points its own name at this machine is refused)")
    if request.method in UNSAFE_METHODS:
        source = request.headers.get("origin") or request.headers.get("referer")
        if source is not None:
            try:
                parts = urlsplit(source)
            except ValueError:
                parts = None
            default_port = 443 if parts and parts.scheme == "https" else 80  # https: behind a TLS proxy
            if parts is None or parts.scheme not in ("http", "https") \
                    or split_address(parts.netloc, default_port) != split_address(given, default_port):
                return (f"a {request.method} from {source!r} is refused: the app takes changes only from its own "
                        f"pages; open {home} and use the form there")
    return None


SQLITE_WAIT = 5.0  # seconds a page waits for a store another process is writing


def sqlite_problem(path: Path, tables: set[str], what: str) -> str | None:
    """Why `path` is not a SQLite store with `tables` (e.g. MLflow's), or None; read only, so nothing is created
    in a database that is not one (MLflow and Optuna would add their tables to any)."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=SQLITE_WAIT)) as database:
            found = {row[0] for row in database.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.OperationalError as error:
        if "locked" in str(error) or "busy" in str(error):  # a tuner or a job writing to it now
            return f"{path} is busy (another process is writing to it); reload the page in a moment"
        return f"{path} is not a SQLite database ({error}), so not {what}; move it away or fix it"
    except sqlite3.Error as error:
        return f"{path} is not a SQLite database ({error}), so not {what}; move it away or fix it"
    missing = sorted(tables - found)
    if missing:
        return (f"{path} is not {what}: it has no {', '.join(missing)} table{'s' if len(missing) > 1 else ''}; "
                "move it away (nothing was written to it)")
    return None


class NotFound(NlpforgeError):
    """A page for a run, job, model or endpoint that does not exist: a 404 page."""


def templates():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    environment = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    environment.globals["pages"] = PAGES
    environment.filters["segment"] = lambda value: quote(str(value), safe="")  # a name as one path segment
    return environment


def settings_of(request) -> UISettings:
    return request.app.state.settings


def render(request, template: str, status_code: int = 200, **context):
    """A page: `template` (extending layout.html) rendered with `context`."""
    from fastapi.responses import HTMLResponse

    page = request.app.state.templates.get_template(template).render(request=request, path=request.url.path,
                                                                      **context)
    return HTMLResponse(page, status_code=status_code)


def message_page(request, status_code: int, title: str, message: str):
    return render(request, "message.html", status_code=status_code, title=title, message=message)


def answers_json(request) -> bool:
    """Whether the route answers JSON, errors included (the request box's fetch() reads them)."""
    path = request.url.path
    return path.startswith("/endpoints/") and path.endswith("/predict")


def error_answer(request, status_code: int, title: str, message: str):
    from fastapi.responses import JSONResponse

    if answers_json(request):
        return JSONResponse({"error": f"{title}: {message}"}, status_code=status_code)
    return message_page(request, status_code, title, message)


def create_app(settings: UISettings):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException

    app = FastAPI(title="nlpforge ui", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.templates = templates()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if not settings.token or request.url.path.startswith("/static/"):
            return await call_next(request)
        given = request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE) or ""
        if not hmac.compare_digest(given.encode(), settings.token.encode()):
            return PlainTextResponse("this page needs the token given to `nlpforge ui --token`: open it once as "
                                     f"{request.url.path}?token=<token>", status_code=401)
        response = await call_next(request)
        if "token" in request.query_params:
            response.set_cookie(TOKEN_COOKIE, settings.token, httponly=True, samesite="strict")
        return response

    @app.middleware("http")
    async def refuse_other_sites(request: Request, call_next):  # runs before require_token
        refusal = foreign_request(request, settings)
        if refusal and request.url.path.endswith("/predict"):  # the request box shows JSON errors
            return JSONResponse({"error": refusal}, status_code=403)
        if refusal:
            return PlainTextResponse(refusal, status_code=403)
        return await call_next(request)

    @app.middleware("http")
    async def answer_bugs(request: Request, call_next):
        # An Exception handler would answer and then re-raise: uvicorn would log the traceback again and drop
        # the keep-alive connection.
        try:
            return await call_next(request)
        except Exception as error:  # noqa: BLE001 (a bug: one 500 answer, one traceback in the log)
            log.exception("page %s failed", request.url.path)
            return error_answer(request, 500, "This page failed", f"{type(error).__name__}: {error} (a bug in "
                                "nlpforge ui; the server log has the traceback)")

    @app.get("/", include_in_schema=False)
    async def home():
        return RedirectResponse("/jobs", status_code=307)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        return RedirectResponse("/static/favicon.svg", status_code=307)

    for _, _, module in PAGES:
        try:
            page = importlib.import_module(f"nlpforge.ui.{module}")
        except ModuleNotFoundError as error:
            if error.name != f"nlpforge.ui.{module}":
                raise
            continue
        app.include_router(page.router)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, error: NotFound):
        return error_answer(request, 404, "Not found", error.message)

    @app.exception_handler(NlpforgeError)
    async def user_error(request: Request, error: NlpforgeError):
        return error_answer(request, 400, "Cannot show this page", error.message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        title = "Not found" if error.status_code == 404 else f"HTTP {error.status_code}"
        detail = error.detail if error.status_code != 404 else f"nothing at {request.url.path}"
        return error_answer(request, error.status_code, title, str(detail))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in error.errors())
        return error_answer(request, 400, "Bad request", problems)

    return app


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to `host` and `port` (0: any free port), or ConfigError naming the flag and the fix."""
    host = "127.0.0.1" if host == "localhost" else host  # as before: its IPv4 loopback, not whichever comes first
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as error:
        raise ConfigError(f"--host {host}: the name does not resolve to an address ({error}); give an address of "
                          "this machine, e.g. 127.0.0.1") from None
    failed = None
    for family, kind, proto, _, address in addresses:  # one that binds is enough ("localhost": ::1 may not)
        listener = socket.socket(family, kind, proto)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            return listener
        except OSError as error:
            listener.close()
            failed = error
    if getattr(failed, "errno", None) == errno.EADDRINUSE:
        raise ConfigError(f"--port {port}: already in use on {host} (another nlpforge ui?); give another --port, "
                          "or --port 0 for any free one")
    raise ConfigError(f"--host {host} --port {port}: cannot listen there ({failed.strerror or failed}); give an "
                      "address of this machine, e.g. 127.0.0.1, and a free port")


def serve(settings: UISettings) -> None:
    """Run the app until Ctrl-C (what `nlpforge ui` does); the address is bound before the line that names it."""
    import uvicorn

    with listening_socket(settings.host, settings.port) as listener:
        server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
        log.warning("nlpforge ui on http://%s:%s (jobs root %s)", url_host(settings.host),
                    listener.getsockname()[1], settings.root)
        server.run(sockets=[listener])
