"""Estimator: SageMaker's `Estimator.fit → deploy → predict`, run on this machine.

    from nlpforge.sdk import PyTorch
    est = PyTorch(entry_point="pytorch-bert.py", source_dir="src", instance_count=2,
                  hyperparameters={"epochs": 20, "batch-size": 64, "learning-rate": 0.1})
    est.fit({"train": "data/train.csv", "test": "data/test.csv"})
    predictor = est.deploy(initial_instance_count=1)
    predictor.predict({"text": "Loved it"})

`fit` prepares a job folder that mirrors /opt/ml (see sdk/contract.py), then runs the script in a
subprocess with SageMaker's training contract (sdk/runner.py). The built-in estimators
(`TextClassifier`, `MaskedLanguageModel`; sdk/builtin.py) run nlpforge's own training through the same
machinery, with no script to write.
"""
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar, Literal

from nlpforge.errors import ConfigError, EndpointError, TrainingJobError
from nlpforge.sdk import contract, remote
from nlpforge.sdk.debugger import rule_specs
from nlpforge.sdk.jobs import (check_bool, check_dict, check_hyperparameters_types, check_name, describe_job,
                               follow_log, name_base, now_iso, stop_job, wait_for_job, write_json)
from nlpforge.sdk.runner import compile_metric_definitions
from nlpforge.settings import Settings, check_writable, setting
from nlpforge.settings import jobs_root as resolve_jobs_root

log = logging.getLogger("nlpforge.sdk")


# Each host is a process and three folders on this machine: beyond a few hundred it is a mistake.
MOST_HOSTS = 256


@dataclass
class JobArguments(Settings):
    """The Estimator arguments that steer a job, with SageMaker's names, checked in one place."""

    argument_names: ClassVar[bool] = True
    instance_count: int = setting(1, f"hosts (algo-1 ... algo-N), one torchrun process each, at most {MOST_HOSTS}",
                                  min=1)
    instance_type: str = setting("local", "local, local_gpu for this machine's GPUs, or a SageMaker ml.* type "
                                          "(run as local, or local_gpu when the type and this machine have GPUs)")
    max_run: int | None = setting(24 * 60 * 60, "seconds the job may run", min=1)
    use_spot_instances: bool = setting(False, "simulate managed spot training")
    max_wait: int | None = setting(None, "seconds a spot job may take, waiting for capacity included", min=1)
    max_retry_attempts: int = setting(0, "times a failed job is run again", min=0)
    spot_capacity_wait: float = setting(0.0, "seconds without spot capacity after an interruption", min=0)
    spot_price_ratio: float = setting(0.3, "price of a spot second as a share of on-demand", min=0.001, max=1)
    input_mode: Literal["File", "Pipe", "FastFile"] = setting("File", "how channels reach the script; Pipe and "
                                                                      "FastFile run as File")
    container_log_level: int = setting(20, "the toolkit's log level (logging.INFO is 20), SM_LOG_LEVEL", min=0)
    spot_interruptions: list[float] | None = setting(None, "seconds into each attempt at which the simulated spot "
                                                           "instance is reclaimed")

    def check(self):
        if self.instance_count > MOST_HOSTS:
            raise ConfigError(f"instance_count must be at most {MOST_HOSTS} (each host is a process and its folders "
                              f"on this machine), not {self.instance_count}")
        if self.spot_interruptions is not None and not self.use_spot_instances:
            raise ConfigError("spot_interruptions needs use_spot_instances=True")
        if any(seconds <= 0 for seconds in self.spot_interruptions or []):
            raise ConfigError(f"spot_interruptions are seconds into each attempt, so each must be positive, not "
                              f"{self.spot_interruptions}; e.g. spot_interruptions=[600]")
        if self.instance_type not in ("local", "local_gpu") and not self.instance_type.startswith("ml."):
            raise ConfigError(f"instance_type must be local, local_gpu or a SageMaker type such as ml.p3.2xlarge, "
                              f"not {self.instance_type!r}")
        if self.max_wait is not None and not self.use_spot_instances:
            raise ConfigError("max_wait applies only with use_spot_instances=True")
        if self.use_spot_instances and self.max_wait is not None and self.max_run and self.max_wait < self.max_run:
            raise ConfigError("max_wait must be at least max_run (SageMaker's rule for spot training)")


# The arguments of SageMaker's EstimatorBase, Framework, Estimator and PyTorch (Python SDK v2) that mean nothing
# on one machine: accepted, so that SageMaker notebooks run unchanged, and recorded in job.json.
SAGEMAKER_ONLY_ARGUMENTS = {
    "role", "sagemaker_session", "image_uri", "framework_version", "py_version", "distribution", "volume_size",
    "volume_kms_key", "output_kms_key", "tags", "subnets", "security_group_ids", "checkpoint_s3_uri", "model_uri",
    "model_channel_name", "code_location", "dependencies", "git_config", "rules", "profiler_config",
    "disable_profiler", "tensorboard_output_config", "enable_sagemaker_metrics", "enable_network_isolation",
    "encrypt_inter_container_traffic", "keep_alive_period_in_seconds", "instance_groups",
    "training_repository_access_mode", "training_repository_credentials_provider_arn", "container_entry_point",
    "container_arguments", "disable_output_compression", "enable_infra_check", "enable_remote_debug",
    "enable_session_tag_chaining", "training_plan", "compiler_config", "training_recipe", "recipe_overrides"}
# SDK v1 names that SDK v2 renamed.
RENAMED_ARGUMENTS = {"train_instance_count": "instance_count", "train_instance_type": "instance_type",
                     "train_max_run": "max_run", "train_use_spot_instances": "use_spot_instances",
                     "train_max_wait": "max_wait", "train_volume_size": "volume_size",
                     "train_volume_kms_key": "volume_kms_key"}
# SageMaker's experiment_config keys: where the job's MLflow run is filed (tracking/runs.py).
EXPERIMENT_KEYS = ("ExperimentName", "TrialName", "TrialComponentDisplayName", "RunName")


def timestamped_name(base: str) -> str:
    """SageMaker's job naming: <base>-YYYY-mm-dd-HH-MM-SS-mmm, within 63 characters."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d-%H-%M-%S-%f")[:-3]
    base = name_base(base)[: 63 - len(stamp) - 1] or "job"
    return f"{base}-{stamp}"


def channel_paths(inputs) -> dict[str, Path]:
    """fit()'s inputs as {channel: existing local path}; a lone path is the 'training' channel."""
    if inputs is None:
        return {}
    if isinstance(inputs, (str, os.PathLike)):
        inputs = {"training": inputs}
    if not isinstance(inputs, dict):
        raise ConfigError("fit() inputs must be a path or a dict of channel name -> path, "
                          "e.g. {'train': 'data/train.csv'}")
    channels = {}
    for name, value in inputs.items():
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"channel name {name!r} must be letters, digits, '-' or '_'")
        text = str(getattr(value, "config", value))
        if not text.strip():  # Path("") is the working folder, which would become the channel
            raise ConfigError(f"channel '{name}': the path {text!r} is blank; give an existing file or folder")
        if text.startswith("s3://"):
            raise ConfigError(f"channel '{name}': {text} is an S3 URI; nlpforge runs locally, give a local path")
        path = Path(text.removeprefix("file://")).expanduser()
        if not path.exists():
            raise ConfigError(f"channel '{name}': {path} does not exist; give an existing file or folder")
        channels[name] = path.resolve()
    return channels


def check_experiment_config(config) -> dict:
    """fit()'s experiment_config: a dict of strings under SageMaker's keys (None: nlpforge's default experiment)."""
    config = check_dict(config, "experiment_config", "{'ExperimentName': 'stars', 'TrialName': 'lr-sweep'}",
                        strings=True)
    unknown = sorted(set(config) - set(EXPERIMENT_KEYS))
    if unknown:
        raise ConfigError(f"experiment_config has unknown key(s) {', '.join(unknown)}; known: "
                          f"{', '.join(EXPERIMENT_KEYS)}")
    return dict(config)


def link_channel(source: Path, target: Path) -> None:
    """input/data/<channel> as a folder: a folder is linked, a single file is linked inside one. What an earlier,
    failed fit under the same job name linked there is replaced, so the channel always holds `source`."""
    if target.is_symlink():
        target.unlink()
    elif target.is_dir():  # a single file's folder, holding only the link made for it
        for item in target.iterdir():
            if item.is_symlink():
                item.unlink()
        target.rmdir()
    if source.is_dir():
        target.symlink_to(source, target_is_directory=True)
    else:
        target.mkdir(parents=True)
        (target / source.name).symlink_to(source)


def copy_code(entry_point: str, source_dir: Path | None, destination: Path) -> None:
    if source_dir is not None:
        shutil.copytree(source_dir, destination, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".venv"))
    else:
        shutil.copy2(entry_point, destination / Path(entry_point).name)


class TrainingJob:
    """A job started by `fit`: SageMaker's `estimator.latest_training_job`."""

    def __init__(self, name: str, root=None):
        self.name = self.job_name = name
        self.root = root

    def describe(self) -> dict:
        return describe_job(self.name, self.root)

    def wait(self, logs: bool = False) -> dict:
        if logs:
            follow_log(self.name, root=self.root)
        return wait_for_job(self.name, self.root)

    def logs(self, follow: bool = True, emit=print, host: str | None = None) -> None:
        follow_log(self.name, emit, self.root, follow=follow, host=host)

    def stop(self) -> str:
        return stop_job(self.name, self.root)

    def rule_job_summary(self) -> list[dict]:
        """Each Debugger rule's status, as SageMaker's DebugRuleEvaluationStatuses: RuleConfigurationName,
        RuleEvaluationStatus (InProgress, NoIssuesFound or IssuesFound), StatusDetails, LastModifiedTime."""
        return self.describe()["DebugRuleEvaluationStatuses"]

    def __repr__(self):
        return f"TrainingJob({self.name!r})"


class Estimator:
    """Runs a script-mode training script as a local SageMaker-style training job."""

    engine_rules: ClassVar[bool] = False  # whether Debugger rules are evaluated (by the training engine)

    def __init__(self, entry_point: str, source_dir: str | None = None, hyperparameters: dict | None = None,
                 instance_count: int = 1, instance_type: str = "local", output_path: str | None = None,
                 checkpoint_local_path: str | None = None, max_run: int = 24 * 60 * 60,
                 use_spot_instances: bool = False, max_wait: int | None = None, max_retry_attempts: int = 0,
                 environment: dict | None = None, metric_definitions: list[dict] | None = None,
                 base_job_name: str | None = None, install_requirements: bool = False,
                 spot_interruptions: list[float] | None = None, spot_capacity_wait: float = 0.0,
                 spot_price_ratio: float = 0.3, jobs_root: str | None = None, tracking: bool = True,
                 input_mode: str = "File", debugger_hook_config=None, container_log_level: int = 20,
                 ssh_hosts: list[str] | None = None, **framework_settings):
        """SageMaker's Estimator arguments. Those that mean nothing on one machine (role, image_uri, subnets, ...)
        are accepted and recorded; `instance_type` may be an `ml.*` type, run here as local or local_gpu;
        `input_mode` Pipe and FastFile run as File; `debugger_hook_config` (a DebuggerHookConfig, a dict with its
        names, or False) becomes input/config/debughookconfig.json, with a default one when it is not given, as
        SageMaker's framework estimators do. The nlpforge additions are:

        install_requirements: pip-install source_dir/requirements.txt before the script runs.
        spot_interruptions: seconds into each attempt at which the spot instance is reclaimed (SIGTERM).
        spot_capacity_wait: seconds to wait for spot capacity before restarting (not billed).
        spot_price_ratio: price of a spot second as a share of on-demand, for BillableTimeInSeconds.
        jobs_root: folder holding the job folders (default $NLPFORGE_JOBS_ROOT or ./jobs).
        tracking: record every job as an MLflow run.
        ssh_hosts: one SSH destination per instance (default $NLPFORGE_SSH_HOSTS, comma-separated): host algo-N
            runs on the N-th, as one torchrun node; see nlpforge.sdk.remote for what each host needs.
        """
        for argument, value in (("entry_point", entry_point), ("source_dir", source_dir), ("output_path", output_path),
                                ("checkpoint_local_path", checkpoint_local_path), ("jobs_root", jobs_root)):
            if not isinstance(value, (str, os.PathLike)) and (value is not None or argument == "entry_point"):
                raise ConfigError(f"{argument} must be a path (a str or pathlib.Path), not {value!r}")
            if argument in ("output_path", "checkpoint_local_path") and isinstance(value, str) and value \
                    and not value.strip():
                # Path("  ") is a folder named by spaces in the working folder, which the job would write into
                raise ConfigError(f"{argument} {value!r} is blank; give the folder to write to, or leave it out")
        entry_point = str(entry_point)
        if output_path is not None and str(output_path).startswith("s3://"):
            raise ConfigError(f"output_path {output_path} is an S3 URI; nlpforge runs locally, give a local folder")
        self.source_dir = Path(source_dir).expanduser().resolve() if source_dir else None
        if self.source_dir is not None and not self.source_dir.is_dir():
            raise ConfigError(f"source_dir {source_dir} is not a folder; give the folder holding the entry point")
        script = (self.source_dir / entry_point) if self.source_dir else Path(entry_point).expanduser()
        # Only source_dir is copied into the job, so a script outside it would not be there when the job runs.
        if self.source_dir is not None and not Path(os.path.normpath(script)).is_relative_to(self.source_dir):
            raise ConfigError(f"entry_point '{entry_point}' is outside source_dir {self.source_dir}; give its path "
                              "inside source_dir, or move it there")
        if not script.is_file():
            where = f" in source_dir {self.source_dir}" if self.source_dir else ""
            raise ConfigError(f"entry_point '{entry_point}' not found{where}; give the path of the training script")
        self.entry_point = entry_point if self.source_dir else str(script.resolve())
        renamed = sorted(set(framework_settings) & set(RENAMED_ARGUMENTS))
        if renamed:
            raise ConfigError(f"{renamed[0]} is SageMaker Python SDK v1's name; use {RENAMED_ARGUMENTS[renamed[0]]}")
        unknown = sorted(set(framework_settings) - SAGEMAKER_ONLY_ARGUMENTS)
        if unknown:
            raise ConfigError(f"unknown Estimator argument(s) {', '.join(unknown)}; see help(nlpforge.sdk.Estimator)")
        arguments = JobArguments(instance_count, instance_type, max_run, use_spot_instances, max_wait,
                                 max_retry_attempts, spot_capacity_wait, spot_price_ratio, input_mode=input_mode,
                                 container_log_level=container_log_level, spot_interruptions=spot_interruptions)
        compile_metric_definitions(metric_definitions)  # a regex that does not compile is refused now
        self._hyperparameters = dict(check_hyperparameters_types(
            check_dict(hyperparameters, "hyperparameters", "{'epochs': 2}")))
        environment = check_dict(environment, "environment", "{'MY_SETTING': '1'}", strings=True)
        check_bool(use_spot_instances, "use_spot_instances")
        check_bool(install_requirements, "install_requirements")
        check_bool(tracking, "tracking")
        if base_job_name is not None and not isinstance(base_job_name, str):
            raise ConfigError(f"base_job_name must be a string such as 'bert-reviews', not {base_job_name!r}")
        self.instance_count, self.instance_type = arguments.instance_count, arguments.instance_type
        self.ssh_hosts = remote.ssh_hosts(ssh_hosts, self.instance_count)
        self.jobs_root = resolve_jobs_root(jobs_root)
        self.output_path = str(Path(output_path).expanduser().resolve()) if output_path else \
            str(self.jobs_root / "_artifacts")
        self.checkpoint_local_path = checkpoint_local_path
        self.max_run, self.use_spot_instances, self.max_wait = arguments.max_run, use_spot_instances, max_wait
        self.max_retry_attempts = arguments.max_retry_attempts
        self.environment = {str(k): str(v) for k, v in environment.items()}
        self.metric_definitions = list(metric_definitions or [])
        self.base_job_name = base_job_name
        self.install_requirements = install_requirements
        self.spot = contract.Spot(arguments.spot_interruptions or [], arguments.spot_capacity_wait,
                                  arguments.spot_price_ratio)
        self.tracking = tracking and os.environ.get("NLPFORGE_TRACKING", "1") not in ("0", "off", "false")
        self.input_mode, self.container_log_level = arguments.input_mode, arguments.container_log_level
        self.debugger_hook_config = debugger_hook_config
        if debugger_hook_config is not False:  # checked now, written by fit
            contract.debug_hook_request(debugger_hook_config or True, self.output_path,
                                        contract.JobPaths(self.jobs_root / "job"))
        self.rules = rule_specs(framework_settings.get("rules"))
        if self.rules and not self.engine_rules:
            log.info("rules %s are recorded, not evaluated: the training engine sees the tensors of nlpforge's "
                     "built-in estimators only, not of a script's own loop", ", ".join(self.rules))
        self.framework_settings = {k: repr(v) for k, v in framework_settings.items()}  # recorded only
        self.latest_training_job: TrainingJob | None = None
        self.tuning_job_name: str | None = None

    # -- hyperparameters -------------------------------------------------------------------------
    def hyperparameters(self) -> dict:
        return dict(self._hyperparameters)

    def set_hyperparameters(self, **values) -> None:
        check_hyperparameters_types(values)
        self.check_hyperparameters({**self._hyperparameters, **values})
        self._hyperparameters.update(values)

    def check_hyperparameters(self, hyperparameters: dict) -> None:
        """Refuse hyperparameters the job cannot run with; a script reads its own, so any are accepted here."""

    def check_job(self, paths: contract.JobPaths, channels: dict[str, Path]) -> None:
        """Refuse, before the job folder is made, channels the job cannot run with; a script reads any."""

    def command_args(self, paths: contract.JobPaths, channels: dict[str, Path]) -> list[str]:
        """What follows the script on its command line: the hyperparameters as `--name value`."""
        return contract.to_cmd_args(self._hyperparameters)

    def default_job_base(self) -> str:
        return self.base_job_name or Path(self.entry_point).stem

    # -- fit -------------------------------------------------------------------------------------
    def prepare_job(self, inputs=None, job_name: str | None = None, experiment_config: dict | None = None) \
            -> contract.JobPaths:
        """Create the job folder with its code, channels, config files and per-host variables."""
        channels = channel_paths(inputs)
        experiment_config = check_experiment_config(experiment_config)
        name = check_name(job_name or timestamped_name(self.default_job_base()), "job name")
        paths = contract.JobPaths(self.jobs_root / name)
        if paths.spec.exists():
            raise ConfigError(f"a job named {name} already exists in {self.jobs_root}; choose another job_name")
        # Everything the job writes outside its folder is checked before anything is made.
        check_writable(self.jobs_root, "jobs_root", folder=True)
        check_writable(self.output_path, "output_path", folder=True)
        if self.checkpoint_local_path:
            check_writable(self.checkpoint_local_path, "checkpoint_local_path", folder=True)
        self.check_job(paths, channels)
        gpus = contract.count_gpus() if self.instance_type != "local" else 0
        local_type, mapping = contract.local_instance_type(self.instance_type, gpus)
        if local_type == "local_gpu" and gpus == 0:
            raise ConfigError("instance_type='local_gpu' but nvidia-smi finds no GPU; use instance_type='local'")
        gpus = gpus if local_type == "local_gpu" else 0
        notes = [mapping] if mapping else []
        if self.input_mode != "File":
            notes.append(f"input_mode {self.input_mode} runs as File: each channel is a folder of files under "
                         "input/data/<channel>, and inputdataconfig.json says File")
        hosts = contract.host_names(self.instance_count)
        paths.create(hosts)
        debug_hook = None if self.debugger_hook_config is False else \
            contract.debug_hook_request(self.debugger_hook_config or True, self.output_path, paths)
        copy_code(self.entry_point, self.source_dir, paths.code)
        for channel, source in channels.items():
            link_channel(source, paths.channel(channel))
        entry = Path(self.entry_point).name if self.source_dir is None else self.entry_point
        checkpoint_dir = Path(self.checkpoint_local_path).expanduser().resolve() if self.checkpoint_local_path \
            else paths.checkpoints
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        contract.write_input_config(paths, job_name=name, entry_point=entry, hyperparameters=self._hyperparameters,
                                    channels=sorted(channels), hosts=hosts, instance_type=self.instance_type,
                                    log_level=self.container_log_level, debug_hook=debug_hook)
        paths.host_environments.mkdir(parents=True, exist_ok=True)
        cpus = os.cpu_count() or 1
        for host in hosts:
            env = contract.training_environment(
                paths, job_name=name, entry_point=entry, hyperparameters=self._hyperparameters,
                channels=sorted(channels), hosts=hosts, current_host=host, instance_type=self.instance_type,
                num_gpus=gpus, num_cpus=cpus, distributed=self.instance_count > 1,
                log_level=self.container_log_level)
            write_json(paths.host_environments / f"{host}.json",
                       contract.environment_variables(env, checkpoint_dir, paths, debug_hook=debug_hook is not None))
        spec = contract.JobSpec(
            job_name=name, created=now_iso(), estimator=type(self).__name__, entry_point=entry,
            interpreter=[sys.executable], command_args=self.command_args(paths, channels),
            hyperparameters=self._hyperparameters, channels={k: str(v) for k, v in channels.items()},
            instance_count=self.instance_count, instance_type=self.instance_type, output_path=self.output_path,
            checkpoint_dir=str(checkpoint_dir), max_run=self.max_run, use_spot_instances=self.use_spot_instances,
            max_wait=self.max_wait, max_retry_attempts=self.max_retry_attempts, spot=self.spot,
            environment=self.environment, metric_definitions=self.metric_definitions,
            install_requirements=self.install_requirements, base_job_name=self.default_job_base(),
            tuning_job_name=self.tuning_job_name, experiment=experiment_config, tracking=self.tracking,
            framework_settings=self.framework_settings, input_mode=self.input_mode, local_instance_type=local_type,
            debug_hook_config=debug_hook, notes=notes, ssh_hosts=self.ssh_hosts)
        write_json(paths.spec, spec.to_dict())
        write_json(paths.status, {"TrainingJobStatus": "InProgress", "SecondaryStatus": "Starting"})
        return paths

    def fit(self, inputs=None, wait: bool = True, logs: bool = True, job_name: str | None = None,
            experiment_config: dict | None = None, on_metric=None) -> None:
        """Run a training job; with wait, stream its log and raise TrainingJobError if it fails."""
        paths = self.prepare_job(inputs, job_name, experiment_config)
        self.latest_training_job = TrainingJob(paths.root.name, self.jobs_root)
        if not wait:
            import subprocess

            subprocess.Popen([sys.executable, "-m", "nlpforge.sdk.runner", str(paths.root)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
            return
        from nlpforge.sdk.runner import run_job

        status = run_job(paths, stream=print if logs else None, on_metric=on_metric)
        if status["TrainingJobStatus"] == "Failed":
            raise TrainingJobError(f"training job {paths.root.name} failed: {status['FailureReason']} "
                                   f"(log: {paths.log})")
        if logs and self.use_spot_instances:
            self.print_spot_savings(status)

    @staticmethod
    def print_spot_savings(status: dict) -> None:
        training, billable = status["TrainingTimeInSeconds"], status["BillableTimeInSeconds"]
        print(f"Training seconds: {training}\nBillable seconds: {billable}\n"
              f"Managed Spot Training savings: {(1 - billable / training) * 100:.1f}%")

    def _job(self) -> TrainingJob:
        if self.latest_training_job is None:
            raise TrainingJobError("this estimator has not run a job yet; call fit() first, or attach() to one")
        return self.latest_training_job

    def logs(self, follow: bool = True, host: str | None = None) -> None:
        """Print the latest job's log (following it while it runs), like SageMaker's `estimator.logs()`: every
        host's lines, prefixed `[algo-N]` when there are several, or one host's (host="algo-2")."""
        self._job().logs(follow=follow, host=host)

    @property
    def model_data(self) -> str:
        """The latest job's model.tar.gz."""
        job = self._job().describe()
        if job["TrainingJobStatus"] != "Completed":
            raise TrainingJobError(f"job {job['TrainingJobName']} is {job['TrainingJobStatus']}; it has no model")
        return job["ModelArtifacts"]["S3ModelArtifacts"]

    @property
    def model_dir(self) -> Path:
        """The latest completed job's model folder (SM_MODEL_DIR), what deploy() serves."""
        self.model_data  # noqa: B018 (raises when there is no completed job)
        return contract.JobPaths(self.jobs_root / self._job().name).model

    @classmethod
    def attach(cls, training_job_name: str, jobs_root: str | None = None) -> "Estimator":
        """An estimator for an existing job, as SageMaker's `Estimator.attach`: a job of a built-in estimator
        attaches as that estimator (TextClassifier, ...), whichever class attach is called on."""
        root = resolve_jobs_root(jobs_root)
        describe_job(training_job_name, root)  # a clear error if it does not exist
        spec = contract.JobSpec.read(root / training_job_name / "job.json")
        from nlpforge.sdk.builtin import BuiltinEstimator

        builtin = {c.__name__: c for c in BuiltinEstimator.__subclasses__()}.get(spec.estimator)
        if issubclass(cls, BuiltinEstimator) and builtin is not cls:
            raise TrainingJobError(f"job {training_job_name} was run by {spec.estimator}, not {cls.__name__}; attach "
                                   f"it with {(builtin or Estimator).__name__}.attach")
        settings = dict(hyperparameters=spec.hyperparameters, instance_count=spec.instance_count,
                        instance_type=spec.instance_type, output_path=spec.output_path,
                        metric_definitions=spec.metric_definitions, jobs_root=str(root), tracking=spec.tracking)
        if builtin is not None:
            estimator = builtin(**settings)
        else:
            estimator = cls.__new__(cls)
            Estimator.__init__(estimator, entry_point=str(root / training_job_name / "code" / spec.entry_point),
                               **settings)
        estimator.latest_training_job = TrainingJob(training_job_name, root)
        return estimator

    # -- deploy and batch transform (sdk/predictor.py) ------------------------------------------
    def deploy(self, initial_instance_count: int = 1, instance_type: str = "local", endpoint_name: str | None = None,
               serializer=None, deserializer=None, entry_point: str | None = None, source_dir: str | None = None,
               **server_settings):
        """Register the latest model with this jobs root's model server (started if none of its own runs); returns a
        Predictor. A script-mode model (model.pth, ...) is served with its inference script, as SageMaker's
        PyTorch.deploy(entry_point=...) does: `entry_point` is looked up in `source_dir`, else in the estimator's
        source_dir, else taken as a path. `server_settings` are deploy_model's (ports, ...) or SageMaker's
        other deploy arguments."""
        from nlpforge.sdk.predictor import deploy_model

        if entry_point is not None and source_dir is None and self.source_dir is not None \
                and not Path(entry_point).is_absolute() and (self.source_dir / entry_point).is_file():
            source_dir = str(self.source_dir)
        return deploy_model(self.model_dir, endpoint_name or self._job().name, initial_instance_count,
                            instance_type=instance_type, serializer=serializer, deserializer=deserializer,
                            jobs_root=self.jobs_root, training_job_name=self._job().name, tracking=self.tracking,
                            entry_point=entry_point, source_dir=source_dir, **server_settings)

    def transformer(self, instance_count: int = 1, instance_type: str = "local", output_path: str | None = None,
                    strategy: str = "MultiRecord", assemble_with: str = "Line", accept: str = "application/jsonlines"):
        """A batch Transformer for the latest model; with instance_count > 1 the input files are sharded between
        instances that run at once (sdk/transform.py)."""
        from nlpforge.sdk.transform import Transformer

        # SageMaker's choices: either strategy gives one prediction a row here, and the rows are always lines
        for argument, value, choices in (("strategy", strategy, ("MultiRecord", "SingleRecord", None)),
                                         ("assemble_with", assemble_with, ("Line", "None", None))):
            if value not in choices:
                raise EndpointError(f"{argument} must be one of {', '.join(map(repr, choices))}, not {value!r}")
        return Transformer(self.model_dir, output_path=output_path, accept=accept,
                           training_job_name=self._job().name, instance_count=instance_count,
                           instance_type=instance_type, jobs_root=self.jobs_root)


class PyTorch(Estimator):
    """SageMaker's `sagemaker.pytorch.PyTorch`: the same Estimator, so a notebook's call runs as written.

        PyTorch(entry_point="train.py", source_dir="src", role=role, instance_count=2,
                instance_type="ml.p3.2xlarge", py_version="py3", framework_version="1.6.0",
                hyperparameters={"epochs": 1}, input_mode="File", debugger_hook_config=hook_config,
                metric_definitions=[{"Name": "validation:accuracy", "Regex": "val_acc: ([0-9.]+)"}])

    framework_version, py_version, image_uri and distribution are recorded: the script runs with this
    environment's Python and torch, and several hosts always run under torchrun.
    """
