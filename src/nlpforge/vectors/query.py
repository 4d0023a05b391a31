"""Query a vectors folder: nearest words, analogies and distances.

    vectors = load_vectors("vectors/imdb")
    vectors.similar("car")                       # [("truck", 0.81), ...]
    vectors.analogy("paris", "france", "berlin") # paris is to france as berlin is to ... germany
    vectors.distance("good", "bad")              # cosine distance, 0 = same direction

Query words go through the corpus's own normalisation and phrase model, so `Rio de Janeiro`
finds `rio_de_janeiro`. A word the vectors do not know raises `VocabularyError` naming the
closest known spellings.
"""
import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from nlpforge.errors import ArtifactError, ConfigError, InputError, VocabularyError
from nlpforge.settings import check_count, from_flat, leaf_fields
from nlpforge.text.corpus import CorpusSettings
from nlpforge.text.normalize import normalize
from nlpforge.text.phrases import PhraseModel
from nlpforge.text.tokenize import tokenize

METADATA = "nlpforge-vectors.json"
# Spelling suggestions look at the most frequent words only: difflib over a whole
# vocabulary of millions would take seconds, and rare words make poor suggestions.
_SUGGESTION_POOL = 50_000


@dataclass
class WordVectors:
    """Loaded vectors: gensim KeyedVectors plus the normalisation and phrases that made them."""

    keyed_vectors: object  # gensim.models.KeyedVectors
    corpus_settings: CorpusSettings = field(default_factory=CorpusSettings)
    phrases: PhraseModel | None = None
    metadata: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keyed_vectors)

    def key(self, word: str) -> str:
        """The vocabulary entry for a query word or phrase; unknown words raise VocabularyError."""
        if not isinstance(word, str):
            raise InputError(f"a query word must be a string, not {word!r}"
                             + ("; decode it first, e.g. word.decode('utf-8')" if isinstance(word, bytes) else ""))
        if word in self.keyed_vectors.key_to_index:
            return word
        settings = self.corpus_settings.normalize
        tokens = tokenize(normalize(word, settings), settings.lowercase, "drop")
        if self.phrases is not None:
            tokens = self.phrases.apply(tokens)
        delimiter = self.phrases.settings.phrase_delimiter if self.phrases else "_"
        for candidate in (" ".join(tokens), delimiter.join(tokens)):
            if candidate in self.keyed_vectors.key_to_index:
                return candidate
        raise VocabularyError(unknown_word_message(word, delimiter.join(tokens) or word,
                                                  self.keyed_vectors.index_to_key))

    def vector(self, word: str):
        return self.keyed_vectors[self.key(word)]

    def similar(self, word: str, topn: int = 10) -> list[tuple[str, float]]:
        """The `topn` nearest words by cosine similarity."""
        check_count(topn, "topn", InputError)
        return [(w, float(s)) for w, s in self.keyed_vectors.most_similar(self.key(word), topn=topn)]

    def analogy(self, a: str, b: str, c: str, topn: int = 1) -> list[tuple[str, float]]:
        """`a` is to `b` as `c` is to ...: the words nearest to b - a + c (3CosAdd)."""
        check_count(topn, "topn", InputError)
        keys = [self.key(w) for w in (a, b, c)]
        found = self.keyed_vectors.most_similar(positive=[keys[1], keys[2]], negative=[keys[0]], topn=topn)
        return [(w, float(s)) for w, s in found]

    def distance(self, first: str, second: str) -> float:
        """Cosine distance (1 - cosine similarity): 0 for the same direction, up to 2."""
        return float(self.keyed_vectors.distance(self.key(first), self.key(second)))


def unknown_word_message(word: str, key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known[:_SUGGESTION_POOL], n=5, cutoff=0.7)
    hint = f"closest known spellings: {', '.join(close)}" if close else "no known word is spelled like it"
    return f"'{word}' is not in the vocabulary ({len(known):,} words); {hint}"


def load_vectors(folder) -> WordVectors:
    """Load a folder written by `train_vectors` (or any word2vec file: .bin binary, .txt/.vec text)."""
    if not isinstance(folder, (str, os.PathLike)):
        raise ArtifactError(f"a vectors folder is a path, not {folder!r}; give the folder `nlpforge vectors train` "
                            "wrote, or a word2vec file")
    path = Path(folder)
    if path.is_file():
        return WordVectors(_keyed_vectors(path, binary=path.suffix == ".bin"))
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such vectors folder; train one with `nlpforge vectors train`")
    if not (path / "vectors.bin").is_file():
        raise ArtifactError(f"{path}: no vectors.bin; is this a folder written by `nlpforge vectors train`?")
    metadata, corpus_settings = {}, CorpusSettings()
    if (path / METADATA).is_file():
        try:
            metadata = json.loads((path / METADATA).read_text(encoding="utf-8"))
            saved = metadata.get("settings", {})
            known = {f.name for _, f, _ in leaf_fields(CorpusSettings)}
            corpus_settings = from_flat(CorpusSettings, {k: v for k, v in saved.items() if k in known},
                                        where=str(path / METADATA))
        except (ValueError, UnicodeDecodeError, AttributeError, ConfigError) as error:
            problem = getattr(error, "message", None) or str(error).splitlines()[0]
            raise ArtifactError(f"{path / METADATA}: the vectors' metadata is damaged ({problem}); train the vectors "
                                "again with `nlpforge vectors train`") from None
    phrases = PhraseModel.load(path / "phrases.json") if (path / "phrases.json").is_file() else None
    return WordVectors(_keyed_vectors(path / "vectors.bin", binary=True), corpus_settings, phrases, metadata)


def _keyed_vectors(path: Path, binary: bool):
    from gensim.models import KeyedVectors

    try:
        return KeyedVectors.load_word2vec_format(str(path), binary=binary)
    except (ValueError, UnicodeDecodeError, EOFError) as error:  # EOFError: a binary file cut short
        problem = str(error).splitlines()[0] if str(error) else "it ends too early"
        raise ArtifactError(f"{path}: not a complete word2vec file ({problem}); name a complete one, or train "
                            "vectors again with `nlpforge vectors train`") from None
    except MemoryError:
        raise ArtifactError(f"{path}: the vectors its first line announces (words, dimensions) do not fit in memory; "
                            "check that line, or name another word2vec file") from None
