"""Read CSV, TSV, JSONL and Parquet files (optionally gzipped): whole, or streamed in Arrow batches.

Bytes that are not UTF-8 are decoded with replacement and counted, never fatal: real review
dumps carry the odd Latin-1 byte. A file that is not text at all (binary, or UTF-16 without
`encoding`) is refused by `check_text`, and a CSV whose header looks split by another
character names `delimiter`. Every failure names the file.

    table = read_table("reviews.csv")                        # -> Table(frame, path, replaced_bytes)
    table = read_table("reviews.csv", delimiter=";", encoding="utf-16")
    for batch in record_batches("big.csv", ["review_body"]):  # pyarrow RecordBatches of strings
        ...
"""
import codecs
import csv
import gzip
import io
import json
import sys
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nlpforge.data.formats import detect_format
from nlpforge.errors import ConfigError, DataError
from nlpforge.settings import Settings, setting

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # reviews run to tens of kB, above csv's 128 kB default

if TYPE_CHECKING:  # pandas loads on the first read, so that the CLI's help and checks start without it
    import pandas as pd


@dataclass
class ReadingSettings(Settings):
    """How text data files are read: their column separator and their encoding."""

    delimiter: str | None = setting(None, "column separator of CSV/TSV files (default: ',' for .csv, tab for .tsv), "
                                          "e.g. ';'")
    encoding: str | None = setting(None, "encoding of text data files (default: UTF-8), e.g. utf-16 or latin-1")

    def check(self):
        if self.delimiter in ("\\t", "tab"):
            self.delimiter = "\t"
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise ConfigError(f"delimiter must be one character, not {self.delimiter!r}; e.g. --delimiter ';'")
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise ConfigError(f"encoding {self.encoding!r} is not a known text encoding; "
                                  "e.g. --encoding utf-16") from None

    @property
    def options(self) -> dict:
        """The keyword arguments of `read_table`, `record_batches` and `load_labelled`."""
        return {"delimiter": self.delimiter, "encoding": self.encoding}


@dataclass
class Table:
    frame: "pd.DataFrame"
    path: Path
    replaced_bytes: int = 0  # bytes that were not valid UTF-8 and became U+FFFD


# Bytes at the start of a file that say it is not UTF-8 text, and what it is.
_BOMS = {codecs.BOM_UTF32_LE: "UTF-32", codecs.BOM_UTF32_BE: "UTF-32", codecs.BOM_UTF16_LE: "UTF-16",
         codecs.BOM_UTF16_BE: "UTF-16"}
_MAGIC = {b"\x1f\x8b": "gzip-compressed (name it .gz)", b"PK\x03\x04": "a zip archive",
          b"PAR1": "Parquet (name it .parquet)", b"%PDF": "a PDF document", b"\x89PNG": "a PNG image",
          b"\xff\xd8\xff": "a JPEG image"}
_CONTROL = bytes(set(range(32)) - {9, 10, 12, 13})
_DELIMITERS = (";", "\t", "|", ",")
SNIFF_BYTES = 8192  # how much of a file `check_text` looks at, as git does to tell binary from text


def check_text(head: bytes, where, encoding: str | None = None) -> None:
    """A DataError when the first bytes of a file that should be text say it is binary, or UTF-16/32 that
    `encoding` does not name; `where` names the file in the message."""
    if encoding is None:
        for bom, name in _BOMS.items():
            if head.startswith(bom):
                raise DataError(f"{where}: the file is {name} encoded; give --encoding {name.lower()}, "
                                "or save it as UTF-8")
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            raise DataError(f"{where}: the file is {kind}, not text; name a text file (.csv, .tsv, .jsonl, .txt)")
    if encoding is not None and codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
        return
    zeros = head.count(0)
    if zeros and encoding is None and zeros >= len(head) // 3 and (head[1::2].count(0) >= 0.9 * zeros
                                                                   or head[0::2].count(0) >= 0.9 * zeros):
        raise DataError(f"{where}: the file looks UTF-16 encoded (every other byte is 0); give --encoding utf-16, "
                        "or save it as UTF-8")
    if zeros or sum(head.count(c) for c in _CONTROL) > 0.05 * len(head) or (
            encoding is None and decode_counted(head[:len(head) - 4])[1] > 0.3 * len(head)):
        raise DataError(f"{where}: the file is binary, not text; name a text file (.csv, .tsv, .jsonl, .txt)")


def delimiter_hint(header: str, delimiter: str) -> str:
    """'; the header looks ';'-separated: give --delimiter ';'' when another separator splits the header line
    better than `delimiter`, else ''."""
    counts = {d: header.count(d) for d in _DELIMITERS}
    likely = max(counts, key=counts.get)
    if likely != delimiter and counts[likely] > counts.get(delimiter, 0):
        shown = "\\t" if likely == "\t" else likely
        return f"; the header looks '{shown}'-separated: give --delimiter '{shown}'"
    return ""


_replacing = threading.local()  # each thread's count: the error handler is registered once, for every thread


def _count_replacement(error: UnicodeDecodeError) -> tuple[str, int]:
    _replacing.count += error.end - error.start
    return "\ufffd", error.end


codecs.register_error("nlpforge-count-replace", _count_replacement)


def decode_counted(raw: bytes, encoding: str | None = None) -> tuple[str, int]:
    """Decode (UTF-8 unless `encoding` says otherwise) with replacement; return the text and how many bytes
    were replaced."""
    _replacing.count = 0
    text = raw.decode(encoding or "utf-8-sig", errors="nlpforge-count-replace")
    return text, _replacing.count


def read_table(path, columns=None, *, delimiter: str | None = None, encoding: str | None = None) -> Table:
    """Read one data file. `columns` (optional) are checked to exist, with the fix named. `delimiter` and
    `encoding` (default: from the suffix, and UTF-8) apply to CSV, TSV and JSONL."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; check the path (relative paths start at {Path.cwd()})")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; name a data file (.csv, .tsv, .jsonl, .parquet)")
    fmt = detect_format(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; it needs a header row and at least one data row")
    import pandas as pd

    replaced, text = 0, ""
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path)
        else:
            raw = path.read_bytes()
            if path.suffix.lower() == ".gz":
                raw = gzip.decompress(raw)
            check_text(raw[:SNIFF_BYTES], path, encoding)
            text, replaced = decode_counted(raw, encoding)
            if not text.strip():
                raise DataError(f"{path}: the file is empty; it needs a header row and at least one data row")
            frame = _parse_text(text, fmt, path, delimiter)
    except DataError:
        raise
    except (pd.errors.ParserError, ValueError, OSError, EOFError, LookupError, zlib.error, csv.Error) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        hint = delimiter_hint(text.partition("\n")[0], delimiter or table_delimiter(fmt)) \
            if fmt in ("csv", "tsv") and isinstance(error, pd.errors.ParserError) else ""
        raise DataError(f"{path}: cannot be read as {fmt}: {first}{hint}") from None
    if len(frame) == 0:
        raise DataError(f"{path}: the file has a header but no data rows")
    frame.columns = [str(c) for c in frame.columns]
    hint = delimiter_hint(",".join(frame.columns), delimiter or table_delimiter(fmt)) \
        if fmt in ("csv", "tsv") and len(frame.columns) == 1 else ""
    check_columns(path, columns or [], frame.columns, hint)
    if fmt in ("jsonl", "parquet"):  # the formats that can hold lists and objects
        check_flat(path, frame, columns or [])
    return Table(frame=frame, path=path, replaced_bytes=replaced)


def table_delimiter(fmt: str) -> str:
    """The separator a CSV or TSV file uses unless told otherwise."""
    return "\t" if fmt == "tsv" else ","


def _parse_text(text: str, fmt: str, path: Path, delimiter: str | None = None) -> "pd.DataFrame":
    import pandas as pd

    if fmt in ("csv", "tsv"):
        # keep_default_na=False: an empty review is "", and the string "NA" stays text.
        separator = delimiter or table_delimiter(fmt)
        frame = pd.read_csv(io.StringIO(text), sep=separator, dtype=str, keep_default_na=False, na_values=[],
                            engine="c" if separator == "," else "python")
        if not isinstance(frame.index, pd.RangeIndex):
            # pandas makes the extra fields of a first data row longer than the header an index: R's row names
            # (every data row is longer), or a text with the separator unquoted (other rows are not)
            rows = csv.reader(io.StringIO(text, newline=""), delimiter=separator)  # newline="": a lone \r ends rows
            short = sum(len(row) == len(frame.columns) for row in rows)
            if short > 1:
                raise DataError(f"{path}: cannot be read as {fmt}: data row 1 has more fields than the header's "
                                f"{len(frame.columns)}; quote a text that holds the separator {separator!r}, e.g. "
                                "\"great, really\"")
        return frame
    records = [json_record(line, number, path) for number, line in enumerate(text_lines(text), start=1)
               if line.strip()]
    return pd.DataFrame.from_records(records)


def check_flat(path, frame: "pd.DataFrame", columns, first_row: int = 1) -> None:
    """A DataError naming the first row whose value in one of `columns` is a list or an object (JSONL and
    Parquet can hold them): a text or a label is one string or number, and its repr ("['pos']") is neither."""
    for column in columns:
        values = frame[column]
        if values.dtype != object:
            continue
        nested = values.map(lambda v: isinstance(v, (list, tuple, dict, np.ndarray))).to_numpy(dtype=bool)
        if nested.any():
            row = int(nested.argmax())
            value = values.iat[row]
            shown = json.dumps(value.tolist() if isinstance(value, np.ndarray) else value, default=str,
                               ensure_ascii=False)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise DataError(f"{path}: row {first_row + row}: column '{column}' holds "
                            f"{'an object' if isinstance(value, dict) else 'a list'} ({shown}), not one value; "
                            "give each row a single string or number there")


def check_columns(path, wanted, present, hint: str = "") -> None:
    """A DataError naming the first wanted column the file lacks, and the columns it has (then `hint`)."""
    present = [str(c) for c in present]
    for column in wanted:
        if column not in present:
            raise DataError(f"{path}: no column '{column}'; the columns are: {', '.join(present)}{hint}")


def text_lines(text: str) -> list[str]:
    """The lines of a JSON Lines or CoNLL text, split at "\\n" ("\\r\\n", or a lone "\\r" in a file without
    "\\n") only: str.splitlines also splits at U+2028, U+2029, U+0085 and other characters that a JSON
    string holds raw (json.dumps(..., ensure_ascii=False) writes them so)."""
    lines = text.split("\n") if "\n" in text or "\r" not in text else text.split("\r")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def json_record(line: str, number: int, where) -> dict:
    """One JSONL row as a dict; anything else is a DataError naming the file and row."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        hint = (" (a .json file is read as JSON Lines: a list of records becomes one with `jq -c '.[]' FILE.json > "
                "FILE.jsonl`)") if str(where).lower().endswith(".json") else ""
        raise DataError(f"{where}: row {number} is not valid JSON ({error.msg}); "
                        f"JSONL needs one JSON object per line{hint}") from None
    except RecursionError:
        raise DataError(f"{where}: row {number} is nested too deeply to be a record; "
                        "JSONL needs one flat JSON object per line") from None
    if not isinstance(record, dict):
        raise DataError(f"{where}: row {number} is a JSON {type(record).__name__}, not an object")
    return record


def record_batches(path, columns: list[str], *, delimiter: str | None = None, encoding: str | None = None):
    """Arrow record batches of `columns`, streamed from the file (never the whole file in memory)."""
    import pyarrow as pa

    path = Path(path)
    fmt = detect_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        handle = pq.ParquetFile(path)
        check_columns(path, columns, handle.schema_arrow.names)
        for column in columns:
            kind = handle.schema_arrow.field(column).type
            if pa.types.is_nested(kind):
                raise DataError(f"{path}: column '{column}' holds {kind} values, not one value a row; give each row "
                                "a single string or number there")
        yield from handle.iter_batches(batch_size=65536, columns=columns)
        return
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as handle:
        check_text(handle.read(SNIFF_BYTES), path, encoding)
    if fmt == "jsonl":
        import pandas as pd

        first_row = 1
        for chunk in pd.read_json(path, lines=True, chunksize=65536, dtype=False, encoding=encoding or "utf-8"):
            check_columns(path, columns, chunk.columns)
            chunk = chunk[columns]
            check_flat(path, chunk, columns, first_row)
            first_row += len(chunk)
            # A JSON null stays missing (astype(str) would make it the text "None").
            yield pa.RecordBatch.from_pandas(chunk.astype(str).where(chunk.notna(), None), preserve_index=False)
        return
    import pyarrow.csv as pcsv

    separator = delimiter or table_delimiter(fmt)
    parse = pcsv.ParseOptions(delimiter=separator, newlines_in_values=True)
    read = pcsv.ReadOptions(block_size=1 << 22, encoding=encoding or "utf8")
    probe = pcsv.open_csv(path, read_options=read, parse_options=parse)
    check_columns(path, columns, probe.schema.names,
                  delimiter_hint(",".join(probe.schema.names), separator) if len(probe.schema.names) == 1 else "")
    convert = pcsv.ConvertOptions(include_columns=columns, column_types={c: pa.string() for c in columns},
                                  strings_can_be_null=False, quoted_strings_can_be_null=False)
    yield from pcsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert)
