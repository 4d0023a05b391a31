"""Data capture: a sample of requests and their predictions, as rotating JSONL, per model and version.

    capture = DataCapture("capture/", max_bytes=10_000_000, backups=5)
    capture.record("stars", "1.0", percent=10, text="Loved it", prediction={...})

writes, for about 10% of the calls, one line to capture/stars/1.0/capture.jsonl:

    {"timestamp": "2026-01-01T12:00:00.123Z", "model": "stars", "version": "1.0", "input": "Loved it",
     "prediction": {"label": 5, "score": 0.8, "probabilities": {...}, "truncated": false}, "shadow": false}

The drift monitor reads these files; `capture.jsonl.1`, `.2`, ... are the older, rotated ones. A
line holds no lone surrogate (it could not be written as UTF-8) and no U+2028, U+2029 or U+0085 (readers
that split lines with str.splitlines would split there): those are written as \\u escapes.
"""
import json
import logging
import random
import re
import threading
from datetime import datetime, timezone
from logging.handlers import RotatingFileHandler
from pathlib import Path

from nlpforge.errors import ServingError

ESCAPED = re.compile("[\ud800-\udfff\u2028\u2029\u0085]")


def captured_input(value, item):
    """What a capture line holds as the `input` of one request input: the parsed text, or a [text, text_pair]
    pair, as the drift monitor reads them; for any other task's input (a masked-LM text with its top_k, a question
    with its context) the request value as it came, since the parsed form there holds options or is no JSON at all
    (a question's QAExample)."""
    if isinstance(item, str) or (isinstance(item, tuple) and len(item) == 2 and all(isinstance(p, str) for p in item)):
        return item
    if isinstance(value, bytes):  # a raw or multipart body: decoding it as UTF-8 already passed
        return value.decode("utf-8-sig", "replace")
    return list(value) if isinstance(value, tuple) else value  # a CSV row


class DataCapture:
    """Thread-safe, sampled JSONL writers, one rotating file per (model, version)."""

    def __init__(self, folder, max_bytes: int = 10_000_000, backups: int = 5, seed: int | None = None):
        self.folder = Path(folder)
        self.max_bytes, self.backups = max_bytes, backups
        self.writers: dict[tuple[str, str], RotatingFileHandler] = {}
        self.lock = threading.Lock()
        self.random = random.Random(seed)

    def path(self, model: str, version: str) -> Path:
        """The capture file of a model version; refused if it would resolve outside the capture folder."""
        path = self.folder / model / version / "capture.jsonl"
        if not path.resolve().is_relative_to(self.folder.resolve()):
            raise ServingError(f"data capture of model {model!r} version {version!r} would write to {path}, outside "
                               f"{self.folder}; register it under a plain name")
        return path

    def _writer(self, model: str, version: str) -> RotatingFileHandler:
        key = (model, version)
        with self.lock:
            if key not in self.writers:
                path = self.path(model, version)
                path.parent.mkdir(parents=True, exist_ok=True)
                writer = RotatingFileHandler(path, maxBytes=self.max_bytes, backupCount=self.backups, encoding="utf-8")
                writer.setFormatter(logging.Formatter("%(message)s"))
                self.writers[key] = writer
            return self.writers[key]

    def sampled(self, percent: float) -> bool:
        return percent > 0 and (percent >= 100 or self.random.random() * 100 < percent)

    def record(self, model: str, version: str, percent: float, text: str, prediction: dict,
               shadow: bool = False, request_id: str | None = None) -> bool:
        """Write one line with probability percent/100; returns whether it was written."""
        if not self.sampled(percent):
            return False
        line = {"timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "model": model, "version": version, "input": text, "prediction": prediction, "shadow": shadow}
        if request_id:
            line["request_id"] = request_id
        written = ESCAPED.sub(lambda match: f"\\u{ord(match.group()):04x}", json.dumps(line, ensure_ascii=False))
        record = logging.LogRecord("capture", logging.INFO, "", 0, written, None, None)
        self._writer(model, version).handle(record)
        return True

    def close(self) -> None:
        with self.lock:
            for writer in self.writers.values():
                writer.close()
            self.writers.clear()
