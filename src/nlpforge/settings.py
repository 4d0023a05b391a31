"""Typed settings: one dataclass field per setting, with its help text, limits and choices.

Every settings class of nlpforge is a dataclass built from `setting(...)` fields and, where a job
combines several concerns, `group(...)` fields holding another settings class (composition, not
inheritance). Validation has one path, `Settings.__post_init__`: it checks each field's type,
its `Literal` choices and its `min`/`max` limits, then calls the class's own `check()` for rules
that tie two fields together.

    @dataclass
    class TrainArgs(Settings):
        epochs: int = setting(3, "passes over the training data", min=1)
        lr_schedule: Literal["linear", "cosine"] = setting("linear", "decay after warmup")

    @dataclass
    class Job(Settings):
        output: str = setting("", "folder to write", required=True)
        train: TrainArgs = group(TrainArgs)

Names are flat across a settings tree: a group's fields are addressed by their own names, so the
CLI has `--epochs` (not `--train-epochs`) and a config file may say {"epochs": 2} or
{"train": {"epochs": 2}}. `from_flat(Job, {"epochs": 2, "output": "m"})` builds the tree; unknown
names are errors that list the known ones.

The default locations of nlpforge's own folders live here too (`jobs_root`, `cache_root`), and the
check that an output path can be written (`check_writable`), since every layer may need them.
"""
import contextlib
import json
import math
import re
import os
import shutil
import tempfile
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar, Literal, get_args, get_origin

from nlpforge.errors import ConfigError

__all__ = ["Settings", "setting", "group", "leaf_fields", "from_flat", "nest", "to_flat", "load_config_file",
           "flag_name", "jobs_root", "cache_root", "check_writable", "check_output_folder"]


def setting(default, help: str, *, required: bool = False, min=None, max=None, flag: str | None = None):
    """A settings field: its default, one line of help, and optional limits.

    `required`: the CLI insists on it; `min`/`max`: inclusive limits checked on every construction;
    `flag`: the command-line name when it is not the field's own (`--text-column` for `text_column`).
    """
    metadata = {"help": help, "required": required, "min": min, "max": max, "flag": flag}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def group(settings_class, help: str = ""):
    """A field holding a nested settings group, built with its defaults."""
    return field(default_factory=settings_class, metadata={"group": True, "help": help})


def flag_name(f) -> str:
    """The field's command-line flag without dashes: `learning-rate` for `learning_rate`."""
    return f.metadata.get("flag") or f.name.replace("_", "-")


def _shown_name(settings, f) -> str:
    """How a message names a field: its flag, or its own name for settings that are Python arguments."""
    return f.name if settings.argument_names else flag_name(f)


def _resolved_types(cls) -> dict:
    return typing.get_type_hints(cls, include_extras=False)


def leaf_fields(cls) -> list[tuple[tuple[str, ...], object, object]]:
    """Every leaf setting of a settings tree: (path of group names, field, its type)."""
    out = []
    hints = _resolved_types(cls)
    for f in fields(cls):
        if f.metadata.get("group"):
            for path, leaf, tp in leaf_fields(hints[f.name]):
                out.append(((f.name, *path), leaf, tp))
        else:
            out.append(((), f, hints[f.name]))
    return out


def _is_optional(tp) -> tuple[bool, object]:
    args = get_args(tp)
    if get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return True, rest[0]
    return False, tp


def _describe(tp) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(map(str, get_args(tp)))
    if get_origin(tp) is list:
        return "a list"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _coerce(value, tp, name: str):
    """`value` as type `tp`; strings from config files, hyperparameters or URLs are parsed."""
    optional, tp = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name} cannot be empty; give {_describe(tp)}")
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{name} must be {_describe(tp)}, not {value!r}")
        return value
    if origin is list:
        (item,) = get_args(tp) or (str,)
        values = [value] if isinstance(value, (str, int, float)) else value
        if not isinstance(values, (list, tuple)):
            raise ConfigError(f"{name} must be a list, not {value!r}")
        return [_coerce(v, item, name) for v in values]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.strip().lower() in ("true", "1", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        return value
    raise ConfigError(f"{name} must be {_describe(tp)}, not {value!r}")


# Settings naming a file or folder that a command writes: a blank value there is refused, not written to.
WRITTEN_PATHS = frozenset({"output", "checkpoint_dir", "capture_dir", "model_store"})


@dataclass
class Settings:
    """Base of every settings dataclass: types, choices and limits are checked when one is built."""

    # Messages name fields by their flags (`--learning-rate`); settings that are a Python API's arguments
    # (the SDK's Estimator) set this to name them as the code does (`instance_count`).
    argument_names: ClassVar[bool] = False

    def __post_init__(self):
        hints = _resolved_types(type(self))
        for f in fields(self):
            if f.metadata.get("group"):
                continue
            name = _shown_name(self, f)
            value = _coerce(getattr(self, f.name), hints[f.name], name)
            if f.name in WRITTEN_PATHS and isinstance(value, str) and not value.strip() and value != f.default:
                # Path("") is the working folder and Path("  ") a name nobody meant: either gets written into
                raise ConfigError(f"{name} is blank; give the path to write to")
            low, high = f.metadata.get("min"), f.metadata.get("max")
            for item in (value if isinstance(value, list) else [value]):
                if isinstance(item, str) and "\x00" in item:  # from a config file or the API: open() would raise
                    raise ConfigError(f"{name} holds a null character (\\x00), which no path or name can; remove it")
                if item is None or isinstance(item, str):
                    continue
                if isinstance(item, float) and not math.isfinite(item):
                    raise ConfigError(f"{name} must be a finite number, not {item}")
                if low is not None and item < low or high is not None and item > high:
                    bounds = (f"between {low} and {high}" if low is not None and high is not None
                              else f"at least {low}" if low is not None else f"at most {high}")
                    raise ConfigError(f"{name} must be {bounds}, not {item}")
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Rules that involve several fields; raise ConfigError naming the flags and the fix."""

    @classmethod
    def of(cls, **values):
        """Build from flat names, whatever group each belongs to: `CorpusSettings.of(corpus=["a.txt"])`."""
        return from_flat(cls, values, where=cls.__name__)


def from_flat(cls, values: dict, *, where: str = "settings"):
    """Build a settings tree from flat names (dashes or underscores) or nested group mappings."""
    return _build(cls, nest(cls, values, where))


def nest(cls, values: dict, where: str = "settings") -> dict:
    """Flat or nested `values` as a mapping shaped like the settings tree; unknown names are errors."""
    unknown: list = []
    nested = _nest(cls, values, unknown, "")
    if unknown:
        known = sorted(flag_name(f) for _, f, _ in leaf_fields(cls))
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return nested


def _nest(cls, values: dict, unknown: list, prefix: str) -> dict:
    hints = _resolved_types(cls)
    paths = {f.name: path for path, f, _ in leaf_fields(cls)}
    groups = {f.name for f in fields(cls) if f.metadata.get("group")}
    nested: dict = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name in groups and isinstance(value, dict):  # a group given as a mapping, at any depth
            inner = _nest(hints[name], value, unknown, f"{prefix}{name}.")
            nested[name] = merge_nested(nested.get(name, {}), inner)
        elif name in paths:
            target = nested
            for part in paths[name]:
                target = target.setdefault(part, {})
            target[name] = value
        else:
            unknown.append(f"{prefix}{key}")
    return nested


def merge_nested(first: dict, second: dict) -> dict:
    """`second` over `first`, mapping by mapping."""
    out = dict(first)
    for key, value in second.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge_nested(out[key], value) if both else value
    return out


def _build(cls, nested: dict):
    hints = _resolved_types(cls)
    kwargs = {}
    for f in fields(cls):
        if f.metadata.get("group"):
            kwargs[f.name] = _build(hints[f.name], nested.get(f.name, {}))
        elif f.name in nested:
            kwargs[f.name] = nested[f.name]
    return cls(**kwargs)


def to_flat(settings) -> dict:
    """The leaf settings of a tree as one flat dict (what a config file or the CLI would say)."""
    out = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if f.metadata.get("group"):
            out.update(to_flat(value))
        else:
            out[f.name] = list(value) if isinstance(value, list) else value
    return out


def load_config_file(path, settings_class) -> dict:
    """Read settings from JSON or YAML, flat or nested, for `from_flat`; unknown names, and values that are
    not of their setting's type, are errors naming the file and the setting."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; --config names a JSON or YAML file")
    is_yaml = path.suffix.lower() in (".yaml", ".yml")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} at position {error.start}); "
                          "save the config file as UTF-8") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror or error})") from None
    try:
        if is_yaml:
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except ImportError:
        raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or use JSON") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config file") from None
    except Exception as error:  # both parsers raise their own error types
        hint = "" if path.suffix.lower() in (".json", ".yaml", ".yml") else \
            "; --config reads JSON, or YAML when the name ends in .yaml or .yml"
        raise ConfigError(f"{path}: not valid {'YAML' if is_yaml else 'JSON'}: {str(error).splitlines()[0]}{hint}") \
            from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of setting names to values")
    _check_types(settings_class, nest(settings_class, values, where=str(path)), path)
    return values


def _check_types(cls, nested: dict, path: Path) -> None:
    """Each value of a config file against its field's declared type; text settings take only text, since a
    number there is a mistake a file cannot show (`text_column: 5`)."""
    hints = _resolved_types(cls)
    for f in fields(cls):
        if f.name not in nested:
            continue
        value = nested[f.name]
        if f.metadata.get("group"):
            _check_types(hints[f.name], value, path)
            continue
        optional, tp = _is_optional(hints[f.name])
        if value is None and optional:
            continue
        texts = (tp is str or get_origin(tp) is list and get_args(tp) in ((str,), ())) and value is not None
        if texts and not (isinstance(value, str) or get_origin(tp) is list and isinstance(value, list)
                          and all(isinstance(v, str) for v in value)):
            kind = "a string" if tp is str else "a string or a list of strings"
            raise ConfigError(f"{path}: {f.name} must be {kind}, not {value!r}")
        try:
            _coerce(value, hints[f.name], f.name)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error.message}") from None


IMAGE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")
MAX_SEED = 2**32 - 1  # numpy's legacy seeding (np.random.seed, gensim) takes 0 to 2**32 - 1 only


def check_count(value, what: str, error=ConfigError) -> int:
    """A whole number of at least 1 (a batch size, an instance count); else `error` naming `what`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise error(f"{what} must be a whole number of at least 1, not {value!r}")
    return value


def check_suffix(path, what: str, suffixes=IMAGE_SUFFIXES) -> None:
    """Refuse an output file whose name ends in none of `suffixes` (what it will be written as)."""
    if Path(path).suffix.lower() not in suffixes:
        raise ConfigError(f"{what} {path}: name a {', '.join(s.lstrip('.') for s in suffixes)} file (the name's "
                          "ending says what is written)")


def check_apart(output, inputs, what: str = "--output") -> None:
    """Refuse an output path that is one of `inputs`, lies inside an input folder, or is a folder holding an
    input: writing it would overwrite or change what is being read. Paths are compared as written and with
    symbolic links resolved, since writing through a link to an input overwrites the input."""
    def forms(path) -> list[Path]:
        path = Path(path).expanduser()
        return [Path(os.path.abspath(path)), Path(os.path.realpath(path))]

    outputs = forms(output)
    for given in inputs:
        if given is None or str(given) == "":
            continue
        for out, source in ((out, source) for out in outputs for source in forms(given)):
            if out == source or source in out.parents or out in source.parents:
                relation = "is" if out == source else "is inside" if source in out.parents else "holds"
                raise ConfigError(f"{what} {output}: {relation} the input {given}, which writing it would overwrite "
                                  "or change; choose a path apart from the inputs")


# --- where nlpforge keeps its own folders ---------------------------------------------------------------
JOBS_ROOT_ENV = "NLPFORGE_JOBS_ROOT"


def cores() -> int:
    """The CPU cores this process may run on: its affinity set (taskset, a container's cpuset), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_device(name: str, flag: str = "--device") -> None:
    """Refuse a CUDA device where torch sees no CUDA GPU, in one line that names the fix (`flag` is how the
    caller's user gives the device: a CLI flag or a request parameter). Anything but cpu, cuda or cuda:N is
    refused too."""
    if not isinstance(name, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ConfigError(f"{flag} {name!r}: not a device nlpforge runs on; use cpu, cuda or cuda:N")
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{flag} {name}: torch {torch.__version__} sees no CUDA GPU on this machine; use "
                              f"{flag} cpu")


def jobs_root(root=None) -> Path:
    """The folder holding training jobs, endpoints and the tracking stores: the argument, else
    $NLPFORGE_JOBS_ROOT, else ./jobs. A blank one (spaces) is refused, not made a folder named by spaces."""
    given, name = (root, "jobs_root") if root else (os.environ.get(JOBS_ROOT_ENV), f"${JOBS_ROOT_ENV}")
    if isinstance(given, str) and given and not given.strip():
        raise ConfigError(f"{name} is blank; give the jobs folder, or leave it out for ./jobs")
    return Path(root or os.environ.get(JOBS_ROOT_ENV) or "jobs").expanduser().resolve()


def existing_jobs_root(root: str | None) -> str | None:
    """A --jobs-root that commands only read from: an existing folder when given (None: the default)."""
    if root is not None and not Path(root).expanduser().is_dir():
        raise ConfigError(f"--jobs-root {root}: {'is a file' if Path(root).exists() else 'no such folder'}; name the "
                          "folder the jobs were written to (Estimator(jobs_root=...), default ./jobs)")
    return root


def cache_root() -> Path:
    """nlpforge's cache ($NLPFORGE_CACHE, else ~/.cache/nlpforge): Arrow copies of big files, ONNX exports.
    Only looks (a few stats, no folder made): a value that is a file, or lies under one, is refused here, once
    for every cache user."""
    value = os.environ.get("NLPFORGE_CACHE", "").strip()
    if not value:   # unset or empty ("" would otherwise be the working directory)
        return Path.home() / ".cache" / "nlpforge"
    root = Path(value).expanduser()
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ConfigError(f"NLPFORGE_CACHE={value}: {existing} is a file, so the cache cannot be a folder there; set "
                          "NLPFORGE_CACHE to a folder (or unset it for ~/.cache/nlpforge)")
    return root



def check_writable(path, what: str, *, folder: bool) -> None:
    """Before any work, refuse an output `path` (a file, or a folder when `folder`) that cannot be written: a
    folder where a file is wanted or the reverse, a file on the way, or a place this process cannot create
    files in, found by trying in the nearest existing parent (permission bits say nothing for root or on a
    read-only mount). `what` names the flag in the message (`--output`)."""
    path = Path(os.path.abspath(Path(path).expanduser()))
    if folder and path.is_file():
        raise ConfigError(f"{what} {path}: is a file; name a folder to write to")
    if not folder and path.is_dir():
        raise ConfigError(f"{what} {path}: is a folder; name a file to write")
    existing = path if path.is_dir() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{what} {path}: {existing} is a file, so no folder can be made under it; choose another "
                          "path")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ConfigError(f"{what} {path}: cannot write in {existing} ({error.strerror or error}); choose a place "
                          "you can write to") from None


@contextlib.contextmanager
def replacing(path):
    """Yield a temporary file name beside the file `path` to write to; when the block ends without error it
    is renamed over `path` in one step, with the earlier file's permissions. A failed or interrupted write leaves
    the earlier file as it was and no cut file behind; a symbolic link at `path` keeps naming the file it names.
    What is not a file (/dev/stdout, a pipe) is written directly.

        with replacing("vocab.tsv") as partial, open(partial, "w", encoding="utf-8") as out:
            out.write(...)
    """
    given = Path(path).expanduser()
    if given.exists() and not given.is_file():
        yield given
        return
    path = Path(os.path.realpath(given))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield partial
        if path.exists():
            shutil.copymode(path, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def file_lock(path):
    """Hold an exclusive lock on the file `path` (made if missing) across processes and threads; the kernel frees
    it if the process dies. Yields whether it is held: not where locks cannot be had (no fcntl, a file system
    without them). An error opening the file (its folder cannot be written) is the caller's to name."""
    try:
        import fcntl
    except ImportError:
        yield False
        return
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def check_output_folder(path, what: str, kind: str, marker: str, own: tuple = ()) -> None:
    """Refuse an output folder that holds anything but an earlier `kind` (known by its `marker` file, or by holding
    only files of the `own` names, which an interrupted one leaves), so a run never writes over a baseline, a model
    or other files it did not make."""
    check_writable(path, what, folder=True)
    path = Path(path).expanduser()
    if path.is_dir() and not (path / marker).is_file() and any(entry.name not in own for entry in path.iterdir()):
        raise ConfigError(f"{what} {path}: holds other files, which this would overwrite or mix with; give a new or "
                          f"empty folder, or an earlier {kind}")


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite database URL (`sqlite:///jobs/optuna.db`, `sqlite+pysqlite:////abs/x.db?timeout=5`)
    names, as SQLAlchemy reads it (percent-escapes decoded); None for another database or an in-memory one."""
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        database = make_url(url).database
    except ArgumentError:
        return None
    return Path(database) if database and database != ":memory:" else None
