"""Tokenized examples in, padded batches out: dynamic padding and length grouping.

Padding every batch to its own longest row (not to `max_seq_length`) and grouping rows of
similar length into the same batch cuts the padding that a transformer would compute on.

    encoded = encode(tokenizer, texts, max_seq_length=128)      # list of dicts of int lists
    for indices in length_grouped_batches(lengths, batch_size=32, seed=0): ...     # training
    for indices in inference_batches(lengths, max_rows=32, max_tokens=4096): ...   # prediction
    batch = pad_batch([encoded[i] for i in indices], pad_id=0)  # dict of (B, T) tensors
"""
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch loads in pad_batch, so that the CLI's help and its input checks start without it
    import torch

MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def encode(tokenizer, texts, max_seq_length: int, **options) -> list[dict]:
    """Tokenize single texts or (text, text_pair) tuples, truncated to `max_seq_length`.

    Extra tokenizer `options` (e.g. return_offsets_mapping=True) add their keys to each row."""
    if not len(texts):
        return []
    if isinstance(texts[0], tuple):
        first, second = zip(*texts)
        encoded = tokenizer(list(first), list(second), truncation="longest_first", max_length=max_seq_length,
                            **options)
    else:
        encoded = tokenizer(list(texts), truncation=True, max_length=max_seq_length, **options)
    keys = [k for k in (*MODEL_INPUTS, *(k for k in encoded if k not in MODEL_INPUTS)) if k in encoded]
    return [{k: encoded[k][i] for k in keys} for i in range(len(texts))]


def pad_arrays(rows: list[dict], pad_id: int, keys=MODEL_INPUTS) -> dict[str, np.ndarray]:
    """Pad `keys` of `rows` to the longest row: (B, T) int64 arrays for lists (input_ids with `pad_id`,
    token labels with -100, the rest with 0), (B,) for numbers; an attention mask is made when missing."""
    longest = max(len(r["input_ids"]) for r in rows)
    arrays = {}
    for key in keys:
        if key not in rows[0]:
            continue
        if not isinstance(rows[0][key], (list, tuple, np.ndarray)):
            arrays[key] = np.array([r[key] for r in rows], dtype=np.int64)  # (B,)
            continue
        fill = pad_id if key == "input_ids" else -100 if key == "labels" else 0
        array = np.full((len(rows), longest), fill, dtype=np.int64)  # (B, T)
        for i, row in enumerate(rows):
            array[i, :len(row[key])] = row[key]
        arrays[key] = array
    if "attention_mask" not in arrays:
        mask = np.zeros((len(rows), longest), dtype=np.int64)
        for i, row in enumerate(rows):
            mask[i, :len(row["input_ids"])] = 1
        arrays["attention_mask"] = mask
    return arrays


def pad_batch(rows: list[dict], pad_id: int) -> "dict[str, torch.Tensor]":
    """Every key of `rows` padded (see `pad_arrays`) as tensors: the model inputs and the labels."""
    import torch

    return {k: torch.from_numpy(v) for k, v in pad_arrays(rows, pad_id, keys=list(rows[0])).items()}


def length_grouped_batches(lengths, batch_size: int, seed: int, group_size: int = 50) -> list[np.ndarray]:
    """One epoch of batches (arrays of row indices): shuffle, sort within groups of `group_size`
    batches, shuffle the batches. Randomness comes only from `seed`, so an epoch's batches can be
    rebuilt exactly; arrays, not lists of ints, keep a million-row epoch small in memory.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    lengths = np.asarray(lengths)
    span = batch_size * group_size
    batches = []
    for start in range(0, len(order), span):
        group = order[start:start + span]
        group = group[np.argsort(-lengths[group], kind="stable")]
        batches.extend(group[i:i + batch_size] for i in range(0, len(group), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


# What one more forward call costs, in padded tokens: a batch of 1 row of 16 tokens is about the
# same work as adding 16 padded tokens to a bigger batch.
CALL_TOKENS = 16


def inference_batches(lengths, max_rows: int, max_tokens: int | None = None) -> list[list[int]]:
    """Row indices in batches of similar length, for prediction; callers restore the order.

    A batch holds at most `max_rows` rows and, with `max_tokens`, at most that many padded tokens
    (rows x longest row), unless it is one row. On a CPU a batch costs about rows x its longest row,
    so the length-sorted rows are cut where that padded total, plus CALL_TOKENS for each call, is
    smallest (a dynamic programme over the cut points), not greedily: a greedy cut pads a run of
    short rows to the first long one that still fits.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    ordered = [lengths[i] for i in order]
    cost = [0] + [float("inf")] * len(order)  # cost[j]: the cheapest way to batch the first j rows
    start = [0] * (len(order) + 1)  # where the last batch of that way starts
    for end in range(1, len(order) + 1):
        longest = ordered[end - 1]
        for first in range(end - 1, max(end - max_rows, 0) - 1, -1):
            rows = end - first
            if max_tokens is not None and rows > 1 and rows * longest > max_tokens:
                break
            total = cost[first] + rows * longest + CALL_TOKENS
            if total < cost[end]:
                cost[end], start[end] = total, first
    batches, end = [], len(order)
    while end:
        batches.append(order[start[end]:end])
        end = start[end]
    return batches[::-1]
