"""Metrics, the confusion matrix, the baseline, and `evaluate_model` end to end."""
import json

from conftest import toy_rows, write_csv
from nlpforge.evaluation.baseline import fit_baseline
from nlpforge.evaluation.evaluate import evaluate_model
from nlpforge.evaluation.render import plot_confusion, render_report
from nlpforge.tasks.text_classification import classification_metrics


def test_metrics_on_known_predictions(tmp_path):
    report = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert report["accuracy"] == 0.6
    assert report["per_class"]["b"] == {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert abs(report["macro_f1"] - (0.5 + 0.8 + 0.0) / 3) < 1e-9
    text = render_report(report, "m")
    assert "accuracy 0.6000" in text and "confusion matrix" in text
    png = plot_confusion(report, tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_baseline_learns_the_toy_task():
    rows = toy_rows(200)
    baseline = fit_baseline([r["text"] for r in rows], [r["label"] == "pos" for r in rows])
    test = toy_rows(50, seed=5)
    correct = sum(p == (r["label"] == "pos") for p, r in zip(baseline.predict([r["text"] for r in test]), test))
    assert correct / len(test) >= 0.9


def test_evaluate_reports_model_and_baseline(tiny_model, tmp_path):
    data = write_csv(tmp_path / "test.csv", toy_rows(50, seed=11))
    result = evaluate_model(tiny_model.output, data, output_dir=tmp_path / "eval")
    assert result.model["accuracy"] >= 0.9 and result.baseline["accuracy"] >= 0.9
    assert "transformer vs baseline" in result.text
    assert (tmp_path / "eval" / "confusion_model.png").exists()
    assert (tmp_path / "eval" / "confusion_baseline.png").exists()
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["model"]["examples"] == 50
