"""A corpus as a memory-mapped table of sentences, each with its document's number: what pre-training reads.

    table = sentence_table(CorpusSource(corpus=["imdb_50k.csv.gz", "brown_corpus.tar.gz"], column="review"))
    table.column("sentence")[17].as_py()          # the 18th sentence of the corpus
    table.column("document")                      # int32 document number of every sentence

The first use streams the corpus once, document by document (see `iter_sentence_documents` for
what a document is), into an Arrow IPC file in nlpforge's cache, keyed by the files' paths, sizes
and modification times and the reading settings; memory stays flat. Every later use maps that
file, so starting a pre-training run does not grow with the corpus.
"""
import hashlib
import os
from pathlib import Path

import pyarrow as pa

from nlpforge.errors import DataError
from nlpforge.settings import cache_root
from nlpforge.text.corpus import CorpusSource, DocumentBoundary, corpus_files, iter_sentence_documents

FORMAT = 1
_SCHEMA = pa.schema([("sentence", pa.string()), ("document", pa.int32())])


def _key(source: CorpusSource, boundary: str) -> str:
    digest = hashlib.sha256(f"{FORMAT}|{source.column}|{source.max_documents}|{boundary}|{source.reading.delimiter}|"
                            f"{source.reading.encoding}".encode())
    for path in corpus_files(source.corpus):
        stat = path.stat()
        digest.update(f"|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def sentence_table(source: CorpusSource, boundary: DocumentBoundary = "auto", batch_rows: int = 65536) -> pa.Table:
    """The corpus's sentences and document numbers as a memory-mapped Arrow table, built once."""
    target = cache_root() / "sentences" / f"{_key(source, boundary)}.arrow"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_suffix(f".{os.getpid()}.tmp")
        sentences, documents, number = [], [], 0
        with pa.ipc.new_file(str(temporary), _SCHEMA) as writer:
            for number, document in enumerate(iter_sentence_documents(source, boundary)):
                sentences.extend(document)
                documents.extend([number] * len(document))
                if len(sentences) >= batch_rows:
                    writer.write_batch(pa.record_batch([sentences, documents], schema=_SCHEMA))
                    sentences, documents = [], []
            if sentences:
                writer.write_batch(pa.record_batch([sentences, documents], schema=_SCHEMA))
        os.replace(temporary, target)
    table = pa.ipc.open_file(pa.memory_map(str(target))).read_all()
    if table.num_rows == 0:
        raise DataError(f"{', '.join(map(str, source.corpus))}: the corpus has no sentences; check the files, "
                        "and --column for tables")
    return table


def cached_file(source: CorpusSource, boundary: DocumentBoundary = "auto") -> Path:
    """Where `sentence_table` keeps the corpus (for fingerprints and messages)."""
    return cache_root() / "sentences" / f"{_key(source, boundary)}.arrow"
