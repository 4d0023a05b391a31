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


def training_script(tmp_path, name: str = "train.py") -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("print('trained')\n", encoding="utf-8")
    return str(path)


def test_transform_output_path_that_is_a_file(tmp_path):
    from nlpforge.errors import EndpointError
    from nlpforge.sdk import Transformer

    (tmp_path / "train.csv").write_text("text\nhello\n")
    with pytest.raises(EndpointError, match="output_path .*train.csv: is a file"):
        Transformer("model", output_path=str(tmp_path / "train.csv"))
    transformer = Transformer("model")
    with pytest.raises(EndpointError, match="output_path .*train.csv: is a file"):
        transformer.transform(str(tmp_path / "train.csv"), output_path=str(tmp_path / "train.csv"))


def test_instance_count_has_a_limit(tmp_path):
    from nlpforge.sdk import Estimator

    with pytest.raises(ConfigError, match="instance_count must be at most 256 .*not 1000000"):
        Estimator(entry_point=training_script(tmp_path), instance_count=10**6, jobs_root=str(tmp_path / "jobs"))


@pytest.mark.parametrize("name", ["nnodes", "node_rank", "master-addr", "master_port"])
def test_builtin_estimators_leave_the_hosts_to_instance_count(tmp_path, name):
    from nlpforge.sdk import TextClassifier

    with pytest.raises(ConfigError, match=f"hyperparameter {name} is set by the job: instance_count sets the hosts"):
        TextClassifier(hyperparameters={name: 2}, jobs_root=str(tmp_path / "jobs"))


def test_builtin_estimators_keep_processes_per_host(tmp_path):
    from nlpforge.sdk import TextClassifier

    estimator = TextClassifier(hyperparameters={"nproc": 2}, jobs_root=str(tmp_path / "jobs"))
    assert estimator.hyperparameters()["nproc"] == 2


@pytest.mark.parametrize("hyperparameters, message", [
    ({1: 2}, "hyperparameter name 1 must be a string"),
    ({"a": {1, 2}}, "hyperparameter 'a': {1, 2} cannot be written as JSON"),
])
def test_hyperparameter_types(tmp_path, hyperparameters, message):
    from nlpforge.sdk import Estimator, TextClassifier

    with pytest.raises(ConfigError, match=message):
        Estimator(entry_point=training_script(tmp_path), hyperparameters=hyperparameters,
                  jobs_root=str(tmp_path / "jobs"))
    with pytest.raises(ConfigError, match=message):
        TextClassifier(hyperparameters=hyperparameters, jobs_root=str(tmp_path / "jobs"))
    estimator = Estimator(entry_point=training_script(tmp_path), jobs_root=str(tmp_path / "jobs"))
    with pytest.raises(ConfigError, match="hyperparameter 'a'"):
        estimator.set_hyperparameters(a={1, 2})


def test_s3_output_paths_are_refused(tmp_path, monkeypatch):
    from nlpforge.errors import EndpointError
    from nlpforge.sdk import Estimator, Transformer

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="output_path s3://bucket/out is an S3 URI"):
        Estimator(entry_point=training_script(tmp_path), output_path="s3://bucket/out", jobs_root="jobs")
    with pytest.raises(EndpointError, match="output_path s3://bucket/out is an S3 URI"):
        Transformer("model", output_path="s3://bucket/out")
    assert not (tmp_path / "s3:").exists()


def test_entry_point_must_be_inside_source_dir(tmp_path):
    from nlpforge.sdk import PyTorch

    training_script(tmp_path, "harness.py")
    training_script(tmp_path, "src/train.py")
    with pytest.raises(ConfigError, match="entry_point '../harness.py' is outside source_dir"):
        PyTorch(entry_point="../harness.py", source_dir=str(tmp_path / "src"), jobs_root=str(tmp_path / "jobs"))


@pytest.mark.parametrize("settings, message", [
    (dict(use_spot_instances="yes"), "use_spot_instances must be True or False, not 'yes'"),
    (dict(install_requirements="no"), "install_requirements must be True or False, not 'no'"),
    (dict(environment={"X": None}), "environment must be a dict of strings"),
    (dict(base_job_name=5), "base_job_name must be a string"),
])
def test_estimator_argument_types(tmp_path, settings, message):
    from nlpforge.sdk import Estimator

    with pytest.raises(ConfigError, match=message):
        Estimator(entry_point=training_script(tmp_path), jobs_root=str(tmp_path / "jobs"), **settings)


def test_transform_input_on_s3_and_one_text_column(tmp_path, monkeypatch):
    from nlpforge.errors import EndpointError
    from nlpforge.sdk import Transformer

    transformer = Transformer("model", output_path=str(tmp_path / "out"))
    with pytest.raises(EndpointError, match="input s3://b/k.csv is an S3 URI; nlpforge does not read S3, give a local"):
        transformer.transform("s3://b/k.csv")
    (tmp_path / "reviews.csv").write_text("review_body\nhello\n")
    seen = {}
    monkeypatch.setattr("nlpforge.sdk.transform.transform_files",
                        lambda model, files, output, accept, columns: seen.setdefault("columns", columns) and [])
    transformer.transform(str(tmp_path / "reviews.csv"), text_columns="review_body")
    assert seen["columns"] == ["review_body"]


@pytest.mark.parametrize("content_type, message", [
    ("text/plain", "content_type 'text/plain' is not one batch transform reads; use one of text/csv"),
    ("application/jsonlines", "content_type application/jsonlines says jsonl, but reviews.csv is a csv file"),
    (5, "content_type 5 is not one batch transform reads"),
])
def test_transform_content_type_must_be_one_it_reads_and_fit_the_files(tmp_path, monkeypatch, content_type, message):
    from nlpforge.errors import EndpointError
    from nlpforge.sdk import Transformer

    (tmp_path / "reviews.csv").write_text("text\nhello\n")
    monkeypatch.setattr("nlpforge.sdk.transform.transform_files", lambda *args: pytest.fail("predicted anyway"))
    with pytest.raises(EndpointError, match=message):
        Transformer("model", output_path=str(tmp_path / "out")).transform(str(tmp_path / "reviews.csv"),
                                                                          content_type=content_type)


def test_transform_content_type_with_parameters_that_fits_the_files(tmp_path, monkeypatch):
    from nlpforge.sdk import Transformer

    (tmp_path / "reviews.csv").write_text("text\nhello\n")
    monkeypatch.setattr("nlpforge.sdk.transform.transform_files", lambda *args: ["done"])
    assert Transformer("model", output_path=str(tmp_path / "out")).transform(
        str(tmp_path / "reviews.csv"), content_type="text/csv; charset=utf-8") == ["done"]


def test_debugger_rule_name_must_be_a_string():
    from nlpforge.sdk.debugger import Rule

    with pytest.raises(ConfigError, match="rule_to_invoke 5 must be one rule's name"):
        Rule.sagemaker({"DebugRuleConfiguration": {"RuleParameters": {"rule_to_invoke": 5}}})


@pytest.mark.parametrize("settings, message", [
    (dict(initial_instance_count=17), "initial_instance_count must be between 1 and 16"),
    (dict(data_capture_config="yes"), "data_capture_config must be a DataCaptureConfig"),
])
def test_deploy_arguments(tmp_path, settings, message):
    from nlpforge.errors import EndpointError
    from nlpforge.sdk.predictor import deploy_model

    with pytest.raises(EndpointError, match=message):
        deploy_model(str(tmp_path / "model"), "reviews", jobs_root=str(tmp_path / "jobs"),
                     **{"initial_instance_count": 1, **settings})
    assert not (tmp_path / "jobs").exists()
