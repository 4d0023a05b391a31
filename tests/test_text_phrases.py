"""Phrases: a planted multi-word entity becomes one token, and the saved model joins the same way."""
import pytest

from conftest import planted_sentences
from nlpforge.errors import ConfigError, DataError
from nlpforge.text.phrases import PhraseModel, PhraseSettings, learn_phrases


@pytest.fixture(scope="module")
def planted_model():
    return learn_phrases(planted_sentences(3000), PhraseSettings())


def test_planted_three_word_entity_becomes_one_token(planted_model):
    assert planted_model.apply(["flights", "to", "rio", "de", "janeiro", "word1", "word2"]) == \
        ["flights", "to", "rio_de_janeiro", "word1", "word2"]
    # One pass only joins pairs: the trigram needs the second.
    one_pass = learn_phrases(planted_sentences(3000), PhraseSettings(phrase_passes=1))
    assert "rio_de_janeiro" not in one_pass.apply(["rio", "de", "janeiro"])
    assert set(planted_model.phrases) >= {"rio_de", "rio_de_janeiro"}
    assert not any(phrase.startswith("word") for phrase in planted_model.phrases)


def test_saved_phrases_join_the_same_way(planted_model, tmp_path):
    path = planted_model.save(tmp_path / "phrases.json")
    loaded = PhraseModel.load(path)
    sentences = planted_sentences(200, seed=7)
    assert [loaded.apply(s) for s in sentences] == [planted_model.apply(s) for s in sentences]
    assert loaded.settings == planted_model.settings and loaded.corpus_tokens == planted_model.corpus_tokens


def test_phrase_settings_and_inputs_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="npmi"):
        PhraseSettings(phrase_scoring="npmi", phrase_threshold=10)
    with pytest.raises(DataError, match="empty"):
        learn_phrases([], PhraseSettings())
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="not a phrase file"):
        PhraseModel.load(tmp_path / "bad.json")
