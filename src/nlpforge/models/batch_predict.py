"""Batch prediction from a file to a file (CSV or JSONL out), streaming in chunks.

    predict_file("models/stars", "reviews.csv", "predictions.jsonl")
"""
import csv
import json
from pathlib import Path

from nlpforge.data.readers import read_table
from nlpforge.errors import DataError
from nlpforge.models.artifact import load
from nlpforge.text.normalize import clean_html


def predict_file(model_path, input_path, output_path, text_columns=None, batch_size: int = 64,
                 chunk_rows: int = 2048) -> int:
    """Write one prediction per input row; returns the number of rows written."""
    output_path = Path(output_path)
    suffix = output_path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise DataError(f"{output_path}: output must end in .csv or .jsonl")
    classifier = load(model_path)
    text_columns = list(text_columns or classifier.text_columns)
    frame = read_table(input_path, columns=text_columns).frame
    texts = []
    for row in range(len(frame)):
        parts = [clean_html("" if frame[c].iat[row] is None else str(frame[c].iat[row])) for c in text_columns]
        texts.append(parts[0] if len(parts) == 1 else (parts[0], " \n".join(parts[1:])))
    output_path.parent.mkdir(parents=True, exist_ok=True)
    labels = [str(label) for label in classifier.labels]
    with open(output_path, "w", encoding="utf-8", newline="") as handle:
        writer = None
        if suffix == ".csv":
            writer = csv.writer(handle)
            writer.writerow(["row", "label", "score", *[f"p_{label}" for label in labels]])
        for start in range(0, len(texts), chunk_rows):
            predictions = classifier.predict(texts[start:start + chunk_rows], batch_size=batch_size)
            for offset, prediction in enumerate(predictions):
                row = start + offset
                if writer:
                    writer.writerow([row, prediction["label"], f"{prediction['score']:.6f}",
                                     *[f"{prediction['probabilities'][label]:.6f}" for label in labels]])
                else:
                    handle.write(json.dumps({"row": row, **prediction}, ensure_ascii=False) + "\n")
    return len(texts)
