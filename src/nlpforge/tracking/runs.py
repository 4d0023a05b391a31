"""Every training job and tuning trial as an MLflow run, with its data hashes, metrics, model and lineage.

    log_training_job(paths, spec, status, metrics)    # the job runner calls this when a job ends
    list_runs(); find_run("my-job"); compare_runs(["job-a", "job-b"])

The store is local by default, `sqlite:///<jobs root>/mlflow.db` with artifacts in
`<jobs root>/mlartifacts`, so `mlflow ui --backend-store-uri sqlite:///jobs/mlflow.db` opens it;
MLFLOW_TRACKING_URI names a tracking server instead. SageMaker Experiments map onto MLflow:

    Experiment      -> MLflow experiment  (experiment_config["ExperimentName"], default "nlpforge")
    Trial           -> parent run         (experiment_config["TrialName"]; a tuning job is one)
    TrialComponent  -> the job's run      (a child run: tag mlflow.parentRunId; named by RunName or
                                           TrialComponentDisplayName, else the job)

Lineage: the job's run holds the model.tar.gz and its sha256; a completed job whose model is an
nlpforge artifact becomes a version of a registered model, and `deploy` tags that version and
the run with the endpoint.
"""
import contextlib
import hashlib
import os
import re
from pathlib import Path

from nlpforge.errors import TrackingError
from nlpforge.settings import jobs_root, sqlite_file

# MLflow must not phone home: its usage telemetry is off before mlflow is first imported.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# A tracking server that is down must cost seconds, not MLflow's default of 7 retries with backoff (minutes per
# job, and per trial of a tuning job). A user's own values win, and a job's script gets MLflow's defaults back
# (OWN_SETTINGS: what nlpforge set itself; the job runner leaves them out of a script's environment).
OWN_SETTINGS = {name: value for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"),
                                                ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"))
                if name not in os.environ}
os.environ.update(OWN_SETTINGS)

DEFAULT_EXPERIMENT = "nlpforge"
STATUS = {"Completed": "FINISHED", "Failed": "FAILED", "Stopped": "KILLED"}


def tracking_uri(root=None, create: bool = True) -> str:
    """MLFLOW_TRACKING_URI when set, else the SQLite store under the jobs root (its folder made unless `create`
    is False)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    folder = jobs_root(root)
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def store_exists(root=None) -> bool:
    """False for a local store that no job has written yet: reading runs must not create one."""
    uri = tracking_uri(root, create=False)
    path = sqlite_file(uri)
    return path is None or path.exists()


@contextlib.contextmanager
def reading_store(root=None):
    """MLflow's errors while reading the store (a server that is down, a database it cannot open) as one line."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        reason = str(error.message if hasattr(error, "message") else error).splitlines()[0][:300]
        raise TrackingError(f"cannot read the MLflow store {tracking_uri(root, create=False)}: {reason}; check "
                            "MLFLOW_TRACKING_URI and that its server runs") from None


def client(root=None):
    """An MlflowClient on the store."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(root))


def experiment_id(mlflow_client, name: str, root=None) -> str:
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifacts = None
    if tracking_uri(root).startswith("sqlite:///"):
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
        artifacts = (jobs_root(root) / "mlartifacts" / safe).as_uri()
    return mlflow_client.create_experiment(name, artifact_location=artifacts)


def trial_run_id(mlflow_client, experiment: str, trial_name: str) -> str:
    """The parent run standing for a SageMaker Trial, created on first use."""
    found = mlflow_client.search_runs([experiment], f"tags.`nlpforge.trial` = '{trial_name}'", max_results=1)
    if found:
        return found[0].info.run_id
    run = mlflow_client.create_run(experiment, run_name=trial_name,
                                   tags={"nlpforge.trial": trial_name, "nlpforge.kind": "trial"})
    mlflow_client.set_terminated(run.info.run_id, "FINISHED")  # a grouping, not something that runs
    return run.info.run_id


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_hash(path: Path) -> str:
    """sha256 of a file, or of a folder's files (their relative paths and contents)."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(item.relative_to(path)).encode() + b"\0" + file_sha256(item).encode())
    return digest.hexdigest()


def metric_key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /:]", "_", name)


def batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def timestamp_ms(iso: str | None) -> int | None:
    if not iso:
        return None
    from datetime import datetime

    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def log_training_job(paths, spec, status: dict, metrics: list[dict]) -> str:
    """Record a finished job as an MLflow run; returns its run id. `paths` and `spec` are the job's
    folder layout and what it was asked to do (the SDK's JobPaths and JobSpec)."""
    from mlflow.entities import Metric, Param, RunTag

    root = paths.root.parent
    mlflow_client = client(root)
    experiment_config = spec.experiment or {}
    experiment = experiment_id(mlflow_client, experiment_config.get("ExperimentName") or DEFAULT_EXPERIMENT, root)
    name = spec.job_name
    tags = {"nlpforge.job_name": name, "nlpforge.job_folder": str(paths.root), "nlpforge.kind": "training-job",
            "nlpforge.status": status["TrainingJobStatus"], "nlpforge.estimator": spec.estimator,
            "mlflow.source.name": spec.entry_point, "mlflow.source.type": "JOB",
            "sagemaker.trial_component": experiment_config.get("TrialComponentDisplayName") or name}
    if experiment_config.get("TrialName"):
        tags["mlflow.parentRunId"] = trial_run_id(mlflow_client, experiment, experiment_config["TrialName"])
        tags["nlpforge.trial_name"] = experiment_config["TrialName"]
    if spec.tuning_job_name:
        tags["nlpforge.tuning_job"] = spec.tuning_job_name
    if status.get("FailureReason"):
        tags["nlpforge.failure_reason"] = status["FailureReason"][:5000]
    for rule in status.get("DebugRuleEvaluationStatuses") or []:  # SageMaker Debugger rule statuses
        tags[f"sagemaker.rule.{rule['RuleConfigurationName']}"] = rule["RuleEvaluationStatus"]
    run = mlflow_client.create_run(experiment, start_time=timestamp_ms(status.get("TrainingStartTime")),
                                   tags=tags, run_name=experiment_config.get("RunName")
                                   or experiment_config.get("TrialComponentDisplayName") or name)
    run_id = run.info.run_id

    params = {str(k): str(v)[:6000] for k, v in spec.hyperparameters.items()}
    params.update({"sagemaker.instance_count": spec.instance_count, "sagemaker.instance_type": spec.instance_type,
                   "sagemaker.entry_point": spec.entry_point, "sagemaker.use_spot_instances": spec.use_spot_instances})
    for channel, source in spec.channels.items():
        params[f"data.{channel}.sha256"] = data_hash(Path(source))
        params[f"data.{channel}.path"] = source
    param_list = [Param(k, str(v)) for k, v in params.items()]
    values = [Metric(metric_key(m["name"]), float(m["value"]), int(m["timestamp"] * 1000), int(m["step"]))
              for m in metrics]
    end = timestamp_ms(status.get("TrainingEndTime"))
    for key in ("TrainingTimeInSeconds", "BillableTimeInSeconds"):
        if status.get(key) is not None:
            values.append(Metric(key, float(status[key]), end or 0, 0))
    for chunk in batches(param_list, 100):
        mlflow_client.log_batch(run_id, params=chunk)
    for chunk in batches(values, 1000):
        mlflow_client.log_batch(run_id, metrics=chunk)

    archive = (status.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if paths.log.exists():
        mlflow_client.log_artifact(run_id, str(paths.log), "logs")
    if archive and Path(archive).exists():
        mlflow_client.log_batch(run_id, tags=[RunTag("nlpforge.model_artifact", archive),
                                              RunTag("nlpforge.model_sha256", file_sha256(Path(archive)))])
        mlflow_client.log_artifact(run_id, archive, "model")
        if (paths.model / "nlpforge.json").exists():
            register_model_version(mlflow_client, spec, run_id, paths.model)
    mlflow_client.set_terminated(run_id, STATUS.get(status["TrainingJobStatus"], "FAILED"), end_time=end)
    return run_id


def register_model_version(mlflow_client, spec, run_id: str, model_dir: Path) -> None:
    """The job's model as a new version of the registered model named after the job's base name."""
    name = spec.base_job_name or spec.job_name
    try:
        mlflow_client.get_registered_model(name)
    except Exception:  # MLflow raises RESOURCE_DOES_NOT_EXIST as a generic MlflowException
        mlflow_client.create_registered_model(name, tags={"nlpforge.kind": "model"})
    run = mlflow_client.get_run(run_id)
    version = mlflow_client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run_id,
                                                 tags={"nlpforge.job_name": spec.job_name,
                                                       "nlpforge.model_dir": str(model_dir)})
    mlflow_client.set_tag(run_id, "nlpforge.model_version", f"{name}/{version.version}")


def find_run(job_or_run_id: str, root=None):
    """A run by its id or by the name of its training job."""
    if not isinstance(job_or_run_id, str) or not job_or_run_id:
        raise TrackingError(f"find_run takes a training job name or an MLflow run id, not {job_or_run_id!r}; see "
                            "`nlpforge runs list`")
    if not store_exists(root):
        raise TrackingError(f"no MLflow run for '{job_or_run_id}': {tracking_uri(root, create=False)} does not "
                            "exist, so no job has recorded a run in it; pass the --jobs-root the jobs ran under, or "
                            "set MLFLOW_TRACKING_URI to their store")
    mlflow_client = client(root)
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    if experiments and "'" not in job_or_run_id and "\\" not in job_or_run_id:  # job names never hold them
        found = mlflow_client.search_runs(experiments, f"tags.`nlpforge.job_name` = '{job_or_run_id}'",
                                          max_results=1)
        if found:
            return found[0]
    try:
        return mlflow_client.get_run(job_or_run_id)
    except Exception:  # MlflowException for an unknown id
        raise TrackingError(f"no MLflow run for '{job_or_run_id}' in {tracking_uri(root)}; "
                            "see `nlpforge runs list`") from None


def list_runs(experiment: str | None = None, root=None, max_results: int = 100) -> list:
    if not store_exists(root):
        if experiment:
            raise TrackingError(f"no experiment named '{experiment}': {tracking_uri(root, create=False)} does not "
                                "exist yet")
        return []
    mlflow_client = client(root)
    if experiment:
        found = mlflow_client.get_experiment_by_name(experiment)
        if found is None:
            raise TrackingError(f"no experiment named '{experiment}' in {tracking_uri(root)}")
        ids = [found.experiment_id]
    else:
        ids = [e.experiment_id for e in mlflow_client.search_experiments()]
    if not ids:
        return []
    return mlflow_client.search_runs(ids, max_results=max_results, order_by=["attributes.start_time DESC"])


def compare_runs(names: list[str], root=None) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one column per run, one row per parameter and final metric that differs or exists."""
    runs = [find_run(name, root) for name in names]
    header = ["", *[run.data.tags.get("nlpforge.job_name", run.info.run_id[:12]) for run in runs]]
    keys = sorted({("param", k) for run in runs for k in run.data.params}
                  | {("metric", k) for run in runs for k in run.data.metrics})
    rows = []
    for kind, key in keys:
        values = [(run.data.params if kind == "param" else run.data.metrics).get(key) for run in runs]
        cells = ["-" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v)) for v in values]
        rows.append([key, *cells])
    return header, rows


def record_deployment(training_job_name: str, endpoint_name: str, root=None) -> None:
    """Lineage job -> model -> endpoint: tag the job's run and its model version with the endpoint."""
    try:
        run = find_run(training_job_name, root)
    except TrackingError:
        return  # the job was run with tracking off
    mlflow_client = client(root)
    mlflow_client.set_tag(run.info.run_id, "nlpforge.endpoint", endpoint_name)
    version = run.data.tags.get("nlpforge.model_version")
    if version:
        name, number = version.rsplit("/", 1)
        mlflow_client.set_model_version_tag(name, number, "nlpforge.endpoint", endpoint_name)
