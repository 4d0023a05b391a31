"""The file formats nlpforge reads, known in one place: by suffix, with or without `.gz`.

    table_format(Path("reviews.csv.gz"))   # "csv"
    table_format(Path("notes.txt"))        # None: not a table (a corpus reads it as lines of text)
    detect_format(Path("x.xlsx"))          # DataError naming the suffixes that work

A row's text columns become one model input by one rule, `join_columns`: one column gives a
string, two or more give a (text, text_pair) tuple whose second part joins the rest.
"""
import functools
import re
from pathlib import Path

from nlpforge.errors import DataError

TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "jsonl",
                 ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
TEXT_SUFFIXES = (".txt", ".text")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
# What a data channel of a training job may hold (a folder's other files are not data).
DATA_SUFFIXES = (*TABLE_FORMATS, *TEXT_SUFFIXES)


# The table formats by media type (a request's or a batch transform's content type).
MEDIA_TYPES = {"text/csv": "csv", "text/tab-separated-values": "tsv", "application/jsonlines": "jsonl",
               "application/x-jsonlines": "jsonl", "application/json-lines": "jsonl", "application/x-ndjson": "jsonl",
               "application/ndjson": "jsonl", "application/x-parquet": "parquet",
               "application/vnd.apache.parquet": "parquet"}


def media_format(content_type) -> str | None:
    """csv, tsv, jsonl or parquet for a content type ("text/csv; charset=utf-8" too), else None."""
    return MEDIA_TYPES.get(str(content_type).split(";")[0].strip().lower())


def table_format(path) -> str | None:
    """csv, tsv, jsonl or parquet from the file name (a trailing .gz is looked through), else None."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return TABLE_FORMATS.get(suffixes[-1]) if suffixes else None


def detect_format(path) -> str:
    """The table format of `path`, or a DataError that lists the formats nlpforge reads."""
    fmt = table_format(path)
    if fmt is None:
        path = Path(path)
        raise DataError(f"{path}: unknown file type '{''.join(path.suffixes) or '(none)'}'; "
                        f"use one of {', '.join(sorted(TABLE_FORMATS))} (optionally .gz)")
    return fmt


def is_archive(path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def is_data_file(path) -> bool:
    return Path(path).name.lower().removesuffix(".gz").endswith(DATA_SUFFIXES)


def join_columns(parts):
    """One model input from a row's text columns: a string, or (text, text_pair) for two or more."""
    parts = tuple(parts)
    return parts[0] if len(parts) == 1 else (parts[0], " \n".join(parts[1:]))


def misspelled_key(record: dict, groups: tuple) -> tuple[str, str] | None:
    """(key, the name it resembles) for the first key of `record` that looks like a misspelling of a name the
    reader needs ("textpair" for "text_pair", "answer" for "answers"), else None. `groups` holds tuples of
    names that stand for one another (a text is "text" or "data"); a group the record already holds is not
    misspelled. Other keys pass: rows carry columns of their own (an id, a date, a label, question_id)."""
    present = [group for group in groups if any(name in record for name in group)]
    wanted = tuple(name for group in groups if group not in present for name in group)
    known = tuple(name for group in groups for name in group)
    for key in record:
        if isinstance(key, str) and wanted and key not in known:
            found = _resembled(key, wanted, known)
            if found:
                return key, found
    return None


@functools.lru_cache(maxsize=4096)
def _resembled(key: str, wanted: tuple, known: tuple) -> str | None:
    """The name of `wanted` that `key` looks like a misspelling of: close in spelling, a name of four letters
    or more, and the key not built on a known name ("text_id", "question_id" are columns of their own)."""
    import difflib

    parts = set(re.split(r"[_\-. ]", key.lower()))
    if parts & set(known):
        return None
    close = difflib.get_close_matches(key.lower(), [n for n in wanted if len(n) >= 4], n=1, cutoff=0.8)
    return close[0] if close else None
