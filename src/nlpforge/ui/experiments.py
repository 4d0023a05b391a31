"""Experiments: the MLflow store's experiments and runs, and runs compared side by side (parameter diffs,
final metrics, metric overlays from each run's history).

    GET /experiments
    GET /experiments/compare?run=RUN_ID&run=JOB_NAME
"""
import os
from datetime import datetime, timezone

from fastapi import APIRouter, Query, Request

from nlpforge.errors import TrackingError
from nlpforge.settings import sqlite_file
from nlpforge.ui.app import NotFound, render, settings_of, sqlite_problem
from nlpforge.ui.jobs import key_metric_names

router = APIRouter()
PARAM_COLUMNS = 6
MLFLOW_TABLES = {"experiments", "runs", "metrics", "params", "tags"}
NO_STORE_HINT = ("Every SDK training job is tracked in <jobs root>/mlflow.db when it ends (unless "
                 "NLPFORGE_TRACKING=0); set MLFLOW_TRACKING_URI to read a tracking server instead.")


def has_store(request: Request) -> bool:
    """Whether there is a store to read; tracking.runs would create the jobs root and an empty database."""
    return bool(os.environ.get("MLFLOW_TRACKING_URI")) or (settings_of(request).root / "mlflow.db").is_file()


def store_problem(root) -> str | None:
    """Why the store cannot be read, or None: a SQLite file that is not MLflow's (checked read only, as MLflow
    would add its tables to any), a tracking server that does not answer."""
    from nlpforge.tracking.runs import client, reading_store, tracking_uri

    uri = tracking_uri(root, create=False)
    path = sqlite_file(uri)
    if path is not None:
        return sqlite_problem(path, MLFLOW_TABLES, "an MLflow store") if path.exists() else None
    try:
        with reading_store(root):
            client(root).search_experiments(max_results=1)
    except TrackingError as error:
        return error.message
    return None


def when(milliseconds) -> str:
    if not milliseconds:
        return ""
    return datetime.fromtimestamp(milliseconds / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def run_name(run) -> str:
    return run.data.tags.get("nlpforge.job_name") or run.info.run_name or run.info.run_id[:12]


def summary(run) -> dict:
    info, data = run.info, run.data
    seconds = (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None
    return {"id": info.run_id, "name": run_name(run), "job": data.tags.get("nlpforge.job_name"),
            "trial": data.tags.get("nlpforge.trial_name", ""), "status": info.status, "start": when(info.start_time),
            "seconds": seconds, "metrics": data.metrics, "params": data.params}


def varying(params: list[dict], limit: int = PARAM_COLUMNS) -> list[str]:
    """The parameters whose values differ between runs (data paths and hashes last), at most `limit`."""
    keys = sorted({k for p in params for k in p if len({q.get(k) for q in params}) > 1},
                  key=lambda k: (k.startswith(("data.", "sagemaker.")), k))
    return keys[:limit]


@router.get("/experiments")
def experiments_page(request: Request):
    root = settings_of(request).root
    problem = store_problem(root) if has_store(request) else None
    if not has_store(request) or problem:
        return render(request, "experiments.html", title="Experiments", experiments=None, root=root,
                      hint=NO_STORE_HINT, problem=problem)
    from nlpforge.tracking.runs import client, list_runs, reading_store

    with reading_store(root):
        names = {e.experiment_id: e.name for e in client(root).search_experiments()}
        runs = list_runs(root=root, max_results=500)
    by_experiment: dict[str, list] = {}
    for run in runs:
        by_experiment.setdefault(run.info.experiment_id, []).append(summary(run))
    experiments = [{"name": names.get(key, key), "runs": own, "metrics": key_metric_names([r["metrics"] for r in own]),
                    "params": varying([r["params"] for r in own if r["params"]])}
                   for key, own in by_experiment.items()]
    return render(request, "experiments.html", title="Experiments", experiments=experiments, root=root,
                  hint=NO_STORE_HINT)


@router.get("/experiments/compare")
def compare_page(request: Request, run: list[str] = Query(default=[])):
    root = settings_of(request).root
    chosen = list(dict.fromkeys(r for r in run if r))
    if not chosen:
        return render(request, "experiments_compare.html", title="Compare runs", runs=None)
    if not has_store(request):
        raise NotFound(f"no MLflow store under {root}, so no run {chosen[0]!r}")
    problem = store_problem(root)
    if problem:  # else a store that cannot be read would look like runs that do not exist
        raise TrackingError(problem)
    from mlflow.exceptions import MlflowException

    from nlpforge.tracking.runs import client, compare_runs, find_run

    try:
        runs = [find_run(name, root) for name in chosen]
        header, rows = compare_runs(chosen, root)
    except TrackingError as error:
        raise NotFound(error.message) from None
    except MlflowException:  # find_run's search filter cannot hold a name with a quote
        raise NotFound(f"no MLflow run for {', '.join(map(repr, chosen))}; see /experiments") from None
    param_keys = {k for r in runs for k in r.data.params}
    table = [{"key": row[0], "cells": row[1:], "differs": len(set(row[1:])) > 1, "param": row[0] in param_keys}
             for row in rows]
    mlflow = client(root)
    charts = []
    for key in sorted({k for r in runs for k in r.data.metrics}):
        series = [{"name": name, "points": [[m.step, m.value] for m in mlflow.get_metric_history(r.info.run_id, key)]}
                  for name, r in zip(header[1:], runs)]
        if any(len(s["points"]) > 1 for s in series):  # single final values are in the table
            charts.append({"title": key, "data": {"series": [s for s in series if s["points"]]}})
    return render(request, "experiments_compare.html", title="Compare runs", runs=[summary(r) for r in runs],
                  names=header[1:], params=[row for row in table if row["param"]],
                  metrics=[row for row in table if not row["param"]], charts=charts)
