"""The vocabulary: counts, min_count, max size and special tokens; round-trips through its file; stats."""
from collections import Counter

import pytest

from nlpforge.errors import DataError
from nlpforge.text.jobs import VocabularyJob, vocabulary_from_corpus
from nlpforge.text.vocabulary import Vocabulary, VocabularySettings, build_vocabulary, vocabulary_stats

COUNTS = Counter({"the": 50, "film": 20, "plot": 20, "actor": 7, "rare": 2, "<UNK>": 3})


def test_min_count_max_size_and_special_tokens():
    vocabulary = build_vocabulary(COUNTS, VocabularySettings(min_count=5, max_size=3))
    assert vocabulary.tokens == ["<PAD>", "<UNK>", "<BOS>", "<EOS>", "the", "film", "plot"]
    assert vocabulary.index["the"] == 4 and "actor" not in vocabulary and "rare" not in vocabulary


def test_vocabulary_round_trips_through_its_readable_file(tmp_path):
    vocabulary = build_vocabulary(COUNTS, VocabularySettings(min_count=3, special_tokens=["[PAD]", "[UNK]"]))
    path = vocabulary.save(tmp_path / "vocab.tsv")
    lines = path.read_text().splitlines()
    assert lines[1:4] == ["token\tcount", "[PAD]\t0", "[UNK]\t0"] and lines[4] == "the\t50"
    loaded = Vocabulary.load(path)
    assert loaded == vocabulary
    assert loaded.tokens == vocabulary.tokens and loaded.index == vocabulary.index
    assert (loaded.min_count, loaded.corpus_tokens, loaded.corpus_types) == (3, 102, 6)


def test_stats_give_coverage_and_held_out_oov():
    vocabulary = build_vocabulary(COUNTS, VocabularySettings(min_count=5))
    stats = vocabulary_stats(vocabulary, COUNTS, held_out=[["the", "film", "was"], ["rare", "the"]])
    assert stats.corpus_tokens == 102 and stats.corpus_types == 6
    assert stats.coverage == pytest.approx((50 + 20 + 20 + 7 + 3) / 102)  # <UNK> is a special token, kept
    assert (stats.held_out_tokens, stats.held_out_oov_tokens, stats.held_out_oov_types) == (5, 2, 2)
    assert stats.held_out_oov_rate == pytest.approx(0.4)
    assert "held-out OOV rate  40.00%" in stats.text()


def test_vocabulary_from_a_corpus_file(tmp_path):
    (tmp_path / "train.txt").write_text("The film was great. The film was long.\n" * 3)
    (tmp_path / "held.txt").write_text("The film was dull.\n")
    job = VocabularyJob.of(corpus=[str(tmp_path / "train.txt")], held_out=str(tmp_path / "held.txt"), min_count=2,
                        output=str(tmp_path / "vocab.tsv"), special_tokens=[])
    vocabulary, stats = vocabulary_from_corpus(job)
    assert vocabulary.tokens == [".", "film", "the", "was", "great", "long"]  # by count, ties by spelling
    assert stats.held_out_oov_tokens == 1 and Vocabulary.load(tmp_path / "vocab.tsv") == vocabulary


def test_bad_vocabulary_inputs(tmp_path):
    with pytest.raises(DataError, match="empty"):
        build_vocabulary(Counter())
    (tmp_path / "v.tsv").write_text("a b c\n")
    with pytest.raises(DataError, match="not `token<TAB>count`"):
        Vocabulary.load(tmp_path / "v.tsv")
    with pytest.raises(DataError, match="no such vocabulary file"):
        Vocabulary.load(tmp_path / "absent.tsv")
