"""The named-entity baseline every token-classification report shows: a linear-chain CRF (sklearn-crfsuite)
with the classic word, shape, affix and neighbour features.

    crf = fit_crf(train_sentences)                 # [(tokens, tags)]
    crf.tag([["Angela", "Merkel", "visited", "Paris"]])   # [["B-PER", "I-PER", "O", "B-LOC"]]
"""
import re

_SHAPE = [(re.compile(r"[A-Z]"), "X"), (re.compile(r"[a-z]"), "x"), (re.compile(r"[0-9]"), "d")]


def shape(word: str) -> str:
    """Xxxx-style word shape, runs squeezed: "Merkel" -> "Xx", "B2B" -> "XdX"."""
    out = word
    for pattern, symbol in _SHAPE:
        out = pattern.sub(symbol, out)
    return re.sub(r"(.)\1+", r"\1", out)


def word_features(tokens: list[str], i: int) -> dict:
    word = tokens[i]
    features = {"bias": 1.0, "lower": word.lower(), "suffix3": word[-3:], "suffix2": word[-2:],
                "prefix3": word[:3], "shape": shape(word), "upper": word.isupper(), "title": word.istitle(),
                "digit": word.isdigit(), "punct": not any(c.isalnum() for c in word)}
    for offset in (-2, -1, 1, 2):
        j = i + offset
        if 0 <= j < len(tokens):
            neighbour = tokens[j]
            features.update({f"{offset}:lower": neighbour.lower(), f"{offset}:title": neighbour.istitle(),
                             f"{offset}:upper": neighbour.isupper(), f"{offset}:shape": shape(neighbour)})
        else:
            features[f"{offset}:edge"] = True
    return features


class CRFBaseline:
    def __init__(self, model):
        self.model = model

    def tag(self, sentences: list[list[str]]) -> list[list[str]]:
        return self.model.predict([[word_features(s, i) for i in range(len(s))] for s in sentences])


def fit_crf(sentences: list[tuple[list[str], list[str]]], iterations: int = 100) -> CRFBaseline:
    import sklearn_crfsuite

    model = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=0.1, c2=0.1, max_iterations=iterations,
                                 all_possible_transitions=True)
    model.fit([[word_features(tokens, i) for i in range(len(tokens))] for tokens, _ in sentences],
              [tags for _, tags in sentences])
    return CRFBaseline(model)
