"""Processing jobs: SageMaker's Processor and ScriptProcessor, run on this machine.

    from nlpforge.sdk import ProcessingInput, ProcessingOutput, ScriptProcessor
    processor = ScriptProcessor(command=["python3"], instance_count=2)
    processor.run(code="preprocess.py",
                  inputs=[ProcessingInput(source="shards/", destination="/opt/ml/processing/input",
                                          s3_data_distribution_type="ShardedByS3Key")],
                  outputs=[ProcessingOutput(source="/opt/ml/processing/output", destination="tokens/")],
                  arguments=["--input", "/opt/ml/processing/input", "--output", "/opt/ml/processing/output"])
    processor.latest_job.describe()                     # DescribeProcessingJob's fields

Each instance (algo-1 ... algo-N) is a process of its own, all running at once, with a folder that
stands in for its /opt/ml:

    <jobs root>/_processing/<job name>/
      job.json, status.json            what was asked, and what happened
      code/                            ScriptProcessor's code, delivered as the input named "code"
      hosts/algo-N/processing/<...>    each input's destination and each output's source of instance algo-N
      hosts/algo-N/config/             processingjobconfig.json and resourceconfig.json (current_host, hosts)
      logs/algo-N.log, logs/processing.log   each instance's output, and all of them prefixed [algo-N]
      output/<output name>/            where an output without a destination is gathered

Container paths. An input's destination and an output's source are container paths under
/opt/ml/processing/, as on SageMaker. A command or argument that is such a path (`/opt/ml/...`, or
`name=/opt/ml/...`) is rewritten to the same path under the instance's folder, so a script written for
SageMaker runs unchanged when it takes its paths as arguments. A script can also read
SAGEMAKER_BASE_DIR (the instance's stand-in for /opt/ml) and CURRENT_HOST. `python`/`python3` at the
head of a command is this environment's Python.

Inputs. Every file of an input's source (a file or a folder, walked recursively, sorted by its path
relative to the source, as S3 lists keys) is linked into the destination. FullyReplicated gives every
instance all of them; ShardedByS3Key gives file i to instance i mod N. SageMaker documents only that
each instance gets about 1/N of the objects; the round robin is how it is done here, so a script must
not count on which file lands where.

Outputs. When every instance has exited with 0, the files each left in an output's source are gathered
under its destination, keeping their paths, as SageMaker uploads every instance's files under one
prefix. Two instances writing the same path is an error, found before anything is copied. An instance
that fails stops the others and fails the job with its error.

Batch transform with instance_count > 1 is a processing job (sdk/transform.py).
"""
import json
import os
import posixpath
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nlpforge.errors import ConfigError, ProcessingJobError
from nlpforge.sdk.contract import JobPaths, host_names, local_instance_type
from nlpforge.sdk.jobs import (check_dict, check_name, now_iso, pid_alive, read_json, script_environment,
                              update_status, write_json)
from nlpforge.settings import check_count, check_writable
from nlpforge.settings import jobs_root as resolve_jobs_root

CONTAINER_BASE = "/opt/ml"
PROCESSING_PATH = "/opt/ml/processing"
DISTRIBUTION_TYPES = ("FullyReplicated", "ShardedByS3Key")
TERMINAL = ("Completed", "Failed", "Stopped")
STOP_GRACE_SECONDS = 30
# SageMaker's Processor arguments that mean nothing on one machine: accepted and recorded.
SAGEMAKER_ONLY_ARGUMENTS = {"role", "image_uri", "volume_size_in_gb", "volume_kms_key", "output_kms_key",
                            "sagemaker_session", "tags", "network_config"}


@dataclass
class ProcessingInput:
    """One input: a local file or folder (source) delivered to every instance at a container path (destination)."""

    source: str
    destination: str | None = None        # default /opt/ml/processing/input/<input_name>
    input_name: str | None = None         # default input-1, input-2, ...
    s3_data_type: str = "S3Prefix"
    s3_input_mode: str = "File"
    s3_data_distribution_type: str = "FullyReplicated"
    s3_compression_type: str = "None"

    def __post_init__(self):
        if self.s3_data_distribution_type not in DISTRIBUTION_TYPES:
            raise ConfigError(f"s3_data_distribution_type must be FullyReplicated or ShardedByS3Key, not "
                              f"{self.s3_data_distribution_type!r}")
        if self.destination is not None:
            container_path(self.destination, "ProcessingInput destination")


@dataclass
class ProcessingOutput:
    """One output: a container path (source) whose files are gathered from every instance into destination."""

    source: str
    destination: str | None = None        # default <job folder>/output/<output_name>
    output_name: str | None = None        # default output-1, output-2, ...
    s3_upload_mode: str = "EndOfJob"

    def __post_init__(self):
        container_path(self.source, "ProcessingOutput source")


def container_path(path: str, what: str) -> str:
    """A container path under /opt/ml/processing/, as SageMaker requires for LocalPath."""
    # '..' would climb out of the instance's folder (its local copy of /opt/ml) into the jobs root or beyond
    text = posixpath.normpath(str(path))  # as the checks for two inputs on one path compare them
    if not str(path).startswith(PROCESSING_PATH + "/") or not text.startswith(PROCESSING_PATH + "/"):
        raise ConfigError(f"{what} {path!r} must be a container path under {PROCESSING_PATH}/ (without '..'), e.g. "
                          f"{PROCESSING_PATH}/input/data")
    return text


def local_path(path: str, instance: Path) -> Path:
    """Where a container path (/opt/ml/...) lives for one instance."""
    return instance / str(path).removeprefix(CONTAINER_BASE).lstrip("/")


def rewrite_argument(argument: str, instance: Path) -> str:
    """A container path (`/opt/ml/...`, or `name=/opt/ml/...`) as the instance's local path; others unchanged."""
    text = str(argument)
    name, equals, value = text.partition("=") if not text.startswith("/") else ("", "", text)
    if value == CONTAINER_BASE or value.startswith(CONTAINER_BASE + "/"):
        return f"{name}{equals}{local_path(value, instance)}"
    return text


def shard(files: list, count: int, index: int, distribution: str) -> list:
    """The files instance `index` (from 0) of `count` receives: all of them, or file i when i mod count == index."""
    return list(files) if distribution == "FullyReplicated" else list(files[index::count])


def source_files(source: Path) -> list[tuple[str, Path]]:
    """(key, file) of every file of a source, sorted by key: the path relative to the source folder, or the
    file's own name."""
    if source.is_file():
        return [(source.name, source)]
    return sorted((p.relative_to(source).as_posix(), p) for p in source.rglob("*") if p.is_file())


def existing_source(source, what: str) -> Path:
    text = str(source)
    if not text.strip():  # Path("") is the working folder, which would be delivered whole
        raise ConfigError(f"{what} {source!r} is blank; give an existing file or folder")
    if text.startswith("s3://"):
        raise ConfigError(f"{what} {text} is an S3 URI; nlpforge runs locally, give a local file or folder")
    path = Path(text.removeprefix("file://")).expanduser()
    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist; give an existing file or folder")
    return path.resolve()


def string_list(value, what: str, example: str) -> list[str]:
    """A command or arguments given as a list (None: an empty one); a lone string would be split into its
    characters, so it is refused with the list form in the message."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"{what} must be a list such as {example}, not {value!r}")
    return list(value)


def check_instances(instance_count, instance_type: str) -> None:
    check_count(instance_count, "instance_count")
    if instance_type not in ("local", "local_gpu") and not str(instance_type).startswith("ml."):
        raise ConfigError(f"instance_type must be local, local_gpu or a SageMaker type such as ml.m5.xlarge, "
                          f"not {instance_type!r}")


@dataclass
class ProcessingJobSpec:
    """What a processing job was asked to do, as run() writes it to job.json."""

    job_name: str
    created: str
    processor: str
    command: list                      # entrypoint (and code) with container paths
    arguments: list
    inputs: list                       # ProcessingInput fields, source resolved, names and destinations set
    outputs: list                      # ProcessingOutput fields, destination resolved, names set
    instance_count: int
    instance_type: str
    environment: dict = field(default_factory=dict)
    max_runtime_in_seconds: int | None = None
    base_job_name: str = ""
    image_uri: str | None = None
    notes: list = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> "ProcessingJobSpec":
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


def job_request(spec: ProcessingJobSpec) -> dict:
    """The job as SageMaker's CreateProcessingJob request names it (local paths in place of S3 URIs): what
    processingjobconfig.json holds and what describe() starts from."""
    return {
        "ProcessingJobName": spec.job_name,
        "AppSpecification": {"ImageUri": spec.image_uri or "local", "ContainerEntrypoint": spec.command,
                             "ContainerArguments": spec.arguments},
        "Environment": spec.environment,
        "ProcessingInputs": [{"InputName": i["input_name"], "S3Input": {
            "S3Uri": i["source"], "LocalPath": i["destination"], "S3DataType": i["s3_data_type"],
            "S3InputMode": i["s3_input_mode"], "S3DataDistributionType": i["s3_data_distribution_type"],
            "S3CompressionType": i["s3_compression_type"]}} for i in spec.inputs],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": o["output_name"], "S3Output": {
            "S3Uri": o["destination"], "LocalPath": o["source"], "S3UploadMode": o["s3_upload_mode"]}}
            for o in spec.outputs]},
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": spec.instance_count,
                                                  "InstanceType": spec.instance_type}},
        "StoppingCondition": {"MaxRuntimeInSeconds": spec.max_runtime_in_seconds},
    }


def processing_root(root=None) -> Path:
    return resolve_jobs_root(root) / "_processing"


def instance_folder(paths: JobPaths, host: str) -> Path:
    """The instance's stand-in for /opt/ml."""
    return paths.root / "hosts" / host


def processing_log(paths: JobPaths) -> Path:
    return paths.root / "logs" / "processing.log"


class ProcessingJob:
    """A job started by `Processor.run`: SageMaker's `processor.latest_job`."""

    def __init__(self, name: str, root=None):
        self.name = self.job_name = name
        self.root = root

    @property
    def paths(self) -> JobPaths:
        paths = JobPaths(processing_root(self.root) / self.name)
        if not paths.spec.exists():
            raise ProcessingJobError(f"no processing job named '{self.name}' under {paths.root.parent}")
        return paths

    def describe(self) -> dict:
        """The job as SageMaker's DescribeProcessingJob shows it (local paths in place of S3 URIs)."""
        paths = self.paths
        spec = ProcessingJobSpec.read(paths.spec)
        status = read_json(paths.status, {}) or {}
        state = status.get("ProcessingJobStatus", "InProgress")
        reason = status.get("FailureReason")
        if state not in TERMINAL and status.get("SupervisorPid") and not pid_alive(status["SupervisorPid"]):
            state, reason = "Failed", reason or "the process running the job exited unexpectedly"
        return {**job_request(spec), "ProcessingJobStatus": state, "FailureReason": reason,
                "ExitMessage": status.get("ExitMessage"), "CreationTime": spec.created,
                "ProcessingStartTime": status.get("ProcessingStartTime"),
                "ProcessingEndTime": status.get("ProcessingEndTime"), "JobFolder": str(paths.root),
                "LogFile": str(processing_log(paths)),
                "HostLogFiles": {host: str(paths.host_log(host)) for host in host_names(spec.instance_count)}}

    def wait(self, logs: bool = False, poll: float = 0.2) -> dict:
        """Wait for the job to end; raise ProcessingJobError if it failed."""
        while True:
            job = self.describe()
            if job["ProcessingJobStatus"] in TERMINAL:
                break
            time.sleep(poll)
        if logs:
            self.logs()
        if job["ProcessingJobStatus"] != "Completed":
            raise ProcessingJobError(f"processing job {self.name} failed: {job['FailureReason']}")
        return job

    def logs(self, emit=print) -> None:
        """Print what every instance printed, each line prefixed [algo-N] when there are several."""
        log = processing_log(self.paths)
        if log.exists():
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
                emit(line)

    def __repr__(self):
        return f"ProcessingJob({self.name!r})"


class Processor:
    """Runs a command (entrypoint) on instance_count local instances as a SageMaker processing job."""

    # Whether an output may go to an input's folder: only for outputs whose names no input has (a batch
    # transform's <file>.out); else the output's files could be written over the user's input.
    outputs_beside_inputs = False

    def __init__(self, role=None, image_uri=None, instance_count: int = 1, instance_type: str = "local",
                 entrypoint: list[str] | None = None, env: dict | None = None, base_job_name: str | None = None,
                 max_runtime_in_seconds: int | None = None, jobs_root=None, **sagemaker_options):
        """SageMaker's Processor arguments; role, image_uri, volumes, tags and the network are recorded only.
        jobs_root is the folder holding the job folders (default $NLPFORGE_JOBS_ROOT or ./jobs)."""
        unknown = sorted(set(sagemaker_options) - SAGEMAKER_ONLY_ARGUMENTS)
        if unknown:
            raise ConfigError(f"unknown {type(self).__name__} argument(s) {', '.join(unknown)}; see "
                              f"help(nlpforge.sdk.{type(self).__name__})")
        check_instances(instance_count, instance_type)
        if max_runtime_in_seconds is not None:
            check_count(max_runtime_in_seconds, "max_runtime_in_seconds")
        if base_job_name is not None and not isinstance(base_job_name, str):
            raise ConfigError(f"base_job_name must be a string such as 'preprocess', not {base_job_name!r}")
        self.role, self.image_uri = role, image_uri
        self.instance_count, self.instance_type = instance_count, instance_type
        self.entrypoint = string_list(entrypoint, "entrypoint", "['python3', 'process.py']") or None
        self.env = dict(check_dict(env, "env", "{'MODE': 'fast'}", strings=True))
        self.base_job_name = base_job_name
        self.max_runtime_in_seconds = max_runtime_in_seconds
        self.jobs_root = resolve_jobs_root(jobs_root)
        self.jobs: list[ProcessingJob] = []
        self.latest_job: ProcessingJob | None = None

    def run(self, inputs=None, outputs=None, arguments=None, wait: bool = True, logs: bool = True,
            job_name: str | None = None, experiment_config=None, kms_key=None) -> None:
        """Run the entrypoint with `arguments` on every instance; with wait, raise ProcessingJobError if it fails."""
        if not self.entrypoint:
            raise ConfigError("Processor needs entrypoint=[...], the command each instance runs "
                              "(or use ScriptProcessor with code=...)")
        self._start(self.entrypoint, inputs, outputs, arguments, wait, logs, job_name)

    def _start(self, command: list[str], inputs, outputs, arguments, wait, logs, job_name, code: Path | None = None,
               default_base: str = "processing") -> None:
        paths = prepare_job(self, command, inputs, outputs, arguments, job_name, code, default_base)
        self.latest_job = ProcessingJob(paths.root.name, self.jobs_root)
        self.jobs.append(self.latest_job)
        if not wait:
            subprocess.Popen([sys.executable, "-m", "nlpforge.sdk.processing", "run", str(paths.root)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
            return
        status = run_processing_job(paths, stream=print if logs else None)
        if status["ProcessingJobStatus"] != "Completed":
            raise ProcessingJobError(f"processing job {paths.root.name} failed: {status['FailureReason']}")

    def describe(self) -> dict:
        """The latest job's DescribeProcessingJob fields."""
        if self.latest_job is None:
            raise ProcessingJobError(f"this {type(self).__name__} has not run a job yet; call run() first")
        return self.latest_job.describe()


class ScriptProcessor(Processor):
    """Runs a script (code) with a command such as ["python3"], as SageMaker's ScriptProcessor: the code is
    delivered as the input named "code" at /opt/ml/processing/input/code/ and run from there."""

    def __init__(self, role=None, image_uri=None, command: list[str] | None = None, instance_count: int = 1,
                 instance_type: str = "local", **settings):
        super().__init__(role=role, image_uri=image_uri, instance_count=instance_count,
                         instance_type=instance_type, **settings)
        self.command = string_list(command, "command", "['python3']") or ["python3"]

    def run(self, code: str, inputs=None, outputs=None, arguments=None, wait: bool = True, logs: bool = True,
            job_name: str | None = None, experiment_config=None, kms_key=None) -> None:
        script = Path(str(code)).expanduser()
        if not script.is_file():
            raise ConfigError(f"code file {code} not found; give the path of the processing script")
        command = [*self.command, f"{PROCESSING_PATH}/input/code/{script.name}"]
        self._start(command, inputs, outputs, arguments, wait, logs, job_name, code=script.resolve(),
                    default_base=script.stem)


def named_inputs(inputs, code: Path | None, paths: JobPaths) -> list[dict]:
    """The inputs as job.json records: source checked and resolved, name and destination filled in."""
    records = []
    for number, given in enumerate(string_list(inputs, "inputs", "[ProcessingInput(...)]"), start=1):
        if not isinstance(given, ProcessingInput):
            raise ConfigError(f"inputs must be ProcessingInput objects, got {given!r}")
        name = given.input_name or f"input-{number}"
        if not isinstance(name, str) or name in (".", "..") or "/" in name or "\\" in name:
            raise ConfigError(f"ProcessingInput input_name {name!r} must be a plain name such as 'data', without "
                              "'/' or '..'")
        source = existing_source(given.source, f"ProcessingInput '{name}' source")
        destination = container_path(given.destination or f"{PROCESSING_PATH}/input/{name}",
                                     "ProcessingInput destination")
        records.append({**asdict(given), "source": str(source), "destination": destination, "input_name": name})
    if code is not None:
        records.append({**asdict(ProcessingInput(str(paths.code), f"{PROCESSING_PATH}/input/code", "code"))})
    names = [r["input_name"] for r in records]
    destinations = [r["destination"] for r in records]
    for values, what in ((names, "input_name"), (destinations, "destination")):
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ConfigError(f"two inputs have the {what} {repeated[0]}; each input needs its own")
    return records


def named_outputs(outputs, paths: JobPaths, inputs: list[dict] = ()) -> list[dict]:
    """The outputs as job.json records; a destination that is blank, or that overlaps an input's source (its
    files would be written over the user's input), is refused."""
    records = []
    for number, given in enumerate(string_list(outputs, "outputs", "[ProcessingOutput(...)]"), start=1):
        if not isinstance(given, ProcessingOutput):
            raise ConfigError(f"outputs must be ProcessingOutput objects, got {given!r}")
        name = output_name(given.output_name, number)
        if isinstance(given.destination, str) and given.destination and not given.destination.strip():
            raise ConfigError(f"ProcessingOutput '{name}' destination {given.destination!r} is blank; give a local "
                              "folder, or leave it out for the job's output folder")
        destination = given.destination or str(paths.output / name)
        if str(destination).startswith("s3://"):
            raise ConfigError(f"ProcessingOutput '{name}' destination {destination} is an S3 URI; give a local folder")
        destination = Path(str(destination).removeprefix("file://")).expanduser().resolve()
        check_writable(destination, f"ProcessingOutput '{name}' destination", folder=True)
        for record in inputs if given.destination else ():  # the default, a new job's folder, holds no input
            source = Path(record["source"])
            if destination == source or destination.is_relative_to(source) or source.is_relative_to(destination):
                raise ConfigError(f"ProcessingOutput '{name}' destination {destination} overlaps ProcessingInput "
                                  f"'{record['input_name']}' source {source}; the output's files would be written "
                                  "among the input's, or over them, so give a folder outside it")
        records.append({**asdict(given), "source": container_path(given.source, "ProcessingOutput source"),
                        "destination": str(destination), "output_name": name})
    sources = [r["source"] for r in records]
    if len(set(sources)) < len(sources):
        raise ConfigError("two outputs have the same source; each output needs its own container path")
    return records


def output_name(name, number: int) -> str:
    """An output's name, default output-<number>. It names a folder under the job's output/ (SageMaker's
    examples use names such as train_data), so it must be one plain folder name: no '/', no '..'."""
    if name is None:
        return f"output-{number}"
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ConfigError(f"ProcessingOutput output_name {name!r} must be a plain name such as 'train_data', "
                          "without '/' or '..'")
    return name


def prepare_job(processor: Processor, command: list[str], inputs, outputs, arguments, job_name: str | None,
                code: Path | None, default_base: str) -> JobPaths:
    """Create the job folder: job.json, each instance's inputs (sharded or replicated) and config files."""
    from nlpforge.sdk.estimator import timestamped_name

    name = check_name(job_name or timestamped_name(processor.base_job_name or default_base), "job name")
    paths = JobPaths(processing_root(processor.jobs_root) / name)
    if paths.spec.exists():
        raise ConfigError(f"a processing job named {name} already exists in {paths.root.parent}; choose another "
                          "job_name")
    arguments = [str(a) for a in string_list(arguments, "arguments", "['--input', '/opt/ml/processing/input']")]
    input_records = named_inputs(inputs, code, paths)
    output_records = named_outputs(outputs, paths, [] if processor.outputs_beside_inputs else input_records)
    paths.root.mkdir(parents=True, exist_ok=True)
    if code is not None:
        paths.code.mkdir(exist_ok=True)
        shutil.copy2(code, paths.code / code.name)
    _, note = local_instance_type(processor.instance_type, 0)
    spec = ProcessingJobSpec(
        job_name=name, created=now_iso(), processor=type(processor).__name__, command=list(command),
        arguments=arguments, inputs=input_records, outputs=output_records, instance_count=processor.instance_count,
        instance_type=processor.instance_type, environment=processor.env,
        max_runtime_in_seconds=processor.max_runtime_in_seconds, base_job_name=processor.base_job_name or "",
        image_uri=processor.image_uri, notes=[note] if note else [])
    hosts = host_names(spec.instance_count)
    for index, host in enumerate(hosts):
        instance = instance_folder(paths, host)
        for record in input_records:
            destination = local_path(record["destination"], instance)
            destination.mkdir(parents=True, exist_ok=True)
            files = source_files(Path(record["source"]))
            for key, file in shard(files, len(hosts), index, record["s3_data_distribution_type"]):
                (destination / key).parent.mkdir(parents=True, exist_ok=True)
                (destination / key).symlink_to(file)
        for record in output_records:
            local_path(record["source"], instance).mkdir(parents=True, exist_ok=True)
        write_config(paths, spec, host)
    paths.log.parent.mkdir(parents=True, exist_ok=True)
    write_json(paths.spec, asdict(spec))
    write_json(paths.status, {"ProcessingJobStatus": "InProgress"})
    return paths


def write_config(paths: JobPaths, spec: ProcessingJobSpec, host: str) -> None:
    """/opt/ml/config/processingjobconfig.json and resourceconfig.json of one instance."""
    hosts = host_names(spec.instance_count)
    config = local_path(f"{CONTAINER_BASE}/config", instance_folder(paths, host))
    config.mkdir(parents=True, exist_ok=True)
    write_json(config / "processingjobconfig.json", job_request(spec))
    write_json(config / "resourceconfig.json", {"current_host": host, "hosts": hosts})


def instance_command(spec: ProcessingJobSpec, instance: Path) -> list[str]:
    """The command and arguments of one instance, container paths rewritten; `python3` is this Python."""
    command = [rewrite_argument(part, instance) for part in [*spec.command, *spec.arguments]]
    if command and command[0] in ("python", "python3"):
        command[0] = sys.executable
    return command


def run_processing_job(paths: JobPaths, stream=None) -> dict:
    """Run every instance at once, gather the outputs; returns the final status dict."""
    from nlpforge.sdk.runner import HostStreams, MetricRecorder, last_traceback, pump_output, terminate

    spec = ProcessingJobSpec.read(paths.spec)
    hosts = host_names(spec.instance_count)
    update_status(paths, ProcessingJobStatus="InProgress", ProcessingStartTime=now_iso(), SupervisorPid=os.getpid())
    processes, pumps = {}, []
    outcome, reason = "Completed", None
    with open(processing_log(paths), "a", encoding="utf-8") as log_handle:
        streams = HostStreams(paths, hosts, log_handle, stream, MetricRecorder(paths, []))
        for line in spec.notes:
            streams.note(line, show=True)
        try:
            for host in hosts:
                instance = instance_folder(paths, host)
                command = instance_command(spec, instance)
                env = script_environment(spec.environment, {"SAGEMAKER_BASE_DIR": str(instance),
                                                            "CURRENT_HOST": host, "PYTHONUNBUFFERED": "1"})
                streams.note(f"{host}: {' '.join(command)}")
                try:
                    processes[host] = subprocess.Popen(command, cwd=instance, env=env, stdout=subprocess.PIPE,
                                                       stderr=subprocess.STDOUT, start_new_session=True)
                except OSError as error:
                    outcome, reason = "Failed", f"cannot start {command[0]!r} on {host}: {error.strerror}"
                    break
                pump = threading.Thread(target=pump_output, args=(processes[host], streams, host), daemon=True)
                pump.start()
                pumps.append(pump)
            if outcome == "Completed":
                outcome, reason = watch(processes, spec, paths, last_traceback)
        except KeyboardInterrupt:
            outcome, reason = "Stopped", "interrupted from the keyboard"
        for process in processes.values():
            if process.poll() is None:
                terminate(process, STOP_GRACE_SECONDS)
        for pump in pumps:
            pump.join(timeout=10)
        if outcome == "Completed":
            try:
                gather_outputs(paths, spec)
            except ProcessingJobError as error:
                outcome, reason = "Failed", error.message
            except OSError as error:  # the destination changed after run() checked it: fail the job, not hang it
                outcome, reason = "Failed", f"cannot gather the outputs: {error}"
        if reason:
            streams.note(f"job {outcome.lower()}: {reason}", show=True)
        streams.close()
    return update_status(paths, ProcessingJobStatus=outcome, FailureReason=reason, ProcessingEndTime=now_iso(),
                         ExitMessage=reason)


def watch(processes: dict, spec: ProcessingJobSpec, paths: JobPaths, last_traceback) -> tuple[str, str | None]:
    """Wait for every instance; the first one to fail (or max_runtime) ends the job."""
    started = time.monotonic()
    while True:
        codes = {host: process.poll() for host, process in processes.items()}
        failed = [host for host, code in codes.items() if code not in (None, 0)]
        if failed:
            host = failed[0]
            _, message = last_traceback(paths.host_log(host))
            message = next((line.strip() for line in reversed(message.splitlines()) if line.strip()), "")
            return "Failed", (f"instance {host} exited with code {codes[host]}"
                              f"{': ' + message if message else ''} (log: {paths.host_log(host)})")
        if all(code == 0 for code in codes.values()):
            return "Completed", None
        limit = spec.max_runtime_in_seconds
        if limit and time.monotonic() - started > limit:
            return "Failed", f"MaxRuntimeExceeded: the job ran longer than max_runtime_in_seconds={limit}"
        time.sleep(0.05)


def gather_outputs(paths: JobPaths, spec: ProcessingJobSpec) -> None:
    """Copy every instance's output files under each output's destination; two instances with one path is an error."""
    hosts = host_names(spec.instance_count)
    for record in spec.outputs:
        owners: dict[str, str] = {}
        plan = []
        for host in hosts:
            for key, file in source_files(local_path(record["source"], instance_folder(paths, host))):
                if key in owners:
                    raise ProcessingJobError(
                        f"output '{record['output_name']}': {owners[key]} and {host} both wrote {key}; each "
                        f"instance must write its own file names (add CURRENT_HOST or the input file's name)")
                owners[key] = host
                plan.append((key, file))
        destination = Path(record["destination"])
        for key, file in plan:
            (destination / key).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, destination / key)


def main(argv: list[str]) -> int:
    """`run FOLDER`: run a prepared job (what run(wait=False) starts)."""
    if argv[:1] == ["run"] and len(argv) == 2:
        paths = JobPaths(Path(argv[1]))
        return 0 if run_processing_job(paths)["ProcessingJobStatus"] == "Completed" else 1
    print("usage: python -m nlpforge.sdk.processing run FOLDER", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
