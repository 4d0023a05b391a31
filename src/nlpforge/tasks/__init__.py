"""Every task nlpforge trains and serves: one module each in this package, found by name.

    tasks.names()                              # ["masked-lm", "text-classification", ...]
    tasks.get("text-classification")           # the module's TASK (see nlpforge.tasks.base.Task)
    tasks.load("models/stars").predict(["Loved it"])   # the folder's own task, from nlpforge.json

A task module is any module here, other than `base`, that defines `TASK`: adding a task is adding
its module (and its tests), nothing else.
"""
import functools
import importlib
import pkgutil
from pathlib import Path

from nlpforge.errors import ArtifactError, ConfigError
from nlpforge.models.artifact import read_metadata
from nlpforge.tasks.base import BACKENDS, LoadedModel, Task, TrainingData

__all__ = ["BACKENDS", "LoadedModel", "Task", "TrainingData", "get", "load", "names"]


@functools.cache
def _registry() -> dict[str, Task]:
    found = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name == "base":
            continue
        task = getattr(importlib.import_module(f"{__name__}.{module.name}"), "TASK", None)
        if isinstance(task, Task):
            found[task.name] = task
    return dict(sorted(found.items()))


def names() -> list[str]:
    return list(_registry())


def get(name: str) -> Task:
    """The task called `name`, or a ConfigError that lists the tasks."""
    if name not in _registry():
        raise ConfigError(f"unknown task {name!r}; the tasks are {', '.join(names())}")
    return _registry()[name]


def load(folder, backend: str = "torch", device: str = "cpu", threads: int | None = None) -> LoadedModel:
    """Load any nlpforge model folder for prediction, with the task its nlpforge.json names."""
    meta, _ = read_metadata(folder)
    task = meta.get("task")
    if task is None:
        raise ArtifactError(f"{Path(folder) / 'nlpforge.json'}: has no \"task\", so the folder is damaged; restore "
                            "the file or train the model again")
    if task not in _registry():
        raise ArtifactError(f"{folder}: holds a {task!r} model, a task this nlpforge does not know "
                            f"(it knows {', '.join(names())}); upgrade nlpforge")
    return get(task).load(folder, backend=backend, device=device, threads=threads)
