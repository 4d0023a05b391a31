"""The flagship task: fine-tune a BERT-family encoder to classify text (e.g. 1-5 star ratings).

    from nlpforge.training.text_classification import train_text_classification
    from nlpforge.training.config import TextClassificationConfig
    result = train_text_classification(TextClassificationConfig(
        train="train.csv", validation="validation.csv", text_column=["review_body"],
        label_column="star_rating", model="minilm-l6", output="models/stars"))

CLI: `nlpforge train text-classification --train ... --output ...`.
"""
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nlpforge.data.batching import encode, length_grouped_batches, pad_batch, sorted_batches
from nlpforge.data.labelled import LabelledData, Split, load_labelled, stratified_sample
from nlpforge.data.report import render_data_report, token_length_stats
from nlpforge.evaluation.metrics import classification_metrics
from nlpforge.models import artifact
from nlpforge.models.registry import build_classifier, resolve_base
from nlpforge.training.config import TextClassificationConfig
from nlpforge.training.loop import LoopSettings, fit

TASK = "text-classification"


@dataclass
class TrainResult:
    output: Path
    metrics: dict                 # validation metrics of the best epoch
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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def freeze_lowest_layers(model, count: int) -> None:
    """Freeze the embeddings and the lowest `count` encoder layers (the talk's freeze_bert_layer)."""
    if count <= 0:
        return
    encoder = model.base_model
    layers = encoder.encoder.layer
    if count > len(layers):
        from nlpforge.errors import ConfigError

        raise ConfigError(f"freeze-layers is {count} but the model has {len(layers)} layers")
    for parameter in encoder.embeddings.parameters():
        parameter.requires_grad = False
    for layer in layers[:count]:
        for parameter in layer.parameters():
            parameter.requires_grad = False


def subsample(split: Split, rows: int, seed: int) -> Split:
    if rows >= len(split):
        return split
    keep = stratified_sample(split.label_ids, rows, seed)
    return Split([split.texts[i] for i in keep], [split.label_ids[i] for i in keep])


def predict_ids(model, rows: list[dict], pad_id: int, batch_size: int) -> np.ndarray:
    """Arg-max class ids for encoded rows, in their order."""
    predicted = np.zeros(len(rows), dtype=np.int64)
    model.eval()
    with torch.inference_mode():
        for indices in sorted_batches([len(r["input_ids"]) for r in rows], batch_size):
            batch = pad_batch([rows[i] for i in indices], pad_id)
            batch.pop("labels", None)
            predicted[indices] = model(**batch).logits.argmax(-1).numpy()
    return predicted


def loss_for(config: TextClassificationConfig, label_ids: list[int], n_labels: int) -> torch.nn.Module:
    if config.class_weights == "balanced":
        counts = np.bincount(label_ids, minlength=n_labels).astype(np.float64)
        weights = len(label_ids) / (n_labels * np.maximum(counts, 1))
        return torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
    return torch.nn.CrossEntropyLoss()


def train_text_classification(config: TextClassificationConfig, log=print) -> TrainResult:
    """Read the data, fine-tune, keep the best epoch, and write the artifact folder."""
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    data: LabelledData = load_labelled(config.train, config.validation, text_columns=config.text_column,
                                       label_column=config.label_column,
                                       validation_fraction=config.validation_fraction, seed=config.seed)
    if config.max_train_rows:
        data.train = subsample(data.train, config.max_train_rows, config.seed)
    base = resolve_base(config.model, config.tokenizer)
    model, tokenizer = build_classifier(base, data.labels, config.max_seq_length)
    freeze_lowest_layers(model, config.freeze_layers)
    pad_id = tokenizer.pad_token_id or 0

    full_lengths = [len(r["input_ids"]) for r in encode(tokenizer, data.train.texts[:20000], 100_000)]
    report = render_data_report(data, full_lengths, config.max_seq_length)
    log(report)
    train_rows = encode(tokenizer, data.train.texts, config.max_seq_length)
    for row, label in zip(train_rows, data.train.label_ids):
        row["labels"] = label
    validation_rows = encode(tokenizer, data.validation.texts, config.max_seq_length)
    lengths = [len(r["input_ids"]) for r in train_rows]

    def epoch_batches(epoch: int):
        for indices in length_grouped_batches(lengths, config.batch_size, seed=config.seed + epoch):
            yield pad_batch([train_rows[i] for i in indices], pad_id)

    def evaluate(model) -> dict:
        predicted = predict_ids(model, validation_rows, pad_id, config.eval_batch_size)
        metrics = classification_metrics(data.validation.label_ids, predicted, data.labels)
        return {"validation_accuracy": metrics["accuracy"], "validation_macro_f1": metrics["macro_f1"]}

    batches_per_epoch = len(length_grouped_batches(lengths, config.batch_size, seed=0))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"model {config.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters "
        f"({trainable / 1e6:.1f}M trainable); {config.epochs} epochs x {batches_per_epoch} batches of "
        f"{config.batch_size}")
    settings = LoopSettings(epochs=config.epochs, learning_rate=config.learning_rate,
                            weight_decay=config.weight_decay, warmup_ratio=config.warmup_ratio,
                            lr_schedule=config.lr_schedule, gradient_accumulation=config.gradient_accumulation,
                            max_grad_norm=config.max_grad_norm,
                            metric_for_best=f"validation_{config.metric_for_best}", progress=config.progress)
    state = fit(model, epoch_batches, batches_per_epoch, settings,
                loss_for(config, data.train.label_ids, len(data.labels)), evaluate, log=log)

    predicted = predict_ids(model, validation_rows, pad_id, config.eval_batch_size)
    final = classification_metrics(data.validation.label_ids, predicted, data.labels)
    metrics = {"validation_accuracy": final["accuracy"], "validation_macro_f1": final["macro_f1"],
               "best_epoch": state.best_epoch, "train_samples_per_second": state.samples / max(state.train_seconds, 1e-9),
               "train_seconds": state.train_seconds}
    data_files = [{"path": f.path, "sha256": f.sha256, "rows": f.rows,
                   "role": "train" if i == 0 else "validation"} for i, f in enumerate(data.files)]
    output = artifact.save(
        config.output, model, tokenizer, data.labels, task=TASK, text_columns=data.text_columns,
        label_column=data.label_column, max_seq_length=config.max_seq_length, base_model=config.model,
        hyperparameters=config.to_dict(), metrics=metrics, data_files=data_files,
        extra={"history": state.history, "validation_report": final,
               "validation_split": "split_from_train" if data.split_from_train else "file",
               "token_lengths": token_length_stats(full_lengths, config.max_seq_length)})
    log(f"wrote {output} (best epoch {state.best_epoch}: accuracy {final['accuracy']:.4f}, "
        f"macro-F1 {final['macro_f1']:.4f})")
    return TrainResult(output, metrics, state.history, state.train_seconds, state.samples, state.padded_tokens,
                       sum(p.numel() for p in model.parameters()), report)
