"""Serving benchmark: req/s and p50/p99 latency at concurrency 1, 8 and 32, on the fine-tuned MiniLM
star-rating model, for

    (a) naive       a Hugging Face `pipeline` behind FastAPI, one request at a time
    (b) torch       nlpforge serve, torch backend, dynamic batching
    (c) onnx-int8   nlpforge serve, ONNX Runtime, dynamic int8
    (d) torchserve  TorchServe 0.12 (PyPI) with a generic transformer handler, same batching settings
    no-op HTTP      FastAPI returning a constant (the HTTP stack alone)
    echo            nlpforge serve with a model-free handler (HTTP + queue + batching + worker IPC)

plus the accuracy of torch, onnx and onnx-int8 on the Amazon validation set, and two checks of the
server against itself:

    server/backend  req/s at the top concurrency against the offline rows/s of the same backend: the
                    worker's own code path (handler setup, then predict on batches of 32 reviews) in a
                    loop, no HTTP, on the same cores and threads as the server's worker
    p99 bound       p99 at the top concurrency against 2 x (batch time + max delay), the batch time
                    read from the server's nlpforge_batch_* metrics

Beside req/s it reads the CPU time per answer of the load generator, the server process and its workers,
which another job's load on shared cores changes far less. Every figure is the median over the
interleaved rounds. The load generator runs in its own process
(asyncio, raw keep-alive HTTP/1.1 connections). With --pin (the default on 2 cores or more) it runs on
the first core, and every server, its workers and the offline loop on the others, with one thread per
server core. Run:

    .venv/bin/python bench/serving.py --model bench/models/stars --seconds 12
    .venv/bin/python bench/serving.py --skip torchserve           # without TorchServe

TorchServe needs Java 17 and a venv of its own: bench/.ts-venv (pip install torchserve==0.12.0
torch-model-archiver torch==2.13.0 transformers).
"""
import argparse
import asyncio
import csv
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "amazon_reviews"
TS_VENV = ROOT / "bench" / ".ts-venv"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
BATCH_SIZE, MAX_BATCH_DELAY = 32, 5  # a batch as large as the top concurrency: one batch ahead at most


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def core_sets(pin: bool) -> tuple[set | None, set | None]:
    """(load generator cores, server cores): the first core and the rest when pinned; (None, None) when not."""
    available = sorted(os.sched_getaffinity(0))
    if not pin or len(available) < 2:
        return None, None
    return {available[0]}, set(available[1:])


def on_cores(cores: set | None):
    """A Popen preexec_fn that pins the child (and what it starts) to `cores`; None leaves it unpinned."""
    return (lambda: os.sched_setaffinity(0, cores)) if cores else None


def read_texts(path: Path, limit: int | None = None) -> tuple[list[str], list]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rows = [r for r in rows if r["review_body"].strip()][:limit]
    return [r["review_body"] for r in rows], [r["star_rating"] for r in rows]


# --- load generator (its own process) -----------------------------------------------------------------
def percentile(latencies: list[float], p: float) -> float:
    """The p-th quantile of sorted latencies in seconds, in ms."""
    return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs raw bodies: a few asyncio stream calls per request, so
    that the load generator costs far less CPU per request than the servers it measures (httpx costs several
    ms, as much as the server itself)."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port or 80, parts.path or "/"
        self.reader = self.writer = None

    async def post(self, body: bytes, content_type: str = "text/plain") -> int:
        """Send one request and read its whole answer; returns the status code."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: "
                          f"{content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode("latin-1") + body)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        status = int(head.split(" ", 2)[1])
        headers = dict(line.split(":", 1) for line in head.split("\r\n")[1:] if ":" in line)
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
        elif "chunked" in headers.get("transfer-encoding", ""):
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readuntil(b"\r\n")
        if "close" in headers.get("connection", ""):
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _load(url: str, texts: list[str], concurrency: int, seconds: float, warmup: float,
                client: str = "raw") -> dict:
    latencies, errors, answered = [], 0, 0
    rng = random.Random(0)
    bodies = [text.encode("utf-8") for text in texts]
    if client == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        shared = httpx.AsyncClient(timeout=120, limits=limits)

        def connect():
            async def post(body):
                return (await shared.post(url, content=body, headers={"content-type": "text/plain"})).status_code
            return post
    else:
        def connect():
            return Connection(url).post
    start, start_cpu = time.perf_counter(), time.process_time()
    measure_from = start + warmup
    end = measure_from + seconds

    async def user():
        nonlocal errors, answered
        post = connect()
        while True:
            sent = time.perf_counter()
            if sent >= end:
                return
            status = await asyncio.wait_for(post(rng.choice(bodies)), 120)
            done = time.perf_counter()
            answered += status == 200
            if sent >= measure_from:
                if status == 200:
                    latencies.append(done - sent)
                else:
                    errors += 1
    await asyncio.gather(*(user() for _ in range(concurrency)))
    cpu = time.process_time() - start_cpu
    if client == "httpx":
        await shared.aclose()
    latencies.sort()
    return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / seconds,
            "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99), "latencies": latencies,
            "answered": answered, "client_cpu_ms": cpu * 1000 / max(1, answered)}


def run_load(url: str, texts_file: Path, concurrency: int, seconds: float, warmup: float,
             cores: set | None = None, client: str = "raw") -> dict:
    out = subprocess.run([sys.executable, __file__, "load", url, str(texts_file), str(concurrency), str(seconds),
                          str(warmup), client], capture_output=True, text=True, env=ENV, check=True,
                         preexec_fn=on_cores(cores))
    return json.loads(out.stdout.strip().splitlines()[-1])


def offline_rate(model: str, backend: str, threads: int, texts: list[str], seconds: float, warmup: float) -> dict:
    """Rows/s of what the server's worker runs (serving.handler: setup, then predict on a batch), on batches of
    BATCH_SIZE random reviews in a loop: the backend without HTTP, queue or pipe."""
    from nlpforge.serving.handler import handler_for, task_of

    handler = handler_for(task_of(model))
    handler.setup(model, backend=backend, threads=threads)
    items = [handler.decode_request(text.encode("utf-8")) for text in texts]  # as the route decodes a raw body
    rng = random.Random(0)
    rows, measured, cpu, start = 0, 0.0, 0.0, time.perf_counter()
    while True:
        batch = [rng.choice(items) for _ in range(BATCH_SIZE)]
        began, began_cpu = time.perf_counter(), time.process_time()
        handler.predict(batch)
        done = time.perf_counter()
        if began >= start + warmup:
            rows, measured, cpu = rows + len(batch), measured + done - began, cpu + time.process_time() - began_cpu
        if done >= start + warmup + seconds:
            return {"rows": rows, "seconds": measured, "rows_per_s": rows / measured if measured else float("nan"),
                    "batch_ms": measured / max(1, rows / BATCH_SIZE) * 1000, "cpu_ms": cpu * 1000 / max(1, rows)}


def run_offline(model: str, backend: str, threads: int, texts_file: Path, seconds: float, warmup: float,
                cores: set | None = None) -> dict:
    """offline_rate in its own process, with the server worker's cores and thread count."""
    out = subprocess.run([sys.executable, __file__, "offline", model, backend, str(threads), str(texts_file),
                          str(seconds), str(warmup)], capture_output=True, text=True, check=True,
                         env={**ENV, "OMP_NUM_THREADS": str(threads)}, preexec_fn=on_cores(cores))
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- servers under test ---------------------------------------------------------------------------------
def naive_app(model: str, threads: int):
    """(a): a transformers pipeline behind FastAPI; the endpoint blocks the loop, so one request at a time."""
    import torch
    from fastapi import FastAPI, Request
    from transformers import pipeline

    torch.set_num_threads(threads)
    classify = pipeline("text-classification", model=model, tokenizer=model, device="cpu", truncation=True,
                        max_length=128, top_k=None)
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request):
        text = (await request.body()).decode("utf-8")
        scores = classify(text)
        scores = scores[0] if scores and isinstance(scores[0], list) else scores
        best = max(scores, key=lambda s: s["score"])
        return {"label": best["label"], "score": best["score"], "probabilities": {s["label"]: s["score"] for s in scores}}

    @app.post("/noop")
    async def noop(request: Request):
        await request.body()
        return {"label": "noop", "score": 1.0}

    return app


def wait_healthy(url: str, process, timeout: float = 300) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url}: not healthy after {timeout}s")


def stop(process) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def start_naive(model: str, threads: int, cores: set | None):
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "naive", model, str(port), str(threads)], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=on_cores(cores))
    wait_healthy(f"http://127.0.0.1:{port}/docs", process)
    return process, f"http://127.0.0.1:{port}"


def start_nlpforge(model: str, backend: str, store: Path, threads: int, cores: set | None):
    ports = [free_port() for _ in range(3)]
    command = [str(ROOT / ".venv" / "bin" / "nlpforge"), "serve", "--model-store", str(store), "--no-auth",
               "--models", f"m={Path(model).resolve()}", "--backend", backend, "--batch-size", str(BATCH_SIZE),
               "--max-batch-delay", str(MAX_BATCH_DELAY), "--threads", str(threads), "--log-level", "warning",
               "--inference-port", str(ports[0]), "--management-port", str(ports[1]),
               "--metrics-port", str(ports[2]), "--queue-size", "1024"]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=on_cores(cores))
    wait_healthy(f"http://127.0.0.1:{ports[0]}/ping", process)
    return process, f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[2]}/metrics"


TS_HANDLER = '''
"""A generic transformers sequence-classification handler for TorchServe (batched)."""
import json
import os

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from ts.torch_handler.base_handler import BaseHandler


class TransformersClassifierHandler(BaseHandler):
    def initialize(self, context):
        model_dir = context.system_properties.get("model_dir")
        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        self.initialized = True

    def preprocess(self, requests):
        texts = []
        for request in requests:
            data = request.get("data") or request.get("body")
            if isinstance(data, (bytes, bytearray)):
                data = data.decode("utf-8")
            texts.append(data if isinstance(data, str) else json.dumps(data))
        return self.tokenizer(texts, truncation=True, max_length=128, padding=True, return_tensors="pt")

    def inference(self, inputs):
        with torch.inference_mode():
            return torch.softmax(self.model(**inputs).logits, dim=-1)

    def postprocess(self, probabilities):
        labels = self.model.config.id2label
        out = []
        for row in probabilities.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            out.append({"label": labels[best], "score": row[best],
                        "probabilities": {labels[i]: p for i, p in enumerate(row)}})
        return out
'''


def start_torchserve(model: str, work: Path, threads: int, cores: set | None):
    """(d): archive the model with torch-model-archiver and start TorchServe 0.12 on it."""
    bin_dir = TS_VENV / "bin"
    if not (bin_dir / "torchserve").exists():
        raise RuntimeError(f"TorchServe is not installed in {TS_VENV}; see this file's docstring")
    if not shutil.which("java"):
        raise RuntimeError("TorchServe needs Java 17 (`java` is not on PATH)")
    work.mkdir(parents=True, exist_ok=True)
    store = work / "model_store"
    store.mkdir(exist_ok=True)
    handler = work / "handler.py"
    handler.write_text(TS_HANDLER)
    model = Path(model).resolve()
    extra = [str(model / f) for f in ("config.json", "tokenizer.json", "tokenizer_config.json")
             if (model / f).exists()]
    if not (store / "stars.mar").exists():
        subprocess.run([str(bin_dir / "torch-model-archiver"), "--model-name", "stars", "--version", "1.0",
                        "--serialized-file", str(model / "model.safetensors"), "--handler", str(handler),
                        "--extra-files", ",".join(extra), "--export-path", str(store), "--force"],
                       check=True, env={**ENV, "PATH": f"{bin_dir}:{ENV['PATH']}"})
    ports = [free_port() for _ in range(3)]
    config = work / "config.properties"
    config.write_text(f"inference_address=http://127.0.0.1:{ports[0]}\nmanagement_address=http://127.0.0.1:{ports[1]}\n"
                      f"metrics_address=http://127.0.0.1:{ports[2]}\ndisable_token_authorization=true\n"
                      "enable_model_api=true\ninstall_py_dep_per_model=false\ndefault_workers_per_model=1\n"
                      f"models={{\"stars\":{{\"1.0\":{{\"marName\":\"stars.mar\",\"minWorkers\":1,\"maxWorkers\":1,"
                      f"\"batchSize\":{BATCH_SIZE},\"maxBatchDelay\":{MAX_BATCH_DELAY},\"responseTimeout\":120}}}}}}\n"
                      "load_models=stars.mar\njob_queue_size=1000\n")
    env = {**ENV, "PATH": f"{bin_dir}:{ENV['PATH']}", "TS_DISABLE_SYSTEM_METRICS": "true",
           "BENCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    process = subprocess.Popen([str(bin_dir / "torchserve"), "--start", "--foreground", "--ncs", "--model-store",
                                str(store), "--ts-config", str(config), "--disable-token-auth"],
                               env=env, cwd=work, stdout=open(work / "torchserve.log", "w"), stderr=subprocess.STDOUT,
                               preexec_fn=on_cores(cores))
    base = f"http://127.0.0.1:{ports[0]}"
    deadline = time.time() + 300
    import httpx
    while time.time() < deadline:  # /ping is Healthy before the worker is up; wait for a real prediction
        if process.poll() is not None:
            raise RuntimeError(f"TorchServe exited with {process.returncode}; see {work / 'torchserve.log'}")
        try:
            if httpx.post(base + "/predictions/stars", content=b"great", timeout=10).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop(process)
    raise RuntimeError(f"TorchServe served no prediction within 300s; see {work / 'torchserve.log'}")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) used so far by a server process, and by all its children (the workers)."""
    import psutil

    def used(process):
        try:
            times = process.cpu_times()
            return times.user + times.system
        except psutil.NoSuchProcess:
            return 0.0
    process = psutil.Process(pid)
    return used(process), sum(used(child) for child in process.children(recursive=True))


def batch_totals(metrics_url: str) -> dict:
    """Running totals of batch time, batch count and batched inputs from the server's Prometheus metrics."""
    import httpx

    values = dict.fromkeys(("nlpforge_batch_time_seconds_sum", "nlpforge_batch_time_seconds_count",
                            "nlpforge_batch_size_sum"), 0.0)
    for line in httpx.get(metrics_url).text.splitlines():
        for name in values:
            if line.startswith(name + "{"):
                values[name] += float(line.rsplit(" ", 1)[1])
    return values


def batch_stats(before: dict, after: dict) -> tuple[float, float]:
    """(mean batch time in ms, mean batch size) between two batch_totals readings."""
    delta = {k: after[k] - before[k] for k in after}
    count = delta["nlpforge_batch_time_seconds_count"]
    if not count:
        return float("nan"), float("nan")
    return delta["nlpforge_batch_time_seconds_sum"] / count * 1000, delta["nlpforge_batch_size_sum"] / count


# --- accuracy -----------------------------------------------------------------------------------------
def accuracy(model: str, validation: Path) -> dict:
    from nlpforge import load

    texts, labels = read_texts(validation)
    out = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        model_for_backend = load(model, backend=backend)
        started = time.perf_counter()
        predicted = []
        for i in range(0, len(texts), 32):
            predicted += [str(p["label"]) for p in model_for_backend.predict(texts[i:i + 32])]
        seconds = time.perf_counter() - started
        out[backend] = {"accuracy": sum(p == str(y) for p, y in zip(predicted, labels)) / len(labels),
                        "rows": len(labels), "rows_per_s": len(labels) / seconds}
    return out


def median(values: list[float]) -> float:
    values = sorted(v for v in values if v == v)  # drops NaN
    if not values:
        return float("nan")
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def summarise(rounds: list[dict]) -> dict:
    """One target and level: the median over rounds of each figure, and the rounds themselves."""
    row = {key: median([r[key] for r in rounds])
           for key in ("rps", "p50_ms", "p99_ms", "client_cpu_ms", "server_cpu_ms", "worker_cpu_ms")}
    row.update(requests=sum(r["requests"] for r in rounds), errors=sum(r["errors"] for r in rounds), rounds=rounds)
    if any("batch_ms" in r for r in rounds):
        row["batch_ms"] = median([r.get("batch_ms", float("nan")) for r in rounds])
        row["batch_size"] = median([r.get("batch_size", float("nan")) for r in rounds])
    return row


def against_backend(results: dict, top: int) -> dict:
    """For each nlpforge backend: req/s at concurrency `top` over the same backend's offline rows/s (and the
    same in CPU time per answer), and p99 against 2 x (batch time + max delay)."""
    out = {}
    for backend in ("torch", "onnx-int8"):
        row = results.get(backend, {}).get(top)
        if row is None:
            continue
        entry = {key: row.get(key, float("nan")) for key in ("rps", "p99_ms", "batch_ms", "batch_size",
                                                              "client_cpu_ms", "server_cpu_ms", "worker_cpu_ms")}
        entry["p99_bound_ms"] = 2 * (entry["batch_ms"] + MAX_BATCH_DELAY)
        entry["p99_over_bound"] = entry["p99_ms"] / entry["p99_bound_ms"]
        offline = results.get("offline", {}).get(backend)
        if offline:
            entry["offline_rows_per_s"] = offline["rows_per_s"]
            entry["offline_batch_ms"] = offline["batch_ms"]
            entry["offline_cpu_ms"] = offline["cpu_ms"]
            # CPU per answer, which another job's load on the shared cores does not change: the rate the
            # server would reach against its backend with its cores to itself
            entry["server_over_backend_cpu"] = offline["cpu_ms"] / (entry["server_cpu_ms"] + entry["worker_cpu_ms"])
            entry["server_over_backend"] = row["rps"] / offline["rows_per_s"]
        torchserve = results.get("torchserve", {}).get(top)
        if torchserve:
            entry["over_torchserve"] = row["rps"] / torchserve["rps"]
        out[backend] = entry
    return out


def markdown(report: dict) -> str:
    """The results as markdown tables (for docs/benchmarks.md and the README)."""
    results = report["results"]
    names = {"noop": "no-op HTTP (FastAPI, no model)", "naive": "(a) HF pipeline + FastAPI, one at a time",
             "echo": "nlpforge, model-free echo handler", "torch": "(b) nlpforge torch + dynamic batching",
             "onnx-int8": "(c) nlpforge onnx-int8 + dynamic batching", "torchserve": "(d) TorchServe 0.12"}
    levels = sorted({int(c) for name in names if name in results for c in results[name]})
    lines = ["| server | " + " | ".join(f"c={c} req/s | c={c} p50 / p99 ms" for c in levels) + " |",
             "|---|" + "---:|---:|" * len(levels)]
    for name, title in names.items():
        if name not in results:
            continue
        cells = []
        for c in levels:
            row = results[name].get(str(c)) or results[name].get(c)
            cells += [f"{row['rps']:.1f}", f"{row['p50_ms']:.0f} / {row['p99_ms']:.0f}"] if row else ["", ""]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    for name, note in report.get("notes", {}).items():
        lines.append(f"\n{names.get(name, name)}: not measured ({note})")
    checks = report.get("against_backend", {})
    if checks:
        top = report.get("top_concurrency", max(levels) if levels else "")
        lines += ["", f"| backend | c={top} req/s | offline rows/s | server / backend | × TorchServe | "
                      "batch size | batch ms (server / offline) | p99 ms | 2 × (batch + delay) ms |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for backend, e in checks.items():
            lines.append(f"| {backend} | {e['rps']:.1f} | {e.get('offline_rows_per_s', float('nan')):.1f} | "
                         f"{e.get('server_over_backend', float('nan')):.2f}× | "
                         f"{e.get('over_torchserve', float('nan')):.2f}× | {e['batch_size']:.1f} | "
                         f"{e['batch_ms']:.0f} / {e.get('offline_batch_ms', float('nan')):.0f} | {e['p99_ms']:.0f} | "
                         f"{e['p99_bound_ms']:.0f} |")
        lines += ["", "CPU ms per request (all cores; medians over rounds):", "",
                  "| backend | load generator | server process (HTTP, JSON, queue, pipe) | worker | offline | "
                  "offline / (server + worker) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for backend, e in checks.items():
            lines.append(f"| {backend} | {e['client_cpu_ms']:.2f} | {e['server_cpu_ms']:.2f} | "
                         f"{e['worker_cpu_ms']:.2f} | {e.get('offline_cpu_ms', float('nan')):.2f} | "
                         f"{e.get('server_over_backend_cpu', float('nan')):.2f}× |")
    if "accuracy" in results:
        lines += ["", "| backend | validation accuracy | rows/s (batch 32) |", "|---|---:|---:|"]
        for backend, row in results["accuracy"].items():
            lines.append(f"| {backend} | {row['accuracy']:.4f} | {row['rows_per_s']:.1f} |")
    machine = report.get("machine")
    if machine:
        lines.append(f"\n{machine['cores']} cores; load generator on cores {machine['load_cores']}, servers on "
                     f"{machine['server_cores']} with {machine['threads']} thread(s); load average "
                     f"{machine['load_before']:.1f} before, {machine['load_after']:.1f} after")
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "bench" / "models" / "stars"))
    parser.add_argument("--validation", default=str(DATA / "digital_video_validation.csv"))
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per target, level and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all targets")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=len(os.sched_getaffinity(0)) >= 2,
                        help="load generator on the first core, servers and the offline loop on the others")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="load generator: raw asyncio HTTP/1.1 connections, or httpx (costs more CPU per request)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch/ONNX threads of every server and the offline loop (default: the server cores)")
    parser.add_argument("--skip", nargs="*", default=[],
                        help="targets to leave out: noop naive echo torch onnx-int8 torchserve offline accuracy")
    parser.add_argument("--results", default=str(ROOT / "bench" / "results" / "serving.json"))
    args = parser.parse_args()

    load_cores, server_cores = core_sets(args.pin)
    threads = args.threads or (len(server_cores) if server_cores else len(os.sched_getaffinity(0)))
    load_before = os.getloadavg()[0]
    work = ROOT / "bench" / "results" / "serving-work"
    work.mkdir(parents=True, exist_ok=True)
    texts, _ = read_texts(Path(args.validation))
    texts_file = work / "texts.json"
    texts_file.write_text(json.dumps(texts))
    echo = work / "echo-model"
    echo.mkdir(exist_ok=True)
    (echo / "nlpforge.json").write_text(json.dumps({"task": "echo", "format_version": 1}))

    results, notes, servers = {}, {}, {}
    targets = [t for t in ("noop", "naive", "echo", "torch", "onnx-int8", "torchserve") if t not in args.skip]
    offline = [b for b in ("torch", "onnx-int8") if b in targets and "offline" not in args.skip]
    # Every server runs for the whole benchmark and the rounds interleave them, so a change in the
    # machine's load (it is shared) hits every target alike instead of whichever ran at that time.
    processes = []
    try:
        for target in targets:
            try:
                if target in ("noop", "naive"):
                    if "naive-process" not in servers:
                        process, base = start_naive(args.model, threads, server_cores)
                        processes.append(process)
                        servers["naive-process"] = base
                    base = servers["naive-process"]
                    servers[target] = (base + ("/noop" if target == "noop" else "/predict"), None,
                                       processes[-1].pid)
                elif target == "torchserve":
                    process, base = start_torchserve(args.model, work / "torchserve", threads, server_cores)
                    processes.append(process)
                    servers[target] = (base + "/predictions/stars", None, process.pid)
                else:
                    model = str(echo) if target == "echo" else args.model
                    backend = "torch" if target == "echo" else target
                    process, base, metrics_url = start_nlpforge(model, backend, work / f"store-{target}", threads,
                                                                server_cores)
                    processes.append(process)
                    servers[target] = (base + "/predictions/m", metrics_url, process.pid)
            except Exception as error:  # noqa: BLE001 - one target failing must not lose the others' numbers
                notes[target] = f"{type(error).__name__}: {error}"
                print(f"{target}: FAILED: {notes[target]}", flush=True)
        measured = [t for t in targets if t in servers]
        rounds = {(t, c): [] for t in measured for c in args.concurrency}
        offline_rounds = {b: [] for b in offline}
        for round_number in range(args.rounds):
            for c in args.concurrency:
                for target in measured:
                    url, metrics_url, pid = servers[target]
                    before = batch_totals(metrics_url) if metrics_url else None
                    cpu_before = cpu_seconds(pid)
                    row = run_load(url, texts_file, c, args.seconds, args.warmup, load_cores, args.client)
                    cpu_after, answered = cpu_seconds(pid), max(1, row.pop("answered"))
                    row["server_cpu_ms"] = (cpu_after[0] - cpu_before[0]) * 1000 / answered
                    row["worker_cpu_ms"] = (cpu_after[1] - cpu_before[1]) * 1000 / answered
                    latencies = row.pop("latencies")
                    row.update(p50_ms=percentile(latencies, 0.5), p99_ms=percentile(latencies, 0.99))
                    if metrics_url:  # includes the warm-up seconds, whose batches look like the measured ones
                        row["batch_ms"], row["batch_size"] = batch_stats(before, batch_totals(metrics_url))
                    rounds[(target, c)].append(row)
                    print(f"round {round_number + 1} {target:11s} c={c:<3d} {row['rps']:8.1f} req/s  "
                          f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms", flush=True)
            for backend in offline:
                row = run_offline(args.model, backend, threads, texts_file, args.seconds, args.warmup, server_cores)
                offline_rounds[backend].append(row)
                print(f"round {round_number + 1} offline {backend:9s} {row['rows_per_s']:8.1f} rows/s  "
                      f"batch {row['batch_ms']:6.1f} ms", flush=True)
        for (target, c), cell in rounds.items():
            results.setdefault(target, {})[c] = summarise(cell)
        for backend, cell in offline_rounds.items():
            results.setdefault("offline", {})[backend] = {
                "rows_per_s": median([r["rows_per_s"] for r in cell]),
                "batch_ms": median([r["batch_ms"] for r in cell]),
                "cpu_ms": median([r["cpu_ms"] for r in cell]), "rounds": cell}
    finally:
        for process in processes:
            stop(process)
        if "torchserve" in targets and (TS_VENV / "bin" / "torchserve").exists():
            # the launcher's SIGTERM leaves the Java frontend running; its own --stop ends it
            subprocess.run([str(TS_VENV / "bin" / "torchserve"), "--stop"], env=ENV, capture_output=True)
    top = max(args.concurrency)
    checks = against_backend(results, top)
    for backend, e in checks.items():
        print(f"{backend}: c={top} {e['rps']:.1f} req/s, offline {e.get('offline_rows_per_s', float('nan')):.1f} "
              f"rows/s, server/backend {e.get('server_over_backend', float('nan')):.2f} (goal >= 0.7; in CPU time "
              f"{e.get('server_over_backend_cpu', float('nan')):.2f}); p99 "
              f"{e['p99_ms']:.0f} ms, bound 2 x ({e['batch_ms']:.0f} + {MAX_BATCH_DELAY}) = {e['p99_bound_ms']:.0f} ms",
              flush=True)
    if "accuracy" not in args.skip:
        results["accuracy"] = accuracy(args.model, Path(args.validation))
        print(json.dumps(results["accuracy"], indent=2))
    machine = {"cores": len(os.sched_getaffinity(0)), "pinned": bool(server_cores),
               "load_cores": sorted(load_cores) if load_cores else "all",
               "server_cores": sorted(server_cores) if server_cores else "all", "threads": threads,
               "load_before": load_before, "load_after": os.getloadavg()[0]}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps({"results": results, "against_backend": checks, "notes": notes,
                                              "machine": machine, "client": args.client, "top_concurrency": top,
                                              "seconds": args.seconds,
                                              "rounds": args.rounds, "batch_size": BATCH_SIZE,
                                              "max_batch_delay_ms": MAX_BATCH_DELAY}, indent=2))
    print(f"wrote {args.results}")
    print(markdown(json.loads(Path(args.results).read_text())))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        url, texts_file, concurrency, seconds, warmup, client = sys.argv[2:8]
        texts = json.loads(Path(texts_file).read_text())
        print(json.dumps(asyncio.run(_load(url, texts, int(concurrency), float(seconds), float(warmup), client))))
    elif len(sys.argv) > 1 and sys.argv[1] == "offline":
        model, backend, threads, texts_file, seconds, warmup = sys.argv[2:8]
        texts = json.loads(Path(texts_file).read_text())
        print(json.dumps(offline_rate(model, backend, int(threads), texts, float(seconds), float(warmup))))
    elif len(sys.argv) > 1 and sys.argv[1] == "report":
        print(markdown(json.loads(Path(sys.argv[2]).read_text())))
    elif len(sys.argv) > 1 and sys.argv[1] == "naive":
        import uvicorn

        uvicorn.run(naive_app(sys.argv[2], int(sys.argv[4])), host="127.0.0.1", port=int(sys.argv[3]),
                    log_level="warning", access_log=False)
    else:
        main()
