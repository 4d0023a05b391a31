"""Benchmark the SageMaker-style SDK: what `fit` adds over running the same script, and spot savings.

    .venv/bin/python bench/sdk.py [--repeats 5]

1. Overhead: a small script-mode script run directly (`python train.py ...`) against
   `Estimator.fit` (job folder, contract, log capture, model.tar.gz), with and without the MLflow
   run. Start-up is the time from the call to the script's first line.
2. Spot: a checkpointing script of fixed work run on demand, then as a spot job interrupted on a
   simulated schedule (SIGTERM, wait for capacity, restart from the checkpoint).
Prints Markdown tables.
"""
import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

SCRIPT = '''
import time
started = time.time()
import argparse, json, os
parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=1)
args = parser.parse_args()
with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "first-line"), "w") as handle:
    handle.write(repr(started))
for epoch in range(args.epochs):
    print(f"epoch {epoch} loss={1 / (epoch + 1):.4f}")
open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w").write(json.dumps({"epochs": args.epochs}))
'''

SPOT_SCRIPT = '''
import json, os, signal, sys, time
checkpoint = os.path.join(os.environ["SM_CHECKPOINT_DIR"], "state.json")
step = json.load(open(checkpoint))["step"] if os.path.exists(checkpoint) else 0
interrupted = False
def on_sigterm(*_):
    global interrupted
    interrupted = True
signal.signal(signal.SIGTERM, on_sigterm)
while step < int(os.environ["SM_HP_STEPS"]):
    time.sleep(0.1)  # one step of work
    step += 1
    if interrupted:
        json.dump({"step": step}, open(checkpoint, "w"))
        sys.exit(143)
open(os.path.join(os.environ["SM_MODEL_DIR"], "done"), "w").write(str(step))
'''


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def direct_run(script: Path, folder: Path) -> tuple[float, float]:
    """(wall seconds, seconds to the first line) of `python train.py` with the SM_* folders it needs."""
    env = {**os.environ, "SM_MODEL_DIR": str(folder / "model"), "SM_OUTPUT_DATA_DIR": str(folder / "data")}
    (folder / "model").mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    started = time.time()
    subprocess.run([sys.executable, str(script), "--epochs", "3"], env=env, check=True, capture_output=True)
    wall = time.time() - started
    return wall, float((folder / "data" / "first-line").read_text()) - started


def fit_run(script: Path, root: Path, tracking: bool) -> tuple[float, float]:
    from nlpforge.sdk import Estimator

    est = Estimator(entry_point=str(script), hyperparameters={"epochs": 3}, jobs_root=str(root), tracking=tracking,
                    metric_definitions=[{"Name": "loss", "Regex": r"loss=([0-9.]+)"}])
    started = time.time()
    est.fit(logs=False)
    wall = time.time() - started
    first = root / est.latest_training_job.name / "output" / "data" / "first-line"
    return wall, float(first.read_text()) - started


COLD_FIT = """
import sys
from nlpforge.sdk import Estimator
Estimator(entry_point=sys.argv[1], hyperparameters={"epochs": 3}, jobs_root=sys.argv[2], tracking=sys.argv[3] == "on",
          metric_definitions=[{"Name": "loss", "Regex": "loss=([0-9.]+)"}]).fit(logs=False)
"""


def cold_seconds(command: list[str]) -> float:
    """Median wall seconds of a command in a fresh interpreter (what a user's first fit costs)."""
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True,
                       env={**os.environ, "SM_MODEL_DIR": tempfile.mkdtemp(), "SM_OUTPUT_DATA_DIR": tempfile.mkdtemp()})
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def import_seconds(statement: str) -> float:
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], check=True)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def overhead_table(work: Path, repeats: int) -> list[str]:
    script = work / "train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    direct = [direct_run(script, work / f"direct-{i}") for i in range(repeats)]
    fit_run(script, work / "warm", tracking=True)  # creates the MLflow store once (a one-time cost)
    plain = [fit_run(script, work / "warm", tracking=False) for _ in range(repeats)]
    tracked = [fit_run(script, work / "warm", tracking=True) for _ in range(repeats)]
    python = import_seconds("pass")
    cold_direct = cold_seconds([sys.executable, str(script), "--epochs", "3"])
    cold_plain = cold_seconds([sys.executable, "-c", COLD_FIT, str(script), str(work / "warm"), "off"])
    cold_tracked = cold_seconds([sys.executable, "-c", COLD_FIT, str(script), str(work / "warm"), "on"])
    rows = ["| what | median wall s | start-up s (call → script's first line) | overhead vs direct s |",
            "|---|---|---|---|"]
    base_wall = statistics.median(w for w, _ in direct)
    base_start = statistics.median(s for _, s in direct)
    for name, runs in (("`python train.py` directly", direct), ("`Estimator.fit` (tracking off)", plain),
                       ("`Estimator.fit` + MLflow run", tracked)):
        wall, start = statistics.median(w for w, _ in runs), statistics.median(s for _, s in runs)
        rows.append(f"| {name} | {wall:.2f} | {start:.2f} | {wall - base_wall:+.2f} (start-up "
                    f"{start - base_start:+.2f}) |")
    rows += ["", "| fresh interpreter, whole program | median wall s | overhead vs direct s |", "|---|---|---|",
             f"| `python train.py` | {cold_direct:.2f} | |",
             f"| import SDK + `fit` (tracking off) | {cold_plain:.2f} | {cold_plain - cold_direct:+.2f} |",
             f"| import SDK + `fit` + MLflow run | {cold_tracked:.2f} | {cold_tracked - cold_direct:+.2f} |"]
    rows += ["", "| import, fresh interpreter | median s |", "|---|---|",
             f"| `python -c pass` | {python:.2f} |",
             f"| `from nlpforge.sdk import Estimator` | {import_seconds('from nlpforge.sdk import Estimator'):.2f} |",
             f"| `import mlflow` (only when a run is recorded) | {import_seconds('import mlflow'):.2f} |"]
    return rows


def spot_table(work: Path, steps: int, interruptions: list[float], capacity_wait: float, price_ratio: float) \
        -> list[str]:
    from nlpforge.sdk import Estimator

    script = work / "spot.py"
    script.write_text(textwrap.dedent(SPOT_SCRIPT))
    common = dict(entry_point=str(script), hyperparameters={"steps": steps}, jobs_root=str(work / "spot"),
                  tracking=False, max_run=3600)
    on_demand = Estimator(**common)
    on_demand.fit(logs=False)
    spot = Estimator(**common, use_spot_instances=True, max_wait=7200, spot_interruptions=interruptions,
                     spot_capacity_wait=capacity_wait, spot_price_ratio=price_ratio)
    spot.fit(logs=False)
    rows = ["| job | attempts | running s | TrainingTimeInSeconds | BillableTimeInSeconds | savings |",
            "|---|---|---|---|---|---|"]
    for name, est in (("on demand", on_demand), ("spot", spot)):
        job = est.latest_training_job.describe()
        running = sum(a["seconds"] for a in job["Attempts"])
        savings = 1 - job["BillableTimeInSeconds"] / job["TrainingTimeInSeconds"]
        rows.append(f"| {name} | {len(job['Attempts'])} | {running:.1f} | {job['TrainingTimeInSeconds']} | "
                    f"{job['BillableTimeInSeconds']} | {savings * 100:.0f}% |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--spot-steps", type=int, default=100, help="steps of 0.1 s of work in the spot job")
    parser.add_argument("--interruptions", default="3,3", help="seconds into each attempt when spot reclaims it")
    parser.add_argument("--capacity-wait", type=float, default=2.0, help="seconds without capacity after each")
    parser.add_argument("--price-ratio", type=float, default=0.3, help="spot price as a share of on demand")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        print(f"machine: {cpu_name()}, {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.1f}, python {platform.python_version()}\n")
        print("\n".join(overhead_table(work, args.repeats)))
        print(f"\nspot schedule: {args.spot_steps} steps x 0.1 s, interrupted at {args.interruptions} s into "
              f"attempts, {args.capacity_wait} s without capacity each time, spot price {args.price_ratio} "
              "of on demand\n")
        print("\n".join(spot_table(work, args.spot_steps, [float(x) for x in args.interruptions.split(",")],
                                   args.capacity_wait, args.price_ratio)))


if __name__ == "__main__":
    main()
