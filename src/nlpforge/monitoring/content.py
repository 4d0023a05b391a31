"""Content drift: can a classifier tell the window's texts from the baseline's?

    result = content_drift(baseline_texts, window_texts)   # ContentDrift(drift=..., auc=..., p_value=..., ...)

A TF-IDF + logistic regression domain classifier, as Evidently does it. A window of more than
`large_window` texts is scored by ROC AUC on held-out halves: drift when AUC > `auc_threshold`. A smaller
window gets a permutation test on the pooled texts: the same held-out AUC with the baseline/window labels
shuffled `permutations` times, p = (k + 1) / (n + 1) where k shuffles score at least the real AUC, drift when
p < `alpha`. (Resampling only the reference, as Evidently's bootstrap does, alarms on nearly every window.)
The words with the largest weights either way and the texts the classifier is surest of explain a drift.
"""
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ContentDrift:
    drift: bool
    method: str                  # "held-out AUC" or "permutation test"
    auc: float
    p_value: float | None
    window_words: list[str] = field(default_factory=list)      # words that mark the window
    baseline_words: list[str] = field(default_factory=list)    # words that mark the baseline
    window_examples: list[str] = field(default_factory=list)
    baseline_examples: list[str] = field(default_factory=list)

    def description(self) -> str:
        score = f"AUC {self.auc:.3f}" + (f", p = {self.p_value:.4f}" if self.p_value is not None else "")
        return (f"A domain classifier tells window texts from baseline texts ({self.method}: {score}); words of the "
                f"window: {', '.join(self.window_words) or '-'}; words of the baseline: "
                f"{', '.join(self.baseline_words) or '-'}")


def _held_out_auc(features, labels: np.ndarray, halves: np.ndarray) -> float:
    """Mean ROC AUC of a classifier trained on one half and scored on the other, both ways."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    scores = []
    for part in (0, 1):
        train, test = halves != part, halves == part
        if len(set(labels[train])) < 2 or len(set(labels[test])) < 2:
            return 0.5
        model = LogisticRegression(max_iter=1000).fit(features[train], labels[train])
        scores.append(roc_auc_score(labels[test], model.decision_function(features[test])))
    return float(np.mean(scores))


def content_drift(baseline: list[str], window: list[str], **options) -> ContentDrift:
    """Whether the window's texts differ in content from the baseline's (both non-empty lists of strings).

    BLAS runs on one thread: the fits are small, and OpenBLAS threads that spin on a busy machine made each
    fit some 80 times slower."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        return _content_drift(baseline, window, **options)


def _content_drift(baseline: list[str], window: list[str], *, large_window: int = 1000, auc_threshold: float = 0.55,
                   permutations: int = 100, alpha: float = 0.05, top_words: int = 10, examples: int = 3,
                   seed: int = 0) -> ContentDrift:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    texts = list(baseline) + list(window)
    labels = np.array([0] * len(baseline) + [1] * len(window))
    try:
        vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=1, token_pattern=r"(?u)\b\w+\b")
        features = vectorizer.fit_transform(texts)
    except ValueError:  # no word at all on either side (every text empty or punctuation)
        return ContentDrift(drift=False, method="no words", auc=0.5, p_value=None)
    halves = np.zeros(len(texts), dtype=int)
    for side in (0, 1):  # each side split in two, so both halves hold both sides
        members = np.flatnonzero(labels == side)
        halves[rng.permutation(members)[: len(members) // 2]] = 1
    auc = _held_out_auc(features, labels, halves)
    if len(window) > large_window:
        result = ContentDrift(drift=auc > auc_threshold, method="held-out AUC", auc=auc, p_value=None)
    else:
        exceed = sum(_held_out_auc(features, rng.permutation(labels), halves) >= auc for _ in range(permutations))
        p_value = (exceed + 1) / (permutations + 1)
        result = ContentDrift(drift=p_value < alpha, method="permutation test", auc=auc, p_value=p_value)
    if len(set(labels)) == 2:
        model = LogisticRegression(max_iter=1000).fit(features, labels)
        words, weights = vectorizer.get_feature_names_out(), model.coef_[0]
        order = np.argsort(weights)
        result.window_words = [str(words[i]) for i in order[::-1][:top_words] if weights[i] > 0]
        result.baseline_words = [str(words[i]) for i in order[:top_words] if weights[i] < 0]
        scores = model.decision_function(features)
        ranked = np.argsort(scores)
        result.window_examples = [texts[i] for i in ranked[::-1] if labels[i] == 1][:examples]
        result.baseline_examples = [texts[i] for i in ranked if labels[i] == 0][:examples]
    return result
