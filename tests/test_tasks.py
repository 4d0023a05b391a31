"""The task contract: every path to a model gives the same answers, and those answers did not move
when text classification moved onto the contract (pinned before the move)."""
import csv
import json
from pathlib import Path

import pytest

from conftest import TINY, toy_rows, train_classifier, write_csv
from nlpforge import load, tasks
from nlpforge.errors import ArtifactError, ConfigError, InputError
from nlpforge.serving.handler import handler_for
from nlpforge.tasks.files import predict_file

PINNED = json.loads((Path(__file__).parent / "data" / "pinned_text_classification.json").read_text())


def _pair_rows(rows, second):
    return [{"premise": r["text"], "hypothesis": second(i), "label": r["label"]} for i, r in enumerate(rows)]


@pytest.fixture(scope="module")
def pair_model(tmp_path_factory):
    """A classifier of text pairs, trained exactly as the pinned one was."""
    folder = tmp_path_factory.mktemp("pairs")
    train = write_csv(folder / "train.csv", _pair_rows(toy_rows(240, seed=3), lambda i: toy_rows(1, seed=i)[0]["text"]))
    validation = write_csv(folder / "val.csv", _pair_rows(toy_rows(60, seed=4), lambda i: "the plot"))
    return train_classifier(train=str(train), validation=str(validation), output=str(folder / "model"),
                            text_column=["premise", "hypothesis"], model="bert-tiny", epochs=3, learning_rate=2e-3,
                            batch_size=16, max_seq_length=32, layer_lr_decay=1.0, progress=False, seed=0)


def _assert_same(got: list[dict], pinned: list[dict], tolerance: float = 1e-6) -> None:
    assert [g["label"] for g in got] == [p["label"] for p in pinned]
    for g, p in zip(got, pinned):
        assert set(g["probabilities"]) == set(p["probabilities"])
        for label, probability in p["probabilities"].items():
            assert g["probabilities"][label] == pytest.approx(probability, abs=tolerance)


def test_classification_predictions_are_the_pinned_ones(tiny_model, tmp_path):
    # The tiny model is trained with the pinned run's settings, so training did not move either.
    assert TINY["seed"] == 0
    assert tiny_model.metrics["validation_accuracy"] == PINNED["single"]["metrics"]["validation_accuracy"]
    texts = PINNED["single"]["texts"]
    _assert_same(load(tiny_model.output).predict(texts), PINNED["single"]["predictions"])
    # The server's handler and batch files go through the same contract.
    handler = handler_for("text-classification")
    handler.setup(str(tiny_model.output), backend="torch", threads=1)
    _assert_same(handler.predict([handler.decode_request(t) for t in texts]), PINNED["single"]["predictions"])
    source = write_csv(tmp_path / "in.csv", [{"text": t} for t in texts])
    predict_file(tiny_model.output, source, tmp_path / "out.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    _assert_same(rows, PINNED["single"]["predictions"])
    predict_file(tiny_model.output, source, tmp_path / "out.csv")
    with open(tmp_path / "out.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["label"] for r in table] == [p["label"] for p in PINNED["single"]["predictions"]]
    assert set(table[0]) == {"row", "label", "score", "p_neg", "p_pos"}


def test_text_pair_predictions_are_the_pinned_ones(pair_model):
    pairs = [tuple(pair) for pair in PINNED["pairs"]["pairs"]]
    _assert_same(load(pair_model.output).predict(pairs), PINNED["pairs"]["predictions"])
    handler = handler_for("text-classification")
    handler.setup(str(pair_model.output), backend="torch", threads=1)
    requests = [{"text": a, "text_pair": b} for a, b in pairs]
    _assert_same(handler.predict([handler.decode_request(r) for r in requests]), PINNED["pairs"]["predictions"])


def test_inputs_are_checked_by_the_task():
    task = tasks.get("text-classification")
    assert task.parse_input({"text": "a", "text_pair": "b"}) == ("a", "b")
    assert task.parse_input({"data": "from a TorchServe client"}) == "from a TorchServe client"
    for bad, message in [({"txt": "a"}, 'did you mean "text"'), ({"review": "a"}, 'under "text"'), ("", "empty"),
                         ({"text": "a", "text_pair": ""}, "text_pair"),
                         (("a", "b", "c"), "two texts"), (3, "must be a string"), ("x" * 11, "over the limit")]:
        with pytest.raises(InputError, match=message):
            task.parse_input(bad, max_chars=10)
    assert task.parse_input("", max_chars=None) == ""  # a batch file's empty row is still a row


def test_the_registry_knows_every_task_and_refuses_unknown_ones(tmp_path, tiny_model):
    assert {"text-classification", "masked-lm"} <= set(tasks.names())
    with pytest.raises(ConfigError, match="unknown task 'ner'; the tasks are"):
        tasks.get("ner")
    folder = tmp_path / "future"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((tiny_model.output / name).read_bytes())
    (folder / "nlpforge.json").write_text(json.dumps({"task": "time-travel", "format_version": 1}))
    with pytest.raises(ArtifactError, match="'time-travel' model, a task this nlpforge does not know"):
        load(folder)


def test_a_gpu_asked_for_where_there_is_none_is_one_line(tiny_model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: the refusal is what a machine without one answers")
    with pytest.raises(ConfigError, match="device cuda: torch .* sees no CUDA GPU on this machine; use device cpu"):
        load(tiny_model.output, device="cuda")
