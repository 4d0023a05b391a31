"""Model Monitor: SageMaker baseline files, drift checks on windows of texts, data capture, bad input."""
import json
import random
import re

import pytest

from conftest import FILLER, NEGATIVE, POSITIVE, assert_user_error, run_cli, toy_rows, write_csv
from nlpforge.errors import NlpforgeError
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
    stats = suggest_baseline(BaselineSettings.of(data=str(data), model=str(tiny_model.output),
                                                 output=str(tmp_path / "b")))
    features = {f["name"]: f["numerical_statistics"] for f in stats["features"] if "numerical_statistics" in f}
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


def test_a_captured_text_with_a_lone_surrogate_is_monitored(tmp_path, baseline):
    capture = tmp_path / "capture" / "stars" / "1.0" / "capture.jsonl"
    capture.parent.mkdir(parents=True)
    rows = [{"timestamp": "2026-11-29T10:00:00.000Z", "input": row["text"] + " \ud800", "prediction": {"label": 0}}
            for row in toy_rows(20, seed=5)]
    capture.write_text("".join(json.dumps(row) + "\n" for row in rows))  # "\\ud800", as JSON may hold it
    report = monitor_run(MonitorRunSettings.of(baseline=str(baseline), capture=str(tmp_path / "capture"),
                                               output=str(tmp_path / "r")))
    assert report["item_count"] == 20 and json.loads((tmp_path / "r" / "report.json").read_text())


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


@pytest.fixture
def model_baseline(tmp_path, tiny_model):
    data = write_csv(tmp_path / "train.csv", toy_rows(200, seed=1))
    suggest_baseline(BaselineSettings.of(data=str(data), model=str(tiny_model.output),
                                         output=str(tmp_path / "model_baseline")))
    return tmp_path / "model_baseline"


def other_model(tiny_model, folder):
    """A copy of the tiny model with one weight changed: what training again gives."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(tiny_model.output, folder)
    weights = load_file(folder / "model.safetensors")
    name = next(n for n in weights if n.endswith("classifier.bias"))
    weights[name] = weights[name] + 0.01
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_model_baseline_records_labels_confidence_and_embeddings(model_baseline, tiny_model):
    from safetensors.numpy import load_file

    stats = json.loads((model_baseline / "statistics.json").read_text())
    features = {f["name"]: f for f in stats["features"]}
    label = features["predicted_label"]
    assert label["inferred_type"] == "String"
    buckets = label["string_statistics"]["distribution"]["categorical"]["buckets"]
    assert {b["value"] for b in buckets} == {"neg", "pos"} and sum(b["count"] for b in buckets) == 200
    assert all(abs(b["count"] - 100) < 15 for b in buckets)  # the tiny model learned the balanced toy task
    confidence = features["confidence"]
    assert confidence["inferred_type"] == "Fractional"
    assert 0.5 <= confidence["numerical_statistics"]["min"] <= confidence["numerical_statistics"]["max"] <= 1.0
    constraints = {c["name"]: c for c in json.loads((model_baseline / "constraints.json").read_text())["features"]}
    assert set(constraints["predicted_label"]["string_constraints"]["domains"]) == {"neg", "pos"}
    info = json.loads((model_baseline / "baseline.json").read_text())
    identity = info["model_identity"]
    assert identity["path"] == str(tiny_model.output.resolve()) and identity["task"] == "text-classification"
    assert len(identity["fingerprint"]) == 64
    summary = load_file(model_baseline / info["embeddings"])
    assert summary["components"].shape == (8, 128) and summary["projected"].shape == (200, 8)
    assert summary["mean"].shape == (128,)


def test_same_distribution_with_a_model_gives_no_drift_and_plots(tmp_path, model_baseline):
    window = write_csv(tmp_path / "window.csv", toy_rows(150, seed=7))
    report = monitor_run(MonitorRunSettings.of(baseline=str(model_baseline), data=str(window),
                                               output=str(tmp_path / "r")))
    assert report["status"] == "no violations", report["violations"]
    assert report["embedding_drift"]["p_value"] >= 0.05 and not report["embedding_drift"]["drift"]
    assert report["embedding_drift"]["window_count"] == 150
    window_stats = {f["name"] for f in json.loads((tmp_path / "r" / "statistics.json").read_text())["features"]}
    assert {"predicted_label", "confidence"} <= window_stats
    files = {plot["file"] for plot in report["plots"]}
    assert {"descriptor_length_chars.png", "descriptor_confidence.png", "predicted_label.png",
            "embeddings.png"} <= files
    page = (tmp_path / "r" / "report.html").read_text()
    for name in files:
        assert (tmp_path / "r" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'<img src="{name}"' in page


def test_other_text_gives_embedding_drift(tmp_path, model_baseline):
    window = write_csv(tmp_path / "window.csv", number_rows(150))
    report = monitor_run(MonitorRunSettings.of(baseline=str(model_baseline), data=str(window), permutations=50,
                                               output=str(tmp_path / "r")))
    assert ("embedding_drift", "embedding") in {(v["constraint_check_type"], v["feature_name"])
                                                for v in report["violations"]}
    assert report["embedding_drift"]["p_value"] < 0.05
    assert "MMD" in (tmp_path / "r" / "report.html").read_text()


def test_one_sided_labels_give_label_drift(tmp_path, model_baseline):
    window = write_csv(tmp_path / "window.csv", toy_rows(150, seed=7, labels=("pos", "pos")))
    report = monitor_run(MonitorRunSettings.of(baseline=str(model_baseline), data=str(window), permutations=20,
                                               output=str(tmp_path / "r")))
    label = [v for v in report["violations"] if v["feature_name"] == "predicted_label"]
    assert [v["constraint_check_type"] for v in label] == ["baseline_drift_check"]
    assert float(re.search(r"distance ([0-9.]+)", label[0]["description"]).group(1)) > 0.4  # half the labels moved


def test_baseline_from_another_model(tmp_path, model_baseline, tiny_model, baseline):
    from nlpforge.monitoring.run import BaselineError

    other = other_model(tiny_model, tmp_path / "other")
    window = write_csv(tmp_path / "window.csv", toy_rows(20, seed=7))
    with pytest.raises(BaselineError, match=f"was made with model {tiny_model.output.resolve()}; the window is "
                                            f"scored by model {other.resolve()}; baseline again with --model"):
        monitor_run(MonitorRunSettings.of(baseline=str(model_baseline), data=str(window), model=str(other),
                                          output=str(tmp_path / "r")))
    assert_user_error(run_cli(["monitor", "run", "--baseline", model_baseline, "--data", window, "--model", other,
                               "--output", tmp_path / "r"]), f"baseline again with --model {other}")
    assert_user_error(run_cli(["monitor", "run", "--baseline", baseline, "--data", window, "--model", other,
                               "--output", tmp_path / "r"]), "was made with no model")
    same = monitor_run(MonitorRunSettings.of(baseline=str(model_baseline), data=str(window), permutations=20,
                                             model=str(tiny_model.output), output=str(tmp_path / "r")))
    assert same["model"] == str(tiny_model.output.resolve())


def test_baseline_model_that_is_gone_or_changed(tmp_path, tiny_model):
    import shutil

    model = other_model(tiny_model, tmp_path / "model")
    data = write_csv(tmp_path / "train.csv", toy_rows(60, seed=1))
    suggest_baseline(BaselineSettings.of(data=str(data), model=str(model), output=str(tmp_path / "b")))
    shutil.rmtree(model)
    shutil.copytree(tiny_model.output, model)  # trained again into the same folder
    with pytest.raises(NlpforgeError, match="whose files have changed since; baseline again with --model"):
        monitor_run(MonitorRunSettings.of(baseline=str(tmp_path / "b"), data=str(data), output=str(tmp_path / "r")))
    shutil.rmtree(model)
    assert_user_error(run_cli(["monitor", "run", "--baseline", tmp_path / "b", "--data", data,
                               "--output", tmp_path / "r"]), f"was made with model {model.resolve()}, which no "
                                                             "longer exists")


def test_non_string_inputs_give_data_type_check(tmp_path, baseline):
    capture = DataCapture(tmp_path / "capture", seed=0)
    for row in toy_rows(60, seed=5):
        capture.record("stars", "1.0", percent=100, text=row["text"], prediction={"label": 0, "score": 0.6})
    for value in ({"text": "the movie was great"}, ["the film", "was awful"], 42):
        capture.record("stars", "1.0", percent=100, text=value, prediction={"label": 0, "score": 0.6})
    capture.close()
    report = monitor_run(MonitorRunSettings.of(baseline=str(baseline), capture=str(tmp_path / "capture"),
                                               permutations=20, output=str(tmp_path / "r")))
    types = [v for v in report["violations"] if v["constraint_check_type"] == "data_type_check"]
    assert [v["feature_name"] for v in types] == ["text"] and "3 of 63 inputs" in types[0]["description"]
    strings_only = tmp_path / "strings"
    strings_capture = DataCapture(strings_only, seed=0)
    for row in toy_rows(60, seed=5):
        strings_capture.record("stars", "1.0", percent=100, text=row["text"], prediction={"label": 0})
    strings_capture.close()
    report = monitor_run(MonitorRunSettings.of(baseline=str(baseline), capture=str(strings_only),
                                               permutations=20, output=str(tmp_path / "r2")))
    assert "data_type_check" not in {v["constraint_check_type"] for v in report["violations"]}


def test_lengths_out_of_the_baselines_range(tmp_path, baseline):
    rows = toy_rows(150, seed=7)
    one_long = [dict(r) for r in rows]
    one_long[0]["text"] = " ".join([rows[0]["text"]] * 4)
    report = monitor_run(MonitorRunSettings.of(baseline=str(baseline), data=str(write_csv(tmp_path / "w1.csv",
                                                                                          one_long)),
                                               permutations=20, output=str(tmp_path / "r1")))
    assert "length_out_of_range" not in {v["constraint_check_type"] for v in report["violations"]}
    many_long = [dict(r, text=" ".join([r["text"]] * 4)) if i % 10 == 0 else r for i, r in enumerate(rows)]
    report = monitor_run(MonitorRunSettings.of(baseline=str(baseline), data=str(write_csv(tmp_path / "w2.csv",
                                                                                          many_long)),
                                               permutations=20, output=str(tmp_path / "r2")))
    ranges = {v["feature_name"]: v["description"] for v in report["violations"]
              if v["constraint_check_type"] == "length_out_of_range"}
    assert set(ranges) == {"length_chars", "length_words"} and ranges["length_words"].startswith("15 of 150")
