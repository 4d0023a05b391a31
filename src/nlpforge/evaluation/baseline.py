"""The baseline every report shows: TF-IDF (1-2 grams, sublinear tf, min_df 2) + logistic regression.

    baseline = fit_baseline(train_texts, train_label_ids)
    predicted = baseline.predict(texts)
"""
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline


def _flatten(texts) -> list[str]:
    return [" ".join(t) if isinstance(t, tuple) else t for t in texts]


class Baseline:
    def __init__(self, pipeline):
        self.pipeline = pipeline

    def predict(self, texts):
        return self.pipeline.predict(_flatten(texts)).tolist()


def fit_baseline(texts, label_ids, seed: int = 0) -> Baseline:
    min_df = 2 if len(texts) >= 50 else 1  # tiny sets would lose every n-gram at min_df 2
    pipeline = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=min_df),
        LogisticRegression(max_iter=2000, C=1.0, random_state=seed),
    )
    pipeline.fit(_flatten(texts), label_ids)
    return Baseline(pipeline)
