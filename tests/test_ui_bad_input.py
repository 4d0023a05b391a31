"""`nlpforge ui` given bad input: requests from other sites, damaged job folders, stores that are not what their
name says, broken model and monitoring files, bad flags. Each gets a page or a one-line error that names the
problem, never a traceback or a 500, and nothing the user has is changed."""
import hashlib
import http.client
import json
import logging
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import assert_user_error, run_cli
from markupsafe import escape
from serving_support import free_port
from ui_support import browser, needs_browser, running_ui, ui_client

from nlpforge.cli import main
from nlpforge.errors import ConfigError
from nlpforge.sdk.contract import JobSpec
from nlpforge.sdk.jobs import describe_job, job_paths, list_jobs, pid_alive, read_metrics
from nlpforge.serving.capture import DataCapture
from nlpforge.ui import UISettings
from nlpforge.ui.endpoints import servers
from nlpforge.ui.jobs import LOG_CHUNK, read_log

HOME = "http://127.0.0.1:8090"


@pytest.fixture(autouse=True)
def no_tracking_server(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("NLPFORGE_TRACKING", "0")


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- requests from another site ------------------------------------------------------------------------------------


@pytest.fixture
def capture(tmp_path):
    folder = tmp_path / "capture"
    writer = DataCapture(folder)
    for text in ("a dull film", "a fine film"):
        writer.record("stars", "1.0", 100, text, {"label": "pos", "score": 0.5,
                                                  "probabilities": {"neg": 0.5, "pos": 0.5}})
    writer.close()
    return folder


def labels_written(capture) -> list[str]:
    path = capture / "stars" / "review" / "labels.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def test_posts_from_another_sites_page_and_requests_for_another_host_name_are_refused(tmp_path, capture):
    client = ui_client(UISettings.of(jobs_root=str(tmp_path), capture=str(capture)))
    capture_id = client.get("/review").text.split('data-capture-id="')[1].split('"')[0]
    form = {"model": "stars", "capture_id": capture_id, "label": "neg"}
    for headers in [{"origin": "http://evil.example"}, {"origin": "null"}, {"origin": "http://127.0.0.1:9999"},
                    {"referer": "http://evil.example/page"}, {"origin": "http://evil.example", "referer": HOME}]:
        refused = client.post("/review/label", data=form, headers=headers, follow_redirects=False)
        assert refused.status_code == 403, headers
        assert "refused" in refused.text and HOME in refused.text
    predict = client.post("/endpoints/stars/predict", data={"text": "hi"}, headers={"origin": "http://evil.example"})
    assert predict.status_code == 403
    assert labels_written(capture) == []
    for host in ["evil.example:8090", "evil.example", "127.0.0.1:8090@evil.example", ""]:
        response = client.get("/jobs", headers={"host": host})
        assert response.status_code == 403 and "Host header" in response.text, host
    assert client.get("/jobs", headers={"host": "localhost:8090"}).status_code == 200
    tunnel = {"host": "localhost:9000", "origin": "http://localhost:9000"}  # ssh -L 9000:localhost:8090
    assert client.get("/jobs", headers={"host": tunnel["host"]}).status_code == 200
    refused = client.post("/review/label", data=form, headers={**tunnel, "origin": "http://localhost:9001"})
    assert refused.status_code == 403 and labels_written(capture) == []
    # the app's own pages post with its own origin (a browser) or none (a script)
    posted = client.post("/review/label", data=form, headers={"origin": HOME}, follow_redirects=False)
    assert posted.status_code == 303 and len(labels_written(capture)) == 1
    capture_id = client.get("/review").text.split('data-capture-id="')[1].split('"')[0]
    posted = client.post("/review/label", data={**form, "capture_id": capture_id},
                         headers={"referer": HOME + "/review?model=stars"}, follow_redirects=False)
    assert posted.status_code == 303 and len(labels_written(capture)) == 2


def test_on_every_interface_any_host_name_may_reach_the_app_but_the_token_still_guards_it(tmp_path):
    client = ui_client(UISettings.of(jobs_root=str(tmp_path), host="0.0.0.0", token="s3cret"))
    assert client.get("/jobs", headers={"host": "my-machine:8090"}).status_code == 401
    assert client.get("/jobs", headers={"host": "my-machine:9000"}).status_code == 401  # a tunnel's port too
    assert client.get("/jobs?token=s3cret", headers={"host": "my-machine:8090"}).status_code == 200


def test_with_a_token_a_proxy_or_tunnel_name_reaches_the_app_and_https_pages_may_post(tmp_path, capture):
    client = ui_client(UISettings.of(jobs_root=str(tmp_path), capture=str(capture), host="10.0.0.5",
                                     token="s3cret"))
    assert client.get("/jobs", headers={"host": "ui.example.com"}).status_code == 401  # the token, not a 403
    assert client.get("/jobs?token=s3cret", headers={"host": "ui.example.com"}).status_code == 200
    capture_id = client.get("/review", headers={"host": "ui.example.com"}).text.split(
        'data-capture-id="')[1].split('"')[0]
    form = {"model": "stars", "capture_id": capture_id, "label": "neg"}
    proxied = {"host": "ui.example.com", "origin": "https://ui.example.com"}  # a TLS proxy in front
    posted = client.post("/review/label", data=form, headers=proxied, follow_redirects=False)
    assert posted.status_code == 303 and len(labels_written(capture)) == 1
    other = client.post("/review/label", data=form, headers={**proxied, "origin": "https://evil.example"})
    assert other.status_code == 403


def test_a_refused_request_from_the_request_box_is_a_json_error(tmp_path):
    client = ui_client(UISettings.of(jobs_root=str(tmp_path)))
    refused = client.post("/endpoints/stars/predict", data={"text": "hi"}, headers={"origin": "http://evil.example"})
    assert refused.status_code == 403 and "takes changes only from its own pages" in refused.json()["error"]


def test_localhost_listens_on_the_ipv4_loopback():
    from nlpforge.ui.app import listening_socket

    with listening_socket("localhost", 0) as listener:
        assert listener.getsockname()[0] == "127.0.0.1"


# -- stores that are not MLflow's or Optuna's, a tracking server that is down --------------------------------------


def unrelated_database(path):
    with sqlite3.connect(path) as database:
        database.execute("CREATE TABLE notes (text TEXT)")
        database.execute("INSERT INTO notes VALUES ('mine')")
    return path


@pytest.mark.parametrize("kind", ["empty", "unrelated", "garbage"])
def test_a_file_that_is_not_an_mlflow_or_optuna_store_is_named_and_left_as_it_is(tmp_path, kind):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    for name in ("mlflow.db", "optuna.db"):
        if kind == "unrelated":
            unrelated_database(jobs / name)
        else:
            (jobs / name).write_bytes(b"" if kind == "empty" else b"not a database at all\n" * 100)
    before = {name: digest(jobs / name) for name in ("mlflow.db", "optuna.db")}
    client = ui_client(UISettings.of(jobs_root=str(jobs)))
    expected = "is not a SQLite database" if kind == "garbage" else "is not an MLflow store"
    page = client.get("/experiments")
    assert page.status_code == 200 and expected in page.text and str(jobs / "mlflow.db") in page.text
    compared = client.get("/experiments/compare?run=x")
    assert compared.status_code == 400 and expected in compared.text
    expected = "is not a SQLite database" if kind == "garbage" else "is not an Optuna store"
    page = client.get("/tuning")
    assert page.status_code == 200 and expected in page.text and str(jobs / "optuna.db") in page.text
    study = client.get("/tuning/x")
    assert study.status_code == 400 and expected in study.text
    assert client.get("/models").status_code == 200
    assert {name: digest(jobs / name) for name in ("mlflow.db", "optuna.db")} == before


def test_a_tracking_server_that_is_down_is_named_not_taken_for_a_missing_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = ui_client(UISettings.of(jobs_root=str(tmp_path)))
    page = client.get("/experiments")
    assert page.status_code == 200 and "cannot read the MLflow store http://127.0.0.1:" in page.text
    compared = client.get("/experiments/compare?run=some-job")
    assert compared.status_code == 400 and "cannot read the MLflow store" in compared.text
    assert "no MLflow run" not in compared.text


def test_a_multi_objective_study_is_listed_and_its_page_says_why_it_is_not_shown(tmp_path):
    from nlpforge.tuning.tuner import optuna_module

    optuna = optuna_module()
    study = optuna.create_study(study_name="pareto", storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                                directions=["maximize", "minimize"])
    study.optimize(lambda trial: (trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)), n_trials=2)
    optuna.create_study(study_name="a/b#c?d", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    client = ui_client(UISettings.of(jobs_root=str(tmp_path)))
    listed = client.get("/tuning")
    assert listed.status_code == 200 and "maximize, minimize" in listed.text
    page = client.get("/tuning/pareto")
    assert page.status_code == 400 and "multi-objective" in page.text
    # a name that is not a plain path segment still links to its page
    assert 'href="/tuning/a%2Fb%23c%3Fd"' in listed.text
    assert client.get("/tuning/a%2Fb%23c%3Fd").status_code == 200


# -- endpoints: no metrics, bad --server URLs, bad request bodies, names to quote ----------------------------------


class _Server(BaseHTTPRequestHandler):
    """The inference and management APIs of a server serving "stars" and "a/b#c?d"."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/ping":
            body = {"status": "Healthy"}
        elif self.path.startswith("/models?"):
            body = {"models": [{"modelName": "stars"}, {"modelName": "a/b#c?d"}]}
        elif self.path.endswith("/traffic"):
            body = {}
        else:
            body = [{"modelVersion": "1.0", "isDefault": True, "workers": [], "modelUrl": "stars.tar.gz"}]
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server_without_metrics(tmp_path):
    """A jobs root whose SDK endpoint answers /ping and the management API, with no metrics API."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    (tmp_path / "_endpoints").mkdir()
    (tmp_path / "_endpoints" / "stars.json").write_text(json.dumps(
        {"endpoint_name": "stars", "host": "127.0.0.1", "inference_port": port, "management_port": port,
         "metrics_port": free_port()}))
    yield tmp_path
    server.shutdown()


def test_a_server_whose_metrics_api_gives_nothing_shows_dashes_and_the_metrics_error(server_without_metrics):
    client = ui_client(UISettings.of(jobs_root=str(server_without_metrics)))
    listing = client.get("/endpoints")
    assert listing.status_code == 200 and "badge-up" in listing.text and "metrics API http://127.0.0.1:" in listing.text
    assert '<td class="num">–</td>' in listing.text
    page = client.get("/endpoints/stars")
    assert page.status_code == 200 and 'id="latency">– / – / –<' in page.text and "metrics API" in page.text
    # a model name with / # ? links to its page, and its page posts to its own predict route
    assert 'href="/endpoints/a%2Fb%23c%3Fd"' in listing.text
    odd = client.get("/endpoints/a%2Fb%23c%3Fd")
    assert odd.status_code == 200 and 'action="/endpoints/a%2Fb%23c%3Fd/predict"' in odd.text


@pytest.mark.parametrize("text, message", [
    ('{"text": "\\ud800"}', "\\ud800"),
    ("", "the request is empty"),
    ("   ", "the request is empty"),
])
def test_the_request_box_answers_json_errors(tmp_path, text, message):
    client = ui_client(UISettings.of(jobs_root=str(tmp_path)))
    answer = client.post("/endpoints/stars/predict", data={"text": text})
    assert answer.status_code == 400 and message in answer.json()["error"]
    assert client.post("/endpoints/stars/predict").json()["error"].startswith("the request is empty")


@pytest.mark.parametrize("url, message", [
    ("http://[::1", "Invalid IPv6 URL"),
    ("http://127.0.0.1:99999", "not a URL"),
    ("http://127.0.0.1:65534", "port 65534 cannot be an inference port"),
    ("http://127.0.0.1:0", "port 0 cannot be an inference port"),
    ("http://:8080", "no http(s) host"),
    ("ftp://127.0.0.1:8080", "no http(s) host"),
])
def test_a_server_url_that_cannot_be_one_is_refused_in_one_line(url, message):
    with pytest.raises(ConfigError, match="--server") as error:
        UISettings.of(server=[url])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_an_ipv6_server_is_reached_at_its_address_in_brackets(tmp_path):
    settings = UISettings.of(jobs_root=str(tmp_path), server=["http://[::1]:1"])
    assert servers(settings) == [{"inference": "http://[::1]:1", "management": "http://[::1]:2",
                                  "metrics": "http://[::1]:3", "source": "--server"}]
    page = ui_client(settings).get("/endpoints")
    assert page.status_code == 200 and "http://[::1]:1" in page.text and "badge-down" in page.text


# -- damaged job folders, offsets past the end, long lines ---------------------------------------------------------


def job_folder(jobs, name, status="Completed", metrics=({"name": "validation:accuracy", "value": 0.75},)):
    """A job folder as Estimator.fit leaves it, without running anything."""
    folder = jobs / name
    folder.mkdir(parents=True)
    spec = JobSpec(job_name=name, created="2026-11-27T00:00:00.000+00:00", estimator="Estimator",
                   entry_point="train.py", interpreter=["python"], command_args=[], hyperparameters={"epochs": 1},
                   channels={}, instance_count=1, instance_type="local", output_path=str(folder / "output"),
                   checkpoint_dir=str(folder / "checkpoints"))
    (folder / "job.json").write_text(json.dumps(spec.to_dict()))
    (folder / "status.json").write_text(json.dumps({"TrainingJobStatus": status, "SecondaryStatus": status}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in metrics))
    return folder


DAMAGES = [  # (file, content, what the error names)
    ("job.json", b"{", "job.json is damaged"),
    ("job.json", b"[]", "job.json is damaged"),
    ("job.json", "created", "created is 5"),
    ("job.json", "hyperparameters", "hyperparameters is [1]"),
    ("status.json", b'{"TrainingJobStatus": "Completed\xff"}', "status.json is damaged"),
    ("status.json", b'{"TrainingJobStatus": "InProgress", "SupervisorPid": "abc"}', "SupervisorPid is 'abc'"),
    ("metrics.jsonl", "folder", "metrics.jsonl is damaged"),
]


def damage(folder, file, content):
    path = folder / file
    if content == "folder":
        path.unlink()
        path.mkdir()
    elif isinstance(content, str):  # a field of job.json with the wrong type
        spec = json.loads(path.read_text())
        spec[content] = 5 if content == "created" else [1]
        path.write_text(json.dumps(spec))
    else:
        path.write_bytes(content)


@pytest.mark.parametrize("file, content, message", DAMAGES)
def test_a_damaged_job_is_listed_as_damaged_and_the_other_jobs_still_show(tmp_path, capsys, file, content, message):
    jobs = tmp_path / "jobs"
    job_folder(jobs, "good-job")
    damage(job_folder(jobs, "bad-job"), file, content)
    client = ui_client(UISettings.of(jobs_root=str(jobs)))
    listed = client.get("/jobs")
    assert listed.status_code == 200 and 'href="/jobs/good-job"' in listed.text and "0.75" in listed.text
    assert "badge-damaged" in listed.text and str(escape(message)) in listed.text
    for path in ["/jobs/bad-job", "/jobs/bad-job/log"]:
        page = client.get(path)
        assert page.status_code == 400 and str(escape(message)) in page.text, path
    assert client.get("/jobs/good-job").status_code == 200 and client.get("/models").status_code == 200
    rows = {row["name"]: row for row in list_jobs(jobs)}
    assert rows["bad-job"]["status"] == "Damaged" and message in rows["bad-job"]["failure"]
    assert rows["good-job"]["status"] == "Completed"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_code:
        main(["jobs", "list", "--jobs-root", str(jobs)])
    out = capsys.readouterr().out
    assert exit_code.value.code == 0 and "good-job" in out and "Damaged          -        -  job 'bad-job'" in out
    with pytest.raises(SystemExit) as exit_code:
        main(["jobs", "describe", "bad-job", "--jobs-root", str(jobs)])
    err = capsys.readouterr().err
    assert exit_code.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_stray_metric_lines_are_skipped_and_the_job_shows_its_good_ones(tmp_path):
    jobs = tmp_path / "jobs"
    folder = job_folder(jobs, "job", metrics=[{"name": "validation:accuracy", "value": 0.75}])
    with open(folder / "metrics.jsonl", "ab") as stream:
        stream.write(b'5\n{"value": 1}\n{"name": "loss", "value": "high"}\n{"name": [1], "value": 2}\n'
                     b'{"name": "train:loss\xff", "value": 0.5, "step": 3}\n')
    rows = read_metrics(job_paths("job", jobs))
    assert [(row["name"], row["value"]) for row in rows] == [("validation:accuracy", 0.75), ("train:loss\ufffd", 0.5)]
    assert [m["MetricName"] for m in describe_job("job", jobs)["FinalMetricDataList"]] == [
        "validation:accuracy", "train:loss\ufffd"]
    client = ui_client(UISettings.of(jobs_root=str(jobs)))
    assert client.get("/jobs").status_code == 200 and client.get("/jobs/job").status_code == 200
    assert client.get("/jobs/job/log").json()["status"] == "Completed"


def test_a_pid_that_is_not_one_is_not_alive():
    assert [pid_alive(pid) for pid in ("abc", None, 0, -1, [1], "")] == [False] * 6


def test_a_log_offset_past_the_end_reads_nothing_from_the_end(tmp_path):
    jobs = tmp_path / "jobs"
    job_folder(jobs, "job")
    log = Path(describe_job("job", jobs)["LogFile"])
    log.parent.mkdir(parents=True)
    log.write_text("one line\n")
    client = ui_client(UISettings.of(jobs_root=str(jobs)))
    answer = client.get("/jobs/job/log?offset=99999999999999999999999")
    assert answer.status_code == 200 and answer.json()["text"] == "" and answer.json()["offset"] == 9
    assert client.get("/jobs/job/log?offset=-5").json()["text"] == "one line\n"


def test_a_running_log_line_longer_than_a_chunk_comes_in_pieces_not_never(tmp_path):
    log = tmp_path / "job.log"
    long_line = b"x" * (LOG_CHUNK - 1) + "é".encode() + b"y" * 10  # é straddles the end of the first chunk
    log.write_bytes(b"start\n" + long_line)
    running = {"LogFile": str(log), "TrainingJobStatus": "InProgress"}
    assert read_log(running, 0) == ("start\n", 0, 6)
    text, _, end = read_log(running, 6)
    assert text == "x" * (LOG_CHUNK - 1) and end == 6 + LOG_CHUNK - 1  # é waits for the next read, whole
    text, _, end = read_log(running, end)
    assert text == "" and end == 6 + LOG_CHUNK - 1  # the rest of the line is shorter than a chunk: it waits
    log.write_bytes(b"start\n" + long_line + b"\n")
    assert read_log(running, end)[0] == "é" + "y" * 10 + "\n"
    log.write_bytes(b"10%\r20%\r3")  # a progress bar redrawn with \r
    assert read_log(running, 0) == ("10%\r20%\r", 0, 8)


# -- model folders -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("meta, labels", [
    ({"metrics": ["a"]}, {"labels": ["neg", "pos"]}),
    ({"metrics": "x"}, {"labels": ["neg", "pos"]}),
    ({"validation_report": [1, 2]}, {"labels": ["neg", "pos"]}),
    ({"validation_report": {"labels": 5, "confusion_matrix": [[1]]}}, {"labels": 5}),
    ({"validation_report": {"labels": ["a", "b"], "confusion_matrix": [[1, "x"], [1]]}}, ["neg"]),
])
def test_a_model_folder_with_odd_metadata_is_shown_without_what_it_lacks(tmp_path, meta, labels):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "nlpforge.json").write_text(json.dumps({"task": "text-classification", **meta}))
    (folder / "labels.json").write_text(json.dumps(labels))
    client = ui_client(UISettings.of(jobs_root=str(tmp_path / "jobs"), models=[str(folder)]))
    listing = client.get("/models")
    assert listing.status_code == 200 and str(folder) in listing.text
    key = listing.text.split('href="/models/')[1].split('"')[0]
    page = client.get(f"/models/{key}")
    assert page.status_code == 200 and "This model folder records no metrics" in page.text
    assert 'id="confusion"' not in page.text


# -- monitoring schedules ------------------------------------------------------------------------------------------


def schedule(tmp_path):
    folder = tmp_path / "schedule"
    run = folder / "runs" / "r1"
    run.mkdir(parents=True)
    (folder / "schedule.json").write_text("{}")
    (run / "run.json").write_text(json.dumps({"run": "r1", "since": None, "until": "2026-11-27T00:00:00Z",
                                              "status": "no_violations", "item_count": 3, "violations": 0}))
    (run / "report.json").write_text(json.dumps({"plots": [], "content_drift": {"window_words": 5}}))
    return folder


@pytest.mark.parametrize("file, content, listed", [
    ("runs/r1/run.json", "[1]", False),
    ("runs/r1/run.json", "{}", False),
    ("runs/r1/run.json", "{", False),
    ("runs/r1/report.json", "[]", True),
    ("runs/r1/constraint_violations.json", "[]", True),
    ("runs/r1/constraint_violations.json", '{"violations": 5}', True),
    ("schedule.json", "not json", True),
])
def test_a_damaged_schedule_file_is_a_400_page_that_names_it(tmp_path, file, content, listed):
    folder = schedule(tmp_path)
    (folder / file).write_text(content)
    client = ui_client(UISettings.of(jobs_root=str(tmp_path / "jobs"), monitor=[str(folder)]))
    overview = client.get("/monitoring")
    assert overview.status_code == 200 and ('href="/monitoring/0/r1"' in overview.text) == listed
    if not listed:
        assert str(folder / file) in overview.text
    for path in ["/monitoring/0/r1"] + (["/monitoring/0/r1/plot/a.png"] if file != "runs/r1/report.json" else []):
        page = client.get(path)
        assert page.status_code == 400 and str(folder / file) in page.text and "damaged" in page.text, path


def test_odd_report_sections_of_a_good_run_are_left_out(tmp_path):
    client = ui_client(UISettings.of(jobs_root=str(tmp_path / "jobs"), monitor=[str(schedule(tmp_path))]))
    page = client.get("/monitoring/0/r1")
    assert page.status_code == 200 and 'id="no-violations"' in page.text


# -- a bug answers one 500 -----------------------------------------------------------------------------------------


def failing_list_jobs(*args, **kwargs):
    raise RuntimeError("a bug")


def test_a_bug_answers_one_500_page_logs_one_traceback_and_keeps_the_connection(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("nlpforge.sdk.jobs.list_jobs", failing_list_jobs)
    (tmp_path / "jobs").mkdir()
    settings = UISettings.of(jobs_root=str(tmp_path / "jobs"))
    with caplog.at_level(logging.ERROR):
        page = ui_client(settings).get("/jobs")  # TestClient raises what the app lets escape
    assert page.status_code == 500 and "RuntimeError: a bug" in page.text
    assert len([r for r in caplog.records if r.exc_info]) == 1
    with running_ui(settings) as url:
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        for path in ("/jobs", "/tuning"):  # one keep-alive connection
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            assert response.status == (500 if path == "/jobs" else 200)
        connection.close()


# -- flags of `nlpforge ui` ----------------------------------------------------------------------------------------


def test_a_port_in_use_a_host_that_does_not_resolve_and_an_empty_host_are_one_line_errors():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(["ui", "--port", port], timeout=60)
    assert_user_error(result, f"--port {port}: already in use")
    assert "nlpforge ui on" not in result.stderr
    assert_user_error(run_cli(["ui", "--host", "nonexistent.invalid", "--token", "x"], timeout=60),
                      "--host nonexistent.invalid: the name does not resolve")
    assert_user_error(run_cli(["ui", "--host", ""], timeout=60), "--host is empty")


def test_port_0_prints_the_port_the_app_listens_on(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "nlpforge", "ui", "--port", "0", "--jobs-root", str(tmp_path)],
                               stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while "nlpforge ui on" not in line:
            line = process.stderr.readline()
            assert line, "the app exited without saying where it listens"
        assert "nlpforge ui on http://127.0.0.1:" in line and ":0 " not in line, line
        url = line.split(" on ")[1].split()[0]
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(url + "/jobs", timeout=5).status_code == 200
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(30)


# -- review keys ---------------------------------------------------------------------------------------------------


@needs_browser
def test_keys_that_are_special_in_a_css_selector_do_nothing(tmp_path, capture):
    with running_ui(UISettings.of(jobs_root=str(tmp_path), capture=str(capture))) as url, browser() as open_page:
        page, problems = open_page(url + "/review")
        for key in ('"', "\\", "]", "'"):
            page.keyboard.press(key)
        assert problems == []
        with page.expect_navigation():
            page.keyboard.press("1")
        assert len(labels_written(capture)) == 1 and problems == []


def test_a_store_another_process_holds_locked_is_busy_not_damaged(tmp_path, monkeypatch):
    from nlpforge.ui.app import sqlite_problem

    monkeypatch.setattr("nlpforge.ui.app.SQLITE_WAIT", 0.1)
    path = tmp_path / "mlflow.db"
    writer = sqlite3.connect(path)
    writer.execute("CREATE TABLE runs (id)")
    writer.commit()
    writer.execute("PRAGMA locking_mode = EXCLUSIVE")
    writer.execute("INSERT INTO runs VALUES (1)")  # holds the write lock until it commits
    writer.commit()
    try:
        assert "is busy" in sqlite_problem(path, {"runs"}, "an MLflow store")
    finally:
        writer.close()
    assert sqlite_problem(path, {"runs"}, "an MLflow store") is None
