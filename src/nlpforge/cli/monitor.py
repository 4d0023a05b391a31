"""`nlpforge monitor baseline|run|schedule|list|describe`: baseline a text data set, then check windows of
captured traffic against it, once or on a schedule.

    nlpforge monitor baseline --data train.csv --text-column review_body --model models/stars --output baseline
    nlpforge monitor run --baseline baseline --capture capture --output report
    nlpforge monitor run --baseline baseline --data new_reviews.csv --text-column review_body --output report
    nlpforge monitor schedule --baseline baseline --capture model_store/capture --output schedule --interval 3600 \
        --model-name stars --model-version 1.0
    nlpforge monitor list schedule
    nlpforge monitor describe schedule [RUN]
"""
import signal
import threading

import typer

from nlpforge.cli import app
from nlpforge.cli.options import command_from_settings
from nlpforge.monitoring.run import BaselineSettings, MonitorRunSettings
from nlpforge.monitoring.schedule import ScheduleSettings

monitor_app = typer.Typer(no_args_is_help=True, help="Baseline text data and check captured traffic for drift.")
app.add_typer(monitor_app, name="monitor")


def _baseline(settings: BaselineSettings) -> None:
    from nlpforge.monitoring.run import suggest_baseline

    stats = suggest_baseline(settings)
    typer.echo(f"baselined {stats['dataset']['item_count']:,} texts, {len(stats['features'])} features "
               f"-> {settings.output}")


def _run(settings: MonitorRunSettings) -> None:
    from nlpforge.monitoring.run import monitor_run

    report = monitor_run(settings)
    typer.echo(f"{report['status']}: {report['item_count']:,} texts, {len(report['violations'])} violations "
               f"-> {settings.output}")
    for violation in report["violations"]:
        typer.echo(f"  {violation['constraint_check_type']} {violation['feature_name']}: {violation['description']}")


command_from_settings(monitor_app, "baseline", BaselineSettings, _baseline,
                      help="Write SageMaker statistics.json and constraints.json of a data set's text descriptors.")
command_from_settings(monitor_app, "run", MonitorRunSettings, _run,
                      help="Check a window (data capture or a file) against a baseline; write its violations "
                           "and report.")


def _schedule(settings: ScheduleSettings) -> None:
    from nlpforge.monitoring.schedule import run_schedule

    stop = threading.Event()

    def stop_after_this_run(signum, _frame):
        typer.echo(f"{signal.Signals(signum).name}: stopping after the current run", err=True)
        stop.set()

    previous = {s: signal.signal(s, stop_after_this_run) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        typer.echo(f"monitoring {settings.capture} every {settings.interval:g}s -> {settings.output}")
        runs = run_schedule(settings, stop, on_run=lambda run: typer.echo(_run_line(run)))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    typer.echo(f"stopped after {len(runs)} run(s); see `nlpforge monitor list {settings.output}`")


def _run_line(run: dict) -> str:
    window = f"{run['since'] or 'start'} .. {run['until']}"
    return (f"{run['run']}  {window}  {run['status']}  {run['item_count']} texts  {run['violations']} violations"
            + (f"  ({run['error']})" if run.get("error") else ""))


command_from_settings(monitor_app, "schedule", ScheduleSettings, _schedule,
                      help="Run the monitor over new data capture every --interval seconds, keeping each run's "
                           "report; Ctrl-C or SIGTERM stops between runs.")


@monitor_app.command("list")
def list_command(schedule: str = typer.Argument(..., help="schedule folder (--output of `nlpforge monitor "
                                                          "schedule`)")) -> None:
    """The runs of a schedule: time, window, status, texts and violations."""
    from nlpforge.monitoring.schedule import list_runs

    runs = list_runs(schedule)
    if not runs:
        typer.echo(f"{schedule}: no runs yet")
        return
    rows = [("RUN", "SINCE", "UNTIL", "STATUS", "TEXTS", "VIOLATIONS")] + [
        (r["run"], r["since"] or "-", r["until"], r["status"], str(r["item_count"]), str(r["violations"]))
        for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@monitor_app.command("describe")
def describe_command(schedule: str = typer.Argument(..., help="schedule folder"),
                     run: str = typer.Argument(None, help="a run's name (see `nlpforge monitor list`); default: "
                                                         "the latest")) -> None:
    """A schedule's settings and the latest (or given) run with its violations."""
    from nlpforge.monitoring.schedule import describe_schedule

    described = describe_schedule(schedule, run)
    typer.echo(f"schedule {described['folder']}: {described['run_count']} run(s)")
    for key, value in described["schedule"].items():
        typer.echo(f"  {key}: {value}")
    chosen = described["run"]
    if chosen is None:
        typer.echo("no runs yet")
        return
    typer.echo(f"run {chosen['run']}: {chosen['status']}, {chosen['item_count']} texts, window "
               f"{chosen['since'] or 'start'} .. {chosen['until']}" + (f", error: {chosen['error']}"
                                                                      if chosen.get("error") else ""))
    typer.echo(f"report: {described['folder']}/runs/{chosen['run']}/report.html")
    for violation in described["violations"]:
        typer.echo(f"  {violation['constraint_check_type']} {violation['feature_name']}: {violation['description']}")
