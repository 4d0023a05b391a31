"""What a training run shows while it runs: a progress bar (plain lines where stderr is no terminal)
and the metric log (JSON lines, TensorBoard scalars)."""
import json
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from nlpforge.data.readers import text_lines


class PlainProgress:
    """The progress bar where stderr is not a terminal (CI, job logs, nohup): a plain line every
    `interval` seconds instead of carriage-return frames, as tqdm and rich do there."""

    def __init__(self, total: int, initial: int = 0, interval: float = 30.0, stream=None):
        self.total, self.n, self.interval, self.stream = total, initial, interval, stream or sys.stderr
        self.started = self.printed = time.monotonic()
        self.postfix = ""

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.printed >= self.interval:
            self.printed = time.monotonic()
            elapsed = int(self.printed - self.started)
            print(f"batch {self.n:,}/{self.total:,} ({100 * self.n / max(self.total, 1):.0f}%), "
                  f"{elapsed // 60}m{elapsed % 60:02d}s{self.postfix}", file=self.stream, flush=True)

    def set_postfix(self, refresh: bool = False, **values) -> None:
        self.postfix = "".join(f", {key} {value}" for key, value in values.items())

    def clear(self) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, initial: int, enabled: bool):
    """tqdm on a terminal, plain lines elsewhere, nothing when `enabled` is false."""
    if enabled and not sys.stderr.isatty():
        return PlainProgress(total, initial)
    return tqdm(total=total, initial=initial, disable=not enabled, unit="batch", dynamic_ncols=True, leave=False)


class MetricLog:
    """Per-step and per-epoch metrics as JSON lines (and TensorBoard scalars), rank 0 only."""

    def __init__(self, path, tensorboard_dir, resume_step: int | None, enabled: bool):
        self.handle, self.writer = None, None
        if not enabled:
            return
        if path:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            kept = []
            if resume_step is not None and path.exists():  # drop lines from steps the resume will redo
                kept = [line for line in text_lines(path.read_text(encoding="utf-8"))
                        if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            self.handle = open(path, "a", encoding="utf-8")
        if tensorboard_dir:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(tensorboard_dir))
            except ImportError:
                self.writer = None

    def write(self, record: dict) -> None:
        if self.handle:
            self.handle.write(json.dumps(record) + "\n")
            self.handle.flush()
        if self.writer:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.handle:
            self.handle.close()
        if self.writer:
            self.writer.close()
