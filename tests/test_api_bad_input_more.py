"""More bad input to the Python API and the SDK: each gets an nlpforge error naming the fix (or, for derived data,
is repaired), and nothing is left behind."""
import json
import os
import shutil
import signal
import tarfile
import time

import pytest

from conftest import toy_rows
from nlpforge import explain, load
from nlpforge.errors import ArtifactError, ConfigError, EndpointError, InputError
from nlpforge.sdk import (CSVSerializer, IdentitySerializer, JSONDeserializer, Predictor, ProfilerRule,
                          PyTorchModel, Rule, rule_configs)
from nlpforge.sdk.predictor import deploy_model, inference
from serving_support import free_port, free_ports
from test_question_answering import train_toy_qa


@pytest.fixture(autouse=True)
def no_tracking(monkeypatch):
    monkeypatch.setenv("NLPFORGE_TRACKING", "0")


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model.output


# -- endpoints -------------------------------------------------------------------------------------

def stopped(port: int) -> bool:
    for _ in range(100):
        if not inference("127.0.0.1", port).ping():
            return True
        time.sleep(0.1)
    return False


def test_the_server_stops_with_its_last_endpoint_whichever_was_deployed_first(model, tmp_path):
    jobs, ports = tmp_path / "jobs", free_ports()
    deploy_model(model, "a", jobs_root=str(jobs), **ports)
    records = jobs / "_endpoints"
    pid = json.loads((records / "a.json").read_text())["server_pid"]
    try:
        deploy_model(model, "b", jobs_root=str(jobs), **ports)
        deploy_model(model, "c", jobs_root=str(jobs), **ports)
        # The later endpoints found the running server and carry its pid.
        assert json.loads((records / "b.json").read_text())["server_pid"] == pid
        # One recorded before the pid was carried: the first endpoint hands it over when deleted.
        older = json.loads((records / "c.json").read_text())
        (records / "c.json").write_text(json.dumps({**older, "server_pid": None}))
        Predictor("a", jobs_root=str(jobs)).delete_endpoint()
        assert inference("127.0.0.1", ports["inference_port"]).ping()  # two endpoints are left
        assert json.loads((records / "c.json").read_text())["server_pid"] == pid
        Predictor("b", jobs_root=str(jobs)).delete_endpoint()
        assert Predictor("c", jobs_root=str(jobs)).predict("a superb film")["label"] == "pos"
        Predictor("c", jobs_root=str(jobs)).delete_endpoint()
        assert stopped(ports["inference_port"])
    finally:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def test_a_cut_model_archive_is_refused_and_leaves_nothing(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.pth").write_bytes(os.urandom(200_000))
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder / "model.pth", arcname="model.pth")
    archive.write_bytes(archive.read_bytes()[:50_000])
    script = tmp_path / "inference.py"
    script.write_text("def model_fn(model_dir):\n    return None\n")
    jobs = tmp_path / "jobs"
    model = PyTorchModel(model_data=str(archive), entry_point=str(script), jobs_root=str(jobs))
    with pytest.raises(EndpointError, match=r"model\.tar\.gz: cannot extract .*give a complete model\.tar\.gz"):
        model.deploy(endpoint_name="cut", **free_ports())
    assert list((jobs / "_model_store").iterdir()) == []


@pytest.mark.parametrize("settings, message", [
    (dict(entry_point=5), "entry_point must be a path given as a string"),
    (dict(entry_point="inference.py", source_dir=["code"]), "source_dir must be a path given as a string"),
])
def test_pytorch_model_paths_of_the_wrong_type(tmp_path, settings, message):
    (tmp_path / "model").mkdir()
    with pytest.raises(EndpointError, match=message):
        PyTorchModel(model_data=str(tmp_path / "model"), **settings)


@pytest.mark.parametrize("data", [["great", "awful"], None, {"text": "great"}, 5])
def test_identity_serializer_sends_only_text_or_bytes(tmp_path, data):
    predictor = Predictor("clf", serializer=IdentitySerializer(), jobs_root=str(tmp_path), inference_port=free_port())
    with pytest.raises(EndpointError, match=f"IdentitySerializer sends a str or bytes as it is, not a "
                                            f"{type(data).__name__}"):
        predictor.predict(data)


def test_identity_serializer_sends_text_and_bytes_as_they_are():
    assert IdentitySerializer().serialize("great\nawful") == b"great\nawful"
    assert IdentitySerializer().serialize(bytearray(b"great")) == b"great"


@pytest.mark.parametrize("settings, message", [
    (dict(serializer=object()), "serializer must be a serializer such as JSONSerializer()"),
    (dict(serializer=CSVSerializer), r"serializer must be an instance, such as CSVSerializer\(\)"),
    (dict(deserializer=object()), "deserializer must be a deserializer such as JSONDeserializer()"),
])
def test_predictor_serializers_of_the_wrong_kind(tmp_path, settings, message):
    with pytest.raises(EndpointError, match=message):
        Predictor("clf", jobs_root=str(tmp_path), **settings)


@pytest.mark.parametrize("initial_args, message", [
    ({"ContentType": 5}, "initial_args ContentType must be a media type such as 'text/csv', not 5"),
    ({"Accept": ["application/json"]}, "initial_args Accept must be a media type"),
    ({"ContentType": "text/csv\n"}, "initial_args ContentType must be a media type"),
])
def test_initial_args_media_types_must_be_strings(tmp_path, initial_args, message):
    with pytest.raises(EndpointError, match=message):
        Predictor("clf", jobs_root=str(tmp_path), inference_port=free_port()).predict("x", initial_args=initial_args)


def test_a_sagemaker_style_serializer_is_read(tmp_path):
    class Upper:  # SageMaker's serializers name their type CONTENT_TYPE
        CONTENT_TYPE = "text/plain"

        def serialize(self, data):
            return data.encode()

    predictor = Predictor("clf", serializer=Upper(), deserializer=JSONDeserializer(), jobs_root=str(tmp_path),
                          inference_port=free_port())
    with pytest.raises(EndpointError, match="does not answer"):  # got as far as sending
        predictor.predict("x")


# -- inputs to nlpforge.load(...).predict ------------------------------------------------------------

@pytest.fixture(scope="module")
def qa_model(tmp_path_factory):
    return train_toy_qa(tmp_path_factory.mktemp("qa"), 40, 10, epochs=1).output


@pytest.mark.parametrize("call, value, message", [
    ("predict", None, "give a {\"question\": ..., \"context\": ...} dict.*not None"),
    ("predict", 5, "not 5"),
    ("explain", 1.5, "not 1.5"),
    ("predict", "", "takes a question and the text to find its answer in"),
    ("predict", "What is the code?", "takes a question and the text to find its answer in"),
    ("predict", {"question", "context"}, "not a set"),
])
def test_question_answering_inputs_of_the_wrong_kind(qa_model, call, value, message):
    with pytest.raises(InputError, match=message):
        getattr(load(qa_model), call)(value)


def test_a_question_and_context_tuple_is_one_input(qa_model):
    loaded = load(qa_model)
    pair = ("What is the code?", "The code is amber.")
    assert loaded.predict(pair) == loaded.predict({"question": pair[0], "context": pair[1]})
    assert len(loaded.predict(pair)) == 1


def test_a_table_or_a_set_is_refused_and_memoryview_is_named(model, qa_model):
    import pandas

    loaded = load(model)
    rows = pandas.DataFrame(toy_rows(3))
    with pytest.raises(InputError, match=r"not a DataFrame .*one answer per column name.*df\['text'\]\.tolist\(\)"):
        loaded.predict(rows)
    assert len(loaded.predict(rows["text"])) == 3  # a column is a list of texts
    with pytest.raises(InputError, match=r"df\[\['question', 'context'\]\]\.to_dict\('records'\)"):
        load(qa_model).predict(pandas.DataFrame({"question": ["q"], "context": ["c"]}))
    with pytest.raises(InputError, match="not a set: a set has no order"):
        loaded.predict({"great", "awful"})
    with pytest.raises(InputError, match="not a frozenset"):
        loaded.explain(frozenset({"great"}))
    with pytest.raises(InputError, match="the input is memoryview; decode it to a string first"):
        loaded.predict(memoryview(b"great"))


# -- the ONNX cache --------------------------------------------------------------------------------

@pytest.fixture
def own_copy(model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(model, folder)
    shutil.rmtree(folder / "onnx", ignore_errors=True)
    return folder


def test_a_damaged_onnx_cache_is_exported_again(own_copy):
    expected = load(own_copy).predict(["great", "awful"])
    load(own_copy, backend="onnx")
    cached = own_copy / "onnx" / "model.onnx"
    whole = cached.read_bytes()
    for damage in (b"x\n", b"", whole[:len(whole) // 2]):
        cached.write_bytes(damage)
        got = load(own_copy, backend="onnx").predict(["great", "awful"])
        assert [g["label"] for g in got] == [e["label"] for e in expected]
        assert cached.stat().st_size == len(whole)
    cached.write_bytes(whole[:len(whole) // 2])  # the int8 file is made from a damaged fp32 one
    assert load(own_copy, backend="onnx-int8").predict("great")[0]["label"] == expected[0]["label"]
    (own_copy / "onnx" / "model-int8.onnx").write_bytes(b"x")
    assert load(own_copy, backend="onnx-int8").predict("great")[0]["label"] == expected[0]["label"]


def test_workers_starting_together_export_once(own_copy, monkeypatch):
    import threading
    import time

    from nlpforge.models import onnx

    calls = []

    def slow_export(folder, target, load_weights, outputs):
        calls.append(target)
        time.sleep(0.3)
        target.write_bytes(b"an export")

    monkeypatch.setattr(onnx, "_export", slow_export)
    threads = [threading.Thread(target=onnx.export_onnx, args=(own_copy, None, {})) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and (own_copy / "onnx" / "model.onnx").read_bytes() == b"an export"


def test_the_onnx_cache_follows_the_weights_not_their_age(own_copy, tmp_path):
    from safetensors.torch import load_file, save_file

    load(own_copy, backend="onnx")
    weights = own_copy / "model.safetensors"
    tensors = load_file(weights)
    tensors = {name: -value if name.startswith("classifier") else value for name, value in tensors.items()}
    older = weights.stat().st_mtime - 3600  # other weights, an hour older than the cached export
    save_file(tensors, weights, metadata={"format": "pt"})
    os.utime(weights, (older, older))
    torch_answer = load(own_copy).predict("great")[0]
    assert load(own_copy, backend="onnx").predict("great")[0]["label"] == torch_answer["label"]


def test_an_export_onnx_runtime_cannot_load_is_an_artifact_error(own_copy, monkeypatch):
    import nlpforge.models.onnx as onnx

    monkeypatch.setattr(onnx, "_export", lambda folder, target, *_: target.write_bytes(b"x"))
    with pytest.raises(ArtifactError, match=r"onnx/model\.onnx: ONNX Runtime cannot load the model exported from"):
        load(own_copy, backend="onnx")


# -- Debugger rules --------------------------------------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda: Rule.sagemaker(rule_configs.weight_update_ratio(),
                            rule_parameters={"small_threshold": 10, "large_threshold": 1}),
     "small_threshold 10 must be below large_threshold 1"),
    (lambda: Rule.sagemaker({"DebugRuleConfiguration": {"RuleParameters": "rule_to_invoke"}}),
     "Rule.sagemaker takes a rule configuration such as"),
    (lambda: Rule.sagemaker({"DebugRuleConfiguration": {"RuleParameters": {
        "rule_to_invoke": "LossNotDecreasing,Overfit"}}}), "must be one rule's name"),
    (lambda: Rule.sagemaker({"DebugRuleConfiguration": {"RuleParameters": {
        "rule_to_invoke": "Overfit:patience=2"}}}), "must be one rule's name"),
    (lambda: ProfilerRule.sagemaker(rule_configs.LossNotDecreasing()),
     "LossNotDecreasing is a rule for Rule.sagemaker"),
    (lambda: Rule.sagemaker(rule_configs.overfit(), rule_parameters={"patience": 0}), "patience must be at least 1"),
])
def test_bad_debugger_rules(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_a_rule_named_as_sagemaker_names_it_is_the_debugger_rule():
    assert Rule.sagemaker(rule_configs.LossNotDecreasing()).spec == "LossNotDecreasing"
    assert Rule.sagemaker(rule_configs.WeightUpdateRatio()).spec == "WeightUpdateRatio"
    assert rule_configs.ProfilerReport() == {"ProfilerRuleConfiguration": {"RuleConfigurationName": "ProfilerReport"}}


def test_the_engine_refuses_contradicting_thresholds_too():
    from nlpforge.training.debugger import parse_rules

    with pytest.raises(ConfigError, match="small_threshold 1 must be below large_threshold 1"):
        parse_rules(["WeightUpdateRatio:small_threshold=1,large_threshold=1"])
    assert parse_rules(["WeightUpdateRatio:small_threshold=0.001"])[0].large_threshold == 10


# -- explanations and model folders ----------------------------------------------------------------

@pytest.mark.parametrize("text, text_pair, message", [
    (["great", "awful"], None, "an explanation is of one input: give the text as a string, not a list"),
    ("great", ["plot"], "give the text_pair as a string, not a list"),
    ("  ", None, "the text to explain is empty"),
])
def test_explain_takes_one_text(model, text, text_pair, message):
    with pytest.raises(InputError, match=message):
        explain(model, text, text_pair)


def test_a_max_seq_length_over_the_models_positions_is_named_when_loading(model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(model, folder)
    meta = json.loads((folder / "nlpforge.json").read_text())
    (folder / "nlpforge.json").write_text(json.dumps({**meta, "max_seq_length": 1002}))
    with pytest.raises(ArtifactError, match=r"nlpforge\.json: max_seq_length 1002 is over the 512 positions"):
        load(folder)
    (folder / "nlpforge.json").write_text(json.dumps({**meta, "max_seq_length": 512}))
    assert load(folder).predict("great " * 600)[0]["truncated"] is True


def test_json_lines_answers_end_at_newlines_only():
    from nlpforge.sdk import JSONLinesDeserializer

    body = '{"label": "a\u2028b"}\n{"label": "c\u0085"}\n'.encode()
    assert JSONLinesDeserializer().deserialize(body) == [{"label": "a\u2028b"}, {"label": "c\u0085"}]


@pytest.mark.parametrize("task, value", [("token-classification", {"text": "Ann met Bob", "text_pair": "x"}),
                                         ("masked-lm", {"text": "a [MASK] film", "text_pair": "x"})])
def test_a_second_text_for_a_one_text_task_is_refused_not_dropped(task, value):
    from nlpforge import tasks

    with pytest.raises(InputError, match='reads one text, not a pair; leave out "text_pair"'):
        tasks.get(task).parse_input(value)
