"""Serving benchmark: req/s and p50/p99 latency at concurrency 1, 8 and 32, on the fine-tuned MiniLM
star-rating model, for

    (a) naive       a Hugging Face `pipeline` behind FastAPI, one request at a time
    (b) torch       nlpforge serve, torch backend, dynamic batching
    (c) onnx-int8   nlpforge serve, ONNX Runtime, dynamic int8
    (d) torchserve  TorchServe 0.12 (PyPI) with a generic transformer handler, same batching settings
    no-op HTTP      FastAPI returning a constant (the HTTP stack alone)
    echo            nlpforge serve with a model-free handler (HTTP + queue + batching + worker IPC)

plus the accuracy of torch, onnx and onnx-int8 on the Amazon validation set. The load generator
runs in its own process (asyncio + httpx). Run:

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

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "amazon_reviews"
TS_VENV = ROOT / "bench" / ".ts-venv"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
BATCH_SIZE, MAX_BATCH_DELAY = 32, 5  # a batch as large as the top concurrency: one batch ahead at most


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_texts(path: Path, limit: int | None = None) -> tuple[list[str], list]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rows = [r for r in rows if r["review_body"].strip()][:limit]
    return [r["review_body"] for r in rows], [r["star_rating"] for r in rows]


# --- load generator (its own process) -----------------------------------------------------------------
async def _load(url: str, texts: list[str], concurrency: int, seconds: float, warmup: float) -> dict:
    import httpx

    latencies, errors = [], 0
    rng = random.Random(0)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        start = time.perf_counter()
        measure_from = start + warmup
        end = measure_from + seconds

        async def user():
            nonlocal errors
            while True:
                sent = time.perf_counter()
                if sent >= end:
                    return
                response = await client.post(url, content=rng.choice(texts).encode("utf-8"),
                                             headers={"content-type": "text/plain"})
                done = time.perf_counter()
                if sent >= measure_from:
                    if response.status_code == 200:
                        latencies.append(done - sent)
                    else:
                        errors += 1
        await asyncio.gather(*(user() for _ in range(concurrency)))
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")
    return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / seconds,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "latencies": latencies}


def run_load(url: str, texts_file: Path, concurrency: int, seconds: float, warmup: float) -> dict:
    out = subprocess.run([sys.executable, __file__, "load", url, str(texts_file), str(concurrency), str(seconds),
                          str(warmup)], capture_output=True, text=True, env=ENV, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- servers under test ---------------------------------------------------------------------------------
def naive_app(model: str):
    """(a): a transformers pipeline behind FastAPI; the endpoint blocks the loop, so one request at a time."""
    import torch
    from fastapi import FastAPI, Request
    from transformers import pipeline

    torch.set_num_threads(2)
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


def start_naive(model: str):
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "naive", model, str(port)], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_healthy(f"http://127.0.0.1:{port}/docs", process)
    return process, f"http://127.0.0.1:{port}"


def start_nlpforge(model: str, backend: str, store: Path):
    ports = [free_port() for _ in range(3)]
    command = [str(ROOT / ".venv" / "bin" / "nlpforge"), "serve", "--model-store", str(store), "--no-auth",
               "--models", f"m={Path(model).resolve()}", "--backend", backend, "--batch-size", str(BATCH_SIZE),
               "--max-batch-delay", str(MAX_BATCH_DELAY), "--threads", "2", "--log-level", "warning",
               "--inference-port", str(ports[0]), "--management-port", str(ports[1]),
               "--metrics-port", str(ports[2]), "--queue-size", "1024"]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_healthy(f"http://127.0.0.1:{ports[0]}/ping", process)
    return process, f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[2]}/metrics"


TS_HANDLER = '''
"""A generic transformers sequence-classification handler for TorchServe (batched)."""
import json
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from ts.torch_handler.base_handler import BaseHandler


class TransformersClassifierHandler(BaseHandler):
    def initialize(self, context):
        model_dir = context.system_properties.get("model_dir")
        torch.set_num_threads(2)
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


def start_torchserve(model: str, work: Path):
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
    env = {**ENV, "PATH": f"{bin_dir}:{ENV['PATH']}", "TS_DISABLE_SYSTEM_METRICS": "true"}
    process = subprocess.Popen([str(bin_dir / "torchserve"), "--start", "--foreground", "--ncs", "--model-store",
                                str(store), "--ts-config", str(config), "--disable-token-auth"],
                               env=env, cwd=work, stdout=open(work / "torchserve.log", "w"), stderr=subprocess.STDOUT)
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
    if "accuracy" in results:
        lines += ["", "| backend | validation accuracy | rows/s (batch 32) |", "|---|---:|---:|"]
        for backend, row in results["accuracy"].items():
            lines.append(f"| {backend} | {row['accuracy']:.4f} | {row['rows_per_s']:.1f} |")
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "bench" / "models" / "stars"))
    parser.add_argument("--validation", default=str(DATA / "digital_video_validation.csv"))
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per target, level and round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds over all targets")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--skip", nargs="*", default=[], help="targets to leave out")
    parser.add_argument("--results", default=str(ROOT / "bench" / "results" / "serving.json"))
    args = parser.parse_args()

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
    # Every server runs for the whole benchmark and the rounds interleave them, so a change in the
    # machine's load (it is shared) hits every target alike instead of whichever ran at that time.
    processes = []
    try:
        for target in targets:
            try:
                if target in ("noop", "naive"):
                    if "naive-process" not in servers:
                        process, base = start_naive(args.model)
                        processes.append(process)
                        servers["naive-process"] = base
                    base = servers["naive-process"]
                    servers[target] = (base + ("/noop" if target == "noop" else "/predict"), None)
                elif target == "torchserve":
                    process, base = start_torchserve(args.model, work / "torchserve")
                    processes.append(process)
                    servers[target] = (base + "/predictions/stars", None)
                else:
                    model = str(echo) if target == "echo" else args.model
                    backend = "torch" if target == "echo" else target
                    process, base, metrics_url = start_nlpforge(model, backend, work / f"store-{target}")
                    processes.append(process)
                    servers[target] = (base + "/predictions/m", metrics_url)
            except Exception as error:  # noqa: BLE001 - one target failing must not lose the others' numbers
                notes[target] = f"{type(error).__name__}: {error}"
                print(f"{target}: FAILED: {notes[target]}", flush=True)
        measured = [t for t in targets if t in servers]
        pooled = {(t, c): {"latencies": [], "requests": 0, "errors": 0, "batch": [0.0, 0.0, 0.0]}
                  for t in measured for c in args.concurrency}
        for round_number in range(args.rounds):
            for c in args.concurrency:
                for target in measured:
                    url, metrics_url = servers[target]
                    before = batch_totals(metrics_url) if metrics_url else None
                    row = run_load(url, texts_file, c, args.seconds, args.warmup)
                    cell = pooled[(target, c)]
                    cell["latencies"] += row["latencies"]
                    cell["requests"] += row["requests"]
                    cell["errors"] += row["errors"]
                    if metrics_url:  # includes the warm-up seconds, whose batches look like the measured ones
                        after = batch_totals(metrics_url)
                        for i, key in enumerate(("nlpforge_batch_time_seconds_sum", "nlpforge_batch_time_seconds_count",
                                                 "nlpforge_batch_size_sum")):
                            cell["batch"][i] += after[key] - before[key]
                    print(f"round {round_number + 1} {target:11s} c={c:<3d} {row['rps']:8.1f} req/s  "
                          f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms", flush=True)
        for (target, c), cell in pooled.items():
            latencies = sorted(cell["latencies"])

            def pct(p):
                return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")
            row = {"rps": cell["requests"] / (args.seconds * args.rounds), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
                   "requests": cell["requests"], "errors": cell["errors"]}
            seconds_sum, count, inputs = cell["batch"]
            if count:
                row["batch_ms"], row["batch_size"] = seconds_sum / count * 1000, inputs / count
            results.setdefault(target, {})[c] = row
    finally:
        for process in processes:
            stop(process)
        if "torchserve" in targets and (TS_VENV / "bin" / "torchserve").exists():
            # the launcher's SIGTERM leaves the Java frontend running; its own --stop ends it
            subprocess.run([str(TS_VENV / "bin" / "torchserve"), "--stop"], env=ENV, capture_output=True)
    if "accuracy" not in args.skip:
        results["accuracy"] = accuracy(args.model, Path(args.validation))
        print(json.dumps(results["accuracy"], indent=2))
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps({"results": results, "notes": notes, "seconds": args.seconds,
                                              "rounds": args.rounds,
                                              "batch_size": BATCH_SIZE, "max_batch_delay_ms": MAX_BATCH_DELAY},
                                             indent=2))
    print(f"wrote {args.results}")
    print(markdown(json.loads(Path(args.results).read_text())))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        url, texts_file, concurrency, seconds, warmup = sys.argv[2:7]
        texts = json.loads(Path(texts_file).read_text())
        print(json.dumps(asyncio.run(_load(url, texts, int(concurrency), float(seconds), float(warmup)))))
    elif len(sys.argv) > 1 and sys.argv[1] == "report":
        print(markdown(json.loads(Path(sys.argv[2]).read_text())))
    elif len(sys.argv) > 1 and sys.argv[1] == "naive":
        import uvicorn

        uvicorn.run(naive_app(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[3]), log_level="warning",
                    access_log=False)
    else:
        main()
