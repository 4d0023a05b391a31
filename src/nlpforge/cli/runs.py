"""`nlpforge runs list|show|compare`: the MLflow runs of training jobs and tuning trials (tracking/runs.py)."""
import json

import typer

from nlpforge.cli import app
from nlpforge.settings import existing_jobs_root

runs_app = typer.Typer(no_args_is_help=True, help="Experiment runs recorded in MLflow (open them with `mlflow ui`).")
app.add_typer(runs_app, name="runs")

ROOT = typer.Option(None, "--jobs-root", help="folder of job folders whose mlflow.db to read "
                                               "(default: $MLFLOW_TRACKING_URI, else $NLPFORGE_JOBS_ROOT or ./jobs)",
                    callback=existing_jobs_root)


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for line in [header, *rows]:
        typer.echo("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip())


@runs_app.command("list")
def list_command(experiment: str = typer.Option(None, "--experiment", help="only this experiment"),
                 jobs_root: str = ROOT) -> None:
    """One line per run, newest first: job, status, experiment, trial, final metrics."""
    from nlpforge.tracking.runs import list_runs, reading_store, tracking_uri

    with reading_store(jobs_root):
        runs = list_runs(experiment, jobs_root)
    if not runs:
        typer.echo(f"no runs in {tracking_uri(jobs_root, create=False)}")
        return
    rows = [[run.info.run_id[:12], run.info.run_name or "", run.info.status, run.data.tags.get("nlpforge.trial_name", ""),
             " ".join(f"{k}={v:.4g}" for k, v in sorted(run.data.metrics.items()))[:100]] for run in runs]
    print_table(["run", "name", "status", "trial", "metrics"], rows)
    typer.echo(f"store: {tracking_uri(jobs_root)}")


@runs_app.command("show")
def show_command(name: str = typer.Argument(..., help="training job name or MLflow run id"),
                 jobs_root: str = ROOT) -> None:
    """A run's parameters, final metrics, tags and artifacts, as JSON."""
    from nlpforge.tracking.runs import client, find_run, reading_store

    with reading_store(jobs_root):
        run = find_run(name, jobs_root)
        artifacts = [a.path for a in client(jobs_root).list_artifacts(run.info.run_id)]
    typer.echo(json.dumps({"run_id": run.info.run_id, "name": run.info.run_name, "status": run.info.status,
                           "experiment_id": run.info.experiment_id, "artifact_uri": run.info.artifact_uri,
                           "params": run.data.params, "metrics": run.data.metrics, "tags": run.data.tags,
                           "artifacts": artifacts}, indent=2))


@runs_app.command("compare")
def compare_command(names: list[str] = typer.Argument(..., help="two or more job names or run ids"),
                    jobs_root: str = ROOT) -> None:
    """Parameters and final metrics side by side."""
    from nlpforge.errors import TrackingError
    from nlpforge.tracking.runs import compare_runs, reading_store

    if len(names) < 2:
        raise TrackingError("compare needs at least two runs")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise TrackingError(f"{', '.join(repeated)} named more than once; name each run to compare once")
    with reading_store(jobs_root):
        print_table(*compare_runs(names, jobs_root))
