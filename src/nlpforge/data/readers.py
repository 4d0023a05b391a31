"""Read CSV, TSV, JSONL and Parquet files (optionally gzipped): whole, or streamed in Arrow batches.

Bytes that are not UTF-8 are decoded with replacement and counted, never fatal: real review
dumps carry the odd Latin-1 byte. Every failure names the file.

    table = read_table("reviews.csv")                        # -> Table(frame, path, replaced_bytes)
    for batch in record_batches("big.csv", ["review_body"]):  # pyarrow RecordBatches of strings
        ...
"""
import codecs
import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nlpforge.data.formats import detect_format
from nlpforge.errors import DataError


@dataclass
class Table:
    frame: pd.DataFrame
    path: Path
    replaced_bytes: int = 0  # bytes that were not valid UTF-8 and became U+FFFD


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
    check_columns(path, columns or [], frame.columns)
    return Table(frame=frame, path=path, replaced_bytes=replaced)


def _parse_text(text: str, fmt: str, path: Path) -> pd.DataFrame:
    if fmt in ("csv", "tsv"):
        # keep_default_na=False: an empty review is "", and the string "NA" stays text.
        return pd.read_csv(io.StringIO(text), sep="," if fmt == "csv" else "\t", dtype=str,
                           keep_default_na=False, na_values=[], engine="python" if fmt == "tsv" else "c")
    records = [json_record(line, number, path) for number, line in enumerate(text.splitlines(), start=1)
               if line.strip()]
    return pd.DataFrame.from_records(records)


def check_columns(path, wanted, present) -> None:
    """A DataError naming the first wanted column the file lacks, and the columns it has."""
    present = [str(c) for c in present]
    for column in wanted:
        if column not in present:
            raise DataError(f"{path}: no column '{column}'; the columns are: {', '.join(present)}")


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


def record_batches(path, columns: list[str]):
    """Arrow record batches of `columns`, streamed from the file (never the whole file in memory)."""
    import pyarrow as pa

    path = Path(path)
    fmt = detect_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        handle = pq.ParquetFile(path)
        check_columns(path, columns, handle.schema_arrow.names)
        yield from handle.iter_batches(batch_size=65536, columns=columns)
        return
    if fmt == "jsonl":
        import pandas as pd

        for chunk in pd.read_json(path, lines=True, chunksize=65536, dtype=False):
            check_columns(path, columns, chunk.columns)
            yield pa.RecordBatch.from_pandas(chunk[columns].astype(str), preserve_index=False)
        return
    import pyarrow.csv as pcsv

    parse = pcsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True)
    read = pcsv.ReadOptions(block_size=1 << 22)
    probe = pcsv.open_csv(path, read_options=read, parse_options=parse)
    check_columns(path, columns, probe.schema.names)
    convert = pcsv.ConvertOptions(include_columns=columns, column_types={c: pa.string() for c in columns},
                                  strings_can_be_null=False, quoted_strings_can_be_null=False)
    yield from pcsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert)
