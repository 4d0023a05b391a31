"""`nlpforge monitor baseline|run`: baseline a text data set, then check windows of captured traffic against it.

    nlpforge monitor baseline --data train.csv --text-column review_body --model models/stars --output baseline
    nlpforge monitor run --baseline baseline --capture capture --output report
    nlpforge monitor run --baseline baseline --data new_reviews.csv --text-column review_body --output report
"""
import typer

from nlpforge.cli import app
from nlpforge.cli.options import command_from_settings
from nlpforge.monitoring.run import BaselineSettings, MonitorRunSettings

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
