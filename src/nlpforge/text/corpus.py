"""Stream a raw corpus: files, folders, `.gz`, tar archives, or one column of CSV/TSV/JSONL/Parquet.

A corpus is never held in memory: `Corpus` is re-iterable (word2vec and Phrases read it several
times) and every pass reads the files again, one document at a time.

    corpus = Corpus(CorpusSettings(corpus=["imdb_50k.csv.gz", "brown_corpus.tar.gz"], column="review"))
    for tokens in corpus:          # one sentence at a time: ["one", "of", "the", ...]
        ...
    corpus_stats(corpus)           # documents, sentences, tokens, types

What is a document: a line of a text file (Brown gives one sentence a line), a row's cell in a
table. Tagged text in the Brown style (`The/at jury/nn`) is recognised and its tags dropped.
"""
import csv
import gzip
import io
import re
import sys
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from nlpforge.data.readers import FORMATS, json_record
from nlpforge.errors import ConfigError, DataError
from nlpforge.text.normalize import NormalizeSettings, normalize
from nlpforge.text.tokenize import TokenizeSettings, render_markers, split_sentences, tokenize
from nlpforge.training.config import setting

# A Brown-style tagged token: word/tag with a lower-case tag such as nn, pp$, nn-tl, ``.
_TAGGED = re.compile(r"^\S+/[a-z$*+\-.,:;()'`&]+$")
# Documentation files that ship inside corpus archives (Brown has README and CONTENTS).
_ARCHIVE_DOCS = re.compile(r"^(readme|contents|license|copying|changes|changelog)(\.\w+)?$", re.IGNORECASE)
_TEXT_COLUMNS = ("text", "review", "review_body", "sentence", "content", "body")

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # reviews run to tens of kB, above csv's 128 kB default


@dataclass
class CorpusSource:
    """Which files make the corpus."""

    corpus: list[str] = setting([], "corpus file or folder (.txt, .gz, .tar.gz, .csv, .tsv, .jsonl, .parquet); "
                                    "repeat for several", required=True)
    column: str | None = setting(None, "text column of tabular files (default: text, review, ... if present)")
    max_documents: int | None = setting(None, "read only this many documents (a quick look at a big corpus)")

    def __post_init__(self):
        if isinstance(self.corpus, (str, Path)):
            self.corpus = [str(self.corpus)]
        if self.max_documents is not None and self.max_documents < 1:
            raise ConfigError("max-documents must be at least 1")


@dataclass
class CorpusSettings(CorpusSource, NormalizeSettings, TokenizeSettings):
    """Which files make the corpus, and how their text becomes sentences of tokens."""

    def __post_init__(self):
        CorpusSource.__post_init__(self)
        TokenizeSettings.__post_init__(self)


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
    files = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise DataError(f"{path}: no such file or folder; check the path (relative paths start at {Path.cwd()})")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not any(
                part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise DataError(f"{path}: the folder holds no files; put .txt/.csv/... corpus files in it")
            files.extend(found)
        else:
            files.append(path)
    if not files:
        raise DataError("no corpus given; name at least one file or folder")
    return files


def _table_format(name: str) -> str | None:
    suffixes = [s.lower() for s in Path(name).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return FORMATS.get(suffixes[-1]) if suffixes else None


def _is_archive(name: str) -> bool:
    lower = name.lower()
    return lower.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))


def _pick_column(header: list[str], column: str | None, where: str) -> str:
    if column is not None:
        if column not in header:
            raise DataError(f"{where}: no column '{column}'; the columns are: {', '.join(header)}")
        return column
    for name in _TEXT_COLUMNS:
        if name in header:
            return name
    if len(header) == 1:
        return header[0]
    raise DataError(f"{where}: which column holds the text? give --column (the columns are: {', '.join(header)})")


def _lines(handle: io.TextIOBase) -> Iterator[str]:
    """Non-empty lines; Brown-style `word/tag` text (recognised on its first lines) loses its tags."""
    tagged, head, head_words = None, [], 0
    for line in handle:
        line = line.strip()
        if not line:
            continue
        if tagged is None:
            # Decide on the first dozen words, not the first line: a title line may be one word.
            head.append(line)
            head_words += len(line.split())
            if head_words < 12 and len(head) < 10:
                continue
            tagged = _looks_tagged(head)
            yield from (_untag(held) if tagged else held for held in head)
            continue
        yield _untag(line) if tagged else line
    if tagged is None and head:  # a file shorter than the look-ahead
        tagged = _looks_tagged(head)
        yield from (_untag(held) if tagged else held for held in head)


def _looks_tagged(lines: list[str]) -> bool:
    words = " ".join(lines).split()
    return sum(bool(_TAGGED.match(w)) for w in words) >= 0.8 * len(words)


def _untag(line: str) -> str:
    return " ".join(w.rsplit("/", 1)[0] for w in line.split())


def _table_cells(handle: io.TextIOBase, fmt: str, column: str | None, where: str) -> Iterator[str]:
    if fmt in ("csv", "tsv"):
        reader = csv.reader(handle, delimiter="," if fmt == "csv" else "\t")
        header = next(reader, None)
        if header is None:
            return
        index = header.index(_pick_column(header, column, where))
        for row in reader:
            if len(row) > index and row[index].strip():
                yield row[index]
        return
    name = None
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        record = json_record(line, number, where)
        name = name or _pick_column(list(record), column, where)
        text = record.get(name)
        if isinstance(text, str) and text.strip():
            yield text


def _parquet_cells(path: Path, column: str | None) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a file that is not Parquet
        raise DataError(f"{path}: cannot be read as parquet: {error}") from None
    name = _pick_column(parquet.schema_arrow.names, column, str(path))
    for batch in parquet.iter_batches(columns=[name], batch_size=2048):
        for text in batch.column(0).to_pylist():
            if isinstance(text, str) and text.strip():
                yield text


def _stream_documents(raw, name: str, column: str | None, where: str) -> Iterator[str]:
    """Documents of one binary stream named `name` (the name decides gzip and the format)."""
    if name.lower().endswith(".gz"):
        raw = gzip.GzipFile(fileobj=raw)
    handle = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
    fmt = _table_format(name)
    if fmt in ("csv", "tsv", "jsonl"):
        yield from _table_cells(handle, fmt, column, where)
    else:
        yield from _lines(handle)


def iter_documents(paths, column: str | None = None) -> Iterator[str]:
    """Raw documents of every file, one at a time, in a stable order."""
    for path in corpus_files(paths):
        try:
            if _is_archive(path.name):
                with tarfile.open(path, "r:*") as archive:
                    for member in archive:
                        base = Path(member.name).name
                        if not member.isfile() or base.startswith(".") or _ARCHIVE_DOCS.match(base):
                            continue
                        yield from _stream_documents(archive.extractfile(member), base, column,
                                                     f"{path}:{member.name}")
            elif _table_format(path.name) == "parquet":
                yield from _parquet_cells(path, column)
            else:
                with open(path, "rb") as raw:
                    yield from _stream_documents(raw, path.name, column, str(path))
        except (OSError, EOFError, tarfile.TarError, csv.Error) as error:
            raise DataError(f"{path}: cannot be read: {error}") from None


def source_documents(source: CorpusSource) -> Iterator[str]:
    """The raw documents of a corpus source, up to its `max_documents`."""
    limit = source.max_documents
    for number, document in enumerate(iter_documents(source.corpus, source.column)):
        if limit is not None and number >= limit:
            return
        yield document


def document_sentences(text: str, settings: CorpusSettings) -> list[list[str]]:
    """Normalise one document and return its sentences as token lists."""
    text = normalize(text, settings)
    parts = split_sentences(text) if settings.split_sentences else [text]
    sentences = []
    for part in parts:
        tokens = tokenize(part, settings.lowercase, settings.punctuation)
        if len(tokens) >= settings.min_sentence_tokens:
            sentences.append(tokens)
    return sentences


class Corpus:
    """A re-iterable stream of tokenised sentences; each pass re-reads the files."""

    def __init__(self, settings: CorpusSettings):
        self.settings = settings
        corpus_files(settings.corpus)  # fail now, not on the first pass, when a path is wrong

    def documents(self) -> Iterator[str]:
        return source_documents(self.settings)

    def __iter__(self) -> Iterator[list[str]]:
        empty = True
        for document in self.documents():
            for tokens in document_sentences(document, self.settings):
                empty = False
                yield tokens
        if empty:
            raise DataError(f"{', '.join(map(str, self.settings.corpus))}: the corpus is empty (no tokens after "
                            "normalisation); check the files, and --column for tables")


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
        raise DataError(f"{', '.join(map(str, corpus.settings.corpus))}: the corpus is empty (no tokens after "
                        "normalisation); check the files, and --column for tables")
    return stats


@dataclass
class TokenizeJob(CorpusSettings):
    """Write a corpus as tokens: one sentence a line, space-separated or in the <BOS>/<SP>/<EOS> rendering."""

    output: str | None = setting(None, "file to write (default: print to the terminal)")
    format: str = setting("tokens", "tokens (space-separated) or markers (<BOS>hello<SP>world<SP>!<EOS>)")
    phrases: str | None = setting(None, "phrase file from `nlpforge corpus phrases` to join phrases with")

    def __post_init__(self):
        CorpusSettings.__post_init__(self)
        if self.format not in ("tokens", "markers"):
            raise ConfigError(f"format must be tokens or markers, not '{self.format}'")


def tokenized_lines(job: TokenizeJob) -> Iterator[str]:
    """The corpus's sentences rendered as `job.format` lines, phrases joined when `job.phrases` is set."""
    from nlpforge.text.phrases import PhraseModel

    sentences = iter(Corpus(job))
    if job.phrases:
        sentences = PhraseModel.load(job.phrases).apply_all(sentences)
    render = render_markers if job.format == "markers" else " ".join
    for tokens in sentences:
        yield render(tokens)
