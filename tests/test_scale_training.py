"""Training across machines on the engines people run: torchrun's multi-node rendezvous, its elastic
restarts, and the SDK's instance_count=N on N hosts over SSH (a real sshd on this machine)."""
import json
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest
from safetensors.torch import load_file

from conftest import toy_rows, write_csv
from nlpforge.errors import ConfigError
from serving_support import free_port
from ssh_support import ssh_cluster  # noqa: F401  (a fixture)
from test_sdk_workshop import WORKSHOP, workshop_estimator


@pytest.fixture(autouse=True)
def no_tracking(monkeypatch):
    monkeypatch.setenv("NLPFORGE_TRACKING", "0")


# --- the SDK's hosts over SSH ---------------------------------------------------------------------------

def test_the_workshop_notebook_trains_on_two_ssh_hosts(ssh_cluster, tmp_path, monkeypatch, capsys):
    config, hosts = ssh_cluster
    monkeypatch.setenv("NLPFORGE_SSH_OPTIONS", f"-F {config}")
    monkeypatch.chdir(WORKSHOP)
    est = workshop_estimator(tmp_path / "jobs", ssh_hosts=hosts)
    est.fit({"train": "data/train", "validation": "data/validation"}, job_name="over-ssh")
    shown = capsys.readouterr().out
    job = est.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Completed", job["FailureReason"]
    folder = tmp_path / "jobs" / "over-ssh"
    log = (folder / "logs" / "training.log").read_text()
    for rank, (host, node) in enumerate(zip(("algo-1", "algo-2"), hosts)):
        assert re.search(rf"\[nlpforge\] attempt 1, {host}: ssh -tt .* {node} .*--node-rank {rank} ", log)
        assert f"[{host}] saved model.pth on {host}" in shown
    model_dirs = dict(re.findall(r"current_host=(algo-\d) model_dir=(\S+)", shown))
    assert model_dirs == {"algo-1": str(folder / "model"), "algo-2": str(folder / "hosts" / "algo-2" / "model")}
    assert (folder / "hosts" / "algo-2" / "model" / "host.txt").read_text() == "algo-2"
    metrics = {m["MetricName"] for m in job["FinalMetricDataList"]}
    assert metrics == {"validation:loss", "validation:accuracy"}


def test_an_unreachable_ssh_host_fails_the_job_and_names_the_host(ssh_cluster, tmp_path, monkeypatch):
    config, hosts = ssh_cluster
    monkeypatch.setenv("NLPFORGE_SSH_OPTIONS", f"-F {config}")
    monkeypatch.chdir(WORKSHOP)
    est = workshop_estimator(tmp_path / "jobs", ssh_hosts=[hosts[0], "no-such-host.invalid"], max_run=120)
    with pytest.raises(Exception, match="no-such-host.invalid"):
        est.fit({"train": "data/train", "validation": "data/validation"}, job_name="unreachable")
    job = est.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Failed"
    assert job["TrainingTimeInSeconds"] < 60  # the reachable host was not left waiting for its peer


@pytest.mark.parametrize("hosts, message", [
    (["node1"], "1 SSH host(s) for instance_count=2; give one destination per instance"),
    ("node1,node2", "ssh_hosts must be a list of SSH destinations"),
    (["node1", "-oProxyCommand=x"], "SSH host '-oProxyCommand=x' is not a destination"),
])
def test_bad_ssh_hosts_are_clear_errors(tmp_path, hosts, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        workshop_estimator(tmp_path / "jobs", source_dir=str(WORKSHOP / "src"), ssh_hosts=hosts)


def test_ssh_hosts_come_from_the_environment_for_unchanged_notebooks(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPFORGE_SSH_HOSTS", "node1, node2")
    est = workshop_estimator(tmp_path / "jobs", source_dir=str(WORKSHOP / "src"))
    assert est.ssh_hosts == ["node1", "node2"]
    with pytest.raises(ConfigError, match=re.escape("2 SSH host(s) for instance_count=1")):
        workshop_estimator(tmp_path / "jobs", source_dir=str(WORKSHOP / "src"), instance_count=1)


# --- torchrun: two nodes, elastic restarts ---------------------------------------------------------------

@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scale-rows")
    write_csv(folder / "train.csv", toy_rows(160, seed=1))
    write_csv(folder / "val.csv", toy_rows(16, seed=2))
    return folder


def _train(rows, output, *extra) -> list[str]:
    return [sys.executable, "-m", "nlpforge", "train", "text-classification", "--train", str(rows / "train.csv"),
            "--validation", str(rows / "val.csv"), "--output", str(output), "--model", "bert-tiny", "--epochs", "2",
            "--batch-size", "16", "--max-seq-length", "32", "--threads", "1", "--dropout", "0", "--no-progress",
            *extra]


def _weights_gap(first, second) -> float:
    a, b = load_file(str(first / "model.safetensors")), load_file(str(second / "model.safetensors"))
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def two_processes(rows):
    """The reference: one machine, two processes, global batch 16."""
    port = free_port()
    done = subprocess.run(_train(rows, rows / "one-node", "--nproc", "2", "--master-port", str(port),
                                 "--checkpoint-every", "4"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return rows / "one-node"


def test_two_nodes_train_to_the_weights_of_one_node(rows, two_processes):
    port = free_port()
    nodes = [subprocess.Popen(_train(rows, rows / "two-nodes", "--nnodes", "2", "--node-rank", str(rank),
                                     "--master-addr", "127.0.0.1", "--master-port", str(port)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert "launching 1 process(es) x 2 node(s) through torchrun" in outputs[0]
    assert json.loads((rows / "two-nodes" / "nlpforge.json").read_text())["world_size"] == 2
    assert _weights_gap(two_processes, rows / "two-nodes") <= 5e-8


def _rank_process(root: psutil.Process, rank: str) -> psutil.Process | None:
    for child in root.children(recursive=True):
        try:
            if "nlpforge.training.run" in " ".join(child.cmdline()) and child.environ().get("RANK") == rank:
                return child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def test_a_killed_rank_restarts_from_the_newest_checkpoint_and_ends_bit_exact(rows, two_processes):
    checkpoints = rows / "elastic-checkpoints"
    launcher = subprocess.Popen(_train(rows, rows / "elastic", "--nproc", "2", "--master-port", str(free_port()),
                                       "--checkpoint-every", "4", "--checkpoint-dir", str(checkpoints),
                                       "--max-restarts", "1"),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root, killed = psutil.Process(launcher.pid), None
    deadline = time.monotonic() + 240
    while killed is None and launcher.poll() is None and time.monotonic() < deadline:
        if (checkpoints / "step-00000008").exists():
            victim = _rank_process(root, "1")
            if victim is not None:
                victim.send_signal(signal.SIGKILL)
                killed = victim.pid
        time.sleep(0.02)
    output = launcher.communicate(timeout=300)[0]
    assert killed, "rank 1 was never seen running after the second checkpoint"
    assert launcher.returncode == 0, output
    assert "restart 1 of at most 1: resuming from the newest checkpoint" in output
    assert re.search(r"resum\w+ from .*step-000000\d\d", output), output
    assert _weights_gap(two_processes, rows / "elastic") == 0.0


def test_a_ranks_user_error_is_not_restarted(rows):
    bad = rows / "bad-val.csv"
    write_csv(bad, [dict(row, label="other") for row in toy_rows(4, seed=3)])
    command = _train(rows, rows / "never", "--nproc", "2", "--master-port", str(free_port()), "--max-restarts", "3")
    command[command.index(str(rows / "val.csv"))] = str(bad)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "label 'other' never appears in the training file" in errors[0]
    # the first rank to fail says why (the other would repeat it), then the launcher's line: no restarts, and
    # none of torchrun's notes on stopping the ranks
    assert len(errors) == 2 and errors[1].startswith("error: [E300] distributed training exited"), done.stderr
    assert "restart 1 of" not in done.stdout + done.stderr
    assert "closing signal" not in done.stderr, done.stderr


def test_a_rank_that_gives_up_ends_the_run_with_its_own_exit_code(tmp_path):
    from nlpforge.training.distributed import launch

    script = tmp_path / "rank.py"
    count = tmp_path / "attempts"
    script.write_text("import sys\n"
                      "from nlpforge.training.distributed import stop_restarts\n"
                      f"open({str(count)!r}, 'a').write('x')\n"
                      "stop_restarts(3)  # a Debugger rule's stop exits 3\n"
                      "sys.exit(3)\n")
    assert launch([str(script)], nproc=1, master_port=free_port(), max_restarts=2) == 3
    assert count.read_text() == "x"  # not restarted
