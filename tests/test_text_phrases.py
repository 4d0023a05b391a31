"""Phrases: a planted multi-word entity becomes one token, and the saved model joins the same way."""
import random
from collections import Counter

import pytest

from conftest import planted_sentences
from nlpforge.errors import ConfigError, DataError
from nlpforge.text.phrases import PhraseLearner, PhraseModel, PhraseSettings, learn_phrases


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
    with pytest.raises(ConfigError, match="above 0"):
        PhraseSettings(phrase_threshold=0)
    with pytest.raises(DataError, match="empty"):
        learn_phrases([], PhraseSettings())
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="not a phrase file"):
        PhraseModel.load(tmp_path / "bad.json")


def _gensim_passes(sentences, settings):
    """The reference: gensim Phrases learned and applied pass after pass, in Python."""
    from gensim.models.phrases import ENGLISH_CONNECTOR_WORDS, Phrases

    connectors = ENGLISH_CONNECTOR_WORDS if settings.phrase_connectors == "english" else frozenset()
    layers, current = [], [list(s) for s in sentences]
    for _ in range(settings.phrase_passes):
        learned = Phrases(current, min_count=settings.phrase_min_count, threshold=settings.phrase_threshold,
                          scoring=settings.phrase_scoring, delimiter="\u241f", connector_words=connectors).freeze()
        learned.delimiter = settings.phrase_delimiter
        learned.phrasegrams = {phrase.replace("\u241f", settings.phrase_delimiter): score
                               for phrase, score in learned.phrasegrams.items()}
        layers.append(learned.phrasegrams)
        current = [learned[s] for s in current]
    return layers, current


def _connector_sentences(n, seed=3):
    """Phrases around connector words (« bank of the west »), hyphenated and underscored words, chains."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(120)] + ["well-made", "new", "york", "new_york", "of", "the", "and", "a"]
    planted = [["bank", "of", "the", "west"], ["new", "york"], ["well-made", "film"], ["salt", "and", "pepper"],
               ["a", "b", "c", "d", "e"], ["new_york", "times"], ["rio", "de", "janeiro"]]
    sentences = []
    for i in range(n):
        sentence = rng.choices(words, k=rng.randrange(1, 12))
        for _ in range(rng.randrange(3)):
            at = rng.randrange(len(sentence) + 1)
            sentence[at:at] = rng.choice(planted)
        sentences.append(sentence)
    return sentences


@pytest.mark.parametrize("options", [
    dict(),
    dict(phrase_scoring="npmi", phrase_threshold=0.3, phrase_passes=3),
    dict(phrase_connectors="none", phrase_min_count=2),
    dict(phrase_delimiter="-", phrase_threshold=2.0),  # "-" is also inside tokens: joins are ambiguous
])
def test_learning_and_joining_equal_gensim_pass_by_pass(options, monkeypatch, tmp_path):
    from nlpforge.text import pair_counts

    monkeypatch.setattr(pair_counts, "_CHUNK_TOKENS", 997)  # many chunks and merges
    sentences = _connector_sentences(4000) + planted_sentences(1000)
    settings = PhraseSettings(**options)
    expected_layers, expected_corpus = _gensim_passes(sentences, settings)
    with PhraseLearner(settings, tmp_path / "spill") as learner:
        model = learner.learn(iter(sentences))
        counts, written = learner.write_joined(tmp_path / "joined.txt")
    assert [line.split() for line in (tmp_path / "joined.txt").read_text().splitlines()] == expected_corpus
    assert written == len(expected_corpus) and counts == Counter(t for s in expected_corpus for t in s)
    assert [layer.phrasegrams for layer in model.layers] == expected_layers
    assert all(expected_layers)  # every pass has phrases to compare
    if settings.phrase_connectors == "english":
        assert settings.phrase_delimiter.join(["bank", "of", "the", "west"]) in expected_layers[0]
    assert model.corpus_tokens == sum(map(len, sentences))
    assert not list((tmp_path / "spill").iterdir())  # the id spills are removed


@pytest.mark.shared_data
def test_phrases_of_real_reviews_equal_gensim(imdb, tmp_path):
    from nlpforge.text.corpus import Corpus, CorpusSettings

    sentences = list(Corpus(CorpusSettings.of(corpus=[str(imdb)], column="review", max_documents=1500)))
    settings = PhraseSettings(phrase_min_count=3)
    expected_layers, expected_corpus = _gensim_passes(sentences, settings)
    with PhraseLearner(settings) as learner:
        model = learner.learn(sentences)
        learner.write_joined(tmp_path / "joined.txt")
    assert [line.split() for line in (tmp_path / "joined.txt").read_text().splitlines()] == expected_corpus
    assert [layer.phrasegrams for layer in model.layers] == expected_layers
    assert len(expected_layers[0]) > 100
