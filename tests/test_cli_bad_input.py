"""Bad command-line input, as a table: each row is the arguments, the files to create first, and the words the
one-line error must hold. Every row must exit non-zero with no traceback and a message of one line, found
before any training starts. A new case is a new row.
"""
import csv
import gzip
import io
import json
import random
from dataclasses import dataclass, field

import pandas as pd
import pytest

from conftest import toy_rows
from nlpforge.cli import main

MODEL = "<the tiny_model fixture's folder>"
TRAIN = ["train", "text-classification", "--model", "bert-tiny", "--max-steps", "1", "--no-progress",
         "--output", "model-out"]


def csv_text(rows: list[dict], delimiter: str = ",") -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), delimiter=delimiter, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    out = io.BytesIO()
    frame.to_parquet(out)
    return out.getvalue()


TOY = csv_text(toy_rows(40))
GOOD = {"train.csv": TOY}
TRUNCATED_GZ = gzip.compress(TOY.encode())[:200]
DEEP_JSONL = '{"text": "a fine film", "label": "pos"}\n{"text": ' + "[" * 100_000 + "]" * 100_000 + ', "label": "neg"}\n'
BINARY = random.Random(0).randbytes(20_000)
FLOAT_LABELS = parquet_bytes(pd.DataFrame({"text": [f"review {i}" for i in range(300)],
                                           "label": [random.Random(i).random() for i in range(300)]}))
ONE_ROW_PER_CLASS = csv_text([{"text": f"review {i}", "label": f"class{i}"} for i in range(20)])


@dataclass
class Case:
    id: str
    args: list
    words: list                                   # each must appear in the one-line error
    files: dict = field(default_factory=dict)     # name -> str or bytes, written in the working folder


CASES = [
    # numeric options
    Case("predict-batch-size-negative", ["predict", "m", "hi", "--batch-size", "-1"], ["--batch-size", "at least 1"]),
    Case("predict-batch-size-zero", ["predict", "m", "hi", "--batch-size", "0"], ["--batch-size", "at least 1"]),
    Case("vectors-similar-topn-zero", ["vectors", "similar", "car", "--topn", "0"], ["--topn", "at least 1"]),
    # binary input read as text
    Case("corpus-binary-csv", ["corpus", "stats", "--corpus", "blob.csv"], ["blob.csv", "binary"], {"blob.csv": BINARY}),
    Case("corpus-binary-txt", ["corpus", "stats", "--corpus", "blob.txt"], ["blob.txt", "binary"], {"blob.txt": BINARY}),
    Case("train-binary-csv", [*TRAIN, "--train", "blob.csv"], ["blob.csv", "binary"], {"blob.csv": BINARY}),
    Case("train-binary-test-file", [*TRAIN, "--train", "train.csv", "--test", "blob.csv"], ["blob.csv", "binary"],
         {**GOOD, "blob.csv": BINARY}),
    Case("train-gzip-named-csv", [*TRAIN, "--train", "z.csv"], ["z.csv", "gzip", ".gz"],
         {"z.csv": gzip.compress(TOY.encode())}),
    # damaged and hostile files
    Case("train-truncated-gz", [*TRAIN, "--train", "t.csv.gz"], ["t.csv.gz", "ended"], {"t.csv.gz": TRUNCATED_GZ}),
    Case("corpus-truncated-gz", ["corpus", "stats", "--corpus", "t.csv.gz"], ["t.csv.gz", "ended"],
         {"t.csv.gz": TRUNCATED_GZ}),
    Case("train-deep-jsonl", [*TRAIN, "--train", "deep.jsonl"], ["deep.jsonl", "row 2", "nested too deeply"],
         {"deep.jsonl": DEEP_JSONL}),
    Case("evaluate-deep-jsonl", ["evaluate", MODEL, "--data", "deep.jsonl", "--no-baseline"],
         ["deep.jsonl", "row 2", "nested too deeply"], {"deep.jsonl": DEEP_JSONL}),
    Case("corpus-deep-jsonl", ["corpus", "stats", "--corpus", "deep.jsonl"], ["deep.jsonl", "row 2", "nested too deeply"],
         {"deep.jsonl": DEEP_JSONL}),
    # labels that cannot train a classifier
    Case("train-float-labels", [*TRAIN, "--train", "f.parquet"], ["f.parquet", "single row", "regression"],
         {"f.parquet": FLOAT_LABELS}),
    Case("train-one-row-per-class", [*TRAIN, "--train", "one.csv"], ["one.csv", "single row", "--validation"],
         {"one.csv": ONE_ROW_PER_CLASS}),
    Case("train-too-many-classes", [*TRAIN, "--train", "one.csv", "--validation", "v.csv"],
         ["one.csv", "too many classes", "20 distinct labels in 20 rows"], {"one.csv": ONE_ROW_PER_CLASS, "v.csv": TOY}),
    # separator and encoding
    Case("train-semicolon", [*TRAIN, "--train", "s.csv"], ["s.csv", "';'-separated", "--delimiter ';'"],
         {"s.csv": csv_text(toy_rows(40), ";")}),
    Case("corpus-semicolon", ["corpus", "stats", "--corpus", "s.csv", "--column", "text"], ["--delimiter ';'"],
         {"s.csv": csv_text(toy_rows(40), ";")}),
    Case("train-utf16", [*TRAIN, "--train", "u.csv"], ["u.csv", "UTF-16", "--encoding utf-16"],
         {"u.csv": TOY.encode("utf-16")}),
    Case("corpus-utf16", ["corpus", "stats", "--corpus", "u.csv"], ["u.csv", "UTF-16", "--encoding utf-16"],
         {"u.csv": TOY.encode("utf-16")}),
    Case("train-unknown-encoding", [*TRAIN, "--train", "train.csv", "--encoding", "klingon"], ["encoding", "klingon"],
         GOOD),
    Case("predict-semicolon", ["predict", MODEL, "--input", "s.csv", "--output", "p.csv"],
         ["s.csv", "--delimiter ';'"], {"s.csv": csv_text(toy_rows(40), ";")}),
    Case("evaluate-utf16", ["evaluate", MODEL, "--data", "u.csv", "--no-baseline"], ["u.csv", "--encoding utf-16"],
         {"u.csv": TOY.encode("utf-16")}),
    Case("predict-unknown-encoding", ["predict", MODEL, "--input", "train.csv", "--output", "p.csv", "--encoding",
                                      "klingon"], ["encoding", "klingon"], GOOD),
    Case("train-long-delimiter", [*TRAIN, "--train", "train.csv", "--delimiter", ";;"], ["delimiter", "one character"],
         GOOD),
    # config files
    Case("config-folder", [*TRAIN, "--train", "train.csv", "--config", "conf"], ["conf", "is a folder"],
         {**GOOD, "conf/.keep": ""}),
    Case("config-not-utf8", [*TRAIN, "--train", "train.csv", "--config", "c.yaml"], ["c.yaml", "not UTF-8"],
         {**GOOD, "c.yaml": b"seed: \xff\xfe\n"}),
    Case("config-seed-text", [*TRAIN, "--train", "train.csv", "--config", "c.yaml"], ["c.yaml", "seed", "integer"],
         {**GOOD, "c.yaml": 'seed: "abc"\n'}),
    Case("config-text-column-number", [*TRAIN, "--train", "train.csv", "--config", "c.yaml"],
         ["c.yaml", "text_column", "string"], {**GOOD, "c.yaml": "text_column: 5\n"}),
    Case("config-warmup-ratio-text", [*TRAIN, "--train", "train.csv", "--config", "c.json"],
         ["c.json", "warmup_ratio", "number"], {**GOOD, "c.json": json.dumps({"warmup_ratio": "x"})}),
    Case("config-toml", [*TRAIN, "--train", "train.csv", "--config", "c.toml"],
         ["c.toml", "not valid JSON", "YAML when the name ends in .yaml"], {**GOOD, "c.toml": "seed = 3\n"}),
    Case("config-train-group-beside-train-flag", [*TRAIN, "--train", "train.csv", "--config", "c.yaml"],
         ["epochs", "at least 1"], {**GOOD, "c.yaml": "train:\n  epochs: 0\n"}),
    Case("train-label-column-as-text", [*TRAIN, "--train", "train.csv", "--text-column", "text", "--text-column",
                                        "label"], ["--text-column label is also the --label-column"], GOOD),
    Case("train-text-column-twice", [*TRAIN, "--train", "train.csv", "--text-column", "text", "--text-column", "text"],
         ["--text-column text is given more than once"], GOOD),
    Case("train-epochs-without-train", ["train", "text-classification", "--model", "bert-tiny", "--epochs", "1",
                                        "--output", "model-out"], ["missing --train"]),
    Case("train-config-train-group-without-train", ["train", "text-classification", "--config", "c.yaml",
                                                    "--output", "model-out"], ["missing --train"],
         {"c.yaml": "train:\n  epochs: 1\n"}),
    Case("train-empty-master-addr", [*TRAIN, "--train", "train.csv", "--nproc", "2", "--master-addr", ""],
         ["master-addr is empty"], GOOD),
    Case("train-nproc-huge", [*TRAIN, "--train", "train.csv", "--nproc", "1000000"], ["nproc", "1024"], GOOD),
    Case("config-deep-json", [*TRAIN, "--train", "train.csv", "--config", "c.json"], ["c.json", "nested too deeply"],
         {**GOOD, "c.json": "[" * 100_000 + "]" * 100_000}),
    Case("ner-only-o-tags", ["train", "token-classification", "--model", "bert-tiny", "--train", "o.conll",
                             "--output", "model-out", "--no-progress"], ["o.conll", "every tag is O"],
         {"o.conll": "hello\tO\nworld\tO\n\nfoo\tO\nbar\tO\n\nbaz\tO\n"}),
    Case("qa-default-stride-over-a-short-window", ["train", "question-answering", "--model", "bert-tiny", "--train",
                                                   "q.json", "--max-seq-length", "64", "--output", "model-out",
                                                   "--no-progress"],
         ["--doc-stride 128 must be below half of --max-seq-length 64", "give e.g. --doc-stride 16"],
         {"q.json": json.dumps({"data": [{"title": "t", "paragraphs": [{"context": "The code is garnet.", "qas": [
             {"id": f"q{i}", "question": "What is the code?", "answers": [{"text": "garnet", "answer_start": 12}]}
             for i in range(4)]}]}]})}),
    Case("evaluate-text-as-label-column", ["evaluate", MODEL, "--data", "train.csv", "--label-column", "text",
                                           "--no-baseline"],
         ["label(s) ", ", ... (40 in all) in 'text' are not among the model's labels", "is 'text' the label column?"],
         GOOD),
    Case("train-pretty-printed-json", [*TRAIN, "--train", "t.json"],
         ["t.json: row 1 is not valid JSON", "a .json file is read as JSON Lines", "jq -c"],
         {"t.json": json.dumps(toy_rows(20), indent=2)}),
    # outputs that cannot be written
    Case("train-output-is-a-file", [*TRAIN, "--train", "train.csv", "--output", "afile"], ["--output", "is a file"],
         {**GOOD, "afile": "x"}),
    Case("train-output-not-empty", [*TRAIN, "--train", "train.csv", "--output", "old"], ["--output", "--overwrite"],
         {**GOOD, "old/config.json": "{}"}),
    Case("train-working-folder-holds-the-input", [*TRAIN, "--train", "reviews.training/t.csv", "--output", "reviews"],
         ["the run's working folder", "reviews.training", "holds the input"], {"reviews.training/t.csv": TOY}),
    Case("train-working-folder-holds-other-files", [*TRAIN, "--train", "train.csv", "--output", "reviews"],
         ["reviews.training holds notes.txt, which no run wrote"], {**GOOD, "reviews.training/notes.txt": "mine"}),
    Case("train-working-folder-is-a-file", [*TRAIN, "--train", "train.csv", "--output", "reviews"],
         ["reviews.training is a file"], {**GOOD, "reviews.training": "mine"}),
    Case("explain-json-not-json", ["explain", "m", "good", "--json", "train.csv"],
         ["--json train.csv", "name a json file"], GOOD),
    Case("predict-output-under-a-file", ["predict", "m", "--input", "train.csv", "--output", "afile/p.csv"],
         ["--output", "afile", "is a file"], {**GOOD, "afile": "x"}),
    Case("predict-output-read-only", ["predict", "m", "--input", "train.csv", "--output", "/proc/nlpforge/p.csv"],
         ["--output", "cannot write in /proc"], GOOD),
    Case("vocab-output-is-a-folder", ["corpus", "vocab", "--corpus", "train.csv", "--output", "out"],
         ["--output", "is a folder"], {**GOOD, "out/.keep": ""}),
    Case("vocab-output-read-only", ["corpus", "vocab", "--corpus", "train.csv", "--output", "/proc/nlpforge/v.tsv"],
         ["--output", "cannot write in /proc"], GOOD),
    Case("vectors-output-is-a-file", ["vectors", "train", "--corpus", "train.csv", "--output", "afile"],
         ["--output", "is a file"], {**GOOD, "afile": "x"}),
    Case("vectors-output-read-only", ["vectors", "train", "--corpus", "train.csv", "--output", "/proc/nlpforge/v"],
         ["--output", "cannot write in /proc"], GOOD),
    Case("tokenizer-output-is-a-file", ["tokenizer", "train", "--corpus", "train.csv", "--output", "afile"],
         ["--output", "is a file"], {**GOOD, "afile": "x"}),
    Case("tokenizer-output-read-only", ["tokenizer", "train", "--corpus", "train.csv", "--output", "/proc/nlpforge/t"],
         ["--output", "cannot write in /proc"], GOOD),
]


def run_in_process(args, capsys) -> tuple[int, str, str]:
    """`nlpforge ARGS` through the CLI's own entry point; an exception that escapes it is a traceback."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gives_one_line(case, tmp_path, monkeypatch, capsys, request):
    for name, content in case.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/.keep"):
            continue
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.chdir(tmp_path)
    args = case.args
    if MODEL in args:
        args = [request.getfixturevalue("tiny_model").output if arg == MODEL else arg for arg in args]
    code, out, err = run_in_process(args, capsys)
    assert code != 0, out
    assert "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1 and len(err) < 600, err
    for word in case.words:
        assert word in err, (word, err)
    assert not (tmp_path / "model-out").exists() and not (tmp_path / "model-out.training").exists()


def labelled_with_gaps(missing) -> pd.DataFrame:
    """60 rows of integer labels 1-5, every seventh label replaced by `missing`."""
    rows = [{"text": f"review {i} {'great' if i % 2 else 'awful'}", "label": i % 5 + 1} for i in range(60)]
    frame = pd.DataFrame(rows).astype({"label": object})
    frame.loc[frame.index % 7 == 0, "label"] = missing
    return frame


@pytest.mark.parametrize("lazy", [False, True], ids=["memory", "lazy"])
@pytest.mark.parametrize("name, write", [
    ("nan.csv", lambda frame, path: path.write_text(frame.fillna("NaN").to_csv(index=False))),
    ("empty.csv", lambda frame, path: frame.to_csv(path, index=False)),
    ("na.tsv", lambda frame, path: path.write_text(frame.fillna("N/A").to_csv(index=False, sep="\t"))),
    ("null.jsonl", lambda frame, path: frame.to_json(path, orient="records", lines=True)),
    ("null.parquet", lambda frame, path: frame.astype({"label": "float64"}).to_parquet(path)),
])
def test_missing_labels_are_dropped_and_counted_alike_in_every_format(tmp_path, name, write, lazy):
    from nlpforge.data.labelled import load_labelled
    from nlpforge.data.report import render_data_report

    write(labelled_with_gaps(None), tmp_path / name)
    data = load_labelled(tmp_path / name, text_columns="text", label_column="label", lazy=lazy)
    assert data.labels == [1, 2, 3, 4, 5]
    assert data.files[0].missing_label_dropped == 9
    assert len(data.train) + len(data.validation) == 51
    assert "dropped 9 unlabelled" in render_data_report(data, [], 32)


def test_delimiter_and_encoding_options_read_the_files_they_name(tmp_path, capsys):
    from nlpforge.data.labelled import load_labelled

    rows = toy_rows(40)
    (tmp_path / "s.csv").write_text(csv_text(rows, ";"))
    (tmp_path / "u.csv").write_bytes(csv_text(rows).encode("utf-16"))
    (tmp_path / "t.csv").write_text(csv_text(rows, "\t"))
    for name, options in (("s.csv", {"delimiter": ";"}), ("u.csv", {"encoding": "utf-16"}),
                          ("t.csv", {"delimiter": "\t"})):
        for lazy in (False, True):
            data = load_labelled(tmp_path / name, text_columns="text", label_column="label", lazy=lazy, **options)
            assert data.labels == ["neg", "pos"] and len(data.train) + len(data.validation) == 40
    code, out, err = run_in_process(["corpus", "stats", "--corpus", tmp_path / "s.csv", "--column", "text",
                                     "--delimiter", ";"], capsys)
    assert code == 0, err
    assert "documents  40" in out
    code, out, err = run_in_process(["corpus", "stats", "--corpus", tmp_path / "t.csv", "--column", "text",
                                     "--delimiter", "\\t"], capsys)
    assert code == 0, err
    assert "documents  40" in out


def test_latin1_bytes_are_still_text(tmp_path):
    from nlpforge.data.readers import read_table

    (tmp_path / "l.csv").write_bytes(csv_text(toy_rows(40)).encode() + "caf\xe9 cr\xe8me,pos\n".encode("latin-1"))
    table = read_table(tmp_path / "l.csv", columns=["text", "label"])
    assert len(table.frame) == 41 and table.replaced_bytes == 2


def test_predict_and_evaluate_read_files_with_their_delimiter_and_encoding(tiny_model, tmp_path, capsys):
    rows = toy_rows(30, seed=3)
    (tmp_path / "s.csv").write_text(csv_text(rows, ";"))
    (tmp_path / "u.csv").write_bytes(csv_text(rows).encode("utf-16"))
    code, out, err = run_in_process(["predict", tiny_model.output, "--input", tmp_path / "s.csv", "--output",
                                     tmp_path / "p.jsonl", "--delimiter", ";"], capsys)
    assert code == 0, err
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 30
    code, out, err = run_in_process(["evaluate", tiny_model.output, "--data", tmp_path / "u.csv", "--no-baseline",
                                     "--encoding", "utf-16", "--output-dir", tmp_path / "report"], capsys)
    assert code == 0, err
    assert "accuracy" in out
