"""Browser tests' plumbing: the web app on a free port, headless system Chromium, console errors collected; and
`ui_client`, the app in-process at a loopback address.

    with running_ui(UISettings.of(jobs_root=str(jobs))) as url, browser() as open_page:
        page, problems = open_page(url + "/jobs")
        assert not problems
        screenshot(page, "jobs")

Chromium is the Debian package (`make test` installs it); `playwright install` is never used.
"""
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from serving_support import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output" / "ui"


def ui_client(settings, port: int = 8090):
    """A TestClient of the app of `settings` that calls it at http://127.0.0.1:`port`, as a browser on this
    machine does (the app refuses a Host header that is not its own address)."""
    from fastapi.testclient import TestClient

    from nlpforge.ui import create_app

    return TestClient(create_app(settings), base_url=f"http://127.0.0.1:{port}")


def _playwright_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not CHROMIUM:
        return "no system Chromium (apt-get install chromium; `make test` installs it)"
    return None


needs_browser = pytest.mark.skipif(_playwright_missing() is not None, reason=_playwright_missing() or "")


@contextmanager
def running_ui(settings):
    """The app of `settings` served by uvicorn in a thread; yields its base URL."""
    import uvicorn

    from nlpforge.ui import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the web app did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def browser(offline: bool = False):
    """Yields open_page(url) -> (page, problems): problems are console errors, page errors and failed requests.
    `offline` blocks every request that does not go to 127.0.0.1 (as on a machine with no internet)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        context = chromium.new_context(viewport={"width": 1280, "height": 900})
        blocked: list[str] = []
        if offline:
            def route(request_route):
                url = request_route.request.url
                if url.startswith(("http://127.0.0.1", "http://localhost", "data:", "about:", "blob:", "file:")):
                    request_route.continue_()
                else:
                    blocked.append(url)
                    request_route.abort()
            context.route("**/*", route)

        def open_page(url: str, expect_status: int = 200):
            page = context.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} ({r.failure})"))
            response = page.goto(url, wait_until="load")
            if not url.startswith("file:"):
                assert response is not None and response.status == expect_status, (url, response and response.status)
            page.wait_for_load_state("networkidle")
            problems.extend(f"blocked: {url}" for url in blocked)
            return page, problems

        try:
            yield open_page
        finally:
            context.close()
            chromium.close()


def screenshot(page, name: str) -> Path:
    """A full-page PNG in test-output/ui/ (kept after the run, for the README and for looking)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def chart_is_drawn(page, selector: str = ".chart") -> None:
    """Every chart under `selector` has drawn an SVG with at least one series and is not the 'no data' state."""
    charts = page.locator(selector)
    assert charts.count() > 0, f"no chart matches {selector}"
    for index in range(charts.count()):
        chart = charts.nth(index)
        assert chart.get_attribute("data-rendered") == "true"
        assert chart.locator("svg[data-empty]").count() == 0, f"chart {index} of {selector} is empty"
        assert chart.locator("g.series").count() > 0


def build_world(folder: Path) -> dict:
    """Real things for the web app to show, made the way a user makes them: a training job through the SDK
    (tracked in MLflow under the jobs root), a two-trial tuning job, the model deployed with data capture on
    and answering requests, and a monitoring schedule's run over that capture.

    Returns {"jobs": jobs root, "job": training job name, "tuning": tuning job name, "model": model folder,
    "endpoint": endpoint name, "predictor": Predictor (still serving), "server": inference URL,
    "capture": capture folder, "schedule": monitoring schedule folder, "texts": the texts sent}.
    The caller deletes the endpoint (`world["predictor"].delete_endpoint()`)."""
    from conftest import toy_rows, write_csv
    from serving_support import free_ports

    from nlpforge.monitoring import BaselineSettings, suggest_baseline
    from nlpforge.monitoring.schedule import ScheduleSettings, run_schedule
    from nlpforge.sdk import DataCaptureConfig, TextClassifier
    from nlpforge.tuning import CategoricalParameter, HyperparameterTuner

    jobs = folder / "jobs"
    train = write_csv(folder / "train.csv", toy_rows(160, seed=1))
    validation = write_csv(folder / "validation.csv", toy_rows(40, seed=2))
    channels = {"train": str(train), "validation": str(validation)}
    hyperparameters = {"epochs": 4, "batch-size": 16, "max-seq-length": 16, "threads": 1, "learning-rate": 2e-3,
                       "warmup-ratio": 0.1}
    estimator = TextClassifier(base_model="bert-tiny", jobs_root=str(jobs), hyperparameters=hyperparameters)
    estimator.fit(channels, job_name="stars-job")
    tuner = HyperparameterTuner(TextClassifier(base_model="bert-tiny", jobs_root=str(jobs),
                                               hyperparameters={**hyperparameters, "epochs": 1}),
                                "validation_accuracy", {"learning-rate": CategoricalParameter([1e-4, 3e-3])},
                                strategy="Grid", max_parallel_jobs=1)
    tuner.fit(channels, job_name="stars-tuning")
    model = jobs / "stars-job" / "model"
    predictor = estimator.deploy(endpoint_name="stars", **free_ports(),
                                 data_capture_config=DataCaptureConfig(enable_capture=True, sampling_percentage=100,
                                                                       destination_s3_uri="s3://bucket/capture"))
    texts = [row["text"] for row in toy_rows(30, seed=9)] + ["an ordinary film", "plain words only"]
    for text in texts:
        predictor.predict({"text": text})
    capture = jobs / "_model_store" / "capture"
    baseline = folder / "baseline"
    suggest_baseline(BaselineSettings.of(data=str(train), model=str(model), output=str(baseline)))
    schedule = folder / "schedule"
    run_schedule(ScheduleSettings.of(baseline=str(baseline), capture=str(capture), output=str(schedule), runs=1,
                                     interval=0.01, model_name="stars", permutations=20))
    return {"jobs": jobs, "job": "stars-job", "tuning": "stars-tuning", "model": model, "endpoint": "stars",
            "predictor": predictor, "server": predictor.url.split("/predictions")[0], "capture": capture,
            "schedule": schedule, "texts": texts}
