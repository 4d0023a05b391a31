"""Labelled text for classification: read, clean, validate, de-duplicate, split and report.

    data = load_labelled("train.csv", "validation.csv", text_columns=["review_body"],
                         label_column="star_rating")
    data.train.texts, data.train.label_ids, data.labels, data.report

Labels may be ints or strings; ints keep their numeric order (1..5 stars). A missing label (an
empty cell, JSON null, a Parquet null, or a CSV's "NaN"/"null"/"N/A") drops its row, whatever the
format, and the report counts it. With no validation file a seeded, stratified split is made from
the training file; a label column that cannot be one (a class per row) is refused before training.
"""
import hashlib
import re
from dataclasses import dataclass, field

import numpy as np

from nlpforge.data.readers import read_table
from nlpforge.errors import DataError
from nlpforge.data.clean import clean_html
from nlpforge.data.formats import join_columns

_INT = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
# What writers put in a CSV cell for a missing value (pandas, numpy, R, spreadsheets); compared lower-cased.
MISSING_LABELS = frozenset({"", "nan", "-nan", "null", "<na>", "n/a", "#n/a"})


@dataclass
class Split:
    """One split: parallel lists of texts (or text pairs) and label ids."""

    texts: list                   # a list, or an ArrowTexts over a memory-mapped file
    label_ids: list[int]          # a list or a numpy array

    def __len__(self):
        return len(self.texts)

    def take(self, indices) -> "Split":
        if hasattr(self.texts, "take"):
            return Split(self.texts.take(indices), np.asarray(self.label_ids)[np.asarray(indices, dtype=np.int64)])
        return Split([self.texts[i] for i in indices], [self.label_ids[i] for i in indices])


@dataclass
class FileReport:
    path: str
    sha256: str
    rows: int
    empty_dropped: int = 0
    duplicates_dropped: int = 0
    missing_label_dropped: int = 0
    replaced_bytes: int = 0
    duplicates_checked: bool = True


@dataclass
class LabelledData:
    train: Split
    validation: Split
    labels: list  # label values in id order: labels[id] -> 1..5 or "positive"
    text_columns: list[str]
    label_column: str
    files: list[FileReport] = field(default_factory=list)
    split_from_train: bool = False

    def label_counts(self, split: Split) -> dict:
        counts = np.bincount(np.asarray(split.label_ids, dtype=np.int64), minlength=len(self.labels))
        return {str(self.labels[i]): int(counts[i]) for i in range(len(self.labels))}


def some_labels(values, limit: int = 8) -> str:
    """Labels for a message: the first `limit`, then how many there are (a text column given as the label
    column would otherwise list every text)."""
    values = [str(v) for v in values]
    shown = ", ".join(value if len(value) <= 40 else value[:37] + "..." for value in values[:limit])
    return shown if len(values) <= limit else f"{shown}, ... ({len(values)} in all)"


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _label_values(raw) -> list:
    """Turn a label column into Python ints when every value is an integer, else strings; a missing label
    (see MISSING_LABELS) becomes None."""
    values = ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip() for v in raw]
    values = ["" if v.lower() in MISSING_LABELS else v for v in values]
    as_int = [v[:-2] if v.endswith(".0") and _INT.match(v[:-2]) else v for v in values]
    if all(_INT.match(v) for v in as_int if v):
        return [int(v) if v else None for v in as_int]
    return [v if v else None for v in values]


def read_labelled_file(path, text_columns, label_column, clean, **reading) -> tuple[list, list, list, FileReport]:
    """(texts, labels, their 1-based data rows, FileReport) of one file; `reading` holds `read_table`'s
    `delimiter` and `encoding`."""
    table = read_table(path, columns=[*text_columns, label_column], **reading)
    frame = table.frame
    columns = [frame[c].map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
               for c in text_columns]
    if clean:
        columns = [c.map(clean_html) for c in columns]
    for name, column in zip(text_columns, columns):
        if not column.str.strip().astype(bool).any():
            raise DataError(f"{table.path}: text column '{name}' is empty in every row; "
                            "name the column that holds the text with --text-column")
    labels = _label_values(frame[label_column])
    if all(label is None for label in labels):
        raise DataError(f"{table.path}: label column '{label_column}' is empty in every row; "
                        "name the column that holds the labels with --label-column")
    report = FileReport(path=str(table.path), sha256=file_sha256(table.path), rows=len(frame),
                        replaced_bytes=table.replaced_bytes)
    texts, kept_labels, source_rows, seen = [], [], [], set()
    for row in range(len(frame)):
        parts = tuple(c.iat[row] for c in columns)
        if not any(p.strip() for p in parts):
            report.empty_dropped += 1
            continue
        if labels[row] is None:
            report.missing_label_dropped += 1
            continue
        key = (parts, labels[row])
        if key in seen:
            report.duplicates_dropped += 1
            continue
        seen.add(key)
        texts.append(join_columns(parts))
        kept_labels.append(labels[row])
        source_rows.append(row + 1)
    return texts, kept_labels, source_rows, report


def check_classes(path, label_column: str, labels: list, counts, split: bool) -> None:
    """Refuse a label column that cannot train a classifier: a class for nearly every row, or (when the
    validation set is split from `path`) no class with the two rows a stratified split needs."""
    counts = np.asarray(counts)
    rows = int(counts.sum())
    numbers = [v for v in labels if isinstance(v, str) and _NUMBER.match(v)]
    why = (f" (its values are numbers such as {numbers[0]}: a regression target, not classes?)"
           if len(numbers) > len(labels) // 2 else "")
    if split and counts.max() < 2:
        raise DataError(f"{path}: every label in '{label_column}' occurs in a single row ({len(labels)} labels), so "
                        f"no stratified validation split can be made{why}; check --label-column, or give "
                        "--validation FILE")
    if len(labels) > 2 and len(labels) > rows // 2:
        raise DataError(f"{path}: too many classes for the rows: '{label_column}' holds {len(labels)} distinct "
                        f"labels in {rows} rows{why}; a classifier needs several rows per class; check "
                        "--label-column")


def stratified_split(n_labels, label_ids, fraction, seed):
    """Indices for (train, validation); each class keeps its share, classes of one stay in train."""
    rng = np.random.default_rng(seed)
    train, validation = [], []
    ids = np.asarray(label_ids)
    for label in range(n_labels):
        members = np.flatnonzero(ids == label)
        rng.shuffle(members)
        take = int(round(len(members) * fraction)) if len(members) > 1 else 0
        take = min(max(take, 1 if len(members) > 1 else 0), len(members) - 1) if len(members) else 0
        validation.extend(members[:take].tolist())
        train.extend(members[take:].tolist())
    return sorted(train), sorted(validation)


def stratified_sample(label_ids, rows: int, seed: int) -> list[int]:
    """Exactly `rows` indices (sorted), each class keeping its share; remainders go to the largest fractions."""
    ids = np.asarray(label_ids)
    classes, counts = np.unique(ids, return_counts=True)
    quota = counts * rows / len(ids)
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take), kind="stable")[: rows - take.sum()]:
        take[i] += 1
    rng = np.random.default_rng(seed)
    chosen = []
    for label, count in zip(classes, take):
        members = np.flatnonzero(ids == label)
        chosen.extend(rng.choice(members, size=count, replace=False).tolist())
    return sorted(chosen)


def _lazy_file(path, text_columns, label_column, **reading):
    """(ArrowTexts, raw label values per usable row as numpy codes + their values, FileReport) for a big file."""
    from nlpforge.data.lazy import ArrowTexts, lazy_columns

    texts, labels, usable, lazy_report = lazy_columns(path, text_columns, label_column, **reading)
    rows = np.flatnonzero(usable)
    encoded = labels.take(rows).combine_chunks().dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    values = _label_values(encoded.dictionary.to_pylist())
    labelled = ~np.isin(codes, [i for i, v in enumerate(values) if v is None])
    rows, codes = rows[labelled], codes[labelled]
    report = FileReport(path=str(path), sha256=file_sha256(path), rows=lazy_report.rows,
                        empty_dropped=lazy_report.empty_dropped,
                        missing_label_dropped=lazy_report.missing_label_dropped + int((~labelled).sum()))
    report.duplicates_checked = False
    return ArrowTexts(texts, rows), codes, values, rows, report


def _load_lazy(train, validation, text_columns, label_column, validation_fraction, seed, reading) -> LabelledData:
    texts, codes, values, _, report = _lazy_file(train, text_columns, label_column, **reading)
    labels = sorted({v for v in values if v is not None}, key=lambda v: (isinstance(v, str), v))
    if len(labels) < 2:
        raise DataError(f"{train}: column '{label_column}' holds a single label; classification needs at least two")
    lookup = np.array([labels.index(v) if v is not None else -1 for v in values], dtype=np.int64)
    whole = Split(texts, lookup[codes])
    check_classes(train, label_column, labels, np.bincount(whole.label_ids, minlength=len(labels)),
                  validation is None)
    if validation is None:
        train_index, validation_index = stratified_split(len(labels), whole.label_ids, validation_fraction, seed)
        return LabelledData(whole.take(train_index), whole.take(validation_index), labels, text_columns,
                            label_column, [report], True)
    v_texts, v_codes, v_values, v_rows, v_report = _lazy_file(validation, text_columns, label_column, **reading)
    unknown = [i for i, v in enumerate(v_values) if v is not None and v not in labels]
    if unknown:
        first = int(v_rows[np.flatnonzero(np.isin(v_codes, unknown))[0]]) + 1
        raise DataError(f"{validation}: data row {first}: label {v_values[unknown[0]]!r} never appears in the "
                        f"training file {train}; known labels: {some_labels(labels)}")
    v_lookup = np.array([labels.index(v) if v is not None else -1 for v in v_values], dtype=np.int64)
    return LabelledData(whole, Split(v_texts, v_lookup[v_codes]), labels, text_columns, label_column,
                        [report, v_report], False)


def load_labelled(train, validation=None, *, text_columns, label_column, validation_fraction=0.1,
                  seed=42, clean=True, lazy=False, delimiter: str | None = None,
                  encoding: str | None = None) -> LabelledData:
    """Read the training (and validation) file and give id-encoded splits plus a report.

    `lazy=True` maps the files (through a cached Arrow copy) instead of reading them into memory;
    it always cleans HTML and does not look for duplicate rows. `delimiter` and `encoding` apply to
    both files (default: from the suffix, and UTF-8).
    """
    reading = {"delimiter": delimiter, "encoding": encoding}
    if isinstance(text_columns, str):
        text_columns = [text_columns]
    text_columns = list(text_columns)
    if not text_columns:
        raise DataError("no text column given; name one or more with --text-column")
    if lazy:
        return _load_lazy(train, validation, text_columns, label_column, validation_fraction, seed, reading)
    train_texts, train_labels, _, train_report = read_labelled_file(train, text_columns, label_column, clean,
                                                                    **reading)
    if not train_texts:
        raise DataError(f"{train}: no usable rows remain after dropping empty ones")
    labels = sorted(set(train_labels), key=lambda v: (isinstance(v, str), v))
    if len(labels) < 2:
        raise DataError(f"{train}: column '{label_column}' holds a single label ({labels[0]!r}); "
                        "classification needs at least two")
    label_to_id = {label: i for i, label in enumerate(labels)}
    train_ids = [label_to_id[label] for label in train_labels]
    check_classes(train, label_column, labels, np.bincount(train_ids, minlength=len(labels)), validation is None)
    files = [train_report]
    if validation is None:
        train_index, validation_index = stratified_split(len(labels), train_ids, validation_fraction, seed)
        train_split = Split([train_texts[i] for i in train_index], [train_ids[i] for i in train_index])
        validation_split = Split([train_texts[i] for i in validation_index],
                                 [train_ids[i] for i in validation_index])
        return LabelledData(train_split, validation_split, labels, text_columns, label_column, files, True)
    validation_texts, validation_labels, validation_rows, validation_report = read_labelled_file(
        validation, text_columns, label_column, clean, **reading)
    files.append(validation_report)
    kinds = {type(v) for v in train_labels} | {type(v) for v in validation_labels}
    if len(kinds) > 1:
        raise DataError(f"{validation}: labels in '{label_column}' are {'/'.join(sorted(k.__name__ for k in kinds))} "
                        f"mixed across files; make both files use the same label values")
    for row, label in zip(validation_rows, validation_labels):
        if label not in label_to_id:
            raise DataError(f"{validation}: data row {row}: label {label!r} never appears in the training "
                            f"file {train}; known labels: {some_labels(labels)}")
    return LabelledData(Split(train_texts, train_ids),
                        Split(validation_texts, [label_to_id[v] for v in validation_labels]),
                        labels, text_columns, label_column, files, False)
