"""Jobs in the background, the jobs CLI, and spot training that is interrupted, resumes and finishes."""
import json
import textwrap
import time

import pytest

from nlpforge.cli import main
from nlpforge.sdk import Estimator

# Checkpoints its step counter on SIGTERM (the spot interruption notice) and resumes from it.
SPOT_SCRIPT = '''
import json, os, signal, sys, time

checkpoint = os.path.join(os.environ["SM_CHECKPOINT_DIR"], "state.json")
state = json.load(open(checkpoint)) if os.path.exists(checkpoint) else {"step": 0, "starts": []}
state["starts"].append(state["step"])
print(f"starting at step {state['step']}", flush=True)
interrupted = False

def on_sigterm(signum, frame):
    global interrupted
    interrupted = True

signal.signal(signal.SIGTERM, on_sigterm)
steps = int(os.environ["SM_HP_STEPS"])
while state["step"] < steps:
    time.sleep(0.05)
    state["step"] += 1
    print(f"step {state['step']} loss={1 / state['step']:.4f}", flush=True)
    if interrupted:
        json.dump(state, open(checkpoint, "w"))
        print(f"checkpointed at step {state['step']}", flush=True)
        sys.exit(143)
json.dump(state, open(os.path.join(os.environ["SM_MODEL_DIR"], "final.json"), "w"))
'''


@pytest.fixture(autouse=True)
def no_tracking(monkeypatch):
    monkeypatch.setenv("NLPFORGE_TRACKING", "0")


def script(tmp_path, text):
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def test_spot_interruptions_resume_from_the_checkpoint_and_finish(tmp_path, capsys):
    est = Estimator(entry_point=script(tmp_path, SPOT_SCRIPT), hyperparameters={"steps": 40},
                    jobs_root=str(tmp_path / "jobs"), use_spot_instances=True, max_run=60, max_wait=120,
                    spot_interruptions=[0.6, 0.6], spot_capacity_wait=0.5, spot_price_ratio=0.3)
    est.fit(job_name="spot-job")
    out = capsys.readouterr().out
    assert "Managed Spot Training savings:" in out
    job = est.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Completed"
    assert [a["ended"] for a in job["Attempts"]] == ["interrupted", "interrupted", "exited"]
    final = json.loads((tmp_path / "jobs" / "spot-job" / "model" / "final.json").read_text())
    assert final["step"] == 40
    starts = final["starts"]
    assert starts[0] == 0 and 0 < starts[1] < starts[2] < 40  # each restart resumed where it stopped
    # Wall-clock training time includes the waits for capacity; billable time is spot-priced running time.
    running = sum(a["seconds"] for a in job["Attempts"])
    assert job["TrainingTimeInSeconds"] >= running + 1.0
    assert job["BillableTimeInSeconds"] == max(1, -(-running * 0.3 // 1))
    assert job["BillableTimeInSeconds"] < job["TrainingTimeInSeconds"]


def test_spot_job_stops_when_capacity_does_not_return_within_max_wait(tmp_path):
    from nlpforge.errors import TrainingJobError

    est = Estimator(entry_point=script(tmp_path, SPOT_SCRIPT), hyperparameters={"steps": 1000},
                    jobs_root=str(tmp_path / "jobs"), use_spot_instances=True, max_run=2, max_wait=2,
                    spot_interruptions=[0.3], spot_capacity_wait=5)
    est.fit(logs=False)  # Stopped, not Failed: fit returns
    job = est.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Stopped" and "MaxWaitTimeExceeded" in job["FailureReason"]
    with pytest.raises(TrainingJobError):
        est.model_data


def test_background_job_can_be_followed_listed_and_stopped_from_the_cli(tmp_path, capsys):
    root = str(tmp_path / "jobs")
    est = Estimator(entry_point=script(tmp_path, SPOT_SCRIPT), hyperparameters={"steps": 10_000}, jobs_root=root)
    est.fit(wait=False, job_name="long-job")
    log = tmp_path / "jobs" / "long-job" / "logs" / "training.log"
    deadline = time.monotonic() + 30
    while "step 3 " not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert est.latest_training_job.describe()["TrainingJobStatus"] == "InProgress"

    with pytest.raises(SystemExit) as done:
        main(["jobs", "stop", "long-job", "--jobs-root", root])
    assert done.value.code in (0, None)
    job = est.latest_training_job.wait()
    assert job["TrainingJobStatus"] == "Stopped"
    assert "checkpointed at step" in log.read_text()  # the script got SIGTERM and could save its state

    capsys.readouterr()
    for argv in (["jobs", "list", "--jobs-root", root], ["jobs", "logs", "long-job", "--jobs-root", root],
                 ["jobs", "describe", "long-job", "--jobs-root", root]):
        with pytest.raises(SystemExit):
            main(argv)
    out = capsys.readouterr().out
    assert "long-job" in out and "Stopped" in out and "step 2 loss=0.5000" in out
    assert '"TrainingJobStatus": "Stopped"' in out


def test_jobs_cli_names_a_missing_job(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["jobs", "describe", "nope", "--jobs-root", str(tmp_path)])
    assert done.value.code == 2
    assert "no training job named 'nope'" in capsys.readouterr().err


def test_ctrl_c_during_fit_stops_the_script_and_the_job(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    script(tmp_path, SPOT_SCRIPT)
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(f"""
        import signal
        # A shell's background jobs start with SIGINT ignored, and Python keeps that; this driver
        # plays an interactive user, so it takes Ctrl-C's default behaviour back.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from nlpforge.sdk import Estimator
        Estimator(entry_point={str(tmp_path / 'train.py')!r}, hyperparameters={{"steps": 10000}},
                  jobs_root={str(tmp_path / 'jobs')!r}, tracking=False).fit(job_name="interrupted", logs=False)
    """))
    process = subprocess.Popen([sys.executable, str(driver)], stderr=subprocess.PIPE, text=True)
    log = tmp_path / "jobs" / "interrupted" / "logs" / "training.log"
    deadline = time.monotonic() + 30
    while "step 2 " not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode != 0 and "KeyboardInterrupt" in err
    status = json.loads((tmp_path / "jobs" / "interrupted" / "status.json").read_text())
    assert status["TrainingJobStatus"] == "Stopped" and status["FailureReason"] == "interrupted from the keyboard"
    assert "checkpointed at step" in log.read_text()  # the script itself got SIGTERM, not orphaned
    with pytest.raises(ProcessLookupError):
        os.kill(json.loads((tmp_path / "jobs" / "interrupted" / "status.json").read_text())["SupervisorPid"], 0)
