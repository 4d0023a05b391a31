"""The Jobs, Experiments and Tuning pages of `nlpforge ui`: empty states and 404s through the app itself, then the
real SDK job, MLflow store and tuning job of `ui_world` in headless Chromium (screenshots in test-output/ui/),
and a running job's log and curves tailing without a reload."""
import json
import re
import textwrap
import time
from pathlib import Path

import pytest
from ui_support import browser, chart_is_drawn, needs_browser, running_ui, screenshot, ui_client

from nlpforge.ui import UISettings
from nlpforge.ui.jobs import metric_charts, read_log

# Prints a line and a loss every `pause` seconds; the estimator's metric_definitions turn the losses into metrics.
TICKING_SCRIPT = """
    import os, time
    for i in range(int(os.environ["SM_HP_TICKS"])):
        print(f"tick {i} loss={1 / (i + 1):.4f}", flush=True)
        time.sleep(float(os.environ["SM_HP_PAUSE"]))
    print("validation_accuracy 0.75", flush=True)
"""
LOSS_DEFINITIONS = [{"Name": "train:loss", "Regex": r"loss=([0-9.]+)"},
                    {"Name": "validation:accuracy", "Regex": r"validation_accuracy ([0-9.]+)"}]


@pytest.fixture
def no_tracking_server(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("NLPFORGE_TRACKING", "0")


def ticking_job(tmp_path, jobs, name, ticks, pause, wait):
    from nlpforge.sdk import Estimator

    script = tmp_path / "tick.py"
    script.write_text(textwrap.dedent(TICKING_SCRIPT), encoding="utf-8")
    estimator = Estimator(entry_point=str(script), jobs_root=str(jobs), metric_definitions=LOSS_DEFINITIONS,
                          hyperparameters={"ticks": ticks, "pause": pause})
    estimator.fit(wait=wait, job_name=name)
    return estimator


def test_a_missing_jobs_root_shows_how_to_make_a_job_and_is_not_created(tmp_path, no_tracking_server):
    missing = tmp_path / "no-jobs-here"
    client = ui_client(UISettings.of(jobs_root=str(missing)))
    hints = {"/jobs": "TextClassifier(", "/experiments": "mlflow.db", "/tuning": "optuna.db",
             "/experiments/compare": "Tick two or more runs"}
    for path, hint in hints.items():
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[-500:])
        assert 'class="empty"' in response.text and hint in response.text, path
    assert client.get("/jobs/any-job").status_code == 404
    assert client.get("/experiments/compare?run=0123abcd").status_code == 404
    assert client.get("/tuning/any-tuning-job").status_code == 404
    assert not missing.exists()


def test_unknown_jobs_runs_and_tuning_jobs_are_404_pages(tmp_path, no_tracking_server):
    from nlpforge.tracking.runs import client
    from nlpforge.tuning.tuner import optuna_module

    jobs = tmp_path / "jobs"
    client(jobs).create_experiment("empty-experiment")
    optuna_module().create_study(study_name="quiet-study", storage=f"sqlite:///{jobs / 'optuna.db'}")
    app = ui_client(UISettings.of(jobs_root=str(jobs)))
    for path in ["/jobs/no-such-job", "/jobs/no-such-job/log?offset=0", "/experiments/compare?run=0123456789abcdef",
                 "/experiments/compare?run=it's-quoted", "/tuning/no-such-tuning-job"]:
        response = app.get(path)
        assert response.status_code == 404, (path, response.status_code, response.text[-500:])
        assert "Not found" in response.text and "Traceback" not in response.text, path
    assert "The MLflow store has no runs yet" in app.get("/experiments").text
    listed = app.get("/tuning")
    assert listed.status_code == 200 and 'href="/tuning/quiet-study"' in listed.text
    study = app.get("/tuning/quiet-study")
    assert study.status_code == 200 and "No trial has completed yet" in study.text
    assert "needs at least 2 completed trials; this tuning job has 0" in study.text


def test_a_job_page_is_whole_without_javascript_and_its_log_reads_on_from_an_offset(tmp_path, no_tracking_server):
    jobs = tmp_path / "jobs"
    ticking_job(tmp_path, jobs, "ticks", ticks=5, pause=0, wait=True)
    app = ui_client(UISettings.of(jobs_root=str(jobs)))
    listed = app.get("/jobs")
    assert 'href="/jobs/ticks"' in listed.text and "badge-completed" in listed.text
    assert "validation:accuracy" in listed.text and "0.75" in listed.text  # the final objective metric
    assert "No training jobs" in app.get("/jobs?name=nothing-like-it").text
    page = app.get("/jobs/ticks").text
    assert "tick 0 loss=1.0000" in page and "tick 4 loss=0.2000" in page  # the log, rendered by the server
    assert 'id="chart-loss"' in page and 'id="chart-validation"' in page and "<script>" not in page.split("job-log")[1]
    assert "<td>pause</td><td>0</td>" in page and "<td>ticks</td><td>5</td>" in page  # the hyperparameters
    log = app.get("/jobs/ticks/log?offset=0").json()
    assert log["status"] == "Completed" and "tick 4" in log["text"]
    later = app.get(f"/jobs/ticks/log?offset={log['text'].index('tick 3')}").json()
    assert later["text"].startswith("tick 3") and later["offset"] == log["offset"]
    assert app.get(f"/jobs/ticks/log?offset={log['offset']}").json()["text"] == ""
    charts = {c["id"]: c for c in log["charts"]}
    assert [p[1] for p in charts["chart-loss"]["data"]["series"][0]["points"]] == [1.0, 0.5, 0.3333, 0.25, 0.2]


def test_a_running_log_is_read_in_whole_lines_and_a_finished_one_to_its_end(tmp_path):
    log = tmp_path / "job.log"
    log.write_bytes("first\nsecond, half writ".encode())
    running = {"LogFile": str(log), "TrainingJobStatus": "InProgress"}
    assert read_log(running, 0) == ("first\n", 0, 6)
    assert read_log({**running, "TrainingJobStatus": "Failed"}, 6) == ("second, half writ", 6, 23)
    assert read_log({**running, "LogFile": str(tmp_path / "none.log")}, 0) == ("", 0, 0)


def test_metric_curves_group_into_families_and_take_each_metric_from_one_source():
    rows = [{"name": "train_loss", "value": 0.9, "step": 0, "source": "log"},
            *[{"name": "train_loss", "value": 1 / s, "step": s, "source": "engine"} for s in (10, 20)],
            {"name": "validation_loss", "value": 0.8, "step": 10, "source": "engine"},
            {"name": "learning_rate", "value": 1e-3, "step": 10, "source": "engine"},
            {"name": "samples_per_second", "value": 400.0, "step": 10, "source": "engine"},
            {"name": "validation_accuracy", "value": 0.7, "step": 10, "source": "engine"},
            {"name": "gpu_memory", "value": 3.0, "source": "log"}, {"name": "broken", "value": "NaN?"}]
    charts = {c["id"]: {s["name"]: s["points"] for s in c["data"]["series"]} for c in metric_charts(rows)}
    assert charts == {"chart-loss": {"train_loss": [[10, 0.1], [20, 0.05]], "validation_loss": [[10, 0.8]]},
                      "chart-learning-rate": {"learning_rate": [[10, 1e-3]]},
                      "chart-samples-per-second": {"samples_per_second": [[10, 400.0]]},
                      "chart-validation": {"validation_accuracy": [[10, 0.7]]},
                      "chart-other": {"gpu_memory": [[7, 3.0]]}}
    waiting = [c["id"] for c in metric_charts([], every_family=True)]
    assert waiting == ["chart-loss", "chart-learning-rate", "chart-samples-per-second", "chart-validation"]


# -- in a browser ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_page():
    with browser() as opener:
        yield opener


@pytest.fixture(scope="module")
def world_url(ui_world):
    with running_ui(UISettings.of(jobs_root=str(ui_world["jobs"]))) as url:
        yield url


def visit(open_page, url, name):
    page, problems = open_page(url)
    assert problems == [], (url, problems)
    screenshot(page, name)
    return page


@needs_browser
def test_jobs_list_and_job_page_show_status_curves_rules_and_log(open_page, world_url, ui_world):
    page = visit(open_page, world_url + "/jobs", "jobs")
    assert page.locator("#jobs-table a", has_text=ui_world["job"]).count() == 1
    assert "validation_accuracy" in page.locator("#jobs-table").inner_text()
    page.close()
    page = visit(open_page, f"{world_url}/jobs/{ui_world['job']}", "job")
    chart_is_drawn(page)
    drawn = {page.locator(".chart").nth(i).get_attribute("id") for i in range(page.locator(".chart").count())}
    assert drawn == {"chart-loss", "chart-learning-rate", "chart-samples-per-second", "chart-validation"}
    assert page.locator("#chart-loss g.series").count() == 3  # loss, train_loss, validation_loss
    assert "Completed" in page.locator("#job-status").inner_text()
    assert "wrote" in page.locator("#job-log").inner_text() and page.locator("#rules, #no-rules").count() == 1
    assert page.locator("#hyperparameters").inner_text().count("\n") >= 5
    page.close()


@needs_browser
def test_experiments_compare_two_runs_with_parameter_diffs_and_metric_overlays(open_page, world_url, ui_world):
    page = visit(open_page, world_url + "/experiments", "experiments")
    trial = page.locator("table.runs tr", has_text=f"{ui_world['tuning']}-000")
    trial_job = trial.locator("a").first.inner_text()
    page.locator("table.runs tr", has_text=ui_world["job"]).locator("input[name=run]").check()
    trial.locator("input[name=run]").check()
    page.locator("#compare").click()
    page.wait_for_load_state("networkidle")
    assert "/experiments/compare?run=" in page.url and page.url.count("run=") == 2
    heads = page.locator("#params tr").first.inner_text()
    assert ui_world["job"] in heads and trial_job in heads
    differing = page.locator("#params tr.diff").all_inner_texts()
    assert any(row.startswith("epochs") for row in differing)  # 4 epochs against the trials' 1
    assert not any(row.startswith("model") for row in differing)
    chart_is_drawn(page)
    assert page.locator(".chart", has=page.locator("g.series")).count() >= 4
    overlay = page.locator(".chart-box", has_text="validation_loss").locator("g.series")
    assert overlay.count() == 2 and {overlay.nth(i).get_attribute("data-name") for i in range(2)} == {
        ui_world["job"], trial_job}
    screenshot(page, "compare")
    page.close()


@needs_browser
def test_tuning_shows_both_trials_the_best_the_objective_and_importance(open_page, world_url, ui_world):
    page = visit(open_page, world_url + "/tuning", "tuning")
    page.locator("#studies a", has_text=ui_world["tuning"]).first.click()
    page.wait_for_load_state("networkidle")
    assert page.locator("#trials tr").count() == 3 and page.locator("#trials tr.best").count() == 1
    best_job = page.locator("#trials tr.best a").inner_text()
    assert "Best trial" in page.locator("#best").inner_text() and best_job in page.locator("#best").inner_text()
    chart_is_drawn(page, "#objective-chart")
    assert page.locator("#objective-chart circle").count() >= 2  # each trial a dot, the best so far a line
    assert page.locator("#objective-chart path").count() == 1
    chart_is_drawn(page, "#importance-chart")
    assert page.locator("#importance-chart", has_text="learning-rate").count() == 1
    screenshot(page, "tuning-job")
    page.close()


@needs_browser
def test_a_running_jobs_log_and_curves_grow_without_a_reload(open_page, tmp_path, no_tracking_server):
    jobs = tmp_path / "jobs"
    # 400 ticks (100 s): the job must still run when the test stops it, after the browser has watched it grow
    estimator = ticking_job(tmp_path, jobs, "slow-ticks", ticks=400, pause=0.25, wait=False)
    try:
        with running_ui(UISettings.of(jobs_root=str(jobs))) as url:
            log, deadline = Path(estimator.latest_training_job.describe()["LogFile"]), time.monotonic() + 30
            while not log.is_file() or "tick 1 " not in log.read_text(encoding="utf-8"):
                assert time.monotonic() < deadline, "the job printed nothing"
                time.sleep(0.2)
            page, problems = open_page(url + "/jobs/slow-ticks")
            assert "InProgress" in page.locator("#job-status").inner_text()
            page.evaluate("window.notReloaded = true")
            shown = page.locator("#job-log").inner_text()
            points = json.loads(page.locator("#chart-loss").get_attribute("data-json"))["series"][0]["points"]
            last = int(re.findall(r"tick (\d+)", shown)[-1])
            page.wait_for_function(f"document.getElementById('job-log').textContent.includes('tick {last + 6} ')",
                                   timeout=20_000)
            page.wait_for_function(f"JSON.parse(document.getElementById('chart-loss').dataset.json)"
                                   f".series[0].points.length > {len(points) + 3}", timeout=10_000)
            assert page.evaluate("window.notReloaded") is True
            assert page.locator("#job-log").inner_text().startswith(shown)
            chart_is_drawn(page, "#chart-loss")
            assert problems == []
            page.close()
    finally:
        estimator.latest_training_job.stop()
        assert estimator.latest_training_job.wait()["TrainingJobStatus"] == "Stopped"
