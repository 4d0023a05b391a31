"""Prometheus metrics of the model server, per model and version, served on the metrics port.

    metrics = ServerMetrics()
    metrics.requests.labels("stars", "1.0", "200").inc()
    metrics.render()  # text exposition format for GET /metrics

Each server owns its registry, so several servers in one process (tests) do not mix counts.

TorchServe's names are exported beside ours, so dashboards built for TorchServe work unchanged:
`ts_inference_requests_total`, `ts_inference_latency_microseconds`, `ts_queue_latency_microseconds`
and `Requests2XX`/`Requests4XX`/`Requests5XX`. The two latencies are running totals exported as gauges,
since prometheus_client would add `_total` to a counter's name. The three request counts are written
as TorchServe writes them, labels in its order with its trailing comma, and present from the start:

    Requests2XX{Level="Host",Hostname="vm",} 12.0

A monitoring schedule attached to a model (`nlpforge monitor schedule --model-name stars --model-version 1.0`)
writes its latest status to `<capture folder>/<model>/<version>/monitoring_status.json` (no version: every
version of the model, `<capture folder>/<model>/monitoring_status.json`, labelled model_version=""). The server
reads these files at each scrape and exports, per model_name and model_version:

    nlpforge_monitor_drift            1 when the latest run found violations, else 0
    nlpforge_monitor_no_data          1 when the latest run's window held no captured text, else 0
    nlpforge_monitor_violations       violations found by the latest run
    nlpforge_monitor_items            texts in the latest run's window
    nlpforge_monitor_last_run_timestamp_seconds   when the latest run ended (Unix time)
"""
import json
import socket
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
DRIFT_STATUS_FILE = "monitoring_status.json"
DRIFT_STATUSES = ("no data", "no violations", "violations")


def drift_status_path(capture_folder, model_name: str, model_version: str | None) -> Path:
    """Where a schedule attached to a model version (or, without a version, to the whole model) writes its status."""
    folder = Path(capture_folder) / model_name
    return (folder / model_version if model_version else folder) / DRIFT_STATUS_FILE


def read_drift_statuses(capture_folder) -> list[dict]:
    """The monitoring status files under a capture folder; a file that is not a complete status is skipped."""
    folder = Path(capture_folder)
    statuses = []
    for path in sorted([*folder.glob(f"*/{DRIFT_STATUS_FILE}"), *folder.glob(f"*/*/{DRIFT_STATUS_FILE}")]):
        try:
            status = json.loads(path.read_text(encoding="utf-8"))
            if (isinstance(status, dict) and status.get("status") in DRIFT_STATUSES
                    and isinstance(status.get("model_name"), str)
                    and all(isinstance(status.get(k), (int, float))
                            for k in ("violations", "item_count", "timestamp"))):
                statuses.append(status)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
    return statuses


class ServerMetrics:
    """Every series the server exports; labels are (model, version[, ...])."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, capture_folder=None):
        self.capture_folder = capture_folder
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("nlpforge_requests", "Inference requests by HTTP status code",
                                ["model", "version", "status"], registry=r)
        self.latency = Histogram("nlpforge_request_latency_seconds", "Time from request to response",
                                 ["model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_time = Histogram("nlpforge_queue_time_seconds", "Time an input waited before its batch ran",
                                    ["model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_time = Histogram("nlpforge_batch_time_seconds", "Time a worker took for one batch",
                                    ["model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("nlpforge_batch_size", "Inputs per batch sent to a worker",
                                    ["model", "version"], buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("nlpforge_queue_depth", "Inputs waiting for a worker",
                                 ["model", "version"], registry=r)
        self.workers = Gauge("nlpforge_workers", "Live worker processes", ["model", "version"], registry=r)
        self.worker_restarts = Counter("nlpforge_worker_restarts", "Worker processes restarted after a crash or hang",
                                       ["model", "version", "reason"], registry=r)
        self.rejected = Counter("nlpforge_rejected", "Inputs refused because the queue was full",
                                ["model", "version"], registry=r)
        self.truncated = Counter("nlpforge_truncated_inputs", "Inputs longer than max_seq_length, truncated",
                                 ["model", "version"], registry=r)
        self.shadow = Counter("nlpforge_shadow_comparisons", "Shadow predictions compared with the served ones",
                              ["model", "version", "shadow_version", "agree"], registry=r)
        self.captured = Counter("nlpforge_captured", "Request/response pairs written to data capture",
                                ["model", "version"], registry=r)
        ts = ["model_name", "model_version"]
        self.ts_requests = Counter("ts_inference_requests", "TorchServe's name: inference requests per model",
                                   ts, registry=r)
        self.ts_latency = Gauge("ts_inference_latency_microseconds", "TorchServe's name: total time of answered "
                                "inference requests, microseconds (a running total)", ts, registry=r)
        self.ts_queue_latency = Gauge("ts_queue_latency_microseconds", "TorchServe's name: total time inputs "
                                      "waited in the queue, microseconds (a running total)", ts, registry=r)
        self.drift = {
            "drift": Gauge("nlpforge_monitor_drift", "1 when the latest monitoring run found violations", ts,
                           registry=r),
            "no_data": Gauge("nlpforge_monitor_no_data", "1 when the latest monitoring run's window held no "
                             "captured text", ts, registry=r),
            "violations": Gauge("nlpforge_monitor_violations", "Violations found by the latest monitoring run", ts,
                                registry=r),
            "item_count": Gauge("nlpforge_monitor_items", "Texts in the latest monitoring run's window", ts,
                                registry=r),
            "timestamp": Gauge("nlpforge_monitor_last_run_timestamp_seconds", "When the latest monitoring run "
                               "ended, Unix time", ts, registry=r)}
        self.by_class = {c: 0 for c in "245"}
        self.hostname = socket.gethostname()

    def answered(self, model: str, version: str, status: int, seconds: float) -> None:
        """Count one inference request under nlpforge's names and TorchServe's."""
        self.requests.labels(model, version, str(status)).inc()
        if str(status)[0] in self.by_class:
            self.by_class[str(status)[0]] += 1
        if model:
            self.ts_requests.labels(model, version).inc()
        if status == 200:
            self.latency.labels(model, version).observe(seconds)
            self.ts_latency.labels(model, version).inc(seconds * 1e6)

    def waited(self, model: str, version: str, seconds: float) -> None:
        """Record the time one input waited for its batch."""
        self.queue_time.labels(model, version).observe(seconds)
        self.ts_queue_latency.labels(model, version).inc(seconds * 1e6)

    def forget(self, model: str, version: str) -> None:
        """Drop a removed version's gauges, so scrapes stop reporting it."""
        for gauge in (self.queue_depth, self.workers):
            try:
                gauge.remove(model, version)
            except KeyError:
                pass

    def read_drift(self) -> None:
        """Set the monitoring gauges from the status files schedules wrote; a removed file drops its series."""
        for gauge in self.drift.values():
            gauge.clear()
        if self.capture_folder is None:
            return
        for status in read_drift_statuses(self.capture_folder):
            labels = (status["model_name"], str(status.get("model_version") or ""))
            values = {"drift": status["status"] == "violations", "no_data": status["status"] == "no data",
                      "violations": status["violations"], "item_count": status["item_count"],
                      "timestamp": status["timestamp"]}
            for key, gauge in self.drift.items():
                gauge.labels(*labels).set(float(values[key]))

    def render(self) -> bytes:
        self.read_drift()
        hostname = self.hostname.replace("\\", "\\\\").replace('"', '\\"')
        by_class = "".join(f"# HELP Requests{c}XX TorchServe's name: inference requests answered {c}xx\n"
                           f"# TYPE Requests{c}XX counter\n"
                           f'Requests{c}XX{{Level="Host",Hostname="{hostname}",}} {float(n)}\n'
                           for c, n in self.by_class.items())
        return generate_latest(self.registry) + by_class.encode()
