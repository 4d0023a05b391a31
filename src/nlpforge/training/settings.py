"""A training job's settings, grouped by what they steer, one typed field each with a one-line help.

    job = job_class("text-classification").of(train="train.csv", output="models/stars", epochs=2)
    job.data.train, job.model.max_seq_length, job.train.learning_rate, job.checkpoint.resume

A job is the task's own settings (`data`: files, columns, head options) plus the engine's groups:
`model` (base and shape), `train` (optimisation), `eval` (validation and early stopping),
`checkpoint`, `distributed`, `runtime` and `debugger` (rules watching the tensors). The CLI flags
are the fields' own names (`--learning-rate`), and a JSON/YAML file may give them flat or grouped.
"""
import functools
import os
from dataclasses import dataclass, field, fields, make_dataclass
from typing import ClassVar, Literal

from nlpforge import tasks
from nlpforge.errors import ConfigError
from nlpforge.settings import MAX_SEED, Settings, group, setting
from nlpforge.training import debugger


@dataclass
class ModelArgs(Settings):
    """Which encoder, with which tokenizer, at which length."""

    model: str = setting("minilm-l6", "base model: an alias (mpnet-base, minilm-l6, bert-tiny, ...) or a folder "
                                      "(default: mpnet-base for text classification, minilm-l6 for the other tasks)")
    tokenizer: str | None = setting(None, "tokenizer folder, for from-scratch models (default: MiniLM's)")
    max_seq_length: int = setting(128, "tokens per example; longer ones are truncated", min=8, max=8192)
    dropout: float | None = setting(None, "dropout probability in the encoder (default: the base model's)",
                                    min=0, max=0.99)
    freeze_layers: int | None = setting(0, "freeze the embeddings and the lowest N encoder layers: no gradient, no "
                                            "dropout, and their output computed once per text (freeze_bert_layer; "
                                            "none given: all but the top 4 layers of a pretrained base deeper than "
                                            "6, none of a shallower one)", min=0)


@dataclass
class TrainArgs(Settings):
    """How the weights are optimised."""

    epochs: int = setting(3, "passes over the training data", min=1)
    learning_rate: float = setting(5e-5, "peak learning rate of AdamW")
    batch_size: int = setting(32, "training examples per optimizer step (before accumulation)", min=1)
    warmup_ratio: float = setting(0.1, "share of steps spent warming the learning rate up from 0", min=0, max=0.999)
    weight_decay: float = setting(0.01, "AdamW weight decay (not applied to biases and LayerNorm)", min=0)
    lr_schedule: Literal["linear", "cosine", "constant"] = setting("linear", "learning-rate decay after warmup")
    layer_lr_decay: float = setting(1.0, "layer-wise learning-rate decay: each encoder layer learns at this times "
                                         "the rate of the one above, the head at the full rate (1: off)",
                                    min=0.01, max=1.0)
    gradient_accumulation: int = setting(1, "batches whose gradients are summed per optimizer step", min=1)
    max_grad_norm: float = setting(1.0, "clip gradients to this global norm (0 turns clipping off)", min=0)
    max_steps: int = setting(0, "stop after this many optimizer steps (0: run every epoch)", min=0)
    average_from: float | None = setting(None, "average the trained weights over every optimizer step from this "
                                               "share of the run on (stochastic weight averaging, e.g. 0.5: the "
                                               "second half); epochs are evaluated, and the model saved, with the "
                                               "average (default: off)", min=0, max=0.999)
    seed: int = setting(42, "seed for initialisation, shuffling, splits and masks", min=0, max=MAX_SEED)

    def check(self):
        if self.learning_rate <= 0:
            raise ConfigError(f"learning-rate must be positive, not {self.learning_rate}")


@dataclass
class EvalArgs(Settings):
    """Validation after every epoch."""

    eval_batch_size: int = setting(64, "examples per batch when evaluating", min=1)
    eval_every: int = setting(0, "optimizer steps between extra evaluations within an epoch, logged to metrics "
                                 "(0: only at epoch ends, which pick the best epoch)", min=0)
    early_stopping_patience: int = setting(0, "stop after N epochs without a better validation metric (0: never)",
                                           min=0)


@dataclass
class CheckpointArgs(Settings):
    """Checkpoints of every object a resume needs."""

    checkpoint_dir: str | None = setting(None, "folder for checkpoints, apart from the model (default: "
                                                "OUTPUT.training/checkpoints)")
    checkpoint_every: int = setting(0, "optimizer steps between checkpoints (0: only at epoch ends)", min=0)
    keep_checkpoints: int = setting(2, "how many of the newest checkpoints to keep", min=1)
    resume: str | None = setting(None, "auto (newest checkpoint in --checkpoint-dir, if any) or a checkpoint path")


@dataclass
class DistributedArgs(Settings):
    """Data parallelism over processes and machines (torchrun)."""

    nproc: int = setting(1, "processes on this machine for data parallelism (launched through torchrun)", min=1,
                         max=1024)
    nnodes: int = setting(1, "machines taking part in data parallelism", min=1, max=4096)
    node_rank: int = setting(0, "this machine's index among --nnodes", min=0)
    master_addr: str = setting("127.0.0.1", "address of the rank-0 machine")
    master_port: int = setting(29500, "port of the rank-0 machine", min=1, max=65535)
    max_restarts: int = setting(0, "times torchrun restarts every process after one fails; each restart resumes "
                                   "from the newest checkpoint", min=0)

    def check(self):
        if self.node_rank >= self.nnodes:
            raise ConfigError(f"node-rank must be in [0, nnodes), not {self.node_rank} with --nnodes {self.nnodes}")
        if not self.master_addr.strip():  # torchrun would listen on every interface
            raise ConfigError("master-addr is empty; give the rank-0 machine's address, e.g. 127.0.0.1 for one "
                              "machine")

    @property
    def launch(self) -> bool:
        return self.nproc > 1 or self.nnodes > 1 or self.max_restarts > 0


@dataclass
class RuntimeArgs(Settings):
    """Where and how the job runs."""

    precision: Literal["fp32", "bf16", "fp16", "auto"] = setting(
        "fp32", "fp32, bf16 (autocast; CPU or CUDA), fp16 (CUDA, grad scaler) or auto (measured)")
    device: str = setting("auto", "cpu, cuda, cuda:N or auto (CUDA when present)")
    threads: int | None = setting(None, "CPU threads for torch (default: all cores)", min=1,
                                  max=max(256, os.cpu_count() or 1))  # no more than a machine could have
    num_workers: int = setting(0, "DataLoader worker processes that prepare batches on the fly", min=0, max=64)
    deterministic: bool = setting(False, "use only deterministic kernels (bit-exact resume on CPU holds without it)")
    compile: bool = setting(False, "compile the model for training with torch.compile (inductor, dynamic shapes): "
                                   "minutes of compiling before the first step")
    log_every: int = setting(10, "optimizer steps between lines in metrics.jsonl and TensorBoard (in the model folder)",
                             min=0)
    progress: bool = setting(True, "show a progress bar")


@dataclass
class DebuggerArgs(Settings):
    """SageMaker Debugger's built-in rules, evaluated on the run's own tensors (nlpforge.training.debugger)."""

    rules: list[str] = setting([], "rules to evaluate, e.g. LossNotDecreasing,VanishingGradient:threshold=1e-6 "
                                   "(known: " + ", ".join(debugger.RULES) + ")")
    rules_action: Literal["log", "stop"] = setting("log", "when a rule finds an issue: log it, or stop training "
                                                          "after a checkpoint")
    rules_interval: int = setting(10, "optimizer steps between the tensor summaries the rules read", min=1)

    def check(self):
        debugger.parse_rules(self.rules)


@dataclass
class TrainJob(Settings):
    """Base of every task's job settings; `job_class(task)` builds the fields."""

    task: ClassVar[str] = ""


ENGINE_GROUPS = (("model", ModelArgs), ("train", TrainArgs), ("eval", EvalArgs), ("checkpoint", CheckpointArgs),
                 ("distributed", DistributedArgs), ("runtime", RuntimeArgs), ("debugger", DebuggerArgs))


def with_defaults(cls: type, defaults: dict) -> type:
    """`cls` with the defaults of some of its fields replaced (a task's own recipe); the same class when
    none of them is its."""
    own = [f for f in fields(cls) if f.name in defaults]
    if not own:
        return cls
    changed = [(f.name, f.type, field(default=defaults[f.name], metadata=f.metadata)) for f in own]
    return make_dataclass(cls.__name__, changed, bases=(cls,), namespace={"__doc__": cls.__doc__,
                                                                          "__module__": cls.__module__})


@functools.cache
def job_class(task_name: str) -> type:
    """The settings class of `nlpforge train <task_name>`: the output folder (and whether it may be
    replaced), the task's own `data` group, then the engine's groups, with the task's own defaults
    (`Task.defaults`) where it has them."""
    task = tasks.get(task_name)
    known = {f.name for _, cls in ENGINE_GROUPS for f in fields(cls)}
    unknown = sorted(set(task.defaults) - known)
    if unknown:
        raise ConfigError(f"{task_name}: defaults for unknown engine setting(s) {', '.join(unknown)}")
    name = "".join(part.title() for part in task_name.split("-")) + "Job"
    field_list = [("output", str, setting("", "folder to write the model artifact to", required=True)),
                  ("overwrite", bool, setting(False, "replace the model in a non-empty --output folder (the old "
                                                     "one stays until the new one is complete)")),
                  ("data", task.settings, group(task.settings)),
                  *((name, cls, group(cls)) for name, cls in
                    ((name, with_defaults(cls, task.defaults)) for name, cls in ENGINE_GROUPS))]
    return make_dataclass(name, field_list, bases=(TrainJob,),
                          namespace={"task": task_name, "__doc__": task.summary, "__module__": __name__})
