"""`nlpforge review`: the human-review queue of captured predictions, from the terminal.

    nlpforge review status --capture model_store/capture --model stars
    nlpforge review next --capture model_store/capture --model stars
    nlpforge review label 1.0/3f2a9c... 4 --capture model_store/capture --model stars
    nlpforge review export --capture model_store/capture --model stars --output labels.csv

`nlpforge ui` shows the same queue as a page with keyboard shortcuts.
"""
import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer

from nlpforge.cli import app

review_app = typer.Typer(no_args_is_help=True, help="Label low-confidence or disputed captured predictions.")
app.add_typer(review_app, name="review")

CAPTURE = typer.Option(..., "--capture", help="the server's data capture folder (its --capture-dir)")
MODEL = typer.Option(..., "--model", help="served model name")
VERSION = typer.Option(None, "--version", help="only this model version (default: every version)")
THRESHOLD = typer.Option(0.6, "--threshold", help="queue predictions whose score is under this (0-1)")
LABELS = typer.Option(None, "--labels-file", help="where labels go (default: <capture>/<model>/review/labels.jsonl)")


def _queue(capture, model, version, threshold, labels_file):
    from nlpforge.monitoring.review import ReviewQueue

    return ReviewQueue(capture, model, version, threshold, labels_file)


@review_app.command("status")
def status(capture: Path = CAPTURE, model: str = MODEL, version: Optional[str] = VERSION,
           threshold: float = THRESHOLD, labels_file: Optional[Path] = LABELS):
    """Reviewed, pending and agreement with the model."""
    typer.echo(json.dumps(_queue(capture, model, version, threshold, labels_file).progress()))


@review_app.command("next")
def next_item(capture: Path = CAPTURE, model: str = MODEL, version: Optional[str] = VERSION,
              threshold: float = THRESHOLD, labels_file: Optional[Path] = LABELS):
    """The next pending item and its label choices, as JSON."""
    queue = _queue(capture, model, version, threshold, labels_file)
    item = queue.next()
    if item is None:
        typer.echo(f"nothing to review for {model}: no pending prediction under --threshold {threshold} or "
                   "disputed by a shadow version")
        return
    typer.echo(json.dumps({**asdict(item), "choices": queue.labels_of(item)}, ensure_ascii=False))


@review_app.command("label")
def label(capture_id: str = typer.Argument(..., metavar="CAPTURE_ID", help="capture id from `nlpforge review next`"),
          value: str = typer.Argument(..., metavar="LABEL", help="the right label (one of `next`'s choices)"),
          capture: Path = CAPTURE, model: str = MODEL, version: Optional[str] = VERSION,
          threshold: float = THRESHOLD, labels_file: Optional[Path] = LABELS):
    """Save a label for a queued prediction."""
    queue = _queue(capture, model, version, threshold, labels_file)
    entry = queue.save(capture_id, value)
    typer.echo(f"saved label {entry['label']!r} to {queue.labels_file}")


@review_app.command("export")
def export(output: Path = typer.Option(..., "--output", help="a .csv or .jsonl file"),
           capture: Path = CAPTURE, model: str = MODEL, version: Optional[str] = VERSION,
           threshold: float = THRESHOLD, labels_file: Optional[Path] = LABELS):
    """Write the reviewed labels (the latest per capture id) to a file `nlpforge train` reads."""
    rows = _queue(capture, model, version, threshold, labels_file).export(output)
    typer.echo(f"wrote {rows} labels to {output}")
