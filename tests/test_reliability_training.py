"""Reliability of training and its outputs: the model folder is written atomically and replaced only
with --overwrite, a damaged checkpoint is passed over on resume, damaged model files and unwritable
outputs are one clear line, `--nproc` listens on loopback only, and logs hold no progress frames."""
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from conftest import assert_user_error, run_cli, toy_rows, train_classifier, write_csv
from nlpforge.errors import ArtifactError, ConfigError
from nlpforge.models import artifact
from nlpforge.models.artifact import training_folder
from nlpforge.training import checkpoint as ckpt
from nlpforge.training.progress import PlainProgress

SMALL = dict(model="bert-tiny", epochs=1, batch_size=16, learning_rate=2e-3, max_seq_length=32, progress=False,
             log_every=1, threads=1)


@pytest.fixture
def files(tmp_path):
    write_csv(tmp_path / "train.csv", toy_rows(64, seed=1))
    write_csv(tmp_path / "val.csv", toy_rows(16, seed=2))
    write_csv(tmp_path / "other.csv", toy_rows(64, seed=3, labels=("bad", "good")))
    return tmp_path


def _train_args(files: Path, output, *extra) -> list[str]:
    return ["train", "text-classification", "--train", str(files / "train.csv"), "--validation",
            str(files / "val.csv"), "--output", str(output), "--model", "bert-tiny", "--epochs", "1",
            "--batch-size", "16", "--max-seq-length", "32", "--threads", "1", *extra]


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _old_model(tiny_model, tmp_path) -> Path:
    folder = tmp_path / "m"
    shutil.copytree(tiny_model.output, folder)
    return folder


# --- 1. the model folder is written atomically and never silently overwritten -------------------------

def test_train_refuses_a_non_empty_output_before_training(files, tiny_model, tmp_path):
    folder = _old_model(tiny_model, tmp_path)
    before = _snapshot(folder)
    result = run_cli(_train_args(files, folder))
    assert_user_error(result, "pass --overwrite to replace it")
    assert "epoch" not in result.stdout  # refused up front, not after training
    assert _snapshot(folder) == before
    with pytest.raises(ConfigError, match="not empty"):
        train_classifier(train=str(files / "train.csv"), output=str(folder), **SMALL)


def test_overwrite_replaces_the_whole_folder(files, tiny_model, tmp_path):
    folder = _old_model(tiny_model, tmp_path)
    (folder / "stale.txt").write_text("from an older model")
    result = train_classifier(train=str(files / "other.csv"), output=str(folder), overwrite=True, **SMALL)
    assert not (folder / "stale.txt").exists()
    assert artifact.read_metadata(folder)[1]["labels"] == ["bad", "good"]
    assert (folder / "metrics.jsonl").exists() and (folder / "tensorboard").is_dir()
    assert not training_folder(folder).exists() and not (folder / "checkpoints").exists()
    assert not list(tmp_path.glob(".m.*"))  # no temporary or old folder left beside it
    assert result.output == folder


def test_an_empty_output_folder_needs_no_overwrite(files, tmp_path):
    (tmp_path / "empty").mkdir()  # what an SDK job's SM_MODEL_DIR looks like
    train_classifier(train=str(files / "train.csv"), output=str(tmp_path / "empty"), **SMALL)
    assert artifact.read_metadata(tmp_path / "empty")[0]["task"] == "text-classification"


def test_a_crash_inside_the_artifact_save_keeps_the_old_model(files, tiny_model, tmp_path, monkeypatch):
    folder = _old_model(tiny_model, tmp_path)
    before = _snapshot(folder)

    def crash(*args, **kwargs):
        raise OSError("disk died mid-save")

    monkeypatch.setattr(artifact, "model_card", crash)  # after the new weights and labels.json are written
    with pytest.raises(OSError, match="disk died"):
        train_classifier(train=str(files / "other.csv"), output=str(folder), overwrite=True, **SMALL)
    assert _snapshot(folder) == before
    import nlpforge

    answer = nlpforge.load(folder).predict(["good great"])[0]
    assert set(answer["probabilities"]) == {"neg", "pos"}


def test_a_killed_retrain_leaves_the_old_model_untouched(files, tiny_model, tmp_path):
    folder = _old_model(tiny_model, tmp_path)
    before = _snapshot(folder)
    process = subprocess.Popen([sys.executable, "-m", "nlpforge", *_train_args(
        files, folder, "--overwrite", "--epochs", "3", "--checkpoint-every", "2", "--log-every", "1",
        "--no-progress")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    live = training_folder(folder)
    deadline = time.time() + 120
    while not list(live.glob("checkpoints/step-*/COMPLETE")):
        assert process.poll() is None, process.stderr.read()
        assert time.time() < deadline, "no checkpoint written in 120 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert _snapshot(folder) == before  # no new metrics, no checkpoints, no new weights beside old labels
    assert (live / "metrics.jsonl").exists()


# --- 2. resume survives a damaged checkpoint -----------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two complete checkpoints (steps 2 and 4) of a one-epoch run."""
    folder = tmp_path_factory.mktemp("ck")
    write_csv(folder / "train.csv", toy_rows(64, seed=1))
    write_csv(folder / "val.csv", toy_rows(16, seed=2))
    train_classifier(train=str(folder / "train.csv"), validation=str(folder / "val.csv"), output=str(folder / "m"),
                     checkpoint_dir=str(folder / "ck"), checkpoint_every=2, **SMALL)
    assert [p.name for p in ckpt.complete_checkpoints(folder / "ck")] == ["step-00000002", "step-00000004"]
    return folder


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


@pytest.mark.parametrize("damaged", ["model.safetensors", "optimizer.safetensors", "state.json"])
def test_resume_auto_falls_back_to_the_newest_intact_checkpoint(checkpoints, tmp_path, damaged):
    folder = tmp_path / "ck"
    shutil.copytree(checkpoints / "ck", folder)
    assert (folder / "step-00000004" / ckpt.MANIFEST).exists()
    _truncate(folder / "step-00000004" / damaged)
    lines = []
    assert ckpt.find_checkpoint("auto", folder, lines.append) == folder / "step-00000002"
    assert len(lines) == 1 and f"{folder / 'step-00000004'} ({damaged} has" in lines[0]
    assert "resuming from" in lines[0]


def test_resume_from_a_damaged_checkpoint_trains_on_from_the_intact_one(checkpoints, tmp_path):
    folder = tmp_path / "ck"
    shutil.copytree(checkpoints / "ck", folder)
    _truncate(folder / "step-00000004" / "model.safetensors")
    lines = []
    result = train_classifier(train=str(checkpoints / "train.csv"), validation=str(checkpoints / "val.csv"),
                              output=str(tmp_path / "m"), checkpoint_dir=str(folder), resume="auto",
                              log=lines.append, **dict(SMALL, epochs=2))
    assert any("step-00000004" in line and "damaged" in line for line in lines)
    assert json.loads((result.output / "nlpforge.json").read_text())["resumed_from"] == str(folder / "step-00000002")


def test_resume_with_no_intact_checkpoint_is_one_line(checkpoints, tmp_path):
    folder = tmp_path / "ck"
    shutil.copytree(checkpoints / "ck", folder)
    for step in ckpt.complete_checkpoints(folder):
        _truncate(step / "state.json")
    with pytest.raises(ConfigError, match="no intact checkpoint is left"):
        ckpt.find_checkpoint("auto", folder)
    with pytest.raises(ConfigError, match="damaged"):
        ckpt.find_checkpoint(str(folder / "step-00000004"), None)
    result = run_cli(_train_args(checkpoints, tmp_path / "m", "--checkpoint-dir", folder, "--resume", "auto"))
    assert_user_error(result, "no intact checkpoint is left")


# --- 7. outputs checked up front; damaged model files ----------------------------------------------------

def test_an_output_that_is_a_file_fails_before_training(files):
    (files / "model.txt").write_text("not a folder")
    result = run_cli(_train_args(files, files / "model.txt"))
    assert_user_error(result, "is a file; name a folder")
    assert "epoch" not in result.stdout


def test_an_output_that_cannot_be_written_fails_before_training(files):
    locked = Path("/sys/nlpforge-model")  # read-only even for root, which ignores permission bits
    try:
        with tempfile.TemporaryFile(dir=locked.parent):
            pytest.skip("/sys is writable here")
    except OSError:
        pass
    result = run_cli(_train_args(files, locked))
    assert_user_error(result, "cannot write in /sys")
    assert "epoch" not in result.stdout
    with pytest.raises(ConfigError, match="choose a place you can write to"):
        artifact.check_output(locked / "below")


def test_checkpoints_inside_the_output_are_refused(files):
    with pytest.raises(ConfigError, match="inside --output"):
        train_classifier(train=str(files / "train.csv"), output=str(files / "m"),
                         checkpoint_dir=str(files / "m" / "checkpoints"), **SMALL)


@pytest.mark.parametrize("damage, message", [
    (lambda folder: _truncate(folder / "model.safetensors"), "model.safetensors: damaged"),
    (lambda folder: (folder / "labels.json").write_text("{}"), "labels.json: empty"),
    (lambda folder: (folder / "labels.json").write_text('{"labels": ["a", "b", "c"]}'), "do not match"),
])
def test_damaged_model_files_are_one_line(tiny_model, tmp_path, damage, message):
    import nlpforge

    folder = _old_model(tiny_model, tmp_path)
    damage(folder)
    with pytest.raises(ArtifactError, match=message):
        nlpforge.load(folder)
    assert_user_error(run_cli(["predict", folder, "good"]), message)
    write_csv(tmp_path / "test.csv", toy_rows(8, seed=5))
    assert_user_error(run_cli(["evaluate", folder, "--data", tmp_path / "test.csv"]), message)


# --- 8. logs that a machine reads ----------------------------------------------------------------------

def test_the_progress_bar_prints_plain_lines_where_stderr_is_no_terminal():
    stream = io.StringIO()
    bar = PlainProgress(total=4, interval=0, stream=stream)
    bar.update()
    bar.set_postfix(loss="0.5000")
    bar.update()
    assert stream.getvalue().splitlines()[0].startswith("batch 1/4 (25%)")
    assert stream.getvalue().splitlines()[1].endswith(", loss 0.5000")
    assert "\r" not in stream.getvalue()


def test_training_with_stderr_in_a_file_writes_no_carriage_returns(files, tmp_path):
    log = tmp_path / "stderr.log"
    with open(log, "w") as handle:
        done = subprocess.run([sys.executable, "-m", "nlpforge", *_train_args(files, tmp_path / "m", "--progress")],
                              stdout=subprocess.PIPE, stderr=handle, text=True, timeout=300)
    assert done.returncode == 0, log.read_text()
    assert "\r" not in log.read_text()


# --- 5. `train --nproc` listens on --master-addr only ----------------------------------------------------

def _listening(root_pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket listening in the process tree under `root_pid`."""
    found = set()
    try:
        processes = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for process in processes:
        try:
            found |= {(c.laddr.ip, c.laddr.port) for c in process.net_connections(kind="tcp")
                      if c.status == psutil.CONN_LISTEN}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def test_nproc_listens_on_the_master_address_only(files, tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "nlpforge", *_train_args(
        files, tmp_path / "m", "--nproc", "2", "--master-port", "29519", "--epochs", "2", "--no-progress")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = set()
    while process.poll() is None:
        seen |= _listening(process.pid)
        time.sleep(0.05)
    assert process.returncode == 0, process.stderr.read()
    assert ("127.0.0.1", 29519) in seen  # the rendezvous store
    assert {ip for ip, _ in seen} == {"127.0.0.1"}, seen


def _ipv6_loopback_port() -> int | None:
    import socket

    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6) as probe:
            return probe.getsockname()[1]
    except OSError:
        return None


@pytest.mark.skipif(_ipv6_loopback_port() is None, reason="this machine has no IPv6 loopback (::1)")
def test_nproc_runs_on_an_ipv6_master_address_and_listens_there_only(tmp_path):
    import threading

    from nlpforge.training.distributed import launch

    script = tmp_path / "ranks.py"
    script.write_text("import torch, torch.distributed as dist\n"
                      "dist.init_process_group('gloo')\n"
                      "total = torch.tensor([float(dist.get_rank() + 1)])\n"
                      "dist.all_reduce(total)\n"
                      "print(f'rank={dist.get_rank()} sum={total.item()}', flush=True)\n"
                      "dist.destroy_process_group()\n")
    port, seen, done = _ipv6_loopback_port(), set(), threading.Event()

    def watch():
        while not done.is_set():
            seen.update(address for address in _listening(os.getpid()) if address[1] == port)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert launch([str(script)], nproc=2, master_addr="::1", master_port=port) == 0
    finally:
        done.set()
        watcher.join()
    assert seen == {("::1", port)}
