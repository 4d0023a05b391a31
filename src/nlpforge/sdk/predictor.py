"""Deploy, predict and batch transform: the SageMaker SDK's endpoint side, on the nlpforge model server.

    predictor = est.deploy(initial_instance_count=1)        # starts `nlpforge serve` if none answers
    predictor.predict({"text": "Loved it"})                 # POST /predictions/<endpoint>
    Predictor("my-endpoint").predict(["a", "b"])            # attach to an existing endpoint
    predictor.delete_endpoint()                             # DELETE /models/<endpoint>
    est.transformer(output_path="preds").transform("reviews.csv")   # batch transform to files

The server speaks TorchServe's API: inference on 8080 (`/ping`, `/predictions/{name}`),
management on 8081 (`POST /models?url=...&model_name=...`, `DELETE /models/{name}`). Each
endpoint is recorded in `<jobs root>/_endpoints/<name>.json` so that a later process can attach.

deploy() uses only a server that serves this jobs root's model store (`<jobs root>/_model_store`,
named by the `X-Nlpforge-Model-Store` header of its /ping): when another server (another user's,
another store) holds the ports, it starts its own on free ports and records them. A script-mode
model is deployed with its inference script (`entry_point`), packaged as SageMaker does (sdk/model.py).
"""
import csv
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from nlpforge.errors import EndpointError, RequestError
from nlpforge.sdk.jobs import check_dict, check_name, now_iso, read_json, write_json
from nlpforge.sdk.serializers import JSONDeserializer, JSONSerializer
from nlpforge.serving.client import InferenceClient, ManagementClient
from nlpforge.settings import check_count
from nlpforge.settings import jobs_root as resolve_jobs_root

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORTS = {"inference_port": 8080, "management_port": 8081, "metrics_port": 8082}
# SageMaker's Model.deploy arguments that mean nothing on one machine: accepted, so that notebooks run unchanged.
SAGEMAKER_DEPLOY_ARGUMENTS = {
    "accelerator_type", "tags", "kms_key", "wait", "async_inference_config",
    "serverless_inference_config", "volume_size", "model_data_download_timeout",
    "container_startup_health_check_timeout", "inference_recommendation_id", "explainer_config", "accept_eula",
    "endpoint_logging", "resources", "endpoint_type", "managed_instance_scaling", "inference_component_name",
    "routing_config", "model_name", "role", "vpc_config", "enable_network_isolation", "use_compiled_model",
    "update_endpoint"}

log = logging.getLogger("nlpforge.sdk")


def endpoint_record_path(name: str, root=None) -> Path:
    return resolve_jobs_root(root) / "_endpoints" / f"{name}.json"


def check_ports(ports: dict) -> dict:
    """The server's ports by argument name, each a whole number from 1 to 65535 (None: not given)."""
    for argument, port in ports.items():
        if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536):
            raise EndpointError(f"{argument} must be a port number from 1 to 65535, not {port!r}")
    return ports


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
    try:
        with open(log, "ab") as handle:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                       start_new_session=True)
    except OSError as error:
        raise EndpointError(f"cannot start the model server {command[0]} ({error.strerror or error}); give "
                            "server_command as an executable and its arguments, or leave it out to run "
                            "`nlpforge serve`") from None
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
                 server_command: list[str] | None = None, startup_timeout: float = 120, tracking: bool = True,
                 instance_type: str = "local", entry_point: str | None = None, source_dir: str | None = None,
                 data_capture_config=None, **sagemaker_options) -> "Predictor":
    """Register a model as an endpoint on this jobs root's model server, starting one if none of its own answers.

    model_dir is an nlpforge model folder, or a folder (or model.tar.gz) in SageMaker's layout with
    code/inference.py; with `entry_point` (in source_dir, if given) it is packaged with that inference script.
    instance_type may be local or any ml.* type: it runs here. data_capture_config (a DataCaptureConfig) sends
    its sampling_percentage of the requests to the server's capture folder. SageMaker's other deploy arguments
    are accepted."""
    unknown = sorted(set(sagemaker_options) - SAGEMAKER_DEPLOY_ARGUMENTS)
    if unknown:
        raise EndpointError(f"unknown deploy argument(s) {', '.join(unknown)}; see help(nlpforge.sdk.Estimator.deploy)")
    check_count(initial_instance_count, "initial_instance_count", EndpointError)
    most = most_workers()
    if initial_instance_count > most:
        raise EndpointError(f"initial_instance_count must be between 1 and {most} (each instance is a worker of the "
                            f"model server), not {initial_instance_count}")
    if data_capture_config is not None and not hasattr(data_capture_config, "capture_percent"):
        raise EndpointError(f"data_capture_config must be a DataCaptureConfig, e.g. DataCaptureConfig("
                            f"enable_capture=True, sampling_percentage=20), not {data_capture_config!r}")
    if instance_type not in ("local", "local_gpu") and not str(instance_type).startswith("ml."):
        raise EndpointError(f"instance_type must be local or a SageMaker type such as ml.m5.xlarge, not "
                            f"{instance_type!r}")
    check_name(endpoint_name, "endpoint_name", EndpointError)
    check_ports({"inference_port": inference_port, "management_port": management_port, "metrics_port": metrics_port})
    if server_command is not None and (not isinstance(server_command, (list, tuple)) or not server_command
                                       or not all(isinstance(part, str) for part in server_command)):
        raise EndpointError(f"server_command must be a list of strings, an executable and its arguments, not "
                            f"{server_command!r}")
    if isinstance(startup_timeout, bool) or not isinstance(startup_timeout, (int, float)) \
            or not 0 < startup_timeout < float("inf"):
        # checked before the server starts: a bad value found after it would leave it running, and NaN never ends
        raise EndpointError(f"startup_timeout must be a positive number of seconds, such as 120, not "
                            f"{startup_timeout!r}")
    root = resolve_jobs_root(jobs_root)
    record_path = endpoint_record_path(endpoint_name, root)
    existing = read_json(record_path, {}) or {}
    if existing and inference(existing.get("host", host), existing.get("inference_port", inference_port)).ping():
        raise EndpointError(f"endpoint '{endpoint_name}' already exists; delete it with "
                            f"Predictor('{endpoint_name}').delete_endpoint() or choose another endpoint_name")
    packaged = entry_point is not None
    if packaged:
        from nlpforge.sdk.model import package_model

        model_dir = package_model(model_dir, entry_point, source_dir, root / "_model_store" / endpoint_name)
    model_dir = served_folder(model_dir)
    ports = {"inference_port": inference_port, "management_port": management_port, "metrics_port": metrics_port}
    ports, server_pid = own_server(host, ports, root, server_command, startup_timeout)
    try:
        management(host, ports["management_port"], root, startup_timeout).register(
            str(model_dir), endpoint_name, workers=initial_instance_count,
            capture_percent=getattr(data_capture_config, "capture_percent", None))
    except RequestError as error:
        # Nothing is left behind: the folder packaged for it, and a server started for it that serves nothing else
        # (no endpoint record would name it, so no delete_endpoint could stop it).
        if packaged:
            import shutil

            shutil.rmtree(model_dir, ignore_errors=True)
        if server_pid and not any(same_server(record, {"host": host, **ports}) for record in endpoint_records(root)):
            stop_process_group(server_pid)
        raise EndpointError(f"the model server refused to register '{endpoint_name}' ({error.message})") from None
    write_json_record(record_path, {"endpoint_name": endpoint_name, "model_dir": str(model_dir),
                                    "packaged": packaged, "training_job_name": training_job_name, "host": host,
                                    **ports, "server_pid": server_pid, "created": now_iso()})
    if training_job_name and tracking and os.environ.get("NLPFORGE_TRACKING", "1") not in ("0", "off", "false"):
        try:
            from nlpforge.tracking.runs import record_deployment

            record_deployment(training_job_name, endpoint_name, root)
        except ImportError:
            pass
    return Predictor(endpoint_name, serializer=serializer, deserializer=deserializer, jobs_root=root)


def stop_process_group(pid) -> None:
    """SIGTERM to the model server deploy() started (its own session, so its workers go with it)."""
    import signal

    try:
        os.killpg(int(pid), signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass


def most_workers() -> int:
    """The model server's limit on a model's workers (its `workers` setting), which deploy's instances are."""
    from dataclasses import fields

    from nlpforge.serving.settings import VersionOptions

    return next(f.metadata["max"] for f in fields(VersionOptions) if f.name == "workers")


def served_folder(model_dir) -> Path:
    """A folder the model server serves: an nlpforge model folder, or SageMaker's layout (code/inference.py)."""
    model_dir = Path(model_dir).resolve()
    if not (model_dir / "nlpforge.json").exists() and not (model_dir / "code" / "inference.py").is_file():
        raise EndpointError(f"{model_dir} is not an nlpforge model folder (no nlpforge.json) nor has it an inference "
                            "script (code/inference.py); a script-mode job that saves model.pth is deployed with its "
                            "inference script: deploy(entry_point='inference.py', source_dir=...)")
    return model_dir


def own_server(host: str, ports: dict, root: Path, command: list[str] | None,
               timeout: float) -> tuple[dict, int | None]:
    """(ports, pid if deploy() started it) of a model server that serves this jobs root's model store: one that
    answers on the given ports or on an endpoint record's, else one started now, on the given ports or, when
    another server holds them, on free ones."""
    from nlpforge.serving.inference import model_store_id

    wanted = model_store_id(root / "_model_store")
    records = [record for record in endpoint_records(root)
               if record.get("host", DEFAULT_HOST) == host and set(DEFAULT_PORTS) <= set(record)]
    candidates = [ports] + [{k: record[k] for k in DEFAULT_PORTS} for record in records]
    taken = False
    for candidate in candidates:
        store = served_store(host, candidate["inference_port"])
        if store == wanted:
            # Every endpoint on a server deploy() started carries its pid, so that whichever is deleted last stops it.
            pid = next((record["server_pid"] for record in records if record.get("server_pid")
                        and record["inference_port"] == candidate["inference_port"]), None)
            return candidate, pid
        taken = taken or (candidate is ports and store is not None)
    if taken:
        free = free_ports(host)
        log.warning("the model server on %s:%s serves another model store, not %s; starting this jobs root's own "
                    "server on ports %s", host, ports["inference_port"], root / "_model_store",
                    ", ".join(map(str, free.values())))
        ports = free
    return ports, start_server(host, ports, root, command, timeout)


def served_store(host: str, port: int) -> str | None:
    """The model store id that the server on `port` names on /ping; "" for a server that names none; None when
    nothing answers."""
    from nlpforge.serving.inference import MODEL_STORE_HEADER

    try:
        response = inference(host, port).send("GET", "/ping", timeout=2)
    except RequestError:
        return None
    return response.headers.get(MODEL_STORE_HEADER, "")


def endpoint_records(root: Path) -> list[dict]:
    return [record for path in sorted((root / "_endpoints").glob("*.json"))
            if isinstance(record := read_json(path, {}), dict)]


def free_ports(host: str) -> dict:
    """Three ports that nothing listens on now."""
    sockets = [socket.socket() for _ in DEFAULT_PORTS]
    try:
        for probe in sockets:
            probe.bind((host, 0))
        return {name: probe.getsockname()[1] for name, probe in zip(DEFAULT_PORTS, sockets)}
    finally:
        for probe in sockets:
            probe.close()


def same_server(record: dict, other: dict) -> bool:
    """Whether two endpoint records name the same model server (a record without ports may: it counts)."""
    if record.get("host", DEFAULT_HOST) != other.get("host", DEFAULT_HOST):
        return False
    ports = record.get("inference_port"), other.get("inference_port")
    return None in ports or ports[0] == ports[1]


def write_json_record(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, value)


def media_types(serializer, deserializer) -> tuple[str, str]:
    """(content type, accept) of a serializer and a deserializer: nlpforge's and SageMaker's (content_type or
    CONTENT_TYPE; ACCEPT or accept), or objects shaped like them."""
    for argument, value in (("serializer", serializer), ("deserializer", deserializer)):
        if isinstance(value, type):
            raise EndpointError(f"{argument} must be an instance, such as {value.__name__}(), not the class itself")
    content_type = getattr(serializer, "content_type", None) or getattr(serializer, "CONTENT_TYPE", None)
    if not callable(getattr(serializer, "serialize", None)) or not isinstance(content_type, str) or not content_type:
        raise EndpointError(f"serializer must be a serializer such as JSONSerializer() or CSVSerializer() (an object "
                            f"with serialize(data) and a content_type), not {serializer!r}")
    accept = getattr(deserializer, "ACCEPT", None) or getattr(deserializer, "accept", None)
    accept = accept[0] if isinstance(accept, (list, tuple)) and accept else accept
    if not callable(getattr(deserializer, "deserialize", None)) or not isinstance(accept, str) or not accept:
        raise EndpointError(f"deserializer must be a deserializer such as JSONDeserializer() (an object with "
                            f"deserialize(body, content_type) and ACCEPT media types), not {deserializer!r}")
    return content_type, accept


class Predictor:
    """Sends requests to an endpoint, as SageMaker's `Predictor`; attach with `Predictor(endpoint_name)`."""

    def __init__(self, endpoint_name: str, serializer=None, deserializer=None, jobs_root=None,
                 host: str | None = None, inference_port: int | None = None, management_port: int | None = None):
        self.endpoint_name = check_name(endpoint_name, "endpoint_name", EndpointError)
        check_ports({"inference_port": inference_port, "management_port": management_port})
        self.serializer = serializer or JSONSerializer()
        self.deserializer = deserializer or JSONDeserializer()
        media_types(self.serializer, self.deserializer)  # checked now; read again by predict (they may be replaced)
        self.jobs_root = resolve_jobs_root(jobs_root)
        record = read_json(endpoint_record_path(endpoint_name, self.jobs_root), {}) or {}
        # An endpoint without a record of its own is looked for on this jobs root's server, named by any record.
        server = record or next(iter(endpoint_records(self.jobs_root)), {})
        self.host = host or server.get("host", DEFAULT_HOST)
        self.inference_port = inference_port or server.get("inference_port", DEFAULT_PORTS["inference_port"])
        self.management_port = management_port or server.get("management_port", DEFAULT_PORTS["management_port"])
        self.record = record

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.inference_port}/predictions/{self.endpoint_name}"

    def predict(self, data, initial_args: dict | None = None):
        """Serialize, POST to the endpoint, deserialize the answer."""
        content_type, accept = media_types(self.serializer, self.deserializer)
        # SageMaker's initial_args may override the request's ContentType and Accept.
        initial_args = check_dict(initial_args, "initial_args", "{'ContentType': 'text/csv'}", EndpointError)
        for key in ("ContentType", "Accept"):
            value = initial_args.get(key)
            if value is not None and not (isinstance(value, str) and value and value.isascii() and value.isprintable()):
                raise EndpointError(f"initial_args {key} must be a media type such as 'text/csv', not {value!r}")
        content_type = initial_args.get("ContentType") or content_type
        accept = initial_args.get("Accept") or accept
        try:
            request = self.serializer.serialize(data)
        except (TypeError, ValueError) as error:
            raise EndpointError(f"{type(self.serializer).__name__} cannot send a {type(data).__name__} ({error}); "
                                "give a dict, a list, a str or a numpy array") from None
        try:
            body, answered_type = inference(self.host, self.inference_port).predict(
                self.endpoint_name, request, content_type, accept)
        except RequestError as error:
            if error.status == 503 and "cannot reach" in error.message:
                raise EndpointError(f"endpoint '{self.endpoint_name}' at {self.url} does not answer; is the model "
                                    "server running? deploy() starts it") from None
            if error.status == 404:
                raise EndpointError(f"no endpoint named '{self.endpoint_name}' on {self.host}:"
                                    f"{self.inference_port}; deploy a model first") from None
            raise EndpointError(f"endpoint '{self.endpoint_name}' answered HTTP {error.message}") from None
        try:
            return self.deserializer.deserialize(body, answered_type)
        except (ValueError, csv.Error) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            reader = type(self.deserializer).__name__
            raise EndpointError(f"endpoint '{self.endpoint_name}' answered {answered_type or 'a body'} that {reader} "
                                f"cannot read ({str(error)[:200]}); give a deserializer for "
                                f"{answered_type or 'its answers'} (the request asked for {accept})") from None

    def delete_endpoint(self, delete_endpoint_config: bool = True, stop_server: bool = True) -> None:
        """Unregister the model; stop the server too if deploy() started it and no endpoint is left. A name that
        has no endpoint record and that the server does not serve (mistyped, or deleted already) is an error."""
        self.record = read_json(endpoint_record_path(self.endpoint_name, self.jobs_root), {}) or {}
        try:
            management(self.host, self.management_port, self.jobs_root).unregister(self.endpoint_name)
        except RequestError as error:
            if not self.record and error.status in (404, 503):
                raise EndpointError(f"no endpoint named '{self.endpoint_name}': {self.jobs_root} has no record of "
                                    f"it and the model server on {self.host}:{self.management_port} "
                                    f"{'does not serve it' if error.status == 404 else 'does not answer'} (deleted "
                                    "already?); see `nlpforge models list --management-url "
                                    f"http://{self.host}:{self.management_port}`") from None
            if error.status == 503:
                raise EndpointError(f"cannot reach the model server's management API on {self.host}:"
                                    f"{self.management_port}") from None
            if error.status != 404:
                raise EndpointError(f"deleting endpoint '{self.endpoint_name}' failed ({error.message})") from None
        endpoint_record_path(self.endpoint_name, self.jobs_root).unlink(missing_ok=True)
        if self.record.get("packaged"):  # the folder deploy() packaged with the inference script
            import shutil

            shutil.rmtree(self.jobs_root / "_model_store" / self.endpoint_name, ignore_errors=True)
        pid = self.record.get("server_pid")
        others = [(path, record) for path in sorted((self.jobs_root / "_endpoints").glob("*.json"))
                  if isinstance(record := read_json(path, {}), dict) and same_server(record, self.record)]
        if pid and others:  # the endpoints left take over the pid (records written before it was carried lack it)
            for path, record in others:
                if not record.get("server_pid"):
                    write_json_record(path, {**record, "server_pid": pid})
        elif stop_server and pid:
            stop_process_group(pid)

    delete_model = delete_endpoint


from nlpforge.sdk.transform import Transformer  # noqa: E402,F401  (batch transform has a module of its own)
