"""The fast CPU path: ONNX and dynamic int8 give the torch model's answers, and a server serves them."""
import pytest

from nlpforge import load, tasks
from nlpforge.models.onnx import export_onnx
from nlpforge.serving.handler import handler_for
from serving_support import inference, management, running_server

TEXTS = ["a great movie", "an awful film", "the plot was superb and the acting wonderful", "boring and dreadful",
         "great film " * 40]


@pytest.fixture(scope="module")
def copy_of_model(tiny_model, tmp_path_factory):
    import shutil

    target = tmp_path_factory.mktemp("onnx") / "model"
    shutil.copytree(tiny_model.output, target)
    return target


@pytest.mark.parametrize("backend, tolerance", [("torch", 1e-5), ("onnx", 1e-4), ("onnx-int8", 0.05)])
def test_backends_match_the_artifacts_own_predict(copy_of_model, backend, tolerance):
    expected = load(copy_of_model).predict(TEXTS)  # plain torch
    handler = handler_for("text-classification")
    handler.setup(str(copy_of_model), backend=backend, threads=1)
    handler.loaded.max_tokens = 40  # forces several length-sorted batches
    got = handler.predict([handler.decode_request(text) for text in TEXTS])
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    assert [g["truncated"] for g in got] == [False, False, False, False, True]
    for e, g in zip(expected, got):
        assert g["score"] == pytest.approx(e["score"], abs=tolerance)


def test_export_is_cached_until_the_weights_change(copy_of_model):
    outputs = {"logits": ("batch",)}
    load_weights = tasks.get("text-classification").load_weights
    path = export_onnx(copy_of_model, load_weights, outputs, quantized=True)
    stamp = path.stat().st_mtime_ns
    assert export_onnx(copy_of_model, load_weights, outputs, quantized=True).stat().st_mtime_ns == stamp
    assert path.stat().st_size < (copy_of_model / "onnx" / "model.onnx").stat().st_size


def test_server_serves_the_int8_backend(copy_of_model, tmp_path):
    with running_server(tmp_path, auth=False, backend="onnx-int8") as server:
        response = management(server).post("/models", params={"url": str(copy_of_model), "model_name": "tiny"})
        assert response.status_code == 200, response.text
        assert management(server).get("/models/tiny").json()[0]["backend"] == "onnx-int8"
        assert inference(server).post("/predictions/tiny", json=["awful", "superb"]).json()[1]["label"] == "pos"
        assert management(server).post("/models", params={"url": str(copy_of_model), "model_name": "x",
                                                          "backend": "tensorrt"}).status_code == 400
