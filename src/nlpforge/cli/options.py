"""Build typer commands whose flags come from a settings dataclass (one flag per typed field).

    command_from_settings(app, "text-classification", TextClassificationConfig, run)

gives `--learning-rate FLOAT` etc. with each field's help, plus `--config FILE` (JSON/YAML) whose
values the flags override.
"""
import inspect
from dataclasses import fields
from pathlib import Path
from typing import Optional, get_args

import typer

from nlpforge.errors import ConfigError
from nlpforge.training.config import load_config_file


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _annotation(tp):
    """typer-friendly annotation: X | None -> Optional[X]."""
    args = get_args(tp)
    if args and type(None) in args:
        inner = [a for a in args if a is not type(None)][0]
        return Optional[inner]
    return tp


def command_from_settings(app: typer.Typer, name: str, settings_class, run, help: str | None = None):
    """Register `name` on `app`; `run(settings)` is called with the validated dataclass."""
    parameters = [inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                    default=typer.Option(None, "--config", help="JSON or YAML file of settings; "
                                                         "flags given on the command line win"))]
    for f in fields(settings_class):
        tp = _annotation(f.type if not isinstance(f.type, str) else eval(f.type))  # noqa: S307 (own dataclass)
        flags = [_flag(f.name)]
        if tp is bool:
            flags = [f"{_flag(f.name)}/--no-{f.name.replace('_', '-')}"]
        # None default: a flag not given stays None, so --config values and dataclass defaults apply.
        parameters.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                            annotation=Optional[tp],
                                            default=typer.Option(None, *flags, help=f.metadata.get("help", ""),
                                                                 show_default=False)))

    def command(**given):
        config_file = given.pop("config", None)
        values = load_config_file(config_file, settings_class) if config_file is not None else {}
        for key, value in given.items():
            if value is not None and not (isinstance(value, (list, tuple)) and len(value) == 0):
                values[key] = list(value) if isinstance(value, tuple) else value
        missing = [f.name for f in fields(settings_class) if f.metadata.get("required") and not values.get(f.name)]
        if missing:
            raise ConfigError("missing " + ", ".join(_flag(m) for m in missing) + f"; see `{name} --help`")
        try:
            settings = settings_class(**values)
        except TypeError as error:  # a config file value of the wrong shape
            raise ConfigError(f"invalid settings: {error}") from None
        return run(settings)

    command.__signature__ = inspect.Signature(parameters)
    command.__name__ = name.replace("-", "_")
    command.__doc__ = help or settings_class.__doc__
    app.command(name)(command)
    return command

