"""`nlpforge train <task>`: train a model; flags come from the task's job settings (nlpforge.training.settings)."""
import typer

from nlpforge import tasks
from nlpforge.cli import app
from nlpforge.cli.options import command_from_settings
from nlpforge.training.settings import job_class

train_app = typer.Typer(no_args_is_help=True, help="Train a model for a task.")
app.add_typer(train_app, name="train")


def _run(job) -> None:
    from nlpforge.training.run import train

    result = train(job)
    typer.echo(f"done in {result.train_seconds:.0f}s of training ({result.samples_per_second:.1f} samples/s); "
               f"{tasks.get(job.task).describe_metrics(result.metrics)} -> {result.output}")


for _name in tasks.names():
    command_from_settings(train_app, _name, job_class(_name), _run, help=tasks.get(_name).summary)
