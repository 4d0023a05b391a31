"""The monitor over a real endpoint: deploy with SageMaker's DataCaptureConfig, send traffic, run the monitor over
what the server captured."""
import json
import os
from datetime import datetime, timedelta

from conftest import toy_rows, write_csv
from nlpforge.monitoring import BaselineSettings, MonitorRunSettings, monitor_run, suggest_baseline
from nlpforge.sdk import DataCaptureConfig
from nlpforge.sdk.predictor import deploy_model
from serving_support import free_ports
from test_monitor import number_rows


def test_captured_traffic_of_a_deployed_endpoint_is_monitored(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("NLPFORGE_TRACKING", "0")
    data = write_csv(tmp_path / "train.csv", toy_rows(200, seed=1))
    baseline = tmp_path / "baseline"
    suggest_baseline(BaselineSettings.of(data=str(data), model=str(tiny_model.output), output=str(baseline)))
    jobs = tmp_path / "jobs"
    predictor = deploy_model(tiny_model.output, "stars", jobs_root=jobs, **free_ports(),
                             data_capture_config=DataCaptureConfig(enable_capture=True, sampling_percentage=100,
                                                                   destination_s3_uri="s3://bucket/capture"))
    try:
        for row in toy_rows(60, seed=9):
            predictor.predict({"text": row["text"]})
        capture = jobs / "_model_store" / "capture"
        written = next((capture / "stars").rglob("capture.jsonl"))
        records = [json.loads(line) for line in written.read_text().splitlines()]
        assert len(records) == 60 and records[0]["prediction"]["label"] in ("neg", "pos")
        same = monitor_run(MonitorRunSettings.of(baseline=str(baseline), capture=str(capture),
                                                 output=str(tmp_path / "same")))
        assert same["item_count"] == 60 and same["status"] == "no violations", same["violations"]

        for row in number_rows(60):
            predictor.predict({"text": row["text"]})
        after = datetime.fromisoformat(records[-1]["timestamp"]) + timedelta(milliseconds=1)
        other = monitor_run(MonitorRunSettings.of(baseline=str(baseline), capture=str(capture), since=after.isoformat(),
                                                  output=str(tmp_path / "other")))
        assert other["item_count"] == 60 and other["status"] == "violations"
        kinds = {v["constraint_check_type"] for v in other["violations"]}
        assert {"text_content_drift", "baseline_drift_check"} <= kinds, kinds
        assert os.path.getsize(tmp_path / "other" / "report.html") > 0
    finally:
        predictor.delete_endpoint()


def test_capture_is_off_without_a_data_capture_config(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("NLPFORGE_TRACKING", "0")
    jobs = tmp_path / "jobs"
    predictor = deploy_model(tiny_model.output, "quiet", jobs_root=jobs, **free_ports())
    try:
        predictor.predict({"text": "a wonderful film"})
        assert not list((jobs / "_model_store").rglob("capture.jsonl"))
    finally:
        predictor.delete_endpoint()
