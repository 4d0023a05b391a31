"""Outputs never overwrite what a command reads or a folder it did not make: a corpus, training data, a model's
own files, a capture log; and start-up and output-name mistakes get one line, not a traceback."""
import socket

import pytest

from conftest import assert_user_error, run_cli, toy_rows, write_csv
from nlpforge.errors import ConfigError
from nlpforge.monitoring.review import ReviewQueue
from nlpforge.serving.capture import DataCapture
from nlpforge.vectors.plot import plot_words
from test_cli_bad_input import run_in_process

CORPUS = "The film was good. The plot was thin.\n\nA second document here. It has two sentences.\n"


@pytest.mark.parametrize("command", ["tokenize", "phrases", "vocab"])
def test_a_corpus_command_never_writes_over_its_corpus(tmp_path, capsys, command):
    corpus = tmp_path / "c.txt"
    corpus.write_text(CORPUS)
    code, _, err = run_in_process(["corpus", command, "--corpus", corpus, "--output", corpus], capsys)
    assert code != 0 and "is the input" in err and "Traceback" not in err
    assert corpus.read_text() == CORPUS


def test_overwrite_never_deletes_training_data_or_a_folder_that_is_not_a_model(tmp_path, capsys, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    train = write_csv(project / "train.csv", toy_rows(20))
    base = ["train", "text-classification", "--model", "bert-tiny", "--max-steps", "1", "--no-progress",
            "--overwrite"]
    code, _, err = run_in_process([*base, "--train", train, "--output", project], capsys)
    assert code != 0 and "holds the input" in err
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("keep me")
    code, _, err = run_in_process([*base, "--train", train, "--output", notes], capsys)
    assert code != 0 and "holds files but no nlpforge model" in err
    monkeypatch.chdir(notes)
    code, _, err = run_in_process([*base, "--train", train, "--output", "."], capsys)
    assert code != 0 and "is the current folder" in err
    assert train.exists() and (notes / "mine.txt").read_text() == "keep me"


def test_explain_never_writes_into_the_model_and_names_wrong_file_kinds(tmp_path, capsys, tiny_model):
    model = tiny_model.output
    card = (model / "nlpforge.json").read_bytes()
    for flags, message in ((["--json", model / "nlpforge.json"], "is inside the input"),
                           (["--png", tmp_path / "view.html"], "name a png, svg, pdf, jpg, jpeg file"),
                           (["--output", tmp_path / "view.png"], "name a html, htm file")):
        code, _, err = run_in_process(["explain", model, "good film", "--steps", "2", *flags], capsys)
        assert code != 0 and message in err and "Traceback" not in err, err
    assert (model / "nlpforge.json").read_bytes() == card


def test_a_tokenizer_is_never_written_into_a_model_folder(tmp_path, capsys, tiny_model):
    corpus = tmp_path / "c.txt"
    corpus.write_text(CORPUS * 20)
    model = tiny_model.output
    before = (model / "tokenizer.json").read_bytes()
    code, _, err = run_in_process(["tokenizer", "train", "--corpus", corpus, "--output", model, "--vocab-size", "100"],
                                  capsys)
    assert code != 0 and "holds a model" in err
    assert (model / "tokenizer.json").read_bytes() == before


def test_review_never_writes_into_the_capture_log(tmp_path):
    capture = DataCapture(tmp_path / "capture", seed=0)
    for row in toy_rows(4):
        capture.record("stars", "1.0", percent=100, text=row["text"], prediction={"label": "neg", "score": 0.5})
    capture.close()
    log = next((tmp_path / "capture").rglob("capture.jsonl"))
    before = log.read_bytes()
    with pytest.raises(ConfigError, match="is a capture log, which the export must not overwrite"):
        ReviewQueue(tmp_path / "capture", "stars").export(log)
    with pytest.raises(ConfigError, match="is a capture log's name"):
        ReviewQueue(tmp_path / "capture", "stars", labels_file=log)
    assert log.read_bytes() == before


def test_serve_start_up_mistakes_are_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(["serve", "--model-store", tmp_path / "store", "--inference-port", port,
                          "--management-port", "0", "--metrics-port", "0"], timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "cannot listen on 127.0.0.1" in result.stderr
    same = run_cli(["serve", "--model-store", tmp_path / "store", "--inference-port", "18931", "--management-port",
                    "18931"], timeout=120)
    assert_user_error(same, "must differ")


@pytest.mark.parametrize("weight", ["1.0=nan", "1.0=inf", "1.0=-5"])
def test_traffic_weights_must_be_finite_and_not_negative(capsys, weight):
    code, _, err = run_in_process(["models", "traffic", "stars", "--weight", weight,
                                   "--management-url", "http://127.0.0.1:9"], capsys)
    assert code != 0 and "finite number of at least 0" in err


def test_a_word_map_names_a_non_image_file():
    with pytest.raises(ConfigError, match="name a png"):
        plot_words(None, ["good", "bad", "fine"], "map.txt")


@pytest.mark.parametrize("command", [["runs", "list"], ["jobs", "list"]])
def test_a_jobs_root_to_read_must_be_a_folder(tmp_path, capsys, command):
    (tmp_path / "a-file").write_text("x")
    for root, message in ((tmp_path / "absent", "no such folder"), (tmp_path / "a-file", "is a file")):
        code, _, err = run_in_process([*command, "--jobs-root", root], capsys)
        assert code != 0 and message in err and "Traceback" not in err
    assert not (tmp_path / "absent").exists()
