"""Training-speed settings of the engine: a compiled model trains, saves a model that loads with the
weights under their own names, and resumes bit-exactly.

The engine compiles with inductor, whose C++ code generation takes minutes on a small CPU; here the
same module goes through TorchDynamo's graph capture only (backend "eager"): the wrapping, the weights'
names and the checkpoint/resume path are the engine's, the generated kernels are torch's.
"""
import functools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import Killed, kill_at, toy_rows, train_classifier, write_csv
from nlpforge import load
from nlpforge.models.registry import build_model, load_tokenizer, resolve_base
from nlpforge.training import checkpoint as ckpt

SETTINGS = dict(model="bert-tiny", batch_size=16, learning_rate=2e-3, max_seq_length=32, progress=False,
                log_every=1, threads=1, seed=0)
RUN = dict(epochs=2, compile=True, checkpoint_every=3)  # 6 batches an epoch


@pytest.fixture(scope="module", autouse=True)
def without_inductor():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
        yield


@pytest.fixture(scope="module")
def lever_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("levers")
    write_csv(folder / "train.csv", toy_rows(96, seed=1))
    write_csv(folder / "val.csv", toy_rows(32, seed=2))
    return folder


def _train(folder: Path, name: str, **values):
    return train_classifier(train=str(folder / "train.csv"), validation=str(folder / "val.csv"),
                            output=str(folder / name), **SETTINGS, **values)


def _loss_curve(model: Path) -> list[tuple]:
    lines = [json.loads(line) for line in (model / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(line["step"], line.get("loss"), line.get("validation_accuracy")) for line in lines]


@pytest.fixture(scope="module")
def compiled_run(lever_files):
    """A compiled run, checkpointed every 3 steps: both the saved model and the reference for resume."""
    from torch._dynamo.utils import counters

    counters.clear()
    result = _train(lever_files, "reference", checkpoint_dir=str(lever_files / "ck-reference"), **RUN)
    assert counters["stats"]["unique_graphs"] > 0, "the model was not compiled"
    return result


def test_a_compiled_model_saves_weights_under_their_own_names_and_loads(lever_files, compiled_run):
    saved = load_file(str(compiled_run.output / "model.safetensors"))
    checkpoint = load_file(str(ckpt.complete_checkpoints(lever_files / "ck-reference")[-1] / "model.safetensors"))
    plain = build_model(resolve_base("bert-tiny"), "AutoModelForSequenceClassification",
                        load_tokenizer(resolve_base("bert-tiny")), num_labels=2)
    assert saved.keys() == checkpoint.keys() == plain.state_dict().keys()  # no `_orig_mod.` prefix
    assert compiled_run.history[-1]["train_loss"] < compiled_run.history[0]["train_loss"]
    predictions = load(compiled_run.output).predict(["the plot was great", "the plot was awful"])
    assert all(sorted(p["probabilities"]) == ["neg", "pos"] for p in predictions)


def test_resume_of_a_compiled_run_is_bit_exact(lever_files, compiled_run):
    interrupted = dict(checkpoint_dir=str(lever_files / "ck-interrupted"), resume="auto", **RUN)
    with pytest.raises(Killed):
        train_classifier(train=str(lever_files / "train.csv"), validation=str(lever_files / "val.csv"),
                         output=str(lever_files / "interrupted"), on_step=kill_at(11), **SETTINGS, **interrupted)
    newest = json.loads((ckpt.complete_checkpoints(lever_files / "ck-interrupted")[-1] / "state.json").read_text())
    assert newest["step"] == 9 and newest["loop"]["batch"] == 3
    torch._dynamo.reset()  # a resumed process compiles afresh: it must not draw from the restored RNG
    resumed = _train(lever_files, "interrupted", **interrupted)
    assert json.loads((resumed.output / "nlpforge.json").read_text())["resumed_from"].endswith("step-00000009")
    assert _loss_curve(resumed.output) == _loss_curve(compiled_run.output)
    first, second = load_file(str(compiled_run.output / "model.safetensors")), load_file(
        str(resumed.output / "model.safetensors"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
