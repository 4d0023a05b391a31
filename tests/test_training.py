"""Fine-tuning: a tiny model learns a separable task; the artifact round-trips exactly."""
import json
import re

import numpy as np
import pytest
import torch

from conftest import classifier_job, toy_rows, train_classifier, write_csv
from nlpforge import load
from nlpforge.data.batching import CALL_TOKENS, inference_batches, length_grouped_batches, pad_batch
from nlpforge.errors import ArtifactError, ConfigError
from nlpforge.models.frozen import freeze_lowest_layers
from nlpforge.models.registry import build_model, load_tokenizer, resolve_base


def test_tiny_model_learns_the_toy_task(tiny_model):
    assert tiny_model.metrics["validation_accuracy"] >= 0.9
    history = tiny_model.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_artifact_is_complete_and_has_no_pickle(tiny_model):
    folder = tiny_model.output
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "labels.json", "nlpforge.json", "README.md",
            "tokenizer.json", "tokenizer_config.json"} <= names
    assert not [p for p in folder.rglob("*") if p.suffix in (".bin", ".pkl", ".pt", ".pickle")]
    meta = json.loads((folder / "nlpforge.json").read_text())
    assert meta["task"] == "text-classification" and meta["base_model"] == "bert-tiny"
    assert len(meta["data_files"][0]["sha256"]) == 64
    assert meta["hyperparameters"]["learning_rate"] == 2e-3
    assert "torch" in meta["library_versions"] and "transformers" in meta["library_versions"]
    assert json.loads((folder / "labels.json").read_text())["labels"] == ["neg", "pos"]
    assert "validation_accuracy" in (folder / "README.md").read_text()


def test_load_gives_identical_predictions(tiny_model, tmp_path):
    texts = [row["text"] for row in toy_rows(40, seed=9)] + ["", "x " * 500]
    first = load(tiny_model.output).predict(texts)
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in tiny_model.output.iterdir():
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    second = load(copy).predict(texts)
    assert first == second
    assert set(first[0]) == {"label", "score", "probabilities", "truncated"}
    assert [p["truncated"] for p in first[-2:]] == [False, True]
    assert abs(sum(first[0]["probabilities"].values()) - 1) < 1e-5
    assert first[0]["score"] == max(first[0]["probabilities"].values())


def test_transformers_loads_the_artifact_directly(tiny_model):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model.output))
    assert model.config.id2label == {0: "neg", 1: "pos"}


def test_loading_a_folder_that_is_not_an_artifact_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="missing config.json"):
        load(tmp_path)
    with pytest.raises(ArtifactError, match="no such model folder"):
        load(tmp_path / "absent")


def test_a_config_that_does_not_fit_the_weights_or_a_metadata_without_task_is_a_clear_error(tiny_model, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_model.output, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))
    with pytest.raises(ArtifactError, match=r"the weights do not fit config.json \(their shapes differ"):
        load(folder)
    meta = json.loads((folder / "nlpforge.json").read_text())
    del meta["task"]
    (folder / "nlpforge.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match='nlpforge.json: has no "task", so the folder is damaged'):
        load(folder)


def test_freezing_the_lowest_layers():
    base = resolve_base("bert-tiny")
    model = build_model(base, "AutoModelForSequenceClassification", load_tokenizer(base), num_labels=2)
    freeze_lowest_layers(model, 1)
    layers = model.base_model.encoder.layer
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[1].parameters())
    assert not any(p.requires_grad for p in model.base_model.embeddings.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    with pytest.raises(ConfigError, match="has 2 layers"):
        freeze_lowest_layers(model, 3)


def test_layer_wise_decay_slows_each_layer_below_the_head():
    from nlpforge.training.loop import make_optimizer, make_scheduler

    base = resolve_base("bert-tiny")  # two encoder layers
    model = build_model(base, "AutoModelForSequenceClassification", load_tokenizer(base), num_labels=2)
    optimizer = make_optimizer(model, 1e-3, 0.01, layer_decay=0.5)
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    bert = model.base_model
    assert {rate[id(p)] for p in model.classifier.parameters()} == {1e-3}
    assert {rate[id(p)] for p in bert.encoder.layer[1].parameters()} == {5e-4}
    assert {rate[id(p)] for p in bert.encoder.layer[0].parameters()} == {2.5e-4}
    assert {rate[id(p)] for p in bert.embeddings.parameters()} == {1.25e-4}
    assert len(rate) == sum(1 for p in model.parameters())
    decay = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert decay[id(bert.encoder.layer[0].attention.self.query.weight)] == 0.01
    assert decay[id(bert.encoder.layer[0].attention.self.query.bias)] == 0.0
    scheduler = make_scheduler(optimizer, "linear", 2, 10)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    ratios = {group["lr"] / group["lr_scale"] for group in optimizer.param_groups}
    assert len(ratios) == 1 and next(iter(ratios)) == pytest.approx(1e-3 * 5 / 8)  # one schedule for all
    assert len(make_optimizer(model, 1e-3, 0.01).param_groups) == 2  # off: decay and no decay


def test_label_smoothing_and_the_ordinal_term_add_to_the_cross_entropy():
    from types import SimpleNamespace

    from nlpforge.tasks.text_classification import TASK, TextClassificationData

    scores = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    model = lambda **_: SimpleNamespace(logits=scores)  # noqa: E731
    batch = {"input_ids": torch.zeros(2, 3, dtype=torch.long), "labels": torch.tensor([0, 1])}
    plain = torch.nn.functional.cross_entropy(scores, batch["labels"], reduction="none")
    step = TASK.loss(TextClassificationData(train="t", label_smoothing=0.2), [0, 1], [1, 3, 5])
    smoothed = torch.nn.functional.cross_entropy(scores, batch["labels"], reduction="none", label_smoothing=0.2)
    assert torch.allclose(step(model, batch), smoothed) and not torch.allclose(smoothed, plain)
    step = TASK.loss(TextClassificationData(train="t", ordinal_loss=0.5), [0, 1], [1, 3, 5])  # steps of 2 stars
    expected = scores.softmax(-1) @ torch.tensor([0.0, 1.0, 2.0])
    assert torch.allclose(step(model, batch), plain + 0.5 * (expected - torch.tensor([0.0, 1.0])) ** 2)
    with pytest.raises(ConfigError, match="ordinal-loss needs numeric labels"):
        TASK.loss(TextClassificationData(train="t", ordinal_loss=1.0), [0, 1], ["neg", "pos"])


def test_rdrop_runs_the_batch_twice_and_adds_the_symmetric_kl_of_the_two_passes():
    from types import SimpleNamespace

    from nlpforge.tasks.text_classification import TASK, TextClassificationData

    passes = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0], [1.0, 1.0, 0.0], [0.0, 1.0, 3.0]])  # 2 rows, 2 passes
    seen = []

    def model(input_ids, **_):
        seen.append(input_ids)
        return SimpleNamespace(logits=passes)

    batch = {"input_ids": torch.tensor([[5, 6], [7, 0]]), "labels": torch.tensor([0, 2])}
    loss = TASK.loss(TextClassificationData(train="t", rdrop=0.5), [0, 2], [1, 2, 3])(model, batch)
    assert seen[0].tolist() == [[5, 6], [7, 0], [5, 6], [7, 0]]
    first, second = passes[:2].log_softmax(-1), passes[2:].log_softmax(-1)
    kl = torch.nn.functional.kl_div
    symmetric = (kl(second, first, log_target=True, reduction="none").sum(-1)
                 + kl(first, second, log_target=True, reduction="none").sum(-1)) / 2
    cross_entropy = torch.nn.functional.cross_entropy(passes, torch.tensor([0, 2, 0, 2]), reduction="none")
    assert symmetric[0] > 0.1 and symmetric[1] == 0  # the second row's passes agree
    assert torch.allclose(loss, (cross_entropy[:2] + cross_entropy[2:]) / 2 + 0.5 * symmetric)


def test_a_tiny_model_learns_with_every_loss_and_rate_lever_on(tmp_path):
    from conftest import TINY, write_csv

    train = write_csv(tmp_path / "train.csv", toy_rows(240, seed=1, labels=(1, 2)))
    validation = write_csv(tmp_path / "val.csv", toy_rows(60, seed=2, labels=(1, 2)))
    result = train_classifier(train=str(train), validation=str(validation), output=str(tmp_path / "model"),
                              **{**TINY, "epochs": 4, "layer_lr_decay": 0.8}, label_smoothing=0.1, ordinal_loss=0.5,
                              rdrop=1.0)
    assert result.metrics["validation_accuracy"] > 0.9


def test_a_run_whose_weights_become_nan_stops_and_writes_no_model(tmp_path):
    from conftest import TINY, write_csv

    train = write_csv(tmp_path / "train.csv", toy_rows(64, seed=1))
    with pytest.raises(ConfigError, match=r"training diverged: the weights became NaN or infinite in epoch 1 "
                                          r"\(step 4, learning rate 1e\+10\); lower --learning-rate"):
        train_classifier(train=str(train), output=str(tmp_path / "model"),
                         **{**TINY, "epochs": 2, "learning_rate": 1e10, "max_grad_norm": 0})
    assert not (tmp_path / "model").exists()


def test_the_working_folder_may_hold_the_users_checkpoint_dir_but_not_other_files(tmp_path):
    from nlpforge.training.run import check_training_folder

    (tmp_path / "m.training" / "ckpt" / "step-20").mkdir(parents=True)
    (tmp_path / "m.training" / "metrics.jsonl").write_text("")
    job = classifier_job(train="t.csv", output=str(tmp_path / "m"), checkpoint_dir=str(tmp_path / "m.training/ckpt"))
    check_training_folder(job)  # the checkpoints of the run to resume
    (tmp_path / "m.training" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="m.training holds notes.txt, which no run wrote"):
        check_training_folder(job)


def test_a_validation_file_that_is_the_training_file_is_named_in_a_warning(tmp_path):
    from conftest import TINY, write_csv

    train = write_csv(tmp_path / "train.csv", toy_rows(64, seed=1))
    lines = []
    train_classifier(log=lines.append, train=str(train), validation=str(tmp_path / "." / "train.csv"),
                     output=str(tmp_path / "model"), **{**TINY, "epochs": 1, "max_steps": 1})
    assert [line for line in lines if line.startswith("warning: --validation")] == [
        f"warning: --validation {tmp_path}/train.csv is also training data (--train {train}), so the validation "
        "metrics (and the best epoch they pick) measure what the model has seen; give a held-out file, or leave out "
        "--validation to hold out part of the training data"]


def test_a_mean_pooled_head_learns_round_trips_and_serves_on_every_backend(tmp_path):
    from conftest import TINY, write_csv
    from nlpforge.tasks import get

    train = write_csv(tmp_path / "train.csv", toy_rows(240, seed=1))
    validation = write_csv(tmp_path / "val.csv", toy_rows(60, seed=2))
    result = train_classifier(train=str(train), validation=str(validation), output=str(tmp_path / "model"),
                              **TINY, pooling="mean")
    assert result.metrics["validation_accuracy"] > 0.9
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["pooling"] == "mean" and config["architectures"] == ["BertMeanPooledForSequenceClassification"]
    assert "pooler" not in " ".join(n for n, _ in load(tmp_path / "model").model.named_parameters())
    texts = ["the movie was great", "awful plot and acting really", "it was a film and the story"]
    expected = load(tmp_path / "model").predict(texts)
    alone = [load(tmp_path / "model").predict(text)[0] for text in texts]  # no padding: the same answer
    assert [a["score"] for a in alone] == pytest.approx([e["score"] for e in expected], abs=1e-6)
    onnx = get("text-classification").load(tmp_path / "model", backend="onnx").predict(texts)
    assert [o["score"] for o in onnx] == pytest.approx([e["score"] for e in expected], abs=1e-4)
    # What the mean pooling changes: transformers' own [CLS] classifier on the same weights answers otherwise.
    from transformers import AutoModelForSequenceClassification

    plain = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "model")).eval()
    assert type(plain).__name__ == "BertForSequenceClassification"
    assert "the mean of the token vectors" in (tmp_path / "model" / "README.md").read_text()


def test_mean_pooling_refuses_a_base_that_is_not_bert(tmp_path):
    from nlpforge.models.registry import BaseModel
    from nlpforge.tasks.text_classification import check_mean_pooling_base

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    with pytest.raises(ConfigError, match="--pooling mean needs a BERT-family base .* 'roberta'; use --pooling cls"):
        check_mean_pooling_base(BaseModel("my-roberta", tmp_path, tmp_path))


def test_batches_are_grouped_by_length_and_dynamically_padded():
    lengths = list(np.random.default_rng(0).integers(3, 200, size=1000))
    batches = length_grouped_batches(lengths, batch_size=10, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    grouped = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    random_order = np.random.default_rng(1).permutation(1000)
    naive = sum(max(lengths[i] for i in random_order[s:s + 10]) * 10 for s in range(0, 1000, 10))
    assert grouped < 0.6 * naive
    again = length_grouped_batches(lengths, batch_size=10, seed=1)
    assert [b.tolist() for b in batches] == [b.tolist() for b in again]
    batch = pad_batch([{"input_ids": [1, 2, 3]}, {"input_ids": [4]}], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_classifier_rows_are_grouped_by_their_token_counts(tmp_path):
    # Characters sort these the wrong way round: the row of one-letter words is shorter and has more
    # tokens than the row of two common words.
    from nlpforge import tasks
    from nlpforge.tasks.text_classification import grouping_lengths

    texts = ["q z x j k v w y", "understanding everything", "great", "x q"]
    train = write_csv(tmp_path / "train.csv", [{"text": t, "label": "ab"[i % 2]} for i, t in enumerate(texts)])
    tokenizer = load_tokenizer(resolve_base("bert-tiny"))
    job = classifier_job(train=str(train), validation=str(train), model="bert-tiny", max_seq_length=9)
    data = tasks.get("text-classification").prepare(job.data, tokenizer, max_seq_length=9, seed=0,
                                                    log=lambda *_: None)
    counted = [len(tokenizer(t)["input_ids"]) for t in texts]
    assert counted == [10, 4, 3, 4]  # with [CLS] and [SEP]: 15 characters, 10 tokens; 24 characters, 4
    assert list(data.lengths) == [min(n, 9) for n in counted]  # capped where rows are cut: longer rows tie
    assert grouping_lengths(["abc", "de"], [5], 9) == [3, 2]  # not every row counted: characters instead


def test_prediction_batches_pad_least_within_their_limits():
    lengths = [int(n) for n in np.random.default_rng(0).lognormal(3.6, 0.6, size=32).clip(3, 128)]
    batches = inference_batches(lengths, max_rows=32, max_tokens=1024)
    assert sorted(i for b in batches for i in b) == list(range(32))
    assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 1024 for b in batches)

    def cost(cut):
        return sum(len(b) * max(lengths[i] for i in b) + CALL_TOKENS for b in cut)
    # No other cut of the sorted rows is cheaper: every way of cutting at most 3 contiguous runs is tried.
    order = sorted(range(32), key=lengths.__getitem__)
    for first in range(1, 32):
        for second in range(first, 32):
            cut = [order[:first], order[first:second], order[second:]]
            cut = [b for b in cut if b]
            if all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 1024 for b in cut):
                assert cost(batches) <= cost(cut)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < 1.2 * sum(lengths)
    equal = inference_batches([5] * 70, max_rows=32)  # equal lengths: as few calls as the row limit allows
    assert len(equal) == 3 and all(len(b) <= 32 for b in equal)


@pytest.mark.parametrize("field, value, message", [
    ("epochs", 0, "epochs must be at least 1, not 0"),
    ("learning_rate", -1.0, "learning-rate must be positive"),
    ("lr_schedule", "step", "lr-schedule must be one of linear, cosine, constant, not 'step'"),
    ("metric_for_best", "loss", "metric-for-best must be one of macro_f1, accuracy"),
    ("batch_size", "many", "batch-size must be an integer, not 'many'"),
    ("node_rank", 2, "node-rank must be in [0, nnodes)"),
    ("learning_rat", 1e-3, "unknown setting(s) learning_rat"),
    ("layer_lr_decay", 0, "layer-lr-decay must be between 0.01 and 1.0, not 0"),
    ("label_smoothing", 0.9, "label-smoothing must be between 0 and 0.5, not 0.9"),
    ("ordinal_loss", -1, "ordinal-loss must be at least 0"),
    ("rdrop", -0.5, "rdrop must be at least 0"),
    ("pooling", "max", "pooling must be one of cls, mean, not 'max'"),
])
def test_bad_settings_are_rejected(field, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        classifier_job(train="t.csv", output="o", **{field: value})


def test_a_task_brings_its_own_defaults_for_engine_settings(monkeypatch):
    from nlpforge.tasks.text_classification import TASK
    from nlpforge.training.settings import TrainArgs, job_class

    job = classifier_job(train="t.csv", output="o")
    settings = {**vars(job.model), **vars(job.train)}  # the defaults span groups: the base model and the training
    assert {name: settings[name] for name in TASK.defaults} == TASK.defaults
    other_model = job_class("token-classification").of(train="t.conll", output="o").model
    assert (job.model.model, other_model.model) == ("mpnet-base", "minilm-l6")
    assert classifier_job(train="t.csv", output="o", epochs=5, layer_lr_decay=1.0).train.epochs == 5
    other = job_class("token-classification").of(train="t.conll", output="o")
    assert (other.train.epochs, other.train.learning_rate) == (TrainArgs().epochs, TrainArgs().learning_rate)
    monkeypatch.setattr(TASK, "defaults", {"epochz": 2})
    job_class.cache_clear()
    try:
        with pytest.raises(ConfigError, match="defaults for unknown engine setting.s. epochz"):
            job_class("text-classification")
    finally:
        monkeypatch.undo()
        job_class.cache_clear()


def test_a_config_group_named_like_a_flag_keeps_its_settings_when_the_flag_is_given(tmp_path):
    from nlpforge.cli.options import build_settings, settings_values
    from nlpforge.training.settings import job_class

    config = tmp_path / "c.yaml"  # "train" and "model" are groups here, and flags (--train FILE, --model NAME)
    config.write_text("train:\n  learning_rate: 0.001\n  epochs: 3\nmodel:\n  max_seq_length: 48\nseed: 7\n")
    cls = job_class("text-classification")
    flags = {"train": "t.csv", "model": "bert-tiny", "output": "o", "epochs": None, "seed": 9, "text_column": ()}
    job = build_settings(cls, settings_values(cls, config, flags), "nlpforge train text-classification")
    assert (job.train.learning_rate, job.train.epochs, job.train.seed) == (0.001, 3, 9)
    assert (job.data.train, job.model.model, job.model.max_seq_length) == ("t.csv", "bert-tiny", 48)


def test_settings_come_flat_or_grouped_and_strings_are_parsed():
    from nlpforge.settings import from_flat, to_flat

    flat = classifier_job(train="t.csv", output="o", epochs="2", learning_rate="3e-5", progress="false")
    assert (flat.train.epochs, flat.train.learning_rate, flat.runtime.progress) == (2, 3e-5, False)
    grouped = from_flat(type(flat), {"output": "o", "data": {"train": "t.csv"},
                                     "train": {"epochs": 2, "learning_rate": 3e-5}, "progress": False})
    assert to_flat(grouped) == to_flat(flat)
    with pytest.raises(ConfigError, match=re.escape("unknown setting(s) train.epoch")):
        from_flat(type(flat), {"output": "o", "train": {"epoch": 2}})


@pytest.mark.shared_data
@pytest.mark.pretrained
def test_minilm_fine_tunes_on_a_slice_of_amazon_reviews(amazon, tmp_path):
    torch.set_num_threads(2)
    result = train_classifier(
        train=str(amazon / "digital_video_train.csv"), validation=str(amazon / "digital_video_validation.csv"),
        text_column=["review_body"], label_column="star_rating", model="minilm-l6", output=str(tmp_path / "m"),
        epochs=1, max_train_rows=160, max_seq_length=64, batch_size=16, progress=False)
    assert result.samples == 160
    # Fine-tuned from the pretrained weights: close to them, but moved.
    from safetensors.torch import load_file

    before = load_file(str(resolve_base("minilm-l6").weights / "model.safetensors"))
    after = load_file(str(result.output / "model.safetensors"))
    name = "encoder.layer.5.attention.self.query.weight"
    delta = (after["bert." + name] - before[name]).abs()
    assert 0 < delta.max().item() < 0.05
    predictions = load(result.output).predict(["Absolutely loved it, five stars", "Terrible. Waste of money."])
    assert [sorted(p["probabilities"]) for p in predictions] == [["1", "2", "3", "4", "5"]] * 2
