"""Read CSV, TSV, JSONL and Parquet files (optionally gzipped) into pandas DataFrames.

Bytes that are not UTF-8 are decoded with replacement and counted, never fatal: real review
dumps carry the odd Latin-1 byte. Every failure names the file.

    table = read_table("reviews.csv")          # -> Table(frame, path, replaced_bytes)
"""
import codecs
import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nlpforge.errors import DataError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "jsonl",
           ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


@dataclass
class Table:
    frame: pd.DataFrame
    path: Path
    replaced_bytes: int = 0  # bytes that were not valid UTF-8 and became U+FFFD


def detect_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise DataError(f"{path}: unknown file type '{''.join(path.suffixes) or '(none)'}'; "
                        f"use one of {', '.join(sorted(FORMATS))} (optionally .gz)")
    return fmt


def _decode(raw: bytes) -> tuple[str, int]:
    """UTF-8 decode with replacement; return the text and how many bytes were replaced."""
    replaced = 0

    def count(error):
        nonlocal replaced
        replaced += error.end - error.start
        return "\ufffd", error.end

    name = "nlpforge-count-replace"
    codecs.register_error(name, count)
    text = raw.decode("utf-8-sig", errors=name)
    return text, replaced


def read_table(path, columns=None) -> Table:
    """Read one data file. `columns` (optional) are checked to exist, with the fix named."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; check the path (relative paths start at {Path.cwd()})")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; name a data file (.csv, .tsv, .jsonl, .parquet)")
    fmt = detect_format(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; it needs a header row and at least one data row")
    replaced = 0
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path)
        else:
            raw = path.read_bytes()
            if path.suffix.lower() == ".gz":
                raw = gzip.decompress(raw)
            text, replaced = _decode(raw)
            if not text.strip():
                raise DataError(f"{path}: the file is empty; it needs a header row and at least one data row")
            frame = _parse_text(text, fmt, path)
    except DataError:
        raise
    except (pd.errors.ParserError, ValueError, OSError, gzip.BadGzipFile) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"{path}: cannot be read as {fmt}: {first}") from None
    if len(frame) == 0:
        raise DataError(f"{path}: the file has a header but no data rows")
    frame.columns = [str(c) for c in frame.columns]
    for column in columns or []:
        if column not in frame.columns:
            raise DataError(f"{path}: no column '{column}'; the columns are: {', '.join(frame.columns)}")
    return Table(frame=frame, path=path, replaced_bytes=replaced)


def _parse_text(text: str, fmt: str, path: Path) -> pd.DataFrame:
    if fmt in ("csv", "tsv"):
        # keep_default_na=False: an empty review is "", and the string "NA" stays text.
        return pd.read_csv(io.StringIO(text), sep="," if fmt == "csv" else "\t", dtype=str,
                           keep_default_na=False, na_values=[], engine="python" if fmt == "tsv" else "c")
    records = [json_record(line, number, path) for number, line in enumerate(text.splitlines(), start=1)
               if line.strip()]
    return pd.DataFrame.from_records(records)


def json_record(line: str, number: int, where) -> dict:
    """One JSONL row as a dict; anything else is a DataError naming the file and row."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{where}: row {number} is not valid JSON ({error.msg}); "
                        "JSONL needs one JSON object per line") from None
    if not isinstance(record, dict):
        raise DataError(f"{where}: row {number} is a JSON {type(record).__name__}, not an object")
    return record
