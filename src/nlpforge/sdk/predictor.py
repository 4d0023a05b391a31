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
import os
import subprocess
import sys
import time
from pathlib import Path

from nlpforge.errors import EndpointError, RequestError
from nlpforge.sdk.jobs import now_iso, read_json, write_json
from nlpforge.sdk.serializers import JSONDeserializer, JSONSerializer
from nlpforge.serving.client import InferenceClient, ManagementClient
from nlpforge.settings import jobs_root as resolve_jobs_root

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORTS = {"inference_port": 8080, "management_port": 8081, "metrics_port": 8082}


def endpoint_record_path(name: str, root=None) -> Path:
    return resolve_jobs_root(root) / "_endpoints" / f"{name}.json"


def key_file(root: Path) -> str:
    """The server's key file: $NLPFORGE_KEY_FILE, else the one a server started by deploy() writes."""
    return os.environ.get("NLPFORGE_KEY_FILE") or str(root / "_model_store" / "key_file.json")


def management(host: str, port: int, root: Path, timeout: float = 600.0) -> ManagementClient:
    return ManagementClient(f"http://{host}:{port}", key_file=key_file(root), timeout=timeout)


def inference(host: str, port: int, timeout: float = 60.0) -> InferenceClient:
    return InferenceClient(f"http://{host}:{port}", timeout=timeout)


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
    client = inference(host, ports["inference_port"])
    while not client.ping():
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
    running = inference(host, inference_port).ping()
    if record_path.exists() and running:
        raise EndpointError(f"endpoint '{endpoint_name}' already exists; delete it with "
                            f"Predictor('{endpoint_name}').delete_endpoint() or choose another endpoint_name")
    started_pid = None
    if not running:
        started_pid = start_server(host, ports, root, server_command, startup_timeout)
    try:
        management(host, management_port, root, startup_timeout).register(
            str(model_dir), endpoint_name, workers=initial_instance_count)
    except RequestError as error:
        raise EndpointError(f"the model server refused to register '{endpoint_name}' ({error.message})") from None
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
        return f"http://{self.host}:{self.inference_port}/predictions/{self.endpoint_name}"

    def predict(self, data, initial_args: dict | None = None):
        """Serialize, POST to the endpoint, deserialize the answer."""
        content_type, accept = self.serializer.content_type, self.deserializer.ACCEPT[0]
        # SageMaker's initial_args may override the request's ContentType and Accept.
        content_type = (initial_args or {}).get("ContentType") or content_type
        accept = (initial_args or {}).get("Accept") or accept
        try:
            body, answered_type = inference(self.host, self.inference_port).predict(
                self.endpoint_name, self.serializer.serialize(data), content_type, accept)
        except RequestError as error:
            if error.status == 503 and "cannot reach" in error.message:
                raise EndpointError(f"endpoint '{self.endpoint_name}' at {self.url} does not answer; is the model "
                                    "server running? deploy() starts it") from None
            if error.status == 404:
                raise EndpointError(f"no endpoint named '{self.endpoint_name}' on {self.host}:"
                                    f"{self.inference_port}; deploy a model first") from None
            raise EndpointError(f"endpoint '{self.endpoint_name}' answered HTTP {error.message}") from None
        return self.deserializer.deserialize(body, answered_type)

    def delete_endpoint(self, delete_endpoint_config: bool = True, stop_server: bool = True) -> None:
        """Unregister the model; stop the server too if deploy() started it and no endpoint is left."""
        try:
            management(self.host, self.management_port, self.jobs_root).unregister(self.endpoint_name)
        except RequestError as error:
            if error.status == 503:
                raise EndpointError(f"cannot reach the model server's management API on {self.host}:"
                                    f"{self.management_port}") from None
            if error.status != 404:
                raise EndpointError(f"deleting endpoint '{self.endpoint_name}' failed ({error.message})") from None
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
        from nlpforge.tasks.files import predict_file

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
