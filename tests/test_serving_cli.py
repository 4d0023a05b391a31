"""`nlpforge models ...` against a running server, the serve settings, and data-capture sampling and rotation."""
import json
import re

import pytest

from nlpforge.cli import main
from nlpforge.errors import ConfigError
from nlpforge.serving.capture import DataCapture
from nlpforge.serving import ServeSettings
from serving_support import inference, running_server


def run_cli(capsys, *argv) -> object:
    capsys.readouterr()
    try:
        main(list(argv))
    except SystemExit as done:
        assert done.code in (0, None), capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_models_commands_drive_the_management_api(tiny_model, tmp_path, capsys):
    with running_server(tmp_path / "store") as server:
        common = ["--management-url", server.url("management"), "--key-file", str(server.settings.key_path)]
        run_cli(capsys, "models", "register", str(tiny_model.output), "--name", "tiny", "--batch-size", "4", *common)
        run_cli(capsys, "models", "register", str(tiny_model.output), "--name", "tiny", "--version", "2.0", *common)
        assert run_cli(capsys, "models", "list", *common) == {"models": [{"modelName": "tiny",
                                                                          "modelUrl": str(tiny_model.output)}]}
        assert len(run_cli(capsys, "models", "describe", "tiny", "all", *common)) == 2
        routing = run_cli(capsys, "models", "traffic", "tiny", "--weight", "1.0=90", "--weight", "2.0=10",
                          "--shadow", "2.0", *common)
        assert routing == {"defaultVersion": "1.0", "weights": {"1.0": 90.0, "2.0": 10.0}, "shadow": "2.0"}
        run_cli(capsys, "models", "set-default", "tiny", "2.0", *common)
        assert inference(server).post("/predictions/tiny", content="great").headers["x-model-version"] == "2.0"
        run_cli(capsys, "models", "scale", "tiny", "2", "--version", "2.0", *common)
        assert len(run_cli(capsys, "models", "describe", "tiny", "2.0", *common)[0]["workers"]) == 2
        run_cli(capsys, "models", "unregister", "tiny", "1.0", *common)
        with pytest.raises(SystemExit) as failed:
            main(["models", "list", "--management-url", server.url("management"), "--token", "wrong"])
        assert failed.value.code != 0 and "401" in capsys.readouterr().err


@pytest.mark.parametrize("values, words", [
    ({"backend": "tensorrt"}, "backend must be one of torch, onnx, onnx-int8, not 'tensorrt'"),
    ({"models": ["stars"]}, "name=path"),
    ({"capture_percent": 120}, "capture-percent must be between 0 and 100, not 120"),
    ({"batch_size": 0}, "batch-size must be between 1 and 1024, not 0"),
])
def test_serve_settings_reject_bad_values(values, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        ServeSettings.of(model_store="store", **values)


def test_capture_samples_the_given_share_and_rotates(tmp_path):
    capture = DataCapture(tmp_path, max_bytes=2_000, backups=2, seed=0)
    written = sum(capture.record("m", "1.0", 30, f"text {i}", {"label": "pos", "score": 0.9}) for i in range(1000))
    assert 250 <= written <= 350
    capture.close()
    files = sorted(p.name for p in (tmp_path / "m" / "1.0").iterdir())
    assert files == ["capture.jsonl", "capture.jsonl.1", "capture.jsonl.2"]
    assert all(json.loads(line)["version"] == "1.0" for line in
               (tmp_path / "m" / "1.0" / "capture.jsonl").read_text().splitlines())
    assert not DataCapture(tmp_path).record("m", "1.0", 0, "x", {})
