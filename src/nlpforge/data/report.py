"""The data report printed before training: rows, labels, token lengths, what was dropped."""
import numpy as np


def token_length_stats(lengths, max_seq_length: int) -> dict:
    lengths = np.asarray(lengths)
    if lengths.size == 0:
        return {}
    percentiles = {f"p{q}": int(np.percentile(lengths, q)) for q in (50, 90, 95, 99)}
    return {**percentiles, "max": int(lengths.max()), "mean": float(lengths.mean()),
            "truncated_share": float((lengths > max_seq_length).mean())}


def render_data_report(data, train_lengths, max_seq_length: int) -> str:
    lines = ["data report"]
    for f in data.files:
        dropped = []
        if f.empty_dropped:
            dropped.append(f"{f.empty_dropped} empty")
        if f.duplicates_dropped:
            dropped.append(f"{f.duplicates_dropped} duplicate")
        if f.missing_label_dropped:
            dropped.append(f"{f.missing_label_dropped} unlabelled")
        line = f"  {f.path}: {f.rows} rows" + (f", dropped {', '.join(dropped)}" if dropped else ", none dropped")
        if not f.duplicates_checked:
            line += " (lazy: duplicates not checked)"
        if f.replaced_bytes:
            line += f"; {f.replaced_bytes} non-UTF-8 bytes replaced with U+FFFD"
        lines.append(line)
    source = " (stratified split of the training file)" if data.split_from_train else ""
    lines.append(f"  train {len(data.train)} rows, validation {len(data.validation)} rows{source}")
    for name, split in (("train", data.train), ("validation", data.validation)):
        counts = data.label_counts(split)
        total = max(1, sum(counts.values()))
        lines.append(f"  {name} labels: " + "  ".join(f"{k}: {v} ({100 * v / total:.0f}%)" for k, v in counts.items()))
    stats = token_length_stats(train_lengths, max_seq_length)
    if stats:
        lines.append(f"  train tokens per row: p50 {stats['p50']}  p90 {stats['p90']}  p95 {stats['p95']}  "
                     f"p99 {stats['p99']}  max {stats['max']}; {100 * stats['truncated_share']:.1f}% "
                     f"longer than max_seq_length {max_seq_length}")
    return "\n".join(lines)
