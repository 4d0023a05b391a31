"""Automatic model tuning, SageMaker's API on Optuna (see tuning/tuner.py).

    from nlpforge.tuning import HyperparameterTuner, ContinuousParameter, IntegerParameter, CategoricalParameter
"""
from nlpforge.tuning.parameters import CategoricalParameter, ContinuousParameter, IntegerParameter
from nlpforge.tuning.tuner import HyperparameterTuner, TuningJobAnalytics

__all__ = ["CategoricalParameter", "ContinuousParameter", "HyperparameterTuner", "IntegerParameter",
           "TuningJobAnalytics"]
