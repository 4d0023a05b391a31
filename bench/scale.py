"""Scale-out on existing engines, measured on this one machine: what each path costs and whether it gives the
same result as the single-machine run it replaces.

  * training: one process against torchrun with 2 nodes (two launchers, gloo over loopback) and against
    2 nodes with one rank killed mid-way (--max-restarts 1): samples/s, and the largest weight difference
    to the 1-node run with the same global batch;
  * processing and batch transform: 1 against 2 instances (bench/scale_processing.py);
  * tuning: trials per minute of one tuner on SQLite against two tuner processes sharing a PostgreSQL study;
  * serving: one `nlpforge serve` asked directly against two replicas behind HAProxy, and requests lost when
    a replica is killed under load.

    .venv/bin/python bench/scale.py [--only training,processing,tuning,serving] [--rows 1000]

On 2 cores, more processes cannot be faster: these figures show the cost of each engine's coordination and
that results are identical, not a speed-up.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
DATA = ROOT.parent / "shared" / "data" / "amazon_reviews"
WORK = HERE / "results" / "scale"
NLPFORGE = [sys.executable, "-m", "nlpforge"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def table(title: str, header: list[str], rows: list[list]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    lines = [f"\n{title}", " | ".join(h.ljust(w) for h, w in zip(header, widths)),
             "-|-".join("-" * w for w in widths)]
    lines += [" | ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in rows]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


# --- training ---------------------------------------------------------------------------------------------

def _train_command(train: Path, validation: Path, output: Path, *extra) -> list[str]:
    return [*NLPFORGE, "train", "text-classification", "--train", str(train), "--validation", str(validation),
            "--text-column", "review_body", "--label-column", "star_rating", "--output", str(output),
            "--model", "bert-mini", "--epochs", "1", "--batch-size", "16", "--max-seq-length", "128",
            "--dropout", "0", "--no-progress", "--overwrite", "--checkpoint-every", "10", *extra]


def _samples_per_second(folder: Path) -> tuple[float, int]:
    meta = json.loads((folder / "nlpforge.json").read_text())
    metrics = meta["metrics"]
    return metrics["train_samples"] / max(metrics["train_seconds"], 1e-9), meta.get("world_size", 1)


def _gap(first: Path, second: Path) -> float:
    from safetensors.torch import load_file

    a, b = load_file(str(first / "model.safetensors")), load_file(str(second / "model.safetensors"))
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _rows(source: Path, target: Path, count: int) -> Path:
    import csv

    with open(source, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = [row for _, row in zip(range(count), reader)]
    with open(target, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return target


def bench_training(rows: int) -> str:
    import psutil

    work = WORK / "training"
    work.mkdir(parents=True, exist_ok=True)
    train = _rows(DATA / "digital_video_train.csv", work / "train.csv", rows)
    validation = _rows(DATA / "digital_video_validation.csv", work / "validation.csv", 200)
    results = []

    started = time.perf_counter()
    subprocess.run(_train_command(train, validation, work / "one", "--threads", "2"), check=True,
                   capture_output=True)
    results.append(["1 process, 2 threads", time.perf_counter() - started, *_samples_per_second(work / "one"),
                    "-"])

    started = time.perf_counter()
    subprocess.run(_train_command(train, validation, work / "nproc", "--threads", "1", "--nproc", "2",
                                  "--master-port", str(free_port())), check=True, capture_output=True)
    results.append(["torchrun: 1 node x 2 processes", time.perf_counter() - started,
                    *_samples_per_second(work / "nproc"), "reference"])

    port, started = free_port(), time.perf_counter()
    nodes = [subprocess.Popen(_train_command(train, validation, work / "nodes", "--threads", "1", "--nnodes", "2",
                                             "--node-rank", str(rank), "--master-port", str(port)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for rank in (0, 1)]
    assert all(node.wait() == 0 for node in nodes), "the 2-node run failed"
    results.append(["torchrun: 2 nodes x 1 process", time.perf_counter() - started,
                    *_samples_per_second(work / "nodes"), f"{_gap(work / 'nproc', work / 'nodes'):.1e}"])

    checkpoints = work / "elastic-checkpoints"
    subprocess.run(["rm", "-rf", str(checkpoints)], check=True)
    started = time.perf_counter()
    launcher = subprocess.Popen(_train_command(train, validation, work / "elastic", "--threads", "1", "--nproc", "2",
                                               "--master-port", str(free_port()), "--max-restarts", "1",
                                               "--checkpoint-dir", str(checkpoints)),
                                stdout=open(work / "elastic.log", "w"), stderr=subprocess.STDOUT)
    killed = False
    while launcher.poll() is None:
        if not killed and len(list(checkpoints.glob("step-*"))) >= 2:
            for child in psutil.Process(launcher.pid).children(recursive=True):
                try:
                    if child.environ().get("RANK") == "1" and "nlpforge.training.run" in " ".join(child.cmdline()):
                        child.kill()
                        killed = True
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        time.sleep(0.05)
    assert launcher.returncode == 0 and killed, f"the elastic run failed or no rank was killed: see {work}/elastic.log"
    results.append(["torchrun: 2 processes, rank 1 killed, restarted", time.perf_counter() - started,
                    *_samples_per_second(work / "elastic"), f"{_gap(work / 'nproc', work / 'elastic'):.1e}"])
    return table(f"Training bert-mini on {rows} Amazon reviews, 1 epoch, global batch 16, 128 tokens",
                 ["run", "wall s", "samples/s", "world size", "max |w - reference|"],
                 [[name, f"{wall:.1f}", f"{rate:.1f}", size, gap] for name, wall, rate, size, gap in results])


# --- processing and batch transform ----------------------------------------------------------------------

def bench_processing() -> str:
    """IMDB tokenised and normalised by 1 and by 2 processing instances (bench/scale_processing.py)."""
    from scale_processing import bench_processing as run

    rows = run()
    return "\n".join(f"processing, {r['instances']} instance(s): {r['seconds']:.1f} s, {r['rows_per_second']:,.0f} "
                     f"rows/s, identical to 1 instance: {r['identical']}" for r in rows)


# --- tuning ----------------------------------------------------------------------------------------------

def bench_tuning(trials: int = 12) -> str:
    """One tuner on SQLite (one trial at a time, then two threads) against two tuner processes sharing a
    study on PostgreSQL: the same quick script trials, so the figures are the coordination's cost."""
    import textwrap

    sys.path.insert(0, str(ROOT / "tests"))
    from postgres_support import start_postgres, stop_postgres
    from test_scale_database import TUNER, load_study
    from test_tuning_tuner import METRICS, SCRIPT

    work = WORK / "tuning"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    script = work / "train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    code = f"METRICS = {METRICS!r}\n" + textwrap.dedent(TUNER)
    server = start_postgres()
    rows = []
    try:
        runs = [("1 tuner, SQLite, 1 trial at a time", f"sqlite:///{work / 'one.db'}", 1, ""),
                ("1 tuner, SQLite, 2 trials at a time", f"sqlite:///{work / 'threads.db'}", 1,
                 "max_parallel_jobs=2"),
                ("2 tuner processes, one PostgreSQL study", server.database("bench_tuning"), 2, "")]
        for name, storage, processes, option in runs:
            program = code.replace("heartbeat_interval=2)", f"heartbeat_interval=2, {option})") if option else code
            started = time.perf_counter()
            tuners = [subprocess.Popen([sys.executable, "-c", program, str(script), str(work / "jobs"), storage,
                                        "bench", str(trials), "12"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL) for _ in range(processes)]
            assert all(t.wait() == 0 for t in tuners), f"{name}: a tuner failed"
            seconds = time.perf_counter() - started
            study = load_study(storage, "bench")
            done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
            jobs = [t.user_attrs["job_name"] for t in done]
            rows.append([name, f"{seconds:.1f}", f"{60 * len(done) / seconds:.1f}", len(done),
                         len(jobs) - len(set(jobs)), trials - len(done)])
    finally:
        stop_postgres(server)
    return table(f"Tuning: {trials} trials of a 0.6 s script job", ["tuners", "wall s", "trials/min", "complete",
                                                                    "duplicates", "lost"], rows)


# --- serving replicas ------------------------------------------------------------------------------------

def _load(url: str, seconds: float, concurrency: int, text: str, on_tick=None) -> dict:
    """Requests from `concurrency` threads for `seconds`: answers by status, requests/s and p50/p99 latency."""
    import threading

    import httpx

    statuses, latencies, lock = {}, [], threading.Lock()
    end = time.perf_counter() + seconds

    def client():
        with httpx.Client(timeout=60) as http:
            while time.perf_counter() < end:
                started = time.perf_counter()
                try:
                    status = http.post(f"{url}/predictions/stars", content=text.encode()).status_code
                except httpx.HTTPError as error:
                    status = type(error).__name__
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    latencies.append(time.perf_counter() - started)
                    if on_tick:
                        on_tick(sum(statuses.values()))

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return {"statuses": statuses, "rate": len(latencies) / wall,
            "p50": latencies[len(latencies) // 2], "p99": latencies[int(len(latencies) * 0.99)]}


def bench_serving(seconds: float = 15, concurrency: int = 16) -> str:
    """One `nlpforge serve` asked directly against two --shared-state replicas behind HAProxy, and the
    same with one replica SIGKILLed half-way."""
    import shutil

    sys.path.insert(0, str(ROOT / "tests"))
    from balancer_support import haproxy, start_replica, wait_until_healthy

    model = HERE / "models" / "stars"
    if not model.exists():
        raise SystemExit(f"{model} is missing: bench/serving.py says how to train it")
    work = WORK / "serving"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    store = work / "store"
    store.mkdir(parents=True)
    shutil.copytree(model, store / "stars")
    text = "The picture and sound were fine but the story dragged on far too long for my taste."
    flags = ("--models", "stars=stars", "--batch-size", "8", "--max-batch-delay", "10")
    rows = []
    for threads in (1, 2):  # a replica runs one torch thread; one server may use both cores
        one = start_replica("alone", store, work, *flags, "--threads", str(threads))
        try:
            wait_until_healthy(one)
            _load(one.url(), 3, concurrency, text)  # warm-up
            rows.append([f"1 server, {threads} thread(s), asked directly", _load(one.url(), seconds, concurrency,
                                                                                 text)])
        finally:
            one.stop()
    replicas = [start_replica(f"r{i}", store, work, *flags) for i in (1, 2)]
    try:
        for replica in replicas:
            wait_until_healthy(replica)
        with haproxy(replicas, work) as balancer:
            _load(balancer.url, 3, concurrency, text)
            rows.append(["2 replicas (1 thread each) behind HAProxy", _load(balancer.url, seconds, concurrency, text)])
            killed = []

            def kill_half_way(answered):
                if not killed and answered >= rows[-1][1]["rate"] * seconds / 2:
                    killed.append(answered)
                    replicas[1].kill()

            result = _load(balancer.url, seconds, concurrency, text, on_tick=kill_half_way)
            rows.append([f"2 replicas, one SIGKILLed after {killed[0] if killed else '?'} answers", result])
    finally:
        for replica in replicas:
            replica.stop()
    return table(f"Serving MiniLM stars through HAProxy: concurrency {concurrency}, {seconds:.0f} s each",
                 ["setup", "requests/s", "p50 ms", "p99 ms", "answers"],
                 [[name, f"{r['rate']:.1f}", f"{1000 * r['p50']:.0f}", f"{1000 * r['p99']:.0f}",
                   ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items(), key=str))] for name, r in rows])


SECTIONS = {"training": bench_training, "processing": bench_processing, "tuning": bench_tuning,
            "serving": bench_serving}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--rows", type=int, default=1000, help="training rows")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("NLPFORGE_TRACKING", "0")
    from machine import describe

    print(f"machine: {describe()}; load {os.getloadavg()[0]:.2f}", flush=True)
    out = []
    for name in args.only.split(","):
        section = SECTIONS[name]
        out.append(section(args.rows) if name == "training" else section())
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "latest.txt").write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
