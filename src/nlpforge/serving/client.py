"""Clients of the model server's APIs, used by `nlpforge models ...`, the SDK's deploy/Predictor and Python code.

    client = ManagementClient("http://127.0.0.1:8081", key_file="model_store/key_file.json")
    client.register("stars", name="stars", version="1.0", batch_size=8)
    client.traffic("stars", weights={"1.0": 90, "2.0": 10}, shadow="3.0")
    client.set_default("stars", "2.0")

    inference = InferenceClient("http://127.0.0.1:8080")
    inference.ping()                                              # True when the server answers
    body, content_type = inference.predict("stars", b'{"text": "Loved it"}', "application/json")

Keys: a token given, else $NLPFORGE_MANAGEMENT_KEY (management) or $NLPFORGE_INFERENCE_KEY, else
the key file ($NLPFORGE_KEY_FILE or the one named). A failed call raises RequestError carrying the
server's status and message; a server that does not answer is a 503 RequestError.
"""
import json
import os
from pathlib import Path
from urllib.parse import quote

from nlpforge.errors import ConfigError, RequestError
from nlpforge.serving.registry import NAME_RULE, RESERVED_VERSIONS
from nlpforge.serving.security import read_key


class _Client:
    kind = "management"

    def __init__(self, url: str, token: str | None = None, key_file: str | None = None, timeout: float = 600.0):
        import httpx

        self.url = url.rstrip("/")
        key_file = key_file or os.environ.get("NLPFORGE_KEY_FILE")
        token = (token or os.environ.get(f"NLPFORGE_{self.kind.upper()}_KEY")
                 or (read_key(key_file, self.kind) if key_file else None))
        headers = bearer(token, self.kind) if token else {}
        try:
            self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        except httpx.InvalidURL as error:
            raise ConfigError(f"{url!r} is not a URL of the model server ({error}); give one like "
                              f"http://127.0.0.1:{8081 if self.kind == 'management' else 8080}") from None

    def send(self, method: str, path: str, **kwargs):
        """The raw response; RequestError(503) when the server cannot be reached."""
        import httpx

        try:
            return self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise RequestError(f"cannot reach the model server at {self.url} ({error}); is `nlpforge serve` "
                               "running?", status=503) from None

    def _call(self, method: str, path: str, **kwargs):
        response = self.send(method, path, **kwargs)
        if response.status_code >= 400:
            raise RequestError(f"{response.status_code}: {message_of(response.content)}", status=response.status_code)
        try:
            return response.json()
        except ValueError:
            return {"message": response.text}


def bearer(key: str, kind: str) -> dict:
    """The Authorization header that sends `key`; a key no header can carry is refused here, where httpx would
    fail on it with a UnicodeEncodeError, or send a request the server cannot read."""
    if not (key.isascii() and key.isprintable() and " " not in key):
        raise ConfigError(f"the {kind} key holds a space, a control character or a character that is not ASCII, "
                          "which a request header cannot carry; give the key as the server's key file holds it")
    return {"Authorization": f"Bearer {key}"}


def message_of(body: bytes) -> str:
    """The message of an error body: TorchServe's {"message": ...}, or the text itself."""
    try:
        value = json.loads(body)
        return str(value.get("message") or value.get("error") or value) if isinstance(value, dict) else str(value)
    except (ValueError, UnicodeDecodeError):
        return body[:300].decode("utf-8", errors="replace")


def model_path(name: str, version: str | None = None, routes: tuple = ()) -> str:
    """/models/NAME[/VERSION] of the management API. What is no model name or version is refused here: an empty
    one, '.', '..' or one holding '/' would reach another route, e.g. DELETE /models/NAME, which unregisters every
    version, as would a reserved version ('all', 'traffic') other than the `routes` the call means."""
    for value, what in ((name, "model name"), (version, "version")):
        if value is not None and not (isinstance(value, str) and NAME_RULE.fullmatch(value)):
            raise RequestError(f"{what} {value!r}: not a name the server gives; use ASCII letters, digits, '-', '_' "
                               "or '.', starting with a letter or digit, as `nlpforge models list` shows them")
    if version in RESERVED_VERSIONS and version not in routes:
        raise RequestError(f"version {version!r}: no version has this name, /models/NAME/{version} is a route of its "
                           "own; give a version that `nlpforge models describe NAME all` shows")
    return f"/models/{quote(name)}" + (f"/{quote(version)}" if version is not None else "")


class ManagementClient(_Client):
    """The management API (port 8081): register, list, describe, scale, unregister, promote, traffic."""

    def register(self, url: str, name: str | None = None, version: str | None = None, synchronous: bool = True,
                 **options) -> dict:
        """Register a model folder or .tar.gz; `options` are VersionOptions (workers, batch_size, ...)."""
        params = {"url": str(Path(url).resolve()) if Path(url).exists() else url,
                  "synchronous": str(synchronous).lower()}
        if name is not None:  # an empty one is the server's to refuse, not a reason to use the folder's name
            params["model_name"] = name
        if version is not None:
            params["model_version"] = version
        if options.get("workers") is not None:
            params["initial_workers"] = options.pop("workers")
        params.update({k: v for k, v in options.items() if v is not None})
        return self._call("POST", "/models", params=params)

    def list(self, limit: int = 100, next_page_token: str | None = None) -> dict:
        params = {"limit": limit, **({"next_page_token": next_page_token} if next_page_token else {})}
        return self._call("GET", "/models", params=params)

    def describe(self, name: str, version: str | None = None) -> list:
        return self._call("GET", model_path(name, version, routes=("all",)))

    def scale(self, name: str, workers: int, version: str | None = None) -> dict:
        return self._call("PUT", model_path(name, version), params={"min_worker": workers, "synchronous": "true"})

    def unregister(self, name: str, version: str | None = None) -> dict:
        return self._call("DELETE", model_path(name, version))

    def replace_key(self, kind: str, api_key: str) -> dict:
        """TorchServe's token API: a new management or inference key, in the server and its key file."""
        return self._call("GET", "/token", params={"type": kind}, headers=bearer(api_key, "API"))

    def set_default(self, name: str, version: str) -> dict:
        return self._call("PUT", model_path(name, version) + "/set-default")

    def traffic(self, name: str, weights: dict | None = None, shadow: str | None = "") -> dict:
        if weights is None and shadow == "":
            return self._call("GET", model_path(name) + "/traffic")
        body = {"weights": weights}
        if shadow != "":
            body["shadow"] = shadow
        return self._call("PUT", model_path(name) + "/traffic", json=body)


class InferenceClient(_Client):
    """The inference API (port 8080): health and predictions."""

    kind = "inference"

    def ping(self) -> bool:
        """Whether a server answers /ping as healthy."""
        try:
            return self.send("GET", "/ping", timeout=2).status_code == 200
        except RequestError:
            return False

    def predict(self, name: str, body: bytes, content_type: str, accept: str = "application/json",
                version: str | None = None) -> tuple[bytes, str]:
        """POST a serialized request to /predictions/<name>; returns (body, content type)."""
        path = f"/predictions/{quote(name)}" + (f"/{quote(version)}" if version else "")
        response = self.send("POST", path, content=body, headers={"Content-Type": content_type, "Accept": accept})
        if response.status_code >= 300:
            raise RequestError(f"{response.status_code}: {message_of(response.content)}", status=response.status_code)
        return response.content, response.headers.get("content-type", "")
