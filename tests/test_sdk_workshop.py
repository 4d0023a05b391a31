"""A SageMaker workshop notebook's script-mode training, run as written: the PyTorch estimator's arguments,
ml.* instance types, input modes, the Debugger hook file, per-host model folders, logs and failure reasons.

The script in tests/data/workshop/src/train_simple.py is written like the data-science-on-aws workshop's
(03_Train_Reviews_RoBERTa_Transformers_PyTorch_ScriptMode), with a bag-of-words model; the TSV channels are
in tests/data/workshop/data/.
"""
import json
import re
import tarfile
import textwrap
from pathlib import Path

import pytest

from nlpforge.errors import ConfigError, TrainingJobError
from nlpforge.sdk import Estimator, JSONLinesDeserializer, JSONLinesSerializer, PyTorch, PyTorchModel
from serving_support import free_ports

WORKSHOP = Path(__file__).parent / "data" / "workshop"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
HYPERPARAMETERS = {"epochs": 1, "learning_rate": 0.5, "train_batch_size": 8, "train_steps_per_epoch": 3,
                   "validation_batch_size": 8, "validation_steps_per_epoch": 2, "freeze_bert_layer": False,
                   "enable_sagemaker_debugger": True, "run_validation": True, "seed": 42, "backend": "gloo",
                   "max_seq_length": 64}
METRIC_DEFINITIONS = [{"Name": "validation:loss", "Regex": "val_loss: ([0-9.]+)"},
                      {"Name": "validation:accuracy", "Regex": "val_acc: ([0-9.]+)"}]
MAPPING = re.compile(r"instance_type ml\.p3\.2xlarge runs on this machine as local(_gpu)? ")


class CollectionConfig:
    """The attributes of sagemaker.debugger.CollectionConfig."""

    def __init__(self, name, parameters=None):
        self.name, self.parameters = name, parameters


class DebuggerHookConfig:
    """The attributes of sagemaker.debugger.DebuggerHookConfig."""

    def __init__(self, s3_output_path=None, container_local_output_path=None, hook_parameters=None,
                 collection_configs=None):
        self.s3_output_path, self.container_local_output_path = s3_output_path, container_local_output_path
        self.hook_parameters, self.collection_configs = hook_parameters, collection_configs


@pytest.fixture(autouse=True)
def no_tracking(monkeypatch):
    monkeypatch.setenv("NLPFORGE_TRACKING", "0")


def workshop_estimator(jobs_root, **changes):
    """The notebook's PyTorch(...) call, with its exact arguments."""
    arguments = dict(entry_point="train_simple.py", source_dir="src", role=ROLE, instance_count=2,
                     instance_type="ml.p3.2xlarge", py_version="py3", framework_version="1.6.0",
                     hyperparameters=HYPERPARAMETERS, input_mode="File",
                     debugger_hook_config=DebuggerHookConfig(
                         s3_output_path="s3://bucket/debugger", hook_parameters={"save_interval": 10},
                         collection_configs=[CollectionConfig("losses", {"save_interval": "5"})]),
                     metric_definitions=METRIC_DEFINITIONS, max_run=600, jobs_root=str(jobs_root))
    return PyTorch(**{**arguments, **changes})


def test_the_workshop_notebook_trains_on_two_hosts_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(WORKSHOP)  # the notebook's relative source_dir and channels
    est = workshop_estimator(tmp_path / "jobs")
    est.fit({"train": "data/train", "validation": "data/validation"}, job_name="workshop")
    shown = capsys.readouterr().out
    job = est.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Completed", job["FailureReason"]
    folder = tmp_path / "jobs" / "workshop"

    # ml.p3.2xlarge ran here, and one line said how.
    assert len(MAPPING.findall(shown)) == 1
    assert job["ResourceConfig"]["InstanceType"] == "ml.p3.2xlarge"
    assert job["ResourceConfig"]["LocalInstanceType"] in ("local", "local_gpu")
    assert job["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    assert json.loads((folder / "input" / "config" / "inputdataconfig.json").read_text())["train"][
        "TrainingInputMode"] == "File"

    # The metric definitions caught the validation lines of both hosts.
    metrics = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert set(metrics) == {"validation:loss", "validation:accuracy"}
    assert 0 <= metrics["validation:accuracy"] <= 100
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert sum(row["name"] == "validation:loss" for row in rows) == 2

    # The Debugger hook file, in SageMaker's layout, was read by the script on each host.
    hook = json.loads((folder / "input" / "config" / "debughookconfig.json").read_text())
    assert hook == {"S3OutputPath": "s3://bucket/debugger", "LocalPath": str(folder / "output" / "tensors"),
                    "HookParameters": {"save_interval": "10"},
                    "CollectionConfigurations": [{"CollectionName": "losses",
                                                  "CollectionParameters": {"save_interval": "5"}}]}
    assert job["DebugHookConfig"] == hook
    for host in ("algo-1", "algo-2"):
        assert f"[{host}] smdebug hook config from {folder}/input/config/debughookconfig.json" in shown
        assert json.loads((folder / "output" / "tensors" / f"{host}-losses.json").read_text())["losses"]

    # Each host had its own SM_MODEL_DIR; model.tar.gz holds algo-1's.
    model_dirs = dict(re.findall(r"current_host=(algo-\d) model_dir=(\S+)", shown))
    assert model_dirs == {"algo-1": str(folder / "model"), "algo-2": str(folder / "hosts" / "algo-2" / "model")}
    assert (folder / "hosts" / "algo-2" / "model" / "host.txt").read_text() == "algo-2"
    with tarfile.open(est.model_data) as tar:
        assert sorted(tar.getnames()) == ["host.txt", "model.pth", "vocabulary.json"]
        assert tar.extractfile("host.txt").read() == b"algo-1"
        assert tar.extractfile("model.pth").read() == (folder / "model" / "model.pth").read_bytes()

    # One stream per host; shown together, every line says whose it is and none is spliced.
    combined = (folder / "logs" / "training.log").read_text().splitlines()
    assert all(re.match(r"\[(algo-[12]|torchrun|nlpforge)\] ", line) for line in combined), combined
    for line in combined:
        if "train_acc" in line:
            assert re.fullmatch(r"\[algo-[12]\] \[epoch: 1 / 1, step: \d\] train_loss: [0-9.]+ - "
                                r"train_acc: [0-9.]+%", line), line
    for host in ("algo-1", "algo-2"):
        assert f"[{host}] saved model.pth on {host}" in combined  # its last line had no newline
        own = (folder / "logs" / f"{host}.log").read_text().splitlines()
        assert f"saved model.pth on {host}" in own
        assert own == [line.removeprefix(f"[{host}] ") for line in combined if line.startswith(f"[{host}] ")]
        assert not any("algo-" in line and host not in line for line in own if "current_host" in line)
    assert shown.count("[algo-2] saved model.pth on algo-2") == 1  # fit(logs=True) streamed the same lines

    # The notebook's deploy: its model.tar.gz served through the inference script, predicted as it predicts.
    model = PyTorchModel(model_data=est.model_data, role=ROLE, entry_point=str(WORKSHOP / "inference.py"),
                         framework_version="1.6.0", py_version="py3", jobs_root=str(tmp_path / "jobs"))
    predictor = model.deploy(initial_instance_count=1, instance_type="ml.m5.4xlarge", endpoint_name="workshop",
                             serializer=JSONLinesSerializer(), deserializer=JSONLinesDeserializer(), **free_ports())
    try:
        answers = predictor.predict([{"features": ["I love this dress"]}, {"features": ["Awful fit."]}])
        assert [set(a) for a in answers] == [{"predicted_label", "probability"}] * 2
        assert all(a["predicted_label"] in (-1, 0, 1) and 0 < a["probability"] <= 1 for a in answers)
    finally:
        predictor.delete_endpoint()

    est.logs(host="algo-2")
    assert capsys.readouterr().out.splitlines() == (folder / "logs" / "algo-2.log").read_text().splitlines()


FAILING_ON_ALGO_2 = '''
import json, os, time
import torch.distributed as dist
dist.init_process_group("gloo")
host = os.environ["SM_CURRENT_HOST"]
print(f"{host} reading its shard", flush=True)
if host == "algo-2":
    time.sleep(0.5)
    raise ValueError("label_id column missing in part-algo-2.tsv")
dist.barrier()  # algo-1 waits for algo-2, and fails when it goes
'''


def test_a_script_failing_on_one_host_reports_its_own_error_and_host(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text(textwrap.dedent(FAILING_ON_ALGO_2))
    est = PyTorch(entry_point="train.py", source_dir=str(tmp_path / "src"), role=ROLE, instance_count=2,
                  instance_type="ml.c5.xlarge", jobs_root=str(tmp_path / "jobs"))
    with pytest.raises(TrainingJobError) as raised:
        est.fit(logs=False)
    reason = est.latest_training_job.describe()["FailureReason"]
    for text in (str(raised.value), reason,
                 (tmp_path / "jobs" / est.latest_training_job.name / "output" / "failure").read_text()):
        assert 'ErrorMessage "ValueError: label_id column missing in part-algo-2.tsv"' in text
        assert "Host algo-2" in text
        assert 'raise ValueError("label_id column missing in part-algo-2.tsv")' in text  # the traceback
        assert "ChildFailedError" not in text


def test_pipe_and_fast_file_input_modes_run_as_file_with_a_note(tmp_path, capsys):
    script = tmp_path / "train.py"
    script.write_text("import json, os\nprint(json.loads(os.environ['SM_INPUT_DATA_CONFIG'])['train']"
                      "['TrainingInputMode'], sorted(os.listdir(os.environ['SM_CHANNEL_TRAIN'])))\n")
    est = Estimator(entry_point=str(script), input_mode="Pipe", jobs_root=str(tmp_path / "jobs"),
                    debugger_hook_config=False)
    est.fit({"train": str(WORKSHOP / "data" / "train")})
    shown = capsys.readouterr().out
    assert "[nlpforge] input_mode Pipe runs as File" in shown
    assert "File ['part-algo-1-womens_clothing_ecommerce_reviews.tsv']" in shown
    job = est.latest_training_job.describe()
    assert job["AlgorithmSpecification"]["TrainingInputMode"] == "Pipe"
    folder = Path(job["JobFolder"])
    assert not (folder / "input" / "config" / "debughookconfig.json").exists()  # debugger_hook_config=False


def test_a_default_debugger_hook_config_is_written_as_sagemaker_does(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("import os\nprint(open(os.environ['SMDEBUG_CONFIG_FILE_PATH']).read())\n")
    est = Estimator(entry_point=str(script), jobs_root=str(tmp_path / "jobs"), output_path=str(tmp_path / "out"))
    est.fit(logs=False)
    folder = Path(est.latest_training_job.describe()["JobFolder"])
    hook = json.loads((folder / "input" / "config" / "debughookconfig.json").read_text())
    assert hook == {"S3OutputPath": str(tmp_path / "out"), "LocalPath": str(folder / "output" / "tensors")}
    assert '"S3OutputPath"' in (folder / "logs" / "training.log").read_text()


def test_an_ml_instance_type_without_gpu_runs_as_local_and_says_so(tmp_path, capsys):
    script = tmp_path / "train.py"
    script.write_text("import os\nprint('type', os.environ['SM_CURRENT_INSTANCE_TYPE'], 'gpus', "
                      "os.environ['SM_NUM_GPUS'])\n")
    est = Estimator(entry_point=str(script), instance_type="ml.m5.xlarge", jobs_root=str(tmp_path / "jobs"))
    est.fit()
    shown = capsys.readouterr().out
    assert shown.count("[nlpforge] instance_type ml.m5.xlarge runs on this machine as local (CPU: the type has no "
                       "GPU)") == 1
    assert "type ml.m5.xlarge gpus 0" in shown


@pytest.mark.parametrize("settings, message", [
    (dict(input_mode="Bogus"), "input_mode must be one of File, Pipe, FastFile, not 'Bogus'"),
    (dict(train_instance_count=2), "train_instance_count is SageMaker Python SDK v1's name; use instance_count"),
    (dict(debugger_hook_config={"s3_output_path": "s3://b", "collections": []}),
     "debugger_hook_config has unknown key(s) collections"),
    (dict(debugger_hook_config="yes"), "debugger_hook_config must be a DebuggerHookConfig, a dict or False"),
    (dict(debugger_hook_config={"collection_configs": [{"parameters": {}}]}),
     "each debugger collection config needs a name"),
    (dict(no_such_argument=1), "unknown Estimator argument(s) no_such_argument"),
])
def test_bad_sagemaker_arguments_get_clear_errors(tmp_path, settings, message):
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        Estimator(entry_point=str(script), jobs_root=str(tmp_path / "jobs"), **settings)


def test_every_sagemaker_estimator_argument_is_accepted(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    est = PyTorch(
        entry_point=str(script), role=ROLE, instance_count=1, instance_type="ml.g4dn.xlarge", volume_size=30,
        volume_kms_key="key", max_run=60, input_mode="FastFile", output_kms_key="key", base_job_name="all-args",
        sagemaker_session=object(), tags=[{"Key": "team", "Value": "nlp"}], subnets=["subnet-1"],
        security_group_ids=["sg-1"], model_uri="s3://bucket/model.tar.gz", model_channel_name="model",
        encrypt_inter_container_traffic=True, use_spot_instances=False, checkpoint_s3_uri="s3://bucket/ckpt",
        rules=[], debugger_hook_config={"S3OutputPath": "s3://bucket/debug"}, tensorboard_output_config=None,
        enable_sagemaker_metrics=True, enable_network_isolation=True, profiler_config=None, disable_profiler=True,
        environment={"A": "1"}, max_retry_attempts=0, git_config=None, container_log_level=10,
        code_location="s3://bucket/code", dependencies=[], instance_groups=None, keep_alive_period_in_seconds=0,
        framework_version="1.6.0", py_version="py3", image_uri="image", distribution={"torch_distributed": {}},
        jobs_root=str(tmp_path / "jobs"))
    est.fit(logs=False)
    job = est.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Completed"
    assert job["ResourceConfig"]["InstanceType"] == "ml.g4dn.xlarge"
    assert job["DebugHookConfig"]["S3OutputPath"] == "s3://bucket/debug"
    hyperparameters = json.loads((Path(job["JobFolder"]) / "input" / "config" / "hyperparameters.json").read_text())
    assert hyperparameters["sagemaker_container_log_level"] == "10"


@pytest.mark.parametrize("order, launcher, expected", [
    # torchrun saw both hosts exit in one poll and named rank 0, whose error only says its peer went away.
    (["algo-1", "algo-2"], ["Root Cause (first observed failure):", "  rank      : 0 (local_rank: 0)",
                            "  exitcode  : 1 (pid: 10)"], ("algo-2", None)),
    (["algo-2", "algo-1"], ["Root Cause (first observed failure):", "  rank      : 1 (local_rank: 1)",
                            "  exitcode  : 1 (pid: 11)"], ("algo-2", 1)),
    ([], [], ("algo-1", None)),
])
def test_the_failing_host_is_the_one_whose_error_is_its_own(order, launcher, expected):
    from nlpforge.sdk.runner import failing_host

    errors = {"algo-1": (["Traceback (most recent call last):", "RuntimeError: [pair.cc:553] Connection closed by "
                                                                 "peer [127.0.0.1]:46260"],
                         "RuntimeError: [pair.cc:553] Connection closed by peer [127.0.0.1]:46260"),
              "algo-2": (["Traceback (most recent call last):", "ValueError: bad row"], "ValueError: bad row")}
    if not order:
        errors = {host: ([], "") for host in errors}
    assert failing_host(["algo-1", "algo-2"], errors, launcher, order) == expected
