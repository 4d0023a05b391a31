"""Phrase learning in integer ids: the counts gensim `Phrases` learns from, and joining, with numpy.

Phrases scores a candidate « a c1 .. ck b » (a and b ordinary words, c1..ck connector words such as
`of` or `the`) from how often the candidate, `a` and `b` occur, and joins the candidates that score
above a threshold, left to right. Gensim does both with a dict operation per word in pure Python.
Here every token is an integer id, a chunk of sentences is one array, candidates are found with
array operations and equal ones are counted by sorting. The results are gensim's: the same counts,
vocabulary size and corpus size give the same scores through gensim's own scoring functions, and
joining follows `FrozenPhrases[tokens]` to the token.

Each pass spills its input as ids (4 bytes a token), so the next pass reads ids, not text:

    ids = TokenIds(connector_words)
    counts = PairCounts(ids, spill="work/pass-0")
    for chunk_ids, lengths in ids.chunks(sentences):      # or ids.encode(corpus.encoded()): tokenised in parallel
        counts.add_ids(chunk_ids, lengths)
    phrases = counts.finish().phrasegrams("default", min_count=5, threshold=10.0, delimiter="␟")
    join = IdJoiner(ids, {"new_york": 412.7}, "_")
    for chunk_ids, lengths in counts.spilled():
        joined_ids, joined_lengths = join(chunk_ids, lengths)
"""
from array import array
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from nlpforge.errors import DataError

_CHUNK_TOKENS = 1 << 20  # tokens gathered before the candidates are counted


class TokenIds:
    """Integer ids for tokens, and numbers for runs of connector words, shared by a corpus's passes."""

    def __init__(self, connector_words=frozenset()):
        self.connectors = sorted(connector_words)
        self.ids = defaultdict()
        self.ids.default_factory = self.ids.__len__  # an unseen token gets the next id
        self.runs = {(): 0}  # connector run -> its number; 0: no connector
        self.run_list = [()]

    def __len__(self) -> int:
        return len(self.ids)

    def chunks(self, sentences):
        """Token lists as chunks of (ids (int32), tokens per sentence (int64)) of about `_CHUNK_TOKENS` ids."""
        buffer, lengths = array("i"), array("q")
        for tokens in sentences:
            if isinstance(tokens, str):  # it would be read as a list of characters
                raise DataError(f"a sentence is a list of tokens, not a string ({tokens[:40]!r}); split it first, e.g. "
                                "with nlpforge.text.tokenize.tokenize")
            buffer.extend(map(self.ids.__getitem__, tokens))
            lengths.append(len(tokens))
            if len(buffer) >= _CHUNK_TOKENS:
                yield np.frombuffer(buffer, dtype=np.int32), np.frombuffer(lengths, dtype=np.int64)
                buffer, lengths = array("i"), array("q")
        if lengths:
            yield np.frombuffer(buffer, dtype=np.int32), np.frombuffer(lengths, dtype=np.int64)

    def encode(self, batches):
        """Batches of (words, each token's index among them, tokens per sentence), as `Corpus.encoded` gives
        them, as chunks of (ids, tokens per sentence); new words get ids in the order they occur."""
        for words, local, lengths in batches:
            known = np.fromiter(map(self.ids.__getitem__, words), dtype=np.int32, count=len(words))
            yield known[local], lengths

    @property
    def words(self) -> list[str]:
        return list(self.ids)

    def connector_index(self) -> np.ndarray:
        """For every id, its index in `connectors`, or -1 for an ordinary word."""
        index = np.full(len(self.ids), -1, dtype=np.int64)
        for number, word in enumerate(self.connectors):
            if word in self.ids:
                index[self.ids[word]] = number
        return index

    def run_number(self, run: tuple) -> int:
        number = self.runs.get(run)
        if number is None:
            number = self.runs[run] = len(self.run_list)
            self.run_list.append(run)
        return number

    def candidates(self, ids: np.ndarray, lengths: np.ndarray, connector: np.ndarray):
        """Each candidate of a chunk: where it starts and ends, and its connector run's number.
        `connector` is `connector_index()[ids]`."""
        sentence = np.repeat(np.arange(len(lengths)), lengths)
        ordinary = np.flatnonzero(connector < 0)
        same = sentence[ordinary[1:]] == sentence[ordinary[:-1]]
        start, end = ordinary[:-1][same], ordinary[1:][same]
        return start, end, self._runs(connector, start, end - start - 1)

    def _runs(self, connector, start, gap):
        run = np.zeros(len(start), dtype=np.int64)
        gapped = np.flatnonzero(gap)
        if len(gapped) == 0:
            return run
        # A run of up to `longest` connectors is one integer in base len(connectors) + 1 ...
        base = len(self.connectors) + 1
        longest = max(1, int(62 // np.log2(base)))
        code = np.zeros(len(gapped), dtype=np.int64)
        for offset in range(min(longest, int(gap.max()))):
            inside = gap[gapped] > offset
            code[inside] += (connector[start[gapped[inside]] + 1 + offset] + 1) * base ** offset
        # ... and the few distinct integers are named in Python; longer runs are rare and named one by one.
        codes, inverse = np.unique(code, return_inverse=True)
        numbers = np.array([self.run_number(self._decode(int(c), base)) for c in codes], dtype=np.int64)
        run[gapped] = numbers[inverse]
        for at in gapped[gap[gapped] > longest]:
            inside = connector[start[at] + 1: start[at] + 1 + gap[at]]
            run[at] = self.run_number(tuple(self.connectors[i] for i in inside))
        return run

    def _decode(self, code: int, base: int) -> tuple:
        run = []
        while code:
            code, digit = divmod(code, base)
            run.append(self.connectors[digit - 1])
        return tuple(run)


class PairCounts:
    """Unigram and candidate counts of a stream of sentences, as gensim `Phrases` collects them.

    Sentences come as chunks of ids (`add_ids`); with `spill`, every chunk is also written to
    `{spill}.ids` and `{spill}.lengths` for `spilled` to read back.
    """

    def __init__(self, ids: TokenIds, spill=None, max_vocab_size: int = 40_000_000):
        self.token_ids, self.max_vocab_size = ids, max_vocab_size
        self.words = 0  # every token, connector words included: gensim's corpus_word_count
        self.unigrams = np.zeros(0, dtype=np.int64)  # by id; connector words are never counted
        self._parts = []  # (run, a, b, count) arrays, each sorted and unique; merged now and then
        self._merged_size = 0
        self.spill, self._chunks = (Path(spill) if spill is not None else None), []
        if self.spill is not None:
            self._spill_files = (open(f"{self.spill}.ids", "wb"), open(f"{self.spill}.lengths", "wb"))

    def add_ids(self, ids: np.ndarray, lengths: np.ndarray) -> None:
        """Count one chunk of whole sentences: `ids` (int32) holds them one after the other."""
        if self.spill is not None:
            ids.astype(np.int32).tofile(self._spill_files[0])
            lengths.astype(np.int64).tofile(self._spill_files[1])
            self._chunks.append((len(ids), len(lengths)))
        self.words += len(ids)
        ids = ids.astype(np.int64)
        connector = self.token_ids.connector_index()[ids]
        start, end, run = self.token_ids.candidates(ids, lengths, connector)
        ordinary = ids[connector < 0]
        grown = np.bincount(ordinary, minlength=len(self.token_ids))
        grown[: len(self.unigrams)] += self.unigrams
        self.unigrams = grown
        self._parts.append(_unique(run.astype(np.int32), ids[start].astype(np.int32), ids[end].astype(np.int32)))
        pending = sum(len(part[0]) for part in self._parts) - self._merged_size
        if pending > max(self._merged_size // 4, _CHUNK_TOKENS):  # bounded memory, few merges
            self._merge()

    def _merge(self) -> None:
        if len(self._parts) > 1:
            columns = [np.concatenate(column) for column in zip(*self._parts)]
            self._parts.clear()
            self._parts.append(_unique(*columns))
        self._merged_size = len(self._parts[0][0]) if self._parts else 0

    def finish(self) -> "PairCounts":
        """Close the spill; afterwards each candidate is counted once."""
        if self.spill is not None:
            for handle in self._spill_files:
                handle.close()
        self._merge()
        if not self._parts:
            self._parts = [(np.zeros(0, dtype=np.int32),) * 3 + (np.zeros(0, dtype=np.int64),)]
        self.unigrams.resize(len(self.token_ids), refcheck=False)
        self._prune()
        return self

    def _prune(self) -> None:
        """Past `max_vocab_size` entries, drop rare ones as gensim's `prune_vocab` does (once, at the end)."""
        floor = 1
        while self.vocabulary_size > self.max_vocab_size:
            keep = self._parts[0][3] >= floor
            self._parts = [tuple(column[keep] for column in self._parts[0])]
            self.unigrams[self.unigrams < floor] = 0
            floor += 1

    @property
    def candidates(self) -> int:
        return len(self._parts[0][0])

    @property
    def vocabulary_size(self) -> int:
        """Entries of gensim's vocab dict: the ordinary words seen plus the distinct candidates."""
        return int(np.count_nonzero(self.unigrams)) + self.candidates

    def phrasegrams(self, scoring: str, min_count: int, threshold: float, delimiter: str) -> dict[str, float]:
        """The candidates that score above `threshold` ("default" or "npmi" scoring), joined by
        `delimiter`, as `Phrases.export_phrases` gives them."""
        from gensim.models.phrases import npmi_scorer, original_scorer

        run, a, b, count = self._parts[0]
        # Only a candidate with enough occurrences can pass; the scores themselves are gensim's.
        if scoring == "npmi":
            scoring, lowest = npmi_scorer, min_count
        else:
            scoring, lowest = original_scorer, min_count + 1  # its threshold is above 0
        keep = np.flatnonzero(count >= lowest)
        words, runs, unigrams = self.token_ids.words, self.token_ids.run_list, self.unigrams
        size, corpus = self.vocabulary_size, self.words
        found = {}
        for r, x, y, n in zip(run[keep].tolist(), a[keep].tolist(), b[keep].tolist(), count[keep].tolist()):
            if unigrams[x] <= 0 or unigrams[y] <= 0:
                continue  # pruned
            score = scoring(worda_count=int(unigrams[x]), wordb_count=int(unigrams[y]), bigram_count=n,
                            len_vocab=size, min_count=min_count, corpus_word_count=corpus)
            if score > threshold:
                found[delimiter.join((words[x], *runs[r], words[y]))] = score
        return found

    def drop_counts(self) -> None:
        """Free the counts once the phrases are taken; the spill stays readable."""
        self._parts, self.unigrams = [], np.zeros(0, dtype=np.int64)

    def remove_spill(self) -> None:
        for suffix in (".ids", ".lengths"):
            Path(f"{self.spill}{suffix}").unlink(missing_ok=True)

    def spilled(self):
        """The spilled chunks again, as (ids, lengths) arrays."""
        with open(f"{self.spill}.ids", "rb") as ids, open(f"{self.spill}.lengths", "rb") as lengths:
            for tokens, sentences in self._chunks:
                yield np.fromfile(ids, dtype=np.int32, count=tokens), np.fromfile(lengths, dtype=np.int64,
                                                                                  count=sentences)


def write_sentences(path, chunks) -> tuple[Counter, int]:
    """Write chunks of (words, ids, tokens per sentence), whose tokens are `words[ids]` (`words` a numpy
    array of str objects), to `path`, one sentence a line; returns the token counts and the number of
    sentences."""
    counts, sentences = Counter(), 0
    with open(path, "w", encoding="utf-8") as out:
        for words, ids, lengths in chunks:
            seen = np.bincount(ids, minlength=len(words))
            found = np.flatnonzero(seen)
            counts.update(dict(zip(words[found].tolist(), seen[found].tolist())))
            tokens = words[ids].tolist()
            end = 0
            for length in lengths.tolist():
                out.write(" ".join(tokens[end:end + length]))
                out.write("\n")
                end += length
            sentences += len(lengths)
    return counts, sentences


class IdJoiner:
    """Joins phrases in chunks of ids exactly as gensim's `FrozenPhrases[tokens]` joins them in text.

    Gensim looks a candidate up by its words joined with `delimiter`; every way a phrase splits at
    the delimiter into « a, connectors, b » is therefore a candidate that joins to it. A joined
    phrase gets the id of its text.
    """

    def __init__(self, ids: TokenIds, phrases, delimiter: str):
        self.token_ids = ids
        known, connectors = ids.ids, set(ids.connectors)
        rows = []
        for phrase in phrases:
            parts = phrase.split(delimiter)
            for first in range(1, len(parts)):
                a = delimiter.join(parts[:first])
                if a not in known or a in connectors:
                    continue
                for last in range(first, len(parts)):
                    middle, b = parts[first:last], delimiter.join(parts[last:])
                    if b in known and b not in connectors and all(word in connectors for word in middle):
                        rows.append((ids.run_number(tuple(middle)), known[a], known[b], known[phrase]))
        self.rows = np.array(rows, dtype=np.int64).reshape(-1, 4)

    def __call__(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(self.rows) == 0 or len(ids) == 0:
            return ids, lengths
        wide = ids.astype(np.int64)
        start, end, run = self.token_ids.candidates(wide, lengths, self.token_ids.connector_index()[wide])
        width = len(self.token_ids).bit_length()
        if 2 * width + max(int(run.max(initial=0)), int(self.rows[:, 0].max())).bit_length() > 63:
            raise DataError(f"{len(self.token_ids):,} distinct tokens are too many to join phrases (about 2**28 "
                            "at most); learn phrases on a part of the corpus")
        keys = (self.rows[:, 0] << (2 * width)) | (self.rows[:, 1] << width) | self.rows[:, 2]
        order = np.argsort(keys)
        keys, phrase_ids = keys[order], self.rows[order, 3]
        candidate = (run << (2 * width)) | (wide[start] << width) | wide[end]
        at = np.minimum(np.searchsorted(keys, candidate), len(keys) - 1)
        hit = keys[at] == candidate
        # Left to right, a joined phrase uses up its last word: of a chain of hits that share words,
        # the 1st, 3rd, 5th ... are joined.
        linked = np.concatenate(([False], hit[:-1] & (end[:-1] == start[1:])))
        begins = hit & ~linked
        number = np.arange(len(hit))
        last_begin = np.maximum.accumulate(np.where(begins, number, 0))
        joined = hit & ((number - last_begin) % 2 == 0)
        out = ids.copy()
        out[start[joined]] = phrase_ids[at[joined]]
        drop = np.zeros(len(ids) + 1, dtype=np.int32)
        np.add.at(drop, start[joined] + 1, 1)
        np.add.at(drop, end[joined] + 1, -1)
        keep = np.cumsum(drop[:-1]) == 0
        sentence = np.repeat(np.arange(len(lengths)), lengths)
        return out[keep], np.bincount(sentence[keep], minlength=len(lengths)).astype(np.int64)


def _unique(run, a, b, count=None):
    """Equal (run, a, b) rows summed into one (each row counts once when `count` is None), sorted by row."""
    if len(a) == 0:
        return run, a, b, np.zeros(0, dtype=np.int64) if count is None else count
    width = int(max(a.max(), b.max())).bit_length()
    if 2 * width + int(run.max()).bit_length() > 63:  # rare: too many distinct tokens for one integer per row
        count = np.ones(len(a), dtype=np.int64) if count is None else count
        order = np.lexsort((b, a, run))
        boundary = (np.diff(run[order]) != 0) | (np.diff(a[order]) != 0) | (np.diff(b[order]) != 0)
        starts = np.flatnonzero(np.concatenate(([True], boundary)))
        rows = order[starts]
        return run[rows], a[rows], b[rows], np.add.reduceat(count[order], starts)
    key = (run.astype(np.int64) << (2 * width)) | (a.astype(np.int64) << width) | b
    if count is None:  # sorting the keys themselves is several times faster than sorting indices
        key, count = np.unique(key, return_counts=True)
    else:
        order = np.argsort(key, kind="stable")  # parts are sorted runs already: merging them is cheap
        key, count = key[order], count[order]
        starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        key, count = key[starts], np.add.reduceat(count, starts)
    mask = (1 << width) - 1
    return ((key >> (2 * width)).astype(np.int32), ((key >> width) & mask).astype(np.int32),
            (key & mask).astype(np.int32), count.astype(np.int64))
