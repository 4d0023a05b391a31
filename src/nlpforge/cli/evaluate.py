"""`nlpforge evaluate` and `nlpforge predict`: use a trained model folder."""
import json
from pathlib import Path
from typing import List, Optional

import typer

from nlpforge.cli import app
from nlpforge.cli.options import at_least
from nlpforge.errors import DataError
from nlpforge.settings import check_writable

DELIMITER_HELP = "column separator of a CSV/TSV file (default: ',' for .csv, tab for .tsv), e.g. ';'"
ENCODING_HELP = "encoding of a text data file (default: UTF-8), e.g. utf-16 or latin-1"


def reading_options(delimiter: str | None, encoding: str | None) -> dict:
    """`read_table`'s keyword arguments from --delimiter/--encoding, checked as training checks them."""
    from nlpforge.data.readers import ReadingSettings

    reading = ReadingSettings(delimiter=delimiter, encoding=encoding)
    reading.check()
    return reading.options


@app.command("evaluate")
def evaluate_command(
    model: Path = typer.Argument(..., help="model folder written by `nlpforge train`"),
    data: Path = typer.Option(..., "--data", help="labelled file to evaluate on"),
    text_column: Optional[List[str]] = typer.Option(None, help="text column(s) (default: the model's)"),
    label_column: Optional[str] = typer.Option(None, help="label column (default: the model's)"),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="also report TF-IDF + logistic regression"),
    baseline_train: Optional[Path] = typer.Option(None, help="training file for the baseline (default: the model's)"),
    output_dir: Optional[Path] = typer.Option(None, help="where the PNGs and report.json go (default: MODEL/evaluation)"),
    delimiter: Optional[str] = typer.Option(None, help=DELIMITER_HELP),
    encoding: Optional[str] = typer.Option(None, help=ENCODING_HELP),
):
    """Accuracy, macro-F1, per-class precision/recall and confusion matrices, beside the baseline."""
    from nlpforge.evaluation.evaluate import evaluate_model

    result = evaluate_model(model, data, text_column or None, label_column, baseline, baseline_train, output_dir,
                            reading=reading_options(delimiter, encoding))
    typer.echo(result.text)


@app.command("predict")
def predict_command(
    model: Path = typer.Argument(..., help="model folder written by `nlpforge train`"),
    texts: Optional[List[str]] = typer.Argument(None, help="texts to predict for (with [MASK] for a masked-LM "
                                                             "model)"),
    input: Optional[Path] = typer.Option(None, "--input", help="file of texts (.csv, .tsv, .jsonl, .parquet)"),
    output: Optional[Path] = typer.Option(None, "--output", help="predictions file (.csv or .jsonl)"),
    text_pair: Optional[List[str]] = typer.Option(None, "--text-pair", help="second text of each argument (the "
                                                                           "context, for question answering); give "
                                                                           "it once per text"),
    text_column: Optional[List[str]] = typer.Option(None, help="text column(s) of --input (default: the model's)"),
    batch_size: int = typer.Option(64, help="texts per forward pass"),
    delimiter: Optional[str] = typer.Option(None, help=DELIMITER_HELP),
    encoding: Optional[str] = typer.Option(None, help=ENCODING_HELP),
):
    """Predict for texts given as arguments (printed as JSON lines) or a whole file (--input/--output)."""
    at_least(batch_size, 1, "--batch-size")
    if text_pair and (input is not None or len(text_pair) != len(texts or [])):
        raise DataError(f"--text-pair is given {len(text_pair)} time(s) for {len(texts or [])} text argument(s); "
                        "give one second text per text (a file's pairs come from two --text-column)")
    if input is not None or output is not None:
        if input is None or output is None:
            raise DataError("batch mode needs both --input FILE and --output FILE")
        if texts:
            raise DataError("give texts as arguments or --input FILE, not both")
        check_writable(output, "--output", folder=False)
        from nlpforge.tasks.files import predict_file

        rows = predict_file(model, input, output, text_column or None, batch_size=batch_size,
                            reading=reading_options(delimiter, encoding))
        typer.echo(f"wrote {rows} predictions to {output}")
        return
    if not texts:
        raise DataError("nothing to predict; give texts as arguments or --input FILE --output FILE")
    file_options = [flag for flag, value in (("--text-column", text_column), ("--delimiter", delimiter),
                                             ("--encoding", encoding)) if value]
    if file_options:
        raise DataError(f"{' and '.join(file_options)} {'is' if len(file_options) == 1 else 'are'} for reading "
                        "--input FILE, not texts given as arguments; leave out the flag, or predict for a file with "
                        "--input FILE --output FILE")
    from nlpforge.tasks import load

    inputs = list(zip(texts, text_pair)) if text_pair else texts
    for text, prediction in zip(texts, load(model).predict(inputs, batch_size=batch_size)):
        typer.echo(json.dumps({"text": text, **prediction} if isinstance(prediction, dict)
                              else {"text": text, "prediction": prediction}, ensure_ascii=False))
