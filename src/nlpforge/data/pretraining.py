"""BERT's pre-training instances and masks, from a corpus's sentence table: documents -> sentences ->
segment pairs that fill max_seq_length (`build_instances`, cached beside the table), and a collate that
tokenizes a pair, truncates it, and masks it anew every epoch (`MaskingCollate`). The masked-LM task
(nlpforge.tasks.masked_lm) trains and evaluates on them."""
import hashlib
import random
from dataclasses import dataclass

import numpy as np

from nlpforge.data.batching import pad_batch
from nlpforge.settings import cache_root


# --- instances ------------------------------------------------------------------------------------------
@dataclass
class Instances:
    """Pre-training instances as sentence-row ranges: A is rows [a_start, a_end), B is [b_start, b_end)."""

    a_start: np.ndarray
    a_end: np.ndarray
    b_start: np.ndarray
    b_end: np.ndarray
    random_next: np.ndarray   # 1 where B comes from another document (NSP's "not next")
    tokens: np.ndarray        # estimated tokens, what batches are grouped by

    def __len__(self):
        return len(self.a_start)

    def take(self, count: int) -> "Instances":
        return Instances(*(array[:count] for array in (self.a_start, self.a_end, self.b_start, self.b_end,
                                                       self.random_next, self.tokens)))


def build_instances(spans: list[tuple[int, int]], tokens, max_seq_length: int, short_seq_prob: float, nsp: bool,
                    seed: int) -> Instances:
    """BERT's create_instances_from_document over documents given as sentence-row spans.

    `tokens` holds each sentence's (estimated) token count. A chunk of sentences is gathered until it
    reaches the target length, then split at a random point into A and B; with NSP, B is replaced half
    of the time by sentences from a random other document, and the chunk's unused sentences go back to
    be read again. A one-sentence chunk that is to be a real pair takes the next sentence too, or at a
    document's end the one before (a one-sentence document is then left out).
    """
    rng = random.Random(seed)
    tokens = [int(t) for t in tokens]
    max_tokens = max_seq_length - (3 if nsp else 2)
    rows: list[tuple] = []
    for number, (start, end) in enumerate(spans):
        target = rng.randint(2, max_tokens) if rng.random() < short_seq_prob else max_tokens
        chunk_start, length, i = start, 0, start
        while i < end:
            length += tokens[i]
            if i == end - 1 or length >= target:
                size = i + 1 - chunk_start
                if not nsp:
                    rows.append((chunk_start, i + 1, i + 1, i + 1, 0, length))
                else:
                    random_next = len(spans) > 1 and rng.random() < 0.5
                    if size == 1 and not random_next:
                        # BERT makes every one-sentence chunk a random pair, which tilts NSP's labels
                        # towards "not next"; a real pair takes the next sentence, or the one before
                        # at a document's end. A one-sentence document cannot be a real pair: left out.
                        if i + 1 < end:
                            i += 1
                            length += tokens[i]
                        elif chunk_start > start:
                            chunk_start -= 1
                            length += tokens[chunk_start]
                        else:
                            chunk_start, length = i + 1, 0
                            i += 1
                            continue
                        size = 2
                    a_end = chunk_start + (rng.randint(1, size - 1) if size >= 2 else 1)
                    a_tokens = sum(tokens[chunk_start:a_end])
                    if random_next:
                        other = number
                        for _ in range(10):
                            other = rng.randrange(len(spans))
                            if other != number:
                                break
                        o_start, o_end = spans[other]
                        b_start = b_end = rng.randrange(o_start, o_end)
                        b_tokens = 0
                        while b_end < o_end and (b_end == b_start or b_tokens < target - a_tokens):
                            b_tokens += tokens[b_end]
                            b_end += 1
                        rows.append((chunk_start, a_end, b_start, b_end, 1, a_tokens + b_tokens))
                        i = a_end - 1  # the chunk's sentences after A are read again
                    else:
                        rows.append((chunk_start, a_end, a_end, i + 1, 0, length))
                chunk_start, length = i + 1, 0
            i += 1
    columns = np.array(rows, dtype=np.int64).reshape(-1, 6).T
    return Instances(*columns[:4], columns[4].astype(np.int8), np.minimum(columns[5], max_seq_length))


def document_spans(documents: np.ndarray) -> list[tuple[int, int]]:
    """(first row, end row) of each document, from the document number of every sentence row."""
    if len(documents) == 0:
        return []
    starts = np.flatnonzero(np.diff(documents)) + 1
    bounds = np.concatenate([[0], starts, [len(documents)]])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


class InstanceDataset:
    """Instance index -> (index, A text, B text or "", 1 if B is from another document)."""

    def __init__(self, sentences, instances: Instances):
        self.sentences, self.instances = sentences, instances

    def __len__(self):
        return len(self.instances)

    def _text(self, start: int, end: int) -> str:
        return " ".join(self.sentences.slice(start, end - start).to_pylist()) if end > start else ""

    def __getitem__(self, index):
        i = self.instances
        return (int(index), self._text(int(i.a_start[index]), int(i.a_end[index])),
                self._text(int(i.b_start[index]), int(i.b_end[index])), int(i.random_next[index]))


# --- masking ----------------------------------------------------------------------------------------------
def truncate_pair(a: list, b: list, max_tokens: int, rng: np.random.Generator) -> tuple[slice, slice]:
    """BERT's truncate_seq_pair as slices: trim the longer segment, from its front or back at random."""
    a_lo, a_hi, b_lo, b_hi = 0, len(a), 0, len(b)
    while (a_hi - a_lo) + (b_hi - b_lo) > max_tokens:
        excess = (a_hi - a_lo) + (b_hi - b_lo) - max_tokens
        a_longer = a_hi - a_lo > b_hi - b_lo
        gap = abs((a_hi - a_lo) - (b_hi - b_lo))
        cut = max(1, min(excess, gap))  # one token at a time in BERT; binomially split here, same distribution
        front = int(rng.binomial(cut, 0.5))
        if a_longer:
            a_lo, a_hi = a_lo + front, a_hi - (cut - front)
        else:
            b_lo, b_hi = b_lo + front, b_hi - (cut - front)
    return slice(a_lo, a_hi), slice(b_lo, b_hi)


def mask_tokens(ids: np.ndarray, words: np.ndarray, rng: np.random.Generator, masked_lm_prob: float,
                max_predictions: int, mask_id: int, random_ids: np.ndarray, whole_word: bool):
    """(masked input ids, labels with -100 where nothing is predicted), BERT's 80/10/10 rule.

    `words` numbers each position's word (-1 for [CLS]/[SEP], which are never masked)."""
    candidates = np.flatnonzero(words >= 0)
    labels = np.full(len(ids), -100, dtype=np.int64)
    if len(candidates) == 0:
        return ids, labels
    if whole_word:
        cuts = np.flatnonzero(np.diff(words[candidates]) != 0) + 1
        groups = np.split(candidates, cuts)
    else:
        groups = [candidates[i:i + 1] for i in range(len(candidates))]
    wanted = min(max_predictions, max(1, int(round(len(candidates) * masked_lm_prob))))
    chosen: list = []
    for index in rng.permutation(len(groups)):
        if len(chosen) >= wanted:
            break
        if len(chosen) + len(groups[index]) > wanted:
            continue
        chosen.extend(groups[index].tolist())
    chosen = np.array(sorted(chosen), dtype=np.int64)
    labels[chosen] = ids[chosen]
    masked = ids.copy()
    draw = rng.random(len(chosen))
    masked[chosen[draw < 0.8]] = mask_id
    replaced = chosen[draw >= 0.9]
    masked[replaced] = rng.choice(random_ids, size=len(replaced))
    return masked, labels


class MaskingCollate:
    """Examples -> a pre-training batch: tokenize, truncate the pair, add [CLS]/[SEP], mask (new masks each
    epoch, drawn from seed, epoch and instance), pad. `features(examples, epoch)` gives the rows unpadded;
    `settings` are the task's MaskedLmData (nsp, masked_lm_prob, max_predictions_per_seq, whole_word_masking)."""

    def __init__(self, tokenizer, max_seq_length: int, settings, seed: int):
        self.tokenizer, self.max_seq_length, self.settings, self.seed = tokenizer, max_seq_length, settings, seed
        self.epoch = 0
        self.pad_id = tokenizer.pad_token_id or 0
        special = set(tokenizer.all_special_ids)
        self.random_ids = np.array([i for i in range(len(tokenizer)) if i not in special], dtype=np.int64)

    def features(self, examples, epoch: int) -> list[dict]:
        indices, a_texts, b_texts, random_next = zip(*examples)
        a = self.tokenizer(list(a_texts), add_special_tokens=False, verbose=False)
        b = self.tokenizer([t or "" for t in b_texts], add_special_tokens=False, verbose=False)
        nsp = self.settings.nsp
        max_tokens = self.max_seq_length - (3 if nsp else 2)
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        rows = []
        for k, index in enumerate(indices):
            rng = np.random.default_rng([self.seed, epoch + 1, index])
            a_ids, b_ids = a["input_ids"][k], b["input_ids"][k] if nsp else []
            a_words = [-1 if w is None else w for w in a.word_ids(k)]
            b_words = [-1 if w is None else w + 1_000_000 for w in b.word_ids(k)] if nsp else []
            keep_a, keep_b = truncate_pair(a_ids, b_ids, max_tokens, rng)
            ids = [cls, *a_ids[keep_a], sep] + ([*b_ids[keep_b], sep] if nsp else [])
            words = [-1, *a_words[keep_a], -1] + ([*b_words[keep_b], -1] if nsp else [])
            types = [0] * (len(a_ids[keep_a]) + 2) + ([1] * (len(b_ids[keep_b]) + 1) if nsp else [])
            masked, labels = mask_tokens(np.array(ids, dtype=np.int64), np.array(words, dtype=np.int64), rng,
                                         self.settings.masked_lm_prob, self.settings.max_predictions_per_seq,
                                         self.tokenizer.mask_token_id, self.random_ids,
                                         self.settings.whole_word_masking)
            row = {"input_ids": masked.tolist(), "token_type_ids": types, "labels": labels.tolist()}
            if nsp:
                row["next_sentence_label"] = random_next[k]
            rows.append(row)
        return rows

    def __call__(self, examples) -> dict:
        return pad_batch(self.features(examples, self.epoch), self.pad_id)


# --- sizes and the cache ---------------------------------------------------------------------------------
def chars_per_token(tokenizer, sentences, sample: int = 2000) -> float:
    """Characters per token, measured on the first sentences: the estimate instances are sized with."""
    texts = sentences.slice(0, sample).to_pylist()
    tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"])
    return max(1.0, sum(len(t) for t in texts) / max(tokens, 1))


def sentence_tokens(sentences, ratio: float) -> np.ndarray:
    """Estimated tokens of every sentence: characters / characters per token, at least 1."""
    import pyarrow.compute as pc

    lengths = np.concatenate([pc.utf8_length(chunk).to_numpy(zero_copy_only=False) for chunk in sentences.chunks])
    return np.maximum(1, np.round(lengths / ratio)).astype(np.int64)


def cached_instances(corpus_file, spans, tokens, max_seq_length: int, settings, seed: int) -> Instances:
    """`build_instances`, kept beside the corpus's sentence table: a restart does not redo it."""
    key = hashlib.sha256(repr((corpus_file.name, len(spans), spans[:1], spans[-1:], max_seq_length, settings.nsp,
                               settings.short_seq_prob, seed, int(tokens.sum()))).encode()).hexdigest()[:24]
    path = cache_root() / "sentences" / f"{corpus_file.stem}-instances-{key}.npz"
    if path.exists():
        saved = np.load(path)
        return Instances(*(saved[name] for name in ("a_start", "a_end", "b_start", "b_end", "random_next", "tokens")))
    plan = build_instances(spans, tokens, max_seq_length, settings.short_seq_prob, settings.nsp, seed)
    temporary = path.with_suffix(".tmp.npz")
    np.savez(temporary, **plan.__dict__)
    temporary.replace(path)
    return plan
