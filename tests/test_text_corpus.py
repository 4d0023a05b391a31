"""The corpus stage: streaming readers, normalisation, sentences, tokens and the BOS/SP/EOS rendering."""
import csv
import gzip
import io
import json
import tarfile
import tracemalloc

import pytest

from nlpforge.errors import DataError
from nlpforge.text.corpus import Corpus, CorpusSettings, corpus_stats, iter_documents
from nlpforge.text.jobs import TokenizeJob, tokenized_lines
from nlpforge.data.clean import clean_html
from nlpforge.text.normalize import NormalizeSettings, normalize
from nlpforge.text.tokenize import render_markers, split_sentences, tokenize


def test_the_marker_rendering_of_a_sentence_is_exact():
    assert render_markers(tokenize("hello, world!")) == "<BOS>hello<SP>world<SP>!<EOS>"


def test_tokenize_keeps_words_whole_and_only_sentence_end_punctuation_by_default():
    assert tokenize("Don't miss it: a well-made film (10/10), 3.5 stars!") == \
        ["don't", "miss", "it", "a", "well-made", "film", "10/10", "3.5", "stars", "!"]
    assert tokenize("Yes, no.", punctuation="keep") == ["yes", ",", "no", "."]
    assert tokenize("Yes, no.", lowercase=False, punctuation="drop") == ["Yes", "no"]


def test_normalize_removes_html_applies_nfkc_and_masks():
    settings = NormalizeSettings(mask_urls=True, mask_numbers=True)
    text = normalize("Ｆｕｌｌwidth &amp; ﬁne<br /><br />see https://example.com/a?b=1 in 2024, 3.5 stars", settings)
    assert text.startswith("Fullwidth & fine see") and "https" not in text and "<br" not in text
    assert tokenize(text) == ["fullwidth", "fine", "see", "<url>", "in", "<num>", "<num>", "stars"]
    assert clean_html("a<br />b &lt;i&gt;") == "a b <i>"  # the existing behaviour is kept


def test_split_sentences_at_ends_followed_by_a_capital():
    assert split_sentences("It rained. We stayed in! Did we? Yes... the end.\nNew line") == \
        ["It rained.", "We stayed in!", "Did we?", "Yes... the end.", "New line"]
    assert split_sentences("Version 2.5 is out. e.g. this") == ["Version 2.5 is out. e.g. this"]
    assert split_sentences("Judge James B. Parsons met Mr. Smith. He left.") == \
        ["Judge James B. Parsons met Mr. Smith.", "He left."]


def _write_reviews(path, rows):
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "sentiment"])
        writer.writerows(rows)


def test_every_format_streams_its_documents(tmp_path):
    _write_reviews(tmp_path / "a.csv.gz", [["Great film.<br />Loved it", "positive"], ["", "negative"]])
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "From JSONL"}) + "\n\n" + json.dumps({"text": "Again"}) + "\n")
    (tmp_path / "c.txt").write_text("Plain line one\n\nPlain line two\n")
    import pandas as pd

    pd.DataFrame({"body": ["From Parquet"], "n": [1]}).to_parquet(tmp_path / "d.parquet")
    with tarfile.open(tmp_path / "e.tar.gz", "w:gz") as archive:
        for name, text in (("README", "About this corpus"), ("ca01", "The/at jury/nn said/vbd it/pps ./.\n"
                                                                    "Fulton/np-tl County/nn-tl voted/vbd today/nr ./.")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    documents = list(iter_documents([tmp_path / "a.csv.gz", tmp_path / "b.jsonl", tmp_path / "c.txt"]))
    assert documents == ["Great film.<br />Loved it", "From JSONL", "Again", "Plain line one", "Plain line two"]
    assert list(iter_documents([tmp_path / "d.parquet"], column="body")) == ["From Parquet"]
    # Brown-style tags go, the archive's README is not corpus text.
    assert list(iter_documents([tmp_path / "e.tar.gz"])) == ["The jury said it .", "Fulton County voted today ."]


def test_a_folder_is_walked_and_the_corpus_is_re_iterable(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "one.txt").write_text("Hello, world! Second sentence here.\n")
    (tmp_path / "docs" / ".hidden").write_text("never read\n")
    corpus = Corpus(CorpusSettings.of(corpus=[str(tmp_path / "docs")]))
    first, second = list(corpus), list(corpus)
    assert first == second == [["hello", "world", "!"], ["second", "sentence", "here", "."]]
    stats = corpus_stats(corpus)
    assert (stats.documents, stats.sentences, stats.tokens, stats.types) == (1, 2, 7, 7)
    lines = list(tokenized_lines(TokenizeJob.of(corpus=[str(tmp_path / "docs")], format="markers")))
    assert lines[0] == "<BOS>hello<SP>world<SP>!<EOS>"


def test_missing_file_and_empty_corpus_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="absent.txt: no such file or folder"):
        Corpus(CorpusSettings.of(corpus=[str(tmp_path / "absent.txt")]))
    (tmp_path / "empty.txt").write_text("\n  \n<br /><p>\n")
    with pytest.raises(DataError, match="the corpus is empty"):
        list(Corpus(CorpusSettings.of(corpus=[str(tmp_path / "empty.txt")])))
    _write_reviews(tmp_path / "r.csv.gz", [["text", "positive"]])
    with pytest.raises(DataError, match="no column 'body'; the columns are: review, sentiment"):
        list(iter_documents([tmp_path / "r.csv.gz"], column="body"))


def _decoded(batches) -> list[list[str]]:
    import numpy as np

    sentences = []
    for words, ids, lengths in batches:
        tokens, end = np.array(words, dtype=object)[ids].tolist(), 0
        for length in lengths.tolist():
            sentences.append(tokens[end:end + length])
            end += length
    return sentences


def test_the_corpus_tokenised_in_worker_processes_is_the_corpus_in_order(tmp_path, monkeypatch):
    from nlpforge.text import corpus as corpus_module

    monkeypatch.setattr(corpus_module, "_BATCH_CHARS", 300)  # many batches, several in flight at once
    _write_reviews(tmp_path / "r.csv.gz", [[f"Review {i}: it was <b>fine</b>. Then it got better!", "positive"]
                                           for i in range(200)] + [["<br />", "negative"]] * 3)
    corpus = Corpus(CorpusSettings.of(corpus=[str(tmp_path / "r.csv.gz")], column="review"))
    expected = list(corpus)
    batches = list(corpus.encoded(workers=2))
    assert len(batches) > 10 and _decoded(batches) == expected
    assert _decoded(corpus.encoded(workers=1)) == expected
    (tmp_path / "empty.txt").write_text("\n  \n<br /><p>\n")
    with pytest.raises(DataError, match="the corpus is empty"):
        list(Corpus(CorpusSettings.of(corpus=[str(tmp_path / "empty.txt")])).encoded(workers=2))
    with pytest.raises(DataError, match="no column 'body'"):
        list(Corpus(CorpusSettings.of(corpus=[str(tmp_path / "r.csv.gz")], column="body")).encoded(workers=2))


def _peak_while_streaming(path) -> int:
    corpus = Corpus(CorpusSettings.of(corpus=[str(path)], column="review"))
    tracemalloc.start()
    tokens = sum(len(sentence) for sentence in corpus)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert tokens > 0
    return peak


def test_streaming_keeps_memory_bounded(tmp_path):
    review = ("This film was a real surprise. The acting is superb and the plot keeps moving.<br /><br />"
              "I would watch it again with friends! ") * 4
    small, large = tmp_path / "small.csv.gz", tmp_path / "large.csv.gz"
    _write_reviews(small, [[f"{review} review {i}", "positive"] for i in range(500)])
    _write_reviews(large, [[f"{review} review {i}", "positive"] for i in range(5000)])
    text_bytes = 5000 * len(review)
    small_peak, large_peak = _peak_while_streaming(small), _peak_while_streaming(large)
    # Ten times the text must not mean ten times the memory: the peak stays a small buffer's worth.
    assert large_peak < 1.5 * small_peak + 256 * 1024, (small_peak, large_peak)
    assert large_peak < text_bytes / 10, (large_peak, text_bytes)


@pytest.mark.shared_data
def test_brown_loses_its_tags_and_imdb_its_html(brown, imdb):
    brown_first = next(iter_documents([brown]))
    assert brown_first.startswith("The Fulton County Grand Jury said Friday")
    assert "/" not in brown_first
    imdb_corpus = Corpus(CorpusSettings.of(corpus=[str(imdb)], column="review", max_documents=50))
    tokens = [token for sentence in imdb_corpus for token in sentence]
    assert tokens[:6] == ["one", "of", "the", "other", "reviewers", "has"]
    assert "br" not in tokens and "<br" not in tokens
