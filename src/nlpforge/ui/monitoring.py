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


def described_run(request: Request, index: int, run: str) -> tuple[Path, dict]:
    """(schedule folder, describe_schedule of the run); NotFound for an unknown schedule or run."""
    from nlpforge.monitoring.schedule import describe_schedule

    folder = schedule_folder(request, index)
    try:
        return folder, describe_schedule(folder, run)
    except NlpforgeError as error:
        raise NotFound(str(error)) from None


@router.get("/monitoring")
def monitoring_page(request: Request):
    from nlpforge.monitoring.schedule import list_runs

    schedules = []
    for index, folder in enumerate(schedule_folders(settings_of(request))):
        entry = {"index": index, "folder": folder, "runs": [], "error": None}
        try:
            entry["runs"] = list(reversed(list_runs(folder)))
        except NlpforgeError as error:
            entry["error"] = str(error)
        schedules.append(entry)
    return render(request, "monitoring.html", title="Monitoring", schedules=schedules)


@router.get("/monitoring/{index}/{run}")
def run_page(request: Request, index: int, run: str):
    folder, described = described_run(request, index, run)
    run_folder = folder / "runs" / described["run"]["run"]
    try:
        report = json.loads((run_folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        report = {}
    plots = [plot for plot in report.get("plots") or []
             if isinstance(plot, dict) and (run_folder / str(plot.get("file"))).is_file()]
    return render(request, "monitoring_run.html", title=f"Monitoring run {run}", index=index, folder=folder,
                  run=described["run"], violations=described["violations"], plots=plots,
                  content=report.get("content_drift") or {}, embedding=report.get("embedding_drift") or {})


@router.get("/monitoring/{index}/{run}/plot/{name}")
def plot(request: Request, index: int, run: str, name: str):
    """A drift plot of a run: only a PNG file directly inside that run's folder."""
    folder, described = described_run(request, index, run)
    run_folder = (folder / "runs" / described["run"]["run"]).resolve()
    path = (run_folder / name).resolve()
    if path.suffix != ".png" or path.parent != run_folder or not path.is_file():
        raise NotFound(f"no plot {name!r} in run {run!r}")
    return FileResponse(path, media_type="image/png")
