"""Batch prediction from a file to a file (CSV or JSONL out), streaming in chunks; any task.

    predict_file("models/stars", "reviews.csv", "predictions.jsonl")

The input's text columns (default: the model's own) become one input per row by the rule every
reader uses (`nlpforge.data.formats.join_columns`: one column a text, two a text pair). JSONL
output holds {"row": N, ...the answer}; CSV output has a row column and the task's own columns.
"""
import csv
import json
from pathlib import Path

from nlpforge.data.clean import clean_html
from nlpforge.data.formats import join_columns
from nlpforge.data.readers import read_table
from nlpforge.errors import DataError, InputError
from nlpforge.settings import check_count, replacing
from nlpforge.tasks import load


def predict_file(model_path, input_path, output_path, text_columns=None, batch_size: int = 64,
                 chunk_rows: int = 2048, reading: dict | None = None) -> int:
    """Write one prediction per input row; returns the number of rows written. `reading` holds
    `read_table`'s delimiter and encoding. The output appears whole or not at all: it is written
    beside its final name and renamed at the end, so a failure leaves an earlier file untouched."""
    check_count(batch_size, "batch_size", DataError)
    check_count(chunk_rows, "chunk_rows", DataError)
    if reading is not None and not isinstance(reading, dict):
        raise DataError(f"reading is a dict such as {{'delimiter': ';', 'encoding': 'latin-1'}}, not {reading!r}")
    unknown = sorted(set(reading or {}) - {"delimiter", "encoding"})
    if unknown:
        raise DataError(f"reading takes delimiter and encoding, not {', '.join(map(repr, unknown))}")
    if isinstance(text_columns, str):  # one column, not its letters
        text_columns = [text_columns]
    output_path = Path(output_path)
    suffix = output_path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise DataError(f"{output_path}: output must end in .csv or .jsonl")
    if Path(input_path).exists() and output_path.exists() and output_path.samefile(input_path):
        raise DataError(f"{output_path}: the output is the input file, which would be overwritten; "
                        "write the predictions to another file")
    loaded = load(model_path)
    text_columns = list(text_columns or loaded.text_columns)
    frame = read_table(input_path, columns=text_columns, **(reading or {})).frame
    inputs = [join_columns(clean_html("" if frame[c].iat[row] is None else str(frame[c].iat[row]))
                           for c in text_columns) for row in range(len(frame))]
    with replacing(output_path) as partial:  # a failure leaves an earlier output whole
        write_answers(loaded, inputs, partial, suffix, batch_size, chunk_rows, where=input_path)
    return len(inputs)


def write_answers(loaded, inputs, path, suffix, batch_size, chunk_rows, where=None):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle) if suffix == ".csv" else None
        for start in range(0, len(inputs), chunk_rows):
            answers = _predicted(loaded, inputs, start, min(start + chunk_rows, len(inputs)), batch_size, where)
            for offset, answer in enumerate(answers):
                row = start + offset
                if writer is None:
                    handle.write(json.dumps({"row": row, **answer} if isinstance(answer, dict)
                                            else {"row": row, "prediction": answer}, ensure_ascii=False) + "\n")
                    continue
                columns = loaded.task.csv_row(loaded, answer)
                if row == 0:
                    writer.writerow(["row", *columns])
                writer.writerow([row, *columns.values()])


def _predicted(loaded, inputs, start: int, end: int, batch_size: int, where) -> list:
    """The answers to `inputs[start:end]`; an InputError (a fill-mask row without [MASK], say) names the first
    input row that fails alone, with that row's own error: rows are parsed one by one first (no model), then,
    for an error only the model finds, halves of the chunk are predicted again. Only a failing chunk pays."""
    try:
        return loaded.predict(inputs[start:end], batch_size=batch_size)
    except InputError:
        found = _first_failing_row(loaded, inputs, start, end, batch_size)
        if found is None:  # no row fails alone: the error is not one row's
            raise
        row, own = found
        raise InputError(f"row {row + 1} of {where}: {own.message}", own.status) from None


def _first_failing_row(loaded, inputs, start: int, end: int, batch_size: int) -> tuple[int, InputError] | None:
    for row in range(start, end):
        try:
            loaded.parse([inputs[row]])
        except InputError as error:
            return row, error
    return _first_failing_prediction(loaded, inputs, start, end, batch_size)


def _first_failing_prediction(loaded, inputs, start: int, end: int, batch_size: int):
    if end - start == 1:
        try:
            loaded.predict(inputs[start:end], batch_size=batch_size)
        except InputError as error:
            return start, error
        return None
    middle = (start + end) // 2
    for low, high in ((start, middle), (middle, end)):
        try:
            loaded.predict(inputs[low:high], batch_size=batch_size)
        except InputError:
            return _first_failing_prediction(loaded, inputs, low, high, batch_size)
    return None
