"""More bad input to the text and pre-training stages: outputs reached through symbolic links, vocabularies that
could not be used, a vectors folder trained again, and masked-LM data too thin to validate or evaluate on."""
import pytest

from conftest import planted_sentences
from test_cli import call  # runs `nlpforge ...` in-process: (exit code, stdout, stderr)
from nlpforge.errors import ConfigError, DataError
from nlpforge.text.corpus import iter_documents
from nlpforge.text.jobs import (PhraseJob, TokenizeJob, VocabularyJob, phrases_from_corpus, vocabulary_from_corpus,
                                write_tokenized)
from nlpforge.text.vocabulary import Vocabulary, VocabularySettings
from nlpforge.vectors.query import load_vectors
from nlpforge.vectors.train import Word2VecSettings, train_vectors


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(" ".join(s) for s in planted_sentences(60)) + "\n", encoding="utf-8")
    return path


# --- an output that is an input through a symbolic link ---------------------------------------------------------

@pytest.mark.parametrize("write", [
    lambda corpus, output: vocabulary_from_corpus(VocabularyJob.of(corpus=[corpus], output=output, min_count=1)),
    lambda corpus, output: write_tokenized(TokenizeJob.of(corpus=[corpus], output=output)),
    lambda corpus, output: phrases_from_corpus(PhraseJob.of(corpus=[corpus], output=output)),
])
def test_an_output_that_is_the_corpus_through_a_link_is_refused(corpus, tmp_path, write):
    link = tmp_path / "link.txt"
    link.symlink_to(corpus)
    before = corpus.read_bytes()
    with pytest.raises(ConfigError, match="is the input"):
        write(str(link), str(corpus))          # the corpus named by a link, the output by its own name
    with pytest.raises(ConfigError, match="is the input"):
        write(str(corpus), str(link))          # and the other way round
    assert corpus.read_bytes() == before


def test_an_output_inside_a_linked_corpus_folder_is_refused(corpus, tmp_path):
    (tmp_path / "data").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ConfigError, match="is inside the input"):
        vocabulary_from_corpus(VocabularyJob.of(corpus=[str(tmp_path / "data")], output=str(tmp_path / "vocab.tsv")))


# --- damaged archives ---------------------------------------------------------------------------------------------

def test_a_tar_archive_cut_inside_a_member_is_a_data_error(corpus, tmp_path, capsys):
    import tarfile

    with tarfile.open(tmp_path / "whole.tar", "w") as archive:
        archive.add(corpus, arcname="first.txt")
        archive.add(corpus, arcname="second.txt")
    whole = (tmp_path / "whole.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(whole[:512 + corpus.stat().st_size // 2])  # inside the first member
    code, _, err = call(capsys, "corpus", "stats", "--corpus", tmp_path / "cut.tar")
    assert code != 0 and "Traceback" not in err
    assert err.strip() == f"error: [E100] {tmp_path / 'cut.tar'}:first.txt: cannot be read: unexpected end of data"


# --- vocabularies ------------------------------------------------------------------------------------------------

def test_a_special_token_given_twice_is_refused():
    with pytest.raises(ConfigError, match="<PAD> is repeated"):
        VocabularySettings(special_tokens=["<PAD>", "<UNK>", "<PAD>"])


def test_a_min_count_above_every_count_names_the_highest_count(corpus, tmp_path):
    output = tmp_path / "vocab.tsv"
    with pytest.raises(DataError, match=r"no token occurs --min-count 1000 times \(the most frequent, 'rio', occurs "
                                        r"15 times\)"):
        vocabulary_from_corpus(VocabularyJob.of(corpus=[str(corpus)], output=str(output), min_count=1000))
    assert not output.exists()


def test_a_failing_held_out_file_leaves_the_earlier_vocabulary(corpus, tmp_path, capsys):
    output = tmp_path / "vocab.tsv"
    output.write_text("mine\n")
    (tmp_path / "held.txt").write_bytes(bytes(range(256)) * 8)
    code, _, err = call(capsys, "corpus", "vocab", "--corpus", corpus, "--output", output, "--held-out",
                        tmp_path / "held.txt")
    assert code != 0 and "binary" in err and "Traceback" not in err
    assert output.read_text() == "mine\n"


@pytest.mark.parametrize("content, message", [
    (bytes(range(256)) * 4, "not UTF-8 text"),
    (b"", "holds no tokens"),
])
def test_loading_a_file_that_is_no_vocabulary_is_a_data_error(tmp_path, content, message):
    (tmp_path / "vocab.tsv").write_bytes(content)
    with pytest.raises(DataError, match=message):
        Vocabulary.load(tmp_path / "vocab.tsv")


# --- vectors trained again into their folder ---------------------------------------------------------------------

def test_vectors_trained_again_keep_no_file_of_the_earlier_run(corpus, tmp_path):
    folder = tmp_path / "vec"
    common = dict(corpus=[str(corpus)], output=str(folder), min_count=1, vector_size=8, epochs=1, workers=1)
    train_vectors(Word2VecSettings.of(**common, phrase_min_count=2), log=lambda *_: None)
    assert (folder / "phrases.json").is_file() and (folder / "training").is_dir()
    train_vectors(Word2VecSettings.of(**common, phrase_passes=0, save_training_state=False), log=lambda *_: None)
    assert sorted(p.name for p in folder.iterdir()) == ["nlpforge-vectors.json", "vectors.bin", "vocab.tsv"]
    assert load_vectors(folder).phrases is None  # no earlier phrases join the query words
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "vec"]  # no temporary folder left


def test_vectors_refuse_the_current_folder_as_output(corpus, tmp_path, monkeypatch):
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    with pytest.raises(ConfigError, match="is the current folder"):
        train_vectors(Word2VecSettings.of(corpus=[str(corpus)], output=".", min_count=1), log=lambda *_: None)


# --- masked-LM data too thin to validate or evaluate on ----------------------------------------------------------

def masked_lm_job(**values):
    from nlpforge.training.settings import job_class

    return job_class("masked-lm").of(**{"model": "bert-tiny", "max_steps": 1, "batch_size": 8, "max_seq_length": 16,
                                        "progress": False, **values})


def documents_file(path, documents: list[list[str]]):
    path.write_text("\n\n".join("\n".join(sentences) for sentences in documents) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    """A CSV corpus of 30 documents of four sentences each, in the column `review`."""
    import csv

    folder = tmp_path_factory.mktemp("reviews")
    with open(folder / "reviews.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "review"])
        for number, sentences in enumerate(zip(*[iter(planted_sentences(120))] * 4)):
            writer.writerow([number, " ".join(" ".join(s).capitalize() + "." for s in sentences)])
    return folder / "reviews.csv"


@pytest.fixture(scope="module")
def tiny_mlm(reviews, tmp_path_factory):
    from nlpforge.training.run import train

    output = tmp_path_factory.mktemp("mlm") / "model"
    train(masked_lm_job(corpus=[str(reviews)], column="review", output=str(output), max_eval_instances=8),
          log=lambda *_: None)
    return output


def test_a_validation_file_that_makes_no_instance_is_named(reviews, tmp_path):
    from nlpforge.training.run import train

    one = documents_file(tmp_path / "one.txt", [["Just one sentence here."]])
    with pytest.raises(DataError, match=r"--validation .*one.txt: no validation instance could be made .*--no-nsp"):
        train(masked_lm_job(corpus=[str(reviews)], column="review", validation=[str(one)],
                            output=str(tmp_path / "m")), log=lambda *_: None)
    assert not (tmp_path / "m").exists()


def test_held_out_documents_that_make_no_instance_are_named(tmp_path):
    from nlpforge.training.run import train

    # Ten documents, one held out: nine of them have one sentence, which makes no instance with NSP.
    corpus = documents_file(tmp_path / "corpus.txt", [["First sentence.", "Second sentence.", "Third sentence."]]
                            + [[f"Lonely sentence number {i}."] for i in range(9)])
    with pytest.raises(DataError, match="held out of --corpus: no validation instance could be made .*--validation"):
        train(masked_lm_job(corpus=[str(corpus)], document_boundary="blank-line", output=str(tmp_path / "m"), seed=1),
              log=lambda *_: None)


def test_evaluate_reads_the_text_column_and_encoding_it_is_given(tiny_mlm, reviews, tmp_path, capsys):
    other = tmp_path / "other.csv"
    other.write_text(reviews.read_text(encoding="utf-8").replace("id,review", "id,body"), encoding="utf-8")
    code, out, err = call(capsys, "evaluate", tiny_mlm, "--data", other, "--text-column", "body")
    assert code == 0, err
    assert "mlm_accuracy" in out
    latin = documents_file(tmp_path / "latin.txt", [["Café crème.", "Naïve résumé."]] * 4)
    latin.write_bytes(latin.read_text(encoding="utf-8").encode("latin-1"))
    code, out, err = call(capsys, "evaluate", tiny_mlm, "--data", latin, "--encoding", "latin-1")
    assert code == 0 and "replaced with U+FFFD" not in err, err


def test_evaluate_scores_no_next_sentence_pairs_on_one_document(tiny_mlm, tmp_path):
    from nlpforge.evaluation.evaluate import evaluate_model

    one = documents_file(tmp_path / "one.txt", [["The first sentence. The second sentence."]])
    result = evaluate_model(tiny_mlm, one, output_dir=tmp_path / "report")
    assert "mlm_accuracy" in result.model and "nsp_accuracy" not in result.model


def test_fill_mask_says_truncated_only_when_text_was_cut(tiny_mlm):
    from nlpforge import load

    model = load(tiny_mlm)  # 16 tokens: [CLS], 14 pieces, [SEP]
    assert model.predict("[MASK]" + " a" * 13)[0]["truncated"] is False   # fills the model exactly
    assert model.predict("[MASK]" + " a" * 14)[0]["truncated"] is True


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_a_tar_archive_cut_at_a_member_boundary_is_a_data_error(corpus, tmp_path, capsys, suffix):
    import gzip
    import tarfile

    with tarfile.open(tmp_path / "whole.tar", "w") as archive:
        archive.add(corpus, arcname="first.txt")
        archive.add(corpus, arcname="second.txt")
    with tarfile.open(tmp_path / "whole.tar") as archive:
        second = archive.getmember("second.txt").offset
    cut = (tmp_path / "whole.tar").read_bytes()[:second]  # the first member whole, nothing after it
    damaged = tmp_path / f"cut{suffix}"
    damaged.write_bytes(gzip.compress(cut) if suffix == ".tar.gz" else cut)
    code, _, err = call(capsys, "corpus", "stats", "--corpus", damaged)
    assert code != 0 and "Traceback" not in err
    assert f"{damaged}: cannot be read: the archive ends after member first.txt without tar's end-of-archive " \
        "block, so it may be cut short" in err


# --- table corpora whose text column holds no text ----------------------------------------------------------------

def test_a_parquet_corpus_column_of_numbers_is_named_with_its_type(tmp_path):
    import pandas as pd

    pd.DataFrame({"text": [1, 2, 3], "body": ["a b", "c d", "e f"]}).to_parquet(tmp_path / "numbers.parquet")
    with pytest.raises(DataError, match=r"numbers.parquet: column 'text' holds int64 values, not text; name the text "
                                        r"column with --column \(the columns are: text, body\)"):
        list(iter_documents([tmp_path / "numbers.parquet"]))


def test_jsonl_corpus_cells_are_read_as_read_table_reads_them(tmp_path):
    import json

    def jsonl(name, values):
        (tmp_path / name).write_text("".join(json.dumps({"text": v}) + "\n" for v in values), encoding="utf-8")
        return tmp_path / name

    assert list(iter_documents([jsonl("mixed.jsonl", ["a review", 5, None, "another"])])) == ["a review", "5",
                                                                                               "another"]
    with pytest.raises(DataError, match="numbers.jsonl: column 'text' holds numbers, not text; name the text column"):
        list(iter_documents([jsonl("numbers.jsonl", [1, 2, 3])]))
    with pytest.raises(DataError, match="nested.jsonl: row 2: column 'text' holds a list, not text"):
        list(iter_documents([jsonl("nested.jsonl", ["a review", ["a", "list"]])]))


# --- a save that fails partway -----------------------------------------------------------------------------------

def test_a_vocabulary_or_phrase_file_that_fails_to_save_leaves_the_earlier_one(corpus, tmp_path):
    vocabulary = Vocabulary(["<PAD>"], {"good": 3, "cut\udc80here": 2})  # the second token cannot be written
    (tmp_path / "vocab.tsv").write_text("mine\n")
    with pytest.raises(UnicodeEncodeError):
        vocabulary.save(tmp_path / "vocab.tsv")
    model = phrases_from_corpus(PhraseJob.of(corpus=[str(corpus)], output=str(tmp_path / "phrases.json")))
    before = (tmp_path / "phrases.json").read_text(encoding="utf-8")
    model.layers[0].phrasegrams["cut\udc80here"] = 1.0
    with pytest.raises(UnicodeEncodeError):
        model.save(tmp_path / "phrases.json")
    assert (tmp_path / "vocab.tsv").read_text() == "mine\n"
    assert (tmp_path / "phrases.json").read_text(encoding="utf-8") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "phrases.json", "vocab.tsv"]


@pytest.mark.parametrize("validation", ["corpus.txt", "."])
def test_masked_lm_validation_that_is_in_the_corpus_is_warned_about(corpus, tmp_path, validation):
    from nlpforge.training.run import warn_if_held_out_is_training_data

    lines = []
    warn_if_held_out_is_training_data(masked_lm_job(corpus=[str(corpus)], validation=[str(tmp_path / validation)],
                                                      output=str(tmp_path / "m")).data, lines.append)
    assert len(lines) == 1
    assert lines[0].startswith(f"warning: --validation {tmp_path / validation} is also training data (--corpus "
                               f"{corpus}), so the validation metrics")


def test_a_bad_row_of_a_prediction_input_file_is_named(tiny_mlm, tmp_path, capsys):
    rows = tmp_path / "rows.csv"
    rows.write_text("text\nthe [MASK] was good\nanother [MASK] here\nno mask in this one\nlast [MASK]\n")
    (tmp_path / "out.jsonl").write_text("mine\n")
    code, _, err = call(capsys, "predict", tiny_mlm, "--input", rows, "--output", tmp_path / "out.jsonl")
    assert code != 0 and "Traceback" not in err
    assert f"row 3 of {rows}: the text has no [MASK] token" in err
    assert (tmp_path / "out.jsonl").read_text() == "mine\n"


# --- a review's findings: writes to what is not a file, the row an error belongs to ------------------------------

def test_a_vocabulary_written_to_a_pipe_or_over_a_private_file(corpus, tmp_path):
    import os
    import stat

    earlier = tmp_path / "vocab.tsv"
    earlier.write_text("old\t1\n")
    earlier.chmod(0o600)
    vocabulary_from_corpus(VocabularyJob.of(corpus=[str(corpus)], output=str(earlier), min_count=1))
    assert stat.S_IMODE(earlier.stat().st_mode) == 0o600  # its permissions kept
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so that opening it to write does not block
    try:
        vocabulary_from_corpus(VocabularyJob.of(corpus=[str(corpus)], output=str(pipe), min_count=1))
        assert b"\t" in os.read(reader, 65536) and pipe.exists() and not pipe.is_file()
    finally:
        os.close(reader)


@pytest.mark.parametrize("last, message", [
    ("no mask here", "row 11 of {rows}: the text has no [MASK] token"),  # the chunk's error: parsing finds it first
    ("a [MASK] d", "row 4 of {rows}: a [MASK] falls beyond the model's 16 tokens"),  # only the model finds it
])
def test_the_row_named_for_a_file_error_is_the_row_with_that_error(tiny_mlm, tmp_path, capsys, last, message):
    rows = tmp_path / "rows.csv"
    far = " a" * 40 + " [MASK]"  # a [MASK] beyond the model's 16 tokens
    rows.write_text("text\n" + "\n".join(["a [MASK] b"] * 3 + [far] + ["a [MASK] c"] * 6 + [last]) + "\n")
    code, _, err = call(capsys, "predict", tiny_mlm, "--input", rows, "--output", tmp_path / "out.jsonl")
    assert code != 0 and "Traceback" not in err
    assert message.format(rows=rows) in err
