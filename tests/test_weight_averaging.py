"""Stochastic weight averaging (--average-from): the model saved is the mean of the trained weights over the
steps it names, epochs are evaluated with that mean, and resume stays bit-exact."""
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import Killed, kill_at, toy_rows, train_classifier, write_csv
from nlpforge.errors import ConfigError
from nlpforge.training.settings import job_class

SETTINGS = dict(model="bert-tiny", batch_size=16, learning_rate=2e-3, max_seq_length=32, progress=False,
                log_every=1, threads=1, seed=0, layer_lr_decay=1.0, freeze_layers=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("averaging")
    write_csv(folder / "train.csv", toy_rows(96, seed=1))  # 6 steps an epoch at batch 16
    write_csv(folder / "val.csv", toy_rows(32, seed=2))
    return folder


def _train(files, name: str, **values):
    return train_classifier(train=str(files / "train.csv"), validation=str(files / "val.csv"),
                            output=str(files / name), **{**SETTINGS, **values})


def test_the_saved_model_is_the_mean_of_the_weights_after_each_averaged_step(files):
    # 1 epoch of 6 steps, averaged from half-way: the weights after steps 4, 5 and 6.
    result = _train(files, "one-epoch", epochs=1, average_from=0.5, checkpoint_every=1, keep_checkpoints=10,
                    checkpoint_dir=str(files / "ck-one-epoch"))
    steps = [load_file(str(files / "ck-one-epoch" / f"step-{n:08d}" / "model.safetensors")) for n in (4, 5, 6)]
    saved = load_file(str(result.output / "model.safetensors"))
    trained = [k for k in saved if not torch.equal(steps[0][k], steps[2][k])]
    assert any(".layer.1." in k for k in trained) and not any(".layer.0." in k for k in trained)
    for key in trained:
        torch.testing.assert_close(saved[key], sum(s[key] for s in steps) / 3, rtol=1e-6, atol=1e-7)
        assert not torch.equal(saved[key], steps[2][key])  # not simply the last step's weights
    for key in set(saved) - set(trained):  # the frozen layers (and anything else untrained) as they were
        assert torch.equal(saved[key], steps[2][key])
    history = result.history
    assert history[-1]["averaged_steps"] == 3
    # The checkpoint keeps the running mean; the model inside it is the last step's own weights.
    average = load_file(str(files / "ck-one-epoch" / "step-00000006" / "average.safetensors"))
    assert all(torch.equal(average[k], saved[k]) for k in average)


def test_epochs_are_evaluated_with_the_average(files):
    plain = _train(files, "plain", epochs=2)
    averaged = _train(files, "averaged", epochs=2, average_from=0.0)  # every step from the first
    # Same steps, same data order: the first epoch's training loss is the same, its validation not.
    assert plain.history[0]["train_loss"] == averaged.history[0]["train_loss"]
    assert plain.history[0]["validation_loss"] != averaged.history[0]["validation_loss"]
    assert averaged.history[0]["averaged_steps"] == 6 and averaged.history[1]["averaged_steps"] == 12
    assert "averaged_steps" not in plain.history[0]


def test_resume_with_an_average_is_bit_exact(files):
    settings = dict(epochs=2, average_from=0.25, checkpoint_every=4)
    reference = _train(files, "reference", checkpoint_dir=str(files / "ck-reference"), **settings)
    interrupted = dict(checkpoint_dir=str(files / "ck-interrupted"), resume="auto", **settings)
    with pytest.raises(Killed):
        _train(files, "interrupted", on_step=kill_at(9), **interrupted)
    resumed = _train(files, "interrupted", **interrupted)
    assert json.loads((resumed.output / "nlpforge.json").read_text())["resumed_from"].endswith("step-00000008")
    first, second = load_file(str(reference.output / "model.safetensors")), load_file(
        str(resumed.output / "model.safetensors"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert reference.history == [{k: v for k, v in h.items()} for h in resumed.history]


def test_a_resume_with_more_epochs_keeps_averaging_from_the_same_step(files):
    settings = dict(average_from=0.5, checkpoint_dir=str(files / "ck-longer"))
    first = _train(files, "longer", epochs=1, **settings)  # 6 steps: averaged from step 3
    assert first.history[-1]["averaged_steps"] == 3
    longer = _train(files, "longer", epochs=2, resume="auto", overwrite=True, **settings)
    assert longer.history[-1]["averaged_steps"] == 9  # not from step 6, half of the new 12


@pytest.mark.parametrize("value", [1.0, -0.1])
def test_a_share_outside_0_to_1_is_refused(value):
    with pytest.raises(ConfigError, match="average-from"):
        job_class("text-classification").of(train="t.csv", output="out", average_from=value)
