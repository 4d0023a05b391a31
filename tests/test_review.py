"""The human-review queue: what is queued (low confidence, a disagreeing shadow, from rotated files too),
stable capture ids, labels saved durably and read by training, progress, and each bad input's error."""
import json
import logging
import shutil

import pytest
from conftest import TINY, assert_user_error, run_cli, train_classifier
from serving_support import inference, management, running_server

from nlpforge.errors import NlpforgeError
from nlpforge.monitoring.review import ReviewQueue
from nlpforge.serving.capture import DataCapture


def answer(label, score, labels=("neg", "pos")):
    """A classifier's answer as the server captures it."""
    rest = (1 - score) / (len(labels) - 1)
    return {"label": label, "score": score, "truncated": False,
            "probabilities": {str(name): score if name == label else rest for name in labels}}


def shadow_answer(label, served_label, labels=("neg", "pos")):
    return {**answer(label, 0.9, labels), "served_version": "1.0", "served_label": served_label}


@pytest.fixture
def capture(tmp_path):
    """A capture folder written by DataCapture, small files so that it rotates: stars/1.0 serves, stars/2.0
    is its shadow."""
    folder = tmp_path / "capture"
    writer = DataCapture(folder, max_bytes=700, backups=9)
    served = [("awful dull film", answer("neg", 0.55), None),                 # queued: low confidence
              ("a great film", answer("pos", 0.97), None),                    # confident: not queued
              ("fine i guess", answer("pos", 0.51), None),                    # queued
              (("a premise", "a hypothesis"), answer("neg", 0.52), None),     # a pair, queued
              ("superb acting", answer("pos", 0.95), "r1"),                   # the shadow disagrees
              ("one", answer("pos", 0.9), "r2"), ("two", answer("pos", 0.9), "r2")]  # one request, two inputs
    for text, prediction, request_id in served:
        writer.record("stars", "1.0", 100, text, prediction, request_id=request_id)
    for text, prediction, request_id in [("superb acting", shadow_answer("neg", "pos"), "r1"),
                                         ("one", shadow_answer("pos", "pos"), "r2"),
                                         ("two", shadow_answer("neg", "pos"), "r2"),
                                         ("not sampled", shadow_answer("neg", "pos"), "r3")]:
        writer.record("stars", "2.0", 100, text, prediction, shadow=True, request_id=request_id)
    writer.close()
    return folder


def test_low_confidence_predictions_are_queued_from_every_rotated_file_oldest_first(capture):
    assert (capture / "stars" / "1.0" / "capture.jsonl.2").exists()
    queue = ReviewQueue(capture, "stars", threshold=0.6)
    low = [item for item in queue.pending() if item.reason == "low confidence"]
    assert [item.text for item in low] == ["awful dull film", "fine i guess", "a premise"]
    assert low[0].probabilities == {"neg": 0.55, "pos": pytest.approx(0.45)} and low[0].version == "1.0"
    assert [item.text for item in ReviewQueue(capture, "stars", threshold=0.53).pending()
            if item.reason == "low confidence"] == ["fine i guess", "a premise"]


def test_a_pair_keeps_both_texts(capture):
    pair = next(item for item in ReviewQueue(capture, "stars").pending() if item.text == "a premise")
    assert pair.text_pair == "a hypothesis"
    labels_file = ReviewQueue(capture, "stars").labels_file
    ReviewQueue(capture, "stars").save(pair.capture_id, "pos")
    assert json.loads(labels_file.read_text())["text_pair"] == "a hypothesis"


def test_shadow_disagreements_are_matched_by_request_and_input(capture):
    disputed = {item.text: item for item in ReviewQueue(capture, "stars").pending()
                if item.reason == "shadow disagrees"}
    assert sorted(disputed) == ["not sampled", "superb acting", "two"]  # "one": the shadow agreed
    acting = disputed["superb acting"]
    assert (acting.label, acting.score, acting.shadow_label, acting.shadow_version) == ("pos", 0.95, "neg", "2.0")
    lonely = disputed["not sampled"]  # the served answer was not captured, its shadow's was
    assert (lonely.label, lonely.score, lonely.version, lonely.probabilities) == ("pos", None, "1.0", {})
    assert ReviewQueue(capture, "stars").labels_of(lonely) == ["neg", "pos"]
    assert ReviewQueue(capture, "stars", version="2.0").pending() == []
    assert len(ReviewQueue(capture, "stars", version="1.0").pending()) == 6


def test_capture_ids_survive_re_reading_and_rotation(capture):
    before = {item.text: item.capture_id for item in ReviewQueue(capture, "stars").pending()}
    assert len(set(before.values())) == 6 and all(key.startswith("1.0/") for key in before.values())
    writer = DataCapture(capture, max_bytes=700, backups=9)
    for index in range(6):  # more traffic rotates every earlier line into an older file
        writer.record("stars", "1.0", 100, f"later {index}", answer("pos", 0.99))
    writer.close()
    assert (capture / "stars" / "1.0" / "capture.jsonl.4").exists()
    assert {item.text: item.capture_id for item in ReviewQueue(capture, "stars").pending()} == before


def test_labels_are_saved_superseded_and_counted(capture):
    queue = ReviewQueue(capture, "stars")
    assert queue.progress() == {"reviewed": 0, "pending": 6, "total": 6, "agreement": None}
    first, second = queue.pending()[:2]
    queue.save(first.capture_id, "neg")           # agrees with the model
    queue.save(second.capture_id, "neg")          # disagrees
    assert queue.progress() == {"reviewed": 2, "pending": 4, "total": 6, "agreement": 0.5}
    queue.save(second.capture_id, "pos")          # changes their mind: the later label counts
    assert queue.progress() == {"reviewed": 2, "pending": 4, "total": 6, "agreement": 1.0}
    assert [item.capture_id for item in queue.pending()][:1] != [first.capture_id]
    assert queue.next().text == "a premise"
    lines = [json.loads(line) for line in queue.labels_file.read_text().splitlines()]
    assert [(line["capture_id"], line["label"]) for line in lines] == [(first.capture_id, "neg"),
                                                                       (second.capture_id, "pos")]
    assert lines[0]["model_label"] == "neg" and lines[0]["model_score"] == 0.55 and lines[0]["text"] == first.text


def test_a_line_cut_short_by_a_crash_is_skipped_with_a_warning_and_dropped_at_the_next_save(capture, caplog):
    queue = ReviewQueue(capture, "stars")
    first, second = queue.pending()[:2]
    queue.save(first.capture_id, "neg")
    with open(queue.labels_file, "a") as out:
        out.write('{"text": "half a li')
    with caplog.at_level(logging.WARNING):
        assert queue.progress()["reviewed"] == 1
    assert "cut short by a crash" in caplog.text
    queue.save(second.capture_id, "pos")
    lines = queue.labels_file.read_text().splitlines()
    assert [json.loads(line)["capture_id"] for line in lines] == [first.capture_id, second.capture_id]


def test_a_file_that_is_not_a_labels_file_is_never_written(capture, tmp_path):
    data = tmp_path / "train.csv"
    data.write_text("text,label\na fine film,pos\n")
    with pytest.raises(NlpforgeError, match="name a .jsonl file"):
        ReviewQueue(capture, "stars", labels_file=data)
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"note": "mine"}\n{"note": "also mine"}\n')
    queue = ReviewQueue(capture, "stars", labels_file=notes)
    with pytest.raises(NlpforgeError, match="line 1 is not a label line.*left as it is"):
        queue.save(queue.next().capture_id, "pos")
    assert notes.read_text() == '{"note": "mine"}\n{"note": "also mine"}\n'
    notes.write_text('{"note": "mine"}\n')
    with pytest.raises(NlpforgeError, match="line 1 is not a label line"):
        queue.save(queue.next().capture_id, "pos")
    assert notes.read_text() == '{"note": "mine"}\n'


def test_bad_labels_ids_models_folders_and_thresholds_are_refused(capture, tmp_path):
    queue = ReviewQueue(capture, "stars")
    with pytest.raises(NlpforgeError, match="'maybe' is not one of the model's labels: neg, pos"):
        queue.save(queue.next().capture_id, "maybe")
    with pytest.raises(NlpforgeError, match="no queued prediction of model 'stars' has capture id '1.0/nope'"):
        queue.save("1.0/nope", "pos")
    with pytest.raises(NlpforgeError, match="no capture of model 'other'.*stars"):
        ReviewQueue(capture, "other")
    with pytest.raises(NlpforgeError, match="give a served model's name"):
        ReviewQueue(capture / "stars" / "1.0", "../../capture")
    with pytest.raises(NlpforgeError, match="no such capture folder"):
        ReviewQueue(tmp_path / "missing", "stars")
    for threshold in (1.5, -0.1):
        with pytest.raises(NlpforgeError, match="threshold must be between 0 and 1"):
            ReviewQueue(capture, "stars", threshold=threshold)
    assert not queue.labels_file.exists()


def test_star_ratings_stay_ints_and_training_reads_the_labels_file_and_its_export(tmp_path):
    folder = tmp_path / "capture"
    writer = DataCapture(folder)
    stars = (1, 2, 3, 4, 5)
    words = {1: "awful terrible boring", 5: "great wonderful superb"}
    for index in range(12):
        star = 1 if index % 2 else 5
        writer.record("stars", "1.0", 100, f"{words[star]} film number {index}", answer(3, 0.3, stars))
    writer.close()
    queue = ReviewQueue(folder, "stars")
    assert queue.labels == [1, 2, 3, 4, 5]
    for item in queue.pending():
        queue.save(item.capture_id, "1" if "awful" in item.text else "5")
    saved = [json.loads(line) for line in queue.labels_file.read_text().splitlines()]
    assert {line["label"] for line in saved} == {1, 5} and all(line["model_label"] == 3 for line in saved)
    assert queue.progress() == {"reviewed": 12, "pending": 0, "total": 12, "agreement": 0.0}
    exported = tmp_path / "labels.csv"
    assert queue.export(exported) == 12
    for path in (queue.labels_file, exported):
        result = train_classifier(train=str(path), validation=str(path), text_column=["text"], label_column="label",
                                  output=str(tmp_path / f"model-{path.suffix[1:]}"), **{**TINY, "epochs": 1})
        assert json.loads((result.output / "labels.json").read_text())["labels"] == [1, 5]
        files = json.loads((result.output / "nlpforge.json").read_text())["data_files"]
        assert [f["rows"] for f in files] == [12, 12]


def test_cli_walks_the_queue(capture, tmp_path):
    common = ["--capture", str(capture), "--model", "stars"]
    shown = run_cli(["review", "next", *common])
    item = json.loads(shown.stdout)
    assert item["text"] == "awful dull film" and item["choices"] == ["neg", "pos"]
    saved = run_cli(["review", "label", item["capture_id"], "pos", *common])
    assert saved.returncode == 0 and "saved label 'pos'" in saved.stdout, saved.stderr
    assert json.loads(run_cli(["review", "status", *common]).stdout) == {"reviewed": 1, "pending": 5, "total": 6,
                                                                          "agreement": 0.0}
    output = tmp_path / "out" / "labels.csv"
    assert run_cli(["review", "export", *common, "--output", str(output)]).returncode == 0
    assert output.read_text().splitlines()[1].startswith("awful dull film,,pos," + item["capture_id"])
    empty = run_cli(["review", "next", *common, "--threshold", "0", "--version", "2.0"])
    assert empty.returncode == 0 and "nothing to review" in empty.stdout


@pytest.mark.parametrize("args, message", [
    (["status", "--capture", "{tmp}/missing", "--model", "stars"], "no such capture folder"),
    (["status", "--capture", "{capture}", "--model", "other"], "no capture of model 'other'"),
    (["status", "--capture", "{capture}", "--model", "stars", "--threshold", "1.5"], "threshold must be between 0"),
    (["status", "--capture", "{capture}", "--model", "stars", "--version", "9.9"],
     "no capture of model 'stars' version '9.9'"),
    (["label", "1.0/nope", "pos", "--capture", "{capture}", "--model", "stars"], "has capture id '1.0/nope'"),
    (["label", "{first}", "meh", "--capture", "{capture}", "--model", "stars"], "not one of the model's labels"),
    (["export", "--capture", "{capture}", "--model", "stars", "--output", "{tmp}/labels.txt"], ".csv or .jsonl"),
    (["export", "--capture", "{capture}", "--model", "stars", "--output", "{capture}/stars/1.0/capture.jsonl/x.csv"],
     "inside the capture folder"),
    (["label", "{first}", "pos", "--capture", "{capture}", "--model", "stars", "--labels-file",
      "{capture}/stars/1.0/capture.jsonl/labels.jsonl"], "no folder can be made"),
])
def test_cli_names_each_bad_input_in_one_line(capture, tmp_path, args, message):
    first = ReviewQueue(capture, "stars").next().capture_id
    args = [arg.format(tmp=tmp_path, capture=capture, first=first) for arg in args]
    assert_user_error(run_cli(["review", *args]), message)


def test_a_served_model_and_its_shadow_fill_the_queue(tiny_model, tmp_path):
    """A real server with capture on, and a shadow whose labels are swapped so that it always disagrees; both
    read text pairs, so that the queue shows both texts."""
    served, contrary = tmp_path / "served", tmp_path / "contrary"
    info = json.loads((tiny_model.output / "labels.json").read_text())
    for folder, labels in ((served, info["labels"]), (contrary, info["labels"][::-1])):
        shutil.copytree(tiny_model.output, folder)
        (folder / "labels.json").write_text(json.dumps({**info, "labels": labels,
                                                        "text_columns": ["premise", "hypothesis"]}))
    capture = tmp_path / "capture"
    with running_server(tmp_path / "store", auth=False, capture_dir=str(capture)) as server:
        client = management(server)
        for version, folder, percent in (("1.0", served, 100), ("2.0", contrary, 0)):
            response = client.post("/models", params={"url": str(folder), "model_name": "stars",
                                                      "model_version": version, "capture_percent": percent})
            assert response.status_code == 200, response.text
        client.put("/models/stars/1.0/set-default")
        assert client.put("/models/stars/traffic", json={"shadow": "2.0"}).status_code == 200
        with inference(server) as http:
            assert http.post("/predictions/stars", json=[{"text": "a great film", "text_pair": "a"},
                                                         {"text": "an awful film", "text_pair": "b"}]).status_code == 200
            assert http.post("/predictions/stars", json={"text": "a premise", "text_pair": "its hypothesis"},
                             headers={"X-Request-Id": "pair-1"}).status_code == 200
        shadow_file = capture / "stars" / "2.0" / "capture.jsonl"
        for _ in range(200):  # the shadow answers after the client has its answer
            if shadow_file.exists() and len(shadow_file.read_text().splitlines()) == 3:
                break
            __import__("time").sleep(0.05)
    queue = ReviewQueue(capture, "stars", threshold=0.0)
    items = queue.pending()
    assert sorted(item.text for item in items) == ["a great film", "a premise", "an awful film"]
    assert {item.reason for item in items} == {"shadow disagrees"}
    assert all(item.version == "1.0" and item.shadow_version == "2.0" and item.score > 0 for item in items)
    assert all(item.shadow_label != item.label for item in items)
    pair = next(item for item in items if item.text == "a premise")
    assert pair.text_pair == "its hypothesis" and queue.labels_of(pair) == ["neg", "pos"]
    queue.save(pair.capture_id, pair.label)
    assert queue.progress() == {"reviewed": 1, "pending": 2, "total": 3, "agreement": 1.0}
