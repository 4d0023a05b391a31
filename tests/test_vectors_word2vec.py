"""word2vec: a corpus built to hold a relation solves its analogy; the query folder stands on its own."""
import shutil

import pytest

from conftest import NATIONS, planted_sentences
from nlpforge.errors import ArtifactError, VocabularyError
from nlpforge.vectors.evaluate import evaluate_vectors
from nlpforge.vectors.plot import plot_words
from nlpforge.vectors.query import load_vectors
from nlpforge.vectors.train import Word2VecSettings, train_vectors


def relation_settings(corpus, output, **overrides) -> Word2VecSettings:
    values = dict(corpus=[str(corpus)], output=str(output), vector_size=24, window=8, min_count=1, epochs=25,
                  sample=0, workers=1, seed=3, phrase_passes=0, architecture="skipgram")
    return Word2VecSettings.of(**{**values, **overrides})


@pytest.fixture(scope="module")
def relation_vectors(relation_corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vectors") / "capitals"
    train_vectors(relation_settings(relation_corpus, folder), log=lambda *_: None)
    return folder


def test_relation_corpus_solves_its_analogies(relation_vectors):
    vectors = load_vectors(relation_vectors)
    assert vectors.analogy("paris", "france", "berlin")[0][0] == "germany"
    solved = sum(vectors.analogy(city_a, country_a, city_b)[0][0] == country_b
                 for city_a, country_a in NATIONS.values() for city_b, country_b in NATIONS.values()
                 if city_a != city_b)
    assert solved >= 0.9 * len(NATIONS) * (len(NATIONS) - 1)
    assert vectors.distance("paris", "berlin") < vectors.distance("paris", "germany")
    assert vectors.similar("france", topn=3)[0][0].startswith("french")


def test_cbow_learns_the_relation_too(relation_corpus, tmp_path):
    train_vectors(relation_settings(relation_corpus, tmp_path / "cbow", architecture="cbow", epochs=40,
                                    save_training_state=False), log=lambda *_: None)
    assert load_vectors(tmp_path / "cbow").analogy("rome", "italy", "madrid")[0][0] == "spain"


def test_query_folder_loads_without_the_training_state(relation_vectors, tmp_path):
    from gensim.models import KeyedVectors, Word2Vec

    assert (relation_vectors / "training" / "word2vec.model").is_file()
    copy = shutil.copytree(relation_vectors, tmp_path / "copy")
    shutil.rmtree(copy / "training")
    alone, original = load_vectors(copy), load_vectors(relation_vectors)
    assert alone.similar("rome") == original.similar("rome")
    # The trainable model continues training; the query vectors are plain word2vec format.
    model = Word2Vec.load(str(relation_vectors / "training" / "word2vec.model"))
    assert model.wv.index_to_key == original.keyed_vectors.index_to_key
    assert len(KeyedVectors.load_word2vec_format(str(copy / "vectors.bin"), binary=True)) == len(alone)


def test_unknown_word_names_the_closest_spellings(relation_vectors):
    vectors = load_vectors(relation_vectors)
    with pytest.raises(VocabularyError, match=r"'germny' is not in the vocabulary .*closest known spellings: germany"):
        vectors.similar("germny")
    with pytest.raises(VocabularyError, match="no known word is spelled like it"):
        vectors.analogy("paris", "france", "qqqqqq")
    with pytest.raises(ArtifactError, match="no such vectors folder"):
        load_vectors(relation_vectors.parent / "absent")


def test_phrases_are_applied_to_query_words(tmp_path):
    corpus = tmp_path / "planted.txt"
    corpus.write_text("\n".join(" ".join(s) for s in planted_sentences(3000)) + "\n")
    folder = tmp_path / "vectors"
    result = train_vectors(Word2VecSettings.of(corpus=[str(corpus)], output=str(folder), vector_size=8, epochs=1,
                                            workers=1), log=lambda *_: None)
    assert result.words > 100 and (folder / "phrases.json").is_file()
    vectors = load_vectors(folder)
    assert "rio_de_janeiro" in vectors.keyed_vectors.key_to_index and "rio" not in vectors.keyed_vectors.key_to_index
    assert vectors.key("Rio de Janeiro") == "rio_de_janeiro"


def test_word_map_png(relation_vectors, tmp_path):
    vectors = load_vectors(relation_vectors)
    words = [w for pair in NATIONS.values() for w in pair]
    for method in ("pca", "tsne"):
        output = plot_words(vectors, words, tmp_path / f"{method}.png", method)
        assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and output.stat().st_size > 5000
    with pytest.raises(VocabularyError):
        plot_words(vectors, ["paris", "france", "atlantis"], tmp_path / "x.png")


def test_evaluation_counts_out_of_vocabulary_pairs(relation_vectors):
    import numpy as np
    from gensim.models import KeyedVectors
    from gensim.test.utils import datapath

    words = sorted({w.lower() for line in open(datapath("wordsim353.tsv")) if not line.startswith("#")
                    for w in line.split("\t")[:2]})
    known = KeyedVectors(vector_size=8)
    known.add_vectors(words[:-40], np.random.default_rng(0).normal(size=(len(words) - 40, 8)))
    missing = set(words[-40:])
    expected = sum(1 for line in open(datapath("wordsim353.tsv")) if not line.startswith("#")
                   and ({w.lower() for w in line.split("\t")[:2]} & missing))
    report = evaluate_vectors(known)
    assert report.similarity["wordsim353"].pairs == 353
    assert report.similarity["wordsim353"].oov_pairs == expected > 0
    assert abs(report.similarity["wordsim353"].spearman) < 0.3  # random vectors: no correlation
    tiny = evaluate_vectors(load_vectors(relation_vectors))
    assert tiny.analogies.answered + tiny.analogies.skipped == 19544
    assert tiny.similarity["simlex999"].oov_pairs == 999  # none of its words are in a capitals corpus
