"""Jobs: the SDK's training jobs (status, duration, billable seconds), each with its metric curves, Debugger rule
statuses and log, which tails while the job runs.

    GET /jobs?name=bert          the jobs whose name contains "bert", newest first
    GET /jobs/{name}             one job
    GET /jobs/{name}/log?offset=N   the log from byte N on, the job's status and its metric charts (JSON)
"""
import codecs
from collections import Counter
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from nlpforge.errors import TrainingJobError
from nlpforge.ui.app import NotFound, render, settings_of

router = APIRouter()
LOG_CHUNK = 256 * 1024
# (id, title) of the metric charts of a job, in page order; a metric goes to the first family it matches.
FAMILIES = [("loss", "Loss (train / validation)"), ("learning-rate", "Learning rate"),
            ("samples-per-second", "Samples / s"), ("validation", "Validation metrics"), ("other", "Other metrics")]
KEY_METRIC_COLUMNS = 4


def family(name: str) -> str:
    lowered = name.lower()
    if "loss" in lowered:
        return "loss"
    if "learning_rate" in lowered or "learning-rate" in lowered or lowered in ("lr", "learning rate"):
        return "learning-rate"
    if "samples" in lowered or "per_second" in lowered:
        return "samples-per-second"
    if lowered.startswith(("validation", "eval", "test", "val_", "val:")):
        return "validation"
    return "other"


def metric_charts(rows: list[dict], every_family: bool = False) -> list[dict]:
    """One line chart per family of metrics ({id, title, data}); a metric reported by several sources (the
    engine's own rows and the log's metric_definitions) is drawn from the source with the most points.
    `every_family` keeps the families with no points yet (a running job fills them in)."""
    points: dict[tuple[str, str], list] = {}
    for index, row in enumerate(rows):
        name, value, step = row.get("name"), row.get("value"), row.get("step")
        if not isinstance(name, str) or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        x = step if isinstance(step, (int, float)) and not isinstance(step, bool) else index
        points.setdefault((name, str(row.get("source", ""))), []).append([x, value])
    chosen: dict[str, list] = {}
    for (name, _), found in points.items():
        if len(found) > len(chosen.get(name, [])):
            chosen[name] = found
    charts = []
    for key, title in FAMILIES:
        series = [{"name": name, "points": found} for name, found in chosen.items() if family(name) == key]
        if series or (every_family and key != "other"):
            charts.append({"id": f"chart-{key}", "title": title, "data": {"series": series}})
    return charts


def key_metric_names(metric_sets: list[dict], limit: int = KEY_METRIC_COLUMNS) -> list[str]:
    """The validation/test metrics most of `metric_sets` have (the columns of a table of jobs or runs)."""
    counts = Counter(name for metrics in metric_sets for name in metrics if family(name) == "validation"
                     or (family(name) == "loss" and name.lower().startswith(("validation", "eval", "test"))))
    return [name for name, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]]


def describe(request: Request, name: str) -> dict:
    """describe_job; NotFound for an unknown job, TrainingJobError (a 400 page) naming a damaged file."""
    from nlpforge.sdk.jobs import describe_job, job_paths

    root = settings_of(request).root
    try:
        job_paths(name, root)
    except TrainingJobError:
        raise NotFound(f"no training job named {name!r} under {root}; see /jobs") from None
    return describe_job(name, root)


def read_log(job: dict, offset: int, whole_file: bool = False) -> tuple[str, int, int]:
    """(text, start, end): the log from byte `offset` on (at most its end), at most LOG_CHUNK bytes (the last
    LOG_CHUNK from a line start when `whole_file` and the log is longer). While the job still writes, only whole
    lines, or a LOG_CHUNK piece of a longer line (a progress bar redrawn with \\r writes no newline for long)."""
    log = Path(job["LogFile"])
    if not log.is_file():
        return "", offset, offset
    with open(log, "rb") as stream:
        size = stream.seek(0, 2)
        offset = max(0, size - LOG_CHUNK) if whole_file else min(max(offset, 0), size)
        stream.seek(offset)
        chunk = stream.read(LOG_CHUNK)
    if whole_file and offset and b"\n" in chunk:
        start = chunk.index(b"\n") + 1
        chunk, offset = chunk[start:], offset + start
    if job["TrainingJobStatus"] == "InProgress":
        end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) + 1
        if not end and len(chunk) == LOG_CHUNK:  # all of it but a character cut short at its end
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            decoder.decode(chunk, final=False)
            end = len(chunk) - len(decoder.getstate()[0])
        chunk = chunk[:end]
    return chunk.decode("utf-8", errors="replace"), offset, offset + len(chunk)


@router.get("/jobs")
def jobs_page(request: Request, name: str = ""):
    from nlpforge.sdk.jobs import DAMAGED, final_metrics, job_paths, list_jobs, read_metrics

    root = settings_of(request).root
    if not root.is_dir():
        return render(request, "jobs.html", title="Training jobs", rows=None, root=root, name=name)
    rows = list_jobs(root, name or None)
    for row in rows:
        latest = final_metrics(read_metrics(job_paths(row["name"], root))) if row["status"] != DAMAGED else {}
        row["metrics"] = {key: found["value"] for key, found in latest.items()}
    return render(request, "jobs.html", title="Training jobs", rows=rows, root=root, name=name,
                  metrics=key_metric_names([row["metrics"] for row in rows]))


@router.get("/jobs/{name}")
def job_page(request: Request, name: str):
    from nlpforge.sdk.jobs import job_paths, read_metrics

    job = describe(request, name)
    running = job["TrainingJobStatus"] == "InProgress"
    log, start, offset = read_log(job, 0, whole_file=True)
    charts = metric_charts(read_metrics(job_paths(name, settings_of(request).root)), every_family=running)
    return render(request, "jobs_job.html", title=f"Training job {name}", job=job, charts=charts, log=log,
                  log_start=start, offset=offset, running=running)


@router.get("/jobs/{name}/log")
def job_log(request: Request, name: str, offset: int = 0):
    """The log from byte `offset` on, the next offset, the job's status and its metric charts."""
    from nlpforge.sdk.jobs import job_paths, read_metrics

    job = describe(request, name)
    text, _, offset = read_log(job, offset)
    charts = metric_charts(read_metrics(job_paths(name, settings_of(request).root)))
    return JSONResponse({"text": text, "offset": offset, "status": job["TrainingJobStatus"], "charts": charts})
