"""Requests to the model server that once did something other than asked or answered 500: a query parameter that a
changing route ignored (`DELETE /models/m?model_version=2.0` removed every version), a traffic weight of `true`,
and data capture of a question-answering or masked-LM model (a 500 on every answer; an input recorded with its
options). Each test gives the answer now."""
import json
from pathlib import Path

import pytest

from serving_support import inference, management, running_server


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A question-answering and a masked-LM bert-tiny folder, trained a step or two: enough to serve."""
    from nlpforge.training.run import train
    from nlpforge.training.settings import job_class
    from test_masked_lm import planted_corpus
    from test_question_answering import toy_squad

    folder = tmp_path_factory.mktemp("sweep-models")
    (folder / "train.json").write_text(json.dumps(toy_squad(16, seed=1)))
    (folder / "dev.json").write_text(json.dumps(toy_squad(4, seed=2)))
    train(job_class("question-answering").of(
        train=str(folder / "train.json"), validation=str(folder / "dev.json"), output=str(folder / "qa"),
        model="bert-tiny", batch_size=16, max_seq_length=64, doc_stride=16, progress=False, seed=0, epochs=1,
        max_steps=1), log=lambda *_: None)
    corpus = planted_corpus(folder / "colours.txt", 100)
    train(job_class("masked-lm").of(corpus=[str(corpus)], model="bert-tiny", output=str(folder / "mlm"), epochs=1,
                                    max_steps=1, batch_size=8, max_seq_length=32, progress=False,
                                    max_eval_instances=8), log=lambda *_: None)
    return {"qa": folder / "qa", "mlm": folder / "mlm"}


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    """The question-answering model, and the masked-LM one as version 1.0 and as a version 2.0 without workers."""
    with running_server(tmp_path_factory.mktemp("store"), auth=False, request_timeout=20) as server:
        client = management(server)
        for params in ({"url": str(models["qa"]), "model_name": "qa", "max_batch_delay": 5, "capture_percent": 100},
                       {"url": str(models["mlm"]), "model_name": "mlm", "max_batch_delay": 5,
                        "capture_percent": 100},
                       {"url": str(models["mlm"]), "model_name": "mlm", "model_version": "2.0",
                        "initial_workers": 0}):
            response = client.post("/models", params=params)
            assert response.status_code == 200, response.text
        yield server


def versions(server, name: str = "mlm") -> list[str]:
    return [v["modelVersion"] for v in management(server).get(f"/models/{name}/all").json()]


def captured(server, name: str) -> list[dict]:
    path = Path(server.settings.model_store) / "capture" / name / "1.0" / "capture.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- query parameters a changing route does not take -----------------------------------------------------------
def test_deleting_a_model_with_a_version_parameter_is_refused_and_removes_nothing(server):
    response = management(server).delete("/models/mlm", params={"model_version": "2.0"})
    assert response.status_code == 400, response.text
    assert response.json()["message"] == (
        "unknown unregister parameter(s) model_version; known: synchronous, timeout; to name a version, put it in "
        "the path: DELETE /models/{model_name}/{model_version}")
    assert versions(server) == ["1.0", "2.0"]


@pytest.mark.parametrize("method, path, params, body, message", [
    ("delete", "/models/mlm/2.0", {"force": "true"}, None, "unknown unregister parameter(s) force"),
    ("put", "/models/mlm/2.0/set-default", {"model_version": "1.0"}, None,
     "unknown set-default parameter(s) model_version; known: none"),
    ("put", "/models/mlm/traffic", {"shadow": "2.0"}, {}, "unknown traffic parameter(s) shadow; known: none"),
    ("put", "/models/mlm", {"model_version": "2.0", "min_worker": "0"}, None,
     "to name a version, put it in the path: PUT /models/{model_name}/{model_version}"),
])
def test_a_changing_route_refuses_a_parameter_it_does_not_take_and_changes_nothing(server, method, path, params,
                                                                                   body, message):
    response = management(server).request(method.upper(), path, params=params, json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
    assert versions(server) == ["1.0", "2.0"]
    described = management(server).get("/models/mlm/all").json()
    assert management(server).get("/models/mlm/traffic").json() == {"defaultVersion": "1.0", "weights": {},
                                                                     "shadow": None}
    assert [len(v["workers"]) for v in described] == [1, 0]


def test_unregister_takes_torchserves_synchronous_and_timeout_whatever_their_value(server, models):
    response = management(server).post("/models", params={"url": str(models["mlm"]), "model_name": "mlm",
                                                           "model_version": "3.0", "initial_workers": 0})
    assert response.status_code == 200, response.text
    response = management(server).delete("/models/mlm/3.0/", params={"timeout": "true", "synchronous": "-1"})
    assert response.status_code == 200, response.text   # as TorchServe's API suite expects
    assert versions(server) == ["1.0", "2.0"]


def test_a_get_route_still_ignores_parameters_as_torchserve_does(server):
    assert management(server).get("/models/mlm", params={"customized": "true"}).status_code == 200


# --- traffic weights -------------------------------------------------------------------------------------------
def test_a_traffic_weight_of_true_is_refused(server):
    response = management(server).put("/models/mlm/traffic", json={"weights": {"1.0": True}})
    assert response.status_code == 400, response.text
    assert "weight of version '1.0' must be a number" in response.json()["message"]
    assert management(server).get("/models/mlm/traffic").json()["weights"] == {}


# --- data capture of other tasks than classification ----------------------------------------------------------
def test_a_captured_question_answering_model_answers_and_records_the_request(server):
    question = {"question": "what is the code?", "context": "the code is blue. the sky is wide.", "id": "q1"}
    response = inference(server).post("/predictions/qa", json=question)
    assert response.status_code == 200, response.text
    assert "answer" in response.json()
    response = inference(server).post("/predictions/qa", content="what is the code?,the code is red.\n",
                                      headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    assert [line["input"] for line in captured(server, "qa")] == [question,
                                                                   ["what is the code?", "the code is red."]]


def test_a_captured_masked_lm_input_is_its_text_not_text_and_top_k(server):
    for body in ({"json": {"text": "the sky is [MASK] .", "top_k": 2}}, {"content": "the sea is [MASK] ."}):
        response = inference(server).post("/predictions/mlm", **body)
        assert response.status_code == 200, response.text
    assert [line["input"] for line in captured(server, "mlm")] == [{"text": "the sky is [MASK] .", "top_k": 2},
                                                                    "the sea is [MASK] ."]


def test_a_shadow_agrees_when_its_answer_is_the_same_whatever_the_task():
    # agreement compared the "label" only, so every question-answering, fill-mask and NER shadow "agreed"
    from nlpforge.serving.server import answer_of

    def same(a, b) -> bool:
        return answer_of(a) == answer_of(b)

    assert same({"label": 5, "score": 0.8, "probabilities": {"5": 0.8}, "truncated": False},
                {"label": 5, "score": 0.6, "probabilities": {"5": 0.6}, "truncated": True})
    assert not same({"label": 5, "score": 0.8}, {"label": 4, "score": 0.8})
    assert same({"answer": "Ann", "start": 0, "end": 3, "score": 0.9}, {"answer": "Ann", "start": 0, "end": 3,
                                                                        "score": 0.4})
    assert not same({"answer": "Ann", "start": 0, "end": 3, "score": 0.9}, {"answer": "Bob", "start": 8, "end": 11,
                                                                            "score": 0.9})
    masks = [{"predictions": [{"token": "red", "score": 0.5}, {"token": "blue", "score": 0.2}]}]
    assert not same({"masks": masks}, {"masks": [{"predictions": masks[0]["predictions"][::-1]}]})
    assert not same({"entities": [{"entity": "PER", "word": "Ann", "score": 0.9}]}, {"entities": []})
