"""A 2-D map of chosen words: their vectors projected by PCA or t-SNE, saved as a PNG.

    plot_words(load_vectors("vectors/imdb"), ["good", "bad", "great", "awful"], "map.png")
"""
from pathlib import Path

import numpy as np

from nlpforge.errors import ConfigError
from nlpforge.settings import check_suffix

METHODS = ("pca", "tsne")


def project(matrix: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, D) vectors -> (N, 2) coordinates."""
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(matrix)
    from sklearn.manifold import TSNE

    # Perplexity must stay below the number of points; t-SNE's default of 30 needs 31+ words.
    perplexity = max(1.0, min(30.0, (len(matrix) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(matrix)


def plot_words(vectors, words: list[str], output, method: str = "pca") -> Path:
    """Project the vectors of `words` to 2-D and draw them, labelled, into a PNG at `output`."""
    if method not in METHODS:
        raise ConfigError(f"method must be pca or tsne, not '{method}'")
    if len(set(words)) < 3:
        raise ConfigError("name at least 3 different words to draw a map")
    check_suffix(output, "--output")
    keys = [vectors.key(word) for word in words]  # an unknown word raises before anything is drawn
    import matplotlib

    matrix = np.stack([vectors.keyed_vectors[k] for k in keys])  # (N, D)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = project(matrix, method)  # (N, 2)
    figure, axes = plt.subplots(figsize=(8, 6))
    axes.scatter(points[:, 0], points[:, 1], s=18, color="tab:blue")
    for (x, y), key in zip(points, keys):
        axes.annotate(key, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=9)
    axes.set_title(f"word vectors, {method.upper()} projection")
    axes.set_xticks([])
    axes.set_yticks([])
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    plt.close(figure)
    return output
