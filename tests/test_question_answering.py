"""Extractive QA: the official EM/F1 rules, windows and offsets, answers across windows, SQuAD v2.0's
no-answer, a toy task learned, the server, the sliding-window baseline, and bad files."""
import json
import random

import numpy as np
import pytest

from conftest import assert_user_error, run_cli
from nlpforge import load
from nlpforge.cli import main
from nlpforge.data.squad import QAExample, read_squad
from nlpforge.errors import DataError, InputError
from nlpforge.evaluation.sliding_window import answer_question
from nlpforge.models.registry import load_tokenizer, resolve_base
from nlpforge.tasks.question_answering import (best_answers, choose_null_threshold, exact_match,
                                               f1_score, normalize_answer, squad_metrics, windows)
from nlpforge.training.run import train
from nlpforge.training.settings import job_class

CODES = ["amber", "birch", "cobalt", "delta", "ember", "falcon", "garnet", "harbor", "indigo", "juniper"]
FILLER = "the report covers many topics and every section of it was written with care".split()


def toy_squad(n: int, seed: int = 0, impossible_share: float = 0.0) -> dict:
    """Contexts of filler where one sentence says "the code is X"; the question asks for the code."""
    rng = random.Random(seed)
    paragraphs = []
    for i in range(n):
        before = " ".join(rng.choices(FILLER, k=rng.randint(3, 12)))
        after = " ".join(rng.choices(FILLER, k=rng.randint(3, 12)))
        code = rng.choice(CODES)
        if rng.random() < impossible_share:
            context = f"{before.capitalize()}. {after}."
            qa = {"id": f"q{i}", "question": "What is the code?", "answers": [], "is_impossible": True}
        else:
            context = f"{before.capitalize()}. The code is {code}. {after}."
            qa = {"id": f"q{i}", "question": "What is the code?",
                  "answers": [{"text": code, "answer_start": context.index(f"is {code}") + 3}]}
        paragraphs.append({"context": context, "qas": [qa]})
    return {"version": "toy", "data": [{"title": "toy", "paragraphs": paragraphs}]}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_base("bert-tiny"))


def train_toy_qa(folder, train_rows: int, dev_rows: int, **settings):
    """A bert-tiny question-answering model of toy_squad rows, in folder/model (its TrainResult)."""
    (folder / "train.json").write_text(json.dumps(toy_squad(train_rows, seed=1)))
    (folder / "dev.json").write_text(json.dumps(toy_squad(dev_rows, seed=2)))
    return train(job_class("question-answering").of(
        train=str(folder / "train.json"), validation=str(folder / "dev.json"), output=str(folder / "model"),
        model="bert-tiny", batch_size=16, max_seq_length=64, doc_stride=16, progress=False, seed=0,
        **settings), log=lambda *_: None)


@pytest.fixture(scope="module")
def qa_model(tmp_path_factory):
    return train_toy_qa(tmp_path_factory.mktemp("qa"), 400, 60, epochs=6, learning_rate=3e-3)


def test_the_official_normaliser_and_scores():
    # Cases after SQuAD's evaluate-v1.1.py: case, punctuation, articles and whitespace do not count.
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert exact_match("Denver Broncos", "the denver broncos.") == 1.0
    assert f1_score("Denver Broncos won", "the Denver Broncos") == pytest.approx(0.8)
    assert f1_score("Carolina Panthers", "Denver Broncos") == 0.0
    assert f1_score("", "") == 1.0 and f1_score("something", "") == 0.0  # v2.0's no-answer
    examples = [QAExample("a", "q", "c", [("Denver Broncos", 0), ("Broncos", 7)]), QAExample("b", "q", "c", [("x", 0)])]
    metrics = squad_metrics(examples, {"a": "Broncos", "b": "y"}, "dev")
    assert metrics == {"dev_exact_match": 50.0, "dev_f1": 50.0}  # the best gold answer counts


def test_offsets_map_back_through_entities_and_unicode(tokenizer):
    context = "Café Zoë &amp; Søn opened in Kraków — “the old town” — in 1998."
    answer = "Kraków"
    example = QAExample("u", "Where did it open?", context, [(answer, context.index(answer))])
    feature = windows(tokenizer, [example], 64, 16, label=True)[0]
    start, end = feature["start_positions"], feature["end_positions"]
    assert context[feature["offsets"][start][0]:feature["offsets"][end][1]] == answer


def test_an_answer_near_a_window_border_is_labelled_only_where_it_is_whole(tokenizer):
    context = " ".join(f"w{i}" for i in range(60)) + " the code is cobalt and then " + " ".join(["x"] * 40)
    example = QAExample("b", "What is the code?", context, [("cobalt", context.index("cobalt"))])
    features = windows(tokenizer, [example], 48, 16, label=True)
    assert len(features) > 2
    labelled = [f for f in features if f["start_positions"] != 0]
    assert labelled and all(f["offsets"][f["start_positions"]][0] == context.index("cobalt") for f in labelled)
    for f in features:
        inside = [o for o in f["offsets"] if o is not None]
        whole = inside[0][0] <= context.index("cobalt") and inside[-1][1] >= context.index("cobalt") + 6
        assert (f["start_positions"] != 0) == whole  # outside or cut: [CLS], "no answer here"
    # Post-processing looks at every window and keeps the best span overall.
    outputs = []
    for f in features:
        starts, ends = np.full(len(f["input_ids"]), -5.0), np.full(len(f["input_ids"]), -5.0)
        if f["start_positions"]:
            starts[f["start_positions"]], ends[f["end_positions"]] = 8.0, 8.0
        outputs.append({"start_logits": starts, "end_logits": ends})
    text, start, end, score, _ = best_answers([example], features, outputs, 20, 30)[0]
    assert (text, start, end) == ("cobalt", context.index("cobalt"), context.index("cobalt") + 6) and score > 0.5


def test_a_question_longer_than_a_window_is_cut_and_the_context_still_covered(tokenizer):
    context = " ".join(f"w{i}" for i in range(200)) + " the code is cobalt."
    example = QAExample("long", "what is the code " * 40, context, [("cobalt", context.index("cobalt"))])
    features = windows(tokenizer, [example], 64, 16, label=True)
    room = [sum(o is not None for o in f["offsets"]) for f in features]
    assert min(room[:-1]) >= 32  # the question leaves every window two strides of context
    assert any(f["start_positions"] for f in features)


def test_v2_no_answer_windows_and_threshold(tokenizer):
    example = QAExample("n", "What is the code?", "Nothing to see here.", [], impossible=True)
    feature = windows(tokenizer, [example], 32, 8, label=True)[0]
    assert (feature["start_positions"], feature["end_positions"]) == (0, 0)
    examples = [example, QAExample("y", "q", "The code is amber.", [("amber", 12)])]
    answers = [("here", 16, 20, 0.1, 3.0), ("amber", 12, 17, 0.9, -4.0)]  # (text, start, end, score, null margin)
    threshold = choose_null_threshold(examples, answers)
    assert -4.0 <= threshold < 3.0  # "no answer" for the first, the span for the second
    predictions = {e.id: ("" if a[4] > threshold else a[0]) for e, a in zip(examples, answers)}
    metrics = squad_metrics(examples, predictions, "dev")
    assert metrics["dev_f1"] == 100.0 and metrics["dev_no_answer_f1"] == 100.0


def test_a_toy_task_is_learned_and_answered_on_every_path(qa_model, tmp_path, capsys):
    assert qa_model.metrics["validation_exact_match"] >= 80
    model = load(qa_model.output)
    context = "Many topics were covered. The code is garnet. Every section was written with care."
    answer = model.predict({"question": "What is the code?", "context": context})[0]
    assert answer["answer"] == "garnet" and context[answer["start"]:answer["end"]] == "garnet"
    with pytest.raises(InputError, match='the "context" is missing'):
        model.predict({"question": "What is the code?"})

    def cli(*args) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as done:
            main(["predict", str(qa_model.output), *map(str, args)])
        return done.value.code, *capsys.readouterr()

    # The command line: a question with its context, and a file of question and context columns.
    code, out, err = cli("What is the code?", "--text-pair", context)
    assert code == 0 and json.loads(out)["answer"] == "garnet", err
    (tmp_path / "q.csv").write_text(f"question,context\nWhat is the code?,{context}\n")
    code, out, err = cli("--input", tmp_path / "q.csv", "--output", tmp_path / "a.jsonl")
    assert code == 0 and json.loads((tmp_path / "a.jsonl").read_text())["answer"] == "garnet", err
    for args, message in [(["What is the code?"], "--text-pair CONTEXT"),
                          (["a", "b", "--text-pair", "c"], "--text-pair is given 1 time(s) for 2 text argument(s)")]:
        code, out, err = cli(*args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    from nlpforge.evaluation.evaluate import evaluate_model

    (tmp_path / "dev.json").write_text(json.dumps(toy_squad(30, seed=9)))
    result = evaluate_model(qa_model.output, tmp_path / "dev.json", output_dir=tmp_path / "eval")
    assert result.model["exact_match"] >= 80 and "baseline sliding window" in result.text


def test_the_sliding_window_baseline_finds_a_plain_answer():
    context = "The game was played in Santa Clara. Denver Broncos won the title after a long season."
    assert answer_question("Who won the title?", context) in ("Denver Broncos", "Denver", "Broncos")
    assert answer_question("Where was the game played?", context) in ("Santa Clara", "Santa", "Clara")


def test_the_server_answers_and_refuses_bad_requests(qa_model, tmp_path):
    from serving_support import inference, management, running_server

    with running_server(tmp_path / "store", auth=False, max_text_chars=500) as server:
        assert management(server).post("/models", params={"url": str(qa_model.output), "model_name": "qa"}
                                       ).status_code == 200
        client = inference(server)
        context = "The code is delta. The report covers many topics."
        answers = client.post("/predictions/qa", json=[{"question": "What is the code?", "context": context}] * 3)
        assert [a["answer"] for a in answers.json()] == ["delta"] * 3
        kserve = client.post("/v1/models/qa:predict", json={"instances": [{"question": "What is the code?",
                                                                            "context": context}]}).json()
        assert kserve["predictions"][0]["answer"] == "delta"
        explained = client.post("/explanations/qa", json={"question": "What is the code?", "context": context}).json()
        assert explained["answer"] == "delta" and "delta" in explained["words"]
        assert len(explained["importances"]) == len(explained["attention"]["tokens"]) == len(explained["words"])
        for body, status, words in [({"question": "What is the code?"}, 400, "context"),
                                    ({"question": " ", "context": context}, 400, "empty"),
                                    ({"question": "q", "context": "x" * 600}, 413, "limit")]:
            response = client.post("/predictions/qa", json=body)
            assert response.status_code == status and words in response.json()["message"]


def test_bad_files_are_named(tmp_path):
    no_data = tmp_path / "nodata.json"
    no_data.write_text(json.dumps({"version": "1.1", "articles": []}))
    assert_user_error(run_cli(["train", "question-answering", "--train", no_data, "--output", tmp_path / "m",
                               "--model", "bert-tiny"]), 'no "data" key')
    beyond = toy_squad(2)
    beyond["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 10_000
    (tmp_path / "beyond.json").write_text(json.dumps(beyond))
    with pytest.raises(DataError, match="question q0: answer_start 10000 is beyond its context"):
        read_squad(tmp_path / "beyond.json")
    shifted = toy_squad(3)
    shifted["data"][0]["paragraphs"][1]["qas"][0]["answers"][0]["answer_start"] -= 2
    shifted["data"][0]["paragraphs"][2]["qas"][0]["answers"][0]["text"] = "not in the context"
    (tmp_path / "shifted.json").write_text(json.dumps(shifted))
    examples, report = read_squad(tmp_path / "shifted.json")
    assert (report.moved, report.dropped, len(examples)) == (1, 1, 2)
    assert "2 answer_start values did not match their text" in report.text()
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"question": "Who?", "context": "Ann.", "answer": "Ann"}) + "\n")
    with pytest.raises(DataError, match=r'rows.jsonl: line 1: the key "answer" is not one a question reads; did you '
                                        r'mean "answers"\?'):
        read_squad(rows)
    answers = {"text": ["Ann"], "answer_start": [0]}
    rows.write_text(json.dumps({"question": "Who?", "context": "Ann.", "answers": answers, "question_id": 7, "qid": 8,
                                "ID": 9, "no_answer": False, "impossible": False}) + "\n")
    assert read_squad(rows)[0][0].answers == [("Ann", 0)]  # a row's own columns are not misspellings
    rows.write_text(json.dumps({"text": "a review", "label": 5}) + "\n")
    with pytest.raises(DataError, match=r'rows.jsonl: line 1: needs a "question"'):  # said "line 1: question line 1"
        read_squad(rows)


def test_onnx_gives_the_same_answers_and_explanations_show_attention(qa_model, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(qa_model.output, folder)
    question = {"question": "What is the code?", "context": "The code is juniper. The report covers many topics."}
    expected = load(folder).predict(question)[0]
    for backend in ("onnx", "onnx-int8"):
        assert load(folder, backend=backend).predict(question)[0]["answer"] == expected["answer"]
    explained = load(folder).explain(question)[0]
    assert explained["answer"] == expected["answer"] and len(explained["attention"]["tokens"]) > 5


def test_the_builtin_estimator_answers_questions(tmp_path, monkeypatch):
    import tarfile

    from nlpforge.sdk import QuestionAnswerer

    monkeypatch.setenv("NLPFORGE_TRACKING", "0")
    (tmp_path / "train.json").write_text(json.dumps(toy_squad(40, seed=1)))
    est = QuestionAnswerer(base_model="bert-tiny", jobs_root=str(tmp_path / "jobs"),
                           hyperparameters={"epochs": 1, "max-seq-length": 64, "doc-stride": 16, "batch-size": 16,
                                            "threads": 1})
    est.fit({"train": str(tmp_path / "train.json")}, logs=False, job_name="qa-job")
    with tarfile.open(est.model_data) as tar:
        assert json.load(tar.extractfile("labels.json"))["doc_stride"] == 16
