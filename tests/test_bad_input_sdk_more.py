"""More bad SDK input: each gives one ConfigError naming the problem and the fix, before any job runs."""
import pytest

from nlpforge.errors import ConfigError
from nlpforge.sdk import ProcessingInput, ProcessingOutput, Processor, ScriptProcessor


def processing_script(tmp_path) -> str:
    path = tmp_path / "process.py"
    path.write_text("print('ran')\n", encoding="utf-8")
    return str(path)


def test_output_name_cannot_leave_the_job_folder(tmp_path):
    processor = ScriptProcessor(jobs_root=str(tmp_path / "jobs"))
    with pytest.raises(ConfigError, match="output_name '../../../../evil' must be a plain name"):
        processor.run(code=processing_script(tmp_path),
                      outputs=[ProcessingOutput("/opt/ml/processing/output", output_name="../../../../evil")])
    assert not (tmp_path / "jobs").exists()


@pytest.mark.parametrize("destination", ["file", "/proc/nlpforge-nowhere"])
def test_processing_destination_that_cannot_be_written(tmp_path, destination):
    if destination == "file":
        destination = str(tmp_path / "train.csv")
        (tmp_path / "train.csv").write_text("text,label\n")
    processor = ScriptProcessor(jobs_root=str(tmp_path / "jobs"))
    with pytest.raises(ConfigError, match="ProcessingOutput 'output-1' destination"):
        processor.run(code=processing_script(tmp_path),
                      outputs=[ProcessingOutput("/opt/ml/processing/output", destination=destination)])
    assert not (tmp_path / "jobs").exists()


@pytest.mark.parametrize("settings, message", [
    (dict(max_runtime_in_seconds="10"), "max_runtime_in_seconds must be a whole number"),
    (dict(base_job_name=5), "base_job_name must be a string"),
    (dict(env={"X": None}), "env must be a dict of strings"),
])
def test_processor_argument_types(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message):
        ScriptProcessor(jobs_root=str(tmp_path / "jobs"), **settings)


def test_processing_inputs_must_be_a_list(tmp_path):
    (tmp_path / "data.txt").write_text("x")
    processor = ScriptProcessor(jobs_root=str(tmp_path / "jobs"))
    with pytest.raises(ConfigError, match=r"inputs must be a list such as \[ProcessingInput"):
        processor.run(code=processing_script(tmp_path), inputs=ProcessingInput(str(tmp_path / "data.txt")))


def test_commands_and_arguments_as_strings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"command must be a list such as \['python3'\]"):
        ScriptProcessor(command="python3")
    with pytest.raises(ConfigError, match=r"entrypoint must be a list such as \['python3', 'process.py'\]"):
        Processor(entrypoint="python3 proc.py")
    processor = ScriptProcessor(jobs_root=str(tmp_path / "jobs"))
    with pytest.raises(ConfigError, match=r"arguments must be a list such as \['--input'"):
        processor.run(code=processing_script(tmp_path), arguments="--in x")


def test_monitor_names_cannot_leave_the_jobs_root(tmp_path):
    from nlpforge.sdk import DefaultModelMonitor

    (tmp_path / "train.csv").write_text("text\nhello\n")
    monitor = DefaultModelMonitor(jobs_root=tmp_path / "jobs")
    with pytest.raises(ConfigError, match="job_name '../../escaped-bl' must be 1-63 letters"):
        monitor.suggest_baseline(baseline_dataset=str(tmp_path / "train.csv"), job_name="../../escaped-bl")
    with pytest.raises(ConfigError, match="monitor_schedule_name '../../escaped-sched' must be 1-63 letters"):
        monitor.create_monitoring_schedule(endpoint_input="reviews", monitor_schedule_name="../../escaped-sched",
                                           statistics=str(tmp_path / "statistics.json"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.csv"]


def test_monitoring_schedule_checks_its_baseline_and_output_before_starting(tmp_path):
    from nlpforge.sdk import DefaultModelMonitor

    monitor = DefaultModelMonitor(jobs_root=tmp_path / "jobs")
    with pytest.raises(ConfigError, match="no such baseline folder"):
        monitor.create_monitoring_schedule(endpoint_input="reviews", statistics=str(tmp_path / "nope/statistics.json"))
    (tmp_path / "report.csv").write_text("x")
    with pytest.raises(ConfigError, match="output_s3_uri .*report.csv: is a file"):
        monitor.create_monitoring_schedule(endpoint_input="reviews", statistics=str(tmp_path / "statistics.json"),
                                           output_s3_uri=str(tmp_path / "report.csv"))
    assert monitor.monitoring_schedule_name is None and monitor._thread is None


def test_monitoring_files_and_capture_settings(tmp_path):
    from nlpforge.sdk import DataCaptureConfig, Statistics

    with pytest.raises(ConfigError, match="nope/statistics.json: cannot read it"):
        Statistics.from_s3_uri(str(tmp_path / "nope/statistics.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        Statistics(str(tmp_path / "bad.json"))
    for percentage in ("50", None):
        with pytest.raises(ConfigError, match="sampling_percentage .*give a percentage from 0 to 100"):
            DataCaptureConfig(sampling_percentage=percentage)
    with pytest.raises(ConfigError, match="enable_capture must be True or False, not 'no'"):
        DataCaptureConfig(enable_capture="no")

