"""The review queue on damaged or unexpected capture and labels files: a clear error naming the file, or the
damaged part left out, and never a labels file or capture log rewritten, truncated or changed byte by byte."""
import json
import os

import pytest
from conftest import assert_user_error, run_cli

from nlpforge.errors import ConfigError, DataError, InputError
from nlpforge.monitoring.review import ReviewQueue


def record(text, label="pos", score=0.5, probabilities=None, request_id=None, version="1.0") -> dict:
    if probabilities is None:
        probabilities = {"neg": 1 - score, "pos": score} if label in ("neg", "pos") else {}
    record.count = getattr(record, "count", 0) + 1  # in the order written
    return {"timestamp": f"2026-11-29T10:{record.count // 60:02d}:{record.count % 60:02d}.000Z", "model": "stars",
            "version": version,
            "input": text, "prediction": {"label": label, "score": score, "probabilities": probabilities},
            "shadow": False, "request_id": request_id}


def write_capture(folder, records, tail: bytes = b"") -> "os.PathLike":
    """A capture log written as the server writes one (json.dumps with ensure_ascii=False, one per line; a lone
    surrogate as its JSON escape)."""
    path = folder / "stars" / "1.0" / "capture.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")
                              for r in records) + tail)
    return path


@pytest.fixture
def capture(tmp_path):
    write_capture(tmp_path / "capture", [record("first low"), record("second low", score=0.4)])
    return tmp_path / "capture"


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])  # json.dumps writes them raw
def test_a_text_holding_a_line_separator_character_is_one_item(tmp_path, separator):
    folder = tmp_path / "capture"
    write_capture(folder, [record(f"first{separator}second"), record("other")])
    queue = ReviewQueue(folder, "stars")
    assert [item.text for item in queue.pending()] == [f"first{separator}second", "other"]
    first = queue.pending()[0]
    queue.save(first.capture_id, "neg")
    queue.save(queue.pending()[0].capture_id, "pos")
    queue.save(first.capture_id, "pos")  # relabelled: the file is rewritten, and still read whole
    assert {entry["text"]: entry["label"] for entry in queue.reviewed().values()} == \
        {f"first{separator}second": "pos", "other": "pos"}


def test_a_capture_line_cut_short_at_the_end_of_a_log_is_left_out(tmp_path):
    folder = tmp_path / "capture"
    write_capture(folder, [record("whole")], tail=b'{"timestamp": "2026-11-29T10:00:09.000Z", "input": "cu')
    assert [item.text for item in ReviewQueue(folder, "stars").pending()] == ["whole"]


def test_relabelling_keeps_other_lines_byte_for_byte(capture):
    queue = ReviewQueue(capture, "stars")
    first, second = queue.pending()
    queue.save(first.capture_id, "neg")
    queue.save(second.capture_id, "neg")
    content = queue.labels_file.read_bytes().replace("first low".encode(), "pl\xe9in".encode("latin-1"))
    queue.labels_file.write_bytes(content)  # an earlier line holds a byte that is not UTF-8
    queue.save(second.capture_id, "pos")
    lines = queue.labels_file.read_bytes().splitlines()
    assert lines[0] == content.splitlines()[0] and b"pl\xe9in" in lines[0]
    assert json.loads(lines[1])["label"] == "pos" and len(lines) == 2


def test_a_text_with_a_lone_surrogate_is_read_as_a_replacement_character(tmp_path):
    folder = tmp_path / "capture"
    write_capture(folder, [record("broken \ud800 text")])  # the JSON escape a request may hold
    queue = ReviewQueue(folder, "stars")
    item = queue.next()
    assert item.text == "broken \ufffd text"
    queue.save(item.capture_id, "neg")
    queue.save(item.capture_id, "pos")
    for name in ("out.jsonl", "out.csv"):
        assert queue.export(tmp_path / name) == 1
    assert json.loads((tmp_path / "out.jsonl").read_text())["text"] == "broken \ufffd text"


def test_a_labels_line_holding_a_lone_surrogate_is_exported_as_its_escape(capture, tmp_path):
    queue = ReviewQueue(capture, "stars")
    queue.save(queue.next().capture_id, "neg")
    line = json.loads(queue.labels_file.read_text())
    queue.labels_file.write_text(json.dumps({**line, "text": "odd \ud800"}) + "\n")  # written by hand
    for name in ("out.jsonl", "out.csv"):
        assert queue.export(tmp_path / name) == 1
    assert json.loads((tmp_path / "out.jsonl").read_text())["text"] == "odd \ud800"
    assert "odd \\ud800" in (tmp_path / "out.csv").read_text()


@pytest.mark.parametrize("probabilities", [["neg", "pos"], {"neg": "0.5", "pos": 0.5}, {"neg": float("nan")}, 7])
def test_damaged_probabilities_leave_the_item_with_the_labels_answered(tmp_path, probabilities):
    folder = tmp_path / "capture"
    write_capture(folder, [record("odd", label="neg", score=0.4, probabilities=probabilities),
                           record("fine", score=0.3)])
    queue = ReviewQueue(folder, "stars")
    odd = queue.pending()[0]
    assert odd.text == "odd" and odd.probabilities == {}
    assert set(map(str, queue.labels_of(odd))) == {"neg", "pos"}
    queue.save(odd.capture_id, "pos")


def test_predictions_captured_without_probabilities_can_be_labelled(tmp_path):
    folder = tmp_path / "capture"
    write_capture(folder, [record("one", label=4, score=0.2, probabilities={}),
                           record("two", label=2, score=0.3, probabilities={})])
    queue = ReviewQueue(folder, "stars")
    assert queue.labels == [4, 2]
    queue.save(queue.next().capture_id, 2)
    assert next(iter(queue.reviewed().values()))["label"] == 2


def test_logs_that_are_not_files_are_skipped_or_named(tmp_path):
    folder = tmp_path / "capture"
    path = write_capture(folder, [record("kept")])
    (path.parent / "capture.jsonl.1").mkdir()                       # a folder named like a log
    (path.parent / "capture.jsonl.2").symlink_to(tmp_path / "gone")  # a link to nothing
    os.mkfifo(path.parent / "capture.jsonl.3")                      # would block a reader forever
    assert [item.text for item in ReviewQueue(folder, "stars").pending()] == ["kept"]


@pytest.mark.parametrize("make, message", [
    (lambda path: path.mkdir(), "is not a file"),
    (lambda path: os.mkfifo(path), "is not a file"),
    (lambda path: path.symlink_to(path.parent / "gone.jsonl"), "a link to nothing"),
])
def test_a_labels_file_that_is_not_a_file_is_named_and_left(capture, make, message):
    queue = ReviewQueue(capture, "stars")
    queue.labels_file.parent.mkdir(parents=True, exist_ok=True)
    make(queue.labels_file)
    with pytest.raises(DataError, match=message):
        queue.progress()
    first = ReviewQueue(capture, "stars", labels_file=capture.parent / "x.jsonl").next()
    with pytest.raises((DataError, ConfigError), match=f"{message}|is a folder"):
        queue.save(first.capture_id, "pos")
    assert queue.labels_file.is_dir() or queue.labels_file.is_symlink() or queue.labels_file.is_fifo()


def test_a_lock_that_is_a_folder_is_named(capture):
    queue = ReviewQueue(capture, "stars")
    queue.labels_file.parent.mkdir(parents=True)
    (queue.labels_file.parent / "labels.jsonl.lock").mkdir()
    with pytest.raises(DataError, match="labels.jsonl.lock: cannot open the labels file's lock"):
        queue.save(queue.next().capture_id, "pos")


def test_a_label_line_without_a_label_is_skipped_not_a_crash(capture):
    queue = ReviewQueue(capture, "stars")
    first = queue.next()
    queue.labels_file.parent.mkdir(parents=True)
    queue.labels_file.write_text(json.dumps({"capture_id": first.capture_id}) + "\n")
    assert queue.progress()["reviewed"] == 0
    with pytest.raises(DataError, match="line 1 is not a label line"):
        queue.save(first.capture_id, "pos")
    assert queue.labels_file.read_text() == json.dumps({"capture_id": first.capture_id}) + "\n"


@pytest.mark.parametrize("version", ["..", "../..", ".", "review", "1.0/../1.0", ""])
def test_a_version_that_is_not_a_version_folder_is_refused(capture, version):
    with pytest.raises(InputError, match="give a served version's name"):
        ReviewQueue(capture, "stars", version=version)


def test_export_never_overwrites_a_log_or_a_labels_file(capture, tmp_path):
    queue = ReviewQueue(capture, "stars")
    queue.save(queue.next().capture_id, "pos")
    log = capture / "stars" / "1.0" / "capture.jsonl"
    before = log.read_bytes()
    (tmp_path / "link.jsonl").symlink_to(log)
    other = capture / "reviews" / "review" / "labels.jsonl"  # another model's labels
    other.parent.mkdir(parents=True)
    other.write_text('{"capture_id": "1.0/x", "label": 1}\n')
    empty = ReviewQueue(capture, "stars", labels_file=tmp_path / "empty.jsonl")
    for target, source in ((tmp_path / "link.jsonl", queue), (other, queue), (queue.labels_file, empty)):
        kept = target.read_bytes()
        with pytest.raises(ConfigError, match="which the export must not overwrite"):
            source.export(target)
        assert target.read_bytes() == kept
    assert log.read_bytes() == before


def test_an_export_that_fails_leaves_the_earlier_export_whole(capture, tmp_path, monkeypatch):
    queue = ReviewQueue(capture, "stars")
    queue.save(queue.next().capture_id, "pos")
    out = tmp_path / "labels.csv"
    assert queue.export(out) == 1
    earlier = out.read_bytes()

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("csv.DictWriter.writerows", broken)
    with pytest.raises(OSError):
        queue.export(out)
    assert out.read_bytes() == earlier and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_the_cli_names_a_version_path_in_one_line(capture):
    assert_user_error(run_cli(["review", "status", "--capture", capture, "--model", "stars", "--version", "../.."]),
                      "give a served version's name")


def test_export_writes_through_a_link_and_keeps_the_files_permissions(capture, tmp_path):
    queue = ReviewQueue(capture, "stars")
    queue.save(queue.next().capture_id, "pos")
    target = tmp_path / "exports" / "labels.jsonl"
    target.parent.mkdir()
    target.write_text("old\n")
    target.chmod(0o640)
    (tmp_path / "latest.jsonl").symlink_to(target)
    assert queue.export(tmp_path / "latest.jsonl") == 1
    assert (tmp_path / "latest.jsonl").is_symlink() and json.loads(target.read_text())["label"] == "pos"
    assert target.stat().st_mode & 0o777 == 0o640


def test_a_log_rotated_away_while_it_is_read_is_skipped(capture, monkeypatch):
    from pathlib import Path

    read_bytes = Path.read_bytes

    def rotated(path):
        if path.name == "capture.jsonl":
            raise FileNotFoundError(2, "No such file or directory")
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", rotated)
    assert ReviewQueue(capture, "stars").pending() == []
