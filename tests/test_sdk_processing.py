"""Processing jobs and multi-instance batch transform: sharding, gathering, failures, and two real workloads."""
import csv
import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import AMAZON, toy_rows, write_csv
from nlpforge.errors import ConfigError, EndpointError, ProcessingJobError
from nlpforge.sdk import ProcessingInput, ProcessingOutput, Processor, ScriptProcessor, Transformer
from nlpforge.settings import cores

BENCH = Path(__file__).resolve().parents[1] / "bench" / "scale_processing.py"

# Writes what this instance received and learned about itself to <output>/<host>.json.
REPORT_SCRIPT = '''
import argparse, json, os
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--data")
parser.add_argument("--shared")
parser.add_argument("--output")
parser.add_argument("--config")
args = parser.parse_args()
resources = json.loads((Path(args.config) / "resourceconfig.json").read_text())
job = json.loads((Path(args.config) / "processingjobconfig.json").read_text())
listing = lambda folder: sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())
report = {"resources": resources, "job": job["ProcessingJobName"], "data": listing(args.data),
          "shared": listing(args.shared), "env_host": os.environ["CURRENT_HOST"]}
(Path(args.output) / (resources["current_host"] + ".json")).write_text(json.dumps(report))
'''


def script(tmp_path, text: str, name: str = "process.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


@pytest.fixture
def data_files(tmp_path):
    """Five files, two of them in a sub-folder, and a one-file input."""
    data = tmp_path / "data"
    for key in ("a.txt", "b.txt", "c.txt", "sub/d.txt", "sub/e.txt"):
        (data / key).parent.mkdir(parents=True, exist_ok=True)
        (data / key).write_text(key)
    (tmp_path / "vocab.txt").write_text("shared")
    return data, tmp_path / "vocab.txt"


def report_run(tmp_path, data_files, instances: int, distribution: str = "ShardedByS3Key"):
    data, vocab = data_files
    processor = ScriptProcessor(command=["python3"], instance_count=instances, jobs_root=str(tmp_path / "jobs"))
    processor.run(code=script(tmp_path, REPORT_SCRIPT),
                  inputs=[ProcessingInput(str(data), "/opt/ml/processing/input/data",
                                          s3_data_distribution_type=distribution),
                          ProcessingInput(str(vocab), "/opt/ml/processing/input/shared")],
                  outputs=[ProcessingOutput("/opt/ml/processing/output", str(tmp_path / f"out-{instances}"))],
                  arguments=["--data", "/opt/ml/processing/input/data", "--shared=/opt/ml/processing/input/shared",
                             "--output", "/opt/ml/processing/output", "--config", "/opt/ml/config"], logs=False)
    reports = {p.stem: json.loads(p.read_text()) for p in (tmp_path / f"out-{instances}").glob("*.json")}
    return processor, reports


def test_sharded_input_gives_file_i_to_instance_i_mod_n_and_a_replicated_one_goes_to_all(tmp_path, data_files):
    processor, reports = report_run(tmp_path, data_files, 2)
    assert sorted(reports) == ["algo-1", "algo-2"]
    assert reports["algo-1"]["data"] == ["a.txt", "c.txt", "sub/e.txt"]
    assert reports["algo-2"]["data"] == ["b.txt", "sub/d.txt"]
    assert reports["algo-1"]["shared"] == reports["algo-2"]["shared"] == ["vocab.txt"]
    for host, report in reports.items():
        assert report["resources"] == {"current_host": host, "hosts": ["algo-1", "algo-2"]}
        assert report["env_host"] == host and report["job"] == processor.latest_job.name
    job = processor.describe()
    assert job["ProcessingJobStatus"] == "Completed"
    assert job["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 2
    assert [i["InputName"] for i in job["ProcessingInputs"]] == ["input-1", "input-2", "code"]
    assert job["ProcessingInputs"][0]["S3Input"]["S3DataDistributionType"] == "ShardedByS3Key"
    assert processor.jobs == [processor.latest_job]


def test_fully_replicated_input_gives_every_instance_every_file(tmp_path, data_files):
    _, reports = report_run(tmp_path, data_files, 2, "FullyReplicated")
    every = ["a.txt", "b.txt", "c.txt", "sub/d.txt", "sub/e.txt"]
    assert reports["algo-1"]["data"] == reports["algo-2"]["data"] == every


def test_processor_runs_an_entrypoint_in_the_background_and_gathers_nested_outputs(tmp_path):
    code = ("import os, sys, pathlib; out = pathlib.Path(sys.argv[1]) / os.environ['CURRENT_HOST'];"
            "out.mkdir(); (out / 'part.txt').write_text(os.environ['GREETING'])")
    processor = Processor(entrypoint=["python3", "-c", code], instance_count=3, env={"GREETING": "hello"},
                          jobs_root=str(tmp_path / "jobs"), base_job_name="greet", role="ignored-here")
    processor.run(outputs=[ProcessingOutput("/opt/ml/processing/results", output_name="results")],
                  arguments=["/opt/ml/processing/results"], wait=False)
    job = processor.latest_job.wait()
    assert job["ProcessingJobStatus"] == "Completed" and job["ProcessingJobName"].startswith("greet-")
    gathered = Path(job["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"])
    assert gathered == Path(job["JobFolder"]) / "output" / "results"
    assert sorted(p.relative_to(gathered).as_posix() for p in gathered.rglob("*.txt")) == \
        ["algo-1/part.txt", "algo-2/part.txt", "algo-3/part.txt"]
    assert (gathered / "algo-3" / "part.txt").read_text() == "hello"


def test_two_instances_writing_the_same_file_fail_the_job_and_nothing_is_copied(tmp_path):
    code = "import sys, pathlib; (pathlib.Path(sys.argv[1]) / 'result.txt').write_text('x')"
    processor = Processor(entrypoint=["python3", "-c", code], instance_count=2, jobs_root=str(tmp_path / "jobs"))
    with pytest.raises(ProcessingJobError, match="algo-1 and algo-2 both wrote result.txt") as error:
        processor.run(outputs=[ProcessingOutput("/opt/ml/processing/out", str(tmp_path / "out"))],
                      arguments=["/opt/ml/processing/out"], logs=False)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()
    assert processor.describe()["ProcessingJobStatus"] == "Failed"


def test_a_failing_instance_fails_the_job_with_its_error(tmp_path):
    failing = script(tmp_path, '''
        import os, time
        if os.environ["CURRENT_HOST"] == "algo-2":
            raise ValueError("shard 2 is corrupt")
        time.sleep(30)
    ''')
    processor = ScriptProcessor(command=["python3"], instance_count=2, jobs_root=str(tmp_path / "jobs"))
    with pytest.raises(ProcessingJobError, match=r"instance algo-2 exited with code 1: ValueError: shard 2 is corrupt") \
            as error:
        processor.run(code=failing, logs=False)
    assert "\n" not in str(error.value)
    job = processor.describe()
    assert job["ProcessingJobStatus"] == "Failed" and "shard 2 is corrupt" in job["FailureReason"]
    assert "ValueError" in Path(job["HostLogFiles"]["algo-2"]).read_text()


def test_an_instance_running_past_max_runtime_is_stopped_and_the_job_fails(tmp_path):
    processor = Processor(entrypoint=["python3", "-c", "import time; time.sleep(60)"], instance_count=2,
                          max_runtime_in_seconds=1, jobs_root=str(tmp_path / "jobs"))
    with pytest.raises(ProcessingJobError, match="MaxRuntimeExceeded"):
        processor.run(logs=False)
    job = processor.describe()
    assert job["ProcessingJobStatus"] == "Failed" and job["ProcessingEndTime"]


@pytest.mark.parametrize("make, message", [
    (lambda p: ProcessingInput(str(p), s3_data_distribution_type="ShardedByKey"),
     "s3_data_distribution_type must be FullyReplicated or ShardedByS3Key"),
    (lambda p: ScriptProcessor(instance_count=0), "instance_count must be a whole number of at least 1"),
    (lambda p: ScriptProcessor(jobs_root=str(p)).run(code=str(p / "missing.py")), "code file"),
    (lambda p: ScriptProcessor(jobs_root=str(p)).run(
        code=script(p, "print(1)"), inputs=[ProcessingInput(str(p / "nowhere"))]), "does not exist"),
    (lambda p: ProcessingInput(str(p), destination="/data/input"), "must be a container path under"),
    (lambda p: Processor(jobs_root=str(p)).run(), "Processor needs entrypoint"),
    (lambda p: Processor(entrypoint=["true"], colour="blue"), "unknown Processor argument(s) colour"),
])
def test_bad_processing_arguments_are_one_line_errors(tmp_path, make, message):
    with pytest.raises(ConfigError) as error:
        make(tmp_path)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.fixture
def model(tiny_model):
    return tiny_model.output


def write_reviews(folder: Path) -> Path:
    for number, name in enumerate(("a.csv", "b.csv", "c.csv")):
        write_csv(folder / name, toy_rows(12 + number, seed=number))
    return folder


def test_batch_transform_on_two_instances_shards_the_files_and_writes_what_one_instance_writes(model, tmp_path):
    inputs = write_reviews(tmp_path / "batch")
    one = Transformer(model, output_path=str(tmp_path / "one")).transform(str(inputs))
    transformer = Transformer(model, output_path=str(tmp_path / "two"), instance_count=2,
                              jobs_root=str(tmp_path / "jobs"))
    two = transformer.transform(str(inputs))
    assert [p.name for p in two] == [p.name for p in one] == ["a.csv.out", "b.csv.out", "c.csv.out"]
    assert [p.read_bytes() for p in two] == [p.read_bytes() for p in one]
    assert len(one[2].read_text().splitlines()) == 14
    folder = Path(transformer.latest_transform_job.describe()["JobFolder"])
    shards = {host: sorted(p.name for p in (folder / "hosts" / host / "processing/input/data").iterdir())
              for host in ("algo-1", "algo-2")}
    assert shards == {"algo-1": ["a.csv", "c.csv"], "algo-2": ["b.csv"]}


def test_batch_transform_errors_name_the_instance_and_the_problem(model, tmp_path):
    inputs = write_reviews(tmp_path / "batch")
    with pytest.raises(EndpointError, match="instance_count must be a whole number"):
        Transformer(model, output_path=str(tmp_path / "out"), instance_count=0)
    transformer = Transformer(model, output_path=str(tmp_path / "out"), instance_count=2,
                              jobs_root=str(tmp_path / "jobs"))
    with pytest.raises(EndpointError, match=r"instance algo-\d exited with code 2: .*no column 'body'") as error:
        transformer.transform(str(inputs), text_columns=["body"])
    assert "\n" not in str(error.value)


# -- real workloads ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("scale_processing_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.shared_data
def test_imdb_tokenised_by_two_instances_is_identical_to_one(imdb, bench, tmp_path):
    rows = bench.split_corpus(imdb, tmp_path / "shards", shards=4, rows=3000)
    assert rows == 3000
    one = bench.tokenize_shards(tmp_path / "shards", tmp_path / "one", 1, tmp_path / "jobs", tmp_path)
    two = bench.tokenize_shards(tmp_path / "shards", tmp_path / "two", 2, tmp_path / "jobs", tmp_path)
    assert sorted(p.name for p in two.iterdir()) == [f"imdb-{i:03d}.tokens.txt" for i in range(4)]
    text = bench.concatenated(one)
    assert text == bench.concatenated(two)
    lines = text.decode().splitlines()
    assert len(lines) > 3000 and all(line == line.lower() for line in lines)
    assert not any("<br" in line for line in lines)  # the HTML breaks IMDB is full of are gone
    logs = sorted((tmp_path / "jobs" / "_processing").glob("imdb-tokens-2-*/logs/algo-*.log"))
    assert [log.read_text().splitlines()[0] for log in logs] == [
        "algo-1: 2 shard(s): imdb-000.csv, imdb-002.csv", "algo-2: 2 shard(s): imdb-001.csv, imdb-003.csv"]


@pytest.mark.shared_data
def test_amazon_reviews_batch_predicted_by_two_instances_match_one(amazon, model, tmp_path):
    inputs = tmp_path / "amazon"
    inputs.mkdir()
    for source in sorted(AMAZON.glob("*.csv")):
        with open(source, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = [row for _, row in zip(range(60), reader)]
        write_csv(inputs / source.name, rows, fieldnames=reader.fieldnames)
    # Matmuls round differently with another thread count; earlier tests may have set this process's to 1.
    threads = torch.get_num_threads()
    torch.set_num_threads(cores())  # what each instance, a fresh process, starts with
    try:
        one = Transformer(model, output_path=str(tmp_path / "one")).transform(str(inputs),
                                                                                    text_columns=["review_body"])
    finally:
        torch.set_num_threads(threads)
    two = Transformer(model, output_path=str(tmp_path / "two"), instance_count=2,
                      jobs_root=str(tmp_path / "jobs")).transform(str(inputs), text_columns=["review_body"])
    assert len(one) == 4 and [p.name for p in two] == [p.name for p in one]
    assert [p.read_bytes() for p in two] == [p.read_bytes() for p in one]
    assert all(len(p.read_text().splitlines()) == 60 for p in two)


def test_the_transformer_stays_importable_from_predictor():
    from nlpforge.sdk.predictor import Transformer as FromPredictor

    assert FromPredictor is Transformer and "nlpforge.sdk.transform" in sys.modules
