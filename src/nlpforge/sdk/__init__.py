"""nlpforge's SageMaker-style SDK: Estimator, PyTorch, the built-in TextClassifier, TokenClassifier,
QuestionAnswerer and MaskedLanguageModel, PyTorchModel, Predictor, Transformer, serializers.

    from nlpforge.sdk import PyTorch
    est = PyTorch(entry_point="train.py", hyperparameters={"epochs": 2})
    est.fit({"train": "data/train.csv"})

Names load on first use, so `import nlpforge.sdk` stays fast (fit's start-up time counts).
"""
import importlib

_EXPORTS = {
    "Estimator": "nlpforge.sdk.estimator", "PyTorch": "nlpforge.sdk.estimator",
    "TextClassifier": "nlpforge.sdk.estimator", "MaskedLanguageModel": "nlpforge.sdk.estimator",
    "TokenClassifier": "nlpforge.sdk.estimator", "QuestionAnswerer": "nlpforge.sdk.estimator",
    "TrainingJob": "nlpforge.sdk.estimator",
    "PyTorchModel": "nlpforge.sdk.model",
    "Predictor": "nlpforge.sdk.predictor", "Transformer": "nlpforge.sdk.predictor",
    "JSONSerializer": "nlpforge.sdk.serializers", "CSVSerializer": "nlpforge.sdk.serializers",
    "IdentitySerializer": "nlpforge.sdk.serializers", "JSONDeserializer": "nlpforge.sdk.serializers",
    "StringDeserializer": "nlpforge.sdk.serializers", "CSVDeserializer": "nlpforge.sdk.serializers",
    "JSONLinesSerializer": "nlpforge.sdk.serializers", "JSONLinesDeserializer": "nlpforge.sdk.serializers",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nlpforge.sdk' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
