"""The flagship task: fine-tune a BERT-family encoder to classify text (e.g. 1-5 star ratings).

    from nlpforge.training.config import TextClassificationConfig
    from nlpforge.training.text_classification import train_text_classification
    result = train_text_classification(TextClassificationConfig(
        train="train.csv", validation="validation.csv", text_column=["review_body"],
        label_column="star_rating", model="minilm-l6", output="models/stars"))

CLI: `nlpforge train text-classification --train ... --output ...` (add `--nproc 2` for two
data-parallel processes, `--resume auto` to continue an interrupted run).
"""
import functools
import json
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from nlpforge.data.batching import encode, length_grouped_batches, pad_batch, sorted_batches
from nlpforge.data.labelled import LabelledData, Split, load_labelled, read_labelled_file, stratified_sample
from nlpforge.data.report import render_data_report, token_length_stats
from nlpforge.errors import ConfigError, DataError
from nlpforge.evaluation.metrics import classification_metrics
from nlpforge.models import artifact
from nlpforge.models.registry import build_classifier, resolve_base
from nlpforge.training import distributed
from nlpforge.training.config import TextClassificationConfig
from nlpforge.training.loop import LoopSettings, Task, fit
from nlpforge.training.precision import resolve_precision

TASK = "text-classification"
LAZY_ABOVE_BYTES = 256 * 1024 * 1024  # data_loading=auto maps files larger than this


@dataclass
class TrainResult:
    output: Path
    metrics: dict                 # validation (and test) metrics of the best epoch
    history: list                 # per-epoch metrics
    train_seconds: float
    samples: int
    padded_tokens: int
    parameters: int
    data_report: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def samples_per_second(self) -> float:
        return self.samples / max(self.train_seconds, 1e-9)


class TextDataset(torch.utils.data.Dataset):
    """Row index -> (text or text pair, label id); tokenization happens in `Collate`."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self):
        return len(self.split)

    def __getitem__(self, index):
        return self.split.texts[index], self.split.label_ids[index]


class Collate:
    """Tokenize and pad a batch on the fly (in DataLoader workers when there are any)."""

    def __init__(self, tokenizer, max_seq_length: int):
        self.tokenizer, self.max_seq_length = tokenizer, max_seq_length
        self.pad_id = tokenizer.pad_token_id or 0

    def __call__(self, examples) -> dict:
        texts, labels = zip(*examples)
        rows = encode(self.tokenizer, list(texts), self.max_seq_length)
        for row, label in zip(rows, labels):
            row["labels"] = label
        return pad_batch(rows, self.pad_id)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA GPU is visible here; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: not a device; use cpu, cuda, cuda:N or auto") from None


def freeze_lowest_layers(model, count: int) -> None:
    """Freeze the embeddings and the lowest `count` encoder layers (the talk's freeze_bert_layer)."""
    if count <= 0:
        return
    encoder = model.base_model
    layers = encoder.encoder.layer
    if count > len(layers):
        raise ConfigError(f"freeze-layers is {count} but the model has {len(layers)} layers")
    for parameter in encoder.embeddings.parameters():
        parameter.requires_grad = False
    for layer in layers[:count]:
        for parameter in layer.parameters():
            parameter.requires_grad = False


def subsample(split: Split, rows: int, seed: int) -> Split:
    if rows >= len(split):
        return split
    return split.take(stratified_sample(split.label_ids, rows, seed))


def char_lengths(texts) -> list[int] | np.ndarray:
    """Characters per row: the cheap proxy for token length that length grouping sorts by."""
    if hasattr(texts, "char_lengths"):
        return texts.char_lengths()
    return [len(t) if isinstance(t, str) else sum(len(part) for part in t) for t in texts]


def token_lengths(tokenizer, texts, chunk: int = 1000) -> list[int]:
    """Untruncated token counts, tokenized a chunk at a time so only the counts stay in memory."""
    lengths = []
    for start in range(0, len(texts), chunk):
        lengths.extend(len(row["input_ids"]) for row in encode(tokenizer, texts[start:start + chunk], 1_000_000))
    return lengths


def use_lazy(config: TextClassificationConfig) -> bool:
    if config.data_loading == "auto":
        return Path(config.train).is_file() and Path(config.train).stat().st_size > LAZY_ABOVE_BYTES
    return config.data_loading == "lazy"


def predict_ids(model, rows: list[dict], pad_id: int, batch_size: int, device=torch.device("cpu")) -> np.ndarray:
    """Arg-max class ids for encoded rows, in their order."""
    predicted = np.zeros(len(rows), dtype=np.int64)
    model.eval()
    with torch.inference_mode():
        for indices in sorted_batches([len(r["input_ids"]) for r in rows], batch_size):
            batch = pad_batch([rows[i] for i in indices], pad_id)
            batch.pop("labels", None)
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            predicted[indices] = logits.argmax(-1).cpu().numpy()
    return predicted


def loss_for(config: TextClassificationConfig, label_ids: list[int], n_labels: int):
    """Per-example cross-entropy, optionally weighted to balance the classes."""
    weight = None
    if config.class_weights == "balanced":
        counts = np.bincount(label_ids, minlength=n_labels).astype(np.float64)
        weight = torch.tensor(len(label_ids) / (n_labels * np.maximum(counts, 1)), dtype=torch.float32)

    def loss(logits, labels):
        return torch.nn.functional.cross_entropy(logits, labels, reduction="none",
                                                 weight=None if weight is None else weight.to(logits.device))

    return loss


def make_evaluate(rows: list[dict], label_ids: list[int], labels: list, prefix: str, pad_id: int, batch_size: int,
                  world, device):
    """Each rank predicts its share of the rows; the predictions are gathered and scored on every rank."""

    def evaluate(model) -> dict:
        mine = list(range(world.rank, len(rows), world.size))
        predicted = predict_ids(model, [rows[i] for i in mine], pad_id, batch_size, device)
        merged = np.zeros(len(rows), dtype=np.int64)
        for indices, values in distributed.gather_objects((mine, predicted.tolist()), world):
            merged[indices] = values
        report = classification_metrics(label_ids, merged, labels)
        return {f"{prefix}_accuracy": report["accuracy"], f"{prefix}_macro_f1": report["macro_f1"],
                "_report": report}

    return evaluate


def train_text_classification(config: TextClassificationConfig, log=print, on_step=None) -> TrainResult | None:
    """Read the data, fine-tune, keep the best epoch, and write the artifact folder (rank 0).

    With nproc or nnodes above 1 and no torchrun around us, re-launch under torchrun and wait.
    """
    if (config.nproc > 1 or config.nnodes > 1) and not distributed.under_torchrun():
        return _launch_distributed(config, log)
    device = resolve_device(config.device)
    world = distributed.setup(device.type)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    try:
        return _train(config, device, world, log if world.is_main else (lambda *_: None), on_step)
    finally:
        distributed.teardown()


def _launch_distributed(config: TextClassificationConfig, log) -> TrainResult:
    with tempfile.TemporaryDirectory() as folder:
        settings = Path(folder) / "settings.json"
        settings.write_text(json.dumps({k: v for k, v in asdict(config).items()
                                        if k not in ("nproc", "nnodes", "node_rank", "master_addr", "master_port")}))
        log(f"launching {config.nproc} process(es) x {config.nnodes} node(s) through torchrun")
        code = distributed.launch(["train", TASK, "--config", str(settings)], config.nproc, config.nnodes,
                                  config.node_rank, config.master_addr, config.master_port)
    if code != 0:
        raise ConfigError(f"distributed training exited with code {code}; see the messages above")
    meta, _ = artifact.read_metadata(config.output)
    metrics = meta["metrics"]
    return TrainResult(Path(config.output), metrics, meta.get("history", []), metrics.get("train_seconds", 0.0),
                       metrics.get("train_samples", 0), metrics.get("padded_tokens", 0), 0)


def _train(config: TextClassificationConfig, device: torch.device, world, log, on_step=None) -> TrainResult:
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    precision = resolve_precision(config.precision, device)
    seed_everything(config.seed)
    lazy = use_lazy(config)
    data: LabelledData = load_labelled(config.train, config.validation, text_columns=config.text_column,
                                       label_column=config.label_column,
                                       validation_fraction=config.validation_fraction, seed=config.seed, lazy=lazy)
    if config.max_train_rows:
        data.train = subsample(data.train, config.max_train_rows, config.seed)
    base = resolve_base(config.model, config.tokenizer)
    model, tokenizer = build_classifier(base, data.labels, config.max_seq_length, config.dropout)
    freeze_lowest_layers(model, config.freeze_layers)
    model.to(device)
    pad_id = tokenizer.pad_token_id or 0

    # Report on every row of an in-memory file (up to 20k); a mapped file gets a 2k-row sample so
    # that start-up does not grow with the file.
    full_lengths = token_lengths(tokenizer, data.train.texts[:2000 if lazy else 20000])
    report = render_data_report(data, full_lengths, config.max_seq_length)
    log(report)
    validation_rows = encode(tokenizer, data.validation.texts, config.max_seq_length)
    lengths = char_lengths(data.train.texts)
    if len(data.train) < world.size:
        raise DataError(f"{config.train}: {len(data.train)} training rows cannot feed {world.size} processes")

    # Cached: start-up, the loop and the log line all ask for epoch 0's batches, and on a
    # million-row file each build sorts the whole epoch.
    @functools.lru_cache(maxsize=2)
    def epoch_batches(epoch: int) -> list[list[int]]:
        return length_grouped_batches(lengths, config.batch_size, seed=config.seed + epoch)

    evaluate = make_evaluate(validation_rows, data.validation.label_ids, data.labels, "validation", pad_id,
                             config.eval_batch_size, world, device)
    fingerprint = {"task": TASK, "model": config.model, "tokenizer": config.tokenizer, "labels": data.labels,
                   "train_sha256": data.files[0].sha256, "train_rows": len(data.train),
                   "world_size": world.size, "precision": config.precision, "epochs": config.epochs,
                   **{k: getattr(config, k) for k in ("max_seq_length", "batch_size", "gradient_accumulation",
                                                      "learning_rate", "weight_decay", "warmup_ratio", "lr_schedule",
                                                      "seed", "freeze_layers", "class_weights", "max_train_rows", "dropout")}}
    task = Task(epoch_batches=epoch_batches, dataset=TextDataset(data.train),
                collate=Collate(tokenizer, config.max_seq_length),
                loss=loss_for(config, data.train.label_ids, len(data.labels)),
                evaluate=lambda m: {k: v for k, v in evaluate(m).items() if not k.startswith("_")},
                fingerprint=fingerprint)
    output = Path(config.output)
    explicit_checkpoints = config.checkpoint_dir is not None
    checkpoint_dir = Path(config.checkpoint_dir) if explicit_checkpoints else output / "checkpoints"
    settings = LoopSettings(
        epochs=config.epochs, learning_rate=config.learning_rate, weight_decay=config.weight_decay,
        warmup_ratio=config.warmup_ratio, lr_schedule=config.lr_schedule,
        gradient_accumulation=config.gradient_accumulation, max_grad_norm=config.max_grad_norm,
        metric_for_best=f"validation_{config.metric_for_best}", early_stopping_patience=config.early_stopping_patience,
        precision=precision, checkpoint_dir=str(checkpoint_dir), checkpoint_every=config.checkpoint_every,
        keep_checkpoints=config.keep_checkpoints, resume=config.resume, log_every=config.log_every,
        metrics_path=str(output / "metrics.jsonl"), tensorboard_dir=str(output / "tensorboard"),
        num_workers=config.num_workers, progress=config.progress, max_steps=config.max_steps, on_step=on_step)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"model {config.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters "
        f"({trainable / 1e6:.1f}M trainable); {config.epochs} epochs x {len(epoch_batches(0))} batches of "
        f"{config.batch_size}; {precision} on {device}" + (f" x {world.size} processes" if world.distributed else ""))
    state = fit(model, task, settings, world, device, log=log)

    final = evaluate(model)["_report"]
    metrics = {"validation_accuracy": final["accuracy"], "validation_macro_f1": final["macro_f1"],
               "best_epoch": state.best_epoch, "train_seconds": state.train_seconds,
               "train_samples": state.samples, "padded_tokens": state.padded_tokens,
               "train_samples_per_second": state.samples / max(state.train_seconds, 1e-9)}
    extra = {}
    if config.test:
        metrics.update(_test_metrics(config, model, tokenizer, data, world, device, extra))
    if world.is_main:
        data_files = [{"path": f.path, "sha256": f.sha256, "rows": f.rows,
                       "role": "train" if i == 0 else "validation"} for i, f in enumerate(data.files)]
        artifact.save(
            output, model, tokenizer, data.labels, task=TASK, text_columns=data.text_columns,
            label_column=data.label_column, max_seq_length=config.max_seq_length, base_model=config.model,
            hyperparameters=config.to_dict(), metrics=metrics, data_files=data_files,
            extra={"history": state.history, "validation_report": final, **extra,
                   "validation_split": "split_from_train" if data.split_from_train else "file",
                   "token_lengths": token_length_stats(full_lengths, config.max_seq_length),
                   "precision": precision, "world_size": world.size, "resumed_from": state.resumed_from})
        if not explicit_checkpoints:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the run finished; the artifact is what stays
        log(f"wrote {output} (best epoch {state.best_epoch}: accuracy {final['accuracy']:.4f}, "
            f"macro-F1 {final['macro_f1']:.4f})")
    distributed.barrier(world)
    return TrainResult(output, metrics, state.history, state.train_seconds, state.samples, state.padded_tokens,
                       sum(p.numel() for p in model.parameters()), report)


def _test_metrics(config, model, tokenizer, data, world, device, extra: dict) -> dict:
    texts, labels, _, _ = read_labelled_file(config.test, data.text_columns, data.label_column, clean=True)
    known = {label: i for i, label in enumerate(data.labels)}
    unknown = sorted({str(v) for v in labels if v not in known})
    if unknown:
        raise DataError(f"{config.test}: label(s) {', '.join(unknown)} never appear in the training file")
    rows = encode(tokenizer, texts, config.max_seq_length)
    evaluate = make_evaluate(rows, [known[v] for v in labels], data.labels, "test", tokenizer.pad_token_id or 0,
                             config.eval_batch_size, world, device)
    result = evaluate(model)
    extra["test_report"] = result.pop("_report")
    return result
