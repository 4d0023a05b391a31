"""The Models, Endpoints, Monitoring and Attention pages of `nlpforge ui`: their 404s, empty states and
refusals through the app itself, then each page in headless Chromium over a real SDK job, endpoint and
monitoring schedule (the `ui_world` fixture), screenshotted to test-output/ui/."""
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from serving_support import free_port
from ui_support import browser, chart_is_drawn, needs_browser, running_ui, screenshot, ui_client

from nlpforge.ui import UISettings
from nlpforge.ui.endpoints import quantile, request_body, scrape

MATRIX = [[3, 1], [0, 4]]


def model_folder(folder, task="text-classification", report=True):
    """A folder the Models page lists (it reads nlpforge.json, labels.json and README.md, never the weights)."""
    folder.mkdir(parents=True)
    meta = {"task": task, "base_model": "bert-tiny", "created": "2026-11-27T00:00:00+00:00",
            "metrics": {"validation_accuracy": 0.875, "validation_loss": 0.4, "best_epoch": 2}}
    if report:
        meta["validation_report"] = {"labels": ["neg", "pos"], "confusion_matrix": MATRIX,
                                     "per_class": {"neg": {"precision": 1.0, "recall": 0.75, "f1": 0.857,
                                                           "support": 4},
                                                   "pos": {"precision": 0.8, "recall": 1.0, "f1": 0.889,
                                                           "support": 4}}}
    (folder / "nlpforge.json").write_text(json.dumps(meta))
    (folder / "labels.json").write_text(json.dumps({"labels": ["neg", "pos"]}))
    (folder / "README.md").write_text(f"# {folder.name}\n\nA card for <{folder.name}>.\n")
    return folder


def schedule_folder(folder):
    """A schedule with one run r1 whose report has one plot, a PNG beside the runs and one outside, and links to
    them from the run folder."""
    run = folder / "runs" / "r1"
    run.mkdir(parents=True)
    (folder / "schedule.json").write_text("{}")
    (run / "run.json").write_text(json.dumps({"run": "r1", "since": None, "until": "2026-11-27T00:00:00Z",
                                              "status": "violations", "item_count": 7, "violations": 1}))
    (run / "constraint_violations.json").write_text(json.dumps({"violations": [
        {"feature_name": "length_words", "constraint_check_type": "baseline_drift_check",
         "description": "the window's texts are longer"}]}))
    (run / "report.json").write_text(json.dumps({
        "plots": [{"title": "length_words", "file": "descriptor_length_words.png"}],
        "content_drift": {"drift": True, "auc": 0.91, "p_value": 0.01, "window_words": ["refund", "broken"],
                          "baseline_words": ["plot"], "window_examples": ["it came broken"],
                          "baseline_examples": ["a good plot"]}}))
    (run / "descriptor_length_words.png").write_bytes(b"\x89PNG plot")
    (folder / "runs" / "secret.png").write_bytes(b"\x89PNG secret")
    (folder.parent / "outside.png").write_bytes(b"\x89PNG outside")
    (run / "peek.png").symlink_to(folder / "runs" / "secret.png")
    (run / "leak.png").symlink_to(folder.parent / "outside.png")
    return folder


def model_keys(client) -> list[str]:
    return re.findall(r'href="/models/([0-9a-f]{12})"', client.get("/models").text)


def test_a_folder_of_models_is_listed_with_card_metrics_confusion_matrix_and_endpoint_lineage(tmp_path):
    models = tmp_path / "models"
    served = model_folder(models / "stars")
    model_folder(models / "plain", task="token-classification", report=False)
    (models / "not-a-model").mkdir()
    (tmp_path / "jobs" / "_endpoints").mkdir(parents=True)
    (tmp_path / "jobs" / "_endpoints" / "shop.json").write_text(json.dumps(
        {"endpoint_name": "shop", "model_dir": str(served), "host": "127.0.0.1", "inference_port": free_port(),
         "management_port": free_port(), "metrics_port": free_port()}))
    client = ui_client(UISettings.of(jobs_root=str(tmp_path / "jobs"), models=[str(models)]))
    listing = client.get("/models").text
    assert "not-a-model" not in listing and str(served) in listing and "accuracy 0.8750" in listing
    keys = model_keys(client)
    assert len(keys) == 2
    pages = [client.get(f"/models/{key}") for key in keys]
    stars = next(page.text for page in pages if str(served) in page.text)
    plain = next(page.text for page in pages if str(served) not in page.text)
    assert all(page.status_code == 200 for page in pages)
    assert 'id="confusion" data-kind="heatmap"' in stars and json.dumps(MATRIX).replace('"', "&#34;") in stars
    assert "A card for &lt;stars&gt;." in stars and "validation_accuracy" in stars
    assert re.search(r'endpoint <a href="/endpoints/shop">shop</a>', stars)
    assert "not deployed" in plain and 'id="confusion"' not in plain


def test_unknown_models_endpoints_schedules_and_runs_are_404_pages(tmp_path):
    model_folder(tmp_path / "stars")
    schedule_folder(tmp_path / "schedule")
    client = ui_client(UISettings.of(jobs_root=str(tmp_path / "jobs"), models=[str(tmp_path / "stars")],
                                                 monitor=[str(tmp_path / "schedule")]))
    for path in ["/models/0123456789ab", "/models/stars", "/endpoints/no-such-model", "/monitoring/1/r1",
                 "/monitoring/0/no-such-run", "/monitoring/0/r1/plot/no-such.png"]:
        response = client.get(path)
        assert response.status_code == 404, (path, response.status_code)
        assert "Not found" in response.text and "Traceback" not in response.text
    answer = client.post("/endpoints/no-such-model/predict", data={"text": "hello"})
    assert answer.status_code == 404 and "no running server serves" in answer.json()["error"]


def test_the_plot_route_serves_only_the_pngs_of_that_run(tmp_path):
    schedule = schedule_folder(tmp_path / "schedule")
    client = ui_client(UISettings.of(jobs_root=str(tmp_path / "jobs"), monitor=[str(schedule)]))
    page = client.get("/monitoring/0/r1")
    assert page.status_code == 200 and 'src="/monitoring/0/r1/plot/descriptor_length_words.png"' in page.text
    assert "refund" in page.text and "the window&#39;s texts are longer" in page.text
    plot = client.get("/monitoring/0/r1/plot/descriptor_length_words.png")
    assert plot.status_code == 200 and plot.content == b"\x89PNG plot"
    for name in ["peek.png", "leak.png", "..%2Fsecret.png", "..%2F..%2F..%2Foutside.png", "%2E%2E%2Fsecret.png",
                 "run.json", "..%2Fr1%2Fdescriptor_length_words.png%2F..%2F..%2Fsecret.png"]:
        response = client.get(f"/monitoring/0/r1/plot/{name}")
        assert response.status_code == 404 and b"PNG" not in response.content, name
    assert client.get("/monitoring/0/%2E%2E/plot/secret.png").status_code == 404


def test_a_run_folder_stands_for_its_schedule_and_the_sdks_schedules_are_found(tmp_path):
    schedule = schedule_folder(tmp_path / "schedule")
    sdk = schedule_folder(tmp_path / "jobs" / "_monitoring" / "shop-monitor")
    client = ui_client(UISettings.of(jobs_root=str(tmp_path / "jobs"),
                                                 monitor=[str(schedule / "runs" / "r1"), str(schedule)]))
    page = client.get("/monitoring")
    assert page.status_code == 200 and page.text.count('href="/monitoring/0/r1"') == 1
    assert 'href="/monitoring/1/r1"' in page.text and str(sdk) in page.text and "/monitoring/2/" not in page.text


def test_nothing_anywhere_is_an_empty_state_with_a_hint_and_creates_no_folder(tmp_path):
    jobs = tmp_path / "no-jobs"
    client = ui_client(UISettings.of(jobs_root=str(jobs)))
    hints = {"/models": "--models FOLDER", "/endpoints": "--server", "/monitoring": "nlpforge monitor schedule",
             "/attention": "--models FOLDER"}
    for path, hint in hints.items():
        response = client.get(path)
        assert response.status_code == 200 and 'class="empty"' in response.text and hint in response.text, path
    assert not jobs.exists()


def test_a_server_that_does_not_answer_is_shown_as_down_not_as_an_error(tmp_path):
    port = free_port()
    (tmp_path / "_endpoints").mkdir()
    (tmp_path / "_endpoints" / "gone.json").write_text(json.dumps(
        {"endpoint_name": "gone", "host": "127.0.0.1", "inference_port": free_port(),
         "management_port": free_port(), "metrics_port": free_port()}))
    client = ui_client(UISettings.of(jobs_root=str(tmp_path), server=[f"http://127.0.0.1:{port}"]))
    response = client.get("/endpoints")
    assert response.status_code == 200 and response.text.count("badge-down") == 2
    assert f"http://127.0.0.1:{port + 1}" in response.text and "SDK endpoint gone" in response.text
    assert "does not answer" in response.text and "Traceback" not in response.text


def test_the_attention_page_names_what_it_cannot_explain_on_the_page(tmp_path):
    damaged = model_folder(tmp_path / "damaged")
    client = ui_client(UISettings.of(jobs_root=str(tmp_path / "jobs"), models=[str(damaged)]))
    page = client.get("/attention")
    assert page.status_code == 200 and str(damaged) in page.text and "<iframe" not in page.text
    key = model_keys(client)[0]
    answer = client.get("/attention", params={"model": key, "text": "a fine film"})
    assert answer.status_code == 200 and "not an nlpforge model folder" in answer.text
    assert "<iframe" not in answer.text
    unknown = client.get("/attention", params={"model": str(tmp_path), "text": "a fine film"})
    assert unknown.status_code == 200 and "not a model folder this app knows" in unknown.text


class _Metrics(BaseHTTPRequestHandler):
    text = ""

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = self.text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_metrics_give_requests_errors_latency_percentiles_and_shadow_agreement():
    _Metrics.text = "\n".join([
        "# TYPE nlpforge_requests counter",
        'nlpforge_requests_total{model="stars",status="200",version="1.0"} 90.0',
        'nlpforge_requests_total{model="stars",status="400",version="1.0"} 4.0',
        'nlpforge_requests_total{model="stars",status="503",version="2.0"} 6.0',
        "# TYPE nlpforge_request_latency_seconds histogram",
        'nlpforge_request_latency_seconds_bucket{le="0.01",model="stars",version="1.0"} 50.0',
        'nlpforge_request_latency_seconds_bucket{le="0.1",model="stars",version="1.0"} 90.0',
        'nlpforge_request_latency_seconds_bucket{le="+Inf",model="stars",version="1.0"} 100.0',
        'nlpforge_request_latency_seconds_count{model="stars",version="1.0"} 100.0',
        'nlpforge_request_latency_seconds_sum{model="stars",version="1.0"} 3.0',
        "# TYPE nlpforge_shadow_comparisons counter",
        'nlpforge_shadow_comparisons_total{agree="true",model="stars",shadow_version="2.0",version="1.0"} 3.0',
        'nlpforge_shadow_comparisons_total{agree="false",model="stars",shadow_version="2.0",version="1.0"} 1.0',
        ""])
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        stars = scrape(f"http://127.0.0.1:{server.server_address[1]}")["stars"]
    finally:
        server.shutdown()
    assert stars["requests"] == 100 and stars["errors_4xx"] == 4 and stars["errors_5xx"] == 6
    assert stars["versions"] == {"1.0": 94, "2.0": 6}
    assert stars["p50"] == pytest.approx(0.01) and stars["p90"] == pytest.approx(0.1)
    assert stars["p99"] == pytest.approx(0.1)  # in the +Inf bucket: the largest finite bound
    assert stars["agreement"] == pytest.approx(0.75) and stars["compared"] == 4


def test_latency_quantiles_interpolate_inside_a_bucket():
    assert quantile([(0.1, 20.0), (0.5, 60.0), (float("inf"), 60.0)], 0.5) == pytest.approx(0.1 + 0.4 * 10 / 40)
    assert quantile([(0.1, 0.0), (float("inf"), 0.0)], 0.5) is None


def test_the_request_box_sends_text_a_pair_or_a_json_body():
    assert request_body("good film", "") == {"text": "good film"}
    assert request_body("a", "b") == {"text": "a", "text_pair": "b"}
    assert request_body('{"question": "who?", "context": "Ann did"}', "") == {"question": "who?",
                                                                             "context": "Ann did"}
    assert request_body("{not json", "") == {"text": "{not json"}


@pytest.fixture(scope="module")
def app(ui_world):
    settings = UISettings.of(jobs_root=str(ui_world["jobs"]), monitor=[str(ui_world["schedule"])])
    with running_ui(settings) as url, browser() as open_page:
        def visit(path, name=None):
            """The page and its console problems so far (the list grows as the page goes on)."""
            page, problems = open_page(url + path)
            assert problems == [], (path, problems)
            if name:
                screenshot(page, name)
            return page, problems
        yield visit


def follow(page, selector):
    page.locator(selector).first.click()
    page.wait_for_load_state("networkidle")
    return page


@needs_browser
def test_models_page_and_a_model_with_its_confusion_matrix_and_lineage(app, ui_world):
    page, problems = app("/models", "models")
    assert page.locator("#models-table tr").count() >= 2
    page = follow(page, f'#models-table a:text-is("{ui_world["model"]}")')
    chart_is_drawn(page, "#confusion")
    assert page.locator("#confusion rect").count() >= 4  # 2 x 2 cells
    lineage = page.locator("#lineage").inner_text()
    assert "stars-job" in lineage and "model version" in lineage and "endpoint stars" in lineage
    assert "Metrics (validation)" in page.locator("#model-card").inner_text()
    assert problems == []
    screenshot(page, "model")


@needs_browser
def test_endpoint_pages_show_live_metrics_and_the_request_box_predicts(app, ui_world):
    page, problems = app("/endpoints", "endpoints")
    assert page.locator(".badge-up").count() >= 1
    page = follow(page, '.endpoint-models a:text-is("stars")')
    assert int(page.locator("#requests").inner_text()) >= len(ui_world["texts"])
    assert re.match(r"\d+\.\d+ / \d+\.\d+ / \d+\.\d+", page.locator("#latency").inner_text())
    assert page.locator("#versions tr").count() >= 2
    page.fill("#predict-text", "a superb film")
    page.locator("#predict-form button").click()
    page.wait_for_function("document.getElementById('predict-answer').textContent.includes('label')")
    assert json.loads(page.locator("#predict-answer").inner_text())["label"] in ("neg", "pos")
    page.reload(wait_until="networkidle")
    assert re.match(r"\d+\.\d\d", page.locator("#rate").inner_text())  # the second look measures a rate
    assert problems == []
    screenshot(page, "endpoint")


@needs_browser
def test_monitoring_pages_show_runs_violations_words_and_plots(app):
    page, problems = app("/monitoring", "monitoring")
    page = follow(page, ".monitor-runs a")
    assert page.locator("#words tr").count() > 1
    assert page.locator("img.drift-plot").count() >= 5
    assert page.evaluate("[...document.querySelectorAll('img.drift-plot')].every(i => i.naturalWidth > 100)")
    assert problems == []
    screenshot(page, "monitoring-run")


@needs_browser
def test_attention_view_shows_every_layer_and_head_and_a_click_opens_one_in_the_head_view(app):
    page, problems = app("/attention")
    page.fill("#explain-text", "a wonderful film")
    page.locator("#explain-form button").click()
    page.wait_for_load_state("networkidle")
    assert "label" in page.locator("#explain-answer").inner_text()
    frame = page.frame_locator("#attention-view")
    assert frame.locator(".model-view .cell").count() == 4  # bert-tiny: 2 layers x 2 heads
    shown = frame.locator("#head-svg").get_attribute("data-layer")
    assert frame.locator(".head-toggle:checked").count() == 2
    edges = frame.locator("#head-svg line.edge").count()
    other = "0" if shown == "1" else "1"
    frame.locator(f'.model-view .cell[data-layer="{other}"][data-head="1"]').click()
    assert frame.locator("#head-svg").get_attribute("data-layer") == other
    assert frame.locator(".head-toggle:checked").count() == 1
    assert 0 < frame.locator("#head-svg line.edge").count() < edges  # one head's lines now, not both
    assert frame.locator(".model-view .cell.selected").count() == 1
    assert problems == []
    screenshot(page, "attention")


def test_an_endpoint_with_a_split_and_a_shadow_shows_weights_and_agreement(ui_world, tmp_path):
    import httpx
    from serving_support import management, metric, running_server

    with running_server(tmp_path / "store", auth=False) as server:
        client = management(server)
        for version in ("1.0", "2.0", "3.0"):
            response = client.post("/models", params={"url": str(ui_world["model"]), "model_name": "split",
                                                      "model_version": version})
            assert response.status_code == 200, response.text
        assert client.put("/models/split/traffic", json={"weights": {"1.0": 75, "2.0": 25},
                                                          "shadow": "3.0"}).status_code == 200
        for text in ui_world["texts"][:12]:
            assert httpx.post(server.url("inference") + "/predictions/split", json={"text": text},
                              timeout=60).status_code == 200
        for _ in range(100):  # shadow answers arrive after the client's
            if metric(server, "nlpforge_shadow_comparisons_total", model="split") >= 12:
                break
            time.sleep(0.1)
        ports = {f"{which}_port": int(server.url(which).rsplit(":", 1)[1])
                 for which in ("inference", "management", "metrics")}
        (tmp_path / "jobs" / "_endpoints").mkdir(parents=True)
        (tmp_path / "jobs" / "_endpoints" / "split.json").write_text(json.dumps(
            {"endpoint_name": "split", "host": "127.0.0.1", **ports}))
        app = ui_client(UISettings.of(jobs_root=str(tmp_path / "jobs")))
        listing = app.get("/endpoints")
        assert listing.status_code == 200 and "badge-up" in listing.text and 'href="/endpoints/split"' in listing.text
        page = app.get("/endpoints/split").text
        (tmp_path / "jobs" / "_endpoints" / "split.json").write_text(json.dumps(
            {"endpoint_name": "split", "host": "127.0.0.1", **ports, "management_port": free_port()}))
        refused = app.get("/endpoints/split")
    assert refused.status_code == 200 and "management API" in refused.text and 'id="predict-form"' in refused.text
    assert 'id="traffic" data-kind="bar"' in page and "Shadow: 3.0" in page
    assert re.search(r'id="agreement">100\.0% of 12<', page)
    assert int(re.search(r'id="requests">(\d+)<', page).group(1)) >= 12
    assert "<tr><td>1.0</td><td>default</td>" in page and "<tr><td>3.0</td><td> shadow</td>" in page
    assert re.search(r"<tr><td>2\.0</td><td></td>\s*<td class=\"num\">25\.0</td>", page)
