"""Baselines and monitoring runs: the importable functions behind `nlpforge monitor baseline|run`.

    suggest_baseline(BaselineSettings(data="train.csv", text_column="review_body", model="models/stars",
                                      output="baseline"))
    # baseline/statistics.json, constraints.json, texts.jsonl (a sample for content drift), baseline.json,
    # embeddings.safetensors (with a trained classifier: PCA of its embeddings over the sample)
    summary = monitor_run(MonitorRunSettings(baseline="baseline", capture="capture", output="report"))
    # report/statistics.json, constraint_violations.json, report.json, report.html and its PNG plots

A run reads the server's data capture (every `capture.jsonl*` under the folder, see
`nlpforge.serving.capture`) between `since` and `until`, or a data file. A window without texts has the
status "no data": its report says so, with no violations, since nothing was checked.

A baseline made with a trained text classifier (`--model`) also holds the model's predicted labels and
confidence over its text sample, and a PCA summary of its embeddings; baseline.json records the model's
folder and fingerprint. A run scores the window with the same model (or the one `--model` names, which must
be that model) and checks label and confidence drift (`baseline_drift_check`) and embedding drift (MMD,
`embedding_drift`, see `nlpforge.monitoring.embeddings`).
"""
import html
import json
import random
import re
import stat
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from nlpforge.data.readers import ReadingSettings, json_record, read_table, text_lines
from nlpforge.errors import ConfigError, DataError
from nlpforge.monitoring.content import content_drift
from nlpforge.monitoring.descriptors import describe
from nlpforge.monitoring.embeddings import embedding_drift, load_summary, project, save_summary, summarize
from nlpforge.monitoring.plots import write_plots
from nlpforge.monitoring.scoring import load_scorer, model_identity, score, tokenizer_of
from nlpforge.monitoring.statistics import (COMPARISON_METHODS, check, check_constraints, check_statistics,
                                            statistics, suggest_constraints)
from nlpforge.settings import MAX_SEED, Settings, check_output_folder, group, setting

EMBEDDINGS = "embeddings.safetensors"


class BaselineError(ConfigError):
    """A baseline folder is missing or incomplete, or its model is not the window's."""


@dataclass
class BaselineSettings(Settings):
    """Baseline a text data set: SageMaker statistics.json and constraints.json of its text descriptors."""

    data: str = setting("", "data file of the baseline texts (.csv, .tsv, .jsonl, .parquet)", required=True)
    text_column: str = setting("text", "column that holds the text")
    output: str = setting("", "folder to write the baseline to", required=True)
    model: str | None = setting(None, "model folder or alias whose tokenizer gives the WordPiece descriptors; a "
                                      "trained text classifier also baselines its labels, confidence and "
                                      "embeddings")
    sample_size: int = setting(5000, "baseline texts kept for the content drift check (and scored by the model)",
                               min=10)
    embedding_components: int = setting(8, "PCA components kept of the model's embeddings", min=1, max=256)
    embedding_sample: int = setting(500, "baseline texts whose projected embeddings the embedding drift test "
                                         "compares with a window's", min=10)
    comparison_threshold: float = setting(0.1, "L-infinity distance above which a descriptor has drifted",
                                          min=0.0, max=1.0)
    comparison_method: Literal[COMPARISON_METHODS] = setting(
        "Robust", "Robust: the distance must also exceed what chance gives at these sample sizes; Simple: the "
                  "threshold alone")
    seed: int = setting(0, "seed of the text sample", min=0, max=MAX_SEED)
    reading: ReadingSettings = group(ReadingSettings)


@dataclass
class MonitorRunSettings(Settings):
    """Check a window of texts (the server's data capture, or a data file) against a baseline."""

    baseline: str = setting("", "baseline folder written by `nlpforge monitor baseline`", required=True)
    output: str = setting("", "folder to write the run's report to", required=True)
    capture: str | None = setting(None, "data capture folder of the server (read recursively)")
    data: str | None = setting(None, "data file of the window's texts, instead of --capture")
    text_column: str = setting("text", "column that holds the text (with --data)")
    since: str | None = setting(None, "first capture timestamp in the window (ISO 8601, e.g. 2026-01-01T00:00)")
    until: str | None = setting(None, "capture timestamps before this one are in the window (ISO 8601)")
    model: str | None = setting(None, "model that serves the window, scored for label, confidence and embedding "
                                      "drift; it must be the baseline's (default: the baseline's model)")
    permutations: int = setting(100, "shuffles of the permutation tests of content and embedding drift (at "
                                     "least 20: p = (k+1)/(n+1) never falls below 0.05 with fewer; at most "
                                     "10000, which resolves p to 0.0001 and each shuffle refits the test)",
                                min=20, max=10_000)
    seed: int = setting(0, "seed of the content and embedding drift tests and of the samples", min=0,
                        max=MAX_SEED)
    scored_sample: int = setting(5000, "window texts the model scores (a seeded sample when there are more)",
                                 min=10)
    embedding_sample: int = setting(500, "window texts (a seeded sample) the embedding drift test compares with "
                                         "the baseline's", min=10)
    length_tolerance: float = setting(0.1, "share of the baseline's length range beyond its min and max that "
                                           "still counts as in range", min=0.0)
    reading: ReadingSettings = group(ReadingSettings)

    def check(self):
        for value, flag in ((self.capture, "--capture"), (self.data, "--data")):
            if value is not None and not value.strip():  # Path("") is the working directory, read recursively
                raise ConfigError(f"{flag} is empty; give the server's data capture folder (--capture) or a file of "
                                  "texts (--data)")
        if (self.capture is None) == (self.data is None):
            raise ConfigError("give either --capture (the server's data capture folder) or --data (a file of "
                              "texts), not " + ("both" if self.capture else "neither"))
        since = None if self.since is None else parse_stamp(self.since, "--since")
        until = None if self.until is None else parse_stamp(self.until, "--until")
        if since and until and since >= until:
            raise ConfigError(f"--since {self.since} is not before --until {self.until}: the window would be empty; "
                              "swap them")


def parse_stamp(value: str, what: str) -> datetime:
    """An ISO 8601 time as an aware datetime; one without an offset is UTC, as the capture's own stamps are."""
    try:
        stamp = datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise ConfigError(f"{what} {value!r}: not an ISO 8601 time; write e.g. 2026-01-01T00:00 or "
                          "2026-01-01T00:00:00+02:00 (UTC when no offset is given)") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def read_texts(path, text_column: str, reading: ReadingSettings | None = None) -> list:
    """The texts of a data file; an empty cell is an empty text, a JSON null a missing one."""
    table = read_table(path, [text_column], **(reading or ReadingSettings()).options)
    return [None if value is None or value != value else str(value) for value in table.frame[text_column]]


def as_text(value):
    """A captured input as a text: a string as it is, None as missing, any other JSON value as JSON."""
    return value if value is None or isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def capture_records(folder):
    """Every record `DataCapture` wrote under `folder` (every model and version), oldest file first."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such capture folder; give the folder the server writes data capture to "
                        "(its --capture-dir)")
    # Only regular files: a folder, a dangling link or a FIFO (which would block) named like a log is not one.
    files = sorted((p for p in folder.rglob("capture.jsonl*") if p.is_file() and stat.S_ISREG(p.stat().st_mode)),
                   key=lambda p: (p.parent, -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0))
    for path in files:
        try:
            content = path.read_bytes()
        except FileNotFoundError:  # rotated away since the listing: its records are in the next file
            continue
        except OSError as error:
            raise DataError(f"{path}: cannot read the capture log ({error.strerror or error})") from None
        lines = text_lines(content.decode("utf-8", errors="replace"))
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            if number == len(lines) and not content.endswith(b"\n"):
                try:  # the server may be writing it, or a crash cut it short: a whole record or none
                    record = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                if isinstance(record, dict):
                    yield valid_unicode(record) if "\\ud" in line.lower() else record
                continue
            record = json_record(line, number, path)
            yield valid_unicode(record) if "\\ud" in line.lower() else record


LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # json.loads pairs the valid ones into one character


def valid_unicode(value):
    """`value` with each lone surrogate (a request's "\\ud800", which JSON allows) as U+FFFD: no tokenizer or
    UTF-8 file takes them."""
    if isinstance(value, str):
        return LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [valid_unicode(item) for item in value]
    if isinstance(value, dict):
        return {key: valid_unicode(item) for key, item in value.items()}
    return value


def capture_inputs(folder, since: str | None = None, until: str | None = None) -> list:
    """The inputs recorded by `DataCapture` under `folder` (every model and version), oldest file first, whose
    timestamps lie in [since, until); with either bound, a record without a readable timestamp is left out."""
    since = None if since is None else parse_stamp(since, "--since")
    until = None if until is None else parse_stamp(until, "--until")
    inputs = []
    for record in capture_records(folder):
        if since or until:
            try:
                stamp = parse_stamp(record.get("timestamp", ""), "timestamp")
            except ConfigError:
                continue
            if (since and stamp < since) or (until and stamp >= until):
                continue
        inputs.append(record.get("input"))
    return inputs


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def suggest_baseline(settings: BaselineSettings) -> dict:
    """Write the baseline folder; returns its statistics."""
    check_output_folder(settings.output, "--output", "baseline", "baseline.json")
    texts = read_texts(settings.data, settings.text_column, settings.reading)
    if not any(text and text.strip() for text in texts):
        raise DataError(f"{settings.data}: text column '{settings.text_column}' is empty in every row; name the "
                        "column that holds the text with --text-column")
    identity = model_identity(settings.model) if settings.model is not None else None
    present = [t for t in texts if t is not None]
    sample = random.Random(settings.seed).sample(present, min(settings.sample_size, len(present)))
    descriptors = describe(texts, tokenizer_of(identity))
    scorer, labels, summary = load_scorer(identity), None, None
    if scorer is not None and sample:
        scores = score(scorer, sample)
        descriptors["confidence"], labels = scores.confidence, scores.labels
        summary = summarize(scores.embeddings, settings.embedding_components, settings.embedding_sample,
                            settings.seed)
    stats = statistics(texts, descriptors, labels)
    output = Path(settings.output)
    output.mkdir(parents=True, exist_ok=True)
    _write_json(output / "statistics.json", stats)
    _write_json(output / "constraints.json", suggest_constraints(stats, settings.comparison_threshold,
                                                                 settings.comparison_method))
    with open(output / "texts.jsonl", "w", encoding="utf-8") as handle:
        for text in sample:
            handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    if summary is not None:
        save_summary(summary, output / EMBEDDINGS)
    _write_json(output / "baseline.json", {"data": str(settings.data), "text_column": settings.text_column,
                                           "model": settings.model, "model_identity": identity,
                                           "sample_size": len(sample),
                                           "embeddings": EMBEDDINGS if summary is not None else None})
    return stats


def read_baseline(folder) -> tuple[dict, dict, dict, list[str]]:
    folder = Path(folder)
    if not folder.is_dir():
        raise BaselineError(f"{folder}: no such baseline folder; write one with `nlpforge monitor baseline`")
    for name in ("statistics.json", "constraints.json", "baseline.json", "texts.jsonl"):
        if not (folder / name).is_file():
            raise BaselineError(f"{folder}: not a baseline folder, {name} is missing; write it again with "
                                "`nlpforge monitor baseline`")
    loaded = []
    for name, check_file in (("statistics.json", check_statistics), ("constraints.json", check_constraints),
                             ("baseline.json", None)):
        try:
            loaded.append(json.loads((folder / name).read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise BaselineError(f"{folder / name}: not valid JSON ({error}); write the baseline again with "
                                "`nlpforge monitor baseline`") from None
        try:
            if not isinstance(loaded[-1], dict):
                raise ConfigError(f"holds {json.dumps(loaded[-1])[:40]}, not a JSON object")
            if check_file is not None:
                check_file(loaded[-1])
        except ConfigError as error:
            raise BaselineError(f"{folder / name}: {error.message}; correct it, or write the baseline again with "
                                "`nlpforge monitor baseline`") from None
    lines = text_lines((folder / "texts.jsonl").read_text(encoding="utf-8"))
    sample = [json_record(line, n, folder / "texts.jsonl")["text"] for n, line in enumerate(lines, 1) if line.strip()]
    return loaded[0], loaded[1], loaded[2], sample


def _window_model(settings: MonitorRunSettings, info: dict) -> dict | None:
    """The identity of the model that scores the window: the baseline's own, checked to be unchanged."""
    recorded = info.get("model_identity")
    if recorded is None and info.get("model") is not None:  # a baseline written before models had identities
        recorded = {"model": info["model"], "path": info["model"], "fingerprint": None, "task": None}
    baseline = settings.baseline
    if settings.model is not None:
        given = model_identity(settings.model)
        if recorded is None or given["fingerprint"] != recorded["fingerprint"]:
            made = f"model {recorded['path']}" if recorded else "no model"
            raise BaselineError(f"baseline {baseline} was made with {made}; the window is scored by model "
                                f"{given['path']}; baseline again with --model {settings.model}")
        return given
    if recorded is None:
        return None
    if recorded["fingerprint"] is None:  # nothing to compare with: the tokenizer is all such a baseline used
        return model_identity(recorded["path"])
    if not recorded["fingerprint"].startswith("alias:") and not Path(recorded["path"]).is_dir():
        raise BaselineError(f"baseline {baseline} was made with model {recorded['path']}, which no longer exists; "
                            "restore it, or baseline again with --model MODEL")
    current = model_identity(recorded["path"])
    if current["fingerprint"] != recorded["fingerprint"]:
        raise BaselineError(f"baseline {baseline} was made with model {recorded['path']}, whose files have changed "
                            f"since; baseline again with --model {recorded['path']}")
    return current


def _read_window(settings: MonitorRunSettings) -> tuple[list, int]:
    """(texts, how many captured inputs were JSON values that are not strings)."""
    if settings.capture is None:
        return read_texts(settings.data, settings.text_column, settings.reading), 0
    inputs = capture_inputs(settings.capture, settings.since, settings.until)
    return [as_text(v) for v in inputs], sum(v is not None and not isinstance(v, str) for v in inputs)


def monitor_run(settings: MonitorRunSettings) -> dict:
    """Check the window against the baseline and write the run's files; returns report.json's content."""
    stats, constraints, info, sample = read_baseline(settings.baseline)
    identity = _window_model(settings, info)
    if Path(settings.output).resolve() == Path(settings.baseline).resolve():
        raise ConfigError(f"--output {settings.output}: is the baseline folder, whose statistics the run would "
                          "overwrite; give the run its own folder")
    check_output_folder(settings.output, "--output", "run's report", "report.json")
    texts, non_string = _read_window(settings)
    output = Path(settings.output)
    output.mkdir(parents=True, exist_ok=True)
    descriptors = describe(texts, tokenizer_of(identity))
    window = [t for t in texts if t is not None]
    scorer = load_scorer(identity) if window and info.get("embeddings") else None
    labels = projections = embedding = None
    if scorer is not None:
        scored = random.Random(settings.seed).sample(window, min(settings.scored_sample, len(window)))
        scores = score(scorer, scored)
        descriptors["confidence"], labels = scores.confidence, scores.labels
        summary = load_summary(Path(settings.baseline) / info["embeddings"])
        projections = (summary["projected"], project(summary, scores.embeddings))
        embedding = embedding_drift(*projections, permutations=settings.permutations, keep=settings.embedding_sample,
                                    seed=settings.seed)
    _write_json(output / "statistics.json", statistics(texts, descriptors, labels))
    report = {"status": "no data", "item_count": len(texts), "baseline": str(settings.baseline),
              "model": identity["path"] if identity else None, "content_drift": None,
              "embedding_drift": asdict(embedding) if embedding else None, "plots": []}
    violations = []
    if texts:
        violations = check(stats, constraints, texts, descriptors, labels, non_string, settings.length_tolerance)
        if window and sample:
            drift = content_drift(sample, window, permutations=settings.permutations, seed=settings.seed)
            report["content_drift"] = asdict(drift)
            if drift.drift:
                violations.append({"feature_name": "text", "constraint_check_type": "text_content_drift",
                                   "description": drift.description()})
        if embedding is not None and embedding.drift:
            violations.append({"feature_name": "embedding", "constraint_check_type": "embedding_drift",
                               "description": embedding.description()})
        report["status"] = "violations" if violations else "no violations"
        report["plots"] = write_plots(output, stats, descriptors, labels, projections)
    report["violations"] = violations
    _write_json(output / "constraint_violations.json", {"violations": violations})
    _write_json(output / "report.json", report)
    (output / "report.html").write_text(report_html(report), encoding="utf-8")
    return report


def report_html(report: dict) -> str:
    """A small self-contained HTML page: status, violations, and what separates the window from the baseline."""
    e = html.escape
    rows = "".join(f"<tr><td>{e(v['feature_name'])}</td><td>{e(v['constraint_check_type'])}</td>"
                   f"<td>{e(v['description'])}</td></tr>" for v in report["violations"])
    parts = [f"<h1>Model Monitor report</h1><p>Status: <b>{e(report['status'])}</b>, "
             f"{report['item_count']} texts in the window, baseline {e(report['baseline'])}.</p>"]
    if report["violations"]:
        parts.append("<h2>Violations</h2><table border=1><tr><th>feature</th><th>check</th><th>description</th>"
                     f"</tr>{rows}</table>")
    embedding = report.get("embedding_drift")
    if embedding:
        parts.append(f"<h2>Embeddings</h2><p>MMD² {embedding['mmd2']:.4f}, permutation p = "
                     f"{embedding['p_value']:.4f} ({embedding['baseline_count']} baseline and "
                     f"{embedding['window_count']} window texts)</p>")
    if report.get("plots"):
        parts.append("<h2>Plots</h2>" + "".join(
            f"<figure><img src=\"{e(plot['file'])}\" alt=\"{e(plot['title'])}\"><figcaption>{e(plot['title'])}"
            "</figcaption></figure>" for plot in report["plots"]))
    drift = report.get("content_drift")
    if drift:
        p = f", p = {drift['p_value']:.4f}" if drift["p_value"] is not None else ""
        parts.append(f"<h2>Content</h2><p>{e(drift['method'])}: AUC {drift['auc']:.3f}{p}</p>")
        for side in ("window", "baseline"):
            parts.append(f"<h3>Words of the {side}</h3><p>{e(', '.join(drift[side + '_words']) or '-')}</p>")
            parts.append(f"<h3>Examples from the {side}</h3><ul>"
                         + "".join(f"<li>{e(t[:300])}</li>" for t in drift[side + "_examples"]) + "</ul>")
    return "<!doctype html><meta charset=utf-8><title>Model Monitor report</title>" + "".join(parts) + "\n"
