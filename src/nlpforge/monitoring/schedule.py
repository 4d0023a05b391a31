"""Monitoring schedules: the monitor run over new data capture at an interval, each run's report kept.

    run_schedule(ScheduleSettings.of(baseline="baseline", capture="model_store/capture", output="schedule",
                                     interval=3600, model_name="stars", model_version="1.0"))
    list_runs("schedule")                       # one dict per run, oldest first
    describe_schedule("schedule", run=None)     # the settings, the latest (or given) run and its violations

The schedule folder holds:

    schedule.json                 the schedule's settings
    latest.json                   the latest run (as its run.json)
    runs/2026-11-26T21-30-00-000Z/   one monitoring run's report (report.json, constraint_violations.json,
                                  statistics.json, report.html) and run.json: its window, status and counts

A run checks the capture written in [since, until): until is the time the run starts, since the previous
run's until, so each captured text is checked once. The first run starts at once and checks all earlier
capture (or from `since`); a schedule restarted on the same folder goes on where its latest run stopped. A run
folder appears complete or not at all (written beside, then renamed), and a stop (`stop.set()`, Ctrl-C or
SIGTERM in the CLI) takes effect between runs, so no report is lost. A run that fails (the baseline removed,
say) is kept with status "failed"; the next run checks its window again.

With `model_name` (and `model_version`) the schedule watches that model's capture only and writes its
status where the model server exports it as Prometheus metrics (`nlpforge.serving.metrics`).
"""
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

from nlpforge.errors import ConfigError, DataError, NlpforgeError
from nlpforge.monitoring.run import MonitorRunSettings, monitor_run
from nlpforge.settings import Settings, check_output_folder, setting, to_flat


class ScheduleError(ConfigError):
    """A schedule folder or one of its runs cannot be found."""


def _as_in_run(name: str):
    """A setting that means what MonitorRunSettings' field of that name means: the same default, help and limits."""
    f = next(f for f in fields(MonitorRunSettings) if f.name == name)
    return setting(f.default, f.metadata["help"], min=f.metadata["min"], max=f.metadata["max"])


MIN_INTERVAL, MAX_INTERVAL = 0.01, 365 * 24 * 3600  # seconds between two runs' starts


@dataclass
class ScheduleSettings(Settings):
    """Run the monitor over new data capture at an interval, keeping each run's report."""

    baseline: str = setting("", "baseline folder written by `nlpforge monitor baseline`", required=True)
    capture: str = setting("", "the server's data capture folder (its --capture-dir; default "
                               "<model-store>/capture)", required=True)
    output: str = setting("", "schedule folder: schedule.json, latest.json and one report per run under runs/",
                          required=True)
    # at most a year: the wait between runs cannot take more than threading.TIMEOUT_MAX (an OverflowError)
    interval: float = setting(3600.0, "seconds from the start of one run to the start of the next (at most a year)",
                              min=MIN_INTERVAL, max=MAX_INTERVAL)
    runs: int | None = setting(None, "stop after this many runs (default: until Ctrl-C or SIGTERM)", min=1)
    model_name: str | None = setting(None, "watch only this model's capture, and publish its drift status in the "
                                           "server's metrics")
    model_version: str | None = setting(None, "with --model-name: only this version (default: every version)")
    since: str | None = setting(None, "start of the first window (ISO 8601); default: all earlier capture")
    model: str | None = _as_in_run("model")
    permutations: int = _as_in_run("permutations")
    seed: int = _as_in_run("seed")

    def check(self):
        if self.model_name is None and self.model_version is None:
            return
        from nlpforge.serving.registry import NAME_RULE  # nlpforge.serving loads torch: only when a model is named

        if self.model_version is not None and self.model_name is None:
            raise ConfigError("--model-version needs --model-name: name the model whose version is watched")
        for value, flag in ((self.model_name, "--model-name"), (self.model_version, "--model-version")):
            if value is not None and not NAME_RULE.fullmatch(value):
                raise ConfigError(f"{flag} {value!r}: use ASCII letters, digits, '-', '_' or '.', starting with a "
                                  "letter or digit, as the server names models")


def now_stamp() -> str:
    """The current time as data capture writes its timestamps (`2026-01-01T12:00:00.123Z`), so that they compare."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _write_json(path: Path, value) -> None:
    """Write beside, then rename: a reader sees the old file or the new one."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


def watched_folder(settings: ScheduleSettings) -> Path:
    """The capture the schedule reads: the whole capture folder, or one model's (version's) part of it."""
    folder = Path(settings.capture)
    for part in (settings.model_name, settings.model_version):
        folder = folder / part if part else folder
    return folder


def run_once(settings: ScheduleSettings, since: str | None, raise_errors: bool = False) -> dict:
    """One monitoring run over the capture in [since, until), until just after it starts; returns its run.json
    content. A user error (the baseline or capture folder gone) is raised with `raise_errors`, else kept as a
    run with status "failed"."""
    runs = Path(settings.output) / "runs"
    started = until = now_stamp()
    # until is the first millisecond after the run starts (and no earlier run's name), so text captured in the
    # millisecond the run starts is in this window, not the next one
    while until == started or (runs / until.replace(":", "-").replace(".", "-")).exists():
        time.sleep(0.001)
        until = now_stamp()
    name = until.replace(":", "-").replace(".", "-")
    partial = runs / f".{name}.partial"
    run = {"run": name, "since": since, "until": until}
    try:
        report = monitor_run(MonitorRunSettings.of(baseline=settings.baseline, capture=str(watched_folder(settings)),
                                                   output=str(partial), since=since, until=until,
                                                   model=settings.model, permutations=settings.permutations,
                                                   seed=settings.seed))
        run.update(status=report["status"], item_count=report["item_count"], violations=len(report["violations"]))
    except NlpforgeError as error:
        shutil.rmtree(partial, ignore_errors=True)
        if raise_errors:
            raise
        partial.mkdir(parents=True)
        run.update(status="failed", item_count=0, violations=0, error=error.message)
    run["ended"] = now_stamp()
    _write_json(partial / "run.json", run)
    os.replace(partial, runs / name)
    return run


def _publish(settings: ScheduleSettings, run: dict) -> None:
    """latest.json, and the model's drift status for the server's metrics when the schedule watches a model."""
    _write_json(Path(settings.output) / "latest.json", run)
    if settings.model_name and run["status"] != "failed":
        from nlpforge.serving.metrics import drift_status_path

        ended = datetime.fromisoformat(run["ended"].replace("Z", "+00:00")).timestamp()
        _write_json(drift_status_path(settings.capture, settings.model_name, settings.model_version),
                    {"model_name": settings.model_name, "model_version": settings.model_version or "",
                     "status": run["status"], "violations": run["violations"], "item_count": run["item_count"],
                     "timestamp": ended, "schedule": str(Path(settings.output).resolve()), "run": run["run"]})


def run_schedule(settings: ScheduleSettings, stop: threading.Event | None = None, on_run=None) -> list[dict]:
    """Run until `settings.runs` runs are done or `stop` is set (between runs); returns the runs done.

    An error in the first run (a bad baseline or capture folder) is raised; a later run that fails is kept with
    status "failed" and its error, and the schedule goes on."""
    stop = stop or threading.Event()
    capture = Path(settings.capture)
    if not capture.is_dir():
        raise DataError(f"{capture}: no such capture folder; give the folder the server writes data capture to "
                        "(its --capture-dir, default <model-store>/capture)")
    check_output_folder(settings.output, "--output", "schedule", "schedule.json", own=("runs",))
    output = Path(settings.output)
    (output / "runs").mkdir(parents=True, exist_ok=True)
    watched_folder(settings).mkdir(parents=True, exist_ok=True)  # a model that has had no traffic yet: no data
    _write_json(output / "schedule.json", {**to_flat(settings), "started": now_stamp()})
    checked = [run for run in list_runs(output) if run["status"] != "failed"]
    since = checked[-1]["until"] if checked else settings.since
    done: list[dict] = []
    next_start = time.monotonic()
    while not stop.is_set():
        run = run_once(settings, since, raise_errors=not done)
        done.append(run)
        _publish(settings, run)
        if on_run is not None:
            on_run(run)
        if run["status"] != "failed":
            since = run["until"]
        if settings.runs is not None and len(done) >= settings.runs:
            break
        next_start = max(next_start + settings.interval, time.monotonic())
        stop.wait(next_start - time.monotonic())
    return done


def _schedule_folder(folder) -> Path:
    folder = Path(folder)
    if not (folder / "schedule.json").is_file():
        what = "no such folder" if not folder.exists() else "not a schedule folder (no schedule.json)"
        raise ScheduleError(f"{folder}: {what}; start a schedule with `nlpforge monitor schedule --output "
                            f"{folder} ...`")
    return folder


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ScheduleError(f"{path}: cannot be read ({error}); the schedule folder is damaged") from None


def _read_run(path: Path) -> dict:
    """A run's run.json: an object whose "run" is the run folder's name."""
    record = _read(path)
    if not isinstance(record, dict) or not isinstance(record.get("run"), str):
        raise ScheduleError(f"{path}: is not a run record (a JSON object with the run's name under \"run\"); the "
                            "schedule folder is damaged, remove that run's folder")
    return record


def list_runs(folder) -> list[dict]:
    """The schedule's complete runs, oldest first (their run.json)."""
    runs = _schedule_folder(folder) / "runs"
    return [_read_run(path) for path in sorted(runs.glob("*/run.json")) if not path.parent.name.startswith(".")]


def describe_schedule(folder, run: str | None = None) -> dict:
    """The schedule's settings, its number of runs, and the latest (or named) run with its violations."""
    folder = _schedule_folder(folder)
    runs = list_runs(folder)
    chosen = runs[-1] if runs and run is None else None
    if run is not None:
        chosen = next((r for r in runs if r["run"] == run), None)
        if chosen is None:
            known = ", ".join(r["run"] for r in runs[-5:]) or "none yet"
            raise ScheduleError(f"{folder}: no run {run!r} (latest runs: {known}); see `nlpforge monitor list "
                                f"{folder}`")
    violations = []
    path = folder / "runs" / chosen["run"] / "constraint_violations.json" if chosen is not None else None
    if path is not None and path.is_file():
        found = _read(path)
        violations = found.get("violations") if isinstance(found, dict) else None
        if not isinstance(violations, list):
            raise ScheduleError(f"{path}: is not a violations report (a JSON object with a list under "
                                "\"violations\"); the schedule folder is damaged, remove that run's folder")
    schedule = _read(folder / "schedule.json")
    if not isinstance(schedule, dict):
        raise ScheduleError(f"{folder / 'schedule.json'}: is not a schedule (a JSON object of its settings); the "
                            "schedule folder is damaged, create the schedule again")
    return {"schedule": schedule, "run_count": len(runs), "run": chosen,
            "violations": violations, "folder": str(folder)}
