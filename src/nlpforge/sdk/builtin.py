"""The built-in estimators: tasks nlpforge trains itself (`nlpforge train <task>`), run as training jobs
through the Estimator's machinery (sdk/estimator.py) with no script to write.

    from nlpforge.sdk import TextClassifier
    est = TextClassifier(base_model="minilm-l6", hyperparameters={"epochs": 2, "learning-rate": 5e-5})
    est.fit({"train": "train.csv", "validation": "validation.csv"})
"""
import os
from pathlib import Path

from nlpforge.data.formats import is_data_file
from nlpforge.errors import ConfigError, ModelNotFoundError
from nlpforge.models.registry import aliases
from nlpforge.sdk import contract
from nlpforge.sdk.debugger import rule_specs
from nlpforge.sdk.estimator import Estimator
from nlpforge.sdk.jobs import check_dict, check_hyperparameters_types

BUILTIN_LAUNCHER = Path(__file__).with_name("builtin_launcher.py")

# The training engine's scale-out settings (`nlpforge train <task> --help`, group distributed) that the job
# sets from instance_count; given as hyperparameters, they would wait for hosts that never come.
HOST_SETTINGS = {"nnodes", "node_rank", "master_addr", "master_port"}


class BuiltinEstimator(Estimator):
    """A task nlpforge trains itself, run as a training job with no script: the job's settings are a
    file in the job folder (input/config/nlpforge-job.json) that the training entry point reads.

        est = TextClassifier(base_model="minilm-l6", hyperparameters={"epochs": 2, "learning-rate": 5e-5})
        est.fit({"train": "train.csv", "validation": "validation.csv"})

    Hyperparameter names are the task's training settings (`nlpforge train <task> --help`), with
    dashes or underscores; the channels fill the task's data files.
    """

    task = ""
    engine_rules = True

    def __init__(self, base_model: str | None = None, hyperparameters: dict | None = None, **settings):
        from nlpforge import tasks
        from nlpforge.settings import leaf_fields
        from nlpforge.training.settings import job_class

        self.contract = tasks.get(self.task)
        self.job_class = job_class(self.task)
        self.data_channels = self.contract.channels
        owned = {"output", *self.data_channels.values()}  # set by fit from the channels and the job folder
        self.known_settings = {f.name for _, f, _ in leaf_fields(self.job_class)} - owned - HOST_SETTINGS
        # No base_model: the task's own default (`nlpforge train <task> --help`)
        if base_model is not None:  # on SSH hosts the folder is theirs to have, so it is not looked for here
            remote_hosts = settings.get("ssh_hosts") or os.environ.get("NLPFORGE_SSH_HOSTS")
            base_model = check_base_model(base_model, local=not remote_hosts)
        hyperparameters = check_hyperparameters_types(check_dict(hyperparameters, "hyperparameters", "{'epochs': 2}"))
        if base_model is not None and "model" in hyperparameters:  # else the hyperparameter would win unnoticed
            raise ConfigError(f"{type(self).__name__} got the base model twice, as base_model={base_model!r} and as "
                              f"the 'model' hyperparameter {hyperparameters['model']!r}; give it once")
        hyperparameters = {**({"model": base_model} if base_model else {}), **hyperparameters}
        if settings.get("rules"):  # Rule.sagemaker(...) objects become the engine's rules setting
            if "rules" in hyperparameters:
                raise ConfigError(f"{type(self).__name__} got rules twice, as rules= and as the 'rules' "
                                  "hyperparameter; give them once")
            hyperparameters["rules"] = rule_specs(settings["rules"])
        self.check_hyperparameters(hyperparameters)
        settings.setdefault("metric_definitions", [{"Name": name, "Regex": rf"{name} ([0-9.]+)"}
                                                   for name in ("train_loss", *self.contract.metrics)])
        settings.setdefault("base_job_name", self.task)
        super().__init__(entry_point=str(BUILTIN_LAUNCHER), hyperparameters=hyperparameters, **settings)

    def check_hyperparameters(self, hyperparameters: dict) -> None:
        """Names and values are checked when given, not when the job runs."""
        unknown = sorted(str(k) for k in hyperparameters if str(k).replace("-", "_") not in self.known_settings)
        hosts = [name for name in unknown if name.replace("-", "_") in HOST_SETTINGS]
        if hosts:
            raise ConfigError(f"{type(self).__name__} hyperparameter {hosts[0]} is set by the job: instance_count "
                              "sets the hosts (algo-1 ... algo-N), so leave it out and give instance_count=N")
        if unknown:
            raise ConfigError(f"unknown {type(self).__name__} hyperparameter(s) {', '.join(unknown)}; see "
                              f"`nlpforge train {self.task} --help` for the settings")
        self.job_settings(hyperparameters, {}, Path("."))

    def check_job(self, paths: contract.JobPaths, channels: dict[str, Path]) -> None:
        self.job_settings(self._hyperparameters, self.data_settings(paths, channels), paths.model)

    def job_settings(self, hyperparameters: dict, data: dict, model_dir: Path, checkpoint_dir: str | None = None):
        """The job's validated settings: hyperparameters, the channels' files, the job's folders."""
        from nlpforge.settings import from_flat

        values = {**hyperparameters, **data, "output": str(model_dir), "overwrite": True, "progress": False}
        if checkpoint_dir is not None:
            values.update(checkpoint_dir=checkpoint_dir, resume="auto")
        return from_flat(self.job_class, values, where=f"{type(self).__name__} hyperparameters")

    def data_settings(self, paths: contract.JobPaths, channels: dict[str, Path]) -> dict:
        """The task's data settings: each channel's file or folder by its path inside the job folder."""
        data = {}
        if {"train", "training"} <= set(channels):  # one channel by two names: one file would be dropped unnoticed
            raise ConfigError(f"{type(self).__name__}.fit got channels 'train' and 'training', which are the same "
                              "channel; give the training data once, as 'train'")
        for name, source in channels.items():
            channel = "train" if name == "training" else name
            if channel not in self.data_channels:
                raise ConfigError(f"{type(self).__name__} has no channel '{name}'; its channels are "
                                  f"{', '.join(self.data_channels)}")
            setting_name = self.data_channels[channel]
            inside = paths.channel(name)
            data[setting_name] = (channel_file(inside, name, source) if self.contract.channel_is_file(setting_name)
                                  else str(inside))
        if self.data_channels["train"] not in data:
            raise ConfigError(f"{type(self).__name__}.fit needs a 'train' channel, e.g. fit({{'train': "
                              "'train.csv'})")
        return data

    def command_args(self, paths: contract.JobPaths, channels: dict[str, Path]) -> list[str]:
        """The job settings file's path: written here, read by the training entry point inside the job."""
        from nlpforge.training.run import write_job

        checkpoint_dir = str(Path(self.checkpoint_local_path or paths.checkpoints).resolve())
        job = self.job_settings(self._hyperparameters, self.data_settings(paths, channels), paths.model,
                                checkpoint_dir)
        paths.input_config.mkdir(parents=True, exist_ok=True)
        return [str(write_job(job, paths.input_config / "nlpforge-job.json"))]


class TextClassifier(BuiltinEstimator):
    """The flagship task as a built-in estimator: `nlpforge train text-classification` inside a job."""

    task = "text-classification"


class TokenClassifier(BuiltinEstimator):
    """Named entities as a built-in estimator: channels train/validation/test hold CoNLL or JSONL files."""

    task = "token-classification"


class QuestionAnswerer(BuiltinEstimator):
    """Extractive question answering as a built-in estimator: channels hold SQuAD JSON or JSONL files."""

    task = "question-answering"


class MaskedLanguageModel(BuiltinEstimator):
    """BERT pre-training (masked LM + next-sentence prediction) or domain adaptation as a built-in estimator:
    channels `train` (and `validation`) hold the corpus; `model.tar.gz` holds the pre-trained encoder."""

    task = "masked-lm"


def check_base_model(name, local: bool = True) -> str:
    """A base_model as the job should get it: an alias, or a folder as an absolute path (the job runs in its
    own folder). A name that is neither is refused now; nothing is loaded (an alias may unpack its weights in
    the job). With `local` False (the job runs on other hosts), only a non-string is refused."""
    if isinstance(name, str) and not name.strip():  # Path("") is the working folder, which is no model
        raise ModelNotFoundError(f"base_model {name!r} is blank; give one of {', '.join(aliases())}, or a model "
                                 "folder, or leave it out for the task's default")
    if isinstance(name, str) and (not local or name in aliases()):
        return name
    if isinstance(name, str) and Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    raise ModelNotFoundError(f"base_model {name!r}: not an alias and not a folder; give one of "
                             f"{', '.join(aliases())}, or a model folder")


def channel_file(inside: Path, channel: str, source: Path) -> str:
    """The one data file of a channel, by its path inside the job folder."""
    if source.is_file():
        return str(inside / source.name)
    files = sorted(p for p in source.iterdir() if is_data_file(p))
    if len(files) != 1:
        raise ConfigError(f"channel '{channel}': {source} holds {len(files)} data files; the built-in task "
                          "reads exactly one (give the file itself)")
    return str(inside / files[0].name)
