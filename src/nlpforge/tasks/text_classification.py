"""Text classification: one label per text or text pair (the flagship: a review's 1-5 star rating).

    nlpforge train text-classification --train train.csv --validation val.csv \\
        --text-column review_body --label-column star_rating --output models/stars
    nlpforge.load("models/stars").predict(["Loved it", ("a premise", "a hypothesis")])
    # [{"label": 5, "score": 0.81, "probabilities": {"1": 0.01, ..., "5": 0.81}, "truncated": False}, ...]

Head: a fresh linear layer on the pooled [CLS] vector (transformers' sequence-classification
head; for BERT its last layer computes [CLS] only), or on the mean of the token vectors
(`--pooling mean`, nlpforge.models.pooling). Loss:
cross-entropy, optionally class-balanced and label-smoothed, plus an optional ordinal term for
ordered labels (the squared distance, in label steps, of the expected label) and optional R-Drop
(the symmetric KL divergence between two dropout passes of the batch). Metrics: accuracy,
macro-F1, per-class precision/recall/F1 and the confusion matrix. A request is a string, {"text": ...} or
{"text": ..., "text_pair": ...}; the answer is the label, its score and every class's probability.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from nlpforge.data.batching import encode, pad_batch
from nlpforge.data.labelled import Split, load_labelled, read_labelled_file, some_labels, stratified_sample
from nlpforge.data.readers import ReadingSettings
from nlpforge.data.report import render_data_report, token_length_stats
from nlpforge.errors import ConfigError, DataError, InputError
from nlpforge.models.pooling import (POOLING_KEY, cls_pooled_classifier, cls_pooled_mpnet_classifier,
                                     mean_pooled_classifier)
from nlpforge.settings import Settings, group, setting
from nlpforge.tasks.base import (MAX_TEXT_CHARS, Task, TrainingData, check_keys, softmax, text_of,
                                 truncated_flags)
from nlpforge.tasks.explanations import explain_inputs

LAZY_ABOVE_BYTES = 256 * 1024 * 1024  # data_loading=auto maps files larger than this
_TEXT_KEYS = ("text", "data", "body", "inputs", "input")  # TorchServe clients send "data" or "body"


@dataclass
class TextClassificationData(Settings):
    """Which labelled files, columns and loss a classifier trains on."""

    train: str = setting("", "training data file (.csv, .tsv, .jsonl, .parquet)", required=True)
    validation: str | None = setting(None, "validation file; without one, a stratified split of --train")
    test: str | None = setting(None, "test file, evaluated once with the best weights at the end")
    text_column: list[str] = setting(["text"], "text column; give twice for text pairs")
    label_column: str = setting("label", "label column (ints or strings)")
    validation_fraction: float = setting(0.1, "share of --train held out when no --validation is given",
                                         min=0.001, max=0.999)
    max_train_rows: int | None = setting(None, "use only this many training rows (a stratified sample)", min=2)
    data_loading: Literal["auto", "memory", "lazy"] = setting(
        "auto", "memory, lazy (memory-mapped Arrow, tokenized on the fly) or auto (lazy above 256 MB)")
    class_weights: Literal["none", "balanced"] = setting("none", "loss weights per class: none or balanced")
    pooling: Literal["cls", "mean"] = setting("cls", "what the head reads: cls (BERT's pooler on [CLS]) or mean (the "
                                                     "mean of the token vectors, as sentence-transformers encoders "
                                                     "such as all-MiniLM were trained)")
    label_smoothing: float = setting(0.0, "share of each target spread evenly over the classes", min=0, max=0.5)
    ordinal_loss: float = setting(0.0, "weight of the squared distance between the expected and the true label, "
                                       "added to the cross-entropy, for ordered numeric labels such as 1-5 stars "
                                       "(0: off)", min=0)
    rdrop: float = setting(0.0, "R-Drop: each batch runs twice with different dropout, and this weight times the "
                                "symmetric KL divergence between the two predictions joins the loss (0: off; "
                                "doubles a step's compute)", min=0)
    metric_for_best: Literal["macro_f1", "accuracy"] = setting("macro_f1", "validation metric that picks the best "
                                                                           "epoch")
    reading: ReadingSettings = group(ReadingSettings)

    def check(self):
        if not self.text_column:
            raise ConfigError("give at least one --text-column")
        if self.label_column in self.text_column:
            raise ConfigError(f"--text-column {self.label_column} is also the --label-column: the model would read "
                              "the answer; name the text columns only")
        repeated = sorted({c for c in self.text_column if self.text_column.count(c) > 1})
        if repeated:
            raise ConfigError(f"--text-column {', '.join(repeated)} is given more than once; name each text column "
                              "once (two columns make a text pair)")


class TextDataset:
    """Row index -> (text or text pair, label id); tokenization happens in `Collate`."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self):
        return len(self.split)

    def __getitem__(self, index):
        return self.split.texts[index], self.split.label_ids[index]


class Collate:
    """Tokenize and pad a batch on the fly (in DataLoader workers when there are any)."""

    def __init__(self, tokenizer, max_seq_length: int):
        self.tokenizer, self.max_seq_length = tokenizer, max_seq_length
        self.pad_id = tokenizer.pad_token_id or 0

    def __call__(self, examples) -> dict:
        texts, labels = zip(*examples)
        rows = encode(self.tokenizer, list(texts), self.max_seq_length)
        for row, label in zip(rows, labels):
            row["labels"] = label
        return pad_batch(rows, self.pad_id)


def classification_metrics(true_ids, predicted_ids, labels: list) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    label_ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        true_ids, predicted_ids, labels=label_ids, zero_division=0)
    return {
        "accuracy": float(accuracy_score(true_ids, predicted_ids)),
        "macro_f1": float(f1_score(true_ids, predicted_ids, labels=label_ids, average="macro", zero_division=0)),
        "per_class": {str(labels[i]): {"precision": float(precision[i]), "recall": float(recall[i]),
                                       "f1": float(f1[i]), "support": int(support[i])} for i in label_ids},
        "confusion_matrix": confusion_matrix(true_ids, predicted_ids, labels=label_ids).tolist(),
        "labels": [str(label) for label in labels],
        "examples": int(len(true_ids)),
    }


def grouping_lengths(texts, counted: list[int], max_seq_length: int) -> list[int] | np.ndarray:
    """What length grouping sorts the training rows by. When every row's tokens were `counted`, those
    counts, capped at the length a row is cut to (longer rows tie); otherwise (a mapped or larger file)
    characters, a proxy that costs nothing at start-up but pads about 10% more on reviews (a 1-word
    and a 3-word review can have the same characters and not the same tokens)."""
    if len(counted) == len(texts):
        return np.minimum(np.asarray(counted), max_seq_length)
    return char_lengths(texts)


def char_lengths(texts) -> list[int] | np.ndarray:
    """Characters per row: the cheap proxy for token length when rows are not tokenized up front."""
    if hasattr(texts, "char_lengths"):
        return texts.char_lengths()
    return [len(t) if isinstance(t, str) else sum(len(part) for part in t) for t in texts]


def token_lengths(tokenizer, texts, chunk: int = 1000) -> list[int]:
    """Untruncated token counts, tokenized a chunk at a time so only the counts stay in memory."""
    lengths = []
    for start in range(0, len(texts), chunk):
        lengths.extend(len(row["input_ids"]) for row in encode(tokenizer, texts[start:start + chunk], 1_000_000))
    return lengths


def ordinal_values(labels: list):
    """The labels as positions on their scale, in label steps (1-5 stars: 0..4), for the ordinal loss."""
    import torch

    try:
        numbers = [float(label) for label in labels]
    except (TypeError, ValueError):
        shown = ", ".join(map(str, labels[:5]))
        raise ConfigError(f"ordinal-loss needs numeric labels (such as 1-5 stars), not {shown}; leave it at 0 for "
                          "unordered classes") from None
    step = min((b - a for a, b in zip(numbers, numbers[1:])), default=1.0) or 1.0
    return torch.tensor([(n - numbers[0]) / step for n in numbers], dtype=torch.float32)


def model_type(base) -> str | None:
    """The base's transformers model_type: a from-scratch base is BERT."""
    import json

    if not base.pretrained:
        return "bert"
    return json.loads((Path(base.weights) / "config.json").read_text(encoding="utf-8")).get("model_type")


def check_mean_pooling_base(base) -> None:
    """Mean pooling is built on BERT's classifier: a pretrained base must be a BERT-family folder."""
    kind = model_type(base)
    if kind != "bert":
        raise ConfigError(f"--pooling mean needs a BERT-family base (model_type bert), and {base.name} is "
                          f"{kind!r}; use --pooling cls")


def use_lazy(settings: TextClassificationData) -> bool:
    if settings.data_loading == "auto":
        return Path(settings.train).is_file() and Path(settings.train).stat().st_size > LAZY_ABOVE_BYTES
    return settings.data_loading == "lazy"


def cross_entropy(scores: np.ndarray, true_ids) -> float:
    """Mean cross-entropy of (N, num_labels) class scores against the true label ids (unweighted)."""
    if not len(scores):
        return float("nan")
    top = scores.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(scores - top).sum(axis=1))
    return float(np.mean(log_norm - scores[np.arange(len(scores)), np.asarray(true_ids, dtype=np.int64)]))


def logits(model, batch) -> dict:
    """The forward pass evaluation runs: class scores (B, num_labels)."""
    return {"logits": model(**batch).logits.float()}


# The [CLS] classifiers whose last layer computes the [CLS] position only, by model_type.
_CLS_ONLY = {"bert": cls_pooled_classifier, "mpnet": cls_pooled_mpnet_classifier}


class TextClassification(Task):
    name = "text-classification"
    summary = "Fine-tune a BERT-family encoder to classify text or text pairs (e.g. 1-5 star ratings)."
    settings = TextClassificationData
    model_class = "AutoModelForSequenceClassification"
    outputs = {"logits": ("batch",)}
    example_input = "Loved it"
    metrics = ("validation_accuracy", "validation_macro_f1")
    info_keys = ("labels",)
    # The best recipe measured on the flagship within 15 minutes of 2 CPU cores (docs/benchmarks.md, "A larger
    # base in the time budget"): all-mpnet-base-v2 with its lowest 8 of 12 layers frozen (freeze_layers None:
    # all but the top 4 of a base deeper than 6 layers), 2 epochs at a peak of 1e-4, each lower layer learning
    # at 0.8x the one above. MiniLM-L6's own best, 3 epochs at 1e-4, is 4 points of accuracy below it.
    defaults = {"model": "mpnet-base", "freeze_layers": None, "epochs": 2, "learning_rate": 1e-4, "batch_size": 16,
                "layer_lr_decay": 0.8}

    # --- training -------------------------------------------------------------------------------------
    def prepare(self, settings: TextClassificationData, tokenizer, *, max_seq_length: int, seed: int,
                log) -> TrainingData:
        lazy = use_lazy(settings)
        data = load_labelled(settings.train, settings.validation, text_columns=settings.text_column,
                             label_column=settings.label_column, validation_fraction=settings.validation_fraction,
                             seed=seed, lazy=lazy, **settings.reading.options)
        if settings.max_train_rows and settings.max_train_rows < len(data.train):
            data.train = data.train.take(stratified_sample(data.train.label_ids, settings.max_train_rows, seed))
        # Report on every row of an in-memory file (up to 20k); a mapped file gets a 2k-row sample so
        # that start-up does not grow with the file.
        full_lengths = token_lengths(tokenizer, data.train.texts[:2000 if lazy else 20000])
        validation_rows = encode(tokenizer, data.validation.texts, max_seq_length)
        extra = {"validation_split": "split_from_train" if data.split_from_train else "file",
                 "token_lengths": token_length_stats(full_lengths, max_seq_length), "pooling": settings.pooling}

        def scored(run, rows, true_ids, prefix) -> dict:
            scores = np.stack([np.asarray(output["logits"], dtype=np.float64) for output in run(logits, rows)])
            report = classification_metrics(true_ids, scores.argmax(axis=1), data.labels)
            extra[f"{prefix}_report"] = report
            return {f"{prefix}_accuracy": report["accuracy"], f"{prefix}_macro_f1": report["macro_f1"],
                    f"{prefix}_loss": cross_entropy(scores, true_ids)}

        if settings.test:  # read now: a bad test file is found before the epochs, not after
            test_texts, test_labels, _, _ = read_labelled_file(settings.test, data.text_columns, data.label_column,
                                                               clean=True, **settings.reading.options)
            known = {label: i for i, label in enumerate(data.labels)}
            unknown = sorted({str(v) for v in test_labels if v not in known})
            if unknown:
                raise DataError(f"{settings.test}: label(s) {some_labels(unknown)} never appear in the training file")

        def test(run) -> dict:
            rows = encode(tokenizer, test_texts, max_seq_length)
            return scored(run, rows, [known[v] for v in test_labels], "test")

        return TrainingData(
            train=TextDataset(data.train), lengths=grouping_lengths(data.train.texts, full_lengths, max_seq_length),
            collate=Collate(tokenizer, max_seq_length),
            step=self.loss(settings, data.train.label_ids, data.labels),
            evaluate=lambda run: scored(run, validation_rows, data.validation.label_ids, "validation"),
            test=test if settings.test else None,
            metric_for_best=f"validation_{settings.metric_for_best}",
            fingerprint={"labels": data.labels, "train_sha256": data.files[0].sha256, "train_rows": len(data.train),
                         "class_weights": settings.class_weights, "max_train_rows": settings.max_train_rows,
                         "label_smoothing": settings.label_smoothing, "ordinal_loss": settings.ordinal_loss,
                         "pooling": settings.pooling,
                         **({"rdrop": settings.rdrop} if settings.rdrop else {})},  # older checkpoints still resume
            report=render_data_report(data, full_lengths, max_seq_length),
            files=[{"path": f.path, "sha256": f.sha256, "rows": f.rows, "role": "train" if i == 0 else "validation"}
                   for i, f in enumerate(data.files)],
            task_info={"labels": data.labels, "text_columns": data.text_columns, "label_column": data.label_column},
            card_notes=[f"Labels: {', '.join(map(str, data.labels))}"] + (
                ["Head: the mean of the token vectors (pooling mean). Load this folder with `nlpforge.load`: plain "
                 "transformers would read it as a [CLS] classifier with a fresh pooler."]
                if settings.pooling == "mean" else []), extra=extra)

    @staticmethod
    def loss(settings: TextClassificationData, label_ids, labels: list):
        """Per-example cross-entropy, optionally class-balanced and label-smoothed, plus the ordinal term; with
        R-Drop, the mean of both passes' losses plus the weighted symmetric KL divergence between them."""
        import torch

        n_labels = len(labels)
        weight = None
        if settings.class_weights == "balanced":
            counts = np.bincount(np.asarray(label_ids, dtype=np.int64), minlength=n_labels).astype(np.float64)
            weight = torch.tensor(len(label_ids) / (n_labels * np.maximum(counts, 1)), dtype=torch.float32)
        values = ordinal_values(labels) if settings.ordinal_loss else None

        def step(model, batch):
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            targets = batch["labels"]
            if settings.rdrop:  # both passes in one forward: each row draws its own dropout masks
                inputs = {k: torch.cat([v, v]) for k, v in inputs.items()}
                targets = torch.cat([targets, targets])
            scores = model(**inputs).logits.float()  # (B, num_labels), or (2B, num_labels) with R-Drop
            loss = torch.nn.functional.cross_entropy(
                scores, targets, reduction="none", label_smoothing=settings.label_smoothing,
                weight=None if weight is None else weight.to(scores.device))  # (B,), or (2B,)
            if values is not None:
                steps = values.to(scores.device)
                expected = scores.softmax(-1) @ steps  # (B,), or (2B,)
                loss = loss + settings.ordinal_loss * (expected - steps[targets]) ** 2
            if settings.rdrop:
                first, second = scores.log_softmax(-1).chunk(2)  # (B, num_labels) each
                divergence = ((first.exp() - second.exp()) * (first - second)).sum(-1) / 2  # (KL(1|2) + KL(2|1)) / 2
                loss = loss.view(2, -1).mean(0) + settings.rdrop * divergence
            return loss

        return step

    def build_model(self, base, tokenizer, data: TrainingData, model_args, log):
        from nlpforge.models.registry import build_model

        labels = data.task_info["labels"]
        mean = data.extra.get("pooling") == "mean"
        if mean:
            check_mean_pooling_base(base)
            log("head: mean of the token vectors (--pooling mean); load the folder with nlpforge.load, since plain "
                "transformers reads it as a [CLS] classifier")
        # BERT's and MPNet's [CLS] heads as transformers' classes, with the last layer computed for [CLS] only
        # (same logits)
        head = mean_pooled_classifier() if mean else _CLS_ONLY.get(model_type(base), lambda: self.model_class)()
        return build_model(base, head, tokenizer,
                           model_args.max_seq_length, model_args.dropout, num_labels=len(labels),
                           id2label={i: str(label) for i, label in enumerate(labels)},
                           label2id={str(label): i for i, label in enumerate(labels)})

    def load_weights(self, folder, **options):
        """A [CLS] classifier, or the mean-pooled one when config.json says "pooling": "mean"."""
        import json

        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
        if config.get(POOLING_KEY) == "mean":
            return mean_pooled_classifier().from_pretrained(str(folder), **options)
        fast = _CLS_ONLY.get(config.get("model_type"))
        if fast is not None and config.get("architectures") == [fast().__name__]:
            return fast().from_pretrained(str(folder), **options)
        return super().load_weights(folder, **options)

    def describe_metrics(self, metrics: dict) -> str:
        return (f"validation accuracy {metrics['validation_accuracy']:.4f}, "
                f"macro-F1 {metrics['validation_macro_f1']:.4f}")

    # --- prediction -----------------------------------------------------------------------------------
    def parse_input(self, value, max_chars: int | None = MAX_TEXT_CHARS):
        """A text, or a text pair: a (text, text_pair) tuple, or {"text": ..., "text_pair": ...}."""
        if isinstance(value, dict):
            check_keys(value, (_TEXT_KEYS, ("text_pair",)))
            key = next((k for k in _TEXT_KEYS if k in value), None)
            if key is None:
                raise InputError('a JSON object must hold the text under "text" (or "data"), e.g. {"text": "Loved '
                                 'it"}, and a second text under "text_pair" for a pair')
            if value.get("text_pair") is not None:
                return text_of(value[key], max_chars), text_of(value["text_pair"], max_chars, "text_pair")
            value = value[key]
        elif isinstance(value, tuple):
            if len(value) != 2:
                raise InputError(f"a text pair has two texts, not {len(value)}")
            return text_of(value[0], max_chars), text_of(value[1], max_chars, "text_pair")
        return text_of(value, max_chars)

    def table_rows_example(self, columns: list[str]) -> str:
        """A pair is a (text, text_pair) tuple: a dict keyed by the table's own column names is not one."""
        if len(columns) == 2:
            return f"list(zip(df[{columns[0]!r}], df[{columns[1]!r}]))"
        return super().table_rows_example(columns)

    def check_item(self, item, text_columns: list[str]) -> None:
        pairs = len(text_columns) > 1
        if pairs and not isinstance(item, tuple):
            raise InputError(f"this model was trained on text pairs ({', '.join(text_columns)}); give the second "
                             'text too ("text_pair" in a request, --text-pair on the command line)')
        if isinstance(item, tuple) and not pairs:
            raise InputError(f"this {self.name} model reads one text (trained on {text_columns[0]}), not a pair; "
                             'leave out the second text ("text_pair", --text-pair)')

    def preprocess(self, loaded, inputs: list) -> list[dict]:
        pairs = [i for i in inputs if isinstance(i, tuple)]
        if pairs and len(pairs) != len(inputs):  # one tokenizer call takes all texts or all pairs
            return [feature for item in inputs for feature in self.preprocess(loaded, [item])]
        first, second = (list(zip(*inputs)) if pairs else (inputs, None))
        encoded = loaded.tokenizer(list(first), list(second) if second else None, truncation="longest_first",
                                   max_length=loaded.max_seq_length, return_offsets_mapping=True)
        flags = truncated_flags(inputs, encoded, loaded.max_seq_length)
        names = [n for n in ("input_ids", "token_type_ids", "attention_mask") if n in encoded]
        return [{**{n: encoded[n][i] for n in names}, "truncated": flags[i]} for i in range(len(inputs))]

    def postprocess(self, loaded, inputs: list, features: list[dict], outputs: list[dict]) -> list[dict]:
        answers = []
        for feature, output in zip(features, outputs):
            probabilities = softmax(output["logits"])
            answers.append(self.answer(loaded.labels, probabilities, feature["truncated"]))
        return answers

    @staticmethod
    def answer(labels: list, probabilities, truncated: bool) -> dict:
        best = int(probabilities.argmax())
        return {"label": labels[best], "score": float(probabilities[best]),
                "probabilities": {str(label): float(p) for label, p in zip(labels, probabilities)},
                "truncated": bool(truncated)}

    def attribution_target(self, reference):
        """The predicted class's probability, as TorchServe's BERT handler attributes it."""
        best = int(reference.logits[0].argmax())
        return lambda output: output.logits.softmax(-1)[:, best]

    def explain(self, loaded, inputs: list, steps: int = 32) -> list[dict]:
        """The prediction plus its explanation (nlpforge.tasks.explanations)."""
        return explain_inputs(loaded, inputs, steps=steps)

    def csv_row(self, loaded, answer: dict) -> dict:
        return {"label": answer["label"], "score": f"{answer['score']:.6f}",
                **{f"p_{label}": f"{answer['probabilities'][str(label)]:.6f}" for label in loaded.labels}}


TASK = TextClassification()
