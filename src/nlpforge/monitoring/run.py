"""Baselines and monitoring runs: the importable functions behind `nlpforge monitor baseline|run`.

    suggest_baseline(BaselineSettings(data="train.csv", text_column="review_body", model="models/stars",
                                      output="baseline"))
    # baseline/statistics.json, constraints.json, texts.jsonl (a sample for content drift), baseline.json
    summary = monitor_run(MonitorRunSettings(baseline="baseline", capture="capture", output="report"))
    # report/statistics.json, constraint_violations.json, report.json, report.html

A run reads the server's data capture (every `capture.jsonl*` under the folder, see
`nlpforge.serving.capture`) between `since` and `until`, or a data file. A window without texts has the
status "no data": its report says so, with no violations, since nothing was checked.
"""
import html
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from nlpforge.data.readers import ReadingSettings, json_record, read_table
from nlpforge.errors import ConfigError, DataError
from nlpforge.monitoring.content import content_drift
from nlpforge.monitoring.descriptors import describe
from nlpforge.monitoring.statistics import check, statistics, suggest_constraints
from nlpforge.settings import Settings, check_writable, group, setting


class BaselineError(ConfigError):
    """A baseline folder is missing or incomplete."""


@dataclass
class BaselineSettings(Settings):
    """Baseline a text data set: SageMaker statistics.json and constraints.json of its text descriptors."""

    data: str = setting("", "data file of the baseline texts (.csv, .tsv, .jsonl, .parquet)", required=True)
    text_column: str = setting("text", "column that holds the text")
    output: str = setting("", "folder to write the baseline to", required=True)
    model: str | None = setting(None, "model folder or alias whose tokenizer gives the WordPiece descriptors")
    sample_size: int = setting(5000, "baseline texts kept for the content drift check", min=10)
    comparison_threshold: float = setting(0.1, "L-infinity distance above which a descriptor has drifted",
                                          min=0.0, max=1.0)
    comparison_method: Literal["Robust", "Simple"] = setting(
        "Robust", "Robust: the distance must also exceed what chance gives at these sample sizes; Simple: the "
                  "threshold alone")
    seed: int = setting(0, "seed of the text sample")
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
    permutations: int = setting(100, "shuffles of the permutation test of content drift", min=19)
    seed: int = setting(0, "seed of the content drift test")
    reading: ReadingSettings = group(ReadingSettings)

    def check(self):
        if (self.capture is None) == (self.data is None):
            raise ConfigError("give either --capture (the server's data capture folder) or --data (a file of "
                              "texts), not " + ("both" if self.capture else "neither"))


def read_texts(path, text_column: str, reading: ReadingSettings | None = None) -> list:
    """The texts of a data file; an empty cell is an empty text, a JSON null a missing one."""
    table = read_table(path, [text_column], **(reading or ReadingSettings()).options)
    return [None if value is None or value != value else str(value) for value in table.frame[text_column]]


def read_capture(folder, since: str | None = None, until: str | None = None) -> list:
    """The inputs recorded by `DataCapture` under `folder` (every model and version), oldest file first."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such capture folder; give the folder the server writes data capture to "
                        "(its --capture-folder)")
    files = sorted(folder.rglob("capture.jsonl*"), key=lambda p: (p.parent, -int(p.suffix[1:]) if
                                                                  p.suffix[1:].isdigit() else 0))
    texts = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            record = json_record(line, number, path)
            stamp = str(record.get("timestamp", ""))
            if (since and stamp < since) or (until and stamp >= until):
                continue
            text = record.get("input")
            texts.append(text if text is None or isinstance(text, str) else json.dumps(text, ensure_ascii=False))
    return texts


def _tokenizer(model: str | None):
    if model is None:
        return None
    from nlpforge.models.registry import load_tokenizer, resolve_base

    return load_tokenizer(resolve_base(model))


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def suggest_baseline(settings: BaselineSettings) -> dict:
    """Write the baseline folder; returns its statistics."""
    check_writable(settings.output, "--output", folder=True)
    texts = read_texts(settings.data, settings.text_column, settings.reading)
    stats = statistics(texts, describe(texts, _tokenizer(settings.model)))
    output = Path(settings.output)
    output.mkdir(parents=True, exist_ok=True)
    _write_json(output / "statistics.json", stats)
    _write_json(output / "constraints.json", suggest_constraints(stats, settings.comparison_threshold,
                                                                 settings.comparison_method))
    present = [t for t in texts if t is not None]
    sample = random.Random(settings.seed).sample(present, min(settings.sample_size, len(present)))
    with open(output / "texts.jsonl", "w", encoding="utf-8") as handle:
        for text in sample:
            handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    _write_json(output / "baseline.json", {"data": str(settings.data), "text_column": settings.text_column,
                                           "model": settings.model, "sample_size": len(sample)})
    return stats


def _read_baseline(folder) -> tuple[dict, dict, dict, list[str]]:
    folder = Path(folder)
    if not folder.is_dir():
        raise BaselineError(f"{folder}: no such baseline folder; write one with `nlpforge monitor baseline`")
    for name in ("statistics.json", "constraints.json", "baseline.json", "texts.jsonl"):
        if not (folder / name).is_file():
            raise BaselineError(f"{folder}: not a baseline folder, {name} is missing; write it again with "
                                "`nlpforge monitor baseline`")
    loaded = []
    for name in ("statistics.json", "constraints.json", "baseline.json"):
        try:
            loaded.append(json.loads((folder / name).read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise BaselineError(f"{folder / name}: not valid JSON ({error}); write the baseline again with "
                                "`nlpforge monitor baseline`") from None
    lines = (folder / "texts.jsonl").read_text(encoding="utf-8").splitlines()
    sample = [json_record(line, n, folder / "texts.jsonl")["text"] for n, line in enumerate(lines, 1) if line.strip()]
    return loaded[0], loaded[1], loaded[2], sample


def monitor_run(settings: MonitorRunSettings) -> dict:
    """Check the window against the baseline and write the run's files; returns report.json's content."""
    stats, constraints, info, sample = _read_baseline(settings.baseline)
    check_writable(settings.output, "--output", folder=True)
    texts = (read_capture(settings.capture, settings.since, settings.until) if settings.capture is not None
             else read_texts(settings.data, settings.text_column, settings.reading))
    output = Path(settings.output)
    output.mkdir(parents=True, exist_ok=True)
    descriptors = describe(texts, _tokenizer(info.get("model")))
    _write_json(output / "statistics.json", statistics(texts, descriptors))
    report = {"status": "no data", "item_count": len(texts), "baseline": str(settings.baseline),
              "content_drift": None}
    violations = []
    if texts:
        violations = check(stats, constraints, texts, descriptors)
        window = [t for t in texts if t is not None]
        if window and sample:
            drift = content_drift(sample, window, permutations=settings.permutations, seed=settings.seed)
            report["content_drift"] = asdict(drift)
            if drift.drift:
                violations.append({"feature_name": "text", "constraint_check_type": "text_content_drift",
                                   "description": drift.description()})
        report["status"] = "violations" if violations else "no violations"
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
    drift = report.get("content_drift")
    if drift:
        p = f", p = {drift['p_value']:.4f}" if drift["p_value"] is not None else ""
        parts.append(f"<h2>Content</h2><p>{e(drift['method'])}: AUC {drift['auc']:.3f}{p}</p>")
        for side in ("window", "baseline"):
            parts.append(f"<h3>Words of the {side}</h3><p>{e(', '.join(drift[side + '_words']) or '-')}</p>")
            parts.append(f"<h3>Examples from the {side}</h3><ul>"
                         + "".join(f"<li>{e(t[:300])}</li>" for t in drift[side + "_examples"]) + "</ul>")
    return "<!doctype html><meta charset=utf-8><title>Model Monitor report</title>" + "".join(parts) + "\n"
