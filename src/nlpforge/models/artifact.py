"""The model artifact: a self-describing folder that training writes and everything else reads.

    models/stars/
      config.json          Hugging Face config, with id2label / label2id
      model.safetensors    weights (never a pickle)
      tokenizer.json ...   tokenizer files
      labels.json          {"labels": [1, 2, 3, 4, 5], "label_column": ..., "text_columns": [...]}
      nlpforge.json        metadata: task, base model, hyperparameters, metrics, data hashes, versions
      README.md            model card with the metrics

    model = load("models/stars")
    model.predict(["Loved it"])  # [{"label": 5, "score": 0.81, "probabilities": {"1": ..., ...}}]

Transformers can load the same folder with `AutoModelForSequenceClassification.from_pretrained`.
"""
import json
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import torch

from nlpforge.data.batching import encode, pad_batch, sorted_batches
from nlpforge.errors import ArtifactError

FORMAT_VERSION = 1
REQUIRED = ("config.json", "model.safetensors", "labels.json", "nlpforge.json")


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in ("nlpforge", "torch", "transformers", "tokenizers", "safetensors", "scikit-learn", "numpy"):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    return versions


def save(folder, model, tokenizer, labels: list, *, task: str, text_columns: list, label_column: str,
         max_seq_length: int, base_model: str, hyperparameters: dict, metrics: dict, data_files: list[dict],
         extra: dict | None = None) -> Path:
    """Write a complete artifact folder; returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    _write_json(folder / "labels.json", {"labels": labels, "text_columns": text_columns,
                                         "label_column": label_column})
    meta = {
        "format_version": FORMAT_VERSION,
        "task": task,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base_model": base_model,
        "max_seq_length": max_seq_length,
        "hyperparameters": hyperparameters,
        "metrics": metrics,
        "data_files": data_files,
        "library_versions": library_versions(),
        **(extra or {}),
    }
    _write_json(folder / "nlpforge.json", meta)
    (folder / "README.md").write_text(model_card(folder.name, meta, labels), encoding="utf-8")
    return folder


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def model_card(name: str, meta: dict, labels: list) -> str:
    metrics = meta.get("metrics", {})
    lines = [f"# {name}", "", f"A `{meta['task']}` model fine-tuned by nlpforge from `{meta['base_model']}`.", "",
             f"Labels: {', '.join(map(str, labels))}", "", "## Metrics (validation)", "",
             "| metric | value |", "|---|---|"]
    for key, value in metrics.items():
        if isinstance(value, (int, float)):
            lines.append(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |")
    lines += ["", "## Training data", ""]
    for f in meta.get("data_files", []):
        lines.append(f"- `{f['path']}` ({f['rows']} rows, sha256 `{f['sha256'][:16]}…`)")
    lines += ["", "## Hyperparameters", "", "```json", json.dumps(meta.get("hyperparameters", {}), indent=2), "```",
              "", "## Use", "", "```python", "import nlpforge", f"model = nlpforge.load('{name}')",
              "model.predict(['some text'])", "```", ""]
    return "\n".join(lines)


@dataclass
class TextClassifier:
    """A loaded text classifier; `predict` returns the label, its score and every class's probability."""

    model: torch.nn.Module
    tokenizer: object
    labels: list
    max_seq_length: int
    metadata: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def text_columns(self) -> list[str]:
        return self.metadata.get("text_columns", ["text"])

    @torch.inference_mode()
    def predict_proba(self, texts, batch_size: int = 32) -> np.ndarray:
        """(N, num_labels) class probabilities, in the order of `texts`."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        rows = encode(self.tokenizer, texts, self.max_seq_length)
        device = next(self.model.parameters()).device
        probabilities = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        self.model.eval()
        for indices in sorted_batches([len(r["input_ids"]) for r in rows], batch_size):
            batch = pad_batch([rows[i] for i in indices], self.tokenizer.pad_token_id or 0)
            logits = self.model(**{k: v.to(device) for k, v in batch.items()}).logits  # (B, num_labels)
            probabilities[indices] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return probabilities

    def predict(self, texts, batch_size: int = 32) -> list[dict]:
        if isinstance(texts, str):
            texts = [texts]
        probabilities = self.predict_proba(texts, batch_size)
        out = []
        for row in probabilities:
            best = int(row.argmax())
            out.append({"label": self.labels[best], "score": float(row[best]),
                        "probabilities": {str(label): float(p) for label, p in zip(self.labels, row)}})
        return out


def read_metadata(folder) -> tuple[dict, dict]:
    """(nlpforge.json, labels.json) of an artifact folder, with a clear error if it is not one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: no such model folder; train one with `nlpforge train text-classification`")
    missing = [name for name in REQUIRED if not (folder / name).exists()]
    if missing:
        raise ArtifactError(f"{folder}: not an nlpforge model folder, missing {', '.join(missing)}")
    try:
        meta = json.loads((folder / "nlpforge.json").read_text(encoding="utf-8"))
        label_info = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{folder}: metadata is not valid JSON ({error}); the folder is damaged") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ArtifactError(f"{folder}: written by a newer nlpforge (format {meta['format_version']}); upgrade nlpforge")
    return meta, label_info


def load(folder, device: str = "cpu") -> TextClassifier:
    """Load an artifact folder for prediction."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = Path(folder)
    meta, label_info = read_metadata(folder)
    if meta.get("task") != "text-classification":
        raise ArtifactError(f"{folder}: holds a '{meta.get('task')}' model; this loader reads text-classification")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForSequenceClassification.from_pretrained(str(folder)).to(device).eval()
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{folder}: cannot load weights or tokenizer ({str(error).splitlines()[0]})") from None
    meta["text_columns"] = label_info.get("text_columns", ["text"])
    meta["label_column"] = label_info.get("label_column", "label")
    return TextClassifier(model, tokenizer, label_info["labels"], int(meta.get("max_seq_length", 512)), meta, folder)


