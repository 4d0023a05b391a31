"""`nlpforge jobs list|describe|logs|stop`: the training jobs under the jobs root (sdk/jobs.py)."""
import json

import typer

from nlpforge.cli import app
from nlpforge.settings import existing_jobs_root

jobs_app = typer.Typer(no_args_is_help=True, help="Training jobs run by the SDK (Estimator.fit).")
app.add_typer(jobs_app, name="jobs")

ROOT = typer.Option(None, "--jobs-root", help="folder of job folders (default: $NLPFORGE_JOBS_ROOT or ./jobs)",
                    callback=existing_jobs_root)


@jobs_app.command("list")
def list_command(contains: str = typer.Option(None, "--contains", help="only jobs whose name holds this text"),
                 jobs_root: str = ROOT) -> None:
    """One line per job, newest first: name, status, training and billable seconds."""
    from nlpforge.sdk.jobs import list_jobs

    rows = list_jobs(jobs_root, contains)
    if not rows:
        typer.echo(f"no training job's name holds {contains!r}; see `nlpforge jobs list`" if contains
                   else "no training jobs yet")
        return
    width = max(len(row["name"]) for row in rows)
    typer.echo(f"{'name':<{width}}  {'status':<10} {'seconds':>7} {'billable':>8}  failure")
    for row in rows:
        typer.echo(f"{row['name']:<{width}}  {row['status']:<10} {row['seconds'] or '-':>7} "
                   f"{row['billable'] or '-':>8}  {row['failure']}")


@jobs_app.command("describe")
def describe_command(name: str = typer.Argument(..., help="training job name"), jobs_root: str = ROOT) -> None:
    """The job as JSON, shaped like SageMaker's DescribeTrainingJob."""
    from nlpforge.sdk.jobs import describe_job

    typer.echo(json.dumps(describe_job(name, jobs_root), indent=2, default=str))


@jobs_app.command("logs")
def logs_command(name: str = typer.Argument(..., help="training job name"),
                 follow: bool = typer.Option(False, "--follow/--no-follow", "-f", help="keep printing until it ends"),
                 jobs_root: str = ROOT) -> None:
    """Print the job's kept log."""
    from nlpforge.sdk.jobs import follow_log

    follow_log(name, typer.echo, jobs_root, follow=follow)


@jobs_app.command("stop")
def stop_command(name: str = typer.Argument(..., help="training job name"), jobs_root: str = ROOT) -> None:
    """SIGTERM the job's script (it may checkpoint); the job ends Stopped."""
    from nlpforge.sdk.jobs import stop_job

    typer.echo(f"{name}: {stop_job(name, jobs_root)}")
