"""Bad SDK input found by calling every public class and method with wrong arguments: each is refused in one line
that names the argument and the fix, before anything is written; nothing the user gave is changed."""
import http.server
import sys
import threading

import pytest

from nlpforge.errors import ConfigError, EndpointError
from nlpforge.sdk import (CronExpressionGenerator, CSVDeserializer, CSVSerializer, DefaultModelMonitor, Estimator,
                          IdentitySerializer, JSONLinesSerializer, Predictor, ProcessingInput, ProcessingOutput,
                          Processor, ProfilerRule, PyTorchModel, Rule, StringDeserializer, Transformer, rule_configs)
from nlpforge.sdk.estimator import channel_paths
from nlpforge.sdk.model_monitor import interval_of


# -- serializers and predict ---------------------------------------------------------------------

def test_csv_and_jsonlines_serializers_send_records_not_a_dicts_keys():
    # Iterating a dict gives its keys: the endpoint answered for the text "text", not for the review.
    with pytest.raises(EndpointError, match="CSVSerializer sends a list of records, one a line, not a dict; give a "
                                            "list of texts or of rows, or use JSONSerializer"):
        CSVSerializer().serialize({"text": "Loved it"})
    for data in (5, None):
        with pytest.raises(EndpointError, match="CSVSerializer sends a list of records"):
            CSVSerializer().serialize(data)
        with pytest.raises(EndpointError, match="JSONLinesSerializer sends a list of records"):
            JSONLinesSerializer().serialize(data)
    # One dict is one JSON line, the record itself.
    assert JSONLinesSerializer().serialize({"features": ["Loved it"]}) == b'{"features": ["Loved it"]}'
    assert JSONLinesSerializer().serialize([{"a": 1}, {"b": 2}]) == b'{"a": 1}\n{"b": 2}'
    assert CSVSerializer().serialize(["Loved it", "Broke"]) == b"Loved it\nBroke\n"


@pytest.mark.parametrize("content_type", [None, "", "  ", 5])
def test_identity_serializer_needs_a_content_type(content_type):
    with pytest.raises(EndpointError, match="IdentitySerializer's content_type must be a media type such as "
                                            "'text/plain'"):
        IdentitySerializer(content_type)


class Answers(http.server.BaseHTTPRequestHandler):
    """An inference API that answers every prediction with `body` as `content_type`."""

    body, content_type = b"", ""

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def answering(tmp_path):
    """(set the answer, a Predictor for the server that gives it)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def answer(body: bytes, content_type: str):
        Answers.body, Answers.content_type = body, content_type

    def predictor(**arguments):
        return Predictor("ep", jobs_root=str(tmp_path / "jobs"), inference_port=server.server_address[1], **arguments)

    yield answer, predictor
    server.shutdown()


@pytest.mark.parametrize("body, content_type, deserializer, message", [
    (b"label,score\npos,0.9\n", "text/csv", None, "answered text/csv that JSONDeserializer cannot read"),
    (b"\xff\xfe binary", "application/json", None, "answered application/json that JSONDeserializer cannot read"),
    (b"\xff\xfe binary", "text/plain", StringDeserializer(), "answered text/plain that StringDeserializer cannot read"),
    (b"\xff\xfe binary", "text/csv", CSVDeserializer(), "answered text/csv that CSVDeserializer cannot read"),
])
def test_an_answer_the_deserializer_cannot_read_is_an_endpoint_error(answering, body, content_type, deserializer,
                                                                     message):
    answer, predictor = answering
    answer(body, content_type)
    with pytest.raises(EndpointError, match=f"endpoint 'ep' {message}.*give a deserializer for"):
        predictor(deserializer=deserializer).predict(["Loved it"])
    answer(b'[{"label": "pos"}]', "application/json")
    assert predictor(deserializer=deserializer).predict(["Loved it"]) is not None


# -- batch transform ---------------------------------------------------------------------------------

def test_transform_input_without_data_files_is_refused(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    empty = tmp_path / "empty"
    (empty / "nested").mkdir(parents=True)
    (empty / "nested" / "reviews.csv").write_text("text\nLoved it\n")
    (empty / ".hidden.csv").write_text("text\nLoved it\n")
    with pytest.raises(EndpointError, match="batch transform input .*empty holds no data files"):
        Transformer(str(model), output_path=str(tmp_path / "out")).transform(str(empty))
    assert not (tmp_path / "out").exists()


def test_transform_blank_output_path_and_a_model_dir_that_is_no_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EndpointError, match="output_path '  ' is blank; give the folder for the .out files"):
        Transformer(str(tmp_path), output_path="  ")
    with pytest.raises(EndpointError, match="output_path '' is blank"):
        Transformer(str(tmp_path), output_path=str(tmp_path / "out")).transform(str(tmp_path), output_path="")
    with pytest.raises(EndpointError, match="model_dir must be the path of a model folder"):
        Transformer(None, output_path=str(tmp_path / "out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -- estimators and channels ----------------------------------------------------------------------------

@pytest.fixture
def script(tmp_path):
    path = tmp_path / "train.py"
    path.write_text("print('trained')\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("argument", ["output_path", "checkpoint_local_path"])
def test_estimator_blank_output_folders_are_refused(tmp_path, monkeypatch, script, argument):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"{argument} '  ' is blank; give the folder to write to"):
        Estimator(script, jobs_root=str(tmp_path / "jobs"), **{argument: "  "})


def test_estimator_tracking_must_be_a_bool(tmp_path, script):
    with pytest.raises(ConfigError, match="tracking must be True or False, not 'no'"):
        Estimator(script, jobs_root=str(tmp_path / "jobs"), tracking="no")


@pytest.mark.parametrize("path", ["", "  "])
def test_a_blank_channel_path_is_refused(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)  # Path("") is the working folder, which would have become the channel
    with pytest.raises(ConfigError, match="channel 'train': .*(blank|does not exist)"):
        channel_paths({"train": path})


# -- Debugger rules ---------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: Rule.sagemaker(rule_configs.overfit(), name=""),
    lambda: Rule.sagemaker(rule_configs.overfit(), name="  "),
    lambda: ProfilerRule.sagemaker(rule_configs.ProfilerReport(), name=5),
    lambda: ProfilerRule.sagemaker(rule_configs.ProfilerReport(), name=""),
])
def test_a_rule_name_must_be_a_name(make):
    with pytest.raises(ConfigError, match="name .* must be a string naming the rule"):
        make()


# -- Model Monitor -------------------------------------------------------------------------------------

def test_cron_expressions_give_their_own_interval():
    assert interval_of(CronExpressionGenerator.daily_every_x_hours(3)) == (3 * 3600.0, None)
    assert interval_of("cron(0 */3 ? * * *)") == (3 * 3600.0, None)  # was one hour
    assert interval_of(CronExpressionGenerator.hourly()) == (3600.0, None)
    assert interval_of(CronExpressionGenerator.daily(5)) == (24 * 3600.0, None)
    for expression in (CronExpressionGenerator.daily_every_x_hours(0), CronExpressionGenerator.daily(99),
                       CronExpressionGenerator.daily_every_x_hours(30)):
        with pytest.raises(ConfigError, match=r"schedule_cron_expression .*: use CronExpressionGenerator"):
            interval_of(expression)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("baseline")
    (folder / "train.csv").write_text("text\n" + "".join(f"loved it {i}\n" for i in range(20)))
    monitor = DefaultModelMonitor(jobs_root=folder / "jobs")
    return monitor.suggest_baseline(baseline_dataset=str(folder / "train.csv")).output / "statistics.json"


@pytest.mark.parametrize("arguments, message", [
    (dict(interval_seconds=0), "interval_seconds must be a number of seconds between runs from 0.01 to 31536000"),
    (dict(interval_seconds=-5), "interval_seconds must be a number of seconds"),
    (dict(interval_seconds=float("nan")), "interval_seconds must be a number of seconds"),
    (dict(interval_seconds="60"), "interval_seconds must be a number of seconds"),
    (dict(interval_seconds=0.001), r"interval_seconds must be .* not 0.001"),  # was named the CLI's `interval`
    (dict(interval_seconds=1e9), r"interval_seconds must be .* not 1000000000.0"),
    (dict(endpoint_input="  "), "endpoint_input '  ' is no endpoint name"),
    (dict(endpoint_input="a/b"), "endpoint_input 'a/b' is no endpoint name"),
])
def test_bad_monitoring_schedule_arguments(tmp_path, baseline, arguments, message):
    monitor = DefaultModelMonitor(jobs_root=tmp_path / "jobs")
    try:
        with pytest.raises(ConfigError, match=message):
            monitor.create_monitoring_schedule(**{"endpoint_input": "reviews", **arguments},
                                               statistics=str(baseline), output_s3_uri=str(tmp_path / "reports"))
    finally:
        monitor.delete_monitoring_schedule()
    assert monitor.monitoring_schedule_name is None and not (tmp_path / "reports").exists()


def test_interval_seconds_wins_over_a_cron_expression_it_cannot_read(tmp_path, baseline):
    # the expression was read first, and its error advised giving interval_seconds, which did not help
    monitor = DefaultModelMonitor(jobs_root=tmp_path / "jobs")
    try:
        monitor.create_monitoring_schedule(endpoint_input="reviews", statistics=str(baseline), interval_seconds=3600,
                                           schedule_cron_expression="cron(0 0 1 * ? *)",
                                           output_s3_uri=str(tmp_path / "reports"))
        assert monitor._schedule.interval == 3600 and monitor._schedule.runs is None
    finally:
        monitor.delete_monitoring_schedule()


# -- processing jobs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: ProcessingInput("data", "/opt/ml/processing/../../../../tmp/escaped"),
    lambda: ProcessingOutput("/opt/ml/processing/../../escaped"),
])
def test_container_paths_cannot_climb_out_with_dot_dot(make):
    with pytest.raises(ConfigError, match=r"must be a container path under /opt/ml/processing/ \(without '..'\)"):
        make()


def test_container_paths_are_compared_as_one_path():
    # "x/../data" and "data/." passed the checks for two inputs on one path, then collided in the job
    from nlpforge.sdk.processing import container_path

    for given in ("/opt/ml/processing/input/x/../data", "/opt/ml/processing/input/data/.",
                  "/opt/ml/processing/input/data/"):
        assert container_path(given, "destination") == "/opt/ml/processing/input/data"


def processor(tmp_path, code: str = "print('ran')") -> Processor:
    return Processor(entrypoint=[sys.executable, "-c", code], jobs_root=str(tmp_path / "jobs"))


def test_an_input_name_cannot_climb_out_of_the_job(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(ConfigError, match="ProcessingInput input_name '../../../escaped' must be a plain name"):
        processor(tmp_path).run(inputs=[ProcessingInput(str(tmp_path / "data"), input_name="../../../escaped")],
                                logs=False)
    assert not list(tmp_path.rglob("escaped"))


def test_blank_processing_paths_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Path("") is the working folder: it would have been delivered whole
    with pytest.raises(ConfigError, match="ProcessingInput 'input-1' source '' is blank"):
        processor(tmp_path).run(inputs=[ProcessingInput("")], logs=False)
    with pytest.raises(ConfigError, match="ProcessingOutput 'output-1' destination '  ' is blank"):
        processor(tmp_path).run(outputs=[ProcessingOutput("/opt/ml/processing/output", "  ")], logs=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("destination", [".", "out"])
def test_an_output_into_an_input_folder_is_refused_and_the_input_kept(tmp_path, destination):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("original\n")
    with pytest.raises(ConfigError, match="ProcessingOutput 'output-1' destination .* overlaps ProcessingInput "
                                          "'input-1' source .*data; .* give a folder outside it"):
        processor(tmp_path).run(inputs=[ProcessingInput(str(data))],
                                outputs=[ProcessingOutput("/opt/ml/processing/output", str(data / destination))],
                                logs=False)
    assert (data / "train.csv").read_text() == "original\n" and not (tmp_path / "jobs").exists()


def test_an_output_that_writes_over_an_input_leaves_it_as_it_was(tmp_path):
    """What the refusal prevents: a script's output file named as an input file was copied over the user's file."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("original\n")
    code = "import pathlib, sys; pathlib.Path(sys.argv[1], 'train.csv').write_text('overwritten')"
    job = Processor(entrypoint=[sys.executable, "-c", code], jobs_root=str(tmp_path / "jobs"))
    with pytest.raises(ConfigError, match="overlaps"):
        job.run(inputs=[ProcessingInput(str(data))], outputs=[ProcessingOutput("/opt/ml/processing/output", str(data))],
                arguments=["/opt/ml/processing/output"], logs=False)
    assert (data / "train.csv").read_text() == "original\n"


# -- PyTorchModel ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_data", ["", "  "])
def test_a_blank_model_data_is_refused(tmp_path, monkeypatch, model_data):
    monkeypatch.chdir(tmp_path)  # Path("") is the working folder, which would have been packaged as the model
    (tmp_path / "inference.py").write_text("def model_fn(model_dir):\n    return None\n")
    with pytest.raises(EndpointError, match=f"model_data '{model_data}' is blank; give a model.tar.gz or a model "
                                            "folder"):
        PyTorchModel(model_data)



def test_a_batch_transform_may_still_write_its_out_files_beside_its_inputs(tiny_model, tmp_path):
    """The overlap refusal is for outputs that could carry an input's name; a transform's <file>.out cannot."""
    from conftest import toy_rows, write_csv

    inputs = tmp_path / "batch"
    for number, name in enumerate(("a.csv", "b.csv")):
        write_csv(inputs / name, toy_rows(3, seed=number))
    before = {p.name: p.read_bytes() for p in inputs.iterdir()}
    written = Transformer(tiny_model.output, output_path=str(inputs), instance_count=2,
                          jobs_root=str(tmp_path / "jobs")).transform(str(inputs))
    assert [p.name for p in written] == ["a.csv.out", "b.csv.out"]
    assert {name: (inputs / name).read_bytes() for name in before} == before


@pytest.mark.parametrize("hyperparameters, message", [
    ({"": 1}, "hyperparameter name '' must be a non-blank name without '=' or null characters"),
    ({"a=b": 1}, "hyperparameter name 'a=b' must be a non-blank name"),
    ({"lr": "0.1\x00"}, r"hyperparameter 'lr': .* holds a null character"),
])
def test_hyperparameters_the_script_could_not_be_given_are_refused(tmp_path, script, hyperparameters, message):
    # An empty name reached the script as a lone '-'; 'a=b' failed the job: "illegal environment variable name".
    with pytest.raises(ConfigError, match=message):
        Estimator(script, jobs_root=str(tmp_path / "jobs"), hyperparameters=hyperparameters)
    estimator = Estimator(script, jobs_root=str(tmp_path / "jobs"))
    with pytest.raises(ConfigError, match=message):
        estimator.set_hyperparameters(**hyperparameters)
    assert not (tmp_path / "jobs").exists()


@pytest.mark.parametrize("arguments, message", [
    (dict(strategy="Bogus"), "strategy must be one of 'MultiRecord', 'SingleRecord', None, not 'Bogus'"),
    (dict(assemble_with="Comma"), "assemble_with must be one of 'Line', 'None', None, not 'Comma'"),
])
def test_transformer_choices_are_sagemakers(tmp_path, script, arguments, message):
    with pytest.raises(EndpointError, match=message):
        Estimator(script, jobs_root=str(tmp_path / "jobs")).transformer(output_path=str(tmp_path / "out"),
                                                                         **arguments)


# -- built-in estimators ---------------------------------------------------------------------------------

def test_a_blank_base_model_is_refused(tmp_path, monkeypatch):
    from nlpforge.errors import ModelNotFoundError
    from nlpforge.sdk import TextClassifier

    monkeypatch.chdir(tmp_path)  # Path("") is the working folder, which became the base model
    with pytest.raises(ModelNotFoundError, match="base_model '' is blank; give one of"):
        TextClassifier(base_model="", jobs_root=str(tmp_path / "jobs"))


def test_the_base_model_given_twice_is_refused(tmp_path):
    from nlpforge.sdk import TextClassifier

    # The 'model' hyperparameter silently replaced base_model.
    with pytest.raises(ConfigError, match="TextClassifier got the base model twice, as base_model='bert-tiny' and as "
                                          "the 'model' hyperparameter 'minilm-l6'; give it once"):
        TextClassifier(base_model="bert-tiny", hyperparameters={"model": "minilm-l6"}, jobs_root=str(tmp_path / "jobs"))


def test_the_train_channel_given_by_both_its_names_is_refused(tmp_path):
    from conftest import toy_rows, write_csv
    from nlpforge.sdk import TextClassifier

    first, second = write_csv(tmp_path / "a.csv", toy_rows(4)), write_csv(tmp_path / "b.csv", toy_rows(4, seed=1))
    estimator = TextClassifier(base_model="bert-tiny", hyperparameters={"max_steps": 1},
                               jobs_root=str(tmp_path / "jobs"), tracking=False)
    # One of the two files was dropped unnoticed.
    with pytest.raises(ConfigError, match="got channels 'train' and 'training', which are the same channel"):
        estimator.fit({"train": str(first), "training": str(second)}, logs=False)
    assert not (tmp_path / "jobs").exists() or not [p for p in (tmp_path / "jobs").iterdir()
                                                     if not p.name.startswith("_")]


@pytest.mark.parametrize("startup_timeout", ["60", float("nan"), 0, -1])
def test_deploy_checks_its_startup_timeout_before_starting_a_server(tmp_path, startup_timeout):
    from nlpforge.sdk.predictor import deploy_model
    from serving_support import free_ports

    model = tmp_path / "model"
    model.mkdir()
    (model / "nlpforge.json").write_text("{}")
    # "60" was a TypeError after the server had started (left running); NaN waited for /ping forever.
    with pytest.raises(EndpointError, match="startup_timeout must be a positive number of seconds, such as 120"):
        deploy_model(model, "ep", jobs_root=str(tmp_path / "jobs"), startup_timeout=startup_timeout,
                     server_command=[sys.executable, "-c", "pass"], **free_ports())
    assert not (tmp_path / "jobs" / "_endpoints" / "server.log").exists()


def test_a_model_the_server_refuses_leaves_no_server_running(tmp_path):
    import time

    from nlpforge.sdk.predictor import deploy_model, inference
    from serving_support import free_ports

    model = tmp_path / "model"
    model.mkdir()
    (model / "nlpforge.json").write_text("{}")  # enough for deploy's own check; the server refuses it
    ports = free_ports()
    with pytest.raises(EndpointError, match="the model server refused to register 'ep'"):
        deploy_model(model, "ep", jobs_root=str(tmp_path / "jobs"), startup_timeout=120, **ports)
    # The server deploy() started for it kept running on its ports, named by no endpoint record.
    client = inference("127.0.0.1", ports["inference_port"])
    deadline = time.monotonic() + 60  # a loaded machine may take a while to stop it
    while client.ping() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not client.ping()
    assert not list((tmp_path / "jobs" / "_endpoints").glob("*.json"))
