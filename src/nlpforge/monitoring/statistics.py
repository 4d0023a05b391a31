"""SageMaker Model Monitor's statistics.json and constraints.json, and the checks between two of them.

    stats = statistics(texts, descriptors, labels)   # {"version": 0, "dataset": {"item_count": n}, "features": [...]}
    constraints = suggest_constraints(stats)             # completeness per feature + monitoring_config
    violations = check(baseline_stats, constraints, window_texts, window_descriptors, window_labels, non_string=0)

Numeric features carry `distribution.kll.buckets` (equal-width buckets between min and max, as SageMaker
writes them). Drift per feature is the L-infinity distance between the cumulative bucket shares of the
baseline and the window, counted on the baseline's bucket edges (values outside them count as their own
buckets). "Robust" comparison, the default, also asks the distance to exceed what two samples of these sizes
reach by chance at the 5% level (the two-sample Kolmogorov-Smirnov bound), so that small windows do not
alarm on noise; "Simple" compares the distance with `comparison_threshold` alone.

A model's predicted label is a String feature with SageMaker's `distribution.categorical.buckets`
([{"value", "count"}]); its drift is the L-infinity distance between the label shares, and the Robust chance
bound is the largest difference of two shares at 5% (Bonferroni over the labels, at a share of 1/2).

The checks and their `constraint_check_type`:
- `completeness_check`: a feature's share of present values is below the baseline's;
- `data_type_check`: captured inputs that were JSON values, not strings, make the share of String inputs fall
  below `monitoring_config.datatype_check_threshold` (1.0 by default: any such input);
- `baseline_drift_check`: a descriptor's, the confidence's or the predicted label's distribution has drifted;
- `length_out_of_range` (SageMaker has no range check): more window texts than chance allows have a length
  outside the baseline's [min, max], widened by `length_tolerance` of that range on each side. Chance is a
  one-sided binomial test at 5% against a share of 1% plus 2/(n+1), the share of new texts that fall outside
  the range of n baseline texts from the same distribution.

A baseline's files may be edited by hand, as SageMaker's are: `check_statistics` and `check_constraints`
refuse a file whose keys do not hold what the checks read, naming the key.
"""
import json
import math
from collections import Counter
from statistics import NormalDist

import numpy as np

from nlpforge.errors import ConfigError
from nlpforge.monitoring.descriptors import FEATURES, LENGTH_FEATURES, MODEL_FEATURES

BUCKETS = 10
COMPARISON_METHODS = ("Robust", "Simple")  # SageMaker's distribution_constraints.comparison_method
NUMBER = (int, float)
TEXT_FEATURE = "text"
LABEL_FEATURE = "predicted_label"
OUT_OF_RANGE_BASE_SHARE = 0.01


def _buckets(values: np.ndarray) -> list[dict]:
    low, high = float(values.min()), float(values.max())
    edges = np.linspace(low, high, BUCKETS + 1) if high > low else np.array([low, high])
    counts = np.histogram(values, bins=edges)[0] if high > low else np.array([len(values)])
    return [{"lower_bound": float(edges[i]), "upper_bound": float(edges[i + 1]), "count": float(counts[i])}
            for i in range(len(counts))]


def _numeric(name: str, values: np.ndarray) -> dict:
    present = values[~np.isnan(values)]
    feature = {"name": name, "inferred_type": {**FEATURES, **MODEL_FEATURES}[name],
               "numerical_statistics": {"common": {"num_present": int(len(present)),
                                                   "num_missing": int(len(values) - len(present))}}}
    if len(present):
        feature["numerical_statistics"].update(
            mean=float(present.mean()), sum=float(present.sum()), std_dev=float(present.std()),
            min=float(present.min()), max=float(present.max()),
            distribution={"kll": {"buckets": _buckets(present)}})
    return feature


def _categorical(name: str, values: list[str]) -> dict:
    counts = Counter(values)
    return {"name": name, "inferred_type": "String",
            "string_statistics": {"common": {"num_present": len(values), "num_missing": 0},
                                  "distinct_count": float(len(counts)),
                                  "distribution": {"categorical": {"buckets": [
                                      {"value": value, "count": count} for value, count in sorted(counts.items())]}}}}


def statistics(texts: list, descriptors: dict[str, np.ndarray], labels: list[str] | None = None) -> dict:
    """statistics.json of a data set: the text itself (a String feature), each descriptor, and the model's
    predicted labels when there are any."""
    present = [t for t in texts if t is not None]
    text = {"name": TEXT_FEATURE, "inferred_type": "String",
            "string_statistics": {"common": {"num_present": len(present), "num_missing": len(texts) - len(present)},
                                  "distinct_count": float(len(set(present)))}}
    features = [text] + [_numeric(name, values) for name, values in descriptors.items()]
    if labels is not None:
        features.append(_categorical(LABEL_FEATURE, labels))
    return {"version": 0, "dataset": {"item_count": len(texts)}, "features": features}


def suggest_constraints(stats: dict, comparison_threshold: float = 0.1, comparison_method: str = "Robust") -> dict:
    """constraints.json from a baseline's statistics: each feature's completeness, and the monitoring config."""
    features = []
    for feature in stats["features"]:
        common = (feature.get("numerical_statistics") or feature["string_statistics"])["common"]
        total = common["num_present"] + common["num_missing"]
        constraint = {"name": feature["name"], "inferred_type": feature["inferred_type"],
                      "completeness": common["num_present"] / total if total else 1.0}
        if feature["inferred_type"] != "String":
            constraint["num_constraints"] = {"is_non_negative": True}
        elif label_shares(feature):
            constraint["string_constraints"] = {"domains": list(label_shares(feature))}
        features.append(constraint)
    return {"version": 0, "features": features,
            "monitoring_config": {"evaluate_constraints": "Enabled", "emit_metrics": "Enabled",
                                  "datatype_check_threshold": 1.0, "domain_content_threshold": 1.0,
                                  "distribution_constraints": {"perform_comparison": "Enabled",
                                                               "comparison_threshold": comparison_threshold,
                                                               "comparison_method": comparison_method}}}


def _checked(value, key: str, kind, what: str, low=None, high=None, choices=None):
    """`value`, found at `key` of a statistics or constraints file, refused unless it is `what`: a `kind`
    (NUMBER: a finite one between `low` and `high`), one of `choices` when given."""
    fits = isinstance(value, kind) and not isinstance(value, bool) and (choices is None or value in choices)
    if fits and kind is NUMBER:
        fits = math.isfinite(value) and (low is None or value >= low) and (high is None or value <= high)
    if not fits:
        shown = json.dumps(value)
        raise ConfigError(f"{key} is {shown if len(shown) <= 40 else shown[:40] + '...'}, not {what}")
    return value


def _member(document: dict, name: str, key: str, kind, what: str, required: bool = False, **limits):
    """document[name], checked as `_checked` does, or None when absent and not `required`; `key` names the
    document."""
    key = f"{key}.{name}" if key else name
    if name not in document:
        if required:
            raise ConfigError(f"{key} is missing (it must be {what})")
        return None
    return _checked(document[name], key, kind, what, **limits)


def _features(document: dict) -> list[tuple[str, dict]]:
    """(key, feature) of each entry of `features`, checked to be an object with a name."""
    features = []
    for i, feature in enumerate(_member(document, "features", "", list, "a list of features", required=True)):
        key = f"features[{i}]"
        features.append((key, _checked(feature, key, dict, "an object")))
        _member(feature, "name", key, str, "a string", required=True)
    return features


def _checked_buckets(statistics: dict, key: str, kind: str) -> list[dict]:
    """The `distribution.<kind>.buckets` of a feature's statistics at `key`, each checked ([] when absent)."""
    distribution = _member(statistics, "distribution", key, dict, "an object") or {}
    found = _member(distribution, kind, f"{key}.distribution", dict, "an object") or {}
    buckets = _member(found, "buckets", f"{key}.distribution.{kind}", list, "a list of buckets") or []
    key = f"{key}.distribution.{kind}.buckets"
    for i, bucket in enumerate(buckets):
        _checked(bucket, f"{key}[{i}]", dict, "an object")
        _member(bucket, "count", f"{key}[{i}]", NUMBER, "a number of at least 0", required=True, low=0)
        if kind == "kll":
            for name in ("lower_bound", "upper_bound"):
                _member(bucket, name, f"{key}[{i}]", NUMBER, "a number", required=True)
        else:
            _member(bucket, "value", f"{key}[{i}]", (str, int, float), "a string or a number", required=True)
    edges = [b["lower_bound"] for b in buckets] + [b["upper_bound"] for b in buckets[-1:]] if kind == "kll" else []
    if edges != sorted(edges):
        raise ConfigError(f"{key}: the bounds must rise from bucket to bucket")
    return buckets


def check_statistics(stats: dict) -> None:
    """Refuse a statistics.json (an object) whose features the checks and plots cannot read; ConfigError names
    the key."""
    for key, feature in _features(stats):
        for part in ("numerical_statistics", "string_statistics"):
            statistics = _member(feature, part, key, dict, "an object")
            if statistics is None:
                continue
            where = f"{key}.{part}"
            common = _member(statistics, "common", where, dict, "an object", required=True)
            buckets = _checked_buckets(statistics, where, "kll" if part == "numerical_statistics" else "categorical")
            least = 1 if buckets else 0  # the drift checks divide by the baseline's count
            _member(common, "num_present", f"{where}.common", NUMBER, f"a number of at least {least}",
                    required=True, low=least)
            if part == "numerical_statistics" and ("min" in statistics or "max" in statistics):
                low, high = (_member(statistics, name, where, NUMBER, "a number", required=True)
                             for name in ("min", "max"))
                if low > high:
                    raise ConfigError(f"{where}: min {low} is above max {high}")


def check_constraints(constraints: dict) -> None:
    """Refuse a constraints.json (an object) whose features or monitoring_config the checks cannot read;
    ConfigError names the key."""
    share = dict(low=0, high=1)
    for key, feature in _features(constraints):
        _member(feature, "completeness", key, NUMBER, "a number between 0 and 1", **share)
    config = _member(constraints, "monitoring_config", "", dict, "an object") or {}
    _member(config, "datatype_check_threshold", "monitoring_config", NUMBER, "a number between 0 and 1", **share)
    drift = _member(config, "distribution_constraints", "monitoring_config", dict, "an object") or {}
    key = "monitoring_config.distribution_constraints"
    _member(drift, "perform_comparison", key, str, "Enabled or Disabled", choices=("Enabled", "Disabled"))
    _member(drift, "comparison_threshold", key, NUMBER, "a number between 0 and 1", **share)
    _member(drift, "comparison_method", key, str, " or ".join(COMPARISON_METHODS), choices=COMPARISON_METHODS)


def bucket_edges(feature: dict) -> np.ndarray | None:
    buckets = feature.get("numerical_statistics", {}).get("distribution", {}).get("kll", {}).get("buckets")
    if not buckets:
        return None
    return np.array([b["lower_bound"] for b in buckets] + [buckets[-1]["upper_bound"]])


def _cumulative_shares(counts: np.ndarray) -> np.ndarray:
    return np.cumsum(counts) / counts.sum()


def distance(feature: dict, window: np.ndarray) -> float:
    """L-infinity distance between the cumulative bucket shares of a baseline feature and window values."""
    edges = bucket_edges(feature)
    baseline = np.array([0.0] + [b["count"] for b in feature["numerical_statistics"]["distribution"]["kll"]
                                 ["buckets"]] + [0.0])
    # bucket 0 is below the baseline's min, the last one above its max; the max itself is in the top bucket
    index = np.searchsorted(edges, window, side="right")
    index[window == edges[-1]] = len(edges) - 1
    counts = np.bincount(index, minlength=len(edges) + 1).astype(float)
    return float(np.abs(_cumulative_shares(baseline) - _cumulative_shares(counts)).max())


def chance_distance(baseline_count: int, window_count: int) -> float:
    """The distance two samples of these sizes from one distribution exceed with 5% chance (KS bound)."""
    return 1.358 * math.sqrt((baseline_count + window_count) / (baseline_count * window_count))


def label_shares(feature: dict) -> dict[str, float]:
    """{label: share} of a String feature's categorical buckets ({} when it has none)."""
    buckets = feature.get("string_statistics", {}).get("distribution", {}).get("categorical", {}).get("buckets")
    total = sum(b["count"] for b in buckets or ())
    return {str(b["value"]): b["count"] / total for b in buckets} if total else {}


def label_distance(feature: dict, window: list[str]) -> float:
    """L-infinity distance between a baseline String feature's value shares and the window's."""
    baseline, counts = label_shares(feature), Counter(window)
    return max(abs(baseline.get(v, 0.0) - counts[v] / len(window)) for v in set(baseline) | set(counts))


def categorical_chance_distance(baseline_count: int, window_count: int, categories: int) -> float:
    """The largest difference of one category's shares in two samples of these sizes at the 5% level."""
    z = NormalDist().inv_cdf(1 - 0.05 / (2 * max(categories, 1)))
    return z * 0.5 * math.sqrt(1 / baseline_count + 1 / window_count)


def _drift(name: str, found: float, threshold: float, by_chance: float, robust: bool) -> dict | None:
    if found > threshold and (not robust or found > by_chance):
        return {"feature_name": name, "constraint_check_type": "baseline_drift_check",
                "description": f"Baseline drift distance {found:.4f} exceeds threshold {threshold}"
                               + (f" and the {by_chance:.4f} two samples of these sizes reach by chance" if robust
                                  else "")}
    return None


def _out_of_range(name: str, feature: dict, present: np.ndarray, tolerance: float) -> dict | None:
    """length_out_of_range when more window values than chance allows fall outside the baseline's range."""
    from scipy.stats import binom

    numbers = feature.get("numerical_statistics", {})
    if "min" not in numbers or not len(present):
        return None
    low, high = numbers["min"], numbers["max"]
    margin = tolerance * (high - low)
    outside = int(((present < low - margin) | (present > high + margin)).sum())
    expected = OUT_OF_RANGE_BASE_SHARE + 2 / (numbers["common"]["num_present"] + 1)
    if not outside or binom.sf(outside - 1, len(present), expected) >= 0.05:
        return None
    return {"feature_name": name, "constraint_check_type": "length_out_of_range",
            "description": f"{outside} of {len(present)} window texts ({outside / len(present):.2%}) have a {name} "
                           f"outside the baseline's range [{low:g}, {high:g}] widened by {tolerance:g} of it; "
                           f"chance allows about {expected:.2%}"}


def check(baseline: dict, constraints: dict, texts: list, descriptors: dict[str, np.ndarray],
          labels: list[str] | None = None, non_string: int = 0, length_tolerance: float = 0.1) -> list[dict]:
    """SageMaker's violations of a window: completeness_check and baseline_drift_check per feature,
    data_type_check of the text, and length_out_of_range of the lengths. `labels` are the model's predicted
    labels of the window's texts, `non_string` the count of its inputs that were JSON values, not strings."""
    config = constraints.get("monitoring_config", {})
    drift = config.get("distribution_constraints", {})
    threshold = float(drift.get("comparison_threshold", 0.1))
    robust = drift.get("comparison_method", "Robust") == "Robust"
    compare = drift.get("perform_comparison", "Enabled") == "Enabled"
    by_name = {f["name"]: f for f in baseline["features"]}
    violations = []
    for constraint in constraints["features"]:
        name = constraint["name"]
        feature = by_name.get(name, {})
        if name == LABEL_FEATURE:
            if labels and compare and label_shares(feature):
                shares = label_shares(feature)
                by_chance = categorical_chance_distance(feature["string_statistics"]["common"]["num_present"],
                                                        len(labels), len(set(shares) | set(labels)))
                violations.append(_drift(name, label_distance(feature, labels), threshold, by_chance, robust))
            continue
        values = list(texts) if name == TEXT_FEATURE else descriptors.get(name)
        if values is None or not len(values):
            continue
        missing = sum(t is None for t in values) if name == TEXT_FEATURE else int(np.isnan(values).sum())
        completeness = 1 - missing / len(values)
        if completeness < constraint.get("completeness", 1.0):
            violations.append({"feature_name": name, "constraint_check_type": "completeness_check",
                               "description": f"Data completeness {completeness:.4f} of the window is below the "
                                              f"baseline's {constraint['completeness']:.4f}"})
        if name == TEXT_FEATURE:
            violations.append(_data_type(len(values) - missing, non_string,
                                         float(config.get("datatype_check_threshold", 1.0))))
            continue
        present = values[~np.isnan(values)]
        if name in LENGTH_FEATURES:
            violations.append(_out_of_range(name, feature, present, length_tolerance))
        if not compare or bucket_edges(feature) is None or not len(present):
            continue
        by_chance = chance_distance(feature["numerical_statistics"]["common"]["num_present"], len(present))
        violations.append(_drift(name, distance(feature, present), threshold, by_chance, robust))
    return [v for v in violations if v is not None]


def _data_type(present: int, non_string: int, threshold: float) -> dict | None:
    """data_type_check of the text: the share of inputs that were strings, against the threshold."""
    share = 1 - non_string / present if present else 1.0
    if share >= threshold:
        return None
    return {"feature_name": TEXT_FEATURE, "constraint_check_type": "data_type_check",
            "description": f"Data type match {share:.4f} of the window is below the threshold {threshold}: "
                           f"{non_string} of {present} inputs were JSON values, not the baseline's String"}
