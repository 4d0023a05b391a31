"""A small client for the management API, used by `nlpforge models ...` and by Python code.

    client = ManagementClient("http://127.0.0.1:8081", key_file="model_store/key_file.json")
    client.register("stars", name="stars", version="1.0", batch_size=8)
    client.traffic("stars", weights={"1.0": 90, "2.0": 10}, shadow="3.0")
    client.set_default("stars", "2.0")
"""
import os
from pathlib import Path

from nlpforge.errors import RequestError
from nlpforge.serving.security import read_key


class ManagementClient:
    def __init__(self, url: str = "http://127.0.0.1:8081", token: str | None = None, key_file: str | None = None,
                 timeout: float = 600.0):
        import httpx

        self.url = url.rstrip("/")
        key_file = key_file or os.environ.get("NLPFORGE_KEY_FILE")
        token = token or os.environ.get("NLPFORGE_MANAGEMENT_KEY") or (read_key(key_file) if key_file else None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs):
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise RequestError(f"cannot reach the management API at {self.url} ({error}); is `nlpforge serve` "
                               "running?", status=503) from None
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text}
        if response.status_code >= 400:
            raise RequestError(f"{response.status_code}: {body.get('message', body)}", status=response.status_code)
        return body

    def register(self, url: str, name: str | None = None, version: str | None = None, **options) -> dict:
        params = {"url": str(Path(url).resolve()) if Path(url).exists() else url}
        if name:
            params["model_name"] = name
        if version:
            params["model_version"] = version
        params.update({k: v for k, v in options.items() if v is not None})
        return self._call("POST", "/models", params=params)

    def list(self, limit: int = 100, next_page_token: str | None = None) -> dict:
        params = {"limit": limit, **({"next_page_token": next_page_token} if next_page_token else {})}
        return self._call("GET", "/models", params=params)

    def describe(self, name: str, version: str | None = None) -> list:
        return self._call("GET", f"/models/{name}" + (f"/{version}" if version else ""))

    def scale(self, name: str, workers: int, version: str | None = None) -> dict:
        return self._call("PUT", f"/models/{name}" + (f"/{version}" if version else ""),
                          params={"min_worker": workers})

    def unregister(self, name: str, version: str | None = None) -> dict:
        return self._call("DELETE", f"/models/{name}" + (f"/{version}" if version else ""))

    def set_default(self, name: str, version: str) -> dict:
        return self._call("PUT", f"/models/{name}/{version}/set-default")

    def traffic(self, name: str, weights: dict | None = None, shadow: str | None = "") -> dict:
        if weights is None and shadow == "":
            return self._call("GET", f"/models/{name}/traffic")
        body = {"weights": weights}
        if shadow != "":
            body["shadow"] = shadow
        return self._call("PUT", f"/models/{name}/traffic", json=body)
