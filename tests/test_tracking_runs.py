"""Every job is an MLflow run: parameters, metrics over time, data hashes, the model, lineage; `mlflow ui` reads it."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from nlpforge.cli import main
from nlpforge.sdk import Estimator

SCRIPT = '''
import argparse, os
parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int)
parser.add_argument("--learning-rate", type=float)
args = parser.parse_args()
for epoch in range(args.epochs):
    print(f"epoch={epoch} loss={args.learning_rate / (epoch + 1):.4f}")
open(os.path.join(os.environ["SM_MODEL_DIR"], "weights.txt"), "w").write("w")
open(os.path.join(os.environ["SM_MODEL_DIR"], "nlpforge.json"), "w").write('{"task": "text-classification"}')
'''


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """Two tracked jobs in one experiment and trial (creating the SQLite store once takes seconds)."""
    folder = tmp_path_factory.mktemp("tracked")
    (folder / "train.py").write_text(textwrap.dedent(SCRIPT))
    (folder / "train.csv").write_text("text,label\ngood,1\nbad,0\n")
    jobs = []
    for rate in (0.1, 0.2):
        est = Estimator(entry_point=str(folder / "train.py"), jobs_root=str(folder / "jobs"),
                        hyperparameters={"epochs": 3, "learning-rate": rate},
                        metric_definitions=[{"Name": "train:loss", "Regex": r"loss=([0-9.]+)"}])
        est.fit({"train": str(folder / "train.csv")}, logs=False, job_name=f"tracked-{int(rate * 10)}",
                experiment_config={"ExperimentName": "stars", "TrialName": "learning-rate-sweep"})
        jobs.append(est.latest_training_job.describe())
    return folder, jobs


def test_runs_are_queryable_through_mlflows_own_client(tracked):
    from mlflow.tracking import MlflowClient

    folder, jobs = tracked
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'jobs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("stars")
    runs = client.search_runs([experiment.experiment_id], "tags.`nlpforge.kind` = 'training-job'",
                              order_by=["attributes.start_time ASC"])
    assert [r.info.run_name for r in runs] == ["tracked-1", "tracked-2"]
    assert [r.info.run_id for r in runs] == [job["MlflowRunId"] for job in jobs]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["learning-rate"] == "0.1" and run.data.params["epochs"] == "3"
    import hashlib

    assert run.data.params["data.train.sha256"] == hashlib.sha256((folder / "train.csv").read_bytes()).hexdigest()
    history = client.get_metric_history(run.info.run_id, "train:loss")
    assert [(m.step, round(m.value, 4)) for m in history] == [(0, 0.1), (1, 0.05), (2, 0.0333)]
    assert "TrainingTimeInSeconds" in run.data.metrics
    # Lineage: the run holds model.tar.gz and its hash; Experiment -> Trial -> TrialComponent.
    archive = jobs[0]["ModelArtifacts"]["S3ModelArtifacts"]
    assert run.data.tags["nlpforge.model_artifact"] == archive
    assert run.data.tags["nlpforge.model_sha256"] == hashlib.sha256(open(archive, "rb").read()).hexdigest()
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"logs", "model"}
    trial = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert trial.info.run_name == "learning-rate-sweep" and trial.data.tags["nlpforge.kind"] == "trial"
    assert runs[1].data.tags["mlflow.parentRunId"] == trial.info.run_id


def test_lineage_runs_from_job_to_model_version_to_endpoint(tracked):
    from mlflow.tracking import MlflowClient

    from nlpforge.tracking.runs import find_run, record_deployment

    folder, jobs = tracked
    record_deployment("tracked-2", "stars-endpoint", folder / "jobs")
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'jobs' / 'mlflow.db'}")
    run = find_run("tracked-2", folder / "jobs")
    assert run.data.tags["nlpforge.endpoint"] == "stars-endpoint"
    name, number = run.data.tags["nlpforge.model_version"].rsplit("/", 1)
    version = client.get_model_version(name, number)
    assert version.run_id == run.info.run_id and version.tags["nlpforge.job_name"] == "tracked-2"
    assert version.tags["nlpforge.endpoint"] == "stars-endpoint"
    assert sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'")) == [1, 2]


def test_runs_cli_lists_shows_and_compares(tracked, capsys):
    folder, _ = tracked
    root = str(folder / "jobs")
    for argv in (["runs", "list", "--jobs-root", root], ["runs", "compare", "tracked-1", "tracked-2", "--jobs-root", root]):
        with pytest.raises(SystemExit):
            main(argv)
    out = capsys.readouterr().out
    assert "tracked-1" in out and "learning-rate-sweep" in out
    compare = out[out.index("learning-rate "):].splitlines()[0].split()
    assert compare == ["learning-rate", "0.1", "0.2"]
    with pytest.raises(SystemExit):
        main(["runs", "show", "tracked-2", "--jobs-root", root])
    shown = json.loads(capsys.readouterr().out)
    assert shown["params"]["learning-rate"] == "0.2" and shown["metrics"]["train:loss"] == pytest.approx(0.0667)
    with pytest.raises(SystemExit) as done:
        main(["runs", "show", "no-such-job", "--jobs-root", root])
    assert done.value.code == 2 and "no MLflow run for 'no-such-job'" in capsys.readouterr().err



def test_reading_runs_under_an_empty_jobs_root_creates_no_store(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = str(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["runs", "list", "--jobs-root", root])
    assert done.value.code == 0 and f"no runs in sqlite:///{tmp_path / 'mlflow.db'}" in capsys.readouterr().out
    for argv in (["runs", "show", "some-job", "--jobs-root", root], ["runs", "compare", "a", "b", "--jobs-root", root],
                 ["runs", "list", "--experiment", "stars", "--jobs-root", root]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2 and "does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_tracking_server_that_is_down_is_one_line_within_seconds(tmp_path, capsys, monkeypatch):
    import socket
    import time

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(SystemExit) as done:
        main(["runs", "list"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and f"cannot read the MLflow store http://127.0.0.1:{port}" in err, err
    assert "Traceback" not in err and time.monotonic() - started < 20  # MLflow's own retries took minutes
    (tmp_path / "train.py").write_text(textwrap.dedent(SCRIPT))  # a job still finishes, and says it went unrecorded
    estimator = Estimator(entry_point=str(tmp_path / "train.py"), jobs_root=str(tmp_path / "jobs"),
                          hyperparameters={"epochs": 1, "learning-rate": 0.1})
    started = time.monotonic()
    estimator.fit(job_name="unrecorded")
    assert "[nlpforge] could not record the job in MLflow: API request to" in capsys.readouterr().out
    assert estimator.latest_training_job.describe()["TrainingJobStatus"] == "Completed"
    assert time.monotonic() - started < 30

UI_CHECK = """
import json, os, sys
os.environ["_MLFLOW_SERVER_FILE_STORE"] = sys.argv[1]
from mlflow.server import app  # the application `mlflow ui` serves
client = app.test_client()
page = client.get("/")
found = client.get("/api/2.0/mlflow/experiments/get-by-name?experiment_name=stars").get_json()
print(json.dumps({"page": page.status_code, "html": page.data[:15].decode().lower(), "found": found}))
"""


def test_mlflow_ui_opens_the_store(tracked):
    # The app `mlflow ui` runs, served in-process (starting its web server takes ~30 s on 2 cores).
    folder, _ = tracked
    done = subprocess.run([sys.executable, "-c", UI_CHECK, f"sqlite:///{folder / 'jobs' / 'mlflow.db'}"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["page"] == 200 and answer["html"].startswith("<!doctype html")
    assert answer["found"]["experiment"]["name"] == "stars"
