"""Tuning jobs: the Optuna studies of HyperparameterTuner in <jobs root>/optuna.db; each one's trials (one training
job each), the best trial, the objective over trials and parameter importance.

    GET /tuning
    GET /tuning/{name}
"""
import math
import warnings
from collections import Counter

from fastapi import APIRouter, Request

from nlpforge.errors import TuningError
from nlpforge.ui.app import NotFound, render, settings_of, sqlite_problem

router = APIRouter()
OPTUNA_TABLES = {"studies", "study_directions", "trials", "trial_values", "version_info"}


def storage(request: Request) -> str | None:
    """The tuner's default storage under the jobs root, when it exists (nothing is created); TuningError when the
    file is not an Optuna store (checked read only, as Optuna would add its tables to any SQLite file)."""
    path = settings_of(request).root / "optuna.db"
    if not path.is_file():
        return None
    problem = sqlite_problem(path, OPTUNA_TABLES, "an Optuna store")
    if problem:
        raise TuningError(problem)
    return f"sqlite:///{path}"


def when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


@router.get("/tuning")
def tuning_page(request: Request):
    from nlpforge.tuning.tuner import optuna_module

    studies, problem = [], None
    try:
        url = storage(request)
    except TuningError as error:
        url, problem = None, error.message
    if url:
        for found in optuna_module().get_all_study_summaries(url, include_best_trial=True):
            best = found.best_trial if len(found.directions) == 1 else None  # a multi-objective study has none
            studies.append({"name": found.study_name, "trials": found.n_trials,
                            "direction": ", ".join(d.name.lower() for d in found.directions),
                            "best": best.value if best else None,
                            "best_job": best.user_attrs.get("job_name", "") if best else "",
                            "start": when(found.datetime_start)})
    studies.sort(key=lambda s: s["start"], reverse=True)
    return render(request, "tuning.html", title="Tuning jobs", studies=studies, storage=url,
                  root=settings_of(request).root, problem=problem)


def importance(study, optuna) -> tuple[dict, str | None]:
    """Parameter importance (fANOVA-style, Optuna's default evaluator), or why there is none."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(done) < 2:
        return {}, f"Parameter importance needs at least 2 completed trials; this tuning job has {len(done)}."
    if not any(t.params for t in done):
        return {}, "Parameter importance needs tuned hyperparameters; these trials have none."
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna warns that importances are equal when trials tie
            return optuna.importance.get_param_importances(study), None
    except (RuntimeError, ValueError) as error:
        return {}, f"Optuna cannot compute parameter importance for these trials: {error}"


def objective_series(trials: list, maximize: bool) -> dict:
    """The objective of each completed trial (dots) and the best value so far (a line)."""
    points, best_so_far, best = [], [], None
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.value is None or not math.isfinite(trial.value):
            continue
        points.append([trial.number, trial.value])
        best = trial.value if best is None else (max if maximize else min)(best, trial.value)
        best_so_far.append([trial.number, best])
    return {"series": [{"name": "objective", "points": points, "kind": "scatter"},
                       {"name": "best so far", "points": best_so_far, "kind": "line"}]}


@router.get("/tuning/{name:path}")
def study_page(request: Request, name: str):
    from nlpforge.tuning.tuner import TuningJobAnalytics, counted_trials, optuna_module, retried_numbers, trial_state

    optuna, url = optuna_module(), storage(request)
    root = settings_of(request).root
    try:
        study = optuna.load_study(study_name=name, storage=url) if url else None
    except KeyError:
        study = None
    if study is None:
        raise NotFound(f"no tuning job named {name!r} in {root / 'optuna.db'}; see /tuning")
    if len(study.directions) > 1:
        raise TuningError(f"{name!r} in {root / 'optuna.db'} is a multi-objective Optuna study (directions "
                          f"{', '.join(d.name.lower() for d in study.directions)}); HyperparameterTuner makes "
                          "single-objective studies, the only kind this page shows; read this one with Optuna itself")
    trials = study.get_trials(deepcopy=False)
    number = {t.user_attrs.get("job_name"): t.number for t in trials}
    table = TuningJobAnalytics(study, root).dataframe()
    table = table.astype(object).where(table.notna(), None)  # NaN (no value, a parameter not tried) -> None
    params = sorted({k for t in trials for k in t.params})
    rows = [{"number": number.get(row["TrainingJobName"]), "job": row["TrainingJobName"],
             "status": row["TrainingJobStatus"], "state": row["TrialState"],
             "params": {p: row[p] for p in params if row.get(p) is not None}, "value": row["FinalObjectiveValue"],
             "seconds": row["TrainingElapsedTimeSeconds"]}
            for row in table.to_dict("records")]
    try:
        best = study.best_trial
    except ValueError:  # no completed trial
        best = None
    for row in rows:
        row["best"] = best is not None and row["number"] == best.number
    weights, why = importance(study, optuna)
    maximize = study.direction.name == "MAXIMIZE"
    retried = retried_numbers(trials)
    shown = {t.number for t in counted_trials(trials)} | retried  # surplus trials never ran
    counts = Counter(trial_state(t, retried) for t in trials if t.number in shown)
    return render(request, "tuning_job.html", title=f"Tuning job {name}", name=name, rows=rows, best=best,
                  params=params, direction="maximize" if maximize else "minimize", counts=counts,
                  objective=objective_series(trials, maximize),
                  importance={"labels": list(weights), "values": list(weights.values())}, importance_note=why)
