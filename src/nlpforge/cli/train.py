"""`nlpforge train <task>`: fine-tune a model; flags come from the task's settings dataclass."""
import typer

from nlpforge.cli import app
from nlpforge.cli.options import command_from_settings
from nlpforge.training.config import TextClassificationConfig

train_app = typer.Typer(no_args_is_help=True, help="Train a model for a task.")
app.add_typer(train_app, name="train")


def _run_text_classification(config: TextClassificationConfig) -> None:
    from nlpforge.training.text_classification import train_text_classification

    result = train_text_classification(config)
    typer.echo(f"done in {result.train_seconds:.0f}s of training ({result.samples_per_second:.1f} samples/s); "
               f"validation accuracy {result.metrics['validation_accuracy']:.4f}, "
               f"macro-F1 {result.metrics['validation_macro_f1']:.4f} -> {result.output}")


command_from_settings(train_app, "text-classification", TextClassificationConfig, _run_text_classification,
                      help="Fine-tune a BERT-family encoder to classify text (e.g. 1-5 star ratings).")
