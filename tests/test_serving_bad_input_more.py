"""More bad input for the model server, its clients and the Python API: each gets a clear answer, and none
leaves a model answering 500 or a file half-written."""
import json
import os
import shutil

import pytest

from conftest import assert_user_error, run_cli
from nlpforge.errors import ArtifactError, InputError, ServingError
from serving_support import inference, management, running_server


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("store"), auth=False) as server:
        response = management(server).post("/models", params={"url": str(tiny_model.output), "model_name": "tiny",
                                                               "max_batch_delay": 5})
        assert response.status_code == 200, response.text
        yield server


def _still_answers(server) -> None:
    response = inference(server).post("/predictions/tiny", content="a wonderful film")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("body, status, message", [
    ({"weights": {"": 5}}, 404, "model 'tiny' has no version ''"),
    ({"weights": {"1.0": 1}, "shadow": ""}, 200, ""),   # "" keeps the shadow, as before
    ({"wieghts": {"1.0": 1}}, 400, "unknown field(s) 'wieghts'"),
    ({"weights": [["1.0", 1]]}, 400, '"weights" must be an object of version: weight'),
    ({"shadow": 2}, 400, '"shadow" must be a version name or null'),
])
def test_traffic_names_only_registered_versions_and_known_fields(server, body, status, message):
    response = management(server).put("/models/tiny/traffic", json=body)
    assert response.status_code == status, response.text
    assert message in response.json().get("message", ""), response.text
    assert management(server).get("/models/tiny/traffic").json()["weights"] in ({}, {"1.0": 1.0})
    _still_answers(server)


def test_a_lone_surrogate_is_refused_before_it_joins_a_batch(server, tiny_model):
    response = inference(server).post("/predictions/tiny", content=b'{"text": "a\\ud800b"}',
                                      headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert "not valid Unicode (a lone surrogate U+D800 at character 1" in response.json()["message"]
    _still_answers(server)
    import nlpforge

    with pytest.raises(InputError, match="lone surrogate"):
        nlpforge.load(tiny_model.output).predict("a\ud800b")
    # A command-line argument that is not UTF-8 reaches Python as a lone surrogate too.
    assert_user_error(run_cli(["predict", tiny_model.output, os.fsdecode(b"caf\xe9")]), "not valid Unicode")


@pytest.mark.parametrize("params, status, message", [
    ({"model_name": "tiny", "synchronous": "false"}, 409, "model 'tiny' version '1.0' is already registered"),
    ({"model_name": "other", "model_version": "traffic"}, 400, "model_version 'traffic' is reserved"),
    ({"model_name": "other", "model_version": "all"}, 400, "model_version 'all' is reserved"),
    ({"model_name": "other", "model_version": ""}, 400, "model_version '': use 1-100 ASCII letters"),
    ({"model_name": "other", "model_version": "", "synchronous": "false"}, 400, "model_version '': use 1-100"),
])
def test_register_refuses_a_taken_version_at_once_and_reserved_names(server, tiny_model, params, status, message):
    response = management(server).post("/models", params={"url": str(tiny_model.output), **params})
    assert response.status_code == status, response.text
    assert message in response.json()["message"]
    assert [m["modelName"] for m in management(server).get("/models").json()["models"]] == ["tiny"]


def test_a_damaged_metadata_value_is_refused_at_load_and_register(server, tiny_model, tmp_path):
    import nlpforge

    folder = tmp_path / "damaged"
    shutil.copytree(tiny_model.output, folder)
    meta = json.loads((folder / "nlpforge.json").read_text())
    (folder / "nlpforge.json").write_text(json.dumps({**meta, "max_seq_length": "abc"}))
    with pytest.raises(ArtifactError, match="max_seq_length is 'abc', not a whole number"):
        nlpforge.load(folder)
    response = management(server).post("/models", params={"url": str(folder), "model_name": "damaged"})
    assert response.status_code == 400 and "max_seq_length is 'abc'" in response.json()["message"], response.text


def test_a_key_file_that_is_a_folder_or_no_key_file_is_named(tmp_path):
    from nlpforge.serving.security import load_or_create_keys, read_key

    with pytest.raises(ServingError, match="is a folder; a key file is the server's <model-store>/key_file.json"):
        read_key(tmp_path)
    with pytest.raises(ServingError, match="is a folder"):
        load_or_create_keys(tmp_path)
    other = tmp_path / "other.json"
    other.write_text('{"colour": "blue"}')
    with pytest.raises(ServingError, match="not a key file with a management key"):
        read_key(other)
    assert read_key(tmp_path / "absent.json") is None
    assert_user_error(run_cli(["models", "list", "--key-file", tmp_path, "--management-url", "http://127.0.0.1:9"]),
                      "is a folder")


def test_an_archive_that_cannot_be_registered_leaves_nothing_in_the_store(server, tmp_path):
    import io
    import tarfile
    from pathlib import Path

    store = Path(server.settings.model_store)
    (store / "fake.tar.gz").write_bytes(b"not gzip at all")
    with tarfile.open(store / "empty.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("notes/readme.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    for url, message in (("fake.tar.gz", "cannot extract"), ("empty.tar.gz", "holds no model folder")):
        response = management(server).post("/models", params={"url": url, "model_name": url.split(".")[0]})
        assert response.status_code == 400 and message in response.json()["message"], response.text
    assert list((store / ".extracted").glob("*")) == []


@pytest.mark.parametrize("body", [{"inputs": ["a fine film"]}, {"instances": "a fine film"}])
def test_a_kserve_request_without_a_list_of_instances_is_told_the_shape(server, body):
    response = inference(server).post("/v1/models/tiny:predict", json=body)
    assert response.status_code == 400, response.text
    assert 'a list of inputs under "instances", e.g. {"instances": ["Loved it"]}' in response.json()["message"]
    assert inference(server).post("/v1/models/tiny:predict", json={"instances": ["a fine film"]}).status_code == 200


@pytest.mark.parametrize("api, method, path, status, kind, message", [
    ("inference", "post", "/prediction/tiny", 404, "ResourceNotFoundException",
     "there is no route POST /prediction/tiny on the nlpforge inference API; its routes: GET /ping, "
     "POST /predictions/{model_name}"),
    ("inference", "get", "/predictions/tiny", 405, "MethodNotAllowedException",
     "GET /predictions/tiny is not allowed; /predictions/tiny takes POST"),
    ("management", "delete", "/models", 405, "MethodNotAllowedException",
     "DELETE /models is not allowed; /models takes GET, POST"),   # Starlette itself names only POST
    ("management", "get", "/model", 404, "ResourceNotFoundException", "its routes: POST /models, GET /models"),
    ("inference", "post", "/predictions/nope", 404, "ModelNotFoundException", "model 'nope'"),
])
def test_an_unknown_route_or_method_is_named_with_what_the_api_serves(server, api, method, path, status, kind,
                                                                      message):
    client = inference(server) if api == "inference" else management(server)
    response = getattr(client, method)(path, **({"content": "a film"} if method == "post" else {}))
    assert response.status_code == status, response.text
    assert response.json()["type"] == kind and response.json()["code"] == status
    assert message in response.json()["message"], response.text
    if status == 405:
        assert response.headers["allow"] == message.rsplit(" takes ", 1)[1]


@pytest.mark.parametrize("task, value, message", [
    ("text-classification", {"text": "a", "textpair": "b"}, 'the key "textpair" is not one this model reads; did you '
                                                            'mean "text_pair"?'),
    ("text-classification", {"txt": "a"}, 'did you mean "text"?'),
    ("masked-lm", {"text": "a [MASK] .", "topk": 3}, 'did you mean "top_k"?'),
    ("question-answering", {"question": "q", "contexts": "c"}, 'did you mean "context"?'),
    ("token-classification", {"text": "Paris", "agregation": "max"}, 'did you mean "aggregation"?'),
])
def test_a_misspelled_request_key_is_named_not_ignored(task, value, message):
    from nlpforge import tasks

    with pytest.raises(InputError, match=message.replace("?", r"\?")):
        tasks.get(task).parse_input(value)


@pytest.mark.parametrize("task, value", [
    ("text-classification", {"text": "a", "date": "2024-05-01", "text_id": 1, "text1": 2, "texts": 3, "test": 4,
                             "input_ids": 5, "Text": 6, "text_a": 7, "label": 8, "labels": 9, "title": 10}),
    ("question-answering", {"question": "q", "context": "c", "question_id": 1, "qid": 2, "Id": 3, "ID": 4,
                            "context_id": 5, "is_possible": 6, "title": 7}),
    ("token-classification", {"text": "Paris", "token": 1, "Tokens": 2, "id": 3}),
    ("masked-lm", {"text": "a [MASK] .", "top": 1, "test": 2}),
])
def test_a_request_rows_own_columns_are_not_taken_for_misspellings(task, value):
    from nlpforge import tasks

    tasks.get(task).parse_input(value)


def test_other_keys_of_a_request_row_pass_and_a_misspelled_one_is_a_400(server):
    response = inference(server).post("/predictions/tiny", json={"text": "a wonderful film", "id": 7, "label": "x"})
    assert response.status_code == 200, response.text
    response = inference(server).post("/predictions/tiny", json={"text": "a wonderful film", "textpair": "a film"})
    assert response.status_code == 400 and 'did you mean "text_pair"?' in response.json()["message"]


def test_a_model_of_text_pairs_refuses_one_text_and_a_model_of_one_text_refuses_a_pair(server, tiny_model, tmp_path):
    folder = tmp_path / "pairs"
    shutil.copytree(tiny_model.output, folder)
    info = json.loads((folder / "labels.json").read_text())
    (folder / "labels.json").write_text(json.dumps({**info, "text_columns": ["premise", "hypothesis"]}))
    response = management(server).post("/models", params={"url": str(folder), "model_name": "pairs"})
    assert response.status_code == 200, response.text
    try:
        lone = inference(server).post("/predictions/pairs", json={"text": "a wonderful film"})
        assert lone.status_code == 400, lone.text
        assert "trained on text pairs (premise, hypothesis); give the second text" in lone.json()["message"]
        pair = inference(server).post("/predictions/pairs", json={"text": "a wonderful film", "text_pair": "yes"})
        assert pair.status_code == 200, pair.text
    finally:
        management(server).delete("/models/pairs")
    response = inference(server).post("/predictions/tiny", json={"text": "a wonderful film", "text_pair": "yes"})
    assert response.status_code == 400 and "reads one text (trained on text), not a pair" in response.json()["message"]
    _still_answers(server)
    import nlpforge

    with pytest.raises(InputError, match=r"trained on text pairs \(premise, hypothesis\)"):
        nlpforge.load(folder).predict("a wonderful film")
    with pytest.raises(InputError, match="not a pair"):
        nlpforge.load(tiny_model.output).predict(("a wonderful film", "yes"))
    assert_user_error(run_cli(["predict", str(folder), "a wonderful film"]), "--text-pair on the command line")
