"""The training engine: exact resume after SIGKILL, save on SIGTERM, crash-safe saves, 2-process
gloo equivalence, precision choices, and the errors for bad resume flags."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_user_error, run_cli, toy_rows, train_classifier, write_csv
from nlpforge.errors import ConfigError
from nlpforge.training import checkpoint as ckpt
from nlpforge.models.artifact import training_folder
from nlpforge.training.precision import resolve_precision


def _train_args(folder: Path, output: Path, *extra) -> list[str]:
    return ["train", "text-classification", "--train", str(folder / "train.csv"), "--validation",
            str(folder / "val.csv"), "--output", str(output), "--model", "bert-tiny", "--epochs", "2",
            "--batch-size", "16", "--learning-rate", "2e-3", "--max-seq-length", "32", "--no-progress",
            "--log-every", "1", "--threads", "1", *extra]


@pytest.fixture
def engine_files(tmp_path):
    write_csv(tmp_path / "train.csv", toy_rows(160, seed=1))
    write_csv(tmp_path / "val.csv", toy_rows(40, seed=2))
    return tmp_path


def _nlpforge(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nlpforge", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _wait_for_step(metrics: Path, step: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metrics.exists():
            steps = [json.loads(line).get("step", 0) for line in metrics.read_text().splitlines() if line.strip()]
            if steps and max(steps) >= step:
                return
        if process.poll() is not None:
            raise AssertionError(f"training ended before step {step}: {process.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached in {timeout}s")


def _loss_curve(folder: Path) -> list[tuple]:
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(line["step"], line.get("loss"), line.get("validation_accuracy")) for line in lines]


def _same_weights(a: Path, b: Path) -> bool:
    first, second = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_resume_after_sigkill_is_bit_exact(engine_files):
    reference = engine_files / "reference"
    done = subprocess.run([sys.executable, "-m", "nlpforge", *_train_args(engine_files, reference,
                           "--checkpoint-every", "3", "--checkpoint-dir", str(engine_files / "ck-ref"))],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    interrupted = engine_files / "interrupted"
    args = _train_args(engine_files, interrupted, "--checkpoint-every", "3", "--checkpoint-dir",
                       str(engine_files / "ck"), "--resume", "auto")
    process = _nlpforge(*args)
    _wait_for_step(training_folder(interrupted) / "metrics.jsonl", 13, process)  # mid-epoch 2, between two checkpoints
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert not (interrupted / "nlpforge.json").exists(), "the run finished before the kill"
    newest = json.loads((ckpt.complete_checkpoints(engine_files / "ck")[-1] / "state.json").read_text())
    assert 12 <= newest["step"] < 20 and newest["loop"]["batch"] > 0  # mid-epoch
    resumed = subprocess.run([sys.executable, "-m", "nlpforge", *args], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    assert _loss_curve(interrupted) == _loss_curve(reference)
    assert _same_weights(interrupted, reference)


def test_sigterm_saves_a_checkpoint_and_resume_finishes(engine_files):
    output = engine_files / "spot"
    args = _train_args(engine_files, output, "--checkpoint-dir", str(engine_files / "ck"), "--resume", "auto")
    process = _nlpforge(*args)
    _wait_for_step(training_folder(output) / "metrics.jsonl", 4, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143
    assert "stopped by SIGTERM at step" in stderr and "Traceback" not in stderr
    saved = ckpt.complete_checkpoints(engine_files / "ck")
    assert saved and json.loads((saved[-1] / "state.json").read_text())["step"] >= 4
    resumed = subprocess.run([sys.executable, "-m", "nlpforge", *args], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((output / "nlpforge.json").read_text())["resumed_from"] == str(saved[-1])


def test_a_crash_during_a_save_leaves_the_previous_checkpoint_usable(engine_files, monkeypatch):
    settings = dict(
        train=str(engine_files / "train.csv"), validation=str(engine_files / "val.csv"),
        output=str(engine_files / "m"), model="bert-tiny", epochs=1, batch_size=16, max_seq_length=32,
        checkpoint_dir=str(engine_files / "ck"), checkpoint_every=2, progress=False, log_every=0)
    saves = {"count": 0}
    real_save = ckpt.save_file

    def failing_save(tensors, path):
        if Path(path).name == "optimizer.safetensors":
            saves["count"] += 1
            if saves["count"] == 3:
                real_save(tensors, path)
                raise OSError("disk died mid-save")
        return real_save(tensors, path)

    monkeypatch.setattr(ckpt, "save_file", failing_save)
    with pytest.raises(OSError, match="disk died"):
        train_classifier(**settings)
    complete = ckpt.complete_checkpoints(engine_files / "ck")
    assert [p.name for p in complete] == ["step-00000002", "step-00000004"]
    assert list((engine_files / "ck").glob(".tmp-*"))  # the half-written one is there, ignored
    monkeypatch.setattr(ckpt, "save_file", real_save)
    result = train_classifier(**settings, resume="auto")
    assert result.metrics["best_epoch"] == 1
    assert not list((engine_files / "ck").glob(".tmp-*"))  # cleaned by the next save


def test_two_gloo_processes_match_one_process(engine_files):
    common = ["--dropout", "0", "--epochs", "1"]
    one = subprocess.run([sys.executable, "-m", "nlpforge", *_train_args(engine_files, engine_files / "one", *common)],
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "nlpforge", *_train_args(engine_files, engine_files / "two", *common,
                          "--nproc", "2", "--master-port", "29517")], capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr + two.stdout
    first = load_file(str(engine_files / "one" / "model.safetensors"))
    second = load_file(str(engine_files / "two" / "model.safetensors"))
    gap = max((first[k] - second[k]).abs().max().item() for k in first)
    assert gap < 1e-4
    assert json.loads((engine_files / "two" / "nlpforge.json").read_text())["world_size"] == 2
    curve_one, curve_two = _loss_curve(engine_files / "one"), _loss_curve(engine_files / "two")
    assert len(curve_one) == len(curve_two)
    assert all(abs(a[1] - b[1]) < 1e-4 for a, b in zip(curve_one, curve_two) if a[1] is not None)


def test_a_user_error_in_the_ranks_is_their_line_and_an_exit_code_not_torchruns_traceback(engine_files):
    bad = subprocess.run([sys.executable, "-m", "nlpforge", *_train_args(
        engine_files, engine_files / "never", "--label-column", "stars", "--nproc", "2", "--master-port", "29521")],
        capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "no column 'stars'" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr and "ChildFailedError" not in bad.stderr
    assert "distributed training exited with code 2" in bad.stderr


def test_precision_choices():
    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cpu)
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) in ("fp32", "bf16")


def test_bf16_autocast_trains_on_cpu(engine_files):
    result = train_classifier(
        train=str(engine_files / "train.csv"), validation=str(engine_files / "val.csv"),
        output=str(engine_files / "bf16"), model="bert-tiny", epochs=1, batch_size=32, max_seq_length=16,
        precision="bf16", progress=False)
    assert json.loads((result.output / "nlpforge.json").read_text())["precision"] == "bf16"


def test_bad_resume_flags_are_clear_errors(engine_files, tiny_model):
    base = dict(train=str(engine_files / "train.csv"), validation=str(engine_files / "val.csv"),
                model="bert-tiny", epochs=1, batch_size=16, max_seq_length=32, progress=False, log_every=0)
    with pytest.raises(ConfigError, match="not a complete nlpforge checkpoint"):
        train_classifier(output=str(engine_files / "a"), resume=str(tiny_model.output), **base)
    train_classifier(output=str(engine_files / "b"), checkpoint_dir=str(engine_files / "ck"), **base)
    different = dict(base, model="bert-mini")
    with pytest.raises(ConfigError, match="from a different model or config .*model: checkpoint 'bert-tiny', now 'bert-mini'"):
        train_classifier(output=str(engine_files / "c"), resume="auto", checkpoint_dir=str(engine_files / "ck"),
                         **different)
    assert_user_error(run_cli(["train", "text-classification", "--train", base["train"], "--output",
                               engine_files / "d", "--precision", "fp16", "--device", "cpu"]), "fp16 needs a CUDA GPU")


def test_metrics_jsonl_and_tensorboard_are_written(tiny_model):
    lines = [json.loads(line) for line in (tiny_model.output / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "loss" in line]
    epochs = [line for line in lines if "validation_accuracy" in line]
    assert steps and {"step", "epoch", "loss", "learning_rate", "samples_per_second"} <= set(steps[0])
    assert len(epochs) == 6
    assert list((tiny_model.output / "tensorboard").glob("events.out.tfevents.*"))
    assert not (tiny_model.output / "checkpoints").exists()  # removed after a finished run


def test_early_stopping_and_test_channel(engine_files):
    write_csv(engine_files / "test.csv", toy_rows(30, seed=7))
    result = train_classifier(
        train=str(engine_files / "train.csv"), validation=str(engine_files / "val.csv"),
        test=str(engine_files / "test.csv"), output=str(engine_files / "es"), model="bert-tiny", epochs=20,
        learning_rate=1e-6, warmup_ratio=0.0, early_stopping_patience=1, batch_size=32, max_seq_length=16,
        lr_schedule="cosine", gradient_accumulation=2, progress=False)
    assert len(result.history) < 20
    assert "test_accuracy" in result.metrics and "test_macro_f1" in result.metrics
