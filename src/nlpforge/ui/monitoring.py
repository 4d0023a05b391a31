"""Monitoring: each schedule's runs, and a run's violations, drift plots and the words that separate the
window from the baseline. Schedules are the folders given with --monitor (a run folder stands for its
schedule) and those the SDK's model monitor keeps under <jobs root>/_monitoring/; a page names a schedule by
its number in that list."""
import json
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from nlpforge.errors import NlpforgeError
from nlpforge.ui.app import NotFound, render, settings_of

router = APIRouter()


def schedule_folders(settings) -> list[Path]:
    """The given schedule folders (a run folder's schedule in its place), then the SDK's, each once."""
    folders = []
    for entry in map(Path, settings.monitor):
        is_run = (entry / "run.json").is_file() and entry.parent.name == "runs"
        folders.append(entry.parent.parent if is_run else entry)
    if settings.root.is_dir():
        folders += sorted(path.parent for path in settings.root.glob("_monitoring/*/schedule.json"))
    unique = {}
    for folder in folders:
        unique.setdefault(folder.resolve(), folder)
    return list(unique.values())


def schedule_folder(request: Request, index: int) -> Path:
    folders = schedule_folders(settings_of(request))
    if not 0 <= index < len(folders):
        raise NotFound(f"no monitoring schedule number {index}; the Monitoring page lists the {len(folders)} known")
    return folders[index]


def read_object(path: Path, what: str) -> dict:
    """A JSON object the monitor wrote ({} when the file is not there); ScheduleError naming a damaged file."""
    from nlpforge.monitoring.schedule import ScheduleError

    if not path.exists():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # ValueError: not JSON, not UTF-8
        raise ScheduleError(f"{path}: cannot be read ({error}); the schedule folder is damaged") from None
    if not isinstance(value, dict):
        raise ScheduleError(f"{path}: holds {value!r:.40}, not {what}; the schedule folder is damaged")
    return value


def checked_runs(folder: Path) -> list[dict]:
    """list_runs, each run.json checked to be a run record (a JSON object with a "run" name); ScheduleError
    naming the first that is not."""
    from nlpforge.monitoring.schedule import ScheduleError, list_runs

    runs = list_runs(folder)
    for path in sorted((folder / "runs").glob("*/run.json")):
        if not path.parent.name.startswith("."):
            run = read_object(path, "a run record")
            if not isinstance(run.get("run"), str):
                raise ScheduleError(f"{path}: has no run name (\"run\"); the schedule folder is damaged")
    return runs


def described_run(request: Request, index: int, run: str) -> tuple[Path, dict]:
    """(schedule folder, describe_schedule of the run); NotFound for an unknown schedule or run, ScheduleError
    (a 400 page) naming a damaged file of the schedule."""
    from nlpforge.monitoring.schedule import ScheduleError, describe_schedule

    folder = schedule_folder(request, index)
    if not (folder / "schedule.json").is_file():
        raise NotFound(f"{folder} is not a monitoring schedule folder (no schedule.json); see /monitoring")
    if run not in [record["run"] for record in checked_runs(folder)]:
        raise NotFound(f"no run {run!r} in the monitoring schedule {folder}; see /monitoring")
    violations = read_object(folder / "runs" / run / "constraint_violations.json", "a violations report")
    if not isinstance(violations.get("violations", []), list):
        raise ScheduleError(f"{folder / 'runs' / run / 'constraint_violations.json'}: its \"violations\" is not a "
                            "list; the schedule folder is damaged")
    return folder, describe_schedule(folder, run)


@router.get("/monitoring")
def monitoring_page(request: Request):
    schedules = []
    for index, folder in enumerate(schedule_folders(settings_of(request))):
        entry = {"index": index, "folder": folder, "runs": [], "error": None}
        try:
            entry["runs"] = list(reversed(checked_runs(folder)))
        except NlpforgeError as error:
            entry["error"] = str(error)
        schedules.append(entry)
    return render(request, "monitoring.html", title="Monitoring", schedules=schedules)


@router.get("/monitoring/{index}/{run}")
def run_page(request: Request, index: int, run: str):
    folder, described = described_run(request, index, run)
    run_folder = folder / "runs" / described["run"]["run"]
    report = read_object(run_folder / "report.json", "a drift report")
    plots = [plot for plot in as_list(report.get("plots"))
             if isinstance(plot, dict) and (run_folder / str(plot.get("file"))).is_file()]
    return render(request, "monitoring_run.html", title=f"Monitoring run {run}", index=index, folder=folder,
                  run=described["run"], violations=[v for v in described["violations"] if isinstance(v, dict)],
                  plots=plots, content=drift(report.get("content_drift")),
                  embedding=drift(report.get("embedding_drift")))


def drift(section) -> dict:
    """A drift section of report.json, its lists of words and examples lists whatever the file holds."""
    section = as_dict(section)
    lists = ("window_words", "baseline_words", "window_examples", "baseline_examples")
    return {**section, **{key: as_list(section[key]) for key in lists if key in section}}


def as_list(value) -> list:
    return value if isinstance(value, list) else []


def as_dict(value) -> dict:
    return value if isinstance(value, dict) else {}


@router.get("/monitoring/{index}/{run}/plot/{name}")
def plot(request: Request, index: int, run: str, name: str):
    """A drift plot of a run: only a PNG file directly inside that run's folder."""
    folder, described = described_run(request, index, run)
    run_folder = (folder / "runs" / described["run"]["run"]).resolve()
    path = (run_folder / name).resolve()
    if path.suffix != ".png" or path.parent != run_folder or not path.is_file():
        raise NotFound(f"no plot {name!r} in run {run!r}")
    return FileResponse(path, media_type="image/png")
