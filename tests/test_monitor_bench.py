"""bench/monitor.py draws its windows as it says and scores the random-classifier null correctly."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("monitor_bench", BENCH / "monitor.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    module._texts.update({"in_domain": [f"in {i}" for i in range(400)], "other": [f"out {i}" for i in range(30)]})
    return module


def test_baseline_and_window_come_from_disjoint_halves(bench):
    baseline, window = bench.window_texts("same", 150, 0.0, seed=3, baseline_size=120)
    assert len(baseline) == 120 and len(window) == 150
    assert not set(baseline) & set(window)
    assert len(set(baseline)) == 120 and len(set(window)) == 150
    again = bench.window_texts("same", 150, 0.0, seed=3, baseline_size=120)
    assert again == (baseline, window)
    assert bench.window_texts("same", 150, 0.0, seed=4, baseline_size=120) != again


@pytest.mark.parametrize("share, outside", [(0.1, 10), (0.25, 25), (0.5, 50)])
def test_mixed_windows_hold_the_share_of_other_texts(bench, share, outside):
    baseline, window = bench.window_texts("mixed", 100, share, seed=0, baseline_size=50)
    assert sum(t.startswith("out") for t in window) == outside
    assert not any(t.startswith("out") for t in baseline)


def test_other_windows_larger_than_the_pool_are_drawn_with_replacement(bench):
    _, window = bench.window_texts("other", 80, 1.0, seed=0, baseline_size=50)
    assert len(window) == 80 and all(t.startswith("out") for t in window)
    assert len(set(window)) <= 30


def test_random_aucs_are_the_roc_auc_of_random_scores(bench):
    labels = np.array([0] * 40 + [1] * 13)
    aucs = bench.random_aucs(labels, 5, seed=1)
    scores = np.random.default_rng(1).random((5, len(labels)))
    assert np.allclose(aucs, [roc_auc_score(labels, row) for row in scores])
