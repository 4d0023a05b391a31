"""Evaluate a trained model on a file: a classifier next to the TF-IDF + logistic regression baseline,
any other task with its own metrics.

    result = evaluate_model("models/stars", "validation.csv")
    print(result.text)   # both reports; PNG confusion matrices are in result.output_dir

The baseline trains on the model's own training file (from its metadata) or on `baseline_train`,
so every report shows what the transformer adds over a bag of n-grams.
"""
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nlpforge import tasks
from nlpforge.data.labelled import file_sha256, read_labelled_file, some_labels
from nlpforge.errors import ConfigError, DataError
from nlpforge.evaluation.baseline import fit_baseline
from nlpforge.evaluation.render import plot_confusion, render_report
from nlpforge.settings import check_output_folder
from nlpforge.tasks.text_classification import classification_metrics


@dataclass
class EvaluationResult:
    model: dict
    baseline: dict | None
    text: str
    output_dir: Path
    notes: list


def _evaluate_task(loaded, data, baseline: bool, baseline_train, output_dir: Path, batch_size: int,
                   text_columns=None, reading: dict | None = None):
    """Any other task: its own report on the file, and its baseline beside it when it has one."""
    metrics, text = loaded.task.evaluate_file(loaded, data, batch_size=batch_size, text_columns=text_columns,
                                              reading=reading)
    metrics = {k: v for k, v in metrics.items() if k != "predictions"}
    parts, notes, baseline_metrics = [text], [], None
    if baseline and loaded.task.name in BASELINES:
        baseline_metrics, baseline_text = BASELINES[loaded.task.name](loaded, data, baseline_train, notes)
        if baseline_metrics is not None:
            parts.append(baseline_text)
            key = "f1"
            parts.append(f"model vs baseline: {key} {metrics[key] - baseline_metrics[key]:+.4f}")
    parts.extend(notes)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "report.json").write_text(json.dumps({"data": str(data), "model": metrics,
                                                        "baseline": baseline_metrics}, indent=2) + "\n",
                                            encoding="utf-8")
    return EvaluationResult(metrics, baseline_metrics, "\n\n".join(parts), output_dir, notes)


def _crf_baseline(loaded, data, baseline_train, notes):
    """A CRF trained on the model's training file (or baseline_train), scored like the model."""
    from nlpforge.data.sequences import read_tagged
    from nlpforge.evaluation.crf import fit_crf
    from nlpforge.tasks.token_classification import entity_report

    train_file = _baseline_file(baseline_train, loaded.metadata, notes)
    if train_file is None:
        return None, ""
    crf = fit_crf(read_tagged(train_file).sentences)
    tagged = read_tagged(data)
    gold = [tags for _, tags in tagged.sentences]
    predicted = crf.tag([tokens for tokens, _ in tagged.sentences])
    return entity_report(f"baseline CRF (word, shape, affix, neighbour features) trained on {train_file}", gold,
                         predicted, loaded.info.get("scheme", "IOB2"))


def _sliding_window_baseline(loaded, data, baseline_train, notes):
    """The SQuAD paper's sliding-window baseline on the same questions."""
    from nlpforge.data.squad import read_squad
    from nlpforge.evaluation.sliding_window import answer_question
    from nlpforge.tasks.question_answering import squad_metrics

    examples, _ = read_squad(data)
    predictions = {e.id: answer_question(e.question, e.context) for e in examples}
    metrics = {k.removeprefix("data_"): v for k, v in squad_metrics(examples, predictions, "data").items()}
    return metrics, ("baseline sliding window (Rajpurkar et al. 2016): "
                     + "  ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in metrics.items()))


BASELINES = {"token-classification": _crf_baseline, "question-answering": _sliding_window_baseline}
TRAINED_BASELINES = ("text-classification", "token-classification")  # the tasks whose baseline learns from a file
EVALUATION_FILES = ("report.json", "confusion_model.png", "confusion_baseline.png")  # what an evaluation writes


def _training_file(meta: dict) -> str | None:
    for f in meta.get("data_files", []):
        if f.get("role") == "train":
            return f["path"]
    return None


def _baseline_file(baseline_train, meta: dict, notes: list) -> str | None:
    """The file the baseline learns from: `baseline_train` as given (its reader names what is wrong with it),
    else the model's own training file while it is still there; else None, with a note saying so."""
    if baseline_train:
        return str(baseline_train)
    train_file = _training_file(meta)
    if not train_file or not Path(train_file).exists():
        notes.append(f"baseline skipped: training file {train_file!r} not found; pass --baseline-train FILE")
        return None
    return train_file


def _baseline_rows(train_file, known: dict, text_columns, label_column, reading: dict,
                   notes: list) -> tuple[list, list]:
    """(texts, label ids) the baseline learns from: the rows of `train_file` labelled with one of the model's
    labels (`known`: label -> id). Rows with other labels are left out with a note; a DataError when what is
    left holds fewer than 2 classes, naming the file, the rows left and why."""
    texts, labels, _, report = read_labelled_file(train_file, text_columns, label_column, clean=True, **reading)
    pairs = [(text, known[str(label)]) for text, label in zip(texts, labels) if str(label) in known]
    unknown = sorted({str(label) for label in labels} - set(known))
    foreign = len(texts) - len(pairs)
    why = (f"{foreign} with label(s) {', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''} that the model "
           f"does not know (its labels: {', '.join(known)})") if foreign else ""
    other = report.empty_dropped + report.duplicates_dropped + report.missing_label_dropped
    if other:
        why += f"{', ' if why else ''}{other} empty, duplicate or unlabelled"
    present = {i for _, i in pairs}
    classes = [label for label, i in known.items() if i in present]
    if len(classes) < 2:
        found = (f"its {len(pairs)} usable rows (of {report.rows}) are all labelled {classes[0]}" if classes
                 else f"none of its {report.rows} rows is usable")
        raise DataError(f"{train_file}: the baseline needs rows of at least 2 of the model's labels to learn from, "
                        f"but {found}{f'; left out: {why}' if why else ''}; give --baseline-train a file labelled "
                        "like the model's training data, or --no-baseline")
    if foreign:
        notes.append(f"{train_file}: the baseline learned from {len(pairs)} of {report.rows} rows; left out: {why}")
    return [text for text, _ in pairs], [i for _, i in pairs]


def evaluate_model(model_path, data, text_columns=None, label_column=None, baseline=True, baseline_train=None,
                   output_dir=None, batch_size: int = 64, reading: dict | None = None) -> EvaluationResult:
    """The model's report on `data` beside its baseline; `reading` holds `read_table`'s delimiter and encoding
    (tables and corpora only: entity and question files have their own formats)."""
    reading = reading or {}
    loaded = tasks.load(model_path)
    check_output_folder(output_dir or Path(model_path) / "evaluation",
                        "--output-dir" if output_dir else "the model's evaluation folder (the default --output-dir)",
                        "evaluation", "report.json", own=EVALUATION_FILES)
    output_dir = Path(output_dir) if output_dir else Path(model_path) / "evaluation"
    if baseline_train and not (baseline and loaded.task.name in TRAINED_BASELINES):
        raise ConfigError(f"--baseline-train {baseline_train}: " + (
            "--no-baseline turns the baseline off; leave out one of the two" if not baseline else
            f"a {loaded.task.name} model's baseline learns from no file; leave out --baseline-train"
            if loaded.task.name in BASELINES else f"a {loaded.task.name} model has no baseline; leave out "
            "--baseline-train"))
    if loaded.task.name != "text-classification":
        return _evaluate_task(loaded, data, baseline, baseline_train, output_dir, batch_size, text_columns, reading)
    meta = loaded.metadata
    text_columns = list(text_columns or loaded.text_columns)
    label_column = label_column or loaded.info.get("label_column", "label")
    notes = []
    texts, labels, _, file_report = read_labelled_file(data, text_columns, label_column, clean=True, **reading)
    dropped = file_report.empty_dropped + file_report.duplicates_dropped + file_report.missing_label_dropped
    if dropped:
        notes.append(f"{data}: evaluated {len(texts)} of {file_report.rows} rows ({file_report.empty_dropped} empty, "
                     f"{file_report.duplicates_dropped} duplicate, {file_report.missing_label_dropped} unlabelled dropped)")
    known = {str(label): i for i, label in enumerate(loaded.labels)}
    unknown = sorted({str(v) for v in labels} - set(known))
    if unknown:
        raise DataError(f"{data}: label(s) {some_labels(unknown)} in '{label_column}' are not among the model's "
                        f"labels ({some_labels(known)}); is '{label_column}' the label column?")
    true_ids = [known[str(v)] for v in labels]
    # The baseline's rows are read and checked before the model runs, so a file it cannot learn from fails fast.
    train_file, baseline_rows = None, None
    if baseline:
        train_file = _baseline_file(baseline_train, meta, notes)
        if train_file is not None:
            if not baseline_train:
                recorded = next(f["sha256"] for f in meta["data_files"] if f.get("role") == "train")
                if file_sha256(train_file) != recorded:
                    notes.append(f"note: {train_file} changed since training (sha256 differs)")
            baseline_rows = _baseline_rows(train_file, known, text_columns, label_column, reading, notes)
    answers = loaded.predict(texts, batch_size=batch_size) if texts else []
    predicted = np.array([known[str(answer["label"])] for answer in answers], dtype=np.int64)
    model_report = classification_metrics(true_ids, predicted, loaded.labels)
    baseline_report = None
    if baseline_rows is not None:  # before any file is written: a baseline that fails leaves no half evaluation
        fitted = fit_baseline(*baseline_rows, source=train_file)
        baseline_report = classification_metrics(true_ids, fitted.predict(texts), loaded.labels)
    output_dir.mkdir(parents=True, exist_ok=True)
    name = Path(model_path).name
    plot_confusion(model_report, output_dir / "confusion_model.png", title=f"{name} on {Path(data).name}")
    parts = [render_report(model_report, f"{name} ({meta.get('base_model')})")]
    if baseline_report is not None:
        plot_confusion(baseline_report, output_dir / "confusion_baseline.png", title="TF-IDF + logistic regression")
        parts.append(render_report(baseline_report, "baseline TF-IDF (1-2 grams) + logistic regression"))
        parts.append(f"transformer vs baseline: accuracy {model_report['accuracy'] - baseline_report['accuracy']:+.4f}, "
                     f"macro-F1 {model_report['macro_f1'] - baseline_report['macro_f1']:+.4f}")
    parts.extend(notes)
    parts.append(f"confusion matrices: {output_dir}/confusion_*.png; report: {output_dir}/report.json")
    (output_dir / "report.json").write_text(json.dumps(
        {"data": str(data), "model": model_report, "baseline": baseline_report}, indent=2) + "\n", encoding="utf-8")
    return EvaluationResult(model_report, baseline_report, "\n\n".join(parts), output_dir, notes)
