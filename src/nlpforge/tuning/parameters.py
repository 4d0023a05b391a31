"""SageMaker's hyperparameter ranges, checked when made and turned into Optuna suggestions.

    ContinuousParameter(1e-5, 1e-4, scaling_type="Logarithmic")
    IntegerParameter(1, 3)
    CategoricalParameter([16, 32])
"""
import math
from dataclasses import dataclass

from nlpforge.errors import TuningError

SCALING_TYPES = ("Auto", "Linear", "Logarithmic")


def check_scaling(kind: str, scaling_type: str, min_value) -> None:
    if scaling_type == "ReverseLogarithmic":
        raise TuningError(f"{kind}: scaling_type 'ReverseLogarithmic' is not supported; use Auto, Linear or "
                          "Logarithmic")
    if scaling_type not in SCALING_TYPES:
        raise TuningError(f"{kind}: scaling_type must be one of {', '.join(SCALING_TYPES)}, not {scaling_type!r}")
    if scaling_type == "Logarithmic" and min_value <= 0:
        raise TuningError(f"{kind}: a Logarithmic range needs min_value > 0, got {min_value}")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class ContinuousParameter:
    """Real values in [min_value, max_value]."""

    min_value: float
    max_value: float
    scaling_type: str = "Auto"

    def __post_init__(self):
        if not (is_number(self.min_value) and is_number(self.max_value)):
            raise TuningError(f"ContinuousParameter needs numbers, got ({self.min_value!r}, {self.max_value!r})")
        if self.min_value >= self.max_value:
            raise TuningError(f"ContinuousParameter: min_value {self.min_value} must be below max_value "
                              f"{self.max_value}")
        check_scaling("ContinuousParameter", self.scaling_type, self.min_value)

    def suggest(self, trial, name: str):
        return trial.suggest_float(name, float(self.min_value), float(self.max_value),
                                   log=self.scaling_type == "Logarithmic")

    def grid(self, name: str) -> list:
        raise TuningError(f"'{name}': the Grid strategy needs CategoricalParameter or IntegerParameter ranges")

    def grid_size(self, name: str) -> int:
        return len(self.grid(name))  # grid() refuses a continuous range

    def checked_values(self) -> list:
        """The values an estimator is asked to accept before any trial: both ends, and a value between them
        that is not a whole number, which an integer setting refuses (the ends may be whole)."""
        middle = (self.min_value + self.max_value) / 2
        if float(middle).is_integer():
            middle += min(0.5, (self.max_value - self.min_value) / 4)
        return [self.min_value, middle, self.max_value]


@dataclass(frozen=True)
class IntegerParameter:
    """Whole numbers in [min_value, max_value]."""

    min_value: int
    max_value: int
    scaling_type: str = "Auto"

    def __post_init__(self):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (self.min_value, self.max_value)):
            raise TuningError(f"IntegerParameter needs whole numbers, got ({self.min_value!r}, {self.max_value!r}); "
                              "use ContinuousParameter for real values")
        if self.min_value >= self.max_value:
            raise TuningError(f"IntegerParameter: min_value {self.min_value} must be below max_value {self.max_value}")
        check_scaling("IntegerParameter", self.scaling_type, self.min_value)

    def suggest(self, trial, name: str):
        return trial.suggest_int(name, self.min_value, self.max_value, log=self.scaling_type == "Logarithmic")

    def grid(self, name: str) -> list:
        return list(range(self.min_value, self.max_value + 1))

    def grid_size(self, name: str) -> int:
        return self.max_value - self.min_value + 1

    def checked_values(self) -> list:
        return [self.min_value, self.max_value]


@dataclass(frozen=True)
class CategoricalParameter:
    """One of a list of values (strings, numbers or booleans)."""

    values: tuple

    def __init__(self, values):
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            values = [values]
        values = tuple(values)
        if not values:
            raise TuningError("CategoricalParameter needs at least one value")
        if any(not isinstance(v, (str, int, float, bool)) for v in values):
            raise TuningError(f"CategoricalParameter values must be strings, numbers or booleans, got {values!r}")
        if len(set(values)) != len(values):
            raise TuningError(f"CategoricalParameter values repeat: {values!r}")
        object.__setattr__(self, "values", values)

    def suggest(self, trial, name: str):
        return trial.suggest_categorical(name, list(self.values))

    def grid(self, name: str) -> list:
        return list(self.values)

    def grid_size(self, name: str) -> int:
        return len(self.values)

    def checked_values(self) -> list:
        return list(self.values)


RANGE_TYPES = (ContinuousParameter, IntegerParameter, CategoricalParameter)
# Optuna's GridSampler lists every point in memory, and each point is a training job: a grid this large is
# for the Random or Bayesian strategy, which sample it.
MAX_GRID_POINTS = 10_000


def check_ranges(ranges) -> dict:
    if not isinstance(ranges, dict) or not ranges:
        raise TuningError("hyperparameter_ranges must be a non-empty dict of name -> ContinuousParameter, "
                          "IntegerParameter or CategoricalParameter")
    for name, value in ranges.items():
        if not isinstance(value, RANGE_TYPES):
            raise TuningError(f"hyperparameter range '{name}' is {value!r}; give ContinuousParameter(min, max), "
                              "IntegerParameter(min, max) or CategoricalParameter([...])")
    return dict(ranges)


def grid(ranges: dict) -> dict:
    """{name: values} of the Grid strategy's ranges, refused before it is listed when it has too many points."""
    points = math.prod(r.grid_size(name) for name, r in ranges.items())
    if points > MAX_GRID_POINTS:
        raise TuningError(f"the grid has {points} points, more than the {MAX_GRID_POINTS} the Grid strategy runs; "
                          "narrow the ranges or use the Random or Bayesian strategy with max_jobs")
    return {name: r.grid(name) for name, r in ranges.items()}
