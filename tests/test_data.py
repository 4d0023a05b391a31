"""Reading, validating, splitting and reporting labelled data; every bad input gets its error."""
import gzip
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from conftest import toy_rows, write_csv
from nlpforge.data import load_labelled, read_table
from nlpforge.data.labelled import stratified_split
from nlpforge.data.readers import decode_counted
from nlpforge.data.report import render_data_report
from nlpforge.errors import DataError
from nlpforge.data.clean import clean_html


def test_reads_every_format_with_the_same_content(tmp_path):
    rows = toy_rows(10)
    frame = pd.DataFrame(rows)
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_csv(tmp_path / "a.tsv", index=False, sep="\t")
    frame.to_json(tmp_path / "a.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "a.parquet")
    with gzip.open(tmp_path / "a.csv.gz", "wt") as handle:
        frame.to_csv(handle, index=False)
    for name in ("a.csv", "a.tsv", "a.jsonl", "a.parquet", "a.csv.gz"):
        table = read_table(tmp_path / name, columns=["text", "label"])
        assert table.frame["text"].tolist() == frame["text"].tolist(), name


def test_int_labels_keep_numeric_order_and_strings_stay_strings(tmp_path):
    rows = [{"text": f"row {i}", "label": str(label)} for i, label in enumerate([10, 2, 1, 2, 10, 1])]
    data = load_labelled(write_csv(tmp_path / "t.csv", rows), text_columns="text", label_column="label",
                         validation_fraction=0.34)
    assert data.labels == [1, 2, 10]
    rows = [{"text": f"row {i}", "label": label} for i, label in enumerate(["b", "a", "b", "a"])]
    data = load_labelled(write_csv(tmp_path / "s.csv", rows), text_columns="text", label_column="label",
                         validation_fraction=0.5)
    assert data.labels == ["a", "b"]


def test_split_is_stratified_and_seeded(tmp_path):
    label_ids = [0] * 80 + [1] * 20
    train, validation = stratified_split(2, label_ids, 0.1, seed=3)
    assert sorted(train + validation) == list(range(100))
    assert sum(label_ids[i] for i in validation) == 2 and len(validation) == 10
    assert stratified_split(2, label_ids, 0.1, seed=3) == (train, validation)
    assert stratified_split(2, label_ids, 0.1, seed=4) != (train, validation)


def test_empty_and_duplicate_rows_are_dropped_and_counted(tmp_path):
    rows = toy_rows(20) + [{"text": "", "label": "pos"}, {"text": "   ", "label": "neg"}]
    rows += [dict(rows[0]), dict(rows[1])]
    data = load_labelled(write_csv(tmp_path / "t.csv", rows), text_columns="text", label_column="label")
    report = data.files[0]
    assert (report.rows, report.empty_dropped, report.duplicates_dropped) == (24, 2, 2)
    assert len(data.train) + len(data.validation) == 20
    text = render_data_report(data, [5, 6, 7, 40], max_seq_length=32)
    assert "dropped 2 empty, 2 duplicate" in text and "p50" in text and "25.0% longer" in text


def test_html_is_cleaned():
    assert clean_html("Great&#34;s film<br /><br />Loved it &amp; more") == 'Great"s film Loved it & more'
    assert clean_html("<b>bold</b> &lt;tag&gt;") == "bold <tag>"


def test_non_utf8_bytes_are_replaced_and_counted(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\xe9 good,pos\nna\xefve bad,neg\nok good,pos\nno bad,neg\n".encode("latin-1"))
    table = read_table(path)
    assert table.replaced_bytes == 2
    assert table.frame["text"][0] == "caf\ufffd good"
    data = load_labelled(path, text_columns="text", label_column="label", validation_fraction=0.5)
    assert data.files[0].replaced_bytes == 2
    assert "2 non-UTF-8 bytes replaced" in render_data_report(data, [3, 3], 8)


@pytest.mark.parametrize("case, message", [
    ("missing_file", "no such file"),
    ("missing_column", "no column 'body'; the columns are: text, label"),
    ("empty_file", "the file is empty"),
    ("header_only", "header but no data rows"),
    ("empty_text_column", "text column 'text' is empty in every row"),
    ("unknown_validation_label", "label 'maybe' never appears in the training file"),
    ("bad_jsonl", "row 2 is not valid JSON"),
    ("unknown_format", "unknown file type"),
])
def test_bad_input_names_the_file_and_the_problem(tmp_path, case, message):
    train = write_csv(tmp_path / "train.csv", toy_rows(20))
    validation = None
    text_column = "text"
    if case == "missing_file":
        train = tmp_path / "nope.csv"
    elif case == "missing_column":
        text_column = "body"
    elif case == "empty_file":
        train = tmp_path / "empty.csv"
        train.write_bytes(b"")
    elif case == "header_only":
        train = tmp_path / "header.csv"
        train.write_text("text,label\n")
    elif case == "empty_text_column":
        train = write_csv(tmp_path / "blank.csv", [{"text": "", "label": "pos"}, {"text": " ", "label": "neg"}])
    elif case == "unknown_validation_label":
        validation = write_csv(tmp_path / "val.csv", toy_rows(4) + [{"text": "hmm", "label": "maybe"}])
    elif case == "bad_jsonl":
        train = tmp_path / "bad.jsonl"
        train.write_text(json.dumps({"text": "a", "label": "pos"}) + "\n{not json\n")
    elif case == "unknown_format":
        train = tmp_path / "data.xlsx"
        train.write_text("x")
    with pytest.raises(DataError) as error:
        load_labelled(train, validation, text_columns=text_column, label_column="label")
    assert message in str(error.value)
    named = validation if case == "unknown_validation_label" else train
    assert str(named) in str(error.value)
    if case == "unknown_validation_label":
        assert "data row 5" in str(error.value)


def test_single_label_is_an_error(tmp_path):
    rows = [{"text": f"t{i}", "label": "pos"} for i in range(5)]
    with pytest.raises(DataError, match="single label"):
        load_labelled(write_csv(tmp_path / "one.csv", rows), text_columns="text", label_column="label")


@pytest.mark.shared_data
def test_real_amazon_file_loads_with_its_quirks(amazon):
    data = load_labelled(amazon / "digital_video_train.csv", amazon / "digital_video_validation.csv",
                         text_columns="review_body", label_column="star_rating")
    assert data.labels == [1, 2, 3, 4, 5]
    assert len(data.train) > 6000 and len(data.validation) > 300
    assert not any("<br" in t or "&#34;" in t for t in data.train.texts)
    assert max(len(t.split()) for t in data.train.texts) > 2000


def test_stratified_sample_takes_exactly_the_rows_asked_for():
    from nlpforge.data.labelled import stratified_sample

    label_ids = [0] * 1602 + [1] * 625 + [2] * 844 + [3] * 1020 + [4] * 1986
    for rows in (7, 160, 3000):
        chosen = stratified_sample(label_ids, rows, seed=0)
        assert len(chosen) == len(set(chosen)) == rows
    shares = np.bincount([label_ids[i] for i in stratified_sample(label_ids, 3000, seed=0)]) / 3000
    assert np.allclose(shares, np.bincount(label_ids) / len(label_ids), atol=0.002)


def test_jsonl_rows_end_at_newlines_only_not_at_separators_a_text_holds(tmp_path):
    from nlpforge.data.readers import read_table, text_lines

    path = tmp_path / "rows.jsonl"
    rows = [{"text": "first\u2028half", "label": "a"}, {"text": "next\u0085one\u2029", "label": "b"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows), encoding="utf-8")
    assert read_table(path).frame.to_dict("records") == rows
    assert text_lines("a\r\nb\n") == ["a", "b"] and text_lines("a\rb\r") == ["a", "b"] and text_lines("") == []


def test_replaced_bytes_are_counted_per_call_when_threads_decode_at_once():
    # one codec error handler served every call, so a thread's replacements counted in another's result
    def decode(bad: int) -> tuple[int, int]:
        raw = (b"ok \xff" * bad + b"fine ") * 2000
        return bad * 2000, decode_counted(raw)[1]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(decode, [1, 2, 3, 4, 5, 6, 7, 8] * 10))
    assert all(expected == counted for expected, counted in results), results[:8]
