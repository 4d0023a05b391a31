"""Monitoring schedules: runs over new capture, list/describe, drift status in the server's metrics, the SDK."""
import json
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import httpx
import pytest

from conftest import assert_user_error, toy_rows, write_csv
from nlpforge.errors import ConfigError, DataError
from nlpforge.monitoring import BaselineSettings, suggest_baseline
from nlpforge.monitoring.schedule import ScheduleSettings, describe_schedule, list_runs, run_schedule
from nlpforge.serving.capture import DataCapture
from serving_support import metric, running_server

FAST = dict(interval=0.05, permutations=20)


def number_texts(n: int) -> list[str]:
    """Texts unlike the toy task's: long strings of codes."""
    return [" ".join(f"#{1000 + 37 * i + j}-X" for j in range(14)) for i in range(n)]


def capture_texts(folder, texts, model="stars", version="1.0") -> None:
    capture = DataCapture(folder)
    for text in texts:
        capture.record(model, version, 100, text, {"label": "pos", "score": 0.9})
    capture.close()


@pytest.fixture
def baseline(tmp_path):
    data = write_csv(tmp_path / "train.csv", toy_rows(120, seed=1))
    suggest_baseline(BaselineSettings.of(data=str(data), output=str(tmp_path / "baseline")))
    return tmp_path / "baseline"


def cli(args, capsys) -> SimpleNamespace:
    """`nlpforge ARGS` in this process: exit code, stdout, stderr."""
    from nlpforge.cli import main

    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as done:
        code = done.code or 0
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def test_each_run_checks_only_the_capture_written_since_the_previous_one(tmp_path, baseline):
    capture_texts(tmp_path / "capture", [r["text"] for r in toy_rows(30, seed=3)])

    def more_traffic(run):
        if run["item_count"] == 30:  # after the first run: new texts, which only the second run may see
            capture_texts(tmp_path / "capture", [r["text"] for r in toy_rows(12, seed=4)])

    runs = run_schedule(ScheduleSettings.of(baseline=str(baseline), capture=str(tmp_path / "capture"),
                                            output=str(tmp_path / "schedule"), runs=2, **FAST), on_run=more_traffic)
    assert [r["item_count"] for r in runs] == [30, 12]
    assert [r["status"] for r in runs] == ["no violations", "no violations"]
    assert runs[0]["since"] is None and runs[1]["since"] == runs[0]["until"]
    folders = sorted(p.name for p in (tmp_path / "schedule" / "runs").iterdir())
    assert folders == [r["run"] for r in runs]
    for run in runs:
        report = json.loads((tmp_path / "schedule" / "runs" / run["run"] / "report.json").read_text())
        assert report["item_count"] == run["item_count"]
        assert (tmp_path / "schedule" / "runs" / run["run"] / "constraint_violations.json").is_file()
    assert json.loads((tmp_path / "schedule" / "schedule.json").read_text())["baseline"] == str(baseline)
    assert json.loads((tmp_path / "schedule" / "latest.json").read_text()) == runs[1]

    again = run_schedule(ScheduleSettings.of(baseline=str(baseline), capture=str(tmp_path / "capture"),
                                             output=str(tmp_path / "schedule"), runs=1, **FAST))
    assert again[0]["since"] == runs[1]["until"] and again[0]["status"] == "no data"
    assert [r["run"] for r in list_runs(tmp_path / "schedule")] == [r["run"] for r in runs + again]


def test_sigterm_stops_the_cli_schedule_between_runs(tmp_path, baseline, capsys):
    capture_texts(tmp_path / "capture", number_texts(25))
    schedule = tmp_path / "schedule"
    process = subprocess.Popen([sys.executable, "-m", "nlpforge", "monitor", "schedule", "--baseline", baseline,
                                "--capture", tmp_path / "capture", "--output", schedule, "--interval", "600",
                                "--permutations", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240

    def first_run_started() -> bool:  # runs/ exists before the first run; its partial folder or the run does not
        return (schedule / "runs").is_dir() and any((schedule / "runs").iterdir())

    while not first_run_started() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)  # during the first run, or while it waits for the next one
    stdout, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr
    assert "stopped after 1 run(s)" in stdout and "Traceback" not in stderr
    (run,) = list_runs(schedule)
    assert run["status"] == "violations" and run["item_count"] == 25
    assert [p.name for p in (schedule / "runs").iterdir()] == [run["run"]]  # no half-written run

    listed = cli(["monitor", "list", schedule], capsys)
    assert listed.returncode == 0
    header, row = listed.stdout.strip().splitlines()
    assert header.split() == ["RUN", "SINCE", "UNTIL", "STATUS", "TEXTS", "VIOLATIONS"]
    assert row.split()[:2] == [run["run"], "-"] and "violations" in row and " 25 " in row
    assert row.split()[-1] == str(run["violations"]) != "0"

    for args in (["monitor", "describe", schedule], ["monitor", "describe", schedule, run["run"]]):
        described = cli(args, capsys)
        assert described.returncode == 0
        assert f"run {run['run']}: violations, 25 texts" in described.stdout
        assert "interval: 600.0" in described.stdout and f"baseline: {baseline}" in described.stdout
        violations = json.loads((schedule / "runs" / run["run"] / "constraint_violations.json").read_text())
        for violation in violations["violations"]:
            assert f"{violation['constraint_check_type']} {violation['feature_name']}:" in described.stdout


def test_bad_schedule_input_is_one_line(tmp_path, baseline, capsys):
    capture_texts(tmp_path / "capture", ["fine text"])
    (tmp_path / "plain").mkdir()
    run_schedule(ScheduleSettings.of(baseline=str(baseline), capture=str(tmp_path / "capture"),
                                     output=str(tmp_path / "schedule"), runs=1, **FAST))
    cases = [
        (["monitor", "list", tmp_path / "plain"], "not a schedule folder (no schedule.json)"),
        (["monitor", "list", tmp_path / "missing"], "no such folder"),
        (["monitor", "describe", tmp_path / "plain"], "not a schedule folder"),
        (["monitor", "describe", tmp_path / "schedule", "2020-01-01T00-00-00-000Z"], "no run '2020-01-01T00-00"),
        (["monitor", "schedule", "--baseline", baseline, "--capture", tmp_path / "nowhere", "--output",
          tmp_path / "s2", "--runs", "1"], "no such capture folder"),
        (["monitor", "schedule", "--baseline", tmp_path / "plain", "--capture", tmp_path / "capture", "--output",
          tmp_path / "s3", "--runs", "1"], "not a baseline folder"),
        (["monitor", "schedule", "--baseline", baseline, "--capture", tmp_path / "capture", "--output",
          tmp_path / "s4", "--model-version", "1.0"], "--model-version needs --model-name"),
        (["monitor", "schedule", "--baseline", baseline, "--capture", tmp_path / "capture", "--output",
          tmp_path / "s5", "--model-name", "../up"], "--model-name '../up'"),
        (["monitor", "schedule", "--baseline", baseline, "--capture", tmp_path / "capture", "--output",
          tmp_path / "s6", "--interval", "0"], "interval must be between 0.01 and 31536000"),
    ]
    for args, message in cases:
        assert_user_error(cli(args, capsys), message)
    assert not (tmp_path / "s3" / "runs").exists() or not any((tmp_path / "s3" / "runs").iterdir())


def test_a_later_failing_run_is_kept_and_the_schedule_goes_on(tmp_path, baseline):
    capture_texts(tmp_path / "capture", ["fine text"])

    def break_the_baseline(run):
        if (baseline / "texts.jsonl").exists():
            (baseline / "texts.jsonl").rename(tmp_path / "texts.jsonl")

    runs = run_schedule(ScheduleSettings.of(baseline=str(baseline), capture=str(tmp_path / "capture"),
                                            output=str(tmp_path / "schedule"), runs=2, **FAST),
                        on_run=break_the_baseline)
    assert runs[0]["status"] != "failed" and runs[1]["status"] == "failed"
    assert "texts.jsonl is missing" in runs[1]["error"]
    assert describe_schedule(tmp_path / "schedule")["run"]["status"] == "failed"

    (tmp_path / "texts.jsonl").rename(baseline / "texts.jsonl")  # fixed: a restart checks the failed run's window
    capture_texts(tmp_path / "capture", ["later text"])
    (again,) = run_schedule(ScheduleSettings.of(baseline=str(baseline), capture=str(tmp_path / "capture"),
                                                output=str(tmp_path / "schedule"), runs=1, **FAST))
    assert again["since"] == runs[0]["until"] and again["item_count"] == 1


def test_drift_status_appears_in_the_servers_metrics(tmp_path, baseline):
    store = tmp_path / "store"
    capture = store / "capture"
    capture_texts(capture, number_texts(25))
    (capture / "other").mkdir()
    (capture / "other" / "monitoring_status.json").write_text("{not json")  # skipped, never a 5xx
    with running_server(store) as server:
        def scrape(name):
            return metric(server, name, model_name="stars", model_version="1.0")

        assert "nlpforge_monitor_drift{" not in httpx.get(server.url("metrics") + "/metrics").text
        start = time.time()
        settings = ScheduleSettings.of(baseline=str(baseline), capture=str(capture), output=str(tmp_path / "s"),
                                       model_name="stars", model_version="1.0", runs=1, **FAST)
        (run,) = run_schedule(settings)
        assert run["status"] == "violations"
        response = httpx.get(server.url("metrics") + "/metrics")
        assert response.status_code == 200
        assert 'nlpforge_monitor_drift{model_name="stars",model_version="1.0"} 1.0' in response.text
        assert scrape("nlpforge_monitor_no_data") == 0
        assert scrape("nlpforge_monitor_violations") == run["violations"] > 0
        assert scrape("nlpforge_monitor_items") == 25
        assert start - 1 <= scrape("nlpforge_monitor_last_run_timestamp_seconds") <= time.time() + 1

        (later,) = run_schedule(settings)  # nothing captured since: the latest status is "no data"
        assert later["status"] == "no data"
        assert scrape("nlpforge_monitor_drift") == 0 and scrape("nlpforge_monitor_no_data") == 1
        assert scrape("nlpforge_monitor_items") == 0

        (capture / "stars" / "1.0" / "monitoring_status.json").unlink()
        assert "nlpforge_monitor_drift{" not in httpx.get(server.url("metrics") + "/metrics").text


def test_sdk_baseline_schedule_and_executions(tmp_path):
    from nlpforge.sdk import Constraints, CronExpressionGenerator, DatasetFormat, DefaultModelMonitor, Predictor
    from nlpforge.serving.metrics import DRIFT_STATUS_FILE

    data = write_csv(tmp_path / "train.csv", [{"review_body": r["text"]} for r in toy_rows(120, seed=1)])
    monitor = DefaultModelMonitor(role="arn:aws:iam::111122223333:role/monitor", instance_count=1,
                                  instance_type="ml.m5.xlarge", volume_size_in_gb=20, max_runtime_in_seconds=3600,
                                  sagemaker_session=None, jobs_root=tmp_path / "jobs")
    job = monitor.suggest_baseline(baseline_dataset=str(data), dataset_format=DatasetFormat.csv(header=True),
                                   output_s3_uri=f"file://{tmp_path / 'baseline'}", wait=True,
                                   text_column="review_body")
    assert job.describe()["ProcessingJobStatus"] == "Completed"
    assert monitor.baseline_statistics().body_dict["dataset"]["item_count"] == 120
    assert isinstance(monitor.suggested_constraints(), Constraints)
    assert monitor.suggested_constraints().body_dict["monitoring_config"]["distribution_constraints"][
        "comparison_threshold"] == 0.1

    capture = tmp_path / "jobs" / "_model_store" / "capture"
    capture_texts(capture, [r["text"] for r in toy_rows(20, seed=5)], model="reviews")
    predictor = Predictor("reviews", jobs_root=tmp_path / "jobs")
    monitor.create_monitoring_schedule(monitor_schedule_name="reviews-monitor", endpoint_input=predictor,
                                       output_s3_uri=str(tmp_path / "reports"),
                                       statistics=monitor.baseline_statistics(),
                                       constraints=monitor.suggested_constraints(),
                                       schedule_cron_expression=CronExpressionGenerator.hourly(),
                                       interval_seconds=0.2)
    deadline = time.monotonic() + 240
    while len(monitor.list_executions()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert monitor.describe_schedule()["MonitoringScheduleStatus"] == "Scheduled"
    monitor.stop_monitoring_schedule()
    described = monitor.describe_schedule()
    assert described["MonitoringScheduleStatus"] == "Stopped"
    assert described["MonitoringScheduleConfig"]["ScheduleConfig"]["ScheduleExpression"] == "cron(0 * ? * * *)"
    executions = monitor.list_executions()
    assert len(executions) >= 2
    first, second = executions[0].describe(), executions[1].describe()
    assert first["ProcessingJobStatus"] == "Completed" and first["ExitMessage"].startswith("Completed: 20 texts")
    assert second["ExitMessage"].startswith("CompletedWithNoData")
    assert executions[0].constraint_violations().body_dict == {"violations": []}
    assert executions[0].statistics().body_dict["dataset"]["item_count"] == 20
    assert described["LastMonitoringExecutionSummary"]["ProcessingJobName"] == executions[-1].run["run"]
    assert (capture / "reviews" / DRIFT_STATUS_FILE).is_file()
    monitor.delete_monitoring_schedule()
    assert not (capture / "reviews" / DRIFT_STATUS_FILE).exists()
    assert (tmp_path / "reports" / "runs" / executions[0].run["run"] / "report.html").is_file()


def test_sdk_bad_input(tmp_path):
    from nlpforge.sdk import DatasetFormat, DefaultModelMonitor
    from nlpforge.sdk.model_monitor import interval_of

    assert interval_of("cron(0 * ? * * *)") == (3600.0, None)
    assert interval_of("cron(0 5 ? * * *)") == (86400.0, None)
    assert interval_of("cron(0 0/6 ? * * *)") == (21600.0, None)
    assert interval_of("NOW")[1] == 1
    data = write_csv(tmp_path / "train.csv", toy_rows(20))
    monitor = DefaultModelMonitor(role="r", jobs_root=tmp_path / "jobs")
    with pytest.raises(ConfigError, match="S3 URI; nlpforge runs locally"):
        monitor.suggest_baseline(baseline_dataset=str(data), dataset_format=DatasetFormat.csv(),
                                 output_s3_uri="s3://bucket/baseline")
    with pytest.raises(ConfigError, match="header=False"):
        monitor.suggest_baseline(baseline_dataset=str(data), dataset_format=DatasetFormat.csv(header=False))
    with pytest.raises(DataError, match="review_body"):
        monitor.suggest_baseline(baseline_dataset=str(data), dataset_format=DatasetFormat.csv(),
                                 text_column="review_body")
    with pytest.raises(ConfigError, match="call suggest_baseline"):
        monitor.create_monitoring_schedule(endpoint_input="reviews")
    monitor.suggest_baseline(baseline_dataset=str(data), dataset_format=DatasetFormat.csv(),
                             output_s3_uri=str(tmp_path / "b"))
    with pytest.raises(ConfigError, match="schedule_cron_expression 'rate"):
        monitor.create_monitoring_schedule(endpoint_input="reviews", schedule_cron_expression="rate(5 minutes)")
    with pytest.raises(ConfigError, match="endpoint_input"):
        monitor.create_monitoring_schedule(endpoint_input=None)
    with pytest.raises(ConfigError, match="instance_type"):
        DefaultModelMonitor(role="r", instance_type="m5.large")
    with pytest.raises(ConfigError, match="no monitoring schedule"):
        monitor.describe_schedule()
    assert monitor.list_executions() == []


@pytest.mark.parametrize("name, content, message", [
    ("runs/r1/run.json", "[1]", "run.json: is not a run record"),
    ("runs/r1/run.json", "{}", "run.json: is not a run record"),
    ("runs/r1/constraint_violations.json", "[]", "constraint_violations.json: is not a violations report"),
    ("runs/r1/constraint_violations.json", '{"violations": 3}', "is not a violations report"),
    ("schedule.json", "[]", "schedule.json: is not a schedule"),
])
def test_a_damaged_schedule_file_is_named(tmp_path, name, content, message):
    from nlpforge.monitoring.schedule import ScheduleError

    (tmp_path / "runs" / "r1").mkdir(parents=True)
    (tmp_path / "schedule.json").write_text('{"baseline": "b"}')
    (tmp_path / "runs" / "r1" / "run.json").write_text('{"run": "r1", "status": "ok"}')
    (tmp_path / name).write_text(content)
    with pytest.raises(ScheduleError, match=message):
        describe_schedule(tmp_path)
