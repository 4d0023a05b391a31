"""deploy → Predictor → delete_endpoint, and batch transform, against a stand-in for the model server.

The stand-in speaks the TorchServe routes `nlpforge serve` answers (ping, register, predict,
delete) and predicts with the real model folder; one test drives the real server when it exists.
"""
import csv
import importlib.util
import json
import sys
import textwrap

import pytest

from nlpforge.errors import EndpointError
from nlpforge.sdk import CSVSerializer, Estimator, IdentitySerializer, Predictor
from serving_support import free_port

STAND_IN = '''
import argparse, csv, io, json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from urllib.parse import parse_qs, urlparse

import nlpforge

parser = argparse.ArgumentParser()
for flag in ("--model-store", "--host", "--inference-port", "--management-port", "--metrics-port"):
    parser.add_argument(flag)
args = parser.parse_args()
models = {}


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/ping":
            return self.answer(200, {"status": "Healthy"})
        self.answer(404, {"message": "not found"})

    def do_POST(self):
        url = urlparse(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        if url.path == "/models":
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if query["model_name"] in models:
                return self.answer(409, {"message": "model already registered"})
            models[query["model_name"]] = nlpforge.load(query["url"])
            return self.answer(200, {"status": "registered " + query["model_name"]})
        name = url.path.removeprefix("/predictions/")
        if name not in models:
            return self.answer(404, {"message": f"model {name} not found"})
        kind = self.headers.get("Content-Type", "")
        value = json.loads(body) if kind == "application/json" else None
        if isinstance(value, dict):  # one request, one answer
            return self.answer(200, models[name].predict([value["text"]])[0])
        if kind == "application/json":
            texts = [v["text"] if isinstance(v, dict) else v for v in value]
        elif kind == "text/csv":
            texts = [row[0] for row in csv.reader(io.StringIO(body))]
        else:
            texts = body.splitlines()
        self.answer(200, models[name].predict(texts))

    def do_DELETE(self):
        name = self.path.removeprefix("/models/")
        if models.pop(name, None) is None:
            return self.answer(404, {"message": f"model {name} not found"})
        self.answer(200, {"status": "unregistered"})

    def log_message(self, *_):
        pass


management = ThreadingHTTPServer((args.host, int(args.management_port)), Handler)
Thread(target=management.serve_forever, daemon=True).start()
ThreadingHTTPServer((args.host, int(args.inference_port)), Handler).serve_forever()
'''

# A script-mode job whose "training" saves an nlpforge model folder to SM_MODEL_DIR.
COPY_MODEL = '''
import argparse, os, shutil
parser = argparse.ArgumentParser()
parser.add_argument("--trained-model", type=str)
args = parser.parse_args()
shutil.copytree(args.trained_model, os.environ["SM_MODEL_DIR"], dirs_exist_ok=True)
print("saved model to", os.environ["SM_MODEL_DIR"])
'''



@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """A completed job whose model folder is the tiny toy classifier."""
    import os

    os.environ["NLPFORGE_TRACKING"] = "0"
    folder = tmp_path_factory.mktemp("deploy")
    (folder / "train.py").write_text(textwrap.dedent(COPY_MODEL))
    (folder / "stand_in.py").write_text(textwrap.dedent(STAND_IN))
    est = Estimator(entry_point=str(folder / "train.py"), jobs_root=str(folder / "jobs"),
                    hyperparameters={"trained-model": str(tiny_model.output)}, tracking=False)
    est.fit(logs=False, job_name="toy-stars")
    yield est, folder
    os.environ.pop("NLPFORGE_TRACKING", None)


def test_deploy_starts_the_server_and_predictor_predicts(trained):
    est, folder = trained
    ports = dict(inference_port=free_port(), management_port=free_port(), metrics_port=free_port())
    predictor = est.deploy(initial_instance_count=1, endpoint_name="toy-stars",
                           server_command=[sys.executable, str(folder / "stand_in.py")], **ports)
    try:
        answer = predictor.predict({"text": "a wonderful and superb film"})
        assert answer["label"] == "pos" and set(answer["probabilities"]) == {"neg", "pos"}
        assert [p["label"] for p in predictor.predict(["the worst, dreadful plot", "fantastic acting"])] == \
            ["neg", "pos"]

        attached = Predictor("toy-stars", jobs_root=str(folder / "jobs"), serializer=CSVSerializer())
        assert attached.inference_port == ports["inference_port"]  # found from the endpoint record
        assert [p["label"] for p in attached.predict([["awful and boring"], ["i love it"]])] == ["neg", "pos"]
        text = Predictor("toy-stars", jobs_root=str(folder / "jobs"), serializer=IdentitySerializer("text/plain"))
        assert text.predict("terrible movie\nexcellent movie")[1]["label"] == "pos"

        with pytest.raises(EndpointError, match="endpoint 'toy-stars' already exists"):
            est.deploy(endpoint_name="toy-stars", **ports)
    finally:
        predictor.delete_endpoint()
    assert not (folder / "jobs" / "_endpoints" / "toy-stars.json").exists()
    with pytest.raises(EndpointError):  # the server deploy() started is stopped with its last endpoint
        Predictor("toy-stars", jobs_root=str(folder / "jobs"), inference_port=ports["inference_port"]).predict("x")


def test_predicting_on_an_endpoint_that_does_not_exist_is_a_clear_error(tmp_path):
    with pytest.raises(EndpointError, match="does not answer"):
        Predictor("nothing-here", jobs_root=str(tmp_path), inference_port=free_port()).predict({"text": "x"})


def test_deploying_a_model_folder_that_is_not_an_artifact_is_refused(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("print('no model saved')\n")
    est = Estimator(entry_point=str(script), jobs_root=str(tmp_path / "jobs"), tracking=False)
    est.fit(logs=False)
    with pytest.raises(EndpointError, match="not an nlpforge model folder"):
        est.deploy(inference_port=free_port())


def test_batch_transform_writes_one_out_file_per_input(trained, tmp_path):
    est, _ = trained
    inputs = tmp_path / "batch"
    inputs.mkdir()
    for name, texts in (("a.csv", ["superb film", "dreadful film"]), ("b.csv", ["i hate it"])):
        with open(inputs / name, "w", newline="") as handle:
            csv.writer(handle).writerows([["text"], *[[t] for t in texts]])
    transformer = est.transformer(instance_count=1, instance_type="local", output_path=str(tmp_path / "out"))
    written = transformer.transform(str(inputs), content_type="text/csv", split_type="Line")
    assert [p.name for p in written] == ["a.csv.out", "b.csv.out"]
    rows = [json.loads(line) for line in written[0].read_text().splitlines()]
    assert [row["label"] for row in rows] == ["pos", "neg"] and [row["row"] for row in rows] == [0, 1]
    as_csv = est.transformer(output_path=str(tmp_path / "csv"), accept="text/csv").transform(str(inputs / "b.csv"))
    assert as_csv[0].read_text().splitlines()[0].startswith("row,label,score")


@pytest.mark.skipif(importlib.util.find_spec("nlpforge.serving") is None,
                    reason="the model server (nlpforge.serving) is not part of this build yet")
def test_deploy_on_the_real_model_server(trained):
    est, _ = trained
    ports = dict(inference_port=free_port(), management_port=free_port(), metrics_port=free_port())
    predictor = est.deploy(endpoint_name="real-server", **ports)
    try:
        answer = predictor.predict({"text": "a wonderful and superb film"})
        answer = answer[0] if isinstance(answer, list) else answer
        assert answer["label"] == "pos"
    finally:
        predictor.delete_endpoint()
