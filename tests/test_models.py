"""Base-model resolution: aliases, folders, from-scratch shapes, and the error for unknown names."""
import pytest
import torch

from nlpforge.errors import ModelNotFoundError
from nlpforge.models.registry import aliases, build_model, load_tokenizer, resolve_base


def classifier(base, labels):
    tokenizer = load_tokenizer(base)
    return build_model(base, "AutoModelForSequenceClassification", tokenizer, num_labels=len(labels),
                       id2label=dict(enumerate(labels))), tokenizer


def test_unknown_name_lists_the_aliases():
    with pytest.raises(ModelNotFoundError) as error:
        resolve_base("bert-base-uncased")
    for alias in ("minilm-l6", "bert-tiny"):
        assert alias in str(error.value)


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_base(str(tmp_path))


def test_bert_tiny_has_the_named_shape():
    model, tokenizer = classifier(resolve_base("bert-tiny"), ["a", "b", "c"])
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_labels) == (2, 128, 3)
    assert config.id2label == {0: "a", 1: "b", 2: "c"}
    batch = tokenizer(["hello world", "hi"], padding=True, return_tensors="pt")
    assert model(**batch).logits.shape == (2, 3)


@pytest.mark.pretrained
def test_minilm_alias_is_the_real_pretrained_model():
    base = resolve_base("minilm-l6")
    assert base.pretrained and (base.weights / "model.safetensors").exists()
    model, _ = classifier(base, [1, 2, 3, 4, 5])
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (6, 384)
    # Pretrained, not random: the word embeddings differ from a fresh initialisation's scale.
    embeddings = model.base_model.embeddings.word_embeddings.weight
    assert abs(embeddings.std().item() - model.config.initializer_range) > 0.005


def test_aliases_cover_pretrained_and_scratch():
    assert {"minilm-l6", "bert-tiny", "bert-mini", "bert-base"} <= set(aliases())


def test_a_fine_tuned_folder_with_another_head_is_a_base(tmp_path):
    """A 2-label model's folder as the base of a 3-label one: its encoder is kept, its head made afresh."""
    sentiment, tokenizer = classifier(resolve_base("bert-tiny"), ["neg", "pos"])
    sentiment.save_pretrained(tmp_path / "sentiment")
    tokenizer.save_pretrained(tmp_path / "sentiment")
    missing = []
    stars, _ = classifier_with(resolve_base(str(tmp_path / "sentiment")), ["1", "2", "3"], missing)
    assert stars.config.num_labels == 3 and stars.classifier.weight.shape[0] == 3
    assert set(missing) == {"classifier.weight", "classifier.bias"}
    for name, weight in sentiment.base_model.state_dict().items():
        assert torch.equal(weight, stars.base_model.state_dict()[name]), name


def classifier_with(base, labels, missing):
    return build_model(base, "AutoModelForSequenceClassification", load_tokenizer(base), num_labels=len(labels),
                       id2label=dict(enumerate(labels)), missing=missing), None
