"""The web app as a whole: every page works offline and with nothing to show, the token guards it off loopback,
and bad flags get one-line errors."""
import pytest
from conftest import assert_user_error, run_cli
from ui_support import browser, needs_browser, running_ui, ui_client

from nlpforge.errors import ConfigError
from nlpforge.ui import UISettings
from nlpforge.ui.app import PAGES

PATHS = [path for path, _, _ in PAGES]


def test_every_page_shows_an_empty_state_when_there_is_nothing_and_creates_no_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "no-jobs-here"
    client = ui_client(UISettings.of(jobs_root=str(missing)))
    for path in PATHS:
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[:300])
        assert 'class="empty"' in response.text, path
    assert not missing.exists()
    assert client.get("/", follow_redirects=False).headers["location"] == "/jobs"


def test_an_unknown_page_is_a_404_page_not_a_traceback(tmp_path):
    client = ui_client(UISettings.of(jobs_root=str(tmp_path)))
    response = client.get("/no/such/page")
    assert response.status_code == 404 and "Not found" in response.text and "Traceback" not in response.text


def test_the_token_guards_every_page_and_is_kept_in_a_cookie(tmp_path):
    client = ui_client(UISettings.of(jobs_root=str(tmp_path), token="s3cret"))
    refused = client.get("/jobs")
    assert refused.status_code == 401 and "?token=" in refused.text
    assert client.get("/jobs?token=wrong").status_code == 401
    assert client.get("/jobs?token=s3cret").status_code == 200
    assert client.get("/experiments").status_code == 200  # the cookie carries it now
    assert client.get("/static/app.css").status_code == 200  # assets need no token


def test_binding_beyond_loopback_needs_a_token():
    with pytest.raises(ConfigError, match="--token"):
        UISettings.of(host="0.0.0.0")
    assert UISettings.of(host="0.0.0.0", token="t").host == "0.0.0.0"
    assert UISettings.of(host="::1").host == "::1"


@pytest.mark.parametrize("args, message", [
    (["--host", "0.0.0.0"], "--token"),
    (["--port", "70000"], "port must be between 0 and 65535"),
    (["--review-threshold", "2"], "review-threshold must be between 0.0 and 1.0"),
])
def test_bad_flags_get_one_line_errors(args, message):
    assert_user_error(run_cli(["ui", *args], timeout=60), message)


@needs_browser
def test_every_page_works_offline_with_no_console_errors(ui_world):
    settings = UISettings.of(jobs_root=str(ui_world["jobs"]), models=[str(ui_world["model"])],
                             monitor=[str(ui_world["schedule"])], capture=str(ui_world["capture"]))
    with running_ui(settings) as url, browser(offline=True) as open_page:
        for path in PATHS:
            page, problems = open_page(url + path)
            assert problems == [], (path, problems)
            external = page.evaluate("""() => [...document.querySelectorAll('script[src], link[href], img[src]')]
                .map(e => e.src || e.href).filter(u => !u.startsWith(location.origin))""")
            assert external == [], (path, external)
            page.close()


def test_unknown_jobs_runs_models_schedules_and_endpoints_are_404_pages(tmp_path, tiny_model):
    schedule = tmp_path / "schedule" / "runs" / "r1"
    schedule.mkdir(parents=True)
    (schedule / "secret.png").write_bytes(b"\x89PNG")
    (tmp_path / "outside.png").write_bytes(b"\x89PNG")
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "mlflow.db").write_bytes(b"")
    client = ui_client(UISettings.of(jobs_root=str(tmp_path / "jobs"), models=[str(tiny_model.output)],
                                                 monitor=[str(tmp_path / "schedule")]))
    for path in ["/jobs/no-such-job", "/jobs/no-such-job/log", "/tuning/no-such-study", "/models/0123456789ab",
                 "/endpoints/no-such-model", "/monitoring/5/r1", "/monitoring/0/no-such-run",
                 "/monitoring/0/r1/plot/..%2F..%2F..%2Foutside.png", "/monitoring/0/r1/plot/missing.png"]:
        response = client.get(path)
        assert response.status_code == 404, (path, response.status_code, response.text[:300])
        assert "Not found" in response.text and "Traceback" not in response.text
    assert client.get("/attention?model=/etc").status_code == 200  # a folder the app does not know: a message
    assert "not a model folder this app knows" in client.get("/attention?model=/etc").text


def test_a_server_that_does_not_answer_is_shown_as_down(tmp_path):
    from serving_support import free_port

    client = ui_client(UISettings.of(jobs_root=str(tmp_path),
                                                 server=[f"http://127.0.0.1:{free_port()}"]))
    response = client.get("/endpoints")
    assert response.status_code == 200 and "badge-down" in response.text and "does not answer" in response.text


def test_the_review_page_without_capture_shows_how_to_get_some(tmp_path):
    client = ui_client(UISettings.of(jobs_root=str(tmp_path), capture=str(tmp_path / "none")))
    response = client.get("/review")
    assert response.status_code == 200 and "data capture" in response.text
