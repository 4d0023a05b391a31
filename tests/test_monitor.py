"""Model Monitor: SageMaker baseline files, drift checks on windows of texts, data capture, bad input."""
import json
import random

import pytest

from conftest import FILLER, NEGATIVE, POSITIVE, assert_user_error, run_cli, toy_rows, write_csv
from nlpforge.monitoring import BaselineSettings, MonitorRunSettings, monitor_run, suggest_baseline
from nlpforge.monitoring.content import content_drift
from nlpforge.serving.capture import DataCapture


def number_rows(n: int, seed: int = 0) -> list[dict]:
    """Texts of another kind: codes and numbers, longer and without the toy task's words."""
    rng = random.Random(seed)
    return [{"text": " ".join(f"#{rng.randint(1000, 99999)}-{rng.choice('XYZ')}" for _ in range(rng.randint(10, 14)))}
            for _ in range(n)]


@pytest.fixture
def baseline(tmp_path):
    data = write_csv(tmp_path / "train.csv", toy_rows(200, seed=1))
    suggest_baseline(BaselineSettings.of(data=str(data), output=str(tmp_path / "baseline")))
    return tmp_path / "baseline"


def test_baseline_writes_sagemaker_files(baseline):
    stats = json.loads((baseline / "statistics.json").read_text())
    constraints = json.loads((baseline / "constraints.json").read_text())
    assert stats["dataset"]["item_count"] == 200
    features = {f["name"]: f for f in stats["features"]}
    words = features["length_words"]
    assert words["inferred_type"] == "Integral" and features["non_letter_share"]["inferred_type"] == "Fractional"
    numbers = words["numerical_statistics"]
    assert numbers["common"] == {"num_present": 200, "num_missing": 0}
    assert numbers["min"] == numbers["max"] == numbers["mean"] == 6.0 and numbers["sum"] == 1200.0
    buckets = features["length_chars"]["numerical_statistics"]["distribution"]["kll"]["buckets"]
    assert sum(b["count"] for b in buckets) == 200 and set(buckets[0]) == {"lower_bound", "upper_bound", "count"}
    assert {c["name"]: c["completeness"] for c in constraints["features"]}["text"] == 1.0
    config = constraints["monitoring_config"]
    assert config["distribution_constraints"] == {"perform_comparison": "Enabled", "comparison_threshold": 0.1,
                                                  "comparison_method": "Robust"}
    assert config["evaluate_constraints"] == config["emit_metrics"] == "Enabled"


def test_wordpiece_descriptors_use_the_models_tokenizer(tmp_path, tiny_model):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["great movie", "日本語 ☃☃", "  "]))
    stats = suggest_baseline(BaselineSettings.of(data=str(data), model=str(tiny_model.output), output=str(tmp_path / "b")))
    features = {f["name"]: f["numerical_statistics"] for f in stats["features"] if f["name"] != "text"}
    assert features["unknown_piece_rate"]["max"] > 0 and features["unknown_piece_rate"]["min"] == 0
    assert features["empty_or_whitespace"]["sum"] == 1 and features["non_ascii_share"]["max"] == 1.0


def test_same_distribution_gives_no_drift(tmp_path, baseline):
    window = write_csv(tmp_path / "window.csv", toy_rows(150, seed=7))
    report = monitor_run(MonitorRunSettings.of(baseline=str(baseline), data=str(window), output=str(tmp_path / "r")))
    assert report["status"] == "no violations", report["violations"]
    assert report["content_drift"]["p_value"] >= 0.05


def test_other_text_gives_content_and_length_drift(tmp_path, baseline):
    window = write_csv(tmp_path / "window.csv", number_rows(150))
    report = monitor_run(MonitorRunSettings.of(baseline=str(baseline), data=str(window), output=str(tmp_path / "r")))
    kinds = {(v["constraint_check_type"], v["feature_name"]) for v in report["violations"]}
    assert ("text_content_drift", "text") in kinds and ("baseline_drift_check", "length_chars") in kinds
    assert report["content_drift"]["p_value"] < 0.05 and report["content_drift"]["auc"] > 0.9
    written = json.loads((tmp_path / "r" / "constraint_violations.json").read_text())["violations"]
    assert {(v["constraint_check_type"], v["feature_name"]) for v in written} == kinds
    assert set(written[0]) == {"feature_name", "constraint_check_type", "description"}
    assert "Words of the window" in (tmp_path / "r" / "report.html").read_text()


def test_large_windows_use_held_out_auc():
    baseline = [r["text"] for r in toy_rows(1200, seed=1)]
    same = content_drift(baseline, [r["text"] for r in toy_rows(1100, seed=2)])
    other = content_drift(baseline, [r["text"] for r in number_rows(1100)])
    assert same.method == other.method == "held-out AUC" and same.p_value is None
    assert not same.drift and same.auc < 0.55
    assert other.drift and other.auc > 0.9 and other.window_words


def test_mixed_vocabulary_is_named_in_the_top_words():
    rng = random.Random(3)
    baseline = [" ".join(rng.sample(FILLER, 5) + [rng.choice(POSITIVE)]) for _ in range(150)]
    window = [" ".join(rng.sample(FILLER, 5) + [rng.choice(NEGATIVE)]) for _ in range(150)]
    result = content_drift(baseline, window, permutations=50)
    assert result.drift and set(result.window_words[:6]) == set(NEGATIVE)
    assert set(result.baseline_words[:6]) == set(POSITIVE)


def test_capture_written_by_the_server_is_read(tmp_path, baseline):
    capture = DataCapture(tmp_path / "capture", seed=0)
    for row in number_rows(60):
        capture.record("stars", "1.0", percent=100, text=row["text"], prediction={"label": 1, "score": 0.9})
    for row in toy_rows(40, seed=5):
        capture.record("stars", "2.0", percent=100, text=row["text"], prediction={"label": 0, "score": 0.6})
    capture.close()
    report = monitor_run(MonitorRunSettings.of(baseline=str(baseline), capture=str(tmp_path / "capture"),
                                               output=str(tmp_path / "r")))
    assert report["item_count"] == 100
    assert "text_content_drift" in {v["constraint_check_type"] for v in report["violations"]}
    later = monitor_run(MonitorRunSettings.of(baseline=str(baseline), capture=str(tmp_path / "capture"),
                                              since="2999-01-01", output=str(tmp_path / "r2")))
    assert later["item_count"] == 0


def test_empty_capture_window_is_no_data(tmp_path, baseline):
    (tmp_path / "capture" / "stars" / "1.0").mkdir(parents=True)
    (tmp_path / "capture" / "stars" / "1.0" / "capture.jsonl").write_text("")
    result = run_cli(["monitor", "run", "--baseline", baseline, "--capture", tmp_path / "capture",
                      "--output", tmp_path / "r"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no data")
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["status"] == "no data" and report["violations"] == []
    assert json.loads((tmp_path / "r" / "constraint_violations.json").read_text()) == {"violations": []}
    assert "no data" in (tmp_path / "r" / "report.html").read_text()


def test_cli_baseline_then_run(tmp_path):
    data = write_csv(tmp_path / "train.csv", toy_rows(100, seed=1))
    result = run_cli(["monitor", "baseline", "--data", data, "--output", tmp_path / "b"])
    assert result.returncode == 0, result.stderr
    window = write_csv(tmp_path / "w.csv", number_rows(80))
    result = run_cli(["monitor", "run", "--baseline", tmp_path / "b", "--data", window, "--output", tmp_path / "r",
                      "--permutations", "50"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("violations") and "text_content_drift" in result.stdout


def test_missing_capture_folder(tmp_path, baseline):
    assert_user_error(run_cli(["monitor", "run", "--baseline", baseline, "--capture", tmp_path / "nowhere",
                               "--output", tmp_path / "r"]), "no such capture folder")


def test_data_without_the_text_column(tmp_path, baseline):
    data = write_csv(tmp_path / "d.csv", toy_rows(10))
    assert_user_error(run_cli(["monitor", "baseline", "--data", data, "--text-column", "review_body",
                               "--output", tmp_path / "b"]), "no column 'review_body'")
    assert_user_error(run_cli(["monitor", "run", "--baseline", baseline, "--data", data, "--text-column", "body",
                               "--output", tmp_path / "r"]), "no column 'body'")


def test_baseline_folder_without_statistics(tmp_path, baseline):
    (baseline / "statistics.json").unlink()
    assert_user_error(run_cli(["monitor", "run", "--baseline", baseline, "--data", baseline / "texts.jsonl",
                               "--output", tmp_path / "r"]), "statistics.json is missing")
