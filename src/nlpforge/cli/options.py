"""Build typer commands whose flags come from a settings dataclass (one flag per typed field).

    command_from_settings(app, "stats", CorpusSettings, run)

gives `--corpus`, `--lowercase/--no-lowercase`, ... with each field's help (fields of nested
groups included, under their own names), choices for `Literal` fields, plus `--config FILE`
(JSON/YAML) whose values the flags override. `run(settings)` gets the validated settings.
"""
import enum
import inspect
from pathlib import Path
from typing import Literal, Optional, get_args, get_origin

import typer

from nlpforge.errors import ConfigError
from nlpforge.settings import flag_name, from_flat, leaf_fields, load_config_file, merge_nested, nest


def option_for(f, tp) -> tuple[object, typer.models.OptionInfo]:
    """(annotation, typer.Option) of one settings field. Every flag defaults to None, so a flag that is not
    given leaves the config file's value or the dataclass default in place."""
    args = get_args(tp)
    if args and type(None) in args:  # X | None -> X
        tp = [a for a in args if a is not type(None)][0]
    name = flag_name(f)
    flags = [f"--{name}/--no-{name}"] if tp is bool else [f"--{name}"]
    if get_origin(tp) is Literal:  # typer shows and checks the choices of an Enum
        tp = enum.Enum(f"{f.name}_choices", {str(c): str(c) for c in get_args(tp)}, type=str)
    help_text = f.metadata.get("help", "")
    return Optional[tp], typer.Option(None, *flags, help=help_text, show_default=False)


def at_least(value, low, flag: str):
    """`value`, or a ConfigError worded as the settings' own limits are, for a hand-written numeric option."""
    if value is not None and value < low:
        raise ConfigError(f"{flag} must be at least {low}, not {value}")
    return value


def settings_values(settings_class, config: Path | None, given: dict) -> dict:
    """The config file's values, overridden by the flags that were given, as a mapping shaped like the settings
    tree: a flag named like a group (--train FILE, --model NAME) then leaves the file's group ({"train":
    {"epochs": 2}}) in place instead of replacing it."""
    values = load_config_file(config, settings_class) if config is not None else {}
    flags = {key: list(value) if isinstance(value, tuple) else value.value if isinstance(value, enum.Enum) else value
             for key, value in given.items()
             if value is not None and not (isinstance(value, (list, tuple)) and len(value) == 0)}
    return merge_nested(nest(settings_class, values, str(config)), nest(settings_class, flags, "flags"))


def build_settings(settings_class, values: dict, command: str):
    """Validated settings from flat or nested values; a missing required flag is named with the command's help."""
    nested = nest(settings_class, values, command)

    def given(path: tuple, name: str):  # at the setting's own place: --epochs is not --train FILE
        mapping = nested
        for part in path:
            mapping = mapping.get(part, {}) if isinstance(mapping, dict) else {}
        return mapping.get(name) if isinstance(mapping, dict) else None

    required = [(flag_name(f), given(path, f.name)) for path, f, _ in leaf_fields(settings_class)
                if f.metadata.get("required")]
    missing = [flag for flag, value in required if value is None]
    if missing:
        raise ConfigError("missing " + ", ".join(f"--{m}" for m in missing) + f"; see `{command} --help`")
    # An empty path is the working directory to Path(""): a required folder or file left empty by an unset
    # variable would be read from, or written into, wherever the command runs.
    blank = [flag for flag, value in required if isinstance(value, str) and not value.strip()]
    if blank:
        raise ConfigError(f"--{blank[0]} is empty; give it a value, see `{command} --help`")
    return from_flat(settings_class, values, where=command)


def command_from_settings(app: typer.Typer, name: str, settings_class, run, help: str | None = None):
    """Register `name` on `app`; `run(settings)` is called with the validated dataclass."""
    parameters = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
                  inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                    default=typer.Option(None, "--config", help="JSON or YAML file of settings; "
                                                         "flags given on the command line win"))]
    for _, f, tp in leaf_fields(settings_class):
        annotation, option = option_for(f, tp)
        parameters.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                            default=option))

    def command(ctx: typer.Context, **given):
        config = given.pop("config", None)  # errors name the whole command: `nlpforge train text-classification`
        return run(build_settings(settings_class, settings_values(settings_class, config, given), ctx.command_path))

    command.__signature__ = inspect.Signature(parameters)
    command.__name__ = name.replace("-", "_")
    command.__doc__ = help or settings_class.__doc__
    app.command(name)(command)
    return command
