"""Bad input to the named-entity and question-answering tasks: each gets its one-line error naming the
problem, never a traceback and never a silently wrong score."""
import json

import pytest

from conftest import assert_user_error, run_cli
from nlpforge.data.sequences import read_tagged
from nlpforge.data.squad import read_squad
from nlpforge.errors import DataError
from nlpforge.training.run import train
from nlpforge.training.settings import job_class
from test_question_answering import toy_squad, train_toy_qa
from test_token_classification import toy_sentences, write_conll


def squad_file(path, qas: list, context: str = "The code is amber here."):
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}))
    return path


def amber(qid: str, **more) -> dict:
    return {"id": qid, "question": "What is the code?", "answers": [{"text": "amber", "answer_start": 12}], **more}


@pytest.fixture(scope="module")
def iob2_model(tmp_path_factory):
    """A bert-tiny tagger of IOB2 toy sentences (one short epoch: only its label scheme matters here)."""
    folder = tmp_path_factory.mktemp("ner")
    write_conll(folder / "train.txt", toy_sentences(40, seed=1))
    write_conll(folder / "dev.txt", toy_sentences(10, seed=2))
    train(job_class("token-classification").of(
        train=str(folder / "train.txt"), validation=str(folder / "dev.txt"), output=str(folder / "model"),
        model="bert-tiny", epochs=1, batch_size=16, max_seq_length=16, progress=False, seed=0), log=lambda *_: None)
    return folder / "model"


# --- SQuAD files -------------------------------------------------------------------------------------------
def test_duplicate_question_ids_are_refused_as_answers_are_scored_by_id(tmp_path):
    path = squad_file(tmp_path / "dup.json", [amber("a"), {**amber("a"), "question": "Which code?"}])
    with pytest.raises(DataError, match=r"qas\[1\].*the id 'a' is also the id of .*qas\[0\]"):
        read_squad(path)


def test_questions_without_ids_get_their_place_in_the_file_as_id(tmp_path):
    no_id = {k: v for k, v in amber("x").items() if k != "id"}
    examples, _ = read_squad(squad_file(tmp_path / "ids.json", [no_id, {**no_id, "question": "Which code?"}]))
    assert [e.id for e in examples] == ["data[0].paragraphs[0].qas[0]", "data[0].paragraphs[0].qas[1]"]


def test_null_ids_and_flags_count_as_missing_and_0_or_1_as_false_or_true(tmp_path):
    qas = [amber(None), {**amber(None), "question": "Which code?", "is_impossible": 0},
           {"id": None, "question": "Who?", "answers": [], "is_impossible": 1},
           {**amber("d"), "is_impossible": None}]
    examples, _ = read_squad(squad_file(tmp_path / "nulls.json", qas))
    assert [e.id for e in examples][:3] == [f"data[0].paragraphs[0].qas[{i}]" for i in range(3)]
    assert [e.impossible for e in examples] == [False, False, True, False]
    with pytest.raises(DataError, match=r'"is_impossible" must be true or false, not a number 2'):
        read_squad(squad_file(tmp_path / "two.json", [amber("a", is_impossible=2)]))


def test_is_impossible_must_be_a_json_boolean(tmp_path):
    with pytest.raises(DataError, match=r'"is_impossible" must be true or false, not a string "false"'):
        read_squad(squad_file(tmp_path / "flag.json", [amber("a", is_impossible="false")]))


def test_an_impossible_question_with_answers_is_refused(tmp_path):
    with pytest.raises(DataError, match=r'"is_impossible" is true but the question has 1 answer'):
        read_squad(squad_file(tmp_path / "both.json", [amber("a", is_impossible=True)]))


def test_an_empty_answer_text_is_refused_not_a_traceback_in_training(tmp_path):
    qas = [{"id": "a", "question": "What is the code?", "answers": [{"text": "", "answer_start": 0}]}]
    with pytest.raises(DataError, match=r"question a: an answer's \"text\" is empty"):
        read_squad(squad_file(tmp_path / "empty.json", qas))


def test_a_v2_file_with_ids_and_impossible_questions_still_reads(tmp_path):
    (tmp_path / "toy.json").write_text(json.dumps(toy_squad(20, impossible_share=0.3)))
    examples, report = read_squad(tmp_path / "toy.json")
    assert len({e.id for e in examples}) == len(examples) == 20 and report.impossible


# --- tagged files ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("token", ["", "  ", None, True, ["New", "York"]])
def test_jsonl_tokens_must_be_words(tmp_path, token):
    path = tmp_path / "blank.jsonl"
    path.write_text(json.dumps({"tokens": ["Paris", token, "is"], "tags": ["B-LOC", "I-LOC", "O"]}) + "\n")
    with pytest.raises(DataError, match=r"line 1: token .* is not a word"):
        read_tagged(path)


def test_jsonl_number_tokens_are_words(tmp_path):
    path = tmp_path / "numbers.jsonl"
    path.write_text(json.dumps({"tokens": ["In", 1998, "Paris"], "tags": ["O", "O", "B-LOC"]}) + "\n")
    assert read_tagged(path).sentences == [(["In", "1998", "Paris"], ["O", "O", "B-LOC"])]


def test_a_file_mixing_iob2_and_iobes_entities_is_refused(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_text("Angela\tB-PER\nMerkel\tI-PER\nleft\tO\n\nParis\tS-LOC\nwaits\tO\n")
    with pytest.raises(DataError, match=r"line 1: entity I-PER does not end with E-PER .* uses IOBES"):
        read_tagged(path)
    path.write_text("Angela\tB-PER\nMerkel\tE-PER\nleft\tO\n\nParis\tS-LOC\nwaits\tO\n")
    assert read_tagged(path).report.scheme == "IOBES"


def test_evaluating_a_file_in_another_scheme_than_the_model_is_one_line(iob2_model, tmp_path):
    path = tmp_path / "iobes.txt"
    path.write_text("Angela\tB-PER\nMerkel\tE-PER\nvisited\tO\nParis\tS-LOC\n.\tO\n")
    result = run_cli(["evaluate", iob2_model, "--data", path, "--no-baseline"])
    assert_user_error(result, "the tags are IOBES but the model model uses IOB2")


def test_training_with_a_validation_file_in_another_scheme_is_refused(tmp_path):
    write_conll(tmp_path / "train.txt", [(["Angela", "Merkel", "left"], ["B-PER", "E-PER", "O"]),
                                         (["Paris", "waits"], ["S-LOC", "O"])])
    write_conll(tmp_path / "dev.txt", [(["Merkel", "left"], ["B-PER", "O"])])  # IOBES would say S-PER
    refused_training(tmp_path, r"dev.txt: the tags are IOB2 but the training file .* uses IOBES")


def refused_training(tmp_path, message: str) -> None:
    """Training on tmp_path's train.txt and dev.txt stops with a DataError matching `message`."""
    settings = job_class("token-classification").of(
        train=str(tmp_path / "train.txt"), validation=str(tmp_path / "dev.txt"), output=str(tmp_path / "model"),
        model="bert-tiny", epochs=1, max_seq_length=16, progress=False)
    with pytest.raises(DataError, match=message):
        train(settings, log=lambda *_: None)


def test_bytes_that_are_not_utf8_are_counted_in_the_reports_as_tables_count_them(tmp_path):
    conll = tmp_path / "latin1.txt"
    conll.write_bytes("Café\tB-LOC\nopens\tO\n".encode("latin-1"))
    tagged = read_tagged(conll)
    assert tagged.sentences[0][0][0] == "Caf\ufffd"
    assert "1 non-UTF-8 bytes replaced with U+FFFD" in tagged.report.text()
    squad = squad_file(tmp_path / "latin1.json", [amber("a")], "The code is amber here.")
    squad.write_bytes(squad.read_bytes().replace(b"here", b"h\xe9re"))
    assert "1 non-UTF-8 bytes replaced with U+FFFD" in read_squad(squad)[1].text()


# --- question-answering windows -----------------------------------------------------------------------------
def test_a_question_as_long_as_the_window_leaves_room_for_context_at_stride_zero(tmp_path):
    from nlpforge.data.squad import QAExample
    from nlpforge.models.registry import load_tokenizer, resolve_base
    from nlpforge.tasks.question_answering import windows

    context = "The code is amber here and there and everywhere."
    example = QAExample("a", "What is the code of the thing that we all want?", context, [("amber", 12)])
    features = windows(load_tokenizer(resolve_base("bert-tiny")), [example], 12, 0, label=True)
    assert all(any(o is not None for o in f["offsets"]) for f in features)
    assert any(f["start_positions"] > 0 for f in features)  # the answer is labelled in a window


# --- prediction ---------------------------------------------------------------------------------------------
def test_a_pair_given_to_the_tagger_says_it_reads_one_text(iob2_model, tmp_path):
    assert_user_error(run_cli(["predict", iob2_model, "Angela Merkel", "--text-pair", "Paris"]),
                      "reads one text, not a pair")
    (tmp_path / "pairs.csv").write_text("a,b\nAngela Merkel,Paris\n")
    result = run_cli(["predict", iob2_model, "--input", tmp_path / "pairs.csv", "--text-column", "a", "--text-column",
                      "b", "--output", tmp_path / "out.jsonl"])
    assert_user_error(result, "reads one text, not a pair; leave out \"text_pair\" (--text-pair, or a second "
                              "--text-column)")


def test_a_squad_question_without_answers_or_is_impossible_is_not_skipped_silently(tmp_path):
    no_answers = {"id": "b", "question": "Which code?", "answers": []}
    with pytest.raises(DataError, match=r'qas\[1\]: the question has no answers and no "is_impossible"'):
        read_squad(squad_file(tmp_path / "none.json", [amber("a"), no_answers]))
    examples, report = read_squad(squad_file(tmp_path / "v2.json", [amber("a"), {**no_answers, "is_impossible": True}]))
    assert [e.impossible for e in examples] == [False, True] and report.version == "2.0"


def test_a_request_with_both_text_and_tokens_is_refused_not_half_read():
    from nlpforge.errors import InputError
    from nlpforge.tasks.token_classification import TASK

    with pytest.raises(InputError, match=r'give "text" \(a raw text\) or "tokens" \(its words\), not both'):
        TASK.parse_input({"text": "Angela Merkel visited Paris.", "tokens": ["Paris"]})
    assert TASK.parse_input({"tokens": ["Paris", "waits"]})[1] == [("Paris", 0, 5), ("waits", 6, 11)]


def test_a_validation_file_without_entities_is_refused_as_f1_could_not_choose_an_epoch(tmp_path):
    write_conll(tmp_path / "train.txt", toy_sentences(10, seed=1))
    write_conll(tmp_path / "dev.txt", [(["nothing", "here"], ["O", "O"])])
    refused_training(tmp_path, r"dev.txt: every tag is O, so there are no entities to score")


def test_a_file_row_with_an_empty_question_is_named(tmp_path):
    model = train_toy_qa(tmp_path, 20, 5, epochs=1).output
    rows = tmp_path / "questions.csv"
    rows.write_text("question,context\nWhat is the code?,The code is amber.\n,The code is birch.\n")
    result = run_cli(["predict", model, "--input", rows, "--output", tmp_path / "answers.jsonl"])
    assert_user_error(result, f"row 2 of {rows}: the question is empty")
    assert not (tmp_path / "answers.jsonl").exists()
