"""nlpforge's SageMaker-style SDK: Estimator, PyTorch, the built-in TextClassifier, TokenClassifier,
QuestionAnswerer and MaskedLanguageModel, PyTorchModel, Predictor, Transformer, the processing jobs'
Processor and ScriptProcessor, serializers, and Model Monitor's DefaultModelMonitor.

    from nlpforge.sdk import PyTorch
    est = PyTorch(entry_point="train.py", hyperparameters={"epochs": 2})
    est.fit({"train": "data/train.csv"})

Names load on first use, so `import nlpforge.sdk` stays fast (fit's start-up time counts).
"""
import importlib

_EXPORTS = {
    "Estimator": "nlpforge.sdk.estimator", "PyTorch": "nlpforge.sdk.estimator",
    "Rule": "nlpforge.sdk.debugger", "ProfilerRule": "nlpforge.sdk.debugger", "rule_configs": "nlpforge.sdk.debugger",
    "TextClassifier": "nlpforge.sdk.builtin", "MaskedLanguageModel": "nlpforge.sdk.builtin",
    "TokenClassifier": "nlpforge.sdk.builtin", "QuestionAnswerer": "nlpforge.sdk.builtin",
    "TrainingJob": "nlpforge.sdk.estimator",
    "PyTorchModel": "nlpforge.sdk.model",
    "Predictor": "nlpforge.sdk.predictor", "Transformer": "nlpforge.sdk.transform",
    "Processor": "nlpforge.sdk.processing", "ScriptProcessor": "nlpforge.sdk.processing",
    "ProcessingInput": "nlpforge.sdk.processing", "ProcessingOutput": "nlpforge.sdk.processing",
    "ProcessingJob": "nlpforge.sdk.processing",
    "JSONSerializer": "nlpforge.sdk.serializers", "CSVSerializer": "nlpforge.sdk.serializers",
    "IdentitySerializer": "nlpforge.sdk.serializers", "JSONDeserializer": "nlpforge.sdk.serializers",
    "StringDeserializer": "nlpforge.sdk.serializers", "CSVDeserializer": "nlpforge.sdk.serializers",
    "JSONLinesSerializer": "nlpforge.sdk.serializers", "JSONLinesDeserializer": "nlpforge.sdk.serializers",
    "DefaultModelMonitor": "nlpforge.sdk.model_monitor", "DatasetFormat": "nlpforge.sdk.model_monitor",
    "CronExpressionGenerator": "nlpforge.sdk.model_monitor", "MonitoringExecution": "nlpforge.sdk.model_monitor",
    "Statistics": "nlpforge.sdk.model_monitor", "Constraints": "nlpforge.sdk.model_monitor",
    "ConstraintViolations": "nlpforge.sdk.model_monitor", "DataCaptureConfig": "nlpforge.sdk.model_monitor",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nlpforge.sdk' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
