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

import typer

from nlpforge.errors import ConfigError, NlpforgeError

# Typer 0.29 carries its own copy of click (earlier versions use click itself): its errors live where BadParameter does.
click_errors = sys.modules[typer.BadParameter.__module__]

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
        # Not standalone: a usage error (a mistyped flag, a number that is not one) comes here, to be one line as
        # every other error is, not Typer's usage box. Commands return nothing, so a number is an exit code.
        code = app(args=argv, prog_name="nlpforge", standalone_mode=False)
    except click_errors.UsageError as error:
        if type(error).__name__ == "NoArgsIsHelpError":  # a group named alone (a name, as click < 8.2 lacks it)
            if error.format_message():  # its help; Typer's Rich help has been printed already, and this is empty
                print(error.format_message(), file=sys.stderr)
            sys.exit(error.exit_code)
        message = " ".join(error.format_message().split()).rstrip(".")
        where = error.ctx.command_path if error.ctx is not None else command_path(argv)
        see = f"see `{where} --help`"
        print(f"error: {message} ({see})" if message.endswith("?") else f"error: {message}; {see}", file=sys.stderr)
        sys.exit(error.exit_code)
    except click_errors.ClickException as error:
        print(f"error: {' '.join(error.format_message().split())}", file=sys.stderr)
        sys.exit(error.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(1)
    except NlpforgeError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as error:
        if error.errno != errno.ENAMETOOLONG:
            raise
        # Any path given may be over the file system's limits, and the first look at it (an exists(), an open())
        # raises this wherever that is: one message here serves every command.
        too_long = ConfigError(f"{shortened(error.filename)}: a name in this path, or the path as a whole, is longer "
                               "than the file system allows (255 bytes a name); give a shorter path")
        print(f"error: {too_long}", file=sys.stderr)
        sys.exit(ConfigError.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


def command_path(argv=None) -> str:
    """`nlpforge GROUP COMMAND` as far as `argv` names commands (an error the parser raises has no context)."""
    command, words = typer.main.get_command(app), ["nlpforge"]
    for word in sys.argv[1:] if argv is None else argv:
        command = getattr(command, "commands", {}).get(word)
        if command is None:
            break
        words.append(word)
    return " ".join(words)


def shortened(path) -> str:
    """A path as a message shows it: a long one as its start and end."""
    text = os.fsdecode(path) if path is not None else "a path"
    return text if len(text) <= 120 else f"{text[:100]}...{text[-12:]}"
