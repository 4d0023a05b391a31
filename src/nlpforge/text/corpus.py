"""Stream a raw corpus: files, folders, `.gz`, tar archives, or one column of CSV/TSV/JSONL/Parquet.

A corpus is never held in memory: `Corpus` is re-iterable (word2vec and Phrases read it several
times) and every pass reads the files again, one document at a time.

    corpus = Corpus(CorpusSettings.of(corpus=["imdb_50k.csv.gz", "brown_corpus.tar.gz"], column="review"))
    for tokens in corpus:          # one sentence at a time: ["one", "of", "the", ...]
        ...
    corpus_stats(corpus)           # documents, sentences, tokens, types
    for words, ids, lengths in corpus.encoded():   # the same sentences as id arrays, tokenised on every core
        ...

What is a document: a line of a text file (Brown gives one sentence a line), a row's cell in a
table. Tagged text in the Brown style (`The/at jury/nn`) is recognised and its tags dropped.
Pre-training needs documents of several sentences: `iter_sentence_documents` groups a text
file's lines by blank lines or by file instead.
"""
import codecs
import csv
import gzip
import io
import itertools
import logging
import multiprocessing
import os
import re
import signal
import tarfile
from array import array
from collections import Counter, defaultdict, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from nlpforge.data.clean import clean_html
from nlpforge.data.formats import is_archive, table_format
from nlpforge.data.readers import (SNIFF_BYTES, ReadingSettings, check_text, delimiter_hint, json_record,
                                   table_delimiter)
from nlpforge.errors import DataError
from nlpforge.settings import Settings, cores, group, setting
from nlpforge.text.normalize import NormalizeSettings, normalize
from nlpforge.text.tokenize import TokenizeSettings, split_sentences, tokenize

# A Brown-style tagged token: word/tag with a lower-case tag such as nn, pp$, nn-tl, ``.
_TAGGED = re.compile(r"^\S+/[a-z$*+\-.,:;()'`&]+$")
# Documentation and index files that ship inside corpus archives (Brown has README, CONTENTS, cats.txt and
# a pickled category index).
_ARCHIVE_DOCS = re.compile(r"^(readme|contents|license|copying|changes|changelog|cats)(\.\w+)?$|\.(pickle|pkl)$",
                           re.IGNORECASE)
_TEXT_COLUMNS = ("text", "review", "review_body", "sentence", "content", "body")
# Each run of bytes the file's encoding cannot decode is read as one lone surrogate, U+DC00 plus the run's
# length (no decoder produces these), so `_replaced` can count the bytes, then write one U+FFFD for the run as
# errors="replace" does.
_UNDECODED = re.compile("[\udc00-\udcff]")
codecs.register_error("nlpforge-mark", lambda error: (chr(0xDC00 + min(error.end - error.start, 0xFF)), error.end))
_warned: set[tuple[str, int]] = set()  # (file, bytes) already reported: every pass over a corpus re-reads it

log = logging.getLogger(__name__)

@dataclass
class CorpusSource(Settings):
    """Which files make the corpus."""

    corpus: list[str] = setting([], "corpus file or folder (.txt, .gz, .tar.gz, .csv, .tsv, .jsonl, .parquet); "
                                    "repeat for several", required=True)
    column: str | None = setting(None, "text column of tabular files (default: text, review, ... if present)")
    max_documents: int | None = setting(None, "read only this many documents (a quick look at a big corpus)", min=1)
    reading: ReadingSettings = group(ReadingSettings)


@dataclass
class CorpusSettings(Settings):
    """Which files make the corpus, and how their text becomes sentences of tokens."""

    source: CorpusSource = group(CorpusSource)
    normalize: NormalizeSettings = group(NormalizeSettings)
    tokenize: TokenizeSettings = group(TokenizeSettings)

    @property
    def names(self) -> str:
        """The corpus paths, for messages."""
        return ", ".join(map(str, self.source.corpus))


@dataclass
class CorpusStats:
    documents: int = 0
    sentences: int = 0
    tokens: int = 0
    counts: Counter = field(default_factory=Counter)

    @property
    def types(self) -> int:
        return len(self.counts)

    def text(self, top: int = 15) -> str:
        common = ", ".join(f"{token} {count:,}" for token, count in self.counts.most_common(top))
        return (f"documents  {self.documents:,}\nsentences  {self.sentences:,}\ntokens     {self.tokens:,}\n"
                f"types      {self.types:,}\nmost common: {common}")


def corpus_files(paths) -> list[Path]:
    """The files named by `paths` (folders are walked, hidden files skipped); missing paths are errors."""
    files, named_by = [], {}  # real path -> (which path given names it, that path)
    for number, raw in enumerate(paths):
        if not str(raw).strip():  # Path("") is the current folder: an unset variable would read all under it
            raise DataError("a corpus path is empty; name a file or folder (. for the current folder)")
        path = Path(raw).expanduser()
        if not path.exists():
            raise DataError(f"{path}: no such file or folder; check the path (relative paths start at {Path.cwd()})")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not any(
                part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise DataError(f"{path}: the folder holds no files; put .txt/.csv/... corpus files in it")
        else:
            found = [path]
        for file in found:  # a file named twice, or named and inside a folder named, would count its text twice
            first, given = named_by.setdefault(os.path.realpath(file), (number, raw))
            if first != number:
                raise DataError(f"{file}: would be read twice, named by {given} and by {raw}; name each file or "
                                "folder once")
        files.extend(found)
    if not files:
        raise DataError("no corpus given; name at least one file or folder")
    return files


def _pick_column(header: list[str], column: str | None, where: str, delimiter: str = ",") -> str:
    hint = delimiter_hint(",".join(header), delimiter) if len(header) == 1 else ""
    if column is not None:
        if column not in header:
            raise DataError(f"{where}: no column '{column}'; the columns are: {', '.join(header)}{hint}")
        return column
    for name in _TEXT_COLUMNS:
        if name in header:
            return name
    if len(header) == 1 and not hint:
        return header[0]
    raise DataError(f"{where}: which column holds the text? give --column (the columns are: {', '.join(header)})"
                    f"{hint}")


def _lines(handle: io.TextIOBase, breaks: bool = False) -> Iterator[str | None]:
    """Non-empty lines; Brown-style `word/tag` text (recognised on its first lines) loses its tags.

    With `breaks`, a None marks each run of blank lines between two lines of text."""
    tagged, head, head_words, pending_break = None, [], 0, False
    for line in handle:
        line = line.strip()
        if not line:
            pending_break = breaks and (tagged is not None or bool(head))
            continue
        if pending_break:
            pending_break = False
            if tagged is None:
                head.append(None)
            else:
                yield None
        if tagged is None:
            # Decide on the first dozen words, not the first line: a title line may be one word.
            head.append(line)
            head_words += len(line.split())
            if head_words < 12 and len(head) < 10:
                continue
            tagged = _looks_tagged(head)
            yield from (_untag(held) if tagged and held is not None else held for held in head)
            continue
        yield _untag(line) if tagged else line
    if tagged is None and head:  # a file shorter than the look-ahead
        tagged = _looks_tagged(head)
        yield from (_untag(held) if tagged and held is not None else held for held in head)


def _looks_tagged(lines: list[str | None]) -> bool:
    words = " ".join(line for line in lines if line is not None).split()
    return sum(bool(_TAGGED.match(w)) for w in words) >= 0.8 * len(words)


def _untag(line: str) -> str:
    return " ".join(w.rsplit("/", 1)[0] for w in line.split())


def _table_cells(handle: io.TextIOBase, fmt: str, column: str | None, where: str,
                 delimiter: str | None = None) -> Iterator[str]:
    if fmt in ("csv", "tsv"):
        delimiter = delimiter or table_delimiter(fmt)
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return
        index = header.index(_pick_column(header, column, where, delimiter))
        for row in reader:
            if len(row) > index and row[index].strip():
                yield row[index]
        return
    name, texts, numbers = None, 0, 0
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        record = json_record(line, number, where)
        name = name or _pick_column(list(record), column, where)
        text = record.get(name)
        if isinstance(text, (int, float)):
            # A number is text in a CSV cell, and read_table reads one in a JSONL text column as its text too.
            numbers += 1
            yield str(text)
        elif isinstance(text, (list, dict)):
            held = "an object" if isinstance(text, dict) else "a list"
            raise DataError(f"{where}: row {number}: column '{name}' holds {held}, not text; give each row a single "
                            "string there, or name the text column with --column")
        elif isinstance(text, str):
            texts += 1
            if text.strip():
                yield text
    if numbers and not texts:
        raise DataError(f"{where}: column '{name}' holds numbers, not text; name the text column with --column")


def _parquet_cells(path: Path, column: str | None) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a file that is not Parquet
        raise DataError(f"{path}: cannot be read as parquet: {error}") from None
    schema = parquet.schema_arrow
    name = _pick_column(schema.names, column, str(path))
    kind = schema.field(name).type
    text_kind = kind.value_type if pa.types.is_dictionary(kind) else kind
    if not (pa.types.is_string(text_kind) or pa.types.is_large_string(text_kind)):
        raise DataError(f"{path}: column '{name}' holds {kind} values, not text; name the text column with --column "
                        f"(the columns are: {', '.join(schema.names)})")
    for batch in parquet.iter_batches(columns=[name], batch_size=2048):
        for text in batch.column(0).to_pylist():
            if isinstance(text, str) and text.strip():
                yield text


def _sources(paths) -> Iterator[tuple[str, str, object]]:
    """(file name, where it is, its binary stream or, for Parquet, its path) for every file and archive member
    of a corpus, in a stable order."""
    for path in corpus_files(paths):
        try:
            if is_archive(path.name):
                with _tar_archive(path) as archive:
                    member = None
                    for member in archive:
                        base = Path(member.name).name
                        if not member.isfile() or base.startswith(".") or _ARCHIVE_DOCS.search(base):
                            continue
                        yield base, f"{path}:{member.name}", archive.extractfile(member)
                    _check_archive_end(archive, path, member)
            elif table_format(path.name) == "parquet":
                yield path.name, str(path), path
            else:
                with open(path, "rb") as raw:
                    yield path.name, str(path), raw
        except (OSError, EOFError, tarfile.TarError, csv.Error) as error:
            raise DataError(f"{path}: cannot be read: {error}") from None


class _Header(tarfile.TarInfo):
    """A member header that notes on its archive why the member list ended. `tarfile` ends it silently at a
    header cut short or damaged, as at the end-of-archive zero block, so every later member would be dropped
    unseen; `_check_archive_end` tells the two apart."""

    @classmethod
    def fromtarfile(cls, archive):
        archive.stopped_by = None
        try:
            return super().fromtarfile(archive)
        except tarfile.HeaderError as error:
            archive.stopped_by = error
            raise


def _check_archive_end(archive: tarfile.TarFile, path: Path, last: tarfile.TarInfo | None) -> None:
    """Raise a DataError unless the member list ended at an end-of-archive zero block (one is enough: a
    tar cut after it has lost nothing)."""
    stopped_by = getattr(archive, "stopped_by", None)
    if stopped_by is None or isinstance(stopped_by, tarfile.EOFHeaderError):
        return
    after = f"after member {last.name}" if last is not None else "before its first member"
    if isinstance(stopped_by, tarfile.InvalidHeaderError):
        raise DataError(f"{path}: cannot be read: the archive is damaged {after} ({stopped_by}); get a whole "
                        "copy of the file")
    if isinstance(stopped_by, tarfile.EmptyHeaderError):  # no end block: cut at a header, or a writer that omits it
        raise DataError(f"{path}: cannot be read: the archive ends {after} without tar's end-of-archive block, so it "
                        "may be cut short; get a whole copy of the file, or write it again with `tar -cf`")
    raise DataError(f"{path}: cannot be read: the archive is cut short {after}; get a whole copy of the file")


def _tar_archive(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*", tarinfo=_Header)
    except tarfile.ReadError:  # its message lists every decompressor tried, over several lines
        raise DataError(f"{path}: not a tar archive (plain, gz, bz2 or xz), or a damaged one; name a text or table "
                        "file for what it holds (.txt, .csv, ...)") from None


def _texts(name: str, where: str, source, column: str | None, breaks: bool = False,
           reading: ReadingSettings | None = None) -> tuple[bool, Iterator]:
    """(is a table, its cells) or (not a table, its lines, with None at blank lines when `breaks`)."""
    if isinstance(source, Path):
        return True, _reading(where, _parquet_cells(source, column))
    reading = reading or ReadingSettings()
    if name.lower().endswith(".gz"):
        source = gzip.GzipFile(fileobj=source)
    source = io.BufferedReader(source, buffer_size=SNIFF_BYTES)
    try:
        check_text(source.peek(SNIFF_BYTES)[:SNIFF_BYTES], where, reading.encoding)
    except (OSError, EOFError, tarfile.TarError) as error:  # TarError: an archive member cut short
        raise DataError(f"{where}: cannot be read: {error}") from None
    handle = _replaced(io.TextIOWrapper(source, encoding=reading.encoding or "utf-8-sig", errors="nlpforge-mark",
                                        newline=""), where, reading.encoding)
    fmt = table_format(name)
    if fmt in ("csv", "tsv", "jsonl"):
        return True, _reading(where, _table_cells(handle, fmt, column, where, reading.delimiter))
    return False, _reading(where, _lines(handle, breaks))


def _replaced(lines: Iterator[str], where: str, encoding: str | None) -> Iterator[str]:
    """`lines` with each run of bytes that was not `encoding` (UTF-8) text as U+FFFD; a warning names the file
    and counts the bytes, as the training data report does: a few stray Latin-1 bytes should not stop a corpus,
    nor vanish unseen."""
    replaced = 0
    for line in lines:
        if not line.isascii():
            marks = _UNDECODED.findall(line)
            if marks:
                replaced += sum(ord(mark) - 0xDC00 for mark in marks)
                line = _UNDECODED.sub("\ufffd", line)
        yield line
    if replaced and (where, replaced) not in _warned:
        _warned.add((where, replaced))
        log.warning("%s: %d non-%s bytes replaced with U+FFFD; if the file is in another encoding, give it with "
                    "--encoding (e.g. --encoding latin-1)", where, replaced, encoding or "UTF-8")


def _reading(where: str, texts: Iterator) -> Iterator:
    """`texts`, with a damaged file (bad gzip, broken CSV, a cut tar member) reported as a DataError naming it."""
    try:
        yield from texts
    except (OSError, EOFError, csv.Error, tarfile.TarError) as error:
        raise DataError(f"{where}: cannot be read: {error}") from None


def iter_documents(paths, column: str | None = None, reading: ReadingSettings | None = None) -> Iterator[str]:
    """Raw documents of every file, one at a time, in a stable order: a table's cell, a text file's line."""
    for name, where, source in _sources(paths):
        yield from (text for text in _texts(name, where, source, column, reading=reading)[1] if text is not None)


DocumentBoundary = Literal["auto", "blank-line", "file", "line"]


def iter_sentence_documents(source: "CorpusSource", boundary: DocumentBoundary = "auto") -> Iterator[list[str]]:
    """Documents as lists of sentences (HTML cleaned), for BERT-style pre-training, up to `max_documents`.

    A table's cell is one document. A text file's documents follow `boundary`: `blank-line` (BERT's
    own format: a sentence or paragraph a line, a blank line between documents), `file` (each file or
    archive member is one document, as in Brown), `line` (one document a line), or `auto`: blank-line
    when the file's blank-line blocks hold three lines or more on average, file when they hold fewer
    (Brown puts a blank line after nearly every sentence), line when the file has no blank lines.
    """
    produced = 0
    for name, where, stream in _sources(source.corpus):
        table, texts = _texts(name, where, stream, source.column, breaks=True, reading=source.reading)
        groups = ([text] for text in texts) if table else _text_documents(texts, boundary)
        for texts_of_document in groups:
            sentences = [s for text in texts_of_document for s in split_sentences(clean_html(text))]
            if not sentences:
                continue
            if source.max_documents is not None and produced >= source.max_documents:
                return
            produced += 1
            yield sentences


def _text_documents(lines: Iterator[str | None], boundary: DocumentBoundary) -> Iterator[list[str]]:
    """A text file's lines (None at blank lines) grouped into documents by `boundary`."""
    if boundary == "auto":
        head = list(itertools.islice(lines, 400))
        lines = itertools.chain(head, lines)
        blocks = [len(list(group)) for blank, group in itertools.groupby(head, lambda line: line is None) if not blank]
        if len(blocks) <= 1:
            boundary = "line"
        else:
            # Brown's blocks are single sentences (now and then two lines); BERT-format documents run longer.
            boundary = "file" if sum(blocks) / len(blocks) < 3 else "blank-line"
    if boundary == "line":
        yield from ([line] for line in lines if line is not None)
    elif boundary == "file":
        document = [line for line in lines if line is not None]
        if document:
            yield document
    else:
        for blank, group in itertools.groupby(lines, lambda line: line is None):
            if not blank:
                yield list(group)


def source_documents(source: CorpusSource) -> Iterator[str]:
    """The raw documents of a corpus source, up to its `max_documents`."""
    limit = source.max_documents
    for number, document in enumerate(iter_documents(source.corpus, source.column, source.reading)):
        if limit is not None and number >= limit:
            return
        yield document


def document_sentences(text: str, settings: CorpusSettings) -> list[list[str]]:
    """Normalise one document and return its sentences as token lists."""
    text = normalize(text, settings.normalize)
    parts = split_sentences(text) if settings.tokenize.split_sentences else [text]
    sentences = []
    for part in parts:
        tokens = tokenize(part, settings.normalize.lowercase, settings.tokenize.punctuation)
        if len(tokens) >= settings.tokenize.min_sentence_tokens:
            sentences.append(tokens)
    return sentences


class Corpus:
    """A re-iterable stream of tokenised sentences; each pass re-reads the files."""

    def __init__(self, settings: CorpusSettings):
        self.settings = settings
        corpus_files(settings.source.corpus)  # fail now, not on the first pass, when a path is wrong

    def documents(self) -> Iterator[str]:
        return source_documents(self.settings.source)

    def __iter__(self) -> Iterator[list[str]]:
        empty = True
        for document in self.documents():
            for tokens in document_sentences(document, self.settings):
                empty = False
                yield tokens
        if empty:
            raise empty_corpus(self.settings)

    def encoded(self, workers: int | None = None) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
        """The corpus, in order, as batches of (the batch's words, each token's index among them (int32),
        tokens per sentence (int64)): the sentences `iter` gives, normalised and tokenised in `workers`
        processes (default: one per core) while this one reads the files. A few batches are in flight at a
        time, so memory does not grow with the corpus."""
        workers = cores() if workers is None else workers
        batches = _batches(self.documents(), _BATCH_CHARS)
        if workers <= 1:
            results = (_encode(batch, self.settings) for batch in batches)
        else:
            results = _in_order(_encode, batches, self.settings, workers)
        empty = True
        for words, local, lengths in results:
            if len(lengths):
                empty = False
                yield words, local, lengths
        if empty:
            raise empty_corpus(self.settings)


_BATCH_CHARS = 1 << 20  # characters of raw text a worker tokenises at a time


def _batches(documents: Iterator[str], chars: int) -> Iterator[list[str]]:
    batch, size = [], 0
    for document in documents:
        batch.append(document)
        size += len(document)
        if size >= chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _encode(documents: list[str], settings: CorpusSettings) -> tuple[list[str], np.ndarray, np.ndarray]:
    """One batch of `Corpus.encoded`: tokenise the documents; number the words as they first occur."""
    index = defaultdict()
    index.default_factory = index.__len__
    ids, lengths = array("i"), array("q")
    for document in documents:
        for tokens in document_sentences(document, settings):
            ids.extend(map(index.__getitem__, tokens))
            lengths.append(len(tokens))
    return list(index), np.frombuffer(ids, dtype=np.int32), np.frombuffer(lengths, dtype=np.int64)


def _leave_interrupts_to_parent() -> None:
    """Ctrl-C reaches the whole process group; the main process stops the pool, so workers ignore it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _in_order(function, items: Iterator, settings, workers: int) -> Iterator:
    """`function(item, settings)` for each item in `workers` processes, in order, 2 per worker in flight."""
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_leave_interrupts_to_parent)
    pending = deque()
    try:
        for item in items:
            pending.append(pool.submit(function, item, settings))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def corpus_stats(corpus: Corpus) -> CorpusStats:
    """Documents, sentences, tokens and token counts, in one streaming pass."""
    stats = CorpusStats()
    for document in corpus.documents():
        stats.documents += 1
        for tokens in document_sentences(document, corpus.settings):
            stats.sentences += 1
            stats.tokens += len(tokens)
            stats.counts.update(tokens)
    if stats.tokens == 0:
        raise empty_corpus(corpus.settings)
    return stats


def empty_corpus(settings: CorpusSettings) -> DataError:
    shortest = settings.tokenize.min_sentence_tokens
    if shortest > 1:
        return DataError(f"{settings.names}: the corpus is empty: no sentence has --min-sentence-tokens {shortest} "
                         "tokens or more; lower --min-sentence-tokens, or check the files, and --column for tables")
    return DataError(f"{settings.names}: the corpus is empty (no tokens after normalisation); check the files, and "
                     "--column for tables")
