"""Training job records: what was asked (job.json), what happened (status.json), and how to read them.

    describe_job("pytorch-bert-2026-11-25-19-40-00-123")   # a DescribeTrainingJob-shaped dict
    list_jobs()                                             # newest first; a damaged job's row says which file
    stop_job(name)                                          # SIGTERM to the script, status Stopped
    follow_log(name, print)                                 # tail the kept log until the job ends
    follow_log(name, print, host="algo-2")                  # one host's stream only

The CLI (`nlpforge jobs ...`), `Estimator.latest_training_job` and the tuner all read jobs here.
"""
import json
import os
import re
import signal
import time
from datetime import datetime, timezone
from pathlib import Path

from nlpforge.data.readers import text_lines
from nlpforge.errors import ConfigError, TrainingJobError
from nlpforge.sdk.contract import JobPaths, JobSpec, host_names, serialized_hyperparameters
from nlpforge.settings import jobs_root
from nlpforge.tracking.runs import OWN_SETTINGS

TERMINAL = ("Completed", "Failed", "Stopped")
DAMAGED = "Damaged"  # list_jobs' status of a job whose job.json, status.json or metrics.jsonl cannot be read
# Fields of job.json and status.json that describe_job and list_jobs use, and the types they must have.
SPEC_TYPES = {"created": str, "hyperparameters": dict, "channels": dict, "instance_count": int}
STATUS_TYPES = {"TrainingJobStatus": str, "SecondaryStatus": str, "FailureReason": (str, type(None)),
                "SupervisorPid": (int, type(None)), "ProcessPid": (int, type(None))}
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def write_json(path: Path, value) -> None:
    """Write atomically, so a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError, json.JSONDecodeError):
        return default


def damaged(name: str, path: Path, reason) -> TrainingJobError:
    return TrainingJobError(f"job '{name}': {path} is damaged ({reason}); fix it or move it away, or delete the job "
                            "folder")


def read_record(name: str, path: Path, types: dict) -> dict:
    """A job's JSON object (status.json; job.json's fields), {} when it is not written yet; TrainingJobError
    naming the file when it is damaged or one of `types`' fields has another type."""
    if not path.exists():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # ValueError: not JSON, not UTF-8
        raise damaged(name, path, error) from None
    if not isinstance(value, dict):
        raise damaged(name, path, f"a JSON object belongs there, not {value!r:.40}")
    for key, kind in types.items():
        if key in value and (not isinstance(value[key], kind) or isinstance(value[key], bool)):
            raise damaged(name, path, f"{key} is {value[key]!r:.40}")
    return value


def read_spec(name: str, paths: JobPaths) -> JobSpec:
    """job.json; TrainingJobError naming it when it is damaged."""
    read_record(name, paths.spec, SPEC_TYPES)
    try:
        return JobSpec.read(paths.spec)
    except (TypeError, ValueError) as error:  # a field missing, or one JobSpec does not know how to hold
        raise damaged(name, paths.spec, error) from None


def check_name(name, what: str, error=ConfigError) -> str:
    """A job or endpoint name as SageMaker allows it, which is also a plain folder or file name; else `error`."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise error(f"{what} {name!r} must be 1-63 letters, digits or '-', starting with a letter or digit")
    return name


def name_base(text: str) -> str:
    """`text` (a script's name, a base job name) as the start of a job name: characters a name cannot hold
    become '-', and none leads or trails."""
    return "".join(c if c.isalnum() or c == "-" else "-" for c in text).strip("-")


def check_dict(value, what: str, example: str, error=ConfigError, strings: bool = False) -> dict:
    """An argument that must be a dict (None: an empty one), with string keys and values when `strings`; else
    `error` naming the argument and an example of what to give."""
    if value is None:
        return {}
    if not isinstance(value, dict) or strings and not all(isinstance(v, str) for item in value.items() for v in item):
        raise error(f"{what} must be a dict{' of strings' if strings else ''} such as {example}, not {value!r}")
    return value


def check_bool(value, what: str, error=ConfigError) -> bool:
    """A True/False argument; a string such as "no" would count as true, so anything else is `error`."""
    if not isinstance(value, bool):
        raise error(f"{what} must be True or False, not {value!r}")
    return value


def holds_null(value) -> bool:
    """Whether a string in `value` (itself, or within a dict or list) holds a null character."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_null(key) or holds_null(item) for key, item in value.items())
    return isinstance(value, (list, tuple)) and any(map(holds_null, value))


def check_hyperparameters_types(hyperparameters: dict, error=ConfigError) -> dict:
    """Hyperparameters as SageMaker keeps them (hyperparameters.json, `--name value` arguments): string names
    and values that JSON can write; else `error` naming the first that is not."""
    for name, value in hyperparameters.items():
        if not isinstance(name, str):
            raise error(f"hyperparameter name {name!r} must be a string, e.g. {{'{name}': {value!r}}}")
        # The script gets `--name value` and SM_HP_<NAME>: an empty name would be a lone '-', and '=' or a null
        # character cannot be in an environment variable's name (the job would fail to start).
        if not name.strip() or any(mark in name for mark in "=\x00"):
            raise error(f"hyperparameter name {name!r} must be a non-blank name without '=' or null characters, "
                        "e.g. 'learning_rate'")
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise error(f"hyperparameter {name!r}: {value!r} cannot be written as JSON; give a number, string, "
                        "bool, list or dict") from None
        if holds_null(value):  # the script gets strings, a dict's keys and values, a list's items as they are
            raise error(f"hyperparameter {name!r}: {value!r} holds a null character (\\x00), which no argument "
                        "or environment variable can; remove it")
    return hyperparameters


def script_environment(*layers: dict) -> dict:
    """The environment a job's script runs in: this process's, less the settings nlpforge made for itself
    (a script gets MLflow's own defaults), with `layers` on top."""
    base = {key: value for key, value in os.environ.items() if key not in OWN_SETTINGS}
    for layer in layers:
        base.update(layer)
    return base


def job_paths(name: str, root=None) -> JobPaths:
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
        raise TrainingJobError(f"{name!r} is not a training job name; see `nlpforge jobs list`")
    paths = JobPaths(jobs_root(root) / name)
    if not paths.spec.exists():
        raise TrainingJobError(f"no training job named '{name}' under {paths.root.parent}; "
                               "see `nlpforge jobs list` (or set NLPFORGE_JOBS_ROOT)")
    return paths


def update_status(paths: JobPaths, **changes) -> dict:
    status = read_json(paths.status, {})
    status = status if isinstance(status, dict) else {}  # a damaged file is written afresh
    status.update(changes)
    write_json(paths.status, status)
    return status


def pid_alive(pid) -> bool:
    try:
        number = int(pid)
    except (TypeError, ValueError):  # none, or not a process id
        return False
    if number <= 0:  # os.kill would signal a process group, or every process
        return False
    try:
        os.kill(number, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_metrics(paths: JobPaths) -> list[dict]:
    """Every metric value the job reported, in order: {"name", "value", "step", "timestamp", "source"}. A line
    that is not one (a line being written, a stray line, a value that is not a number) is skipped;
    TrainingJobError when the file cannot be read."""
    if not paths.metrics.exists():
        return []
    try:
        text = paths.metrics.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise damaged(paths.root.name, paths.metrics, error) from None
    rows = []
    for line in text_lines(text):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written while we read
        if isinstance(row, dict) and isinstance(row.get("name"), str) and is_number(row.get("value")):
            rows.append(row)
    return rows


def final_metrics(rows: list[dict]) -> dict:
    """The last value of each metric."""
    latest = {}
    for row in rows:
        if isinstance(row, dict) and isinstance(row.get("name"), str):
            latest[row["name"]] = row
    return latest


def describe_job(name: str, root=None) -> dict:
    """The job as SageMaker's DescribeTrainingJob shows it (local paths in place of S3 URIs); TrainingJobError
    naming the file when job.json, status.json or metrics.jsonl is damaged."""
    paths = job_paths(name, root)
    spec = read_spec(name, paths)
    status = read_record(name, paths.status, STATUS_TYPES)
    state = status.get("TrainingJobStatus", "InProgress")
    if state not in TERMINAL and status.get("SupervisorPid") and not pid_alive(status["SupervisorPid"]):
        state = "Failed"
        status["FailureReason"] = status.get("FailureReason") or "the process running the job exited unexpectedly"
    metrics = final_metrics(read_metrics(paths))
    return {
        "TrainingJobName": name,
        "TrainingJobStatus": state,
        "SecondaryStatus": status.get("SecondaryStatus", "Starting"),
        "FailureReason": status.get("FailureReason"),
        "CreationTime": spec.created,
        "TrainingStartTime": status.get("TrainingStartTime"),
        "TrainingEndTime": status.get("TrainingEndTime"),
        "TrainingTimeInSeconds": status.get("TrainingTimeInSeconds"),
        "BillableTimeInSeconds": status.get("BillableTimeInSeconds"),
        "HyperParameters": serialized_hyperparameters(spec.hyperparameters),
        "AlgorithmSpecification": {"TrainingImage": "local", "TrainingInputMode": spec.input_mode,
                                   "EntryPoint": spec.entry_point, "MetricDefinitions": spec.metric_definitions},
        "InputDataConfig": [{"ChannelName": channel, "DataUri": path} for channel, path in spec.channels.items()],
        "OutputDataConfig": {"S3OutputPath": spec.output_path},
        "ResourceConfig": {"InstanceType": spec.instance_type, "InstanceCount": spec.instance_count,
                           "LocalInstanceType": spec.local_instance_type},
        "StoppingCondition": {"MaxRuntimeInSeconds": spec.max_run, "MaxWaitTimeInSeconds": spec.max_wait},
        "EnableManagedSpotTraining": spec.use_spot_instances,
        "CheckpointConfig": {"LocalPath": spec.checkpoint_dir},
        "RetryStrategy": {"MaximumRetryAttempts": spec.max_retry_attempts},
        "DebugHookConfig": spec.debug_hook_config,
        "ModelArtifacts": status.get("ModelArtifacts"),
        "FinalMetricDataList": [{"MetricName": key, "Value": row["value"], "Timestamp": row.get("timestamp")}
                                for key, row in metrics.items()],
        "Attempts": status.get("Attempts", []),
        "JobFolder": str(paths.root),
        "LogFile": str(paths.log),
        "HostLogFiles": {host: str(paths.host_log(host)) for host in host_names(spec.instance_count)},
        "TuningJobName": spec.tuning_job_name,
        "MlflowRunId": status.get("MlflowRunId"),
        "DebugRuleEvaluationStatuses": rule_evaluations(paths.model),
    }


def rule_evaluations(model_dir: Path) -> list[dict]:
    """SageMaker's DebugRuleEvaluationStatuses: each Debugger rule's latest status in the run's metrics.jsonl
    (in the model folder once written, in its `.training` folder while the job runs)."""
    from nlpforge.models.artifact import training_folder

    found = [p for p in (model_dir / "metrics.jsonl", training_folder(model_dir) / "metrics.jsonl") if p.is_file()]
    if not found:
        return []
    latest: dict[str, dict] = {}
    for line in found[0].read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line being written
            continue
        if isinstance(row, dict) and isinstance(row.get("rule"), str):
            latest[row["rule"]] = row
    changed = datetime.fromtimestamp(found[0].stat().st_mtime, timezone.utc).isoformat()
    return [{"RuleConfigurationName": name, "RuleEvaluationStatus": row.get("rule_status"),
             "StatusDetails": row.get("reason") or "", "LastModifiedTime": changed, "Step": row.get("step")}
            for name, row in latest.items()]


def list_jobs(root=None, name_contains: str | None = None) -> list[dict]:
    """One summary row per job, newest first; a damaged job's row (status DAMAGED, last) names the damaged file."""
    base = jobs_root(root)
    rows = []
    if not base.is_dir():
        return rows
    for folder in base.iterdir():
        if not (folder / "job.json").exists() or folder.name.startswith("_"):
            continue
        if name_contains and name_contains not in folder.name:
            continue
        try:
            job = describe_job(folder.name, root)
        except TrainingJobError as error:
            rows.append({"name": folder.name, "status": DAMAGED, "created": "", "seconds": None, "billable": None,
                         "failure": error.message})
            continue
        rows.append({"name": folder.name, "status": job["TrainingJobStatus"], "created": job["CreationTime"] or "",
                     "seconds": job["TrainingTimeInSeconds"], "billable": job["BillableTimeInSeconds"],
                     "failure": failure_summary(job["FailureReason"])})
    return sorted(rows, key=lambda row: row["created"], reverse=True)


def failure_summary(reason: str | None) -> str:
    """One line of a failure reason: the script's error message when there is one."""
    lines = (reason or "").splitlines()
    messages = [line for line in lines if line.startswith("ErrorMessage")]
    return (messages[0] if messages else lines[0] if lines else "")[:160]


def stop_job(name: str, root=None) -> str:
    """Ask a running job to stop: SIGTERM to its script, which may checkpoint; the job ends Stopped."""
    paths = job_paths(name, root)
    status = read_record(name, paths.status, STATUS_TYPES)
    if status.get("TrainingJobStatus") in TERMINAL:
        return status["TrainingJobStatus"]
    paths.stop_request.write_text(now_iso(), encoding="utf-8")
    pid = status.get("ProcessPid")
    if pid_alive(pid):
        try:
            os.killpg(int(pid), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    return "Stopping"


def wait_for_job(name: str, root=None, poll: float = 0.2, timeout: float | None = None) -> dict:
    started = time.monotonic()
    while True:
        job = describe_job(name, root)
        if job["TrainingJobStatus"] in TERMINAL:
            return job
        if timeout is not None and time.monotonic() - started > timeout:
            raise TrainingJobError(f"job '{name}' still {job['TrainingJobStatus']} after {timeout:.0f}s")
        time.sleep(poll)


def follow_log(name: str, emit=print, root=None, follow: bool = True, poll: float = 0.2,
               host: str | None = None) -> None:
    """Print the job's kept log (every host, each line prefixed `[algo-N]` when there are several), or one
    host's stream; with follow, keep printing new lines until the job ends."""
    paths = job_paths(name, root)
    hosts = host_names(read_spec(name, paths).instance_count)
    if host is not None and host not in hosts:
        raise TrainingJobError(f"job '{name}' has no host '{host}'; its hosts are {', '.join(hosts)}")
    log = paths.log if host is None else paths.host_log(host)
    position = 0
    while True:
        finished = describe_job(name, root)["TrainingJobStatus"] in TERMINAL
        if log.exists():
            with open(log, encoding="utf-8", errors="replace") as handle:
                handle.seek(position)
                chunk = handle.read()
                # Print only whole lines while the job still writes.
                cut = len(chunk) if finished else chunk.rfind("\n") + 1
                for line in chunk[:cut].splitlines():
                    emit(line)
                position += len(chunk[:cut].encode("utf-8"))
        if finished or not follow:
            return
        time.sleep(poll)
