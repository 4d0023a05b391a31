"""`nlpforge tokenizer train`: a BERT WordPiece vocabulary from a corpus, saved as a tokenizer folder.

    nlpforge tokenizer train --corpus imdb_50k.csv.gz --column review --output tokenizers/imdb
    nlpforge train text-classification --model bert-tiny --tokenizer tokenizers/imdb ...
"""
import typer

from nlpforge.cli import app
from nlpforge.cli.options import command_from_settings
from nlpforge.text.wordpiece import WordPieceSettings

tokenizer_app = typer.Typer(no_args_is_help=True, help="Train tokenizers for models built from scratch.")
app.add_typer(tokenizer_app, name="tokenizer")


def _train(settings: WordPieceSettings) -> None:
    from transformers import AutoTokenizer

    from nlpforge.text.wordpiece import train_wordpiece

    folder = train_wordpiece(settings)
    typer.echo(f"wrote a WordPiece tokenizer of {len(AutoTokenizer.from_pretrained(str(folder))):,} entries "
               f"to {folder}")


command_from_settings(tokenizer_app, "train", WordPieceSettings, _train,
                      help="Train a BERT WordPiece vocabulary with Hugging Face tokenizers.")
