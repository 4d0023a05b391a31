"""Model Monitor's content drift check, measured: false alarms, detection and sensitivity, next to other tests.

Every window is scored by four tests against the same baseline sample:

    nlpforge             `content_drift` as `nlpforge monitor run` calls it: TF-IDF + logistic regression, a
                         permutation test on pooled texts for windows of up to 1,000 texts (p < 0.05), held-out
                         AUC > 0.55 above that
    Evidently, AUC>0.55  Evidently's text content drift (its legacy `calculate_text_drift_score`, re-implemented:
                         TF-IDF less English stop words, an L1 SGD classifier, one 50/50 split, drift when the test
                         half's AUC > 0.55), its default when the reference holds more than 1,000 texts
    Evidently, random    the same classifier, drift when its AUC beats the 95th percentile of 1,000 random scorings
                         of the same test half ("bootstrap=True"), its default for references of up to 1,000 texts
    KS on length         two-sample Kolmogorov-Smirnov test on the length in characters, p < 0.05

Data (../shared/data/amazon_reviews, review_body): each window i draws its own random halves A and B of the
Digital Video train file (seed i); the baseline is a sample of half A, as `nlpforge monitor baseline` keeps one
(texts.jsonl). False alarms: windows from half B. Detection: windows from other_categories.csv (450 reviews of
software, video games and gift cards; drawn with replacement where a window needs more). Sensitivity: windows of
half B with 10/25/50% of other-category reviews mixed in.

The false-alarm and detection rows always get `--windows` windows; the sensitivity rows get what is left of
`--budget-minutes` after them (at least `--min-windows`), measured from the throughput of the first rows. BLAS is
held to one thread per worker: on a shared 2-core machine OpenBLAS's own threads made each logistic regression
fit some 80x slower. The baseline sample is 1,000 texts, not the monitor's 5,000, to fit the budget there: a
permutation-tested window of 1,000 texts took about 25 s against 1,000 baseline texts and 76 s against 2,000.

    .venv/bin/python bench/monitor.py [--windows 20] [--baseline-size 1000] [--permutations 100] [--workers 2]
    .venv/bin/python bench/monitor.py --quick          # 4 windows each, a 500-text baseline: a few minutes
"""
import argparse
import json
import math
import random
import sys
import time
import warnings
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402

from nlpforge.data.readers import read_table  # noqa: E402
from nlpforge.monitoring.content import content_drift  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon_reviews"
RESULTS = Path("bench/results/monitor.json")
OTHER_CATEGORIES = ("Digital_Software", "Digital_Video_Games", "Gift Card")
METHODS = ("nlpforge", "Evidently, AUC>0.55", "Evidently, random", "KS on length")
_texts: dict = {}


def load_texts() -> dict:
    """The review bodies of the Digital Video train file and of the other categories (empty ones dropped)."""
    train = read_table(DATA / "digital_video_train.csv", ["review_body"]).frame
    other = read_table(DATA / "other_categories.csv", ["review_body", "product_category"]).frame
    other = other[other["product_category"].isin(OTHER_CATEGORIES)]  # one review runs over two rows in the file

    def present(column):
        return [str(t) for t in column if isinstance(t, str) and t.strip()]

    return {"in_domain": present(train["review_body"]), "other": present(other["review_body"])}


def draw(rng: random.Random, pool: list, count: int) -> list:
    return rng.sample(pool, count) if count <= len(pool) else [rng.choice(pool) for _ in range(count)]


def window_texts(kind: str, size: int, share: float, seed: int, baseline_size: int) -> tuple[list, list]:
    """The baseline sample and the window of window `seed` of one experiment."""
    rng = random.Random(seed)
    in_domain = list(_texts["in_domain"])
    rng.shuffle(in_domain)
    half_a, half_b = in_domain[: len(in_domain) // 2], in_domain[len(in_domain) // 2:]
    baseline = rng.sample(half_a, baseline_size)
    outside = round(size * share) if kind == "mixed" else (size if kind == "other" else 0)
    window = rng.sample(half_b, size - outside) + draw(rng, _texts["other"], outside)
    rng.shuffle(window)
    return baseline, window


def evidently_text_drift(baseline: list, window: list, seed: int) -> tuple[float, bool, bool]:
    """Evidently's domain classifier: test-half AUC, drift by AUC > 0.55, drift by the random-scoring percentile."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    texts, labels = baseline + window, np.array([0] * len(baseline) + [1] * len(window))
    train_x, test_x, train_y, test_y = train_test_split(texts, labels, test_size=0.5, random_state=seed, shuffle=True)
    vectorizer = TfidfVectorizer(sublinear_tf=True, max_df=0.5, stop_words="english")
    model = SGDClassifier(alpha=1e-4, max_iter=50, penalty="l1", loss="modified_huber", random_state=seed)
    with warnings.catch_warnings():  # Evidently's 50 epochs do not always converge; its results stand as they are
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(vectorizer.fit_transform(train_x), train_y)
    auc = float(roc_auc_score(test_y, model.predict_proba(vectorizer.transform(test_x))[:, 1]))
    return auc, auc > 0.55, auc > np.percentile(random_aucs(test_y, 1000, seed), 95)


def random_aucs(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """ROC AUCs of `count` uniform random scorings of `labels` (rank-sum form; random scores have no ties)."""
    ranks = np.random.default_rng(seed).random((count, len(labels))).argsort(axis=1).argsort(axis=1) + 1
    positives = labels == 1
    n1, n0 = positives.sum(), (~positives).sum()
    return (ranks[:, positives].sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def score_window(task: tuple) -> dict:
    """All four tests on one window; each test's verdict and the seconds the nlpforge test took."""
    from scipy.stats import ks_2samp
    from threadpoolctl import threadpool_limits

    kind, size, share, seed, baseline_size, permutations = task
    baseline, window = window_texts(kind, size, share, seed, baseline_size)
    with threadpool_limits(1, user_api="blas"):
        started = time.perf_counter()
        ours = content_drift(baseline, window, permutations=permutations, seed=seed)
        seconds = time.perf_counter() - started
        auc, by_threshold, by_percentile = evidently_text_drift(baseline, window, seed)
    lengths = ks_2samp([len(t) for t in baseline], [len(t) for t in window]).pvalue
    return {"kind": kind, "size": size, "share": share, "seed": seed, "seconds": seconds, "method": ours.method,
            "auc": ours.auc, "p_value": ours.p_value, "evidently_auc": auc, "length_ks_p": float(lengths),
            "drift": {"nlpforge": bool(ours.drift), "Evidently, AUC>0.55": bool(by_threshold),
                      "Evidently, random": bool(by_percentile), "KS on length": bool(lengths < 0.05)}}


def _start_worker(texts: dict) -> None:
    _texts.update(texts)


def run_windows(pool: Pool, cells: list, windows: int, args) -> list:
    """`windows` windows of each (kind, size, share) cell, spread over the workers."""
    tasks = [(kind, size, share, seed, args.baseline_size, args.permutations)
             for kind, size, share in cells for seed in range(windows)]
    rows, started = [], time.perf_counter()
    for row in pool.imap_unordered(score_window, tasks):
        rows.append(row)
        if len(rows) % 10 == 0 or len(rows) == len(tasks):
            print(f"  {len(rows)}/{len(tasks)} windows, {time.perf_counter() - started:.0f} s", flush=True)
    return rows


def summarise(rows: list) -> list:
    """One line per (kind, size, share): windows, the share flagged by each method, mean AUCs and seconds."""
    cells: dict = {}
    for row in rows:
        cells.setdefault((row["kind"], row["size"], row["share"]), []).append(row)
    return [{"kind": kind, "size": size, "share": share, "windows": len(group), "path": group[0]["method"],
             "flagged": {m: sum(r["drift"][m] for r in group) for m in METHODS},
             "mean_auc": float(np.mean([r["auc"] for r in group])),
             "mean_evidently_auc": float(np.mean([r["evidently_auc"] for r in group])),
             "seconds_per_window": float(np.mean([r["seconds"] for r in group]))}
            for (kind, size, share), group in sorted(cells.items(), key=lambda cell: cell[0][1:])]


def table(title: str, lines: list, label) -> str:
    out = [f"**{title}**", "", "| window | texts | nlpforge test | " + " | ".join(METHODS) +
           " | mean AUC (nlpforge / Evidently) | s per window (nlpforge) |",
           "|---|---|---|" + "---|" * len(METHODS) + "---|---|"]
    for line in lines:
        flagged = " | ".join(f"{line['flagged'][m]}/{line['windows']}" for m in METHODS)
        out.append(f"| {label(line)} | {line['size']:,} | {line['path']} | {flagged} | "
                   f"{line['mean_auc']:.3f} / {line['mean_evidently_auc']:.3f} | {line['seconds_per_window']:.1f} |")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=20, help="windows per false-alarm and detection row")
    parser.add_argument("--min-windows", type=int, default=5, help="fewest windows per sensitivity row")
    parser.add_argument("--baseline-size", type=int, default=1000, help="baseline texts (the monitor keeps 5000)")
    parser.add_argument("--permutations", type=int, default=100)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000], help="window sizes of every row")
    parser.add_argument("--large-size", type=int, default=1500, help="a false-alarm window on the held-out AUC path")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--budget-minutes", type=float, default=25)
    parser.add_argument("--quick", action="store_true", help="4 windows per row and a 500-text baseline")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    if args.quick:
        args.windows, args.min_windows, args.baseline_size = 4, 4, 500
    if not DATA.is_dir():
        sys.exit(f"needs {DATA}")
    texts = load_texts()
    started = time.perf_counter()
    with Pool(args.workers, initializer=_start_worker, initargs=(texts,)) as pool:
        first = [("same", size, 0.0) for size in [*args.sizes, args.large_size]] + \
                [("other", size, 1.0) for size in args.sizes]
        rows = run_windows(pool, first, args.windows, args)
        spent = time.perf_counter() - started
        per_size = {size: np.mean([r["seconds"] for r in rows if r["size"] == size]) for size in args.sizes}
        per_round = sum(per_size.values()) * len(args.shares) * spent / sum(r["seconds"] for r in rows)
        left = args.budget_minutes * 60 - spent
        sensitivity = max(args.min_windows, min(args.windows, math.floor(left / per_round)))
        print(f"false alarms and detection: {spent:.0f} s; {sensitivity} windows per sensitivity row", flush=True)
        rows += run_windows(pool, [("mixed", size, share) for share in args.shares for size in args.sizes],
                            sensitivity, args)
    wall = time.perf_counter() - started
    lines = summarise(rows)
    machine = describe()
    report = "\n\n".join([
        table("False alarms: baseline and window from disjoint random halves of the Digital Video train file",
              [line for line in lines if line["kind"] == "same"], lambda line: "same distribution"),
        table("Detection: windows of other_categories.csv (software, video games, gift cards)",
              [line for line in lines if line["kind"] == "other"], lambda line: "other categories"),
        table("Sensitivity: Digital Video windows with other-category reviews mixed in",
              [line for line in lines if line["kind"] == "mixed"],
              lambda line: f"{100 * line['share']:.0f}% other")])
    print()
    print(f"machine: {machine}")
    print(f"baseline {args.baseline_size:,} texts, {args.permutations} permutations, {args.workers} workers, "
          f"wall {wall / 60:.1f} min")
    print()
    print(report)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({
        "machine": machine, "wall_seconds": wall, "baseline_size": args.baseline_size,
        "permutations": args.permutations, "workers": args.workers, "windows": args.windows,
        "sensitivity_windows": sensitivity, "other_texts": len(texts["other"]),
        "in_domain_texts": len(texts["in_domain"]),
        "summary": lines,
        "windows_scored": sorted(rows, key=lambda r: (r["kind"], r["size"], r["share"], r["seed"]))}, indent=1) + "\n")


if __name__ == "__main__":
    main()
