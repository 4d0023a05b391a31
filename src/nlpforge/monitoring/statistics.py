"""SageMaker Model Monitor's statistics.json and constraints.json, and the checks between two of them.

    stats = statistics(texts, descriptors)               # {"version": 0, "dataset": {"item_count": n}, "features": [...]}
    constraints = suggest_constraints(stats)             # completeness per feature + monitoring_config
    violations = check(baseline_stats, constraints, window_texts, window_descriptors)

Numeric features carry `distribution.kll.buckets` (equal-width buckets between min and max, as SageMaker
writes them). Drift per feature is the L-infinity distance between the cumulative bucket shares of the
baseline and the window, counted on the baseline's bucket edges (values outside them count as their own
buckets). "Robust" comparison, the default, also asks the distance to exceed what two samples of these sizes
reach by chance at the 5% level (the two-sample Kolmogorov-Smirnov bound), so that small windows do not
alarm on noise; "Simple" compares the distance with `comparison_threshold` alone.
"""
import math

import numpy as np

from nlpforge.monitoring.descriptors import FEATURES

BUCKETS = 10
TEXT_FEATURE = "text"


def _buckets(values: np.ndarray) -> list[dict]:
    low, high = float(values.min()), float(values.max())
    edges = np.linspace(low, high, BUCKETS + 1) if high > low else np.array([low, high])
    counts = np.histogram(values, bins=edges)[0] if high > low else np.array([len(values)])
    return [{"lower_bound": float(edges[i]), "upper_bound": float(edges[i + 1]), "count": float(counts[i])}
            for i in range(len(counts))]


def _numeric(name: str, values: np.ndarray) -> dict:
    present = values[~np.isnan(values)]
    feature = {"name": name, "inferred_type": FEATURES[name],
               "numerical_statistics": {"common": {"num_present": int(len(present)),
                                                   "num_missing": int(len(values) - len(present))}}}
    if len(present):
        feature["numerical_statistics"].update(
            mean=float(present.mean()), sum=float(present.sum()), std_dev=float(present.std()),
            min=float(present.min()), max=float(present.max()),
            distribution={"kll": {"buckets": _buckets(present)}})
    return feature


def statistics(texts: list, descriptors: dict[str, np.ndarray]) -> dict:
    """statistics.json of a data set: the text itself (a String feature) and each descriptor."""
    present = [t for t in texts if t is not None]
    text = {"name": TEXT_FEATURE, "inferred_type": "String",
            "string_statistics": {"common": {"num_present": len(present), "num_missing": len(texts) - len(present)},
                                  "distinct_count": float(len(set(present)))}}
    return {"version": 0, "dataset": {"item_count": len(texts)},
            "features": [text] + [_numeric(name, values) for name, values in descriptors.items()]}


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
        features.append(constraint)
    return {"version": 0, "features": features,
            "monitoring_config": {"evaluate_constraints": "Enabled", "emit_metrics": "Enabled",
                                  "datatype_check_threshold": 1.0, "domain_content_threshold": 1.0,
                                  "distribution_constraints": {"perform_comparison": "Enabled",
                                                               "comparison_threshold": comparison_threshold,
                                                               "comparison_method": comparison_method}}}


def _edges(feature: dict) -> np.ndarray | None:
    buckets = feature.get("numerical_statistics", {}).get("distribution", {}).get("kll", {}).get("buckets")
    if not buckets:
        return None
    return np.array([b["lower_bound"] for b in buckets] + [buckets[-1]["upper_bound"]])


def _cumulative_shares(counts: np.ndarray) -> np.ndarray:
    return np.cumsum(counts) / counts.sum()


def distance(feature: dict, window: np.ndarray) -> float:
    """L-infinity distance between the cumulative bucket shares of a baseline feature and window values."""
    edges = _edges(feature)
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


def check(baseline: dict, constraints: dict, texts: list, descriptors: dict[str, np.ndarray]) -> list[dict]:
    """SageMaker's violations of a window: completeness_check and baseline_drift_check per feature."""
    config = constraints.get("monitoring_config", {})
    drift = config.get("distribution_constraints", {})
    threshold = float(drift.get("comparison_threshold", 0.1))
    robust = drift.get("comparison_method", "Robust") == "Robust"
    compare = drift.get("perform_comparison", "Enabled") == "Enabled"
    by_name = {f["name"]: f for f in baseline["features"]}
    violations = []
    for constraint in constraints["features"]:
        name = constraint["name"]
        values = ([t for t in texts] if name == TEXT_FEATURE else descriptors.get(name))
        if values is None:
            continue
        missing = sum(t is None for t in values) if name == TEXT_FEATURE else int(np.isnan(values).sum())
        completeness = 1 - missing / len(values)
        if completeness < constraint.get("completeness", 1.0):
            violations.append({"feature_name": name, "constraint_check_type": "completeness_check",
                               "description": f"Data completeness {completeness:.4f} of the window is below the "
                                              f"baseline's {constraint['completeness']:.4f}"})
        feature = by_name.get(name, {})
        if name == TEXT_FEATURE or not compare or _edges(feature) is None:
            continue
        present = values[~np.isnan(values)]
        if not len(present):
            continue
        found = distance(feature, present)
        by_chance = chance_distance(feature["numerical_statistics"]["common"]["num_present"], len(present))
        if found > threshold and (not robust or found > by_chance):
            violations.append({"feature_name": name, "constraint_check_type": "baseline_drift_check",
                               "description": f"Baseline drift distance {found:.4f} exceeds threshold {threshold}"
                                              + (f" and the {by_chance:.4f} two samples of these sizes reach by "
                                                 "chance" if robust else "")})
    return violations
