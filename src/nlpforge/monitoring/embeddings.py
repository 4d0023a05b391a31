"""Embedding drift: a compact PCA summary of the baseline's embeddings, and an MMD test against a window.

    summary = summarize(embeddings, components=8, keep=500, seed=0)   # mean, components, projected sample
    save_summary(summary, "baseline/embeddings.safetensors")
    drift = embedding_drift(summary["projected"], project(summary, window_embeddings), permutations=100)

The test is the maximum mean discrepancy (MMD², unbiased) with an RBF kernel whose bandwidth is the median
distance between the pooled points (the median heuristic), and a permutation test on the pooled points:
p = (k + 1) / (n + 1), where k of n shuffles reach the observed MMD². Each side is capped at `keep` points
(a seeded sample), so that a run stays fast on a large window.
"""
from dataclasses import dataclass

import numpy as np

SUMMARY_KEYS = ("mean", "components", "explained_variance_ratio", "projected")


@dataclass
class EmbeddingDrift:
    drift: bool
    mmd2: float
    p_value: float
    bandwidth: float
    baseline_count: int
    window_count: int

    def description(self) -> str:
        return (f"The window's embeddings differ from the baseline's: MMD² {self.mmd2:.4f} (RBF kernel, bandwidth "
                f"{self.bandwidth:.3f}), permutation p = {self.p_value:.4f} over {self.baseline_count} baseline and "
                f"{self.window_count} window texts")


def _capped(points: np.ndarray, keep: int, rng: np.random.Generator) -> np.ndarray:
    return points if len(points) <= keep else points[np.sort(rng.choice(len(points), keep, replace=False))]


def summarize(embeddings: np.ndarray, components: int = 8, keep: int = 500, seed: int = 0) -> dict[str, np.ndarray]:
    """PCA of (N, H) embeddings: the mean (H,), the top components (k, H) and a projected sample (≤keep, k)."""
    mean = embeddings.mean(axis=0)
    centered = embeddings - mean
    _, singular, directions = np.linalg.svd(centered, full_matrices=False)
    k = max(1, min(components, len(directions)))
    variance = singular ** 2
    ratio = variance[:k] / variance.sum() if variance.sum() > 0 else np.zeros(k)
    summary = {"mean": mean.astype(np.float32), "components": directions[:k].astype(np.float32),
               "explained_variance_ratio": ratio.astype(np.float32)}
    summary["projected"] = _capped(project(summary, embeddings), keep, np.random.default_rng(seed))
    return summary


def project(summary: dict, embeddings: np.ndarray) -> np.ndarray:
    """(N, H) embeddings onto the summary's components: (N, k)."""
    return ((embeddings - summary["mean"]) @ summary["components"].T).astype(np.float32)


def save_summary(summary: dict, path) -> None:
    from safetensors.numpy import save_file

    save_file({key: np.ascontiguousarray(summary[key]) for key in SUMMARY_KEYS}, str(path))


def load_summary(path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def _mmd2(kernel: np.ndarray, side: np.ndarray) -> float:
    """Unbiased MMD² of the points marked 0 against those marked 1, from the pooled kernel matrix."""
    x, y = side == 0, side == 1
    m, n = x.sum(), y.sum()
    xx = (kernel[np.ix_(x, x)].sum() - np.trace(kernel[np.ix_(x, x)])) / (m * (m - 1))
    yy = (kernel[np.ix_(y, y)].sum() - np.trace(kernel[np.ix_(y, y)])) / (n * (n - 1))
    return float(xx + yy - 2 * kernel[np.ix_(x, y)].mean())


def embedding_drift(baseline: np.ndarray, window: np.ndarray, *, permutations: int = 100, alpha: float = 0.05,
                    keep: int = 500, seed: int = 0) -> EmbeddingDrift | None:
    """MMD permutation test between (N, k) baseline and (M, k) window points; None with under 2 on a side."""
    rng = np.random.default_rng(seed)
    baseline, window = _capped(baseline, keep, rng), _capped(window, keep, rng)
    if len(baseline) < 2 or len(window) < 2:
        return None
    pooled = np.concatenate([baseline, window]).astype(np.float64)
    squared = np.square(pooled).sum(axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2 * pooled @ pooled.T, 0.0)  # (N+M, N+M)
    upper = distances[np.triu_indices(len(pooled), k=1)]
    bandwidth = float(np.sqrt(np.median(upper))) or 1.0
    kernel = np.exp(-distances / (2 * bandwidth ** 2))
    side = np.array([0] * len(baseline) + [1] * len(window))
    observed = _mmd2(kernel, side)
    exceed = sum(_mmd2(kernel, rng.permutation(side)) >= observed for _ in range(permutations))
    p_value = (exceed + 1) / (permutations + 1)
    return EmbeddingDrift(drift=p_value < alpha, mmd2=observed, p_value=p_value, bandwidth=bandwidth,
                          baseline_count=len(baseline), window_count=len(window))
