"""The Review page of `nlpforge ui`: the next queued prediction with its probabilities, a label saved by a
button or a digit key (the file training then reads), skip, progress, and the empty and error states."""
import json

import pytest
from conftest import TINY, train_classifier
from ui_support import browser, needs_browser, running_ui, screenshot, ui_client

from nlpforge.serving.capture import DataCapture
from nlpforge.ui import UISettings

TEXTS = ["a dull awful film", "a great superb film", "an awful boring plot", "a wonderful great story",
         "boring awful acting", "superb wonderful acting"]


@pytest.fixture
def capture(tmp_path):
    """Six low-confidence predictions of model "stars" and one confident one, as the server captures them."""
    folder = tmp_path / "capture"
    writer = DataCapture(folder)
    for index, text in enumerate(TEXTS):
        writer.record("stars", "1.0", 100, text, {"label": "pos", "score": 0.5 + index / 100,
                                                  "probabilities": {"neg": 0.5 - index / 100,
                                                                    "pos": 0.5 + index / 100}})
    writer.record("stars", "1.0", 100, "sure of this", {"label": "pos", "score": 0.99,
                                                        "probabilities": {"neg": 0.01, "pos": 0.99}})
    writer.close()
    return folder


def client_of(tmp_path, capture):
    return ui_client(UISettings.of(jobs_root=str(tmp_path), capture=str(capture)))


def labels_of(capture) -> list[dict]:
    path = capture / "stars" / "review" / "labels.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_page_shows_the_next_item_and_a_posted_label_moves_on(tmp_path, capture):
    client = client_of(tmp_path, capture)
    page = client.get("/review").text
    assert 'id="review-text"' in page and TEXTS[0] in page and 'data-reviewed="0" data-pending="6"' in page
    assert 'data-label="neg" data-key="1"' in page and 'data-label="pos" data-key="2"' in page
    assert 'style="width:100px"' in page  # 0.5 of a 200px bar
    capture_id = page.split('data-capture-id="')[1].split('"')[0]
    response = client.post("/review/label", data={"model": "stars", "capture_id": capture_id, "label": "neg"},
                           follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/review?model=stars&offset=0"
    page = client.get(response.headers["location"]).text
    assert TEXTS[1] in page and TEXTS[0] not in page and 'data-reviewed="1" data-pending="5"' in page
    assert "agreement with the model\n0%" in page
    assert [(line["text"], line["label"]) for line in labels_of(capture)] == [(TEXTS[0], "neg")]
    assert TEXTS[2] in client.get("/review?model=stars&offset=1").text  # skipped one


def test_bad_posts_unknown_models_and_an_empty_queue_are_pages_not_failures(tmp_path, capture):
    client = client_of(tmp_path, capture)
    page = client.get("/review").text
    capture_id = page.split('data-capture-id="')[1].split('"')[0]
    bad = client.post("/review/label", data={"model": "stars", "capture_id": capture_id, "label": "maybe"})
    assert bad.status_code == 400 and "not one of the model&#39;s labels: neg, pos" in bad.text
    assert client.post("/review/label", data={"model": "stars", "capture_id": "1.0/nope",
                                              "label": "neg"}).status_code == 400
    assert client.get("/review?model=other").status_code == 404
    assert client.post("/review/label", data={"model": "../x", "capture_id": capture_id,
                                              "label": "neg"}).status_code == 404
    strict = ui_client(UISettings.of(jobs_root=str(tmp_path), capture=str(capture),
                                                 review_threshold=0.1))
    empty = strict.get("/review")
    assert empty.status_code == 200 and "Nothing left to review for stars" in empty.text
    assert "review-threshold" in empty.text and labels_of(capture) == []
    missing = client_of(tmp_path, tmp_path / "none").get("/review")
    assert missing.status_code == 200 and "No data capture to review" in missing.text


@needs_browser
def test_digit_keys_label_in_a_browser_and_training_reads_the_labels(tmp_path, capture):
    with running_ui(UISettings.of(jobs_root=str(tmp_path), capture=str(capture))) as url, browser() as open_page:
        page, problems = open_page(url + "/review")
        assert problems == []
        screenshot(page, "review-item")
        for key in ("1", "2", "s", "ArrowRight"):
            before = page.locator("#review-text").inner_text()
            with page.expect_navigation():
                page.keyboard.press(key)
            assert page.locator("#review-text").inner_text() != before
        # "s" and "→" left TEXTS[2] and TEXTS[3] queued; the page shows TEXTS[4] now
        for key in ("1", "2", "1", "2"):
            with page.expect_navigation():
                page.keyboard.press(key)
        screenshot(page, "review-empty")
        progress = page.locator("#review-progress")
        assert (progress.get_attribute("data-reviewed"), progress.get_attribute("data-pending")) == ("6", "0")
    saved = labels_of(capture)
    assert [(line["text"], line["label"]) for line in saved] == [
        (TEXTS[0], "neg"), (TEXTS[1], "pos"), (TEXTS[4], "neg"), (TEXTS[5], "pos"), (TEXTS[2], "neg"),
        (TEXTS[3], "pos")]
    labels_file = capture / "stars" / "review" / "labels.jsonl"
    result = train_classifier(train=str(labels_file), validation=str(labels_file), output=str(tmp_path / "model"),
                              **{**TINY, "epochs": 1})
    assert json.loads((result.output / "labels.json").read_text())["labels"] == ["neg", "pos"]
