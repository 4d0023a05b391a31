"""Base-model resolution: aliases, folders, from-scratch shapes, and the error for unknown names."""
import pytest

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
