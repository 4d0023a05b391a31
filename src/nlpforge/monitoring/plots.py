"""PNG plots of a monitoring run, for its HTML report (matplotlib, Agg backend: no display needed).

    plots = write_plots(report_folder, baseline_stats, window_descriptors, window_labels, projections)
    # [{"title": "length_chars", "file": "descriptor_length_chars.png"}, ...]

Each numeric descriptor gets the baseline's bucket shares beside the window's on the same edges (widened
to the window's own min and max), the predicted labels get side-by-side bars, and the embeddings a
scatter of their first two PCA components.
"""
from pathlib import Path

import numpy as np

from nlpforge.monitoring.statistics import LABEL_FEATURE, bucket_edges, label_shares

COLOURS = {"baseline": "#4c72b0", "window": "#dd8452"}


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.subplots(figsize=(6, 3.2), dpi=100)


def _save(plt, figure, axes, path: Path, title: str) -> None:
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _descriptor(path: Path, feature: dict, values: np.ndarray) -> None:
    edges = bucket_edges(feature)
    baseline = np.array([b["count"] for b in feature["numerical_statistics"]["distribution"]["kll"]["buckets"]])
    if len(values):
        edges = np.unique(np.concatenate([[min(values.min(), edges[0])], edges, [max(values.max(), edges[-1])]]))
        baseline = np.histogram(_bucket_points(feature), bins=edges, weights=_bucket_weights(feature))[0]
    window = np.histogram(values, bins=edges)[0] if len(edges) > 1 else np.array([len(values)])
    plt, (figure, axes) = _figure()
    if len(edges) > 1:
        widths = np.diff(edges)
        axes.bar(edges[:-1], baseline / max(baseline.sum(), 1), width=widths, align="edge", alpha=0.5,
                 color=COLOURS["baseline"], label="baseline")
        axes.bar(edges[:-1], window / max(window.sum(), 1), width=widths, align="edge", alpha=0.5,
                 color=COLOURS["window"], label="window")
    else:  # a constant descriptor: one bar each
        axes.bar([0, 1], [1, 1], color=[COLOURS["baseline"], COLOURS["window"]], label="baseline and window")
    axes.set_ylabel("share of texts")
    _save(plt, figure, axes, path, feature["name"])


def _bucket_points(feature: dict) -> np.ndarray:
    """A point inside each baseline bucket, so that its count can be re-binned on wider edges."""
    return np.array([(b["lower_bound"] + b["upper_bound"]) / 2
                     for b in feature["numerical_statistics"]["distribution"]["kll"]["buckets"]])


def _bucket_weights(feature: dict) -> np.ndarray:
    return np.array([b["count"] for b in feature["numerical_statistics"]["distribution"]["kll"]["buckets"]])


def _labels(path: Path, feature: dict, labels: list[str]) -> None:
    baseline = label_shares(feature)
    names = sorted(set(baseline) | set(labels))
    window = [labels.count(n) / len(labels) for n in names] if labels else [0.0] * len(names)
    plt, (figure, axes) = _figure()
    positions = np.arange(len(names))
    axes.bar(positions - 0.2, [baseline.get(n, 0.0) for n in names], width=0.4, color=COLOURS["baseline"],
             label="baseline")
    axes.bar(positions + 0.2, window, width=0.4, color=COLOURS["window"], label="window")
    axes.set_xticks(positions, names)
    axes.set_ylabel("share of texts")
    _save(plt, figure, axes, path, "predicted label")


def _embeddings(path: Path, baseline: np.ndarray, window: np.ndarray) -> None:
    plt, (figure, axes) = _figure()
    for name, points in (("baseline", baseline), ("window", window)):
        y = points[:, 1] if points.shape[1] > 1 else np.zeros(len(points))
        axes.scatter(points[:, 0], y, s=8, alpha=0.5, color=COLOURS[name], label=name)
    axes.set_xlabel("component 1")
    axes.set_ylabel("component 2")
    _save(plt, figure, axes, path, "embeddings (PCA of the baseline)")


def write_plots(folder, baseline: dict, descriptors: dict[str, np.ndarray], labels: list[str] | None = None,
                projections: tuple[np.ndarray, np.ndarray] | None = None) -> list[dict]:
    """Write the run's PNG files into `folder`; returns [{"title", "file"}] in the order the report shows them."""
    folder = Path(folder)
    by_name = {f["name"]: f for f in baseline["features"]}
    plots = []
    for name, values in descriptors.items():
        feature = by_name.get(name)
        if feature is None or bucket_edges(feature) is None:
            continue
        plots.append({"title": name, "file": f"descriptor_{name}.png"})
        _descriptor(folder / plots[-1]["file"], feature, values[~np.isnan(values)])
    if labels and label_shares(by_name.get(LABEL_FEATURE, {})):
        plots.append({"title": "predicted label", "file": "predicted_label.png"})
        _labels(folder / plots[-1]["file"], by_name[LABEL_FEATURE], labels)
    if projections is not None and all(len(p) for p in projections):
        plots.append({"title": "embeddings", "file": "embeddings.png"})
        _embeddings(folder / plots[-1]["file"], *projections)
    return plots
