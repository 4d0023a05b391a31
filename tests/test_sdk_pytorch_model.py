"""Script-mode models deployed with an inference script, as the SageMaker workshop does, on the real model server.

The model is what the workshop's train_simple.py saves (an EmbeddingBag's model.pth and
vocabulary.json); the inference script is tests/data/workshop/inference.py, as a workshop user
writes it. The requests are the notebook's: a list of {"features": ["review text"]}.
"""
import importlib.util
import json
import os
import tarfile
import textwrap
import time
from pathlib import Path

import httpx
import pytest
import torch

from nlpforge.errors import EndpointError
from nlpforge.sdk import (Estimator, JSONDeserializer, JSONLinesDeserializer, JSONLinesSerializer, JSONSerializer,
                          Predictor, PyTorchModel)
from serving_support import free_ports, management, running_server

WORKSHOP_INFERENCE = Path(__file__).parent / "data" / "workshop" / "inference.py"
VOCABULARY = ["<unk>", "love", "great", "hate", "awful"]
REVIEWS = [{"features": ["I love this dress"]}, {"features": ["awful fit, I hate it"]}]

# A script-mode job that saves what the workshop's train_simple.py saves.
SAVE_MODEL = '''
import json, os
import torch

vocabulary = {vocabulary}
model = torch.nn.EmbeddingBag(len(vocabulary), 3, mode="mean")
with torch.no_grad():
    model.weight[:] = torch.tensor({weights})
torch.save(model.state_dict(), os.path.join(os.environ["SM_MODEL_DIR"], "model.pth"))
with open(os.path.join(os.environ["SM_MODEL_DIR"], "vocabulary.json"), "w") as handle:
    json.dump({{"vocabulary": vocabulary, "classes": [-1, 0, 1]}}, handle)
'''
WEIGHTS = [[0, 0, 0], [-5, 0, 5], [-5, 0, 5], [5, 0, -5], [5, 0, -5]]  # per word: (negative, neutral, positive)



def save_model(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model = torch.nn.EmbeddingBag(len(VOCABULARY), 3, mode="mean")
    with torch.no_grad():
        model.weight[:] = torch.tensor(WEIGHTS, dtype=torch.float32)
    torch.save(model.state_dict(), folder / "model.pth")
    (folder / "vocabulary.json").write_text(json.dumps({"vocabulary": VOCABULARY, "classes": [-1, 0, 1]}))
    return folder


@pytest.fixture(autouse=True)
def no_tracking(monkeypatch):
    monkeypatch.setenv("NLPFORGE_TRACKING", "0")


@pytest.fixture
def model_archive(tmp_path):
    """model.tar.gz as SageMaker packs a job's SM_MODEL_DIR: the model files at the top."""
    folder = save_model(tmp_path / "model")
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        for path in folder.iterdir():
            tar.add(path, arcname=path.name)
    return tmp_path / "model.tar.gz"


def test_pytorch_model_deploys_next_to_another_users_server_and_predicts(model_archive, tmp_path):
    jobs = tmp_path / "jobs"
    with running_server(tmp_path / "someone-elses-store") as foreign:
        taken = {"inference_port": foreign.ports[0], "management_port": foreign.ports[1],
                 "metrics_port": foreign.ports[2]}
        model = PyTorchModel(model_data=str(model_archive), entry_point=str(WORKSHOP_INFERENCE), role="arn:role",
                             framework_version="1.6.0", py_version="py3", jobs_root=str(jobs))
        predictor = model.deploy(initial_instance_count=1, instance_type="ml.m5.xlarge", endpoint_name="reviews",
                                 serializer=JSONSerializer(), deserializer=JSONDeserializer(), **taken)
        try:
            assert predictor.inference_port != taken["inference_port"]  # its own server, on other ports
            record = json.loads((jobs / "_endpoints" / "reviews.json").read_text())
            assert record["inference_port"] == predictor.inference_port and record["server_pid"]
            assert management(foreign).get("/models").json() == {"models": []}  # the foreign server is untouched
            answer = predictor.predict(REVIEWS)
            assert [a["predicted_label"] for a in answer] == [1, -1]
            assert all(0.5 < a["probability"] <= 1 for a in answer)

            attached = Predictor("reviews", jobs_root=str(jobs), serializer=JSONLinesSerializer(),
                                 deserializer=JSONLinesDeserializer())
            assert [a["predicted_label"] for a in attached.predict(REVIEWS)] == [1, -1]
            with pytest.raises(EndpointError, match="HTTP 400.*each input must be"):
                predictor.predict([{"review": "no features"}])

            # A second deploy of the same jobs root finds its own server through the endpoint record.
            again = PyTorchModel(model_data=str(model_archive), entry_point=str(WORKSHOP_INFERENCE),
                                 jobs_root=str(jobs)).deploy(endpoint_name="reviews-2", **taken)
            assert again.inference_port == predictor.inference_port
            again.delete_endpoint()
            assert management(foreign).get("/models").json() == {"models": []}
        finally:
            predictor.delete_endpoint()
    assert not (jobs / "_model_store" / "reviews").exists()  # the packaged folder goes with its endpoint
    with pytest.raises(httpx.HTTPError):  # the server deploy() started stops with its last endpoint
        for _ in range(100):
            httpx.get(f"http://127.0.0.1:{predictor.inference_port}/ping", timeout=1)
            time.sleep(0.1)


def test_estimator_deploy_serves_a_script_mode_job_with_its_inference_script(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_text(textwrap.dedent(SAVE_MODEL.format(vocabulary=VOCABULARY, weights=WEIGHTS)))
    (source / "inference.py").write_text(WORKSHOP_INFERENCE.read_text())
    est = Estimator(entry_point="train.py", source_dir=str(source), jobs_root=str(tmp_path / "jobs"),
                    instance_type="ml.p3.2xlarge", tracking=False)
    est.fit(logs=False, job_name="reviews-job")
    assert sorted(p.name for p in est.model_dir.iterdir()) == ["model.pth", "vocabulary.json"]
    with pytest.raises(EndpointError, match="deploy\\(entry_point='inference.py'"):
        est.deploy(**free_ports())  # model.pth alone: no way to serve it without the script

    predictor = est.deploy(initial_instance_count=1, instance_type="ml.m5.xlarge", entry_point="inference.py",
                           serializer=JSONSerializer(), deserializer=JSONDeserializer(), wait=True, **free_ports())
    try:
        assert predictor.endpoint_name == "reviews-job"
        assert [a["predicted_label"] for a in predictor.predict(REVIEWS)] == [1, -1]
        served = tmp_path / "jobs" / "_model_store" / "reviews-job"
        assert (served / "code" / "inference.py").read_text() == WORKSHOP_INFERENCE.read_text()
        assert (served / "code" / "train.py").is_file() and (served / "model.pth").is_file()
    finally:
        predictor.delete_endpoint()


def test_bad_model_arguments_are_clear_errors(model_archive, tmp_path):
    with pytest.raises(EndpointError, match="S3 URI"):
        PyTorchModel(model_data="s3://bucket/model.tar.gz", entry_point=str(WORKSHOP_INFERENCE))
    with pytest.raises(EndpointError, match="entry_point 'serve.py' not found in source_dir"):
        PyTorchModel(model_data=str(model_archive), entry_point="serve.py", source_dir=str(tmp_path))
    with pytest.raises(EndpointError, match="unknown PyTorchModel argument"):
        PyTorchModel(model_data=str(model_archive), entry_point=str(WORKSHOP_INFERENCE), instance_kind="big")
    model = PyTorchModel(model_data=str(model_archive), entry_point=str(WORKSHOP_INFERENCE),
                         jobs_root=str(tmp_path / "jobs"))
    with pytest.raises(EndpointError, match="unknown deploy argument"):
        model.deploy(endpoint_name="x", colour="blue")
    with pytest.raises(EndpointError, match="instance_type must be local"):
        model.deploy(endpoint_name="x", instance_type="a-big-one")


def test_the_workshop_script_answers_json_lines_and_refuses_other_types(tmp_path):
    """The inference script on its own, as the worker calls it (no server)."""
    spec = importlib.util.spec_from_file_location("workshop_inference", WORKSHOP_INFERENCE)
    workshop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(workshop)
    model = workshop.model_fn(str(save_model(tmp_path)))
    lines = "\n".join(json.dumps(r) for r in REVIEWS).encode()
    body, content_type = workshop.output_fn(workshop.predict_fn(
        workshop.input_fn(lines, "application/jsonlines"), model), "application/jsonlines")
    assert content_type == "application/jsonlines"
    assert [json.loads(line)["predicted_label"] for line in body.splitlines()] == [1, -1]
    with pytest.raises(ValueError, match="unsupported ContentType"):
        workshop.input_fn("text", "text/plain")
    assert os.path.basename(workshop.__file__) == "inference.py"


def test_packaging_puts_the_model_at_the_top_and_the_entry_point_at_code_inference_py(model_archive, tmp_path):
    from nlpforge.sdk.model import package_model

    code = tmp_path / "code-dir"
    code.mkdir()
    (code / "serve.py").write_text(WORKSHOP_INFERENCE.read_text())
    (code / "helpers.py").write_text("X = 1\n")
    served = package_model(model_archive, "serve.py", str(code), tmp_path / "served")
    assert sorted(p.name for p in served.iterdir()) == ["code", "model.pth", "vocabulary.json"]
    assert sorted(p.name for p in (served / "code").iterdir()) == ["helpers.py", "inference.py", "serve.py"]
    assert (served / "code" / "inference.py").read_text() == WORKSHOP_INFERENCE.read_text()
    # An entry point given by its absolute path, outside source_dir, is copied beside the source_dir's files.
    again = package_model(model_archive, str(WORKSHOP_INFERENCE), str(code), tmp_path / "served")
    assert (again / "code" / "inference.py").read_text() == WORKSHOP_INFERENCE.read_text()
    assert (again / "code" / "helpers.py").is_file() and not (tmp_path / ".served.partial").exists()
