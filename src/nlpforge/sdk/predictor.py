"""Deploy, predict and batch transform: the SageMaker SDK's endpoint side, on the nlpforge model server.

    predictor = est.deploy(initial_instance_count=1)        # starts `nlpforge serve` if none answers
    predictor.predict({"text": "Loved it"})                 # POST /predictions/<endpoint>
    Predictor("my-endpoint").predict(["a", "b"])            # attach to an existing endpoint
    predictor.delete_endpoint()                             # DELETE /models/<endpoint>
    est.transformer(output_path="preds").transform("reviews.csv")   # batch transform to files

The server speaks TorchServe's API: inference on 8080 (`/ping`, `/predictions/{name}`),
management on 8081 (`POST /models?url=...&model_name=...`, `DELETE /models/{name}`). Each
endpoint is recorded in `<jobs root>/_endpoints/<name>.json` so that a later process can attach.
"""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from nlpforge.errors import EndpointError
from nlpforge.sdk.contract import jobs_root as resolve_jobs_root
from nlpforge.sdk.jobs import now_iso, read_json, write_json
from nlpforge.sdk.serializers import JSONDeserializer, JSONSerializer

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORTS = {"inference_port": 8080, "management_port": 8081, "metrics_port": 8082}


def endpoint_record_path(name: str, root=None) -> Path:
    return resolve_jobs_root(root) / "_endpoints" / f"{name}.json"


def request(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 60) -> tuple[int, bytes, str]:
    """(status, body, content type); HTTP error statuses are returned, not raised."""
    call = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(call, timeout=timeout) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "")


def management_headers(root: Path) -> dict:
    """The server's management API wants TorchServe's bearer token: from NLPFORGE_MANAGEMENT_KEY, or the
    key file that a server started by deploy() writes into its model store."""
    key = os.environ.get("NLPFORGE_MANAGEMENT_KEY")
    key_file = Path(os.environ.get("NLPFORGE_KEY_FILE", root / "_model_store" / "key_file.json"))
    if not key and key_file.exists():
        try:
            key = json.loads(key_file.read_text(encoding="utf-8"))["management"]["key"]
        except (ValueError, KeyError, TypeError):
            raise EndpointError(f"{key_file}: not a model-server key file; delete it to let the server write "
                                "a new one, or set NLPFORGE_MANAGEMENT_KEY") from None
    return {"Authorization": f"Bearer {key}"} if key else {}


def server_answers(host: str, port: int) -> bool:
    try:
        status, body, _ = request("GET", f"http://{host}:{port}/ping", timeout=2)
    except OSError:
        return False
    return status == 200


def error_message(body: bytes) -> str:
    try:
        value = json.loads(body)
        return str(value.get("message") or value.get("error") or value) if isinstance(value, dict) else str(value)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body[:300].decode("utf-8", errors="replace")


def start_server(host: str, ports: dict, root: Path, command: list[str] | None, timeout: float) -> int:
    """Start the model server in the background and wait for /ping; returns its pid."""
    store = root / "_model_store"
    store.mkdir(parents=True, exist_ok=True)
    command = list(command or [sys.executable, "-m", "nlpforge", "serve"]) + [
        "--model-store", str(store), "--host", host, "--inference-port", str(ports["inference_port"]),
        "--management-port", str(ports["management_port"]), "--metrics-port", str(ports["metrics_port"])]
    log = root / "_endpoints" / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as handle:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deadline = time.monotonic() + timeout
    while not server_answers(host, ports["inference_port"]):
        if process.poll() is not None:
            tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
            raise EndpointError(f"the model server exited with code {process.returncode} before answering "
                                f"/ping: {' | '.join(tail)} (full log: {log})")
        if time.monotonic() > deadline:
            process.terminate()
            raise EndpointError(f"the model server did not answer /ping on {host}:{ports['inference_port']} "
                                f"within {timeout:.0f}s; see {log}")
        time.sleep(0.2)
    return process.pid


def deploy_model(model_dir, endpoint_name: str, initial_instance_count: int = 1, *, serializer=None,
                 deserializer=None, jobs_root=None, training_job_name: str | None = None, host: str = DEFAULT_HOST,
                 inference_port: int = 8080, management_port: int = 8081, metrics_port: int = 8082,
                 server_command: list[str] | None = None, startup_timeout: float = 120,
                 tracking: bool = True) -> "Predictor":
    """Register a model folder as an endpoint on the model server, starting the server if none answers."""
    model_dir = Path(model_dir).resolve()
    if not (model_dir / "nlpforge.json").exists():
        raise EndpointError(f"{model_dir} is not an nlpforge model folder (no nlpforge.json); the model server "
                            "serves what `nlpforge train` or TextClassifier write. A script-mode job must save "
                            "such a folder to SM_MODEL_DIR to be deployed")
    if initial_instance_count < 1:
        raise EndpointError("initial_instance_count must be at least 1")
    root = resolve_jobs_root(jobs_root)
    ports = {"inference_port": inference_port, "management_port": management_port, "metrics_port": metrics_port}
    record_path = endpoint_record_path(endpoint_name, root)
    if record_path.exists() and server_answers(host, inference_port):
        raise EndpointError(f"endpoint '{endpoint_name}' already exists; delete it with "
                            f"Predictor('{endpoint_name}').delete_endpoint() or choose another endpoint_name")
    started_pid = None
    if not server_answers(host, inference_port):
        started_pid = start_server(host, ports, root, server_command, startup_timeout)
    query = urllib.parse.urlencode({"url": str(model_dir), "model_name": endpoint_name,
                                    "initial_workers": initial_instance_count, "synchronous": "true"})
    status, body, _ = request("POST", f"http://{host}:{management_port}/models?{query}",
                              headers=management_headers(root), timeout=startup_timeout)
    if status >= 300:
        raise EndpointError(f"the model server refused to register '{endpoint_name}' (HTTP {status}): "
                            f"{error_message(body)}")
    write_json_record(record_path, {"endpoint_name": endpoint_name, "model_dir": str(model_dir),
                                    "training_job_name": training_job_name, "host": host, **ports,
                                    "server_pid": started_pid, "created": now_iso()})
    if training_job_name and tracking and os.environ.get("NLPFORGE_TRACKING", "1") not in ("0", "off", "false"):
        try:
            from nlpforge.tracking.runs import record_deployment

            record_deployment(training_job_name, endpoint_name, root)
        except ImportError:
            pass
    return Predictor(endpoint_name, serializer=serializer, deserializer=deserializer, jobs_root=root)


def write_json_record(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, value)


class Predictor:
    """Sends requests to an endpoint, as SageMaker's `Predictor`; attach with `Predictor(endpoint_name)`."""

    def __init__(self, endpoint_name: str, serializer=None, deserializer=None, jobs_root=None,
                 host: str | None = None, inference_port: int | None = None, management_port: int | None = None):
        self.endpoint_name = endpoint_name
        self.serializer = serializer or JSONSerializer()
        self.deserializer = deserializer or JSONDeserializer()
        self.jobs_root = resolve_jobs_root(jobs_root)
        record = read_json(endpoint_record_path(endpoint_name, self.jobs_root), {}) or {}
        self.host = host or record.get("host", DEFAULT_HOST)
        self.inference_port = inference_port or record.get("inference_port", DEFAULT_PORTS["inference_port"])
        self.management_port = management_port or record.get("management_port", DEFAULT_PORTS["management_port"])
        self.record = record

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.inference_port}/predictions/{urllib.parse.quote(self.endpoint_name)}"

    def predict(self, data, initial_args: dict | None = None):
        """Serialize, POST to the endpoint, deserialize the answer."""
        headers = {"Content-Type": self.serializer.content_type, "Accept": self.deserializer.ACCEPT[0]}
        # SageMaker's initial_args may override the request's ContentType and Accept.
        for key, header in (("ContentType", "Content-Type"), ("Accept", "Accept")):
            if (initial_args or {}).get(key):
                headers[header] = initial_args[key]
        try:
            status, body, content_type = request("POST", self.url, self.serializer.serialize(data), headers)
        except OSError as error:
            raise EndpointError(f"endpoint '{self.endpoint_name}' at {self.url} does not answer ({error}); is the "
                                "model server running? deploy() starts it") from None
        if status == 404:
            raise EndpointError(f"no endpoint named '{self.endpoint_name}' on {self.host}:{self.inference_port}; "
                                "deploy a model first")
        if status >= 300:
            raise EndpointError(f"endpoint '{self.endpoint_name}' answered HTTP {status}: {error_message(body)}")
        return self.deserializer.deserialize(body, content_type)

    def delete_endpoint(self, delete_endpoint_config: bool = True, stop_server: bool = True) -> None:
        """Unregister the model; stop the server too if deploy() started it and no endpoint is left."""
        try:
            status, body, _ = request("DELETE", f"http://{self.host}:{self.management_port}/models/"
                                                f"{urllib.parse.quote(self.endpoint_name)}",
                                      headers=management_headers(self.jobs_root))
        except OSError as error:
            raise EndpointError(f"cannot reach the model server's management API on {self.host}:"
                                f"{self.management_port} ({error})") from None
        if status >= 300 and status != 404:
            raise EndpointError(f"deleting endpoint '{self.endpoint_name}' failed (HTTP {status}): "
                                f"{error_message(body)}")
        endpoint_record_path(self.endpoint_name, self.jobs_root).unlink(missing_ok=True)
        pid = self.record.get("server_pid")
        others = list((self.jobs_root / "_endpoints").glob("*.json"))
        if stop_server and pid and not others:
            import signal

            try:
                os.killpg(int(pid), signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass

    delete_model = delete_endpoint


class Transformer:
    """Batch transform: predictions for every row of a file or folder of files, written as `<file>.out`."""

    def __init__(self, model_dir, output_path: str | None = None, accept: str = "application/jsonlines",
                 training_job_name: str | None = None):
        if accept not in ("application/jsonlines", "text/csv"):
            raise EndpointError(f"accept must be application/jsonlines or text/csv, not {accept!r}")
        self.model_dir, self.output_path, self.accept = Path(model_dir), output_path, accept
        self.training_job_name = training_job_name
        self.outputs: list[Path] = []

    def transform(self, data, output_path: str | None = None, content_type: str = "text/csv",
                  split_type: str = "Line", text_columns: list[str] | None = None, **_sagemaker_options) -> list[Path]:
        """Predict every row of `data` (a file or a folder of files); returns the .out files written."""
        from nlpforge.models.batch_predict import predict_file

        output = output_path or self.output_path
        if output is None:
            raise EndpointError("give output_path (to transformer() or transform()) for the .out files")
        source = Path(str(data).removeprefix("file://")).expanduser()
        if not source.exists():
            raise EndpointError(f"batch transform input {source} does not exist")
        if split_type != "Line":
            raise EndpointError("split_type must be 'Line': each row is one record")
        files = sorted(p for p in source.iterdir() if p.is_file()) if source.is_dir() else [source]
        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        suffix = ".csv" if self.accept == "text/csv" else ".jsonl"
        self.outputs = []
        for path in files:
            temporary = output / f".{path.name}{suffix}"
            predict_file(self.model_dir, path, temporary, text_columns=text_columns)
            final = output / f"{path.name}.out"
            os.replace(temporary, final)
            self.outputs.append(final)
        return self.outputs
