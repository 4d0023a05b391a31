"""Bad options to the commands that use what was trained (predict, evaluate, explain) and to the corpus and vectors
commands: numbers gensim's compiled loop cannot take, flags that contradict each other or do nothing, a corpus
file read twice and an output folder that holds other files. Each ends in one line that names the problem and the
fix, never a traceback, a hang or a silently different result.
"""
import shutil

import pytest

from conftest import planted_sentences, toy_rows, write_csv
from nlpforge.errors import ConfigError, DataError
from nlpforge.evaluation.evaluate import evaluate_model
from nlpforge.text.corpus import corpus_files
from nlpforge.vectors.train import Word2VecSettings, train_vectors
from test_cli_bad_input import run_in_process
from test_cli_bad_input_more import assert_one_line
from test_question_answering import train_toy_qa


@pytest.fixture(scope="module")
def qa_model(tmp_path_factory):
    return train_toy_qa(tmp_path_factory.mktemp("qa"), 40, 10, epochs=1).output


# --- vectors train ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("values, message", [
    ({"window": 2**31}, "window must be between 1 and 2147483647"),    # gensim's threads died, train() waited forever
    ({"epochs": 2**31}, "epochs must be between 1 and 2147483647"),    # the same
    ({"workers": 10**11}, "workers must be between 1 and 1024"),       # never got to start that many threads
    ({"sample": 1e308}, r"sample must be between 0 and 1e\+18"),        # OverflowError in int(sample * 2.6)
])
def test_numbers_gensim_cannot_take_are_refused_before_training(values, message):
    with pytest.raises(ConfigError, match=message):
        Word2VecSettings.of(corpus=["corpus.txt"], output="out", **values)


def test_a_workdir_that_does_not_exist_yet_is_made(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(s) for s in planted_sentences(40)) + "\n", encoding="utf-8")
    settings = Word2VecSettings.of(corpus=[str(corpus)], output=str(tmp_path / "vectors"), min_count=1, epochs=1,
                                   vector_size=8, workers=1, workdir=str(tmp_path / "scratch" / "vectors"))
    assert train_vectors(settings, log=lambda *_: None).words > 0    # was FileNotFoundError from TemporaryDirectory
    assert (tmp_path / "scratch" / "vectors").is_dir()


# --- a corpus file named twice ------------------------------------------------------------------------------------

def test_a_corpus_file_named_twice_is_refused_as_its_counts_would_double(tmp_path, monkeypatch, capsys):
    (tmp_path / "notes").mkdir()
    text = tmp_path / "notes" / "a.txt"
    text.write_text("one sentence here .\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"a.txt: would be read twice, named by .*notes and by .*a.txt"):
        corpus_files([str(tmp_path / "notes"), str(text)])
    monkeypatch.chdir(tmp_path)
    assert_one_line(*run_in_process(["corpus", "stats", "--corpus", "notes/a.txt", "--corpus", "./notes/a.txt"],
                                    capsys), "would be read twice", "name each file or folder once")
    assert corpus_files([str(tmp_path / "notes")]) == [text]


# --- evaluate -----------------------------------------------------------------------------------------------------

def test_a_baseline_training_file_that_is_missing_is_an_error_not_a_skipped_baseline(tiny_model, tmp_path):
    data = write_csv(tmp_path / "data.csv", toy_rows(20, seed=3))
    with pytest.raises(DataError, match="nope.csv: no such file"):
        evaluate_model(tiny_model.output, data, baseline_train=tmp_path / "nope.csv", output_dir=tmp_path / "report")


@pytest.mark.parametrize("model, baseline, message", [
    ("tiny_model", False, "--no-baseline turns the baseline off; leave out one of the two"),
    ("qa_model", True, "a question-answering model's baseline learns from no file; leave out --baseline-train"),
])
def test_a_baseline_training_file_that_would_not_be_read_is_refused(model, baseline, message, tmp_path, request):
    folder = request.getfixturevalue(model)
    folder = getattr(folder, "output", folder)
    train = write_csv(tmp_path / "train.csv", toy_rows(20, seed=3))
    data = folder.parent / "dev.json" if model == "qa_model" else train
    with pytest.raises(ConfigError, match=message):
        evaluate_model(folder, data, baseline=baseline, baseline_train=train, output_dir=tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_evaluate_writes_into_no_folder_of_other_files(tiny_model, tmp_path, monkeypatch, capsys):
    write_csv(tmp_path / "data.csv", toy_rows(20, seed=3))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process(["evaluate", tiny_model.output, "--data", "data.csv", "--no-baseline",
                                     "--output-dir", "."], capsys)
    assert_one_line(code, out, err, "--output-dir .: holds other files", "an earlier evaluation")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]
    report = tmp_path / "report"
    for _ in range(2):   # a new folder, then the earlier evaluation's own folder
        code, out, err = run_in_process(["evaluate", tiny_model.output, "--data", "data.csv", "--no-baseline",
                                         "--output-dir", report], capsys)
        assert code == 0, err
    assert (report / "report.json").is_file()


def test_an_evaluation_that_fails_or_stops_halfway_does_not_block_the_next(tiny_model, tmp_path):
    model = shutil.copytree(tiny_model.output, tmp_path / "model")
    shutil.rmtree(model / "evaluation", ignore_errors=True)  # another test's evaluation of the shared model
    data = write_csv(tmp_path / "data.csv", toy_rows(20, seed=3))
    letters = write_csv(tmp_path / "letters.csv",
                        [{"text": "a b", "label": "neg"}, {"text": "c d", "label": "pos"}] * 2)
    with pytest.raises(DataError, match="no word of 2 or more letters"):  # the baseline fails after the model ran
        evaluate_model(model, data, baseline_train=letters)
    assert not (model / "evaluation").exists()  # computed before anything is written
    (model / "evaluation").mkdir()
    (model / "evaluation" / "confusion_model.png").write_bytes(b"an evaluation stopped before its report")
    evaluate_model(model, data, baseline=False)
    assert (model / "evaluation" / "report.json").is_file()
    (model / "evaluation" / "report.json").unlink()
    (model / "evaluation" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="the model's evaluation folder \\(the default --output-dir\\)"):
        evaluate_model(model, data, baseline=False)


def test_an_empty_corpus_path_is_refused_not_the_current_folder(tmp_path, monkeypatch):
    write_csv(tmp_path / "a.csv", toy_rows(4))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="a corpus path is empty"):
        corpus_files([""])


# --- predict and explain ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["predict", "m", "a fine film", "--encoding", "latin-1"], ["--encoding is for reading --input FILE"]),
    (["predict", "m", "a fine film", "--text-column", "review", "--delimiter", ";"],
     ["--text-column and --delimiter are for reading --input FILE", "leave out the flag"]),
    (["explain", "m", "a fine film", "--top", "-1"], ["--top must be at least 0, not -1"]),
])
def test_options_that_would_do_nothing_are_refused(args, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert_one_line(*run_in_process(args, capsys), *words)
