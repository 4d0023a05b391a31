"""Lazy data for large files: a memory-mapped Arrow copy, read row by row as batches need it.

The first use of a CSV, TSV, JSONL or Parquet file streams it, one record batch at a time, into an
Arrow IPC file in a cache folder (keyed by path, size and modification time); every later use
maps that file into memory. Nothing is tokenized up front: batches are tokenized on the fly,
in DataLoader workers when there are any. Memory stays flat whatever the file's size, because
the rows live in the page cache, not on the Python heap.

    texts, labels, usable, report = lazy_columns("big.csv", ["review_body"], "star_rating")
    ArrowTexts(texts, np.flatnonzero(usable))[17]   # cleaned text of the 18th usable row, from the mapped file
"""
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nlpforge.data.clean import clean_html
from nlpforge.data.formats import join_columns
from nlpforge.data.readers import record_batches
from nlpforge.errors import DataError
from nlpforge.settings import cache_root


def arrow_copy(path, columns: list[str], *, delimiter: str | None = None, encoding: str | None = None) -> pa.Table:
    """A memory-mapped Arrow table of `columns`, converting the file once if needed (`delimiter` and
    `encoding` as `read_table` takes them)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; check the path")
    stat = path.stat()
    if stat.st_size == 0:
        raise DataError(f"{path}: the file is empty; it needs a header row and at least one data row")
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{','.join(columns)}|{delimiter}|"
                         f"{encoding}".encode()).hexdigest()
    cache = cache_root() / "arrow"
    target = cache / f"{key[:32]}.arrow"
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        temporary = target.with_suffix(f".{os.getpid()}.tmp")
        writer = None
        try:
            for batch in record_batches(path, columns, delimiter=delimiter, encoding=encoding):
                batch = pa.RecordBatch.from_arrays([pc.cast(batch.column(c), pa.string()) for c in columns],
                                                   names=columns)
                writer = writer or pa.ipc.new_file(str(temporary), batch.schema)
                writer.write_batch(batch)
        except (pa.ArrowInvalid, ValueError, OSError, EOFError) as error:
            raise DataError(f"{path}: cannot be read: {str(error).splitlines()[0]}") from None
        finally:
            if writer:
                writer.close()
        if writer is None:
            raise DataError(f"{path}: the file has a header but no data rows")
        os.replace(temporary, target)
        pa.default_memory_pool().release_unused()  # the reader's buffers; the rows now live in the file
    return pa.ipc.open_file(pa.memory_map(str(target))).read_all()


class ArrowTexts:
    """A read-only sequence of cleaned texts (or text pairs) over chosen rows of a mapped table."""

    def __init__(self, columns: list[pa.ChunkedArray], rows: np.ndarray):
        self.columns, self.rows = columns, rows

    def __len__(self):
        return len(self.rows)

    def _text(self, row: int):
        return join_columns(clean_html(column[int(row)].as_py() or "") for column in self.columns)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._text(r) for r in self.rows[index]]
        return self._text(self.rows[index])

    def take(self, indices) -> "ArrowTexts":
        return ArrowTexts(self.columns, self.rows[np.asarray(indices, dtype=np.int64)])

    def char_lengths(self) -> np.ndarray:
        total = np.zeros(len(self.rows), dtype=np.int64)
        for column in self.columns:
            # Per chunk: combine_chunks() would copy every string out of the mapped file.
            total += pc.utf8_length(column).to_numpy()[self.rows]
        return total


@dataclass
class LazyReport:
    path: str
    rows: int
    empty_dropped: int
    missing_label_dropped: int


def lazy_columns(path, text_columns: list[str], label_column: str, **reading):
    """(text columns, label strings, usable-row mask, report) of a file, via its Arrow copy (`reading`: the
    `delimiter` and `encoding` of `arrow_copy`)."""
    table = arrow_copy(path, [*text_columns, label_column], **reading)
    texts = [table.column(c) for c in text_columns]
    labels = pc.utf8_trim_whitespace(table.column(label_column))
    nonempty = None
    for name, column in zip(text_columns, texts):
        # A regex test reads the mapped strings in place; trimming would copy the whole column.
        has_text = pc.fill_null(pc.match_substring_regex(column, r"\S"), False)
        if not pc.any(has_text).as_py():
            raise DataError(f"{path}: text column '{name}' is empty in every row; name the column that holds "
                            "the text with --text-column")
        nonempty = has_text if nonempty is None else pc.or_(nonempty, has_text)
    labelled = pc.fill_null(pc.greater(pc.utf8_length(labels), 0), False)
    usable = pc.and_(nonempty, labelled).to_numpy(zero_copy_only=False)
    report = LazyReport(str(path), table.num_rows,
                        int(table.num_rows - pc.sum(nonempty.cast(pa.int64())).as_py()),
                        int(np.count_nonzero(nonempty.to_numpy(zero_copy_only=False) & ~labelled.to_numpy(zero_copy_only=False))))
    return texts, labels, usable, report
