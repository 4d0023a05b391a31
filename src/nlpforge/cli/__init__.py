"""The `nlpforge` command line: a thin shell that parses flags, calls the Python API and prints.

    nlpforge train text-classification --train train.csv --output models/stars ...
    nlpforge evaluate models/stars --data validation.csv
    nlpforge predict models/stars "This product is great"
    nlpforge demo
    nlpforge corpus stats --corpus reviews.csv      (also tokenize, phrases, vocab)
    nlpforge vectors train --corpus reviews.csv     (also similar, analogy, distance, evaluate, plot)
    nlpforge tokenizer train --corpus reviews.csv --output tokenizers/reviews

User errors print one line and exit non-zero; a traceback is a bug.
"""
import errno
import os
import sys

import click
import typer

from nlpforge.errors import ConfigError, NlpforgeError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="nlpforge: from raw text to a served, monitored NLP model, on your own machine.")

# Each module adds its commands to `app` (or a sub-app) when imported.
from nlpforge.cli import train as _train  # noqa: E402,F401
from nlpforge.cli import evaluate as _evaluate  # noqa: E402,F401
from nlpforge.cli import demo as _demo  # noqa: E402,F401
from nlpforge.cli import corpus as _corpus  # noqa: E402,F401
from nlpforge.cli import vectors as _vectors  # noqa: E402,F401
from nlpforge.cli import tokenizer as _tokenizer  # noqa: E402,F401
from nlpforge.cli import jobs as _jobs  # noqa: E402,F401
from nlpforge.cli import runs as _runs  # noqa: E402,F401
from nlpforge.cli import serve as _serve  # noqa: E402,F401
from nlpforge.cli import monitor as _monitor  # noqa: E402,F401
from nlpforge.cli import explain as _explain  # noqa: E402,F401
from nlpforge.cli import review as _review  # noqa: E402,F401
from nlpforge.cli import ui as _ui  # noqa: E402,F401


def main(argv=None) -> None:
    try:
        app(args=argv, prog_name="nlpforge")
    except NlpforgeError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except OSError as error:
        if error.errno != errno.ENAMETOOLONG:
            raise
        # Any path given may be over the file system's limits, and the first look at it (an exists(), an open())
        # raises this wherever that is: one message here serves every command.
        too_long = ConfigError(f"{shortened(error.filename)}: a name in this path, or the path as a whole, is longer "
                               "than the file system allows (255 bytes a name); give a shorter path")
        print(f"error: {too_long}", file=sys.stderr)
        sys.exit(ConfigError.exit_code)


def shortened(path) -> str:
    """A path as a message shows it: a long one as its start and end."""
    text = os.fsdecode(path) if path is not None else "a path"
    return text if len(text) <= 120 else f"{text[:100]}...{text[-12:]}"
