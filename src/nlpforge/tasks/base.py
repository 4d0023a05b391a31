"""The task contract: what one task (text classification, masked LM, ...) tells the rest of nlpforge.

A task is one module in nlpforge/tasks/ holding a `TASK`, an instance of a `Task` subclass. It says

    how a base encoder gets its head          model_class, build_model(base, tokenizer, data, model_args)
    how rows become features                  prepare(...) -> TrainingData (dataset, collate, lengths)
    the loss                                  TrainingData.step(model, batch) -> (B,) per-example losses
    the metrics                               TrainingData.evaluate(run) -> {"validation_...": value}
    how model outputs become answers          preprocess(loaded, inputs) -> features,
                                              postprocess(loaded, inputs, features, outputs) -> answers
    what its handler accepts and returns      parse_input(value) -> one input; the answers are JSON values

Everything that touches a model goes through it: training (nlpforge.training.run), evaluation,
`nlpforge predict` and batch files, `nlpforge.load(folder).predict`, the SDK's built-in
estimators, the model server's handler and the ONNX backend.

    loaded = load_model("models/stars", task)        # or nlpforge.load("models/stars")
    loaded.predict(["Loved it"])                     # preprocess -> forward in length-sorted batches -> postprocess
"""
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from nlpforge.data.batching import MODEL_INPUTS, inference_batches, pad_arrays
from nlpforge.data.formats import misspelled_key
from nlpforge.errors import ArtifactError, ConfigError, DataError, InputError
from nlpforge.models.artifact import read_metadata
from nlpforge.settings import check_count, check_device, cores

BACKENDS = ("torch", "onnx", "onnx-int8")
MAX_TEXT_CHARS = 100_000


@dataclass
class TrainingData:
    """What a task hands the training engine for one run."""

    train: object                                  # torch Dataset: row index -> example
    lengths: object                                # a length per training row: what batches are grouped by
    collate: Callable[[list], dict]                # examples -> a batch of tensors
    step: Callable[[object, dict], object]         # (model, batch) -> (B,) per-example losses
    evaluate: Callable[[Callable], dict]           # run -> {"validation_<metric>": value, ...}; see Runner below
    metric_for_best: str                           # the evaluate() key whose highest value picks the best epoch
    fingerprint: dict                              # what the data adds to a checkpoint's run identity
    report: str = ""                               # the data report printed before training
    files: list = field(default_factory=list)      # [{"path", "sha256", "rows", "role"}] for the artifact
    task_info: dict | None = None                  # the artifact's labels.json
    test: Callable[[Callable], dict] | None = None  # like evaluate, on --test, once at the end
    set_epoch: Callable[[int], None] | None = None  # told the epoch before each one starts
    card_notes: list = field(default_factory=list)  # paragraphs for the model card
    extra: dict = field(default_factory=dict)      # more for nlpforge.json


class FeatureDataset:
    """Training features computed up front (windows of sentences or contexts), by index."""

    def __init__(self, features: list[dict]):
        self.features = features

    def __len__(self):
        return len(self.features)

    def __getitem__(self, index):
        return self.features[index]


# A Runner is what `evaluate` gets: run(forward, features, keys=MODEL_INPUTS) -> one dict of numpy outputs
# per feature, in order. `forward(model, batch)` maps a padded tensor batch of the features' `keys` to named
# (B, ...) tensors; the engine shards the features over the ranks and gathers the outputs.
Runner = Callable[[Callable, list], list]


def run_features(call: Callable[[dict], dict], features: list[dict], pad_id: int, max_rows: int = 32,
                 max_tokens: int | None = None, keys=MODEL_INPUTS) -> list[dict]:
    """`call(arrays) -> {name: (B, ...) array}` over length-sorted padded batches of the features' `keys`;
    the outputs come back per feature, in order (per-token outputs are padded to their batch's width)."""
    out: list = [None] * len(features)
    lengths = [len(f["input_ids"]) for f in features]
    for indices in inference_batches(lengths, max_rows, max_tokens):
        outputs = call(pad_arrays([features[i] for i in indices], pad_id, keys))
        for row, i in enumerate(indices):
            out[i] = {name: value[row] for name, value in outputs.items()}
    return out


def softmax(scores) -> np.ndarray:
    """Probabilities over the last axis, computed in float64 so that scores of any dtype give the same answer."""
    scores = np.asarray(scores, dtype=np.float64)
    exp = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def hold_out(items: list, fraction: float, seed: int, *, what: str = "examples", source=None) -> tuple[list, list]:
    """(kept, held): a seeded `fraction` of `items` (at least one, never all) held out for validation, both in
    file order. Fewer than 2 items is a DataError naming `source` (the file) and `what` they are."""
    if len(items) < 2:
        raise DataError(f"{source}: too few {what} ({len(items)}) to hold some out for validation and train on "
                        f"the rest; give at least 2 {what}, or give --validation FILE")
    order = np.random.default_rng(seed).permutation(len(items))
    cut = min(max(1, int(round(len(items) * fraction))), len(items) - 1)
    return [items[i] for i in sorted(order[cut:])], [items[i] for i in sorted(order[:cut])]


def text_of(value, max_chars: int | None = MAX_TEXT_CHARS, what: str = "text") -> str:
    """One text from a user: a string (or UTF-8 bytes). With `max_chars` (the server's limit) it must
    also be non-empty and at most that long; without, as in a batch file, an empty text is a text."""
    if isinstance(value, (bytes, bytearray)):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"the {what} is not valid UTF-8; send UTF-8 text") from None
    if not isinstance(value, str):
        raise InputError(f"the {what} must be a string, got {type(value).__name__}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:  # a lone surrogate, e.g. a command-line byte that is not UTF-8
            raise InputError(f"the {what} is not valid Unicode (a lone surrogate U+{ord(value[error.start]):04X} at "
                             f"character {error.start}, often a byte that is not UTF-8); send UTF-8 text") from None
    if max_chars is None:
        return value
    if not value.strip():
        raise InputError(f"the {what} is empty; send at least one non-space character")
    if len(value) > max_chars:
        raise InputError(f"the {what} has {len(value)} characters, over the limit of {max_chars}; "
                         "split it or raise --max-text-chars", status=413)
    return value


# Options of Hugging Face's pipelines that a request may carry in the belief that nlpforge honours them too; other
# keys (an "id", a client's own metadata) pass.
# (Tokenizer options, such as truncation, pass: nlpforge truncates and pads as those clients mean it to.)
PIPELINE_OPTIONS = ("top_k", "targets", "max_answer_length", "doc_stride", "max_question_len", "max_seq_len",
                    "handle_impossible_answer", "align_to_words", "aggregation_strategy", "ignore_labels",
                    "function_to_apply", "return_all_scores")


def check_keys(value: dict, groups: tuple) -> None:
    """Refuse a request key that looks like a misspelling of one the task needs (see `misspelled_key`), or that
    is a pipeline option this task does not take: either would otherwise be ignored."""
    names = {name for group in groups for name in group}
    if "text_pair" in value and "text" in names and "text_pair" not in names:  # NER, fill-mask: it would be dropped
        raise InputError('this model reads one text, not a pair; leave out "text_pair" (--text-pair, or a second '
                         '--text-column)')
    reads = ", ".join(" or ".join(repr(name) for name in group) for group in groups)
    found = misspelled_key(value, groups)
    if found:
        raise InputError(f'the key "{found[0]}" is not one this model reads; did you mean "{found[1]}"? (it reads '
                         f"{reads})")
    option = next((key for key in value if key in PIPELINE_OPTIONS and key not in names), None)
    if option is not None:
        raise InputError(f'"{option}" is not an option this model takes, so it would be ignored; leave it out (it '
                         f"reads {reads})")


def truncated_flags(texts: list, encoded, max_length: int) -> list[bool]:
    """Whether each input (a text or a (text, text_pair)) lost characters to truncation: it fills
    `max_length` tokens and a part's last token ends before the part does (characters the tokenizer drops,
    such as a trailing zero-width space, do not count on a shorter input). `encoded` is a fast tokenizer's
    output with offsets."""
    flags = []
    for i, text in enumerate(texts):
        if len(encoded["input_ids"][i]) < max_length:
            flags.append(False)
            continue
        parts = text if isinstance(text, tuple) else (text,)
        ends = [0] * len(parts)
        for sequence, (_, end) in zip(encoded.sequence_ids(i), encoded["offset_mapping"][i]):
            if sequence is not None:
                ends[sequence] = max(ends[sequence], end)
        flags.append(any(end < len(part.rstrip()) for end, part in zip(ends, parts)))
    return flags


class Task(ABC):
    """One task's contract; see the module docstring. Subclasses set the class attributes."""

    name: str = ""                     # as nlpforge.json records it and `nlpforge train <name>` takes it
    summary: str = ""                  # one line for --help
    settings: type = None              # the task's own settings group (`data`): files, columns, head options
    model_class: str = ""              # transformers Auto class that loads a folder of this task
    outputs: dict = {"logits": ("batch",)}  # model outputs prediction reads, with their dynamic axes
    example_input: str = "some text"   # for the model card
    text_columns: tuple = ("text",)    # what a file to predict for holds, unless the model names its own
    inputs_wanted: str = "a text or a list of texts"  # what predict takes, for messages
    metrics: tuple = ()                # validation metrics logged every epoch (what tuning may optimise)
    # Padded tokens per forward pass when predicting: on a CPU a pass costs rows x padded length, and
    # length-sorted passes of about 1,000 tokens ran 2-3x faster than passes of 4,000 (bench/serving.py).
    max_batch_tokens: int = 1024
    channels: dict = {"train": "train", "validation": "validation", "test": "test"}  # SageMaker channel -> data setting
    info_keys: tuple = ()              # what prediction needs from the folder's labels.json
    defaults: dict = {}                # the task's own defaults for engine settings (its best measured recipe)
    # Whether a text reaches the model as the same token ids every epoch, so that frozen layers' outputs can be
    # kept (nlpforge.models.frozen); not where inputs are masked anew each time.
    same_inputs_every_epoch: bool = True

    # --- training -------------------------------------------------------------------------------------
    @abstractmethod
    def prepare(self, settings, tokenizer, *, max_seq_length: int, seed: int, log) -> TrainingData:
        """Read the data and say how to batch, step and evaluate it."""

    @abstractmethod
    def build_model(self, base, tokenizer, data: TrainingData, model_args, log):
        """The base encoder with this task's head (fresh, or the base's own when it has one)."""

    def channel_is_file(self, setting_name: str) -> bool:
        """Whether a data setting takes one file (str), not files and folders (a list)."""
        from nlpforge.settings import leaf_fields

        return next(tp for _, f, tp in leaf_fields(self.settings) if f.name == setting_name) in (str, str | None)

    def describe_metrics(self, metrics: dict) -> str:
        """One line of the metrics that matter, for the CLI's last line."""
        return ", ".join(f"{k.removeprefix('validation_')} {v:.4f}" for k, v in metrics.items()
                         if k.startswith("validation_") and isinstance(v, float))

    # --- prediction -----------------------------------------------------------------------------------
    @abstractmethod
    def parse_input(self, value, max_chars: int | None = MAX_TEXT_CHARS):
        """One input from a user (a CLI argument, a file row, a request item); InputError when malformed.
        `max_chars` None: no length limit and empty texts allowed (files and the Python API)."""

    @abstractmethod
    def preprocess(self, loaded: "LoadedModel", inputs: list) -> list[dict]:
        """Features (dicts with input_ids, ...) for the inputs; a feature may say which input it serves."""

    @abstractmethod
    def postprocess(self, loaded: "LoadedModel", inputs: list, features: list[dict], outputs: list[dict]) -> list:
        """One answer (a JSON value) per input, from the features' outputs."""

    def attribution_target(self, reference):
        """What token attributions explain: from the unperturbed output, a function of a batch of outputs
        giving one score per row (see nlpforge.tasks.explanations)."""
        raise InputError(f"{self.name} models have no token attributions")

    def explain(self, loaded: "LoadedModel", inputs: list, steps: int = 32) -> list:
        raise InputError(f"a {self.name} model gives no explanations", status=400)

    def evaluate_file(self, loaded: "LoadedModel", path, batch_size: int = 64, text_columns=None,
                      reading: dict | None = None) -> tuple[dict, str]:
        """(metrics, a text report) of the model on a file, for `nlpforge evaluate`; `text_columns` and `reading`
        (delimiter, encoding) are the user's, for a task that reads a table."""
        raise ConfigError(f"`nlpforge evaluate` does not evaluate {self.name} models on files yet")

    def csv_row(self, loaded: "LoadedModel", answer) -> dict:
        """The columns of one answer in a CSV of predictions (JSON in one column, unless the task flattens it)."""
        return {"prediction": json.dumps(answer, ensure_ascii=False)}

    def check_item(self, item, text_columns: list[str]) -> None:
        """Refuse a parsed input that does not fit the model (e.g. one text for a model of text pairs);
        `text_columns` are those the model was trained on (`text_columns_of`)."""

    def as_inputs(self, value, text_columns=None) -> list:
        """A single input (a string, a dict, or a tuple: one text pair) or a list of inputs, as a list;
        `text_columns` (the model's, else the task's) name a table's columns in the message refusing one."""
        if isinstance(value, (str, dict, tuple)):
            return [value]
        if isinstance(value, (bytes, bytearray, memoryview)):
            raise InputError(f"the input is {type(value).__name__}; decode it to a string first, e.g. "
                             "bytes(value).decode('utf-8')")
        if value is None or isinstance(value, (int, float)):
            raise InputError(f"give {self.inputs_wanted}, not {value!r}")
        if hasattr(value, "columns") and hasattr(value, "dtypes"):  # a DataFrame iterates over its column names
            example = self.table_rows_example(list(text_columns or self.text_columns))
            raise InputError(f"give {self.inputs_wanted}, not a {type(value).__name__} (it would give one answer per "
                             f"column name); pass its rows as a list, e.g. {example}")
        if isinstance(value, (set, frozenset)):
            raise InputError(f"give {self.inputs_wanted}, not a {type(value).__name__}: a set has no order, so the "
                             "answers could not be matched to the inputs; pass a list")
        try:
            return list(value)
        except TypeError:
            raise InputError(f"give {self.inputs_wanted}, not a {type(value).__name__}") from None

    def table_rows_example(self, columns: list[str]) -> str:
        """How to pass the rows of a DataFrame `df` holding `columns` as inputs, for messages."""
        return f"df[{columns[0]!r}].tolist()" if len(columns) == 1 else f"df[{columns!r}].to_dict('records')"

    def load_weights(self, folder, **options):
        """The folder's torch model (`options` go to `from_pretrained`, e.g. attn_implementation)."""
        import transformers

        return getattr(transformers, self.model_class).from_pretrained(str(folder), **options)

    def load(self, folder, backend: str = "torch", device: str = "cpu", threads: int | None = None) -> "LoadedModel":
        return load_model(folder, self, backend, device, threads)


@dataclass
class LoadedModel:
    """A model folder loaded for prediction, on torch or ONNX Runtime; what `nlpforge.load` returns."""

    task: Task
    folder: Path
    tokenizer: object
    metadata: dict                     # nlpforge.json
    info: dict                         # labels.json, for tasks that have one
    backend: str = "torch"
    model: object = None               # the torch module (torch backend, and explanations)
    session: object = None             # the ONNX Runtime session (onnx backends)
    max_tokens: int = 1024             # padded tokens per forward pass (the task's max_batch_tokens)

    @property
    def max_seq_length(self) -> int:
        return int(self.metadata.get("max_seq_length", 512))

    @property
    def labels(self) -> list:
        return self.info.get("labels", [])

    @property
    def text_columns(self) -> list[str]:
        return text_columns_of(self.task, self.metadata, self.info)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0

    def call(self, arrays: dict) -> dict:
        """One forward pass on padded (B, T) arrays; the task's outputs as numpy arrays."""
        if self.session is not None:
            names = {i.name for i in self.session.get_inputs()}
            values = self.session.run(list(self.task.outputs), {k: v for k, v in arrays.items() if k in names})
            return dict(zip(self.task.outputs, values))
        import torch

        device = next(self.model.parameters()).device
        with torch.inference_mode():
            result = self.model(**{k: torch.from_numpy(v).to(device) for k, v in arrays.items()})
        return {name: getattr(result, name).float().cpu().numpy() for name in self.task.outputs}

    def parse(self, inputs) -> list:
        """One input or a list of them, parsed by the task and checked against this model; in a list of several,
        an error names the input it is about ("input 3 of 40: ...")."""
        values = self.task.as_inputs(inputs, self.text_columns)
        items = []
        for number, value in enumerate(values, 1):
            try:
                item = self.task.parse_input(value, None)
                self.task.check_item(item, self.text_columns)
            except InputError as error:
                if len(values) == 1:
                    raise
                raise InputError(f"input {number} of {len(values)}: {error.message}", error.status) from None
            items.append(item)
        return items

    def predict(self, inputs, batch_size: int = 32) -> list:
        """Answers for one input or a list of them (always a list back)."""
        check_count(batch_size, "batch_size", InputError)
        return self.answer(self.parse(inputs), batch_size)

    def answer(self, items: list, batch_size: int = 32) -> list:
        """Answers for inputs the task has already parsed (what the server's workers get)."""
        if not items:
            return []
        features = self.task.preprocess(self, items)
        outputs = run_features(self.call, features, self.pad_id, batch_size, self.max_tokens)
        return self.task.postprocess(self, items, features, outputs)

    def explain(self, inputs, steps: int = 32) -> list:
        """Answers plus explanations: token attributions and attention weights (nlpforge.tasks.explanations)."""
        if type(self.task).explain is Task.explain:  # a task without explanations says so before judging inputs
            return self.task.explain(self, [], steps)
        items = self.parse(inputs)
        return self.task.explain(self, items, steps) if items else []


def text_columns_of(task: Task, metadata: dict, info: dict) -> list[str]:
    """The columns a model was trained on (labels.json, then nlpforge.json), else the task's default."""
    for source in (info, metadata):
        columns = source.get("text_columns")
        if isinstance(columns, list) and columns and all(isinstance(c, str) for c in columns):
            return columns
    return list(task.text_columns)


# Model types whose position ids start after the padding index (RoBERTa's offset), so that two fewer fit.
OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert"}


def check_positions(folder: Path, meta: dict) -> None:
    """Refuse a max_seq_length (nlpforge.json) longer than the model has position embeddings (config.json), which
    would otherwise fail inside the model on the first long input."""
    length = meta.get("max_seq_length")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # a missing or unreadable config.json is reported where the weights load
    positions = config.get("max_position_embeddings") if isinstance(config, dict) else None
    if not isinstance(length, int) or not isinstance(positions, int) or isinstance(positions, bool):
        return
    if config.get("model_type") in OFFSET_POSITIONS:
        pad = config.get("pad_token_id")
        positions -= (pad if isinstance(pad, int) else 1) + 1
    if length > positions:
        raise ArtifactError(f"{folder / 'nlpforge.json'}: max_seq_length {length} is over the {positions} positions "
                            f"the model has (max_position_embeddings in config.json); set max_seq_length to at most "
                            f"{positions}, or train the model again")


def load_model(folder, task: Task, backend: str = "torch", device: str = "cpu",
               threads: int | None = None) -> LoadedModel:
    """Load a folder of `task` for prediction on `backend` (torch, onnx or onnx-int8)."""
    from nlpforge.models.registry import check_loaded, loading_errors, quiet_transformers

    if backend not in BACKENDS:
        raise ArtifactError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    check_device(device, "device")
    if threads is not None:
        check_count(threads, "threads", ConfigError)
    meta, info = read_metadata(folder)
    folder = Path(folder)
    if meta.get("task") != task.name:
        raise ArtifactError(f"{folder}: holds a '{meta.get('task')}' model, not {task.name}")
    if not (folder / "tokenizer.json").is_file():
        raise ArtifactError(f"{folder}: tokenizer.json is missing, so the model's vocabulary is unknown; restore the "
                            "file or train the model again")
    check_positions(folder, meta)
    missing = [key for key in task.info_keys if key not in info]
    if missing:
        raise ArtifactError(f"{folder / 'labels.json'}: missing or without {', '.join(missing)}; the model folder "
                            "is damaged, restore the file or train the model again")
    with loading_errors(folder, "train the model again"), quiet_transformers():
        tokenizer = load_tokenizer(folder)
        loaded = LoadedModel(task, folder, tokenizer, meta, info, backend, max_tokens=task.max_batch_tokens)
        if backend == "torch":
            import torch

            from nlpforge.models.attention import attention_for_varying_lengths

            if threads:
                torch.set_num_threads(threads)
            model, loading = task.load_weights(folder, output_loading_info=True)
            check_loaded(folder, loading)
            loaded.model = model.to(device).eval()
            attention_for_varying_lengths(device)  # requests vary in length: no cuDNN plan per shape
        else:
            from nlpforge.models.onnx import open_session

            loaded.session = open_session(folder, task.load_weights, task.outputs, quantized=backend == "onnx-int8",
                                          threads=threads or cores(), device=device)
    return loaded


def load_tokenizer(folder: Path):
    """The folder's tokenizer. transformers reads tokenizer.json and tokenizer_config.json that are valid JSON of
    the wrong shape (a list, null, an object without "model") as if whole and fails inside itself, and the
    tokenizers library refuses what it cannot read with a bare Exception: both are a damaged folder, named as one."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as error:
        if type(error) is not Exception and not isinstance(error, (AttributeError, KeyError, IndexError, TypeError)):
            raise  # OSError, ValueError: nlpforge.models.registry.loading_errors names them
        raise ArtifactError(f"{folder}: tokenizer.json or tokenizer_config.json is damaged ({type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else 'no detail'}); restore the files or train "
                            "the model again") from None
