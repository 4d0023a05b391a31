"""The model artifact: a self-describing folder that training writes and everything else reads.

    models/stars/
      config.json          Hugging Face config (with id2label / label2id for classifiers)
      model.safetensors    weights (never a pickle)
      tokenizer.json ...   tokenizer files
      labels.json          the task's own facts: a classifier's {"labels": [1, ..., 5], "text_columns": [...]},
                           a tagger's tags and scheme, a QA model's windows and null-score threshold
      nlpforge.json        metadata: task, base model, hyperparameters, metrics, data hashes, versions
      README.md            model card with the metrics

    save(folder, model, tokenizer, task="text-classification", task_info={"labels": [...]}, ...)
    meta, info = read_metadata(folder)     # nlpforge.json, and labels.json when the task has one

Loading a folder for prediction is the task's business: `nlpforge.load(folder)` (nlpforge.tasks).
Transformers loads the same folder with its Auto classes.
"""
import json
import platform
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

from nlpforge.errors import ArtifactError

FORMAT_VERSION = 1
REQUIRED = ("config.json", "model.safetensors", "nlpforge.json")
TASK_INFO = "labels.json"


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in ("nlpforge", "torch", "transformers", "tokenizers", "safetensors", "scikit-learn", "numpy"):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    return versions


def save(folder, model, tokenizer, *, task: str, base_model: str, max_seq_length: int, hyperparameters: dict,
         metrics: dict, data_files: list[dict], task_info: dict | None = None, card_notes: list[str] = (),
         example_input: str = "some text", extra: dict | None = None) -> Path:
    """Write a complete artifact folder; returns its path. `task_info` becomes labels.json; the model card
    gets `card_notes` as paragraphs and a usage example predicting `example_input`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    if task_info is not None:
        _write_json(folder / TASK_INFO, task_info)
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
    (folder / "README.md").write_text(model_card(folder.name, meta, card_notes, example_input), encoding="utf-8")
    return folder


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def model_card(name: str, meta: dict, notes=(), example_input: str = "some text") -> str:
    metrics = meta.get("metrics", {})
    lines = [f"# {name}", "", f"A `{meta['task']}` model trained by nlpforge from `{meta['base_model']}`.", "",
             *(line for note in notes for line in (note, "")), "## Metrics (validation)", "",
             "| metric | value |", "|---|---|"]
    for key, value in metrics.items():
        if isinstance(value, (int, float)):
            lines.append(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |")
    lines += ["", "## Training data", ""]
    for f in meta.get("data_files", []):
        lines.append(f"- `{f['path']}` ({f['rows']} rows, sha256 `{f['sha256'][:16]}…`)")
    lines += ["", "## Hyperparameters", "", "```json", json.dumps(meta.get("hyperparameters", {}), indent=2), "```",
              "", "## Use", "", "```python", "import nlpforge", f"model = nlpforge.load('{name}')",
              f"model.predict([{example_input!r}])", "```", ""]
    return "\n".join(lines)


def read_metadata(folder) -> tuple[dict, dict]:
    """(nlpforge.json, labels.json or {}) of an artifact folder, with a clear error if it is not one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: no such model folder; train one with `nlpforge train <task>`")
    missing = [name for name in REQUIRED if not (folder / name).exists()]
    if missing:
        raise ArtifactError(f"{folder}: not an nlpforge model folder, missing {', '.join(missing)}")
    try:
        meta = json.loads((folder / "nlpforge.json").read_text(encoding="utf-8"))
        info = json.loads((folder / TASK_INFO).read_text(encoding="utf-8")) if (folder / TASK_INFO).exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{folder}: metadata is not valid JSON ({error}); the folder is damaged") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ArtifactError(f"{folder}: written by a newer nlpforge (format {meta['format_version']}); upgrade nlpforge")
    return meta, info
