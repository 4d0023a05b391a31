"""The model's view of a set of texts, for the monitor: predicted labels, confidence and embeddings.

    model = model_identity("models/stars")   # {"model": ..., "path": "/abs/models/stars", "fingerprint": ..., ...}
    loaded = load_scorer(model)              # a text-classification LoadedModel, or None for a tokenizer only
    scores = score(loaded, ["Loved it", "Meh"])
    scores.labels, scores.confidence, scores.embeddings   # ["5", "2"], (N,), (N, H) mean-pooled

A model folder that `nlpforge train` wrote for text classification gives all three; any other model (an
alias such as `bert-tiny`, a base folder) only lends its tokenizer to the WordPiece descriptors. A model's
fingerprint is the SHA-256 of its weights, configuration, labels and tokenizer files, so that a retrained
model in the same folder is a different model.
"""
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nlpforge.data.labelled import file_sha256
from nlpforge.tasks.base import run_features

IDENTITY_FILES = ("config.json", "model.safetensors", "labels.json", "tokenizer.json", "vocab.txt")
SCORED_TASK = "text-classification"


@dataclass
class Scores:
    labels: list[str]          # each text's predicted label, as a string
    confidence: np.ndarray     # (N,) top softmax score
    embeddings: np.ndarray     # (N, H) encoder output, mean-pooled over the text's tokens


def fingerprint(folder: Path) -> str:
    """SHA-256 over the files that make the model what it is."""
    digest = hashlib.sha256()
    for name in IDENTITY_FILES:
        if (folder / name).is_file():
            digest.update(f"{name}:{file_sha256(folder / name)}\n".encode())
    return digest.hexdigest()


def model_identity(model: str) -> dict:
    """What a baseline records of its model: the name given, the resolved folder, its fingerprint and task."""
    from nlpforge.models.artifact import read_metadata
    from nlpforge.models.registry import resolve_base

    folder = Path(model).expanduser()
    if not folder.is_dir():
        resolve_base(model)  # an alias, or the registry's error that lists them
        return {"model": model, "path": model, "fingerprint": f"alias:{model}", "task": None}
    task = read_metadata(folder)[0].get("task") if (folder / "nlpforge.json").is_file() else None
    return {"model": model, "path": os.path.abspath(folder), "fingerprint": fingerprint(folder), "task": task}


def scores_predictions(identity: dict | None) -> bool:
    """Whether the model gives labels, confidence and embeddings (a trained text classifier)."""
    return identity is not None and identity.get("task") == SCORED_TASK


def tokenizer_of(identity: dict | None):
    """The model's own tokenizer, for the WordPiece descriptors; None without a model."""
    if identity is None:
        return None
    from nlpforge.models.registry import load_tokenizer, resolve_base

    return load_tokenizer(resolve_base(identity["path"]))


def load_scorer(identity: dict | None):
    """The model loaded for prediction when it is a trained text classifier, else None."""
    if not scores_predictions(identity):
        return None
    from nlpforge.tasks import load

    return load(identity["path"])


def score(loaded, texts: list[str], batch_size: int = 32) -> Scores:
    """Predicted label, confidence and mean-pooled embedding of each text, in one forward pass per batch."""
    import torch

    def call(arrays: dict) -> dict:
        batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
        with torch.inference_mode():
            result = loaded.model(**batch, output_hidden_states=True)
        hidden = result.hidden_states[-1].float()                            # (B, T, H)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)        # (B, T, 1)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)  # (B, H)
        return {"logits": result.logits.float().numpy(), "embedding": pooled.numpy()}

    if not texts:
        return Scores([], np.zeros(0), np.zeros((0, loaded.model.config.hidden_size), dtype=np.float32))
    features = loaded.task.preprocess(loaded, texts)
    outputs = run_features(call, features, loaded.pad_id, batch_size, loaded.max_tokens)
    answers = loaded.task.postprocess(loaded, texts, features, outputs)
    return Scores(labels=[str(a["label"]) for a in answers],
                  confidence=np.array([a["score"] for a in answers], dtype=float),
                  embeddings=np.stack([o["embedding"] for o in outputs]).astype(np.float32))
