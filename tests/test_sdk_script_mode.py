"""Script mode: an unmodified SageMaker-style script runs through Estimator.fit with the training contract."""
import json
import re
import tarfile
import textwrap
import time

import pytest

from nlpforge.errors import ConfigError, TrainingJobError
from nlpforge.sdk import Estimator, PyTorch

# Reads nothing but SM_* variables and its arguments, as on a SageMaker training instance.
CONTRACT_SCRIPT = '''
import argparse, json, os

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--batch-size", type=int, default=8)
parser.add_argument("--learning-rate", type=float, default=0.1)
parser.add_argument("--model-dir", type=str, default=os.environ["SM_MODEL_DIR"])
parser.add_argument("--train", type=str, default=os.environ["SM_CHANNEL_TRAIN"])
parser.add_argument("--test", type=str, default=os.environ["SM_CHANNEL_TEST"])
args = parser.parse_args()

rows = {}
for channel in json.loads(os.environ["SM_CHANNELS"]):
    folder = os.environ["SM_CHANNEL_" + channel.upper()]
    rows[channel] = sum(len(open(os.path.join(folder, f)).read().splitlines()) - 1 for f in os.listdir(folder))
env = json.loads(os.environ["SM_TRAINING_ENV"])
report = {"args": vars(args), "rows": rows, "hps": json.loads(os.environ["SM_HPS"]),
          "hp_epochs": os.environ["SM_HP_EPOCHS"], "user_args": json.loads(os.environ["SM_USER_ARGS"]),
          "hosts": json.loads(os.environ["SM_HOSTS"]), "current_host": os.environ["SM_CURRENT_HOST"],
          "num_gpus": int(os.environ["SM_NUM_GPUS"]), "num_cpus": int(os.environ["SM_NUM_CPUS"]),
          "training_env": env, "cwd": os.getcwd()}
for epoch in range(args.epochs):
    print(f"epoch {epoch}: loss={1.0 / (epoch + 1):.4f} accuracy={0.5 + 0.1 * epoch:.2f}")
with open(os.path.join(args.model_dir, "report.json"), "w") as handle:
    json.dump(report, handle)
with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "notes.txt"), "w") as handle:
    handle.write("evaluation notes")
'''


@pytest.fixture(autouse=True)
def no_tracking(monkeypatch):
    monkeypatch.setenv("NLPFORGE_TRACKING", "0")


def write_script(folder, name, text):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def channels(tmp_path):
    from conftest import toy_rows, write_csv

    return {"train": write_csv(tmp_path / "data" / "train.csv", toy_rows(30, seed=1)),
            "test": write_csv(tmp_path / "data" / "test" / "test.csv", toy_rows(10, seed=2)).parent}


def test_script_sees_the_contract_and_model_tar_gz_is_written(tmp_path, channels, capsys):
    write_script(tmp_path / "src", "pytorch-bert.py", CONTRACT_SCRIPT)
    est = PyTorch(entry_point="pytorch-bert.py", source_dir=str(tmp_path / "src"), jobs_root=str(tmp_path / "jobs"),
                  hyperparameters={"epochs": 3, "batch-size": 64, "learning-rate": 0.1},
                  framework_version="2.13", py_version="py311",
                  metric_definitions=[{"Name": "train:loss", "Regex": r"loss=([0-9.]+)"},
                                      {"Name": "train:accuracy", "Regex": r"accuracy=([0-9.]+)"}])
    est.fit({"train": str(channels["train"]), "test": f"file://{channels['test']}"}, job_name="contract-job")
    assert "epoch 2: loss=0.3333" in capsys.readouterr().out  # the log streamed live

    job = est.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Completed" and job["FailureReason"] is None
    archive = tmp_path / "jobs" / "_artifacts" / "contract-job" / "output" / "model.tar.gz"
    assert est.model_data == str(archive) == job["ModelArtifacts"]["S3ModelArtifacts"]
    with tarfile.open(archive) as tar:
        assert tar.getnames() == ["report.json"]
        report = json.load(tar.extractfile("report.json"))
    with tarfile.open(archive.with_name("output.tar.gz")) as tar:
        assert tar.getnames() == ["notes.txt"]

    assert report["args"] == {"epochs": 3, "batch_size": 64, "learning_rate": 0.1,
                              "model_dir": str(tmp_path / "jobs" / "contract-job" / "model"),
                              "train": str(tmp_path / "jobs" / "contract-job" / "input" / "data" / "train"),
                              "test": str(tmp_path / "jobs" / "contract-job" / "input" / "data" / "test")}
    assert report["rows"] == {"train": 30, "test": 10}
    assert report["hps"] == {"epochs": 3, "batch-size": 64, "learning-rate": 0.1}
    assert report["hp_epochs"] == "3"
    assert report["user_args"] == ["--batch-size", "64", "--epochs", "3", "--learning-rate", "0.1"]
    assert report["hosts"] == ["algo-1"] and report["current_host"] == "algo-1"
    assert report["num_gpus"] == 0 and report["num_cpus"] >= 1
    assert report["cwd"] == str(tmp_path / "jobs" / "contract-job" / "code")
    env = report["training_env"]
    assert env["is_master"] is True and env["hosts"] == ["algo-1"] and env["current_host"] == "algo-1"
    assert env["hyperparameters"] == report["hps"] and env["job_name"] == "contract-job"
    assert env["channel_input_dirs"] == {"train": report["args"]["train"], "test": report["args"]["test"]}
    assert env["module_name"] == "pytorch-bert" and env["user_entry_point"] == "pytorch-bert.py"
    assert {"model_dir", "output_data_dir", "input_data_config", "resource_config", "num_gpus", "log_level",
            "master_hostname", "network_interface_name", "output_dir", "input_dir"} <= set(env)

    metrics = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert metrics == {"train:loss": pytest.approx(0.3333), "train:accuracy": pytest.approx(0.7)}
    folder = tmp_path / "jobs" / "contract-job"
    assert json.loads((folder / "input" / "config" / "hyperparameters.json").read_text())["epochs"] == "3"
    assert "epoch 0: loss=1.0000" in (folder / "logs" / "training.log").read_text()
    est.logs()  # the kept log, printed again after the job
    assert "epoch 1: loss=0.5000" in capsys.readouterr().out


def test_failing_script_reports_its_reason(tmp_path, channels):
    script = write_script(tmp_path, "train.py", """
        import os
        print("reading", os.environ["SM_CHANNEL_TRAIN"])
        raise ValueError("label column 'stars' not found in the training data")
    """)
    est = Estimator(entry_point=str(script), jobs_root=str(tmp_path / "jobs"))
    with pytest.raises(TrainingJobError, match="ValueError: label column 'stars' not found"):
        est.fit({"train": str(channels["train"])}, logs=False)
    job = est.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Failed"
    assert "ExitCode 1" in job["FailureReason"]
    failure = tmp_path / "jobs" / job["TrainingJobName"] / "output" / "failure"
    assert "label column 'stars' not found" in failure.read_text()
    with pytest.raises(TrainingJobError, match="Failed; it has no model"):
        est.model_data


def test_a_failure_file_written_by_the_script_is_the_reason(tmp_path):
    script = write_script(tmp_path, "train.py", """
        import os, sys
        open(os.path.join(os.environ["SM_OUTPUT_DIR"], "failure"), "w").write("ClientError: need 2 classes")
        sys.exit(3)
    """)
    est = Estimator(entry_point=str(script), jobs_root=str(tmp_path / "jobs"))
    with pytest.raises(TrainingJobError, match="ClientError: need 2 classes"):
        est.fit(logs=False)


def test_a_script_gets_mlflows_own_retry_settings_unless_the_job_sets_them(tmp_path, monkeypatch):
    from nlpforge.tracking import runs

    # nlpforge shortens MLflow's retries for itself; a user's script must not inherit that.
    monkeypatch.setitem(runs.OWN_SETTINGS, "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    script = write_script(tmp_path, "train.py", """
        import os
        print("retries=" + os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "unset"))
    """)
    jobs = tmp_path / "jobs"
    for environment, expected in (({}, "unset"), ({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5"}, "5")):
        est = Estimator(entry_point=str(script), jobs_root=str(jobs), environment=environment)
        est.fit(logs=False)
        log = (jobs / est.latest_training_job.name / "logs" / "training.log").read_text()
        assert f"retries={expected}" in log


def test_max_run_stops_a_job_that_runs_too_long(tmp_path):
    script = write_script(tmp_path, "train.py", "import time\ntime.sleep(30)\n")
    est = Estimator(entry_point=str(script), jobs_root=str(tmp_path / "jobs"), max_run=1)
    with pytest.raises(TrainingJobError, match="MaxRuntimeExceeded"):
        est.fit(logs=False)
    assert est.latest_training_job.describe()["TrainingTimeInSeconds"] < 10


def test_two_instances_run_two_ranks_under_torchrun(tmp_path):
    write_script(tmp_path / "src", "train.py", """
        import json, os
        import torch
        import torch.distributed as dist
        dist.init_process_group("gloo")
        env = json.loads(os.environ["SM_TRAINING_ENV"])
        total = torch.tensor([float(dist.get_rank() + 1)])
        dist.all_reduce(total)
        print(f"host={os.environ['SM_CURRENT_HOST']} rank={dist.get_rank()} world={dist.get_world_size()} "
              f"master={env['is_master']} hosts={','.join(json.loads(os.environ['SM_HOSTS']))} sum={total.item()}")
        if env["is_master"]:
            open(os.path.join(os.environ["SM_MODEL_DIR"], "written-by"), "w").write(env["current_host"])
        dist.destroy_process_group()
    """)
    est = PyTorch(entry_point="train.py", source_dir=str(tmp_path / "src"), instance_count=2,
                  jobs_root=str(tmp_path / "jobs"))
    est.fit(logs=False)
    log = (tmp_path / "jobs" / est.latest_training_job.name / "logs" / "training.log").read_text()
    assert "host=algo-1 rank=0 world=2 master=True hosts=algo-1,algo-2 sum=3.0" in log
    assert "host=algo-2 rank=1 world=2 master=False hosts=algo-1,algo-2 sum=3.0" in log
    assert (tmp_path / "jobs" / est.latest_training_job.name / "model" / "written-by").read_text() == "algo-1"


def test_requirements_are_installed_on_request(tmp_path):
    write_script(tmp_path / "src", "train.py", "print('trained')\n")
    (tmp_path / "src" / "requirements.txt").write_text(str(tmp_path / "no-such-package") + "\n")
    common = dict(entry_point="train.py", source_dir=str(tmp_path / "src"), jobs_root=str(tmp_path / "jobs"))
    Estimator(**common).fit(logs=False)  # not asked: the broken requirements file is left alone
    with pytest.raises(TrainingJobError, match="installing requirements.txt failed") as failed:
        Estimator(**common, install_requirements=True).fit(logs=False)
    assert "no-such-package" in str(failed.value)  # pip's own error, quoted


@pytest.mark.parametrize("settings, inputs, message", [
    (dict(entry_point="missing.py"), None, "entry_point 'missing.py' not found"),
    (dict(entry_point="train.py", source_dir="nowhere"), None, "source_dir nowhere is not a folder"),
    (dict(entry_point="{script}"), {"train": "/no/such/data.csv"}, "channel 'train': /no/such/data.csv does not exist"),
    (dict(entry_point="{script}"), {"train": "s3://bucket/train"}, "is an S3 URI"),
    (dict(entry_point="{script}", instance_type="p3.2xlarge"), None,
     "instance_type must be local, local_gpu or a SageMaker type such as ml.p3.2xlarge, not 'p3.2xlarge'"),
    (dict(entry_point="{script}", instance_count=0), None, "instance_count must be at least 1, not 0"),
    (dict(entry_point="{script}", metric_definitions=[{"Name": "loss"}]), None, "'Name': ..., 'Regex': ..."),
    (dict(entry_point="{script}", use_spot_instances=True, max_run=100, max_wait=10), None,
     "max_wait must be at least max_run"),
    (dict(entry_point="{script}", hyperparameter={"epochs": 1}), None, "unknown Estimator argument(s) hyperparameter"),
])
def test_bad_arguments_get_clear_errors(tmp_path, settings, inputs, message):
    script = write_script(tmp_path, "train.py", "print('hi')\n")
    settings = {k: (str(script) if v == "{script}" else v) for k, v in settings.items()}
    with pytest.raises(ConfigError, match=re.escape(message)):
        Estimator(jobs_root=str(tmp_path / "jobs"), **settings).fit(inputs, logs=False)
    # Nothing was run: a bad argument never leaves a half-made job behind.
    assert not list((tmp_path / "jobs").glob("*/status.json"))


def test_builtin_text_classifier_writes_its_job_as_a_settings_file(tmp_path):
    from nlpforge.sdk import TextClassifier
    from nlpforge.sdk.contract import JobPaths
    from nlpforge.training.run import read_job

    train = tmp_path / "train.csv"
    train.write_text("text,label\ngood,pos\nbad,neg\n")
    est = TextClassifier(base_model="bert-tiny", hyperparameters={"epochs": 2, "learning_rate": 1e-3,
                                                                  "text-column": ["title", "body"]},
                         jobs_root=str(tmp_path / "jobs"))
    paths = JobPaths(tmp_path / "jobs" / "job")
    args = est.command_args(paths, {"train": train})
    assert args == [str(paths.input_config / "nlpforge-job.json")]  # no command line to compose and parse back
    job = read_job(args[0])
    assert job.task == "text-classification" and job.output == str(paths.model)
    assert job.data.train == str(paths.channel("train") / "train.csv")
    assert (job.model.model, job.train.epochs, job.train.learning_rate) == ("bert-tiny", 2, 1e-3)
    assert job.data.text_column == ["title", "body"] and job.runtime.progress is False
    assert (job.checkpoint.checkpoint_dir, job.checkpoint.resume) == (str(paths.checkpoints.resolve()), "auto")
    with pytest.raises(ConfigError, match="unknown TextClassifier hyperparameter"):
        TextClassifier(hyperparameters={"learning-rat": 1e-3})
    with pytest.raises(ConfigError, match="epochs must be at least 1"):
        TextClassifier(hyperparameters={"epochs": 0})
    with pytest.raises(ConfigError, match="needs a 'train' channel"):
        est.command_args(paths, {"validation": train})
    with pytest.raises(ConfigError, match="has no channel 'extra'"):
        est.command_args(paths, {"train": train, "extra": train})


def test_the_training_engines_metrics_jsonl_becomes_job_metrics(tmp_path):
    script = write_script(tmp_path, "train.py", """
        import json, os
        with open(os.path.join(os.environ["SM_MODEL_DIR"], "metrics.jsonl"), "w") as handle:
            for step in (1, 2, 3):
                handle.write(json.dumps({"step": step, "epoch": 0, "loss": 1.0 / step, "learning_rate": 1e-3,
                                         "samples_per_second": 50.0}) + "\\n")
            handle.write(json.dumps({"step": 3, "epoch": 1, "validation_accuracy": 0.75,
                                     "validation_macro_f1": 0.7}) + "\\n")
    """)
    est = Estimator(entry_point=str(script), jobs_root=str(tmp_path / "jobs"), role="SageMakerRole",
                    framework_version="2.13")  # SageMaker-only arguments are accepted
    est.fit(logs=False)
    final = {m["MetricName"]: m["Value"] for m in est.latest_training_job.describe()["FinalMetricDataList"]}
    assert final == {"loss": pytest.approx(1 / 3), "learning_rate": 1e-3, "samples_per_second": 50.0,
                     "validation_accuracy": 0.75, "validation_macro_f1": 0.7}
    rows = [json.loads(line) for line in (tmp_path / "jobs" / est.latest_training_job.name / "metrics.jsonl")
            .read_text().splitlines()]
    assert [(r["step"], r["value"]) for r in rows if r["name"] == "loss"] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]


@pytest.mark.parametrize("live", ["model folder", "training folder"])
def test_engine_metrics_are_read_while_the_job_runs_and_replace_the_regex(tmp_path, live):
    # The engine writes OUTPUT.training/metrics.jsonl while it trains and moves it into the model at the end.
    script = write_script(tmp_path, "train.py", f"""
        import json, os, shutil, time
        model = os.environ["SM_MODEL_DIR"].rstrip("/")
        path = os.path.join(model + ".training" if {live == "training folder"} else model, "metrics.jsonl")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        for step in (1, 2):
            with open(path, "a") as handle:
                handle.write(json.dumps({{"step": step * 10, "epoch": step, "validation_accuracy": 0.4 * step}}) + "\\n")
            print(f"epoch {{step}}: validation_accuracy {{0.4 * step:.4f}}", flush=True)
            time.sleep(1.0)
        shutil.move(path, os.path.join(model, "metrics.jsonl"))
    """)
    seen = []
    est = Estimator(entry_point=str(script), jobs_root=str(tmp_path / "jobs"),
                    metric_definitions=[{"Name": "validation_accuracy", "Regex": r"validation_accuracy ([0-9.]+)"}])
    est.fit(logs=False, on_metric=lambda name, value, step: seen.append((name, value, step, time.monotonic())))
    ended = time.monotonic()
    engine_steps = [(round(value, 4), step) for name, value, step, _ in seen if step >= 10]
    assert engine_steps == [(0.4, 10), (0.8, 20)]
    first_engine = next(at for _, _, step, at in seen if step >= 10)
    assert first_engine < ended - 0.5  # read while the script still ran, not after it
    assert len(seen) <= 3  # once the engine reports a metric, the regex no longer counts it
