"""Settings for fine-tuning, one typed field each with a one-line help.

The CLI builds its flags from these fields (`--learning-rate`, `--freeze-layers`, ...), and a
JSON or YAML file given with `--config` can set any of them; unknown keys are errors.

    config = TextClassificationConfig(train="train.csv", output="models/stars", epochs=2)
"""
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from nlpforge.errors import ConfigError


def setting(default, help: str, **kwargs):
    """A dataclass field with its one-line help text."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class TextClassificationConfig:
    """Fine-tune a BERT-family encoder with a classification head."""

    train: str = setting("", "training data file (.csv, .tsv, .jsonl, .parquet)", required=True)
    output: str = setting("", "folder to write the model artifact to", required=True)
    validation: str | None = setting(None, "validation file; without one, a stratified split of --train")
    text_column: list[str] = setting(["text"], "text column; give twice for text pairs")
    label_column: str = setting("label", "label column (ints or strings)")
    model: str = setting("minilm-l6", "base model: an alias (minilm-l6, bert-tiny, ...) or a folder")
    tokenizer: str | None = setting(None, "tokenizer folder, for from-scratch models (default: MiniLM's)")
    epochs: int = setting(3, "passes over the training data")
    learning_rate: float = setting(5e-5, "peak learning rate of AdamW")
    batch_size: int = setting(32, "training examples per optimizer step (before accumulation)")
    eval_batch_size: int = setting(64, "examples per batch when evaluating")
    max_seq_length: int = setting(128, "tokens per example; longer ones are truncated")
    warmup_ratio: float = setting(0.1, "share of steps spent warming the learning rate up from 0")
    weight_decay: float = setting(0.01, "AdamW weight decay (not applied to biases and LayerNorm)")
    lr_schedule: str = setting("linear", "learning-rate decay after warmup: linear, cosine or constant")
    gradient_accumulation: int = setting(1, "batches whose gradients are summed per optimizer step")
    max_grad_norm: float = setting(1.0, "clip gradients to this global norm (0 turns clipping off)")
    dropout: float | None = setting(None, "dropout probability in the encoder (default: the base model's)")
    freeze_layers: int = setting(0, "freeze the embeddings and the lowest N encoder layers (freeze_bert_layer)")
    class_weights: str = setting("none", "loss weights per class: none or balanced")
    metric_for_best: str = setting("macro_f1", "validation metric that picks the best epoch: macro_f1 or accuracy")
    validation_fraction: float = setting(0.1, "share of --train held out when no --validation is given")
    data_loading: str = setting("auto", "memory, lazy (memory-mapped Arrow, tokenized on the fly) or auto (lazy above 256 MB)")
    max_steps: int = setting(0, "stop after this many optimizer steps (0: run every epoch)")
    max_train_rows: int | None = setting(None, "use only this many training rows (a stratified sample)")
    early_stopping_patience: int = setting(0, "stop after N epochs without a better validation metric (0: never)")
    test: str | None = setting(None, "test file, evaluated once with the best weights at the end")
    seed: int = setting(42, "seed for initialisation, shuffling and splits")
    precision: str = setting("fp32", "fp32, bf16 (autocast; CPU or CUDA), fp16 (CUDA, grad scaler) or auto (measured)")
    device: str = setting("auto", "cpu, cuda, cuda:N or auto (CUDA when present)")
    nproc: int = setting(1, "processes on this machine for data parallelism (launched through torchrun)")
    nnodes: int = setting(1, "machines taking part in data parallelism")
    node_rank: int = setting(0, "this machine's index among --nnodes")
    master_addr: str = setting("127.0.0.1", "address of the rank-0 machine")
    master_port: int = setting(29500, "port of the rank-0 machine")
    checkpoint_dir: str | None = setting(None, "folder for checkpoints (default: OUTPUT/checkpoints)")
    checkpoint_every: int = setting(0, "optimizer steps between checkpoints (0: only at epoch ends)")
    keep_checkpoints: int = setting(2, "how many of the newest checkpoints to keep")
    resume: str | None = setting(None, "auto (newest checkpoint in --checkpoint-dir, if any) or a checkpoint path")
    log_every: int = setting(10, "optimizer steps between lines in OUTPUT/metrics.jsonl and TensorBoard")
    num_workers: int = setting(0, "DataLoader worker processes that tokenize batches on the fly")
    deterministic: bool = setting(False, "use only deterministic kernels (bit-exact resume on CPU holds without it)")
    threads: int | None = setting(None, "CPU threads for torch (default: all cores)")
    progress: bool = setting(True, "show a progress bar")

    def __post_init__(self):
        self.validate()

    def validate(self):
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.learning_rate > 0, "learning-rate must be positive"),
            (self.batch_size >= 1, "batch-size must be at least 1"),
            (self.eval_batch_size >= 1, "eval-batch-size must be at least 1"),
            (8 <= self.max_seq_length <= 8192, "max-seq-length must be between 8 and 8192"),
            (0 <= self.warmup_ratio < 1, "warmup-ratio must be in [0, 1)"),
            (self.weight_decay >= 0, "weight-decay must be >= 0"),
            (self.lr_schedule in ("linear", "cosine", "constant"), "lr-schedule must be linear, cosine or constant"),
            (self.gradient_accumulation >= 1, "gradient-accumulation must be at least 1"),
            (self.max_grad_norm >= 0, "max-grad-norm must be >= 0"),
            (self.freeze_layers >= 0, "freeze-layers must be >= 0"),
            (self.class_weights in ("none", "balanced"), "class-weights must be none or balanced"),
            (self.metric_for_best in ("macro_f1", "accuracy"), "metric-for-best must be macro_f1 or accuracy"),
            (0 < self.validation_fraction < 1, "validation-fraction must be in (0, 1)"),
            (self.max_train_rows is None or self.max_train_rows >= 2, "max-train-rows must be at least 2"),
            (self.threads is None or self.threads >= 1, "threads must be at least 1"),
            (bool(self.text_column), "give at least one --text-column"),
            (self.dropout is None or 0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.data_loading in ("auto", "memory", "lazy"), "data-loading must be auto, memory or lazy"),
            (self.max_steps >= 0, "max-steps must be >= 0"),
            (self.early_stopping_patience >= 0, "early-stopping-patience must be >= 0"),
            (self.precision in ("fp32", "bf16", "fp16", "auto"), "precision must be fp32, bf16, fp16 or auto"),
            (self.nproc >= 1 and self.nnodes >= 1, "nproc and nnodes must be at least 1"),
            (0 <= self.node_rank < self.nnodes, "node-rank must be in [0, nnodes)"),
            (self.checkpoint_every >= 0, "checkpoint-every must be >= 0"),
            (self.keep_checkpoints >= 1, "keep-checkpoints must be at least 1"),
            (self.log_every >= 0, "log-every must be >= 0"),
            (self.num_workers >= 0, "num-workers must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict:
        return asdict(self)


def load_config_file(path, config_class) -> dict:
    """Read settings from JSON or YAML; keys may use dashes or underscores. Unknown keys are errors."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except ImportError:
        raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or use JSON") from None
    except Exception as error:  # both parsers raise their own error types
        raise ConfigError(f"{path}: not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'}: "
                          f"{str(error).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of setting names to values")
    known = {f.name for f in fields(config_class)}
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return values


def required_fields(config_class) -> list[str]:
    return [f.name for f in fields(config_class) if f.metadata.get("required")]


def defaults(config_class) -> dict:
    out = {}
    for f in fields(config_class):
        out[f.name] = f.default_factory() if f.default_factory is not MISSING else f.default
    return out
