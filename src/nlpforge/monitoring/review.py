"""The human-review queue: captured predictions a person should look at, and the labels they give.

    queue = ReviewQueue("model_store/capture", "stars", threshold=0.6)
    item = queue.next()          # the oldest pending item: text, probabilities, reason
    queue.save(item.capture_id, 4)
    queue.progress()             # {"reviewed": 1, "pending": 11, "total": 12, "agreement": 0.0}

A served prediction (see `nlpforge.serving.capture`, rotated files included) is queued when its score is
under `threshold` ("low confidence"), or when the shadow version answered the same input of the same
request differently ("shadow disagrees"; the shadow is captured for every request, so a disagreement is
queued even when the served answer itself was not sampled). Labels are appended to
<capture>/<model>/review/labels.jsonl, one JSON line each:

    {"text": "...", "label": 4, "capture_id": "1.0/3f2a...", "model_label": 5, "model_score": 0.41,
     "reason": "low confidence", "reviewed_at": "2026-01-01T12:00:00Z"}

(and "text_pair" for pairs), which `nlpforge train text-classification --train labels.jsonl` reads as it
is (`--text-column text --text-column text_pair` for pairs). The label keeps the model's type, so star
ratings stay ints. A new label is one appended, fsynced line; a later label for the same capture id
replaces the earlier one (the file is rewritten atomically, so training never sees both), and a line cut
short by a crash is skipped with a warning and dropped at the next save.

A capture id is "<served version>/<16 hex digits>": a hash of the request id and the input (of the
timestamp and the input for a record without a request id). The served record and its shadow's give the
same id, and rotating or re-reading the files never changes it.
"""
import hashlib
import json
import logging
import math
import os
import stat
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from nlpforge.errors import ConfigError, DataError, InputError
from nlpforge.monitoring.run import as_text, capture_records
from nlpforge.settings import check_writable, file_lock, replacing

log = logging.getLogger(__name__)
LOW_CONFIDENCE, SHADOW_DISAGREES = "low confidence", "shadow disagrees"
EXPORT_COLUMNS = ["text", "text_pair", "label", "capture_id", "model_label", "model_score", "reason", "reviewed_at"]


@dataclass
class ReviewItem:
    """One queued prediction."""

    capture_id: str
    text: str
    text_pair: str | None
    label: object                      # the served model's answer
    score: float | None                # its confidence; None when only the shadow's record was captured
    probabilities: dict = field(default_factory=dict)
    reason: str = LOW_CONFIDENCE
    timestamp: str = ""
    version: str = ""                  # the version that answered
    shadow_label: object = None
    shadow_version: str | None = None


def capture_id(record: dict, version: str) -> str:
    """The stable id of a captured input answered by `version` (see the module docstring)."""
    key = [record["request_id"], record.get("input")] if record.get("request_id") else \
        [record.get("timestamp"), record.get("input")]
    encoded = json.dumps(key, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")  # lone ones too
    digest = hashlib.sha256(encoded).hexdigest()
    return f"{version}/{digest[:16]}"


def text_and_pair(value) -> tuple[str, str | None]:
    """(text, text_pair or None) of a captured input: a string, a [text, text_pair] pair (how the server
    captures a pair), or {"text": ..., "text_pair": ...}."""
    if isinstance(value, list) and len(value) == 2 and all(isinstance(part, str) for part in value):
        return value[0], value[1]
    if isinstance(value, dict) and "text" in value:
        pair = value.get("text_pair")
        return as_text(value["text"]) or "", None if pair is None else as_text(pair)
    return as_text(value) or "", None


def _score(prediction: dict) -> float | None:
    score = prediction.get("score")
    return float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None


def _probabilities(prediction: dict) -> dict:
    """The prediction's {label: probability}, or {} when the record holds something else (a damaged line)."""
    value = prediction.get("probabilities")
    if not isinstance(value, dict):
        return {}
    if not all(isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) for p in value.values()):
        return {}
    return {str(name): float(p) for name, p in value.items()}


def _typed(names, like) -> list:
    """Label names (probabilities' keys are strings) typed as the model answers: int labels stay ints."""
    if isinstance(like, int) and not isinstance(like, bool):
        try:
            return [int(name) for name in names]
        except ValueError:
            pass
    return list(names)


class ReviewQueue:
    """Pending and reviewed captured predictions of one served model (every version, or one)."""

    def __init__(self, capture_folder, model: str, version: str | None = None, threshold: float = 0.6,
                 labels_file=None):
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise ConfigError(f"threshold must be between 0 and 1, not {threshold!r}; predictions scored under it "
                              "are queued")
        self.folder = Path(capture_folder)
        if not self.folder.is_dir():
            raise DataError(f"{self.folder}: no such capture folder; serve the model with data capture on "
                            "(--version.capture-percent, or deploy(data_capture_config=...)) and give its folder")
        if not model or Path(model).name != model or model in (".", ".."):
            raise InputError(f"model {model!r}: give a served model's name, one of the folders in {self.folder}")
        if not (self.folder / model).is_dir():
            known = sorted(p.name for p in self.folder.iterdir() if p.is_dir())
            raise DataError(f"no capture of model {model!r} in {self.folder}; the captured models are "
                            f"{', '.join(known) or 'none yet'}")
        if version is not None and (not str(version) or Path(str(version)).name != str(version)
                                    or str(version) in (".", "..", "review")):
            raise InputError(f"version {version!r}: give a served version's name, one of the folders in "
                             f"{self.folder / model}")
        if version is not None and not (self.folder / model / str(version)).is_dir():
            known = sorted(p.name for p in (self.folder / model).iterdir() if p.is_dir() and p.name != "review")
            raise DataError(f"no capture of model {model!r} version {version!r} in {self.folder}; its captured "
                            f"versions are {', '.join(known) or 'none yet'}")
        self.model, self.version, self.threshold = model, version, float(threshold)
        self.labels_file = Path(labels_file) if labels_file else self.folder / model / "review" / "labels.jsonl"
        if self.labels_file.name.startswith("capture.jsonl"):
            raise ConfigError(f"labels file {self.labels_file}: is a capture log's name, and labels written there "
                              "would mix with captured traffic; name another file")
        if self.labels_file.suffix.lower() != ".jsonl":
            raise ConfigError(f"labels file {self.labels_file}: labels are JSON lines; name a .jsonl file (a new one, "
                              "or one that `nlpforge review` wrote)")

    # --- the queue ----------------------------------------------------------------------------------------
    def _scan(self) -> tuple[dict[str, ReviewItem], list]:
        """(every queued item, reviewed or not, oldest first, by capture id; the model's labels)."""
        served: dict[str, ReviewItem] = {}
        shadows: dict[str, dict] = {}
        names: list = []
        like = None
        for record in capture_records(self.folder / self.model):
            prediction = record.get("prediction")
            if not isinstance(prediction, dict) or "label" not in prediction:
                continue
            probabilities = _probabilities(prediction)
            seen = [*probabilities] or [str(prediction["label"])]  # without probabilities: the labels answered
            names.extend(n for n in seen if n not in names)
            like = prediction["label"] if like is None else like
            if record.get("shadow"):
                version = str(prediction.get("served_version", ""))
                if "served_label" in prediction and prediction["served_label"] != prediction["label"] \
                        and self.version in (None, version):
                    shadows[capture_id(record, version)] = record
                continue
            version = str(record.get("version", ""))
            if self.version not in (None, version):
                continue
            text, pair = text_and_pair(record.get("input"))
            key = capture_id(record, version)
            served[key] = ReviewItem(key, text, pair, prediction["label"], _score(prediction), probabilities,
                                     timestamp=str(record.get("timestamp", "")), version=version)
        queued = []
        for key, item in served.items():
            shadow = shadows.pop(key, None)
            if shadow is not None:
                item.reason = SHADOW_DISAGREES
                item.shadow_label, item.shadow_version = shadow["prediction"]["label"], shadow.get("version")
            elif item.score is None or item.score >= self.threshold:
                continue
            queued.append(item)
        for key, record in shadows.items():  # the served answer was not sampled; its shadow always is
            text, pair = text_and_pair(record.get("input"))
            prediction = record["prediction"]
            queued.append(ReviewItem(key, text, pair, prediction["served_label"], None, {}, SHADOW_DISAGREES,
                                     str(record.get("timestamp", "")), str(prediction.get("served_version", "")),
                                     prediction["label"], record.get("version")))
        queued.sort(key=lambda item: item.timestamp)
        return {item.capture_id: item for item in queued}, _typed(names, like)

    @property
    def labels(self) -> list:
        """The label choices, in the model's order and typed as it answers (1..5 stay ints)."""
        return self._scan()[1]

    def labels_of(self, item: ReviewItem) -> list:
        """The label choices for one item: its probabilities' labels, else the model's."""
        return _typed(item.probabilities, item.label) if item.probabilities else self.labels

    def overview(self) -> tuple[list[ReviewItem], dict]:
        """(the pending items, oldest first; the progress counts), from one read of the capture and labels."""
        done = self.reviewed()
        items = self._scan()[0]
        reviewed = [entry for key, entry in done.items() if key in items]
        agreed = sum(str(entry["label"]) == str(entry.get("model_label")) for entry in reviewed)
        progress = {"reviewed": len(reviewed), "pending": len(items) - len(reviewed), "total": len(items),
                    "agreement": round(agreed / len(reviewed), 4) if reviewed else None}
        return [item for key, item in items.items() if key not in done], progress

    def pending(self) -> list[ReviewItem]:
        """Queued items without a label yet, oldest first."""
        return self.overview()[0]

    def next(self) -> ReviewItem | None:
        """The oldest pending item, or None when the queue is empty."""
        items = self.pending()
        return items[0] if items else None

    def get(self, capture_id: str) -> ReviewItem:
        """A queued item, reviewed or not."""
        item = self._scan()[0].get(capture_id)
        if item is None:
            raise InputError(f"no queued prediction of model {self.model!r} has capture id {capture_id!r}; "
                             "`nlpforge review next` shows one")
        return item

    def progress(self) -> dict:
        """Counts of the queue: reviewed, pending, total, and the share of reviewed items where the person
        agreed with the model (None before any)."""
        return self.overview()[1]

    # --- labels ---------------------------------------------------------------------------------------------
    def reviewed(self) -> dict[str, dict]:
        """The latest label line of every reviewed capture id; a damaged line is skipped with a warning."""
        return {entry["capture_id"]: entry for entry, _ in self._entries(self._read())[0]}

    def _read(self) -> bytes:
        path = self.labels_file
        if path.is_symlink() and not path.exists():
            raise DataError(f"{path}: the labels file is a link to nothing; remove the link or name another "
                            "--labels-file")
        try:
            if path.exists() and not stat.S_ISREG(path.stat().st_mode):  # a folder, or a FIFO that would block
                raise DataError(f"{path}: is not a file, so it is not a labels file; name another --labels-file")
            return path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as error:
            raise DataError(f"{path}: cannot read the labels file ({error.strerror or error})") from None

    def _entries(self, content: bytes) -> tuple[list[tuple[dict, bytes]], list[int]]:
        """((each label line, its bytes), the numbers of the lines that are not label lines). Lines end at
        "\\n" only (a text may hold U+2028 and its kind raw), and a line is kept byte for byte when the file
        is rewritten."""
        entries, damaged = [], []
        for number, raw in enumerate(content.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw.decode("utf-8", "replace"))
                if not isinstance(entry, dict) or not isinstance(entry.get("capture_id"), str) \
                        or "label" not in entry:
                    raise ValueError
            except (ValueError, RecursionError):
                log.warning("%s line %d is not a whole label line (cut short by a crash?); skipped",
                            self.labels_file, number)
                damaged.append(number)
                continue
            entries.append((entry, raw.rstrip(b"\r") + b"\n"))
        return entries, damaged

    def save(self, capture_id: str, label) -> dict:
        """Record a person's label for a queued item; returns the line written."""
        item = self.get(capture_id)
        choices = self.labels_of(item)
        chosen = next((choice for choice in choices if str(choice) == str(label).strip()), None)
        if chosen is None:
            raise InputError(f"label {label!r} is not one of the model's labels: {', '.join(map(str, choices))}")
        entry = {"text": item.text, **({"text_pair": item.text_pair} if item.text_pair is not None else {}),
                 "label": chosen, "capture_id": capture_id, "model_label": item.label, "model_score": item.score,
                 "reason": item.reason,
                 "reviewed_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")}
        # backslashreplace: a lone surrogate in a text becomes the JSON escape \ud800, so the line stays JSON
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")
        check_writable(self.labels_file, "labels file", folder=False)
        self.labels_file.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            content = self._read()
            entries, damaged = self._entries(content)
            # The one line repaired is a crash's: the last, cut short before its newline.
            if damaged and (len(damaged) > 1 or content.endswith(b"\n")
                            or damaged[0] != content.rstrip().count(b"\n") + 1):
                raise DataError(f"{self.labels_file}: line {damaged[0]} is not a label line, so this is not a labels "
                                "file that `nlpforge review` wrote; it is left as it is. Name another --labels-file")
            if damaged or any(e["capture_id"] == capture_id for e, _ in entries) or \
                    (content and content[-1:] != b"\n"):
                self._replace(b"".join(raw for e, raw in entries if e["capture_id"] != capture_id) + line)
            else:
                with open(self.labels_file, "ab") as out:
                    out.write(line)
                    out.flush()
                    os.fsync(out.fileno())
        return entry

    @contextmanager
    def _locked(self):
        """One writer at a time (the page and the CLI may label at once); no lock where fcntl is missing."""
        path = self.labels_file.with_name(self.labels_file.name + ".lock")
        with ExitStack() as stack:
            try:
                stack.enter_context(file_lock(path))
            except OSError as error:
                raise DataError(f"{path}: cannot open the labels file's lock ({error.strerror or error}); remove "
                                "what is there, it is only a lock") from None
            yield

    def _replace(self, content: bytes) -> None:
        """Write the labels file whole and swap it in, so a crash leaves the old file or the new one."""
        temporary = self.labels_file.with_name(f".{self.labels_file.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.labels_file)
        if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
            folder = os.open(self.labels_file.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)

    def export(self, path) -> int:
        """Write the latest label of every reviewed item to a .csv or .jsonl file; returns the rows written."""
        import csv

        path = Path(path)
        if path.suffix.lower() not in (".csv", ".jsonl"):
            raise ConfigError(f"--output {path}: export to a .csv or .jsonl file")
        real = Path(os.path.realpath(path))
        read = "a capture log" if real.name.startswith("capture.jsonl") else \
            "the labels file the export reads" if real == Path(os.path.realpath(self.labels_file)) else \
            "inside the capture folder, where the server's logs and the review's labels live" if \
            real.is_relative_to(os.path.realpath(self.folder)) else None
        if read:
            raise ConfigError(f"--output {path}: is {read}, which the export must not overwrite; export to a "
                              "file outside it")
        check_writable(path, "--output", folder=False)
        rows = list(self.reviewed().values())
        # A failure leaves an earlier export whole, and one reached through a link is written where the link points.
        # backslashreplace: a lone surrogate a label line holds as \ud800 is written back as that escape.
        with replacing(path) as partial, \
                open(partial, "w", newline="", encoding="utf-8", errors="backslashreplace") as out:
            if path.suffix.lower() == ".jsonl":
                out.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
            else:
                writer = csv.DictWriter(out, EXPORT_COLUMNS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
        return len(rows)
