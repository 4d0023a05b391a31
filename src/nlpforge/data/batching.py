"""Tokenized examples in, padded tensor batches out: dynamic padding and length grouping.

Padding every batch to its own longest row (not to `max_seq_length`) and grouping rows of
similar length into the same batch cuts the padding that a transformer would compute on.

    encoded = encode(tokenizer, texts, max_seq_length=128)       # list of dicts of int lists
    sampler = LengthGroupedBatchSampler(lengths, batch_size=32, seed=0)
    batch = pad_batch([encoded[i] for i in indices], pad_id=0)   # dict of (B, T) tensors
"""
import numpy as np
import torch


def encode(tokenizer, texts, max_seq_length: int) -> list[dict]:
    """Tokenize single texts or (text, text_pair) tuples, truncated to `max_seq_length`."""
    if not texts:
        return []
    if isinstance(texts[0], tuple):
        first, second = zip(*texts)
        encoded = tokenizer(list(first), list(second), truncation="longest_first", max_length=max_seq_length)
    else:
        encoded = tokenizer(list(texts), truncation=True, max_length=max_seq_length)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in encoded]
    return [{k: encoded[k][i] for k in keys} for i in range(len(texts))]


def pad_batch(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad `rows` to the longest one; returns (B, T) long tensors, plus `labels` (B,) if present."""
    longest = max(len(r["input_ids"]) for r in rows)
    batch = {}
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        if key not in rows[0]:
            continue
        fill = pad_id if key == "input_ids" else 0
        batch[key] = torch.tensor([r[key] + [fill] * (longest - len(r[key])) for r in rows], dtype=torch.long)
    if "attention_mask" not in batch:
        batch["attention_mask"] = (batch["input_ids"] != pad_id).long()
    if "labels" in rows[0]:
        batch["labels"] = torch.tensor([r["labels"] for r in rows], dtype=torch.long)
    return batch


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


def sorted_batches(lengths, batch_size: int) -> list[list[int]]:
    """Batches of similar length in a fixed order, for inference; callers restore the order."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
