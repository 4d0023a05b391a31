"""The vocabulary: token counts cut by `min_count` and a maximum size, plus special tokens.

Saved as a readable TSV, most frequent first; special tokens come first with count 0:

    # nlpforge vocabulary: min_count=5 max_size=none corpus_tokens=12121412 corpus_types=101876
    token	count
    <PAD>	0
    the	664133

    vocabulary = build_vocabulary(corpus_stats(corpus).counts, VocabularySettings(min_count=5))
    vocabulary.save("vocab.tsv"); Vocabulary.load("vocab.tsv")
    vocabulary_stats(vocabulary, counts, held_out=Corpus(...))   # coverage and OOV rate

Building one straight from a corpus file is `nlpforge.text.jobs.vocabulary_from_corpus`.
"""
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from nlpforge.errors import ConfigError, DataError
from nlpforge.settings import Settings, replacing, setting

HEADER = "token\tcount"
_META = re.compile(r"(\w+)=(\S+)")


@dataclass
class VocabularySettings(Settings):
    """Which tokens make the vocabulary."""

    min_count: int = setting(5, "keep tokens seen at least this many times", min=1)
    max_size: int | None = setting(None, "keep at most this many tokens, the most frequent (specials not counted)",
                                   min=1)
    special_tokens: list[str] = setting(["<PAD>", "<UNK>", "<BOS>", "<EOS>"], "tokens put first, whatever their counts")

    def check(self):
        bad = [t for t in self.special_tokens if not t or any(c.isspace() for c in t)]
        if bad:
            raise ConfigError(f"special tokens cannot be empty or hold spaces: {bad}")
        repeated = sorted({t for t in self.special_tokens if self.special_tokens.count(t) > 1})
        if repeated:  # a repeat would take two ids, leaving one of them to no token
            raise ConfigError(f"special tokens are each given once; {', '.join(repeated)} is repeated")


@dataclass
class Vocabulary:
    special_tokens: list[str]
    counts: dict[str, int]  # the corpus tokens kept, most frequent first
    min_count: int = 1
    max_size: int | None = None
    corpus_tokens: int = 0  # tokens of the corpus it was built from
    corpus_types: int = 0
    index: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        self.index = {token: i for i, token in enumerate(self.tokens)}

    @property
    def tokens(self) -> list[str]:
        return self.special_tokens + [t for t in self.counts if t not in self.special_tokens]

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    def save(self, path) -> Path:
        """Write the vocabulary to `path` whole or not at all: an earlier file survives a failed save."""
        path = Path(path)
        with replacing(path) as partial, open(partial, "w", encoding="utf-8") as out:
            out.write(f"# nlpforge vocabulary: min_count={self.min_count} max_size={self.max_size or 'none'} "
                      f"corpus_tokens={self.corpus_tokens} corpus_types={self.corpus_types}\n{HEADER}\n")
            for token in self.special_tokens:
                out.write(f"{token}\t0\n")
            for token, count in self.counts.items():
                if token not in self.special_tokens:
                    out.write(f"{token}\t{count}\n")
        return path

    @classmethod
    def load(cls, path) -> "Vocabulary":
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such vocabulary file; make one with `nlpforge corpus vocab`")
        meta, specials, counts = {}, [], {}
        with open(path, encoding="utf-8") as handle:
            try:
                for number, line in enumerate(handle, start=1):
                    line = line.rstrip("\n")
                    if line.startswith("# nlpforge vocabulary:") and number == 1:
                        meta = dict(_META.findall(line))
                        continue
                    if line == HEADER or not line:
                        continue
                    token, _, count = line.partition("\t")
                    if not count.isdigit():
                        raise DataError(f"{path}: line {number} is not `token<TAB>count`; is this a vocabulary file?")
                    if int(count) == 0:
                        specials.append(token)
                    else:
                        counts[token] = int(count)
            except UnicodeDecodeError:
                raise DataError(f"{path}: not UTF-8 text, so not a vocabulary file; make one with `nlpforge corpus "
                                "vocab`") from None
        if not specials and not counts:
            raise DataError(f"{path}: holds no tokens; is this a vocabulary file? make one with `nlpforge corpus "
                            "vocab`")

        def number(key):
            value = meta.get(key, "none")
            return int(value) if value.isdigit() else None

        return cls(specials, counts, number("min_count") or 1, number("max_size"),
                   number("corpus_tokens") or 0, number("corpus_types") or 0)


def build_vocabulary(counts: Counter, settings: VocabularySettings | None = None) -> Vocabulary:
    """Keep the tokens seen `min_count` times or more, the `max_size` most frequent (ties by spelling)."""
    settings = settings or VocabularySettings()
    if not isinstance(counts, Mapping):
        raise TypeError(f"build_vocabulary takes token counts (a Counter or dict of token -> count), not a "
                        f"{type(counts).__name__}; count the tokens first, e.g. Counter(tokens)")
    if not counts:
        raise DataError("the corpus is empty: no tokens to build a vocabulary from")
    ordinary = [(t, c) for t, c in counts.items() if t not in settings.special_tokens]
    kept = sorted(((t, c) for t, c in ordinary if c >= settings.min_count), key=lambda item: (-item[1], item[0]))
    if not kept and ordinary:
        token, count = max(ordinary, key=lambda item: item[1])
        raise DataError(f"no token occurs --min-count {settings.min_count} times (the most frequent, {token!r}, occurs "
                        f"{count:,} times), so the vocabulary would hold only its special tokens; lower --min-count")
    if settings.max_size is not None:
        kept = kept[:settings.max_size]
    return Vocabulary(list(settings.special_tokens), dict(kept), settings.min_count, settings.max_size,
                      sum(counts.values()), len(counts))


@dataclass
class VocabularyStats:
    size: int  # entries, special tokens included
    corpus_types: int
    corpus_tokens: int
    coverage: float  # share of the corpus tokens that the vocabulary holds
    held_out_tokens: int | None = None
    held_out_oov_tokens: int | None = None
    held_out_oov_types: int | None = None

    @property
    def held_out_oov_rate(self) -> float | None:
        if not self.held_out_tokens:
            return None
        return self.held_out_oov_tokens / self.held_out_tokens

    def text(self) -> str:
        lines = [f"vocabulary size    {self.size:,} (special tokens included)",
                 f"corpus types       {self.corpus_types:,}",
                 f"corpus tokens      {self.corpus_tokens:,}",
                 f"coverage           {self.coverage:.2%} of corpus tokens are in the vocabulary"]
        if self.held_out_tokens is not None:
            lines.append(f"held-out OOV rate  {self.held_out_oov_rate:.2%} of {self.held_out_tokens:,} tokens "
                         f"({self.held_out_oov_types:,} unseen types)")
        return "\n".join(lines)


def vocabulary_stats(vocabulary: Vocabulary, counts: Counter,
                     held_out: Iterable[list[str]] | None = None) -> VocabularyStats:
    """Types, tokens and coverage of the corpus `counts`; OOV rate of a held-out stream of sentences."""
    covered = sum(c for t, c in counts.items() if t in vocabulary)
    total = sum(counts.values())
    stats = VocabularyStats(len(vocabulary), len(counts), total, covered / total if total else 0.0)
    if held_out is not None:
        tokens, oov, oov_types = 0, 0, set()
        for sentence in held_out:
            tokens += len(sentence)
            for token in sentence:
                if token not in vocabulary.index:
                    oov += 1
                    oov_types.add(token)
        if tokens == 0:
            raise DataError("the held-out file has no tokens; give a non-empty held-out file")
        stats.held_out_tokens, stats.held_out_oov_tokens, stats.held_out_oov_types = tokens, oov, len(oov_types)
    return stats
