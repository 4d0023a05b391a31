"""The model artifact: a self-describing folder that training writes and everything else reads.

    models/stars/
      config.json          Hugging Face config (with id2label / label2id for classifiers)
      model.safetensors    weights (never a pickle)
      tokenizer.json ...   tokenizer files
      labels.json          the task's own facts: a classifier's {"labels": [1, ..., 5], "text_columns": [...]},
                           a tagger's tags and scheme, a QA model's windows and null-score threshold
      nlpforge.json        metadata: task, base model, hyperparameters, metrics, data hashes, versions
      README.md            model card with the metrics

    check_output(folder, overwrite=False)  # before any work: refuse a file, a non-empty folder, no write access
    save(folder, model, tokenizer, task="text-classification", task_info={"labels": [...]}, ...)
    meta, info = read_metadata(folder)     # nlpforge.json, and labels.json when the task has one

`save` writes the whole folder beside its destination (`.stars.tmp-<pid>/`) and renames it into
place last, so a reader sees the old model or the new one, never half of each.

Loading a folder for prediction is the task's business: `nlpforge.load(folder)` (nlpforge.tasks).
Transformers loads the same folder with its Auto classes.
"""
import contextlib
import glob
import json
import os
import platform
import shutil
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

from nlpforge.errors import ArtifactError, ConfigError
from nlpforge.settings import check_writable

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
         example_input: str = "some text", extra: dict | None = None, include=()) -> Path:
    """Write a complete artifact folder atomically; returns its path. `task_info` becomes labels.json; the
    model card gets `card_notes` as paragraphs and a usage example predicting `example_input`; the files or
    folders in `include` (the run's metrics.jsonl, tensorboard/) are moved in."""
    final = Path(folder)
    with writing_folder(final) as folder:
        _write_artifact(folder, final.name, model, tokenizer, task, base_model, max_seq_length, hyperparameters,
                        metrics, data_files, task_info, card_notes, example_input, extra, include)
    return final


def _write_artifact(folder, name, model, tokenizer, task, base_model, max_seq_length, hyperparameters, metrics,
                    data_files, task_info, card_notes, example_input, extra, include) -> None:
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
    (folder / "README.md").write_text(model_card(name, meta, card_notes, example_input), encoding="utf-8")
    for path in include:
        if Path(path).exists():
            shutil.move(str(path), str(folder / Path(path).name))


def training_folder(output) -> Path:
    """Where a run keeps what is not the model yet, apart from the model folder: `OUTPUT.training/` holds
    the live metrics.jsonl and tensorboard/ (moved into the model when it is written) and, by default,
    checkpoints/ (removed when the run finishes)."""
    output = Path(os.path.abspath(output))
    return output.with_name(f"{output.name}.training")


@contextlib.contextmanager
def writing_folder(folder):
    """Yield where to write the folder's new contents: a hidden folder beside it, renamed into its place once
    the block ends without error (an earlier folder keeps none of its files, and an interrupted
    write leaves it whole). A folder that cannot be renamed (a mount point, in a parent this process cannot
    write) is emptied and written in place instead. A symbolic link to a folder keeps naming it."""
    final = Path(os.path.realpath(Path(folder).expanduser()))
    temporary = sibling_folder(final, f"tmp-{os.getpid()}")
    try:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    except OSError:
        temporary = None
    if temporary is None or os.path.ismount(final):
        if temporary is not None:
            temporary.rmdir()
        final.mkdir(parents=True, exist_ok=True)
        for entry in final.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        yield final
        return
    try:
        yield temporary
        replace_folder(temporary, final)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def sibling_folder(folder: Path, suffix: str) -> Path:
    """A hidden folder beside `folder`, on the same file system, so that a rename moves it into place."""
    folder = Path(os.path.abspath(folder))
    return folder.with_name(f".{folder.name}.{suffix}")


def replace_folder(temporary: Path, final: Path) -> None:
    """Make the complete folder `temporary` visible as `final`: durable first, then one rename (the old
    folder, if any, is moved aside just before and deleted after)."""
    for path in temporary.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    try:
        os.replace(temporary, final)  # atomic when `final` is absent or an empty folder
    except OSError:
        old = sibling_folder(final, f"old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(temporary, final)
        shutil.rmtree(old, ignore_errors=True)
    for stale in final.parent.glob(f".{glob.escape(final.name)}.tmp-*"):  # left by a save that was killed
        shutil.rmtree(stale, ignore_errors=True)


def check_output(folder, overwrite: bool = False, what: str = "--output") -> Path:
    """Refuse, before any training, a model folder that cannot be written: an existing file, a folder
    that already holds files (unless `overwrite`), or a place this process cannot write to."""
    folder = Path(folder)
    check_writable(folder, what, folder=True)
    if folder.is_dir() and any(folder.iterdir()):
        if not overwrite:
            raise ConfigError(f"{what} {folder}: the folder is not empty; pass --overwrite to replace it (the old "
                              "model stays until the new one is complete), or choose another folder")
        here = Path.cwd()
        if Path(os.path.abspath(folder)) in (here, *here.parents):
            raise ConfigError(f"{what} {folder}: is the current folder or holds it, and --overwrite would delete "
                              "everything in it; name a folder for the model")
        if not (folder / "nlpforge.json").is_file():
            if what != "--output":  # a folder the user did not name (the demo's): no flag to change
                raise ConfigError(f"{what} {folder}: holds files but no nlpforge model, and the run would replace "
                                  "the whole folder; move those files away, then run it again")
            raise ConfigError(f"{what} {folder}: holds files but no nlpforge model, and --overwrite replaces the "
                              "whole folder; choose a new folder, or an earlier model's")
        check_writable(Path(os.path.abspath(folder)).parent, what, folder=True)  # the new one is written beside it
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
    if not isinstance(folder, (str, os.PathLike)):
        raise ArtifactError(f"a model folder is a path, not {folder!r}; give the folder `nlpforge train` wrote")
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: no such model folder; train one with `nlpforge train <task>`")
    missing = [name for name in REQUIRED if not (folder / name).exists()]
    if missing:
        raise ArtifactError(f"{folder}: not an nlpforge model folder, missing {', '.join(missing)}")
    meta = _read_json(folder / "nlpforge.json")
    info = _read_json(folder / TASK_INFO) if (folder / TASK_INFO).exists() else {}
    for key, kind, least in (("format_version", int, 0), ("max_seq_length", int, 1), ("task", str, None)):
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)
                                  or (least is not None and value < least)):
            raise ArtifactError(f"{folder / 'nlpforge.json'}: {key} is {value!r}, not "
                                f"{'a task name' if kind is str else f'a whole number of at least {least}'}; the "
                                "model folder is damaged, restore the file or train the model again")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ArtifactError(f"{folder}: written by a newer nlpforge (format {meta['format_version']}); "
                            "upgrade nlpforge")
    if (folder / TASK_INFO).exists() and not info:
        raise ArtifactError(f"{folder / TASK_INFO}: empty; the model folder is damaged, restore the file or "
                            "train the model again")
    head = _read_json(folder / "config.json").get("id2label")
    labels = info.get("labels")
    if labels is not None and (not isinstance(labels, list) or (head and len(labels) != len(head))):
        raise ArtifactError(f"{folder / TASK_INFO}: its labels do not match the model's {len(head or ())} outputs "
                            "(config.json); the model folder is damaged, train the model again")
    return meta, info


def _read_json(path: Path) -> dict:
    """A JSON object from an artifact file, or an ArtifactError naming the file."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise ArtifactError(f"{path}: not valid JSON ({str(error)[:80]}); the model folder is damaged, train "
                            "the model again") from None
    if not isinstance(value, dict):
        raise ArtifactError(f"{path}: holds a JSON {type(value).__name__}, not an object; the model folder is "
                            "damaged, train the model again")
    return value
