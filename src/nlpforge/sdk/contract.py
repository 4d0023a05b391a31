"""SageMaker's training contract for a local job folder: the folder layout, the SM_* variables, the arguments.

A job folder mirrors `/opt/ml` on a SageMaker training instance:

    <jobs root>/<job name>/
      code/                     the user's source_dir (or entry point), the script's working directory
      input/config/             hyperparameters.json, inputdataconfig.json, resourceconfig.json
      input/data/<channel>/     one folder per channel given to fit()
      input/config/debughookconfig.json   the Debugger hook's settings (SMDEBUG_CONFIG_FILE_PATH)
      model/                    SM_MODEL_DIR of algo-1; packed into model.tar.gz when the job completes
      output/data/              SM_OUTPUT_DATA_DIR of algo-1; packed into output.tar.gz
      output/failure            the failure reason, when the job fails
      hosts/algo-N/model/, hosts/algo-N/output/   the same folders of every other host
      checkpoints/              the /opt/ml/checkpoints equivalent (unless checkpoint_local_path is given)
      logs/algo-N.log           what each host printed, one stream per host
      logs/training.log         every stream together, each line prefixed `[algo-N]` when there are several hosts
      job.json, status.json     what was asked, and what happened (see sdk/jobs.py)

Each host has its own model and output folders, as each SageMaker instance has its own /opt/ml;
algo-1's (the master's) are the ones packed. SageMaker's `ml.*` instance types run here as
`local` or, when the type has a GPU and this machine has one, `local_gpu`.

The variables and their values follow aws/sagemaker-training-toolkit (`environment.py`,
`mapping.py`): strings pass as they are, everything else as compact JSON; hyperparameters are
also passed as `--name value` arguments, sorted by name. Since `/opt/ml` cannot exist here, the
toolkit's own `SAGEMAKER_BASE_DIR` names the job folder and `SM_CHECKPOINT_DIR` (an nlpforge
addition) names the checkpoint folder.
"""
import json
import shlex
import subprocess
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from nlpforge.errors import ConfigError

INSTANCE_GROUP = "homogeneousCluster"
MASTER_HOST = "algo-1"
INPUT_MODES = ("File", "Pipe", "FastFile")
# ml.* instance families with GPUs (EC2's accelerated-computing P and G types with NVIDIA GPUs).
GPU_INSTANCE_FAMILIES = {"p2", "p3", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "p6-b200", "g4dn", "g5", "g5g",
                         "g6", "g6e", "gr6"}


@dataclass(frozen=True)
class JobPaths:
    """Every path of one job folder."""

    root: Path

    @property
    def code(self) -> Path:
        return self.root / "code"

    @property
    def input(self) -> Path:
        return self.root / "input"

    @property
    def input_config(self) -> Path:
        return self.root / "input" / "config"

    @property
    def input_data(self) -> Path:
        return self.root / "input" / "data"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def output_data(self) -> Path:
        return self.root / "output" / "data"

    @property
    def output_intermediate(self) -> Path:
        return self.root / "output" / "intermediate"

    @property
    def failure(self) -> Path:
        return self.root / "output" / "failure"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def log(self) -> Path:
        return self.root / "logs" / "training.log"

    @property
    def spec(self) -> Path:
        return self.root / "job.json"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def stop_request(self) -> Path:
        return self.root / "stop-requested"

    @property
    def host_environments(self) -> Path:
        return self.root / "input" / "config" / "hosts"

    @property
    def debug_hook_config(self) -> Path:
        return self.input_config / "debughookconfig.json"

    @property
    def rank_logs(self) -> Path:
        """torchrun's per-rank stdout/stderr files of a multi-host job."""
        return self.root / "logs" / "ranks"

    def channel(self, name: str) -> Path:
        return self.input_data / name

    def host_model(self, host: str) -> Path:
        """SM_MODEL_DIR of one host: model/ for algo-1, hosts/<host>/model/ for the others."""
        return self.model if host == MASTER_HOST else self.root / "hosts" / host / "model"

    def host_output(self, host: str) -> Path:
        """SM_OUTPUT_DIR of one host: output/ for algo-1, hosts/<host>/output/ for the others."""
        return self.output if host == MASTER_HOST else self.root / "hosts" / host / "output"

    def host_log(self, host: str) -> Path:
        return self.root / "logs" / f"{host}.log"

    def create(self, hosts: list[str] = (MASTER_HOST,)) -> None:
        for folder in (self.code, self.input_config, self.input_data, self.checkpoints, self.log.parent):
            folder.mkdir(parents=True, exist_ok=True)
        for host in hosts:
            for folder in (self.host_model(host), self.host_output(host) / "data",
                           self.host_output(host) / "intermediate"):
                folder.mkdir(parents=True, exist_ok=True)


@dataclass
class Spot:
    """Managed spot training, simulated: when the instance is reclaimed, how long capacity takes to return,
    and the price of a spot second as a share of on-demand."""

    interruptions: list = field(default_factory=list)   # seconds into each attempt at which SIGTERM arrives
    capacity_wait: float = 0.0
    price_ratio: float = 0.3


@dataclass
class JobSpec:
    """What a training job was asked to do, as `fit` wrote it to job.json; the runner, `describe`, the
    tracking store and `attach` read it back."""

    job_name: str
    created: str
    estimator: str
    entry_point: str
    interpreter: list
    command_args: list
    hyperparameters: dict
    channels: dict                      # channel -> the source path given to fit
    instance_count: int
    instance_type: str
    output_path: str
    checkpoint_dir: str
    max_run: int | None = None
    use_spot_instances: bool = False
    max_wait: int | None = None
    max_retry_attempts: int = 0
    spot: Spot = field(default_factory=Spot)
    environment: dict = field(default_factory=dict)
    metric_definitions: list = field(default_factory=list)
    install_requirements: bool = False
    base_job_name: str = ""
    tuning_job_name: str | None = None
    experiment: dict = field(default_factory=dict)
    tracking: bool = True
    framework_settings: dict = field(default_factory=dict)
    input_mode: str = "File"            # as asked; the data is always delivered as files
    local_instance_type: str = "local"  # how instance_type runs on this machine: local or local_gpu
    debug_hook_config: dict | None = None
    notes: list = field(default_factory=list)  # lines the runner writes to the log before the script starts
    ssh_hosts: list = field(default_factory=list)  # one SSH destination per host; empty: all run here

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def read(cls, path: Path) -> "JobSpec":
        values = json.loads(Path(path).read_text(encoding="utf-8"))
        known = {f.name for f in fields(cls)}
        spec = cls(**{k: v for k, v in values.items() if k in known})
        spec.spot = Spot(**spec.spot) if isinstance(spec.spot, dict) else spec.spot
        return spec


def env_value(value) -> str:
    """The toolkit's `mapping.to_env_vars` value format."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def to_cmd_args(hyperparameters: dict) -> list[str]:
    """The toolkit's `mapping.to_cmd_args`: `--name value` sorted by name, `-x` for one-letter names."""
    args = []
    for key in sorted(hyperparameters):
        name = str(key)
        value = hyperparameters[key]
        if isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in sorted(value.items()))
        args += [f"--{name}" if len(name) > 1 else f"-{name}", "" if value is None else str(value)]
    return args


def serialized_hyperparameters(hyperparameters: dict) -> dict[str, str]:
    """hyperparameters.json as the SageMaker SDK writes it: every value JSON-encoded into a string."""
    return {str(k): json.dumps(v) for k, v in hyperparameters.items()}


def count_gpus() -> int:
    """GPUs visible to the job, found the way the toolkit does (`nvidia-smi --list-gpus`)."""
    try:
        output = subprocess.run(shlex.split("nvidia-smi --list-gpus"), capture_output=True, text=True,
                                timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in output.splitlines() if line.startswith("GPU "))


def host_names(instance_count: int) -> list[str]:
    return [f"algo-{i + 1}" for i in range(instance_count)]


def resource_config(hosts: list[str], current_host: str, instance_type: str) -> dict:
    """resourceconfig.json of one host."""
    return {"current_host": current_host, "current_instance_type": instance_type,
            "current_group_name": INSTANCE_GROUP, "hosts": hosts,
            "instance_groups": [{"instance_group_name": INSTANCE_GROUP, "instance_type": instance_type,
                                 "hosts": hosts}],
            "network_interface_name": "eth0"}


def input_data_config(channels: list[str]) -> dict:
    """inputdataconfig.json: every channel is delivered as files (File mode), whatever input_mode asked."""
    return {name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated",
                   "RecordWrapperType": "None"} for name in channels}


def local_instance_type(instance_type: str, gpus: int) -> tuple[str, str | None]:
    """How an instance type runs here, and the line that says so when it is a SageMaker `ml.*` type."""
    if not instance_type.startswith("ml."):
        return instance_type, None
    family = instance_type.split(".")[1] if instance_type.count(".") >= 2 else ""
    if family in GPU_INSTANCE_FAMILIES and gpus:
        return "local_gpu", f"instance_type {instance_type} runs on this machine as local_gpu ({gpus} GPU(s))"
    why = "no GPU found on this machine" if family in GPU_INSTANCE_FAMILIES else "the type has no GPU"
    return "local", f"instance_type {instance_type} runs on this machine as local (CPU: {why})"


DEBUG_HOOK_FIELDS = {"S3OutputPath": "s3_output_path", "LocalPath": "container_local_output_path",
                     "HookParameters": "hook_parameters", "CollectionConfigurations": "collection_configs"}


def debug_hook_request(config, output_path: str, paths: JobPaths) -> dict:
    """debughookconfig.json as SageMaker writes it from a DebuggerHookConfig (an object with its attributes, or a
    dict with those names or the API's): S3OutputPath, LocalPath, HookParameters, CollectionConfigurations.

    `True` stands for SageMaker's default hook: the estimator's output path, no collections named.
    """
    given = config
    if config is True:
        config = {}
    if hasattr(config, "_to_request_dict"):
        config = config._to_request_dict()
    elif not isinstance(config, dict):
        config = {name: getattr(config, name) for name in DEBUG_HOOK_FIELDS.values() if hasattr(config, name)}
        if not config:
            raise ConfigError(f"debugger_hook_config must be a DebuggerHookConfig, a dict or False, not {given!r}")
    names = {**DEBUG_HOOK_FIELDS, **{v: v for v in DEBUG_HOOK_FIELDS.values()}}
    unknown = sorted(str(k) for k in config if k not in names)
    if unknown:
        raise ConfigError(f"debugger_hook_config has unknown key(s) {', '.join(unknown)}; known: "
                          f"{', '.join(DEBUG_HOOK_FIELDS)} (or {', '.join(DEBUG_HOOK_FIELDS.values())})")
    values = {names[k]: v for k, v in config.items()}
    local = str(values.get("container_local_output_path") or "/opt/ml/output/tensors")
    if local.startswith("/opt/ml/"):  # the container's paths live in the job folder here
        local = str(paths.root / local.removeprefix("/opt/ml/"))
    request = {"S3OutputPath": str(values.get("s3_output_path") or output_path), "LocalPath": local}
    for name, kind in (("hook_parameters", dict), ("collection_configs", (list, tuple))):
        if values.get(name) is not None and not isinstance(values[name], kind):
            raise ConfigError(f"debugger_hook_config {name} must be a {'dict' if kind is dict else 'list'}, "
                              f"not {values[name]!r}")
    if values.get("hook_parameters") is not None:
        request["HookParameters"] = {str(k): str(v) for k, v in values["hook_parameters"].items()}
    if values.get("collection_configs") is not None:
        request["CollectionConfigurations"] = [collection_request(c) for c in values["collection_configs"]]
    return request



def collection_request(collection) -> dict:
    """One CollectionConfig (object with name/parameters, or dict) as {CollectionName, CollectionParameters}."""
    if hasattr(collection, "_to_request_dict"):
        return collection._to_request_dict()
    if isinstance(collection, dict):
        name = collection.get("CollectionName", collection.get("name"))
        parameters = collection.get("CollectionParameters", collection.get("parameters"))
    else:
        name, parameters = getattr(collection, "name", None), getattr(collection, "parameters", None)
    if not name or not (parameters is None or isinstance(parameters, dict)):
        raise ConfigError(f"each debugger collection config needs a name and a dict of parameters, "
                          f"got {collection!r}")
    request = {"CollectionName": str(name)}
    if parameters is not None:
        request["CollectionParameters"] = {str(k): str(v) for k, v in parameters.items()}
    return request


def training_environment(paths: JobPaths, *, job_name: str, entry_point: str, hyperparameters: dict,
                         channels: list[str], hosts: list[str], current_host: str, instance_type: str,
                         num_gpus: int, num_cpus: int, distributed: bool, log_level: int = 20) -> dict:
    """The toolkit's `Environment` as a dict: the value of SM_TRAINING_ENV for one host."""
    framework_params = {"sagemaker_torch_distributed_enabled": True} if distributed else {}
    distribution_groups = [INSTANCE_GROUP] if distributed else []
    resources = resource_config(hosts, current_host, instance_type)
    module_name = entry_point[:-3] if entry_point.endswith(".py") else entry_point
    return {
        "additional_framework_parameters": framework_params,
        "channel_input_dirs": {name: str(paths.channel(name)) for name in channels},
        "current_host": current_host,
        "current_instance_group": INSTANCE_GROUP,
        "current_instance_group_hosts": hosts,
        "current_instance_type": instance_type,
        "distribution_hosts": hosts if distributed else [],
        "distribution_instance_groups": distribution_groups,
        "framework_module": None,
        "hosts": hosts,
        "hyperparameters": hyperparameters,
        "input_config_dir": str(paths.input_config),
        "input_data_config": input_data_config(channels),
        "input_dir": str(paths.input),
        "instance_groups": [INSTANCE_GROUP],
        "instance_groups_dict": {INSTANCE_GROUP: resources["instance_groups"][0]},
        "is_hetero": False,
        "is_master": current_host == hosts[0],
        "is_modelparallel_enabled": None,
        "job_name": job_name,
        "log_level": log_level,
        "master_hostname": hosts[0],
        "model_dir": str(paths.host_model(current_host)),
        "module_dir": str(paths.code),
        "module_name": module_name,
        "network_interface_name": "eth0",
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "output_data_dir": str(paths.host_output(current_host) / "data"),
        "output_dir": str(paths.host_output(current_host)),
        "output_intermediate_dir": str(paths.host_output(current_host) / "intermediate"),
        "resource_config": resources,
        "user_entry_point": entry_point,
    }


def environment_variables(env: dict, checkpoint_dir: Path, paths: JobPaths, debug_hook: bool = False) \
        -> dict[str, str]:
    """The SM_* variables of one host, as the toolkit's `Environment.to_env_vars` builds them."""
    values = {
        "hosts": env["hosts"], "network_interface_name": env["network_interface_name"],
        "hps": env["hyperparameters"], "user_entry_point": env["user_entry_point"],
        "framework_params": env["additional_framework_parameters"], "resource_config": env["resource_config"],
        "input_data_config": env["input_data_config"], "output_data_dir": env["output_data_dir"],
        "channels": sorted(env["channel_input_dirs"]), "current_host": env["current_host"],
        "current_instance_type": env["current_instance_type"],
        "current_instance_group": env["current_instance_group"],
        "current_instance_group_hosts": env["current_instance_group_hosts"],
        "instance_groups": env["instance_groups"], "instance_groups_dict": env["instance_groups_dict"],
        "distribution_instance_groups": env["distribution_instance_groups"], "is_hetero": env["is_hetero"],
        "module_name": env["module_name"], "log_level": env["log_level"],
        "framework_module": env["framework_module"], "input_dir": env["input_dir"],
        "input_config_dir": env["input_config_dir"], "output_dir": env["output_dir"],
        "num_cpus": env["num_cpus"], "num_gpus": env["num_gpus"], "model_dir": env["model_dir"],
        "module_dir": env["module_dir"], "training_env": env, "user_args": to_cmd_args(env["hyperparameters"]),
        "output_intermediate_dir": env["output_intermediate_dir"],
    }
    for name, path in env["channel_input_dirs"].items():
        values[f"channel_{name}"] = path
    for key, value in env["hyperparameters"].items():
        values[f"hp_{key}"] = value
    variables = {f"SM_{str(k).upper()}": env_value(v) for k, v in values.items()}
    variables.update({
        "TRAINING_JOB_NAME": env["job_name"],
        "SAGEMAKER_JOB_NAME": env["job_name"],
        "CURRENT_HOST": env["current_host"],
        "SAGEMAKER_PROGRAM": env["user_entry_point"],
        "SAGEMAKER_SUBMIT_DIRECTORY": env["module_dir"],
        "SAGEMAKER_BASE_DIR": str(paths.root),
        "SM_CHECKPOINT_DIR": str(checkpoint_dir),
    })
    if debug_hook:
        variables["SMDEBUG_CONFIG_FILE_PATH"] = str(paths.debug_hook_config)
    return variables


def write_input_config(paths: JobPaths, *, job_name: str, entry_point: str, hyperparameters: dict,
                       channels: list[str], hosts: list[str], instance_type: str, log_level: int = 20,
                       debug_hook: dict | None = None) -> None:
    """input/config/*.json as SageMaker writes them (resourceconfig.json of the first host)."""
    paths.input_config.mkdir(parents=True, exist_ok=True)
    all_hyperparameters = {**hyperparameters, "sagemaker_program": entry_point,
                           "sagemaker_submit_directory": str(paths.code), "sagemaker_job_name": job_name,
                           "sagemaker_container_log_level": log_level}
    files = {"hyperparameters.json": serialized_hyperparameters(all_hyperparameters),
             "inputdataconfig.json": input_data_config(channels),
             "resourceconfig.json": resource_config(hosts, hosts[0], instance_type)}
    if debug_hook is not None:
        files["debughookconfig.json"] = debug_hook
    for name, value in files.items():
        (paths.input_config / name).write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
