"""The handler contract: how a served model turns requests into answers, in three steps.

    decode_request(value) -> one input   runs in the server, cheap, validates the request item
    predict(batch)        -> outputs     runs in a worker process, on a whole batch
    encode_response(out)  -> JSON value  runs in the server

`setup(folder, backend, threads, device)` loads the model inside the worker, on the CPU or on the
GPU that `worker_device` gives it. Every task is served by the one `TaskHandler`, which asks the
task (nlpforge.tasks) what an input is and what an answer looks like, so a new task needs no handler
code; `EchoHandler` measures the server without a model. A folder holding code/inference.py is
served by `ScriptHandler` (script_handler.py), SageMaker's inference contract; it sets `raw_bodies`,
so the route gives it the body and headers undecoded.

    handler = handler_for("echo") or handler_for("text-classification")
    handler.setup("models/stars", backend="torch", threads=2)      # in the worker; device="cuda:0" on a GPU
    handler.predict([handler.decode_request("Loved it")])          # [{"label": 5, "score": 0.8, ...}]
"""
import json
from abc import ABC, abstractmethod
from pathlib import Path

from nlpforge import tasks
from nlpforge.errors import ArtifactError, InputError
from nlpforge.settings import cores
from nlpforge.tasks.base import MAX_TEXT_CHARS, text_of


class Handler(ABC):
    """One task's request decoding, batch prediction and response encoding."""

    task: str = ""
    raw_bodies: bool = False  # True: decode_request gets {"body": bytes, "content_type", "accept"}, not values

    def setup(self, folder: str, backend: str = "torch", threads: int = 1, device: str = "cpu") -> None:
        """Load the model; called once in each worker process."""

    def decode_request(self, value) -> object:
        """Turn one decoded request value (a str, bytes or a JSON value) into one model input."""
        return value

    @abstractmethod
    def predict(self, batch: list) -> list:
        """Outputs for a batch of inputs, one per input and in the same order."""

    def check_item(self, item, text_columns: tuple) -> None:
        """Refuse a decoded input that does not fit the served model (e.g. one text for a model of pairs)."""

    def encode_response(self, output) -> object:
        return output

    def explain(self, batch: list) -> list:
        raise InputError(f"the {self.task} handler gives no explanations")


class TaskHandler(Handler):
    """Serves any nlpforge task through its contract: parse_input, then the loaded model's predict."""

    def __init__(self, task: str, max_chars: int = MAX_TEXT_CHARS):
        self.task, self.max_chars = task, max_chars
        self.contract = tasks.get(task)
        self.loaded = None

    def setup(self, folder: str, backend: str = "torch", threads: int = 1, device: str = "cpu") -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.loaded = tasks.load(folder, backend=backend, device=device, threads=threads)

    def decode_request(self, value) -> object:
        return self.contract.parse_input(value, self.max_chars)

    def check_item(self, item, text_columns: tuple) -> None:
        self.contract.check_item(item, list(text_columns) or list(self.contract.text_columns))

    def predict(self, batch: list) -> list:
        return self.loaded.answer(batch, batch_size=len(batch))

    def explain(self, batch: list) -> list:
        return self.loaded.task.explain(self.loaded, batch)


class EchoHandler(Handler):
    """Answers with the input's length, without a model: measures the server's own overhead."""

    task = "echo"

    def decode_request(self, value) -> str:
        if isinstance(value, dict):
            value = value.get("text", value.get("data"))
        return text_of(value)

    def predict(self, batch: list[str]) -> list[dict]:
        return [{"label": "echo", "score": 1.0, "probabilities": {"echo": 1.0}, "length": len(t),
                 "truncated": False} for t in batch]


SCRIPT_TASK = "script"  # a model folder served through its code/inference.py


def handler_for(task: str, max_chars: int = MAX_TEXT_CHARS) -> Handler:
    """The handler that serves `task` (a task name, "script" or "echo")."""
    if task == SCRIPT_TASK:
        from nlpforge.serving.script_handler import ScriptHandler

        return ScriptHandler()
    return EchoHandler() if task == EchoHandler.task else TaskHandler(task, max_chars)


def task_of(folder) -> str:
    """The task a model folder holds: "script" for SageMaker's layout (code/inference.py), else the task of its
    nlpforge.json, if nlpforge serves it; else a clear error."""
    from nlpforge.serving.script_handler import check_entry_point, is_script_folder

    if is_script_folder(folder):
        check_entry_point(folder)
        return SCRIPT_TASK
    path = Path(folder) / "nlpforge.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        raise ArtifactError(f"{folder}: not an nlpforge model folder (no readable nlpforge.json) nor a SageMaker "
                            "one (no code/inference.py); give the folder that `nlpforge train` wrote, or add the "
                            "inference script as code/inference.py") from None
    task = meta.get("task") if isinstance(meta, dict) else None
    if not isinstance(task, str):
        raise ArtifactError(f"{path}: must be a JSON object whose \"task\" is a task name, not "
                            f"{json.dumps(meta)[:80]}; give the folder that `nlpforge train` wrote")
    if task != EchoHandler.task and task not in tasks.names():
        raise ArtifactError(f"{folder}: no handler serves the task {task!r}; served tasks: "
                            + ", ".join([*tasks.names(), EchoHandler.task]))
    return task


def text_columns_in(folder, task: str) -> tuple:
    """The text columns the model in `folder` was trained on; () for script and echo folders, or where its
    files cannot say (its workers then refuse the folder with the reason)."""
    if task not in tasks.names():
        return ()
    from nlpforge.models.artifact import read_metadata
    from nlpforge.tasks.base import text_columns_of

    try:
        meta, info = read_metadata(folder)
    except ArtifactError:
        return ()
    return tuple(text_columns_of(tasks.get(task), meta, info))


def worker_device(device: str, worker_id: int = 0) -> str:
    """The torch device a worker runs on: "cpu", or for "cuda" one visible GPU, taken round-robin by worker
    id (TorchServe's assignment). With no GPU visible it stays "cuda", which the loader refuses in one line."""
    if device == "cpu":
        return device
    import torch

    count = torch.cuda.device_count()
    return f"cuda:{worker_id % count}" if count else device


def default_threads(workers: int) -> int:
    """Threads per worker: the cores shared out among the workers, at least one each."""
    return max(1, cores() // max(1, workers))
