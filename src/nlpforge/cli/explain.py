"""`nlpforge explain`: token attributions and attention views of one input.

    nlpforge explain models/stars "Loved it, would watch again" --output view.html --png view.png
    nlpforge explain models/qa "Who wrote it?" --text-pair "The book was written by Ann." --json out.json
"""
import json
from pathlib import Path
from typing import Optional

import typer

from nlpforge.cli import app
from nlpforge.cli.options import at_least
from nlpforge.settings import check_apart, check_suffix, check_writable


@app.command("explain")
def explain_command(
    model: Path = typer.Argument(..., help="model folder written by `nlpforge train`"),
    text: str = typer.Argument(..., help="text to explain (the question, for a question-answering model)"),
    text_pair: Optional[str] = typer.Option(None, "--text-pair", help="second text of a pair (the context, for "
                                                                      "question answering)"),
    output: Optional[Path] = typer.Option(None, "--output", help="self-contained HTML: head view and model view"),
    png: Optional[Path] = typer.Option(None, "--png", help="PNG of every layer x head and the attributions"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="the explanation as JSON (the server's shape)"),
    steps: int = typer.Option(32, "--steps", help="Integrated Gradients steps (1-1000)"),
    top: int = typer.Option(8, "--top", help="how many of the most important tokens to print"),
):
    """The answer, the tokens that moved it (Integrated Gradients) and the attention of every layer and head."""
    from nlpforge.evaluation.attention_view import answer_summary, explain_model

    at_least(top, 0, "--top")
    if json_path is not None:
        check_suffix(json_path, "--json", (".json",))  # not any file: --json t.csv would replace a CSV
        check_apart(json_path, [model], "--json")
        check_writable(json_path, "--json", folder=False)
    explanation = explain_model(model, text, text_pair, output, png, steps)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(explanation, ensure_ascii=False) + "\n", encoding="utf-8")
    typer.echo(answer_summary(explanation))
    ranked = sorted(zip(explanation["words"], explanation["importances"]), key=lambda pair: -abs(pair[1]))
    typer.echo("most important tokens: " + ", ".join(f"{word} {value:+.3f}" for word, value in ranked[:top]))
    if explanation["attention"].get("note"):
        typer.echo(explanation["attention"]["note"])
    for path in (output, png, json_path):
        if path is not None:
            typer.echo(f"wrote {path}")
