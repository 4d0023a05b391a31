"""More bad command-line input: files the earlier sweep (test_cli_bad_input.py) did not reach. Each must end in
one line that names the file (or flag) and the fix, exit non-zero, and never leave a traceback: a baseline
training file it cannot learn from, one sentence or question to train on, SQuAD files of the wrong shape,
seeds numpy refuses, nested JSONL/Parquet values, and a damaged phrase file.
"""
import json

import pandas as pd
import pytest

from conftest import toy_rows, write_csv
from nlpforge.data.squad import read_squad
from nlpforge.errors import DataError
from nlpforge.tasks.base import hold_out
from nlpforge.text.phrases import PhraseModel
from test_cli_bad_input import run_in_process

TRAIN = ["--model", "bert-tiny", "--max-steps", "1", "--no-progress", "--output", "model-out"]
CONTEXT = "Ann met Bob in Paris in 1999."


def assert_one_line(code: int, out: str, err: str, *words: str) -> None:
    assert code != 0, out
    assert "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1 and len(err) < 600, err
    for word in words:
        assert word in err, (word, err)


def squad(*qas: dict, context=CONTEXT) -> dict:
    return {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": list(qas)}]}]}


def question(i: int, answers=None) -> dict:
    return {"id": f"q{i}", "question": "Who met Bob?",
            "answers": [{"text": "Ann", "answer_start": 0}] if answers is None else answers}


# --- 1. the evaluation baseline ----------------------------------------------------------------------------

@pytest.mark.parametrize("name, rows, words", [
    ("one.csv", [{"text": f"great wonderful film {i}", "label": "pos"} for i in range(20)],
     ["one.csv", "at least 2 of the model's labels", "20 usable rows (of 20) are all labelled pos", "--no-baseline"]),
    ("unseen.csv", [{"text": f"a film number {i}", "label": ["maybe", "perhaps"][i % 2]} for i in range(10)],
     ["unseen.csv", "none of its 10 rows is usable", "maybe, perhaps", "does not know", "--no-baseline"]),
    ("symbols.csv", [{"text": "!", "label": "pos"}, {"text": "a", "label": "neg"}, {"text": "?", "label": "neg"}],
     ["symbols.csv", "no word of 2 or more letters", "--no-baseline"]),
])
def test_evaluate_refuses_a_baseline_file_it_cannot_learn_from(tiny_model, tmp_path, capsys, name, rows, words):
    data = write_csv(tmp_path / "data.csv", toy_rows(20, seed=3))
    write_csv(tmp_path / name, rows)
    code, out, err = run_in_process(["evaluate", tiny_model.output, "--data", data, "--baseline-train",
                                     tmp_path / name, "--output-dir", tmp_path / "report"], capsys)
    assert_one_line(code, out, err, *words)


def test_evaluate_says_which_baseline_rows_it_left_out(tiny_model, tmp_path, capsys):
    data = write_csv(tmp_path / "data.csv", toy_rows(20, seed=3))
    mixed = write_csv(tmp_path / "mixed.csv", toy_rows(40, seed=4) + [{"text": "so so", "label": "meh"}] * 3)
    code, out, err = run_in_process(["evaluate", tiny_model.output, "--data", data, "--baseline-train", mixed,
                                     "--output-dir", tmp_path / "report"], capsys)
    assert code == 0, err
    assert ("baseline learned from 40 of 43 rows; left out: 1 with label(s) meh that the model does not know (its "
            "labels: neg, pos), 2 empty, duplicate or unlabelled") in out
    assert "transformer vs baseline" in out


# --- 2. holding out validation from a tiny training file ---------------------------------------------------

@pytest.mark.parametrize("task, name, content, words", [
    ("token-classification", "one.conll", "John\tB-PER\nlives\tO\n", ["one.conll", "too few sentences (1)"]),
    ("token-classification", "doc.conll", "-DOCSTART- -X- O O\n\nJohn\tB-PER\nlives\tO\n",
     ["doc.conll", "too few sentences (1)"]),
    ("question-answering", "one.json", json.dumps(squad(question(0))), ["one.json", "too few questions (1)"]),
], ids=["conll-one-sentence", "conll-docstart-one-sentence", "squad-one-question"])
def test_training_on_one_item_asks_for_more_or_for_validation(tmp_path, monkeypatch, capsys, task, name, content,
                                                               words):
    (tmp_path / name).write_text(content)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process(["train", task, "--train", name, *TRAIN], capsys)
    assert_one_line(code, out, err, *words, "--validation")
    assert not (tmp_path / "model-out").exists()


def test_question_answering_trains_with_its_default_window(tmp_path, monkeypatch, capsys):
    # The engine's max_seq_length (128) is below twice QA's doc_stride (128): the task sets its own 384.
    (tmp_path / "two.json").write_text(json.dumps(squad(question(0), question(1))))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process(["train", "question-answering", "--train", "two.json", *TRAIN], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "model-out" / "nlpforge.json").read_text())["max_seq_length"] == 384


def test_hold_out_always_leaves_some_to_train_on():
    for n in (2, 3, 10):
        kept, held = hold_out(list(range(n)), 0.999, seed=0)
        assert kept and held and sorted(kept + held) == list(range(n))
    with pytest.raises(DataError, match="t.conll: too few sentences"):
        hold_out(["one"], 0.1, seed=0, what="sentences", source="t.conll")


# --- 3. SQuAD JSON and QA JSONL of the wrong shape ----------------------------------------------------------

BAD_SQUAD = [
    ("data-item-text", {"data": ["x"]}, ["data[0] is a string", "not an object with \"paragraphs\""]),
    ("paragraphs-object", {"data": [{"paragraphs": {"a": 1}}]}, ["data[0].paragraphs is an object, not a list"]),
    ("qas-text", {"data": [{"paragraphs": [{"context": CONTEXT, "qas": "q"}]}]},
     ["data[0].paragraphs[0].qas is a string"]),
    ("answers-text", squad(question(0, ["Ann"])), ["qas[0].answers[0] is a string \"Ann\"", "answer_start"]),
    ("answer-start-text", squad(question(0, [{"text": "Ann", "answer_start": "12"}])),
     ["qas[0].answers[0]", "\"answer_start\" must be a whole number", "a string \"12\""]),
    ("answer-start-negative", squad(question(0, [{"text": "Ann", "answer_start": -3}])),
     ["question q0", "answer_start -3 is negative"]),
]


@pytest.mark.parametrize("document, words", [case[1:] for case in BAD_SQUAD], ids=[case[0] for case in BAD_SQUAD])
def test_squad_json_of_the_wrong_shape_names_the_place(tmp_path, document, words):
    (tmp_path / "bad.json").write_text(json.dumps(document))
    with pytest.raises(DataError) as error:
        read_squad(tmp_path / "bad.json")
    for word in ["bad.json", *words]:
        assert word in str(error.value), (word, str(error.value))


def jsonl_line(answers, qid: str = "q9") -> str:
    return json.dumps({"id": qid, "question": "Who met Bob?", "context": CONTEXT, "answers": answers})


@pytest.mark.parametrize("answers, words", [
    (["Ann"], ["line 2: answers[0] is a string \"Ann\""]),
    ({"text": "Ann", "answer_start": 0}, ["line 2: answers", "two lists of the same length"]),
    ({"text": ["Ann"], "answer_start": ["0"]}, ["line 2: answers[0]", "must be a whole number"]),
    (7, ["line 2: answers is a number 7, not a list of answers"]),
], ids=["list-of-strings", "object-of-scalars", "start-text", "number"])
def test_qa_jsonl_of_the_wrong_shape_names_the_line(tmp_path, monkeypatch, capsys, answers, words):
    good = jsonl_line({"text": ["Ann"], "answer_start": [0]})
    (tmp_path / "qa.jsonl").write_text(good + "\n" + jsonl_line(answers) + "\n")
    with pytest.raises(DataError) as error:
        read_squad(tmp_path / "qa.jsonl")
    for word in ["qa.jsonl", *words]:
        assert word in str(error.value), (word, str(error.value))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process(["train", "question-answering", "--train", "qa.jsonl", *TRAIN], capsys)
    assert_one_line(code, out, err, "qa.jsonl", words[0])


def test_both_answer_layouts_still_read(tmp_path):
    lines = [jsonl_line({"text": ["Ann"], "answer_start": [0]}, "q1"), jsonl_line([{"text": "Bob", "answer_start": 8}],
                                                                               "q2"),
             jsonl_line({"text": [], "answer_start": []}, "q3")]
    (tmp_path / "qa.jsonl").write_text("\n".join(lines) + "\n")
    examples, report = read_squad(tmp_path / "qa.jsonl")
    assert [e.answers for e in examples] == [[("Ann", 0)], [("Bob", 8)], []]
    assert report.impossible == 1


# --- 4. seeds numpy cannot take ----------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["train", "text-classification", "--train", "train.csv", *TRAIN, "--seed", "-1"],
    ["train", "token-classification", "--train", "train.conll", *TRAIN, "--seed", "99999999999"],
    ["vectors", "train", "--corpus", "corpus.txt", "--output", "model-out", "--seed", "-1"],
], ids=["text-classification-negative", "token-classification-too-big", "vectors-negative"])
def test_seed_out_of_range_is_refused_before_any_work(tmp_path, monkeypatch, capsys, args):
    write_csv(tmp_path / "train.csv", toy_rows(20))
    (tmp_path / "train.conll").write_text("John\tB-PER\nlives\tO\n\nMary\tB-PER\nruns\tO\n")
    (tmp_path / "corpus.txt").write_text("the cat sat on the mat\n" * 20)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process(args, capsys)
    assert_one_line(code, out, err, "seed must be between 0 and 4294967295")
    assert not (tmp_path / "model-out").exists()


# --- 5. lists and objects where a text or a label belongs --------------------------------------------------

def nested_jsonl(column: str, value) -> str:
    rows = toy_rows(20)
    rows[12][column] = value
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.mark.parametrize("loading", ["memory", "lazy"])
@pytest.mark.parametrize("name, write, words", [
    ("list-label.jsonl", lambda p: p.write_text(nested_jsonl("label", ["pos"])),
     ["row 13: column 'label' holds a list ([\"pos\"])"]),
    ("dict-text.jsonl", lambda p: p.write_text(nested_jsonl("text", {"a": 1})),
     ["row 13: column 'text' holds an object"]),
    ("list-label.parquet", lambda p: pd.DataFrame({"text": [r["text"] for r in toy_rows(20)],
                                                   "label": [[r["label"]] for r in toy_rows(20)]}).to_parquet(p),
     ["column 'label' holds"]),
], ids=["jsonl-list-label", "jsonl-dict-text", "parquet-list-label"])
def test_nested_values_are_refused_not_stringified(tmp_path, monkeypatch, capsys, name, write, words, loading):
    write(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process(["train", "text-classification", "--train", name, *TRAIN, "--data-loading",
                                     loading], capsys)
    assert_one_line(code, out, err, name, *words, "single string or number")
    assert not (tmp_path / "model-out").exists()


# --- 6. a damaged phrase file -------------------------------------------------------------------------------

@pytest.mark.parametrize("saved, words", [
    ({"format": "nlpforge-phrases", "version": 1}, ["damaged", "no 'settings' entry"]),
    ({"format": "nlpforge-phrases", "version": 1, "settings": {}, "layers": [{"min_count": 1}]},
     ["damaged", "no 'threshold' entry"]),
    ({"format": "nlpforge-phrases", "version": 1, "settings": {"phrase_passes": "x"}, "layers": []},
     ["damaged", "phrase-passes"]),
    ({"format": "nlpforge-phrases", "version": 99}, ["version 99", "reads version 1"]),
], ids=["no-settings", "layer-without-threshold", "bad-setting", "newer-version"])
def test_damaged_phrase_file_says_to_learn_phrases_again(tmp_path, monkeypatch, capsys, saved, words):
    (tmp_path / "ph.json").write_text(json.dumps(saved))
    (tmp_path / "corpus.txt").write_text("flights to rio de janeiro\n" * 5)
    with pytest.raises(DataError, match="nlpforge corpus phrases"):
        PhraseModel.load(tmp_path / "ph.json")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process(["corpus", "tokenize", "--corpus", "corpus.txt", "--phrases", "ph.json",
                                     "--output", "tokens.txt"], capsys)
    assert_one_line(code, out, err, "ph.json", *words, "learn the phrases again with `nlpforge corpus phrases`")


@pytest.mark.parametrize("args, words", [
    (["--bogus"], ["No such option: --bogus", "see `nlpforge --help`"]),
    (["train", "text-classification", "--batch-size", "abc"],
     ["'--batch-size'", "valid integer", "see `nlpforge train text-classification --help`"]),
    (["train", "text-classification", "--precision", "fp64"], ["'fp64' is not one of", "'bf16'"]),
    (["runs", "show"], ["Missing argument 'name'", "see `nlpforge runs show --help`"]),
    (["models", "scale", "stars", "two"], ["'workers'", "valid integer"]),
    (["train", "text-classification", "--batch-size"],
     ["'--batch-size' requires an argument", "see `nlpforge train text-classification --help`"]),
], ids=["unknown-flag", "not-a-number", "unknown-choice", "missing-argument", "argument-not-a-number", "no-value"])
def test_usage_errors_are_one_line_like_every_other_error(args, words, capsys):
    code, out, err = run_in_process(args, capsys)
    assert code == 2
    assert err.startswith("error: ") and "╭" not in err
    assert_one_line(code, out, err, *words)


def test_a_group_named_alone_shows_its_help(capsys):
    code, out, err = run_in_process(["train"], capsys)
    assert code == 2 and "text-classification" in out + err and "Traceback" not in out + err
