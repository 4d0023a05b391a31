"""Models: model folders (given, every completed SDK job's, every registered MLflow model version's), each with
its card, metrics, confusion matrix and lineage (job -> model version -> endpoint)."""
import hashlib
import json
from pathlib import Path

from fastapi import APIRouter, Request

from nlpforge.sdk.jobs import is_number
from nlpforge.ui.app import NotFound, render, settings_of

router = APIRouter()


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def is_model_folder(path: Path) -> bool:
    return (path / "nlpforge.json").is_file()


def registered_versions(settings) -> list[dict]:
    """{"name", "version", "job", "model_dir", "endpoint"} of every version in the MLflow model registry of the
    jobs root; none when it has no store."""
    from nlpforge.tracking.runs import client
    from nlpforge.ui.experiments import store_problem

    if not (settings.root / "mlflow.db").is_file() or store_problem(settings.root):
        return []

    try:
        found = client(settings.root).search_model_versions()
    except Exception:  # noqa: BLE001 (a store MLflow cannot read: the page shows the folders it has)
        return []
    return [{"name": v.name, "version": f"{v.name}/{v.version}", "job": v.tags.get("nlpforge.job_name"),
             "model_dir": v.tags.get("nlpforge.model_dir"), "endpoint": v.tags.get("nlpforge.endpoint")}
            for v in sorted(found, key=lambda v: (v.name, int(v.version)))]


def model_folders(settings) -> dict[str, dict]:
    """{id: {"path", "job", "versions"}} of every model folder the app knows, the given ones first: a given
    folder is a model folder or holds some (one level deep)."""
    from nlpforge.sdk.jobs import list_jobs

    found: list[tuple[Path, str | None]] = []
    for entry in map(Path, settings.models):
        if is_model_folder(entry):
            found.append((entry, None))
        elif entry.is_dir():
            found.extend((child, None) for child in sorted(entry.iterdir()) if is_model_folder(child))
    for job in sorted(list_jobs(settings.root), key=lambda row: row["name"]):
        if job["status"] == "Completed" and is_model_folder(settings.root / job["name"] / "model"):
            found.append((settings.root / job["name"] / "model", job["name"]))
    versions = registered_versions(settings)
    found.extend((Path(v["model_dir"]), v["job"]) for v in versions
                 if v["model_dir"] and is_model_folder(Path(v["model_dir"])))
    folders: dict[str, dict] = {}
    for path, job in found:
        path = path.resolve()
        key = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        entry = folders.setdefault(key, {"path": path, "job": job, "versions": []})
        entry["job"] = entry["job"] or job
    for version in versions:
        for entry in folders.values():
            if version["model_dir"] and Path(version["model_dir"]).resolve() == entry["path"]:
                entry["versions"].append(version)
    return folders


def endpoints_of(settings, folder: Path, versions: list[dict]) -> list[str]:
    """Endpoints serving this folder: SDK endpoint records, and the endpoints that deploy() tagged its registered
    versions with."""
    from nlpforge.sdk.predictor import endpoint_records

    names = [record.get("endpoint_name") for record in endpoint_records(settings.root)
             if record.get("model_dir") and Path(record["model_dir"]).resolve() == folder]
    names += [version["endpoint"] for version in versions if version["endpoint"]]
    return list(dict.fromkeys(name for name in names if name))


def validation_report(meta: dict) -> dict:
    report = meta.get("validation_report")
    return report if isinstance(report, dict) else {}


def confusion_matrix(report: dict) -> dict | None:
    """The validation confusion matrix as heatmap data (rows: true labels, columns: predicted); None unless it is
    a square of numbers, one row and column per label."""
    labels, matrix = report.get("labels"), report.get("confusion_matrix")
    if not labels or not isinstance(labels, list) or not isinstance(matrix, list) or len(matrix) != len(labels):
        return None
    if not all(isinstance(row, list) and len(row) == len(labels) and all(map(is_number, row)) for row in matrix):
        return None
    labels = [str(label) for label in labels]
    return {"rows": labels, "cols": labels, "values": matrix}


def per_class(report: dict) -> dict:
    """{label: {"precision", "recall", "f1", "support"}} of the validation report, when it has them."""
    rows = report.get("per_class")
    keys = ("precision", "recall", "f1")
    return {label: row for label, row in rows.items()
            if isinstance(row, dict) and all(isinstance(row.get(k), (int, float)) for k in keys)} \
        if isinstance(rows, dict) else {}


def numbers(metrics, prefix: str = "") -> dict:
    """The metrics named `prefix`... whose values are numbers; none when `metrics` is not a dict."""
    if not isinstance(metrics, dict):
        return {}
    return {k: v for k, v in metrics.items() if isinstance(k, str) and k.startswith(prefix) and is_number(v)}


@router.get("/models")
def models_page(request: Request):
    settings = settings_of(request)
    rows = []
    for key, found in model_folders(settings).items():
        meta = read_json(found["path"] / "nlpforge.json")
        rows.append({"id": key, "path": found["path"], "job": found["job"], "task": meta.get("task", "?"),
                     "base": meta.get("base_model", ""), "created": meta.get("created", ""),
                     "versions": [v["version"] for v in found["versions"]],
                     "metrics": numbers(meta.get("metrics"), "validation_")})
    return render(request, "models.html", title="Models", rows=rows, root=settings.root)


@router.get("/models/{key}")
def model_page(request: Request, key: str):
    settings = settings_of(request)
    found = model_folders(settings).get(key)
    if found is None:
        raise NotFound(f"no model {key!r}; the Models page lists the model folders this app knows")
    folder = found["path"]
    meta = read_json(folder / "nlpforge.json")
    labels = read_json(folder / "labels.json").get("labels")
    card = (folder / "README.md").read_text(encoding="utf-8", errors="replace") \
        if (folder / "README.md").is_file() else ""
    report, versions = validation_report(meta), found["versions"]
    return render(request, "model.html", title=f"Model {found['job'] or folder.name}", key=key, folder=folder,
                  meta=meta, card=card, labels=labels if isinstance(labels, list) else [],
                  metrics=numbers(meta.get("metrics")), matrix=confusion_matrix(report), per_class=per_class(report),
                  job=found["job"], versions=versions, endpoints=endpoints_of(settings, folder, versions))
