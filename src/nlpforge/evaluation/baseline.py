"""The baseline every report shows: TF-IDF (1-2 grams, sublinear tf, min_df 2) + logistic regression.

    baseline = fit_baseline(train_texts, train_label_ids)
    predicted = baseline.predict(texts)
"""
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from nlpforge.errors import DataError


def _flatten(texts) -> list[str]:
    return [" ".join(t) if isinstance(t, tuple) else t for t in texts]


class Baseline:
    def __init__(self, pipeline):
        self.pipeline = pipeline

    def predict(self, texts):
        return self.pipeline.predict(_flatten(texts)).tolist()


def fit_baseline(texts, label_ids, seed: int = 0, source: str = "the baseline's training data") -> Baseline:
    """The fitted baseline; a DataError naming `source` when the texts hold fewer than 2 classes or no word."""
    classes = len(set(label_ids))
    if classes < 2:
        raise DataError(f"{source}: the baseline needs rows of at least 2 classes to learn from, but its "
                        f"{len(texts)} rows hold {classes}; give --baseline-train a file with more classes, "
                        "or --no-baseline")
    min_df = 2 if len(texts) >= 50 else 1  # tiny sets would lose every n-gram at min_df 2
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=min_df)
    classifier = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
    try:
        features = vectorizer.fit_transform(_flatten(texts))
    except ValueError:  # sklearn's "empty vocabulary" or "no terms remain": nothing for TF-IDF to count
        raise DataError(f"{source}: the baseline's {len(texts)} training texts hold no word of 2 or more letters "
                        f"or digits{' in 2 texts or more' if min_df > 1 else ''}, which is all its TF-IDF features "
                        "count; give --baseline-train a file of real texts, or --no-baseline") from None
    classifier.fit(features, label_ids)
    return Baseline(make_pipeline(vectorizer, classifier))
