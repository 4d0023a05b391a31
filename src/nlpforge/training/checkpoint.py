"""Checkpoints of every object a resume needs, written atomically; `resume="auto"` finds the newest.

A checkpoint is a folder `step-00001234/`:
    model.safetensors        model weights
    best.safetensors         weights of the best epoch so far (when it is not the current one)
    average.safetensors      the running average of the trained weights (with --average-from)
    optimizer.safetensors    optimizer tensors (AdamW moments, step counts)
    rng.safetensors          torch (and CUDA) RNG states
    state.json               counters, data position, best metric, optimizer/scheduler/scaler
                             scalars, python and numpy RNG states, and the run's config
    MANIFEST.json            every file's size and sha256
    COMPLETE                 written last; a folder without it is ignored

It is written to `.tmp-step-.../` and renamed into place, so a kill in the middle of a save
leaves the previous checkpoint intact. A checkpoint damaged later (a truncated file, a full disk)
fails its manifest, and `resume="auto"` takes the newest intact one. No pickles: tensors go to
safetensors, the rest to JSON.
"""
import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from nlpforge.errors import ConfigError

COMPLETE = "COMPLETE"
MANIFEST = "MANIFEST.json"
PREFIX = "step-"
WEIGHT_SETS = ("best", "average")
STATE_KEYS = {"step", "loop", "optimizer", "scheduler", "rng", "config"}  # what state.json holds for a resume


def _flatten_optimizer(state_dict: dict) -> tuple[dict, dict]:
    tensors, scalars = {}, {}
    for index, values in state_dict["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict, dict]:
    """(tensors, JSON) of every RNG a training step touches."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return tensors, {"python": [version, list(internal), gauss],
                     "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)]}


def set_rng_state(tensors: dict, meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))


def _state_dict_tensors(model: torch.nn.Module) -> dict:
    # clone(): tied or non-contiguous views cannot go to safetensors as they are.
    return {k: v.detach().contiguous().cpu().clone() for k, v in model.state_dict().items()}


def save_checkpoint(folder, step: int, *, model, optimizer, scheduler, scaler, loop_state: dict,
                    config: dict, weight_sets: dict[str, dict | None], keep: int = 2) -> Path:
    """Write `folder/step-NNNNNNNN` atomically and prune to the newest `keep`; each of `weight_sets` that is
    not None (the best epoch's weights, the running average) goes to its own `<name>.safetensors`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{PREFIX}{step:08d}"
    temporary = folder / f".tmp-{PREFIX}{step:08d}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    save_file(_state_dict_tensors(model), str(temporary / "model.safetensors"))
    for name, weights in weight_sets.items():
        if weights is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()},
                      str(temporary / f"{name}.safetensors"))
    optimizer_tensors, optimizer_meta = _flatten_optimizer(optimizer.state_dict())
    save_file(optimizer_tensors, str(temporary / "optimizer.safetensors"))
    rng_tensors, rng_meta = rng_state()
    save_file(rng_tensors, str(temporary / "rng.safetensors"))
    state = {"step": step, "loop": loop_state, "optimizer": optimizer_meta, "scheduler": scheduler.state_dict(),
             "scaler": {k: v for k, v in scaler.state_dict().items()} if scaler else None,
             "rng": rng_meta, "config": config}
    (temporary / "state.json").write_text(json.dumps(state, indent=1, default=float), encoding="utf-8")
    manifest = {path.name: _describe(path) for path in sorted(temporary.iterdir())}
    (temporary / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    (temporary / COMPLETE).write_text("ok\n")
    for path in temporary.iterdir():  # durable before the rename makes it visible
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    for old in complete_checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in folder.glob(f".tmp-{PREFIX}*"):  # left by a save that was killed
        if stale != temporary:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def complete_checkpoints(folder) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.startswith(PREFIX) and (p / COMPLETE).exists()]
    return sorted(found, key=lambda p: p.name)


def _describe(path: Path) -> dict:
    with open(path, "rb") as handle:
        return {"bytes": os.fstat(handle.fileno()).st_size, "sha256": hashlib.file_digest(handle, "sha256").hexdigest()}


def damage(path: Path) -> str | None:
    """What is wrong with a complete checkpoint folder, checked against its manifest; None when intact."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:  # written before manifests: its state must at least read
        manifest = None
    except (OSError, ValueError):
        return f"{MANIFEST} is unreadable"
    if manifest is None:
        try:
            state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "state.json is missing or unreadable"
        return None if isinstance(state, dict) and STATE_KEYS <= state.keys() else "state.json lacks entries"
    if not isinstance(manifest, dict) or not all(isinstance(entry, dict) and {"bytes", "sha256"} <= entry.keys()
                                                 for entry in manifest.values()):
        return f"{MANIFEST} does not give each file's bytes and sha256"
    for name, expected in manifest.items():
        try:
            found = _describe(path / name)
        except OSError:
            return f"{name} is missing"
        if found["bytes"] != expected["bytes"]:
            return f"{name} has {found['bytes']:,} bytes, not {expected['bytes']:,}"
        if found["sha256"] != expected["sha256"]:
            return f"{name} does not match its sha256"
    return None


def find_checkpoint(resume: str, checkpoint_dir, log=print) -> Path | None:
    """`auto`: the newest intact checkpoint in `checkpoint_dir` (None if there is none), saying which damaged
    ones it passed over; else a path (or a checkpoint folder's parent), which must be intact."""
    if resume == "auto":
        found = complete_checkpoints(checkpoint_dir) if checkpoint_dir else []
        return _newest_intact(found, log) if found else None
    path = Path(resume)
    if path.is_dir() and not (path / COMPLETE).exists() and complete_checkpoints(path):
        return _newest_intact(complete_checkpoints(path), log)  # a checkpoint folder's parent was given
    if not path.is_dir() or not (path / COMPLETE).exists() or not (path / "state.json").exists():
        raise ConfigError(f"--resume {resume}: not a complete nlpforge checkpoint (a step-NNNNNNNN folder with "
                          "state.json and COMPLETE); use --resume auto to take the newest in --checkpoint-dir")
    return _newest_intact([path], log)


def _newest_intact(found: list[Path], log) -> Path:
    damaged = []
    for path in reversed(found):
        problem = damage(path)
        if problem is None:
            if damaged:
                log(f"checkpoint {'; '.join(f'{p} ({why})' for p, why in damaged)} is damaged; resuming from "
                    f"{path} instead")
            return path
        damaged.append((path, problem))
    newest, problem = damaged[0]
    more = f" (and {len(damaged) - 1} older one(s))" if len(damaged) > 1 else ""
    raise ConfigError(f"checkpoint {newest} is damaged ({problem}){more} and no intact checkpoint is left; "
                      "start again without --resume, or with a new --checkpoint-dir")


def read_checkpoint(path: Path) -> dict:
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    state["path"] = path
    return state


def restore(path: Path, state: dict, *, model, optimizer, scheduler, scaler) -> dict[str, dict]:
    """Load every object from the checkpoint at `path`; returns the weight sets stored beside the model
    ({"best": ..., "average": ...}, those present)."""
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    optimizer.load_state_dict(_unflatten_optimizer(load_file(str(path / "optimizer.safetensors")), state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    set_rng_state(load_file(str(path / "rng.safetensors")), state["rng"])
    return {name: load_file(str(path / f"{name}.safetensors")) for name in WEIGHT_SETS
            if (path / f"{name}.safetensors").exists()}


def check_compatible(saved: dict, current: dict, path: Path, may_differ: set[str]) -> None:
    """A checkpoint resumes only the run it came from: same model, data and shape-defining settings."""
    differences = [key for key in sorted(set(saved) | set(current))
                   if key not in may_differ and saved.get(key) != current.get(key)]
    if differences:
        detail = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, now {current.get(k)!r}" for k in differences[:4])
        raise ConfigError(f"checkpoint {path} is from a different model or config ({detail}); "
                          "start a new --checkpoint-dir or resume with the original settings")
