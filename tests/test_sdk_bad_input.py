"""Bad input to the SDK and the tuner: each gets an nlpforge error naming the problem, before anything is made."""
import http.server
import json
import re
import threading
import time

import pytest

from conftest import toy_rows, write_csv
from nlpforge.errors import ConfigError, EndpointError, TrackingError, TrainingJobError, TuningError
from nlpforge.sdk import Estimator, Predictor, ProfilerRule, Rule, TextClassifier, rule_configs
from nlpforge.sdk.estimator import link_channel
from nlpforge.sdk.jobs import describe_job, wait_for_job
from nlpforge.sdk.predictor import deploy_model
from nlpforge.tracking.runs import find_run
from nlpforge.tuning import CategoricalParameter, HyperparameterTuner
from serving_support import free_port
from test_tuning_tuner import no_tracking  # noqa: F401  (an autouse fixture: no MLflow records)


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "train.py"
    path.write_text("import os\nprint('acc=0.5')\n"
                    "open(os.path.join(os.environ['SM_MODEL_DIR'], 'm'), 'w').write('x')\n")
    return str(path)


@pytest.fixture
def jobs(tmp_path):
    return tmp_path / "jobs"


def made(jobs) -> list[str]:
    """The job folders under a jobs root."""
    return sorted(p.name for p in jobs.iterdir() if not p.name.startswith("_")) if jobs.is_dir() else []


# -- endpoints -----------------------------------------------------------------------------------

def test_a_predictor_name_cannot_reach_outside_the_jobs_root(tmp_path, jobs):
    victim = tmp_path / "settings.json"
    victim.write_text("{}")
    with pytest.raises(EndpointError, match="endpoint_name '../../settings' must be 1-63 letters"):
        Predictor("../../settings", jobs_root=str(jobs)).delete_endpoint()
    assert victim.exists()


class NotServed(http.server.BaseHTTPRequestHandler):
    """A management API that serves no model: every DELETE is a 404."""

    def do_DELETE(self):  # noqa: N802 (http.server's name)
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"message": "Model not found"}')

    def log_message(self, *args):
        pass


def test_deleting_an_endpoint_that_does_not_exist_says_so(tmp_path, jobs):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotServed)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    # Another endpoint's record names the jobs root's server, where a name without a record is looked for.
    (jobs / "_endpoints").mkdir(parents=True)
    (jobs / "_endpoints" / "stars.json").write_text(json.dumps({"host": "127.0.0.1", "management_port": port}))
    try:
        with pytest.raises(EndpointError, match=f"no endpoint named 'stras'.*127.0.0.1:{port} does not serve it"):
            Predictor("stras", jobs_root=str(jobs)).delete_endpoint()
    finally:
        server.shutdown()
    assert (jobs / "_endpoints" / "stars.json").exists()
    # Deleted already: no record, and the server deploy() started is gone with it.
    with pytest.raises(EndpointError, match="no endpoint named 'stars'.*does not answer"):
        Predictor("stars", jobs_root=str(tmp_path / "other"), management_port=free_port()).delete_endpoint()


@pytest.mark.parametrize("arguments, message", [
    (dict(initial_instance_count="1"), "initial_instance_count must be a whole number of at least 1, not '1'"),
    (dict(initial_instance_count=None), "initial_instance_count must be a whole number"),
    (dict(endpoint_name=None), "endpoint_name None must be 1-63 letters"),
    (dict(inference_port="abc"), "inference_port must be a port number from 1 to 65535, not 'abc'"),
    (dict(server_command="nlpforge serve"), "server_command must be a list of strings"),
    (dict(server_command=["/no/such/server"]), "cannot start the model server /no/such/server"),
])
def test_bad_deploy_arguments(tmp_path, jobs, arguments, message):
    model = tmp_path / "model"
    model.mkdir()
    (model / "nlpforge.json").write_text("{}")
    ports = dict(inference_port=free_port(), management_port=free_port(), metrics_port=free_port())
    values = {"endpoint_name": "ep", "initial_instance_count": 1, **ports, **arguments}
    with pytest.raises(EndpointError, match=message):
        deploy_model(model, values.pop("endpoint_name"), values.pop("initial_instance_count"), jobs_root=str(jobs),
                     startup_timeout=5, **values)


@pytest.mark.parametrize("data, initial_args, message", [
    ({"text", "a set"}, None, "JSONSerializer cannot send a set"),
    ("good", "text/csv", "initial_args must be a dict"),
])
def test_bad_predict_arguments(jobs, data, initial_args, message):
    with pytest.raises(EndpointError, match=message):
        Predictor("ep", jobs_root=str(jobs), inference_port=free_port()).predict(data, initial_args=initial_args)


def test_numpy_arrays_are_sent_as_lists_by_every_serializer():
    """SageMaker's serializers take numpy arrays; a 2-D array is CSV rows, a 1-D one a text a line."""
    import numpy as np

    from nlpforge.sdk.serializers import CSVSerializer, JSONLinesSerializer, JSONSerializer

    texts = np.array(["Loved it", "Broke, sent back"])
    assert json.loads(JSONSerializer().serialize(texts)) == ["Loved it", "Broke, sent back"]
    assert json.loads(JSONSerializer().serialize({"text": texts, "k": np.int64(3)})) == {
        "text": ["Loved it", "Broke, sent back"], "k": 3}
    assert JSONLinesSerializer().serialize(texts) == b'"Loved it"\n"Broke, sent back"'
    assert CSVSerializer().serialize(texts) == b'Loved it\n"Broke, sent back"\n'
    assert CSVSerializer().serialize(np.array([["a", "b"], ["c", "d"]])) == b"a,b\nc,d\n"


# -- estimator arguments -------------------------------------------------------------------------

@pytest.mark.parametrize("arguments, message", [
    (dict(entry_point=None), "entry_point must be a path"),
    (dict(hyperparameters=[1, 2]), "hyperparameters must be a dict"),
    (dict(environment=["A=1"]), "environment must be a dict"),
    (dict(metric_definitions=[{"Name": "acc", "Regex": "acc=(["}]), "Regex 'acc=([' is not a valid regular"),
    (dict(metric_definitions={"Name": "acc", "Regex": "x"}), "metric_definitions must be a list"),
    (dict(use_spot_instances=True, spot_interruptions="soon"), "spot_interruptions must be a number, not 'soon'"),
    (dict(use_spot_instances=True, spot_interruptions=[-5]), "each must be positive"),
    (dict(rules=Rule.sagemaker(rule_configs.overfit())), "rules takes a list"),
])
def test_bad_estimator_arguments(script, jobs, arguments, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Estimator(**{"entry_point": script, "jobs_root": str(jobs), **arguments})


def test_spot_interruptions_given_as_one_value_are_a_list(script, jobs):
    est = Estimator(entry_point=script, jobs_root=str(jobs), use_spot_instances=True, spot_interruptions="600")
    assert est.spot.interruptions == [600.0]


@pytest.mark.parametrize("config, message", [
    ("stars-experiment", "experiment_config must be a dict of strings"),
    ({"ExperimentName": 5}, "experiment_config must be a dict of strings"),
    ({"Experiment": "stars"}, "experiment_config has unknown key(s) Experiment"),
])
def test_bad_experiment_config_is_refused_before_the_job(script, jobs, config, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Estimator(entry_point=script, jobs_root=str(jobs)).fit(logs=False, experiment_config=config)
    assert made(jobs) == []


@pytest.mark.parametrize("argument", ["output_path", "checkpoint_local_path", "jobs_root"])
def test_a_file_where_a_folder_is_wanted_is_refused_before_the_job(tmp_path, script, argument):
    values = {"jobs_root": str(tmp_path / "jobs"), argument: script}
    with pytest.raises(ConfigError, match=f"{argument} .*train.py: is a file; name a folder"):
        Estimator(entry_point=script, **values).fit(logs=False, job_name="job")
    assert made(tmp_path / "jobs") == []


# -- the runner ends every job ---------------------------------------------------------------------

def test_a_job_that_cannot_start_ends_failed_with_its_reason(script, jobs):
    est = Estimator(entry_point=script, jobs_root=str(jobs))
    est.metric_definitions = [{"Name": "acc", "Regex": "acc=(["}]  # past the constructor's check
    with pytest.raises(TrainingJobError, match="could not start.*not a valid regular expression"):
        est.fit(logs=False, job_name="job")
    assert wait_for_job("job", jobs, timeout=5)["TrainingJobStatus"] == "Failed"


def test_a_model_that_cannot_be_packed_fails_the_job(tmp_path, jobs):
    # The script puts a file where the job's output folder goes under output_path.
    path = tmp_path / "train.py"
    path.write_text(f"open({str(tmp_path / 'out' / 'job' / 'output')!r}, 'w').close()\n")
    (tmp_path / "out" / "job").mkdir(parents=True)
    est = Estimator(entry_point=str(path), jobs_root=str(jobs), output_path=str(tmp_path / "out"))
    with pytest.raises(TrainingJobError, match="cannot write model.tar.gz under output_path"):
        est.fit(logs=False, job_name="job")
    assert describe_job("job", jobs)["TrainingJobStatus"] == "Failed"


# -- built-in estimators: channels, hyperparameters, rules, attach ---------------------------------

@pytest.fixture
def train_csv(tmp_path):
    return write_csv(tmp_path / "v1" / "train.csv", toy_rows(8))


def classifier(jobs, **settings):
    return TextClassifier(base_model="bert-tiny", jobs_root=str(jobs), **settings)


def test_channel_errors_leave_no_job_folder(tmp_path, jobs, train_csv):
    two = tmp_path / "two"
    write_csv(two / "a.csv", toy_rows(4))
    write_csv(two / "b.csv", toy_rows(4))
    for inputs, message in [({"train": train_csv, "valdation": train_csv}, "has no channel 'valdation'"),
                            ({"validation": train_csv}, "needs a 'train' channel"),
                            ({"train": two}, "holds 2 data files")]:
        with pytest.raises(ConfigError, match=message):
            classifier(jobs).fit({k: str(v) for k, v in inputs.items()}, logs=False, job_name="stars")
    assert made(jobs) == []


def test_a_channel_link_left_by_an_earlier_fit_is_replaced(tmp_path, train_csv):
    newer = write_csv(tmp_path / "v2" / "train.csv", toy_rows(8))
    folder = tmp_path / "data"
    folder.mkdir()
    target = tmp_path / "input" / "train"
    link_channel(train_csv, target)
    link_channel(newer, target)
    assert [p.resolve() for p in target.iterdir()] == [newer]
    link_channel(folder, target)
    assert target.resolve() == folder
    link_channel(tmp_path / "v1", target)
    assert target.resolve() == tmp_path / "v1"


def test_builtin_hyperparameters_and_rules_are_checked_when_given(jobs):
    est = classifier(jobs)
    with pytest.raises(ConfigError, match="epochs must be at least 1"):
        est.set_hyperparameters(epochs=0)
    assert "epochs" not in est.hyperparameters()
    with pytest.raises(ConfigError, match="got rules twice"):
        classifier(jobs, hyperparameters={"rules": ["Overfit"]}, rules=[Rule.sagemaker(rule_configs.overfit())])
    with pytest.raises(TuningError, match="hyperparameter range 'epochs': .*epochs must be at least 1"):
        HyperparameterTuner(est, "validation_accuracy", {"epochs": CategoricalParameter([0, 1])}, strategy="Grid")
    assert made(jobs) == []


@pytest.mark.parametrize("make, message", [
    (lambda: Rule.sagemaker("LossNotDecreasing"), "Rule.sagemaker takes a rule configuration such as"),
    (lambda: Rule.sagemaker({"DebugRuleConfiguration": {"RuleConfigurationName": "Overfit"}}),
     "Rule.sagemaker takes a rule configuration"),
    (lambda: Rule.sagemaker(rule_configs.overfit(), rule_parameters="patience=3"), "rule_parameters must be a dict"),
    (lambda: Rule.sagemaker(rule_configs.overfit(), rule_parameters={"patience": "3,start_step=9"}),
     "cannot hold ',', '=' or ':'"),
    (lambda: Rule.sagemaker(rule_configs.ProfilerReport()), "ProfilerReport is a rule for ProfilerRule.sagemaker"),
    (lambda: ProfilerRule.sagemaker(rule_configs.overfit()), "Overfit is a rule for Rule.sagemaker"),
])
def test_bad_rules(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_attach_gives_a_builtin_job_its_own_estimator(script, jobs, train_csv):
    classifier(jobs).prepare_job({"train": str(train_csv)}, "stars")
    Estimator(entry_point=script, jobs_root=str(jobs)).prepare_job(None, "scripted")
    attached = Estimator.attach("stars", jobs_root=str(jobs))
    assert type(attached) is TextClassifier and attached.hyperparameters()["model"] == "bert-tiny"
    attached.prepare_job({"train": str(train_csv)}, "again")  # a built-in job, not the launcher as a script
    assert (jobs / "again" / "input" / "config" / "nlpforge-job.json").exists()
    with pytest.raises(TrainingJobError, match="job scripted was run by Estimator, not TextClassifier"):
        TextClassifier.attach("scripted", jobs_root=str(jobs))


# -- the tuner -------------------------------------------------------------------------------------

METRICS = [{"Name": "acc", "Regex": r"acc=([0-9.]+)"}, {"Name": "loss", "Regex": r"loss=([0-9.]+)"}]


@pytest.mark.parametrize("arguments, message", [
    (dict(estimator=None), "the tuner's estimator must be an nlpforge.sdk Estimator"),
    (dict(random_seed="x"), "random_seed must be an integer, not 'x'"),
    (dict(metric_definitions=[{"Name": "acc", "Regex": "acc=(["}]), "is not a valid regular expression"),
    (dict(metric_definitions=[{"Name": "acc"}]), "each metric definition must be"),
])
def test_bad_tuner_arguments(script, jobs, arguments, message):
    values = dict(estimator=Estimator(entry_point=script, jobs_root=str(jobs)), objective_metric_name="acc",
                  hyperparameter_ranges={"q": CategoricalParameter([1, 2])}, metric_definitions=METRICS, max_jobs=1)
    with pytest.raises(TuningError, match=message):
        HyperparameterTuner(**{**values, **arguments})


def tuner(script, jobs, objective="acc", values=(1,), **settings):
    return HyperparameterTuner(Estimator(entry_point=script, jobs_root=str(jobs)), objective,
                               {"q": CategoricalParameter(list(values))}, metric_definitions=METRICS,
                               strategy="Grid", **settings)


def test_a_tuning_job_whose_trials_all_fail_raises_and_keeps_its_study(script, jobs):
    failing = tuner(script, jobs, objective="loss")  # the script never prints loss=
    with pytest.raises(TuningError, match="tuning job t has no completed trial: 1 of 1 failed, the first because "
                                          r"t-000-\w+ never logged 'loss'"):
        failing.fit(job_name="t")
    assert failing.describe()["TrainingJobStatusCounters"] == {"FAIL": 1}


def test_a_tuning_job_keeps_its_objective_and_ranges(script, jobs):
    tuner(script, jobs).fit(job_name="t")
    for changed, message in [(dict(objective="loss"), "objective_metric_name 'acc' \\(now 'loss'\\)"),
                             (dict(objective_type="Minimize"), "objective_type 'Maximize' \\(now 'Minimize'\\)"),
                             (dict(values=(1, 2)), "ranges")]:
        with pytest.raises(TuningError, match=f"tuning job t already ran with {message}.*use a new job name"):
            tuner(script, jobs, **changed).fit(job_name="t")
    started = time.monotonic()
    tuner(script, jobs).fit(job_name="t")  # the same tuning job resumes: its one trial is done
    assert time.monotonic() - started < 5


def test_a_script_name_that_is_no_job_name_still_names_the_tuning_job(script, jobs, tmp_path):
    renamed = tmp_path / "train_me.py"
    renamed.write_text(open(script).read())
    tuning = tuner(str(renamed), jobs)
    tuning.fit()
    assert tuning.latest_tuning_job.startswith("train-me-")
    assert tuning.describe()["TrainingJobStatusCounters"] == {"COMPLETE": 1}


# -- tracking and job records ----------------------------------------------------------------------

def test_lookups_by_a_name_that_is_not_one(jobs):
    with pytest.raises(TrackingError, match="find_run takes a training job name or an MLflow run id, not None"):
        find_run(None, root=str(jobs))
    with pytest.raises(TrainingJobError, match="'../x' is not a training job name"):
        describe_job("../x", jobs)
