"""Named entities: files read with their quirks, word-piece alignment, windows, a toy task learned,
entities with character offsets on every path, the CRF baseline, and the errors for bad input."""
import json
import random

import numpy as np
import pytest

from conftest import assert_user_error, run_cli
from nlpforge import load
from nlpforge.data.sequences import read_tagged, repair_tags
from nlpforge.errors import DataError, InputError
from nlpforge.models.registry import load_tokenizer, resolve_base
from nlpforge.tasks.token_classification import label_windows, split_words, windows, word_scores
from nlpforge.training.run import train
from nlpforge.training.settings import job_class

PEOPLE = ["Angela Merkel", "John Smith", "Maria Garcia", "Ken Watanabe", "Olga Petrova", "Ahmed Khan"]
PLACES = ["Paris", "Berlin", "New York", "São Paulo", "Tokyo", "Lagos"]
FILLER = ["yesterday", "briefly", "again", "today", "quietly", "with friends"]


TEMPLATES = ["{P} visited {L} {F} .", "{P} said {Q} visited {L} {F} .", "In {L} , {P} met {Q} {F} .",
             "{P} and {Q} left {L} for {M} {F} .", "Yesterday {P} flew from {L} to {M} ."]


def toy_sentences(n: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """Sentences from a few templates with people (PER) and places (LOC) in varied positions."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        fill = {"P": (rng.choice(PEOPLE), "PER"), "Q": (rng.choice(PEOPLE), "PER"), "L": (rng.choice(PLACES), "LOC"),
                "M": (rng.choice(PLACES), "LOC"), "F": (rng.choice(FILLER), None)}
        tokens, tags = [], []
        for part in rng.choice(TEMPLATES).split():
            if part.startswith("{"):
                words, kind = fill[part[1]]
                words = words.split()
                tokens += words
                tags += ["O"] * len(words) if kind is None else [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
            else:
                tokens.append(part)
                tags.append("O")
        sentences.append((tokens, tags))
    return sentences


def write_conll(path, sentences):
    path.write_text("\n\n".join("\n".join(f"{t}\t{g}" for t, g in zip(tokens, tags)) for tokens, tags in sentences)
                    + "\n")
    return path


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_base("bert-tiny"))


@pytest.fixture(scope="module")
def ner_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ner")
    train_file = write_conll(folder / "train.txt", toy_sentences(300, seed=1))
    validation = write_conll(folder / "dev.txt", toy_sentences(60, seed=2))
    return train(job_class("token-classification").of(
        train=str(train_file), validation=str(validation), output=str(folder / "model"), model="bert-tiny", epochs=6,
        learning_rate=3e-3, batch_size=16, max_seq_length=32, progress=False, seed=0), log=lambda *_: None)


def test_files_are_read_with_their_quirks(tmp_path):
    conll = tmp_path / "wiki.txt"
    conll.write_text("-DOCSTART- O\n\nen:Angela\tB-PER\nen:Merkel\tI-PER\nen:spoke\tO\n\nen:Paris  I-LOC\n")
    data = read_tagged(conll)
    assert data.sentences == [(["Angela", "Merkel", "spoke"], ["B-PER", "I-PER", "O"]), (["Paris"], ["B-LOC"])]
    assert data.report.prefixes_removed == 4 and data.report.repaired_tags == 1
    tweets = tmp_path / "wnut.conll"
    tweets.write_text("a\tO\n&\tO\ngt\tO\n;\tO\nb\tB-person\n")
    assert read_tagged(tweets).sentences == [(["a", ">", "b"], ["O", "O", "B-person"])]
    jsonl = tmp_path / "ner.jsonl"
    jsonl.write_text(json.dumps({"tokens": ["Tokyo", "rocks"], "tags": ["S-LOC", "O"]}) + "\n")
    data = read_tagged(jsonl)
    assert data.report.scheme == "IOBES" and data.sentences[0][1] == ["S-LOC", "O"]
    assert repair_tags(["O", "I-ORG", "I-ORG", "E-PER"]) == (["O", "B-ORG", "I-ORG", "S-PER"], 2)


def test_every_words_label_is_recovered_from_its_sub_tokens(tokenizer):
    sentences = [["unbelievably", "Zoë", "Müller", "visited", "Kraków", "."], ["antidisestablishmentarianism"]]
    tags = [[0, 1, 2, 0, 3, 0], [4]]
    features = windows(tokenizer, sentences, 64, 8)
    for label_all in (False, True):
        label_windows(features, tags, label_all)
        for feature in features:
            previous = None
            for word, label in zip(feature["words"], feature["labels"]):
                if word is None:
                    assert label == -100
                elif word != previous:
                    assert label == tags[feature["sentence"]][word]  # the first sub-token carries the tag
                else:
                    assert label == (tags[feature["sentence"]][word] if label_all else -100)
                previous = word
    assert any(len([w for w in f["words"] if w == 0]) > 1 for f in features)  # multi-piece words were there


def test_a_word_split_across_a_window_border_gets_its_tag_from_a_whole_window(tokenizer):
    words = [f"word{i}" for i in range(40)]  # each word is several sub-tokens
    features = windows(tokenizer, [words], 24, 8)
    assert len(features) > 2 and all(f["sentence"] == 0 for f in features)
    # Fake outputs: every position says "the tag of my word", window by window.
    outputs = []
    for feature in features:
        logits = np.zeros((len(feature["input_ids"]), 40))
        for position, word in enumerate(feature["words"]):
            if word is not None:
                logits[position, word] = 10.0
        outputs.append({"logits": logits})
    scores = word_scores(features, outputs, [len(words)])[0]
    assert list(scores.argmax(-1)) == list(range(40))  # no word lost at a border, none from a cut-off piece
    borders = [f["words"][f["content"][1]] for f in features[:-1]]
    assert borders  # words sit on the borders, and still got their own tags


def test_a_toy_ner_task_is_learned_and_entities_have_offsets(ner_model, tmp_path):
    assert ner_model.metrics["validation_f1"] >= 0.9
    model = load(ner_model.output)
    text = "Zoë Müller said Maria Garcia visited São Paulo &amp; Tokyo today."
    answer = model.predict(text)[0]
    for entity in answer["entities"]:
        assert text[entity["start"]:entity["end"]] == entity["word"]
    found = {(e["entity"], e["word"]) for e in answer["entities"]}
    assert ("PER", "Maria Garcia") in found and ("LOC", "São Paulo") in found
    for aggregation in ("first", "max", "simple"):
        entities = model.predict({"text": text, "aggregation": aggregation})[0]["entities"]
        assert all(text[e["start"]:e["end"]] == e["word"] for e in entities)
    words = model.predict({"tokens": ["John", "Smith", "visited", "Lagos"]})[0]["entities"]
    assert [e["entity"] for e in words] == ["PER", "LOC"]
    with pytest.raises(InputError, match="aggregation must be"):
        model.predict({"text": "x", "aggregation": "average"})


def test_split_words_keeps_offsets():
    text = "Dr. O'Neil paid $3.50 in São Paulo!"
    assert [(w, text[a:b]) for w, a, b in split_words(text)] == [(w, w) for w, _, _ in split_words(text)]
    assert [w for w, _, _ in split_words(text)] == ["Dr.", "O'Neil", "paid", "$", "3.50", "in", "São", "Paulo", "!"]


def test_evaluate_shows_types_confusion_and_the_crf_baseline(ner_model, tmp_path):
    from nlpforge.evaluation.evaluate import evaluate_model

    data = write_conll(tmp_path / "test.txt", toy_sentences(40, seed=5))
    result = evaluate_model(ner_model.output, data, output_dir=tmp_path / "eval")
    assert result.model["f1"] >= 0.9 and result.baseline["f1"] >= 0.9
    assert "baseline CRF" in result.text and "entity types (rows gold, columns predicted)" in result.text
    assert set(result.model["per_type"]) == {"PER", "LOC"}


def test_the_server_serves_entities(ner_model, tmp_path):
    from serving_support import inference, management, running_server

    with running_server(tmp_path / "store", auth=False) as server:
        assert management(server).post("/models", params={"url": str(ner_model.output), "model_name": "ner"}
                                       ).status_code == 200
        client = inference(server)
        answer = client.post("/predictions/ner", content="John Smith visited Paris.".encode()).json()
        assert {e["entity"] for e in answer["entities"]} == {"PER", "LOC"}
        kserve = client.post("/v1/models/ner:predict", json={"instances": ["Ahmed Khan visited Lagos ."]}).json()
        assert len(kserve["predictions"]) == 1
        explained = client.post("/explanations/ner", json={"text": "John Smith visited Paris."}).json()
        assert explained["entities"] == answer["entities"] and explained["attention"]["layers"] == 2
        assert client.post("/predictions/ner", json={"tokens": []}).status_code == 400
        assert client.post("/predictions/ner", json={"words": "x"}).status_code == 400


def test_bad_files_get_one_line_naming_file_and_line(tmp_path):
    one_column = tmp_path / "bad.txt"
    one_column.write_text("Angela\tB-PER\nMerkel\n")
    assert_user_error(run_cli(["train", "token-classification", "--train", one_column, "--output", tmp_path / "m",
                               "--model", "bert-tiny"]), f"{one_column}: line 2 has one column")
    train_file = write_conll(tmp_path / "train.txt", toy_sentences(20))
    unseen = tmp_path / "dev.txt"
    unseen.write_text("Acme\tB-ORG\nrocks\tO\n")
    assert_user_error(run_cli(["train", "token-classification", "--train", train_file, "--validation", unseen,
                               "--output", tmp_path / "m", "--model", "bert-tiny"]),
                      f"{unseen}: line 1: tag(s) B-ORG never appear in the training file")
    bad_tag = tmp_path / "tags.txt"
    bad_tag.write_text("Angela\tPERSON\n")
    with pytest.raises(DataError, match="line 1: tag 'PERSON' is not O, B-TYPE"):
        read_tagged(bad_tag)


def test_onnx_and_explanations_give_the_same_entities(ner_model, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(ner_model.output, folder)
    text = "Olga Petrova visited Tokyo with friends ."
    expected = load(folder).predict(text)[0]["entities"]
    for backend in ("onnx", "onnx-int8"):
        got = load(folder, backend=backend).predict(text)[0]["entities"]
        assert [(e["entity"], e["word"]) for e in got] == [(e["entity"], e["word"]) for e in expected]
    explained = load(folder).explain(text)[0]
    assert explained["entities"] == expected and explained["words"][0] == "[CLS]" and explained["attention"]["weights"]


def test_the_builtin_estimator_trains_entities(tmp_path, monkeypatch):
    import tarfile

    from nlpforge.sdk import TokenClassifier

    monkeypatch.setenv("NLPFORGE_TRACKING", "0")
    train_file = write_conll(tmp_path / "train.txt", toy_sentences(60, seed=1))
    est = TokenClassifier(base_model="bert-tiny", jobs_root=str(tmp_path / "jobs"),
                          hyperparameters={"epochs": 1, "max-seq-length": 32, "batch-size": 16, "threads": 1})
    est.fit({"train": str(train_file)}, logs=False, job_name="ner-job")
    with tarfile.open(est.model_data) as tar:
        assert json.load(tar.extractfile("nlpforge.json"))["task"] == "token-classification"
    assert {d["Name"] for d in est.metric_definitions} >= {"validation_f1", "validation_precision"}
