"""Bad input to the corpus, tokenizer and vectors commands: earlier files survive, damaged folders and absurd
numbers are one-line errors, and undecodable bytes are reported rather than dropped unseen."""
import logging
import shutil
import tarfile

import pytest

from conftest import planted_sentences
from test_cli import call  # runs `nlpforge ...` in-process: (exit code, stdout, stderr)
from nlpforge.errors import ArtifactError, ConfigError, DataError
from nlpforge.text.corpus import Corpus, CorpusSettings, corpus_stats
from nlpforge.text.jobs import PhraseJob, TokenizeJob, tokenized_lines, write_tokenized
from nlpforge.text.wordpiece import WordPieceSettings, train_wordpiece
from nlpforge.vectors.query import load_vectors
from nlpforge.vectors.train import Word2VecSettings, train_vectors


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(" ".join(s) for s in planted_sentences(60)) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def vectors(tiny_vectors):
    """A small vectors folder (conftest's); tests damage copies of it."""
    return tiny_vectors


# --- corpus tokenize writes its output whole, or not at all -------------------------------------------------------

def test_a_failed_tokenize_leaves_the_earlier_output_file(tmp_path, capsys):
    keep = tmp_path / "keep.txt"
    keep.write_text("precious\n")
    (tmp_path / "bin.txt").write_bytes(bytes(range(256)) * 8)
    code, _, err = call(capsys, "corpus", "tokenize", "--corpus", tmp_path / "bin.txt", "--output", keep)
    assert code != 0 and "binary" in err and "Traceback" not in err
    assert keep.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin.txt", "keep.txt"]  # no partial file left


def test_tokenize_refuses_to_write_over_its_phrase_file(tmp_path, corpus):
    phrases = tmp_path / "phrases.json"
    phrases.write_text("{}")
    with pytest.raises(ConfigError, match="is the input"):
        write_tokenized(TokenizeJob.of(corpus=[str(corpus)], phrases=str(phrases), output=str(phrases)))
    assert phrases.read_text() == "{}"


def test_tokenize_with_a_missing_phrase_file_writes_nothing(tmp_path, corpus):
    with pytest.raises(DataError, match="no such phrase file"):
        write_tokenized(TokenizeJob.of(corpus=[str(corpus)], phrases=str(tmp_path / "absent.json"),
                                       output=str(tmp_path / "tokens.txt")))
    assert not (tmp_path / "tokens.txt").exists()
    assert write_tokenized(TokenizeJob.of(corpus=[str(corpus)], output=str(tmp_path / "new" / "tokens.txt"))) == 60


# --- training never writes into a folder of other files -----------------------------------------------------------

def test_tokenizer_train_refuses_a_folder_of_other_files_and_reuses_its_own(tmp_path, corpus):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "vocab.txt").write_text("my vocab\n")
    with pytest.raises(ConfigError, match="holds other files"):
        train_wordpiece(WordPieceSettings.of(corpus=[str(corpus)], output=str(theirs), vocab_size=60))
    assert (theirs / "vocab.txt").read_text() == "my vocab\n"
    settings = WordPieceSettings.of(corpus=[str(corpus)], output=str(tmp_path / "tok"), vocab_size=60)
    train_wordpiece(settings)
    assert (train_wordpiece(settings) / "tokenizer.json").is_file()  # an earlier tokenizer may be replaced


def test_vectors_train_refuses_a_folder_of_other_files_and_one_holding_the_corpus(tmp_path, corpus):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "vocab.tsv").write_text("mine\n")
    with pytest.raises(ConfigError, match="holds other files"):
        train_vectors(Word2VecSettings.of(corpus=[str(corpus)], output=str(theirs)), log=lambda *_: None)
    assert (theirs / "vocab.tsv").read_text() == "mine\n"
    with pytest.raises(ConfigError, match="holds the input"):
        train_vectors(Word2VecSettings.of(corpus=[str(corpus)], output=str(tmp_path)), log=lambda *_: None)


# --- a damaged vectors folder is an error naming the file ---------------------------------------------------------

@pytest.mark.parametrize("damage, file, message", [
    (lambda folder: (folder / "nlpforge-vectors.json").write_text("{x"), "nlpforge-vectors.json", "damaged"),
    (lambda folder: (folder / "nlpforge-vectors.json").write_text('{"settings": {"lowercase": "maybe"}}'),
     "nlpforge-vectors.json", "lowercase must be true or false"),
    (lambda folder: (folder / "vectors.bin").write_bytes(b""), "vectors.bin", "not a complete word2vec file"),
    (lambda folder: (folder / "vectors.bin").write_bytes((folder / "vectors.bin").read_bytes()[:100]), "vectors.bin",
     "not a complete word2vec file"),
])
def test_a_damaged_vectors_folder_names_the_file(vectors, tmp_path, damage, file, message):
    folder = tmp_path / "vec"
    shutil.copytree(vectors, folder)
    damage(folder)
    with pytest.raises(ArtifactError, match=message) as error:
        load_vectors(folder)
    assert str(folder / file) in str(error.value)


def test_a_cut_short_vectors_file_is_an_error_not_aborted(vectors, tmp_path, capsys):
    folder = tmp_path / "vec"
    shutil.copytree(vectors, folder)
    (folder / "vectors.bin").write_bytes((vectors / "vectors.bin").read_bytes()[:100])
    code, _, err = call(capsys, "vectors", "similar", "word1", "--vectors", folder)
    assert code != 0 and "Aborted" not in err and len(err.strip().splitlines()) == 1
    assert "vectors.bin: not a complete word2vec file" in err


# --- numbers the native trainers cannot take are refused first ----------------------------------------------------

@pytest.mark.parametrize("settings, values, message", [
    (WordPieceSettings, {"vocab_size": 10**9}, "vocab-size must be between 15 and 1000000"),
    (Word2VecSettings, {"alpha": 1e300}, "alpha must be at most 1"),
    (Word2VecSettings, {"alpha": 0.5, "min_alpha": 2}, "min-alpha must be at most 1"),
    (Word2VecSettings, {"negative": 10**8}, "negative must be between 1 and 100"),
])
def test_absurd_training_numbers_are_refused_naming_the_limit(settings, values, message):
    with pytest.raises(ConfigError, match=message):
        settings.of(corpus=["corpus.txt"], output="out", **values)


# --- bytes that are not UTF-8 -------------------------------------------------------------------------------------

def test_undecodable_bytes_are_counted_and_named(tmp_path, caplog):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café naïve résumé good\n".encode("latin-1"))
    with caplog.at_level(logging.WARNING):
        assert list(tokenized_lines(TokenizeJob.of(corpus=[str(latin)]))) == ["caf na ve r sum good"]
    assert f"{latin}: 4 non-UTF-8 bytes replaced with U+FFFD" in caplog.text and "--encoding" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert list(tokenized_lines(TokenizeJob.of(corpus=[str(latin)], encoding="latin-1"))) == \
            ["café naïve résumé good"]
    assert "replaced" not in caplog.text


# --- messages that name the fix -----------------------------------------------------------------------------------

def test_an_unclear_column_in_a_semicolon_file_names_the_delimiter(tmp_path):
    (tmp_path / "semi.csv").write_text("a;b\n1;hello there\n")
    with pytest.raises(DataError, match="give --delimiter ';'"):
        corpus_stats(Corpus(CorpusSettings.of(corpus=[str(tmp_path / "semi.csv")])))


def test_a_text_file_named_as_an_archive_is_a_one_line_error(tmp_path, corpus):
    fake = tmp_path / "fake.tar.gz"
    shutil.copy(corpus, fake)
    with pytest.raises(DataError, match="not a tar archive") as error:
        corpus_stats(Corpus(CorpusSettings.of(corpus=[str(fake)])))
    assert "\n" not in str(error.value)
    with tarfile.open(tmp_path / "real.tar.gz", "w:gz") as archive:  # a real archive still reads
        archive.add(corpus, arcname="corpus.txt")
    assert corpus_stats(Corpus(CorpusSettings.of(corpus=[str(tmp_path / "real.tar.gz")]))).sentences == 60


def test_a_corpus_emptied_by_min_sentence_tokens_names_the_flag(corpus):
    with pytest.raises(DataError, match="no sentence has --min-sentence-tokens 1000 tokens"):
        corpus_stats(Corpus(CorpusSettings.of(corpus=[str(corpus)], min_sentence_tokens=1000)))


@pytest.mark.parametrize("passes", [0, 100])
def test_phrase_passes_of_corpus_phrases_states_the_range_it_takes(passes):
    with pytest.raises(ConfigError, match=f"phrase-passes must be between 1 and 4, not {passes}"):
        PhraseJob.of(corpus=["corpus.txt"], phrase_passes=passes)
    assert Word2VecSettings.of(corpus=["corpus.txt"], phrase_passes=0).phrase.phrase_passes == 0  # phrases off


def test_undecodable_runs_read_as_errors_replace_reads_them_and_count_their_bytes(caplog):
    import io

    from nlpforge.text import corpus

    raw = b"caf\xe9 \xf0\x9f\x98 x \xe2\x82\xac ok\n"  # one stray byte, a cut-short 4-byte character, a euro sign
    handle = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8", errors="nlpforge-mark", newline="")
    with caplog.at_level("WARNING"):
        assert list(corpus._replaced(handle, "runs.txt", None)) == [raw.decode("utf-8", errors="replace")]
    assert "runs.txt: 4 non-UTF-8 bytes replaced with U+FFFD" in caplog.text
