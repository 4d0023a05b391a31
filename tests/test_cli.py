"""The CLI end to end: train, evaluate, predict; user errors are one line with no traceback."""
import json

import pytest

from conftest import assert_user_error, run_cli, toy_rows, write_csv
from nlpforge.cli import main


def call(capsys, *args) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_evaluate_predict_end_to_end(tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", toy_rows(200, seed=1))
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"epochs": 6, "learning-rate": 2e-3, "max_seq_length": 32}))
    code, out, err = call(capsys, "train", "text-classification", "--train", train, "--output", tmp_path / "m",
                          "--model", "bert-tiny", "--config", config, "--batch-size", "16", "--no-progress")
    assert code == 0, err
    assert "validation accuracy" in out
    meta = json.loads((tmp_path / "m" / "nlpforge.json").read_text())
    assert meta["hyperparameters"]["epochs"] == 6 and meta["hyperparameters"]["batch_size"] == 16
    assert meta["validation_split"] == "split_from_train"

    test = write_csv(tmp_path / "test.csv", toy_rows(40, seed=3))
    code, out, err = call(capsys, "evaluate", tmp_path / "m", "--data", test)
    assert code == 0, err
    assert "baseline TF-IDF" in out and "macro-F1" in out

    code, out, err = call(capsys, "predict", tmp_path / "m", "a great film", "an awful film")
    assert code == 0, err
    lines = [json.loads(line) for line in out.strip().splitlines()]
    assert [line["label"] for line in lines] == ["pos", "neg"]

    for suffix in ("csv", "jsonl"):
        output = tmp_path / f"predictions.{suffix}"
        code, out, err = call(capsys, "predict", tmp_path / "m", "--input", test, "--output", output)
        assert code == 0, err
        assert len(output.read_text().strip().splitlines()) == 40 + (suffix == "csv")


@pytest.mark.parametrize("args, message", [
    (["train", "text-classification", "--train", "absent.csv", "--output", "o"], "absent.csv: no such file"),
    (["train", "text-classification", "--output", "o"], "missing --train"),
    (["train", "text-classification", "--train", "t.csv", "--output", "o", "--epochs", "0"], "epochs must be at least 1"),
    (["train", "text-classification", "--train", "t.csv", "--output", "o", "--model", "gpt-17"], "unknown base model 'gpt-17'"),
    (["train", "text-classification", "--train", "t.csv", "--output", "o", "--config", "bad.json"], "unknown setting(s) colour"),
    (["predict", "absent-model", "hi"], "no such model folder"),
    (["predict", "m", "--input", "t.csv"], "needs both --input FILE and --output FILE"),
])
def test_user_errors_are_one_line_without_traceback(tmp_path, args, message):
    write_csv(tmp_path / "t.csv", toy_rows(20))
    (tmp_path / "bad.json").write_text(json.dumps({"colour": "blue"}))
    assert_user_error(run_cli(args, cwd=tmp_path), message)


def test_help_lists_the_commands():
    result = run_cli(["--help"])
    assert result.returncode == 0
    for command in ("train", "evaluate", "predict", "demo"):
        assert command in result.stdout


def test_help_and_input_checks_start_without_torch_or_pandas(tmp_path):
    """Every command's flags are built, and a missing model folder reported, without loading torch or pandas
    (about 2.5 s of the CLI's start-up on a 2-core machine)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from nlpforge.cli import main\n"
            "try:\n"
            f"    main(['predict', {str(tmp_path / 'absent')!r}, 'hi'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(sorted(m for m in ('torch', 'pandas', 'transformers') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "no such model folder" in result.stderr, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_demo_falls_back_to_packaged_movie_reviews(tmp_path, monkeypatch):
    from nlpforge import demo
    from nlpforge.data.labelled import load_labelled

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "shared_data_folder", lambda: None)
    data = demo.demo_data()
    assert "movie-reviews" in data.name
    loaded = load_labelled(data.train, data.validation, text_columns=data.text_column, label_column=data.label_column)
    assert loaded.labels == [0, 1]
    assert len(loaded.train) > 5000 and len(loaded.validation) > 900
    assert "--validation" in demo.full_quality_command(data)


def test_the_demo_keeps_files_it_did_not_write_and_names_no_flag_it_has_not(tmp_path, monkeypatch):
    from nlpforge import demo
    from nlpforge.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "shared_data_folder", lambda: None)
    notes = tmp_path / "demo-output" / "model" / "notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text("mine")
    with pytest.raises(ConfigError, match="demo's model folder demo-output/model: holds files but no nlpforge model") \
            as raised:
        demo.run_demo(log=lambda line: None)
    assert "--" not in raised.value.message and notes.read_text() == "mine"

