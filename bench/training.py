"""Training-engine benchmark: nlpforge vs Hugging Face Trainer on MiniLM-L6 + Amazon reviews.

Each measurement runs in its own process (peak memory is the process's high-water mark):
  * throughput: samples/s over the same number of optimizer steps (--steps 0: a whole epoch), batch 16,
    max 128 tokens, and the share of the machine's measured fp32 matmul FLOP/s that each reaches. HF
    Trainer runs with random batches (its default), with group_by_length, and on nlpforge's own batches
    in nlpforge's order (the same rows and padding step for step, so the engines alone are compared);
  * resume: seconds from process start to the first step after resuming at 10% and 90% of an
    epoch (nlpforge restores its data position; Trainer skips batches to get back there);
  * time to first step on a 1k-row and a 1M-row file (nlpforge, lazy loading);
  * the Debugger rules' overhead: nlpforge with all eight rules at the default interval against none,
    alternating runs of the same steps (--rules-only measures just this).

    .venv/bin/python bench/training.py [--steps 60] [--rounds 3] [--skip-large] [--skip-resume] [--skip-rules]
                                       [--trainers nlpforge,hf,hf_grouped,hf_same]
                                       [--rules-only] [--rules-repeats 3]
"""
import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
DATA = HERE.parents[1] / "shared" / "data" / "amazon_reviews"
WORK = HERE / "results" / "training"
TRAIN, VALIDATION = DATA / "digital_video_train.csv", DATA / "digital_video_validation.csv"
ALL_RULES = ["LossNotDecreasing", "Overfit", "Overtraining", "VanishingGradient", "ExplodingTensor",
             "PoorWeightInitialization", "WeightUpdateRatio", "StalledTraining"]
COMMON = dict(batch_size=16, learning_rate=5e-5, max_seq_length=128, warmup_ratio=0.1, weight_decay=0.01, seed=42)


def peak_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return 0.0


# ---------------------------------------------------------------- children (one per measurement)

def child_nlpforge(args) -> dict:
    from nlpforge.training.run import train
    from nlpforge.training.settings import job_class

    marks = {}

    def on_step(step):
        now = time.perf_counter()
        marks.setdefault("first", now)
        marks.setdefault("steps", []).append(now)
        if args.stop_at and step == args.stop_at:
            os.kill(os.getpid(), signal.SIGTERM)  # a spot interruption: save and stop
        if args.first_step_only:
            print(json.dumps({"first_step_seconds": now - START, "peak_mb": peak_mb()}), flush=True)
            os._exit(0)

    job = job_class("text-classification").of(
        train=args.train, validation=str(VALIDATION), text_column=["review_body"], label_column="star_rating",
        model="minilm-l6", output=str(WORK / args.name), overwrite=True, epochs=1, max_steps=args.steps, progress=False,
        log_every=0, checkpoint_dir=str(WORK / f"{args.name}-ck") if args.checkpoint else None,
        checkpoint_every=args.stop_at or 0, resume="auto" if args.resume else None,
        data_loading=args.data_loading, max_seq_length=args.max_seq_length,
        rules=ALL_RULES if args.rules else [],
        **{k: v for k, v in COMMON.items() if k != "max_seq_length"})
    try:
        result = train(job, log=lambda *_: None, on_step=on_step)
    except Exception as error:  # TrainingInterrupted after a deliberate stop
        return {"stopped": str(error), "peak_mb": peak_mb()}
    steps = marks["steps"]
    warm = steps[min(5, len(steps) - 1):]
    samples_per_step = result.samples / len(steps)
    return {"samples_per_second": samples_per_step * (len(warm) - 1) / (warm[-1] - warm[0]),
            "padded_tokens_per_sample": result.padded_tokens / result.samples, "peak_mb": peak_mb(),
            "steps": len(steps)}


def child_hf(args) -> dict:
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainerCallback, TrainingArguments)

    from nlpforge.data.labelled import load_labelled
    from nlpforge.models.registry import resolve_base

    data = load_labelled(args.train, VALIDATION, text_columns="review_body", label_column="star_rating")
    folder = str(resolve_base("minilm-l6").weights)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=len(data.labels))
    encoded = tokenizer(data.train.texts, truncation=True, max_length=args.max_seq_length)
    rows = [{"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i],
             "token_type_ids": encoded["token_type_ids"][i], "labels": int(data.train.label_ids[i])}
            for i in range(len(data.train))]
    sampling = "group_by_length" if args.group_by_length else "random"
    if args.same_batches:  # nlpforge's first epoch, batch for batch, read in order: the same rows and padding
        from nlpforge.data.batching import length_grouped_batches
        from nlpforge.tasks.text_classification import grouping_lengths

        # the rows are already cut to max_seq_length, so their lengths are the engine's capped token counts
        counted = [len(ids) for ids in encoded["input_ids"]]
        lengths = grouping_lengths(data.train.texts, counted, args.max_seq_length)
        batches = length_grouped_batches(lengths, COMMON["batch_size"], seed=COMMON["seed"])
        # Trainer cuts the rows it reads in order into batches of 16, so the one short batch (the last
        # group's rest) goes last: otherwise every batch after it would straddle two of nlpforge's.
        batches = sorted(batches, key=lambda batch: len(batch) < COMMON["batch_size"])
        rows = [rows[i] for batch in batches for i in batch]
        sampling = "sequential"
    padded = {"tokens": 0, "samples": 0}
    base_collator = DataCollatorWithPadding(tokenizer)

    def collator(features):
        batch = base_collator(features)
        padded["tokens"] += batch["input_ids"].numel()
        padded["samples"] += batch["input_ids"].shape[0]
        return batch

    marks = {}

    class Timing(TrainerCallback):
        def on_step_end(self, arguments, state, control, **kwargs):
            now = time.perf_counter()
            marks.setdefault("steps", []).append(now)
            if args.first_step_only:
                print(json.dumps({"first_step_seconds": now - START, "peak_mb": peak_mb()}), flush=True)
                os._exit(0)
            if args.stop_at and state.global_step == args.stop_at:
                control.should_save = True
                control.should_training_stop = True

    output = WORK / args.name
    training_args = TrainingArguments(
        output_dir=str(output), per_device_train_batch_size=COMMON["batch_size"], learning_rate=COMMON["learning_rate"],
        warmup_steps=COMMON["warmup_ratio"], weight_decay=COMMON["weight_decay"], seed=COMMON["seed"],
        num_train_epochs=1, max_steps=args.steps or -1, use_cpu=True, report_to=[], disable_tqdm=True,
        save_strategy="steps" if args.stop_at else "no", save_steps=args.stop_at or 500, logging_strategy="no",
        dataloader_num_workers=0, train_sampling_strategy=sampling)
    trainer = Trainer(model=model, args=training_args, train_dataset=rows, data_collator=collator,
                      callbacks=[Timing()])
    resume = None
    if args.resume:
        checkpoints = sorted(output.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        resume = str(checkpoints[-1])
    trainer.train(resume_from_checkpoint=resume)
    steps = marks["steps"]
    warm = steps[min(5, len(steps) - 1):]
    samples_per_step = padded["samples"] / max(len(steps), 1)
    return {"samples_per_second": samples_per_step * (len(warm) - 1) / (warm[-1] - warm[0]),
            "padded_tokens_per_sample": padded["tokens"] / max(padded["samples"], 1), "peak_mb": peak_mb(),
            "steps": len(steps)}


# ---------------------------------------------------------------- parent

def run_child(name, *flags, timeout=1800) -> dict:
    command = [sys.executable, __file__, "--child", *flags, "--name", name]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    lines = [line for line in done.stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def rules_overhead(steps: str, repeats: int) -> dict:
    """samples/s without rules and with all eight, alternating so that drift in the machine's speed hits both."""
    runs = {"none": [], "all": []}
    for _ in range(repeats):
        runs["none"].append(run_child("rules-none", "--kind", "nlpforge", "--steps", steps)["samples_per_second"])
        runs["all"].append(run_child("rules-all", "--kind", "nlpforge", "--steps", steps, "--rules")
                           ["samples_per_second"])
    best = {key: max(values) for key, values in runs.items()}
    return {"runs": runs, "best": best, "overhead": best["none"] / best["all"] - 1}


def print_rules(r: dict) -> None:
    rules = r["rules"]
    print(f"\nmachine: {r['machine']}")
    print("| Debugger rules (MiniLM-L6, batch 16, 128 tokens) | samples/s, best of runs | runs | overhead |")
    print("|---|---|---|---|")
    for key, name in (("none", "none"), ("all", "all eight, every 10 steps")):
        runs = ", ".join(f"{v:.1f}" for v in rules["runs"][key])
        overhead = f"{100 * rules['overhead']:+.1f}%" if key == "all" else "-"
        print(f"| {name} | {rules['best'][key]:.1f} | {runs} | {overhead} |")


def make_large_file(path: Path, rows: int) -> Path:
    if path.exists():
        return path
    with open(TRAIN, newline="", encoding="utf-8") as handle:
        source = [(r["review_body"], r["star_rating"]) for r in csv.DictReader(handle)]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review_body", "star_rating"])
        for i in range(rows):
            writer.writerow(source[i % len(source)])
    return path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-resume", action="store_true")
    parser.add_argument("--rules-only", action="store_true", help="measure only the Debugger rules' overhead")
    parser.add_argument("--rules-repeats", type=int, default=3)
    parser.add_argument("--skip-rules", action="store_true")
    parser.add_argument("--trainers", default="nlpforge,hf,hf_grouped,hf_same",
                        help="which trainers to run (nlpforge is always one): hf (random batches), hf_grouped "
                             "(group_by_length), hf_same (nlpforge's own batches, in its order)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="throughput runs per trainer, alternating their order; each figure is the median")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs {DATA}")
    from machine import describe, matmul_flops, training_flops

    WORK.mkdir(parents=True, exist_ok=True)
    before = matmul_flops()
    results = {"machine": describe(), "matmul_gflops_before": before / 1e9}
    steps = str(args.steps)
    if not args.skip_rules:
        results["rules"] = rules_overhead(steps, args.rules_repeats)
    if args.rules_only:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "training-rules.json").write_text(json.dumps(results, indent=2) + "\n")
        print_rules(results)
        return
    trainers = {"nlpforge": ("ours", "--kind", "nlpforge"), "hf": ("hf", "--kind", "hf"),
                "hf_grouped": ("hf-grouped", "--kind", "hf", "--group-by-length"),
                "hf_same": ("hf-same", "--kind", "hf", "--same-batches")}
    chosen = {"nlpforge", *args.trainers.split(",")}
    unknown = chosen - set(trainers)
    if unknown:
        parser.error(f"unknown trainers {', '.join(sorted(unknown))}; choose from {', '.join(trainers)}")
    trainers = {key: value for key, value in trainers.items() if key in chosen}
    runs = {key: [] for key in trainers}
    for round_index in range(args.rounds):
        for key in trainers if round_index % 2 == 0 else list(trainers)[::-1]:
            runs[key].append(run_child(*trainers[key], "--steps", steps))
            print(f"round {round_index + 1} {key}: {runs[key][-1]['samples_per_second']:.1f} samples/s", flush=True)
    for key, rows in runs.items():
        # the run with the median samples/s stands for the trainer; every round's figure is kept
        results[key] = {**sorted(rows, key=lambda r: r["samples_per_second"])[(len(rows) - 1) // 2],
                        "rounds": [r["samples_per_second"] for r in rows]}
    # The probe runs before and after the trainers; the better one is the machine's rate (a busy neighbour
    # lowers a probe, never raises it), and both are kept so that a disagreement shows.
    after = matmul_flops()
    peak = max(before, after)
    results.update(matmul_gflops=peak / 1e9, matmul_gflops_after=after / 1e9)
    # MiniLM-L6: 6 layers, hidden 384, 21.3M non-embedding weights... measured from the model itself:
    from nlpforge.models.registry import build_model, load_tokenizer, resolve_base

    base = resolve_base("minilm-l6")
    model = build_model(base, "AutoModelForSequenceClassification", load_tokenizer(base), num_labels=5)
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    non_embedding = sum(p.numel() for p in model.parameters()) - embedding
    for key in trainers:
        r = results[key]
        length = r["padded_tokens_per_sample"]
        flops_per_sample = training_flops(non_embedding, 6, 384, length, length)
        r["flops_share"] = r["samples_per_second"] * flops_per_sample / peak

    if not args.skip_resume:
        epoch_steps = -(-6077 // COMMON["batch_size"])
        for share in (0.1, 0.9):
            at = str(int(epoch_steps * share))
            for kind, tag in (("nlpforge", "ours"), ("hf", "hf")):
                name = f"{tag}-resume-{int(share * 100)}"
                run_child(name, "--kind", kind, "--stop-at", at, "--checkpoint", "--max-seq-length", "64")
                results[f"{tag}_resume_{int(share * 100)}"] = run_child(
                    name, "--kind", kind, "--resume", "--checkpoint", "--first-step-only", "--max-seq-length", "64")

    if not args.skip_large:
        small = make_large_file(WORK / "reviews-1k.csv", 1_000)
        large = make_large_file(WORK / "reviews-1m.csv", 1_000_000)
        os.environ["NLPFORGE_CACHE"] = str(WORK / "cache")
        for label, path in (("1k", small), ("1m", large), ("1m_cached", large)):
            results[f"first_step_{label}"] = run_child(
                f"first-{label}", "--kind", "nlpforge", "--train", str(path), "--data-loading", "lazy",
                "--first-step-only", "--steps", "5")
        results["large_file_mb"] = large.stat().st_size / 2**20

    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "training.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    if "rules" in results:
        print_rules(results)


TRAINER_NAMES = {"nlpforge": "nlpforge", "hf": "HF Trainer (random batches)",
                 "hf_grouped": "HF Trainer (group_by_length)", "hf_same": "HF Trainer (nlpforge's batches)"}


def print_table(r: dict) -> None:
    ran = [key for key in TRAINER_NAMES if key in r]
    print(f"\nmachine: {r['machine']}; fp32 matmul {r['matmul_gflops']:.1f} GFLOP/s (best of 5 windows, before "
          f"{r['matmul_gflops_before']:.1f} and after {r.get('matmul_gflops_after', 0):.1f} the trainers)")
    print("| trainer | samples/s | rounds | " + "".join(f"vs {TRAINER_NAMES[k]} | " for k in ran[1:])
          + "padded tokens/sample | share of matmul FLOP/s | peak RSS |")
    print("|---|---:|---|" + "---:|" * len(ran[1:]) + "---:|---:|---:|")
    for key in ran:
        row = r[key]
        rounds = ", ".join(f"{v:.1f}" for v in row.get("rounds", [row["samples_per_second"]]))
        ratios = "".join(f"{row['samples_per_second'] / r[k]['samples_per_second']:.2f}x | " for k in ran[1:])
        print(f"| {TRAINER_NAMES[key]} | {row['samples_per_second']:.1f} | {rounds} | {ratios}"
              f"{row['padded_tokens_per_sample']:.1f} | {100 * row['flops_share']:.0f}% | {row['peak_mb']:.0f} MB |")
    if "ours_resume_10" in r:
        print("\n| resume (seconds from process start to first step) | at 10% of an epoch | at 90% |")
        print("|---|---|---|")
        for tag, name in (("ours", "nlpforge"), ("hf", "HF Trainer")):
            print(f"| {name} | {r[f'{tag}_resume_10']['first_step_seconds']:.1f} | "
                  f"{r[f'{tag}_resume_90']['first_step_seconds']:.1f} |")
    if "first_step_1k" in r:
        print("\n| nlpforge time to first step (lazy) | seconds | peak RSS |")
        print("|---|---|---|")
        for label, name in (("1k", "1k rows"), ("1m", f"1M rows ({r['large_file_mb']:.0f} MB, first use: Arrow copy)"),
                            ("1m_cached", "1M rows (Arrow copy cached)")):
            row = r[f"first_step_{label}"]
            print(f"| {name} | {row['first_step_seconds']:.1f} | {row['peak_mb']:.0f} MB |")


START = time.perf_counter()

if __name__ == "__main__":
    if "--child" in sys.argv:
        parser = argparse.ArgumentParser()
        parser.add_argument("--child", action="store_true")
        parser.add_argument("--kind", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--steps", type=int, default=0)
        parser.add_argument("--train", default=str(TRAIN))
        parser.add_argument("--stop-at", type=int, default=0)
        parser.add_argument("--checkpoint", action="store_true")
        parser.add_argument("--resume", action="store_true")
        parser.add_argument("--first-step-only", action="store_true")
        parser.add_argument("--group-by-length", action="store_true")
        parser.add_argument("--same-batches", action="store_true")
        parser.add_argument("--data-loading", default="memory")
        parser.add_argument("--max-seq-length", type=int, default=COMMON["max_seq_length"])
        parser.add_argument("--rules", action="store_true")
        child_args = parser.parse_args()
        outcome = (child_nlpforge if child_args.kind == "nlpforge" else child_hf)(child_args)
        print(json.dumps(outcome), flush=True)
    else:
        main()
