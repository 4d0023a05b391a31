"""`nlpforge vectors train|similar|analogy|distance|evaluate|plot`: word2vec from a raw corpus, and queries.

    nlpforge vectors train --corpus imdb_50k.csv.gz --column review --output vectors
    nlpforge vectors similar car
    nlpforge vectors analogy paris france berlin        # -> germany
    nlpforge vectors distance good bad
    nlpforge vectors evaluate
    nlpforge vectors plot good bad great awful --output map.png

Query commands read the folder given by --vectors (default: $NLPFORGE_VECTORS, else ./vectors).
"""
import json
import os
from pathlib import Path
from typing import List

import typer

from nlpforge.cli import app
from nlpforge.cli.options import at_least, command_from_settings
from nlpforge.settings import check_writable
from nlpforge.vectors.train import Word2VecSettings

vectors_app = typer.Typer(no_args_is_help=True, help="Train word vectors (word2vec) and query them.")
app.add_typer(vectors_app, name="vectors")

VECTORS_OPTION = typer.Option(Path(os.environ.get("NLPFORGE_VECTORS", "vectors")), "--vectors",
                              help="vectors folder from `nlpforge vectors train` (or a word2vec .bin/.txt file)")


def _train(settings: Word2VecSettings) -> None:
    from nlpforge.vectors.train import train_vectors

    typer.echo(train_vectors(settings, log=typer.echo).text())


command_from_settings(vectors_app, "train", Word2VecSettings, _train,
                      help="Read, normalise, join phrases and train word2vec (skip-gram or CBOW).")


def _load(folder: Path):
    from nlpforge.vectors.query import load_vectors

    return load_vectors(folder)


@vectors_app.command("similar")
def similar_command(word: str = typer.Argument(..., help="word or phrase (`rio de janeiro`)"),
                    topn: int = typer.Option(10, help="how many neighbours"),
                    vectors: Path = VECTORS_OPTION):
    """The nearest words by cosine similarity."""
    at_least(topn, 1, "--topn")
    for neighbour, score in _load(vectors).similar(word, topn):
        typer.echo(f"{neighbour}\t{score:.4f}")


@vectors_app.command("analogy")
def analogy_command(a: str = typer.Argument(..., help="a, as in: a is to b as c is to ?"),
                    b: str = typer.Argument(...), c: str = typer.Argument(...),
                    topn: int = typer.Option(1, help="how many answers"),
                    vectors: Path = VECTORS_OPTION):
    """A is to B as C is to ...: `analogy paris france berlin` gives germany."""
    at_least(topn, 1, "--topn")
    for answer, score in _load(vectors).analogy(a, b, c, topn):
        typer.echo(f"{answer}\t{score:.4f}")


@vectors_app.command("distance")
def distance_command(first: str = typer.Argument(...), second: str = typer.Argument(...),
                     vectors: Path = VECTORS_OPTION):
    """Cosine distance between two words (0 = same direction)."""
    typer.echo(f"{_load(vectors).distance(first, second):.4f}")


@vectors_app.command("evaluate")
def evaluate_command(restrict_vocab: int = typer.Option(30_000, help="analogies use only the N most frequent words"),
                     as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
                     vectors: Path = VECTORS_OPTION):
    """Google analogy accuracy, WordSim353 and SimLex-999 Spearman correlations, with OOV counts."""
    from nlpforge.vectors.evaluate import evaluate_vectors

    at_least(restrict_vocab, 1, "--restrict-vocab")
    report = evaluate_vectors(_load(vectors), restrict_vocab)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.text())


@vectors_app.command("plot")
def plot_command(words: List[str] = typer.Argument(..., help="the words to draw (3 or more)"),
                 output: Path = typer.Option(Path("word-map.png"), "--output", help="PNG file to write"),
                 method: str = typer.Option("pca", help="projection: pca or tsne"),
                 vectors: Path = VECTORS_OPTION):
    """A 2-D map of the named words (PCA or t-SNE), saved as a PNG."""
    from nlpforge.vectors.plot import plot_words

    check_writable(output, "--output", folder=False)
    typer.echo(f"wrote {plot_words(_load(vectors), words, output, method)}")
