"""SageMaker's inference contract (code/inference.py) served by `nlpforge serve`, over real sockets.

Two model folders in SageMaker's model.tar.gz layout: a bag-of-words classifier (a torch.nn.Linear
saved as model.pth) whose inference.py defines all four functions, and a tensor model whose
inference.py defines only model_fn, so the toolkit's default input_fn, predict_fn and output_fn run.
"""
import io
import json
import tarfile
import textwrap

import numpy as np
import pytest
import torch

from nlpforge.serving.inference import MODEL_STORE_HEADER, model_store_id
from serving_support import inference, management, running_server

VOCABULARY = ["good", "great", "bad", "awful", "film"]

BAG_OF_WORDS = '''
import csv, io, json, os

import torch

WORDS = json.load(open(os.path.join(os.path.dirname(__file__), "..", "vocab.json")))


def model_fn(model_dir):
    model = torch.nn.Linear(len(WORDS), 2)
    model.load_state_dict(torch.load(os.path.join(model_dir, "model.pth")))
    return model.eval()


def input_fn(request_body, request_content_type):
    if request_content_type == "application/json":
        texts = json.loads(request_body)
    elif request_content_type == "text/csv":
        texts = [row[0] for row in csv.reader(io.StringIO(request_body))]
    else:
        raise ValueError("unsupported content type " + str(request_content_type))
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError("send a JSON list of texts")
    counts = torch.zeros(len(texts), len(WORDS))
    for row, text in enumerate(texts):
        for word in text.lower().split():
            if word in WORDS:
                counts[row, WORDS.index(word)] += 1
    return texts, counts


def predict_fn(input_data, model):
    texts, counts = input_data
    if "explode" in texts:
        raise RuntimeError("the model exploded on purpose")
    with torch.no_grad():
        return [["neg", "pos"][i] for i in model(counts).argmax(dim=1).tolist()]


def output_fn(prediction, accept):
    if accept == "text/csv":
        return "\\n".join(prediction), "text/csv"
    return json.dumps({"labels": prediction}), "application/json"
'''

TENSOR_ONLY = '''
import torch


def model_fn(model_dir):
    model = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight[:] = torch.tensor([[1.0, 2.0, 3.0]])
    return model
'''


def bag_of_words_folder(folder):
    """A model folder as a script-mode job leaves it, plus code/inference.py."""
    (folder / "code").mkdir(parents=True)
    model = torch.nn.Linear(len(VOCABULARY), 2)
    with torch.no_grad():  # good/great -> pos (column 1), bad/awful -> neg (column 0)
        model.weight[:] = torch.tensor([[-1.0, -1.0, 1.0, 1.0, 0.0], [1.0, 1.0, -1.0, -1.0, 0.0]])
        model.bias.zero_()
    torch.save(model.state_dict(), folder / "model.pth")
    (folder / "vocab.json").write_text(json.dumps(VOCABULARY))
    (folder / "code" / "inference.py").write_text(textwrap.dedent(BAG_OF_WORDS))
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("script")
    bag = bag_of_words_folder(root / "bag")
    (root / "tensor" / "code").mkdir(parents=True)
    (root / "tensor" / "code" / "inference.py").write_text(TENSOR_ONLY)
    with tarfile.open(root / "model.tar.gz", "w:gz") as tar:  # SageMaker's archive: model files at the top
        for path in bag.iterdir():
            tar.add(path, arcname=path.name)
    with running_server(root / "store") as server:
        for name, url in (("bag", bag), ("tensor", root / "tensor"), ("archived", root / "model.tar.gz")):
            response = register(server, url, name)
            assert response.status_code == 200, response.text
        server.root = root
        yield server


def register(server, url, name):
    return management(server).post("/models", params={"url": str(url), "model_name": name, "initial_workers": 1,
                                                      "synchronous": "true"})


def test_json_and_csv_requests_run_through_the_script(server):
    client = inference(server)
    answer = client.post("/predictions/bag", json=["a good film", "an awful film", "great great bad"])
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"labels": ["pos", "neg", "pos"]}
    as_csv = client.post("/predictions/bag", content="bad film\ngood film\n",
                         headers={"Content-Type": "text/csv", "Accept": "text/csv"})
    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.headers["content-type"].startswith("text/csv") and as_csv.text == "neg\npos"
    assert client.post("/predictions/archived", json=["awful"]).json() == {"labels": ["neg"]}


def test_kserve_routes_give_the_script_the_instances_as_json(server):
    answer = inference(server).post("/v1/models/bag:predict", json={"instances": ["good", "bad"]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": [{"labels": ["pos", "neg"]}]}


def test_an_error_in_input_fn_is_a_400_with_its_message(server):
    client = inference(server)
    bad_json = client.post("/predictions/bag", content=b"[not json", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400, bad_json.text
    assert "input_fn raised JSONDecodeError" in bad_json.json()["message"]
    wrong_shape = client.post("/predictions/bag", json={"text": "good"})
    assert wrong_shape.status_code == 400 and "send a JSON list of texts" in wrong_shape.json()["message"]
    other_type = client.post("/predictions/bag", content=b"good", headers={"Content-Type": "text/plain"})
    assert other_type.status_code == 400 and "unsupported content type text/plain" in other_type.json()["message"]


def test_a_crash_in_predict_fn_is_a_500_and_the_worker_serves_on(server):
    client = inference(server)
    pid = management(server).get("/models/bag").json()[0]["workers"][0]["pid"]
    crashed = client.post("/predictions/bag", json=["good", "explode"])
    assert crashed.status_code == 500, crashed.text
    assert crashed.json()["message"] == "predict_fn raised RuntimeError: the model exploded on purpose"
    assert client.post("/predictions/bag", json=["great"]).json() == {"labels": ["pos"]}
    assert management(server).get("/models/bag").json()[0]["workers"][0]["pid"] == pid


def test_the_toolkit_defaults_decode_and_encode_json_csv_and_npy(server):
    client = inference(server)
    answer = client.post("/predictions/tensor", json=[[1, 1, 1], [0, 0, 1]])
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json" and answer.json() == [[6.0], [3.0]]
    as_csv = client.post("/predictions/tensor", content="1,0,0\n0,1,0\n",
                         headers={"Content-Type": "text/csv", "Accept": "text/csv"})
    assert as_csv.status_code == 200 and as_csv.text.split() == ["1.0", "2.0"]
    buffer = io.BytesIO()
    np.save(buffer, np.array([[2.0, 0.0, 1.0]], dtype=np.float32))
    as_npy = client.post("/predictions/tensor", content=buffer.getvalue(),
                         headers={"Content-Type": "application/x-npy", "Accept": "application/x-npy"})
    assert as_npy.status_code == 200, as_npy.text
    assert np.load(io.BytesIO(as_npy.content)).tolist() == [[5.0]]


def test_unsupported_content_type_is_415_and_unsupported_accept_is_406(server):
    client = inference(server)
    unsupported = client.post("/predictions/tensor", content=b"1 2 3", headers={"Content-Type": "text/plain"})
    assert unsupported.status_code == 415, unsupported.text
    assert "Content-Type text/plain is not supported by the default input_fn" in unsupported.json()["message"]
    not_acceptable = client.post("/predictions/tensor", json=[[1, 2, 3]], headers={"Accept": "application/xml"})
    assert not_acceptable.status_code == 406, not_acceptable.text
    assert "Accept application/xml is not supported" in not_acceptable.json()["message"]
    assert client.post("/predictions/tensor", json=[[1, 2, 3]], headers={"Accept": "*/*"}).json() == [[14.0]]


def test_a_folder_without_model_fn_is_refused_at_register(server, tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "inference.py").write_text("def predict_fn(data, model):\n    return data\n")
    refused = register(server, tmp_path, "no-model-fn")
    assert refused.status_code == 400, refused.text
    assert "defines no model_fn(model_dir)" in refused.json()["message"]
    (tmp_path / "code" / "inference.py").write_text("def model_fn(model_dir):\n    return open('missing.bin')\n")
    failing = register(server, tmp_path, "failing-model-fn")
    assert failing.status_code == 400 and "model_fn" in failing.json()["message"]
    assert "FileNotFoundError" in failing.json()["message"]
    names = [m["modelName"] for m in management(server).get("/models").json()["models"]]
    assert "no-model-fn" not in names and "failing-model-fn" not in names


def test_missing_requirements_are_named_at_register(server, tmp_path):
    folder = bag_of_words_folder(tmp_path / "needs")
    (folder / "code" / "requirements.txt").write_text("torch\nno-such-package-anywhere==1.0\n")
    refused = register(server, folder, "needs")
    assert refused.status_code == 400, refused.text
    assert "no-such-package-anywhere==1.0" in refused.json()["message"]


def test_ping_names_the_model_store(server):
    ping = inference(server).get("/ping")
    assert ping.json() == {"status": "Healthy"}
    assert ping.headers[MODEL_STORE_HEADER] == model_store_id(server.root / "store")
    assert model_store_id(server.root / "store") != model_store_id(server.root / "other")
