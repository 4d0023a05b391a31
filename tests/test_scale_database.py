"""Tuning and tracking on a shared PostgreSQL: parallel tuners on one study, a killed tuner's trial
retried, and an MLflow tracking server that receives every job.

Each tuner is its own OS process, as on separate machines; the server, the tuners and `mlflow server`
are real. Skips where PostgreSQL cannot start (see postgres_support).
"""
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from postgres_support import postgres  # noqa: F401  (the session's PostgreSQL server)
from serving_support import free_port
from test_tuning_tuner import METRICS, SCRIPT

# One tuner of the shared study: the script estimator of the tuning tests, a quick Random search.
TUNER = '''
import sys
from nlpforge.sdk import Estimator
from nlpforge.tuning import ContinuousParameter, HyperparameterTuner
script, jobs, storage, name, max_jobs, steps = sys.argv[1:]
tuner = HyperparameterTuner(Estimator(entry_point=script, jobs_root=jobs, hyperparameters={"steps": int(steps)}),
                            "validation:accuracy", {"quality": ContinuousParameter(0.1, 0.9)},
                            metric_definitions=METRICS, strategy="Random", max_jobs=int(max_jobs),
                            storage=storage, heartbeat_interval=2)
tuner.fit(job_name=name)
'''


@pytest.fixture
def tuning(tmp_path, monkeypatch):
    """(start a tuner process, the jobs root), tracking off: trials are training jobs in one jobs root."""
    monkeypatch.setenv("NLPFORGE_TRACKING", "0")
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    jobs = tmp_path / "jobs"
    code = f"METRICS = {METRICS!r}\n" + textwrap.dedent(TUNER)
    processes = []

    def start(storage: str, name: str, max_jobs: int, steps: int) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", code, str(script), str(jobs), storage, name,
                                    str(max_jobs), str(steps)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
        processes.append(process)
        return process

    yield start, jobs
    for process in processes:
        kill_tree(process.pid)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and everything it started (its training jobs run in their own sessions)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        family = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in family:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)


def finished(process: subprocess.Popen, timeout: float = 120) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


def load_study(storage: str, name: str):
    from nlpforge.tuning.tuner import optuna_module

    return optuna_module().load_study(study_name=name, storage=storage)


def test_two_tuner_processes_share_one_study_without_duplicates_or_losses(postgres, tuning):
    start, jobs = tuning
    storage = postgres.database("parallel_tuners")
    tuners = [start(storage, "shared-study", max_jobs=6, steps=8) for _ in range(2)]
    for tuner in tuners:
        finished(tuner)
    trials = load_study(storage, "shared-study").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6  # no surplus, no lost trial
    assert sorted(t.number for t in trials) == list(range(6))
    job_names = [t.user_attrs["job_name"] for t in trials]
    assert sorted(job_names) == sorted(p.parent.name for p in jobs.glob("*/status.json"))  # one job per trial
    by_tuner = {t.user_attrs["tuner"] for t in trials}
    assert {f":{p.pid}:" in tuner for tuner in by_tuner for p in tuners} == {True, False} and len(by_tuner) == 2
    for trial in trials:
        job = (jobs / trial.user_attrs["job_name"] / "status.json").read_text()
        assert '"Completed"' in job
        assert round(trial.value, 4) == round(trial.params["quality"], 4)  # the script's last accuracy


def test_a_killed_tuners_trial_is_failed_and_retried_by_the_other(postgres, tuning):
    from nlpforge.sdk import Estimator
    from nlpforge.tuning import ContinuousParameter, HyperparameterTuner

    start, jobs = tuning
    storage = postgres.database("killed_tuner")
    victim = start(storage, "survives", max_jobs=4, steps=100)
    study, deadline = None, time.monotonic() + 60
    while time.monotonic() < deadline:  # until the victim's first trial runs its training job
        time.sleep(0.3)
        try:
            study = load_study(storage, "survives")
        except KeyError:
            continue
        running = [t for t in study.get_trials(states=(study_state("RUNNING"),))
                   if f":{victim.pid}:" in t.user_attrs.get("tuner", "") and "job_name" in t.user_attrs]
        if running and (jobs / running[0].user_attrs["job_name"] / "logs" / "training.log").exists():
            break
    else:
        kill_tree(victim.pid)
        pytest.fail(f"the tuner never started a trial: {victim.communicate()[0]}")
    survivor = start(storage, "survives", max_jobs=4, steps=10)
    time.sleep(1.0)
    kill_tree(victim.pid)
    killed = running[0]
    finished(survivor)

    trials = load_study(storage, "survives").get_trials()
    assert [t.state.name for t in trials].count("COMPLETE") == 4
    assert trials[killed.number].state.name == "FAIL"  # marked failed once its heartbeat went stale
    retries = [t for t in trials if t.system_attrs.get("retry_history")]
    assert len(retries) == 1 and retries[0].system_attrs["retry_history"] == [killed.number]
    assert retries[0].state.name == "COMPLETE" and retries[0].params == killed.params
    assert f":{survivor.pid}:" in retries[0].user_attrs["tuner"]

    # Joining the finished tuning job runs nothing more, and reports the interrupted trial as such.
    tuner = HyperparameterTuner(Estimator(entry_point=str(jobs.parent / "train.py"), jobs_root=str(jobs)),
                                "validation:accuracy", {"quality": ContinuousParameter(0.1, 0.9)},
                                metric_definitions=METRICS, strategy="Random", max_jobs=4, storage=storage,
                                heartbeat_interval=2)
    tuner.fit(job_name="survives")
    assert len(load_study(storage, "survives").get_trials()) == len(trials)
    assert tuner.describe()["TrainingJobStatusCounters"] == {"COMPLETE": 4, "INTERRUPTED": 1}
    frame = tuner.analytics().dataframe().set_index("TrialNumber")
    assert frame.loc[killed.number, "TrialState"] == "INTERRUPTED"
    assert frame.loc[killed.number, "TrainingJobStatus"] == "Failed"  # its runner died with the tuner
    assert frame.loc[retries[0].number, "RetryOf"] == killed.number
    assert tuner.best_training_job() in set(frame[frame["TrialState"] == "COMPLETE"]["TrainingJobName"])


def study_state(name: str):
    from nlpforge.tuning.tuner import optuna_module

    return optuna_module().trial.TrialState[name]


@pytest.fixture(scope="module", autouse=True)
def mlflow_server(postgres, tmp_path_factory):
    """`mlflow server` on a PostgreSQL backend store, serving artifacts from a local folder; started with the
    module's first test, as it takes a while, and waited for by the test that uses it (see `ready`)."""
    artifacts = tmp_path_factory.mktemp("mlflow") / "artifacts"
    port = free_port()
    log = open(artifacts.parent / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server",
                               "--backend-store-uri", postgres.database("mlflow"), "--serve-artifacts",
                               "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1"], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
    yield server, f"http://127.0.0.1:{port}", artifacts
    kill_tree(server.pid)
    log.close()


def ready(mlflow_server, timeout: float = 120) -> tuple[str, Path]:
    """(the server's URL, its artifact folder) once it answers /health."""
    import httpx

    server, url, artifacts = mlflow_server
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"mlflow server did not start: {(artifacts.parent / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return url, artifacts
        except httpx.HTTPError:
            pass
        time.sleep(0.5)


def test_the_sdk_and_the_tuner_record_every_job_on_an_mlflow_server(postgres, mlflow_server, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from nlpforge.sdk import Estimator
    from nlpforge.tuning import ContinuousParameter, HyperparameterTuner
    from test_tracking_runs import SCRIPT as TRACKED_SCRIPT

    url, artifacts = ready(mlflow_server)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("NLPFORGE_TRACKING", "1")
    (tmp_path / "tracked.py").write_text(textwrap.dedent(TRACKED_SCRIPT))
    (tmp_path / "tuned.py").write_text(textwrap.dedent(SCRIPT))
    train = tmp_path / "train.csv"
    train.write_text("text,label\ngood,1\nbad,0\n")
    est = Estimator(entry_point=str(tmp_path / "tracked.py"), jobs_root=str(tmp_path / "jobs"),
                    hyperparameters={"epochs": 3, "learning-rate": 0.1},
                    metric_definitions=[{"Name": "train:loss", "Regex": r"loss=([0-9.]+)"}])
    est.fit({"train": str(train)}, logs=False, job_name="served-job", experiment_config={"ExperimentName": "scale"})
    job = est.latest_training_job.describe()

    client = MlflowClient(tracking_uri=url)
    run = client.get_run(job["MlflowRunId"])
    assert run.info.run_name == "served-job" and run.info.status == "FINISHED"
    assert run.data.params["learning-rate"] == "0.1"
    assert run.data.params["data.train.sha256"] == hashlib.sha256(train.read_bytes()).hexdigest()
    history = client.get_metric_history(run.info.run_id, "train:loss")
    assert [(m.step, round(m.value, 4)) for m in history] == [(0, 0.1), (1, 0.05), (2, 0.0333)]
    # The model went to the server's artifact store, byte for byte.
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"logs", "model"}
    downloaded = Path(client.download_artifacts(run.info.run_id, "model", str(tmp_path / "download")))
    archive = next(downloaded.iterdir())
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == run.data.tags["nlpforge.model_sha256"]
    assert any(p.name == archive.name for p in artifacts.rglob("*"))
    assert len(client.search_model_versions(f"run_id = '{run.info.run_id}'")) == 1  # the registry is there too

    tuner = HyperparameterTuner(Estimator(entry_point=str(tmp_path / "tuned.py"), jobs_root=str(tmp_path / "jobs"),
                                          hyperparameters={"steps": 3}),
                                "validation:accuracy", {"quality": ContinuousParameter(0.1, 0.9)},
                                metric_definitions=METRICS, strategy="Random", max_jobs=2,
                                storage=postgres.database("tracked_tuning"), heartbeat_interval=1)
    tuner.fit(job_name="tracked-tuning")
    frame = tuner.analytics().dataframe()
    experiment = client.get_experiment_by_name("tracked-tuning")
    runs = client.search_runs([experiment.experiment_id], "tags.`nlpforge.tuning_job` = 'tracked-tuning'")
    assert sorted(r.info.run_name for r in runs) == sorted(frame["TrainingJobName"])
    for found in runs:
        row = frame[frame["TrainingJobName"] == found.info.run_name].iloc[0]
        assert float(found.data.params["quality"]) == pytest.approx(row["quality"])
        assert found.data.metrics["validation:accuracy"] == pytest.approx(row["FinalObjectiveValue"])
        assert client.get_run(found.data.tags["mlflow.parentRunId"]).info.run_name == "tracked-tuning"


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_tuner_counting_trials_waits_while_another_asks_for_the_last_one(database, tmp_path, request):
    """Counting, asking and claiming hold the study's lock: a second tuner counts only once the first
    has claimed the last trial of the budget, so it never asks for a surplus trial."""
    import threading

    from nlpforge.sdk import Estimator
    from nlpforge.tuning import ContinuousParameter, HyperparameterTuner
    from nlpforge.tuning.tuner import counted_trials, optuna_module

    script = tmp_path / "train.py"
    script.write_text("print('acc=0.5')\n")
    storage = request.getfixturevalue("postgres").database("last_trial") if database == "postgresql" else \
        f"sqlite:///{tmp_path / 'optuna.db'}"

    def tuner():
        return HyperparameterTuner(Estimator(entry_point=str(script), jobs_root=str(tmp_path / "jobs")),
                                   "validation:accuracy", {"quality": ContinuousParameter(0.1, 0.9)},
                                   metric_definitions=METRICS, strategy="Random", max_jobs=1, storage=storage)

    first, second, optuna = tuner(), tuner(), optuna_module()
    study, other = first.study("last"), second.study("last")
    ask, seen, threads = study.ask, [], []

    def count():
        with second.asking("last"):
            seen.append(len(counted_trials(other.get_trials(deepcopy=False))))

    def ask_while_another_counts(*args, **kwargs):
        threads.append(threading.Thread(target=count))
        threads[0].start()
        threads[0].join(timeout=1.0)  # without the lock it counts now, before this trial exists
        return ask(*args, **kwargs)

    study.ask = ask_while_another_counts
    assert first.next_trial(study, optuna).number == 0
    threads[0].join(timeout=10)
    assert seen == [1]
    assert other.get_trials(deepcopy=False)[0].user_attrs["tuner"] == first.tuner_id


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_study_lock_is_freed_when_its_holder_fails(database, tmp_path, request, monkeypatch):
    """An error (Ctrl-C, a lost connection) inside the lock frees it: no other tuner waits forever."""
    import threading

    from nlpforge.sdk import Estimator
    from nlpforge.tuning import ContinuousParameter, HyperparameterTuner

    script = tmp_path / "train.py"
    script.write_text("print('acc=0.5')\n")
    (tmp_path / "a folder").mkdir()
    storage = request.getfixturevalue("postgres").database("freed_lock") if database == "postgresql" else \
        f"sqlite:///{tmp_path / 'a%20folder' / 'optuna.db'}"  # SQLAlchemy decodes the escape

    def tuner():
        tuner = HyperparameterTuner(Estimator(entry_point=str(script), jobs_root=str(tmp_path / "jobs")),
                                    "validation:accuracy", {"quality": ContinuousParameter(0.1, 0.9)},
                                    metric_definitions=METRICS, strategy="Random", max_jobs=1, storage=storage)
        tuner.study("freed")
        return tuner

    first, second, taken = tuner(), tuner(), threading.Event()
    with pytest.raises(KeyboardInterrupt):
        with first.asking("freed") as serialised:
            assert serialised
            raise KeyboardInterrupt
    if database == "postgresql":  # Ctrl-C arriving as the lock is granted, before the lock's block begins
        from sqlalchemy.engine import Connection

        execute = Connection.execute

        def interrupted(self, statement, *args, **kwargs):
            result = execute(self, statement, *args, **kwargs)
            if "advisory" in str(statement):
                raise KeyboardInterrupt
            return result

        monkeypatch.setattr(Connection, "execute", interrupted)
        with pytest.raises(KeyboardInterrupt):
            with first.asking("freed"):
                pass
        monkeypatch.undo()

    def take():
        with second.asking("freed"):
            taken.set()

    threading.Thread(target=take, daemon=True).start()
    assert taken.wait(20), "the lock stayed held"
    if database == "sqlite":
        assert (tmp_path / "a folder" / "optuna.db.lock").is_file()
