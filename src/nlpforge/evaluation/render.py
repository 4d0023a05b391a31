"""Renderings of a classification report (text tables and a confusion-matrix PNG).

    report = classification_metrics(true_ids, predicted_ids, labels)   # nlpforge.tasks.text_classification
    print(render_report(report, title="MiniLM"))
    plot_confusion(report, "confusion.png")
"""
from pathlib import Path

import numpy as np


def render_report(report: dict, title: str) -> str:
    """Plain-text report: headline metrics, per-class table, confusion matrix (rows: true)."""
    labels = report["labels"]
    width = max(7, *(len(label) for label in labels))
    lines = [f"{title}: accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.4f}  "
             f"({report['examples']} examples)",
             f"  {'class':<{width}}  precision  recall     f1  support"]
    for label in labels:
        row = report["per_class"][label]
        lines.append(f"  {label:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:5.3f}  "
                     f"{row['support']:7d}")
    lines.append("  confusion matrix (rows true, columns predicted):")
    lines.append("  " + " " * width + "".join(f"{label:>8}" for label in labels))
    for label, row in zip(labels, report["confusion_matrix"]):
        lines.append(f"  {label:<{width}}" + "".join(f"{value:8d}" for value in row))
    return "\n".join(lines)


def plot_confusion(report: dict, path, title: str = "") -> Path:
    """Save the confusion matrix as a PNG heatmap with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(report["confusion_matrix"])
    labels = report["labels"]
    figure, axes = plt.subplots(figsize=(1.1 * len(labels) + 2.5, 1.0 * len(labels) + 2))
    image = axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title or f"accuracy {report['accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f}")
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            axes.text(j, i, str(matrix[i, j]), ha="center", va="center",
                      color="white" if matrix[i, j] > threshold else "black")
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
