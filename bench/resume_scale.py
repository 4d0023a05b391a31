"""Resume at scale: seconds from process start to the first optimizer step after resuming at 10% and
at 90% of an epoch of a 1M-row file (batch 16, 62,500 steps), nlpforge with lazy loading against
Hugging Face Trainer reading the file through `datasets`. MiniLM-L6, 64 tokens.

Training to 90% of such an epoch would take days on a CPU, so each checkpoint is made cheaply and
then moved: a run trains 3 steps and checkpoints, and the position its checkpoint records is set to
the target step. That position is everything either trainer reads to decide where to resume:
  * nlpforge (`step-NNNNNNNN/`): the loop's `batch` and `step` in state.json, with the scheduler's
    step, that step's learning rate and AdamW's step counts; MANIFEST.json is rewritten to match;
  * Trainer (`checkpoint-N/`): `global_step` and `epoch` in trainer_state.json (Trainer skips
    `global_step % steps_per_epoch` batches of the epoch), with scheduler.pt's step, that step's
    learning rate and AdamW's step counts in optimizer.pt.
The weights stay those of step 3: what a resume costs does not depend on them. Every resumed run
reports the number of its first step, which must be the target + 1 (nlpforge also the batch its log
says it resumed at), and the schedule spans the whole epoch, so steps remain after the 90% mark.

The clock stops after the first step, so that step's own cost is part of the figure. nlpforge groups
batches by length, and the batch at exactly 10% of this epoch holds 1-6 character reviews while the
one at 90% is cut at 64 tokens: several seconds apart on a CPU, for reasons that have nothing to do
with resuming. nlpforge therefore resumes at the first batch at or after 10% (90%) whose longest row
fills all 64 tokens, a few batches past the mark; Trainer's random batches almost always reach 64
tokens, and it resumes at exactly 10% and 90%.

Trainer reads the CSV as a user would at this size: `load_dataset("csv")` and a batched
`.map(tokenize)`, both cached as Arrow, and the default random sampler (`train_sampling_strategy`
"random", no length grouping). The first, cold load and tokenization is timed once (the cache is
cleared first unless --keep-hf-cache); every other run reads the warm cache. On resume, Trainer
hands the epoch's loader to accelerate's `skip_first_batches`, which for a map-style dataset wraps
the batch sampler in a `SkipBatchSampler`: the skipped batches' indices are drawn and dropped, but
their rows are neither read nor collated.

    .venv/bin/python bench/resume_scale.py [--rounds 2] [--keep-hf-cache]

Needs the `datasets` package (in the `bench` extra; nlpforge itself does not use it). Results go to
bench/results/resume_scale.json.
"""
import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from training import COMMON, DATA, HERE, VALIDATION, WORK, make_large_file, peak_mb

START = time.perf_counter()  # the clock of every child: only the standard library is imported by now

LARGE = WORK / "reviews-1m.csv"
HF_CACHE = WORK / "hf-datasets"
MAX_SEQ_LENGTH = 64
MADE_AT = 3  # steps actually trained before a checkpoint is moved
SHARES = (10, 90)


# ---------------------------------------------------------------- children (one per measurement)

def child_nlpforge(args) -> dict:
    from nlpforge.errors import TrainingInterrupted
    from nlpforge.training.run import train
    from nlpforge.training.settings import job_class

    lines = []

    def on_step(step):
        if args.stop_at:
            if step == args.stop_at:
                os.kill(os.getpid(), signal.SIGTERM)  # a spot interruption: save and stop
            return
        resumed = next((line for line in lines if line.startswith("resumed from")), None)
        print(json.dumps({"first_step_seconds": time.perf_counter() - START, "step": step,
                          "resumed": resumed, "peak_mb": peak_mb()}), flush=True)
        os._exit(0)

    job = job_class("text-classification").of(
        train=str(LARGE), validation=str(VALIDATION), text_column=["review_body"], label_column="star_rating",
        model="minilm-l6", output=str(WORK / args.name), overwrite=True, epochs=1, progress=False, log_every=0,
        checkpoint_dir=str(WORK / f"{args.name}-ck"), checkpoint_every=args.stop_at,
        resume="auto" if args.resume else None, data_loading="lazy", max_seq_length=MAX_SEQ_LENGTH,
        **{k: v for k, v in COMMON.items() if k != "max_seq_length"})
    try:
        train(job, log=lines.append, on_step=on_step)
    except TrainingInterrupted as stopped:
        return {"stopped": str(stopped)}
    raise SystemExit("the run ended before its first step was reported")


def child_hf(args) -> dict:
    import datasets
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainerCallback, TrainingArguments)

    from nlpforge.models.registry import resolve_base

    folder = str(resolve_base("minilm-l6").weights)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    started = time.perf_counter()
    rows = datasets.load_dataset("csv", data_files=str(LARGE), cache_dir=str(HF_CACHE))["train"]
    loaded = time.perf_counter()

    def tokenize(batch):
        texts = [text if isinstance(text, str) else "" for text in batch["review_body"]]
        encoded = tokenizer(texts, truncation=True, max_length=MAX_SEQ_LENGTH)
        encoded["labels"] = [int(star) - 1 for star in batch["star_rating"]]
        return encoded

    rows = rows.map(tokenize, batched=True, remove_columns=rows.column_names)
    mapped = time.perf_counter()
    prepare = {"load_seconds": loaded - started, "map_seconds": mapped - loaded, "rows": len(rows)}
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=5)

    class FirstStep(TrainerCallback):
        def on_step_end(self, arguments, state, control, **kwargs):
            if args.stop_at:
                if state.global_step == args.stop_at:
                    control.should_save = True
                    control.should_training_stop = True
                return
            print(json.dumps({"first_step_seconds": time.perf_counter() - START, "step": state.global_step,
                              "epoch": state.epoch, "peak_mb": peak_mb(), **prepare}), flush=True)
            os._exit(0)

    output = WORK / args.name
    training_args = TrainingArguments(
        output_dir=str(output), per_device_train_batch_size=COMMON["batch_size"], learning_rate=COMMON["learning_rate"],
        warmup_steps=COMMON["warmup_ratio"], weight_decay=COMMON["weight_decay"], seed=COMMON["seed"],
        num_train_epochs=1, use_cpu=True, report_to=[], disable_tqdm=True, logging_strategy="no",
        save_strategy="steps" if args.stop_at else "no", save_steps=MADE_AT,
        dataloader_num_workers=0, train_sampling_strategy="random")
    trainer = Trainer(model=model, args=training_args, train_dataset=rows,
                      data_collator=DataCollatorWithPadding(tokenizer), callbacks=[FirstStep()])
    resume = None
    if args.resume:
        resume = str(max(output.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])))
    trainer.train(resume_from_checkpoint=resume)
    return {"stopped": f"at step {trainer.state.global_step}", "max_steps": trainer.state.max_steps, **prepare}


# ---------------------------------------------------------------- moving a checkpoint

def lr_factor(scheduler_of, step: int) -> float:
    """The learning-rate multiplier of `step` under the schedule `scheduler_of(optimizer)` builds."""
    import torch

    return scheduler_of(torch.optim.SGD([torch.zeros(1)], lr=1.0)).lr_lambdas[0](step)


def move_nlpforge(made: Path, folder: Path, step: int) -> Path:
    """A copy of the checkpoint folder `made` in `folder`, moved to batch and step `step` of the first epoch."""
    import torch
    from safetensors.torch import load_file, save_file

    from nlpforge.data.batching import length_grouped_batches
    from nlpforge.training import checkpoint as ckpt
    from nlpforge.training.loop import make_scheduler

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    target = shutil.copytree(made, folder / f"{ckpt.PREFIX}{step:08d}")
    state = json.loads((target / "state.json").read_text(encoding="utf-8"))
    config = state["config"]
    total = len(length_grouped_batches(range(config["train_rows"]), config["batch_size"], seed=config["seed"]))
    factor = lr_factor(lambda optimizer: make_scheduler(optimizer, config["lr_schedule"],
                                                        int(config["warmup_ratio"] * total), total), step)
    loop = state["loop"]
    loop.update(samples=loop["samples"] * step // loop["step"], batch=step, step=step)
    state["step"] = step
    state["scheduler"].update(last_epoch=step, _step_count=step + 1,
                              _last_lr=[lr * factor for lr in state["scheduler"]["base_lrs"]])
    for group in state["optimizer"]["param_groups"]:
        group["lr"] = group["initial_lr"] * factor
    (target / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
    moments = load_file(str(target / "optimizer.safetensors"))
    save_file({k: torch.full_like(v, step) if k.endswith(".step") else v for k, v in moments.items()},
              str(target / "optimizer.safetensors"))
    manifest = {p.name: ckpt._describe(p) for p in sorted(target.iterdir()) if p.name not in (ckpt.MANIFEST,
                                                                                              ckpt.COMPLETE)}
    (target / ckpt.MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    if ckpt.damage(target) is not None:
        raise SystemExit(f"{target}: {ckpt.damage(target)}")
    return target


def move_hf(made: Path, folder: Path, step: int) -> Path:
    """A copy of Trainer's checkpoint folder `made` in `folder`, moved to global step `step`."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    target = shutil.copytree(made, folder / f"checkpoint-{step}")
    state = json.loads((target / "trainer_state.json").read_text(encoding="utf-8"))
    total = state["max_steps"]
    state.update(global_step=step, epoch=step / total)
    (target / "trainer_state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
    factor = lr_factor(lambda optimizer: get_linear_schedule_with_warmup(
        optimizer, math.ceil(COMMON["warmup_ratio"] * total), total), step)
    scheduler = torch.load(target / "scheduler.pt", weights_only=True)
    scheduler.update(last_epoch=step, _step_count=step + 1, _last_lr=[lr * factor for lr in scheduler["base_lrs"]])
    torch.save(scheduler, target / "scheduler.pt")
    optimizer = torch.load(target / "optimizer.pt", weights_only=True)
    for moments in optimizer["state"].values():
        moments["step"] = torch.full_like(moments["step"], step)
    for group in optimizer["param_groups"]:
        group["lr"] = group["initial_lr"] * factor
    torch.save(optimizer, target / "optimizer.pt")
    return target


# ---------------------------------------------------------------- parent

def run_child(name: str, kind: str, *flags, timeout=1800) -> dict:
    command = [sys.executable, __file__, "--child", "--kind", kind, "--name", name, *flags]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    lines = [line for line in done.stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def full_batch_at(step: int) -> int:
    """The first batch of nlpforge's first epoch, at or after `step`, whose longest row fills MAX_SEQ_LENGTH
    tokens: the batches are the loop's own, rebuilt from the seed over the lazily loaded file."""
    from nlpforge.data.batching import encode, length_grouped_batches
    from nlpforge.data.labelled import load_labelled
    from nlpforge.models.registry import load_tokenizer, resolve_base
    from nlpforge.tasks.text_classification import char_lengths

    data = load_labelled(LARGE, VALIDATION, text_columns=["review_body"], label_column="star_rating", lazy=True)
    batches = length_grouped_batches(char_lengths(data.train.texts), COMMON["batch_size"], seed=COMMON["seed"])
    tokenizer = load_tokenizer(resolve_base("minilm-l6"))
    for index in range(step, len(batches)):
        rows = encode(tokenizer, [data.train.texts[int(i)] for i in batches[index]], MAX_SEQ_LENGTH)
        if max(len(row["input_ids"]) for row in rows) == MAX_SEQ_LENGTH:
            return index
    raise SystemExit(f"no batch after {step} fills {MAX_SEQ_LENGTH} tokens")


def check_position(row: dict, kind: str, step: int, total: int) -> None:
    """A resumed run's first step must be the one after the position its checkpoint was moved to."""
    problems = []
    if row["step"] != step + 1:
        problems.append(f"first step {row['step']}, not {step + 1}")
    if kind == "nlpforge" and not re.search(rf"batch {step}/{total}, step {step}$", row.get("resumed") or ""):
        problems.append(f"log says {row.get('resumed')!r}, not batch {step}/{total}")
    if problems:
        raise SystemExit(f"{kind} did not resume at step {step}: {'; '.join(problems)}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2, help="timed runs of each kind, alternating")
    parser.add_argument("--keep-hf-cache", action="store_true",
                        help="keep the datasets cache from an earlier run (no cold tokenization figure)")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs {DATA}")
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise SystemExit("the Trainer side reads the file through `datasets`: pip install datasets") from None
    from machine import describe

    WORK.mkdir(parents=True, exist_ok=True)
    make_large_file(LARGE, 1_000_000)
    os.environ["NLPFORGE_CACHE"] = str(WORK / "cache")
    if not args.keep_hf_cache:
        shutil.rmtree(HF_CACHE, ignore_errors=True)
    results = {"machine": describe(), "file_mb": LARGE.stat().st_size / 2**20, "max_seq_length": MAX_SEQ_LENGTH,
               "hf_sampler": "random (RandomSampler, no length grouping)"}

    made = {"nlpforge": run_child("ours-scale-made", "nlpforge", "--stop-at", str(MADE_AT)),
            "hf": run_child("hf-scale-made", "hf", "--stop-at", str(MADE_AT))}
    if not args.keep_hf_cache:
        results["hf_cold_prepare"] = {k: made["hf"][k] for k in ("load_seconds", "map_seconds")}
    ours_made = max((WORK / "ours-scale-made-ck").glob("step-*"))
    hf_made = WORK / "hf-scale-made" / f"checkpoint-{MADE_AT}"
    ours_state = json.loads((ours_made / "state.json").read_text(encoding="utf-8"))
    from nlpforge.data.batching import length_grouped_batches

    totals = {"nlpforge": len(length_grouped_batches(range(ours_state["config"]["train_rows"]), COMMON["batch_size"],
                                                     seed=COMMON["seed"])),
              "hf": made["hf"]["max_steps"]}
    results["steps_per_epoch"] = totals
    positions = {}
    for share in SHARES:
        for kind, move, source in (("nlpforge", move_nlpforge, ours_made), ("hf", move_hf, hf_made)):
            step = totals[kind] * share // 100
            if kind == "nlpforge":
                step = full_batch_at(step)
            positions[(kind, share)] = step
            tag = "ours" if kind == "nlpforge" else "hf"
            move(source, WORK / (f"{tag}-scale-{share}-ck" if kind == "nlpforge" else f"{tag}-scale-{share}"), step)
    results["resume_steps"] = {f"{kind}_{share}": step for (kind, share), step in positions.items()}
    results["resume_shares"] = {f"{kind}_{share}": step / totals[kind] for (kind, share), step in positions.items()}

    runs = {f"{kind}_{label}": [] for kind in ("nlpforge", "hf") for label in (*map(str, SHARES), "start")}
    for round_ in range(args.rounds):
        # Alternate kinds within a round and the order of positions between rounds, so drift hits all.
        order = [*(SHARES if round_ % 2 == 0 else reversed(SHARES)), "start"]
        for label in order:
            for kind in ("nlpforge", "hf") if round_ % 2 == 0 else ("hf", "nlpforge"):
                tag = "ours" if kind == "nlpforge" else "hf"
                if label == "start":
                    row = run_child(f"{tag}-scale-start", kind)
                else:
                    row = run_child(f"{tag}-scale-{label}", kind, "--resume")
                    check_position(row, kind, positions[(kind, label)], totals[kind])
                runs[f"{kind}_{label}"].append(row)
                print(f"{kind} {label}: {row['first_step_seconds']:.1f} s (step {row['step']})", flush=True)
    results["runs"] = runs
    results["median"] = {key: statistics.median(r["first_step_seconds"] for r in rows) for key, rows in runs.items()}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "resume_scale.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


def print_table(r: dict) -> None:
    m = r["median"]
    print(f"\nmachine: {r['machine']}; 1M rows ({r['file_mb']:.0f} MB CSV), {r['steps_per_epoch']['nlpforge']:,} "
          f"steps of {COMMON['batch_size']} per epoch, {r['max_seq_length']} tokens; median of "
          f"{len(r['runs']['nlpforge_start'])} runs")
    print("| trainer (seconds from process start to the first step) | resume at 10% | at 90% | ratio 90/10 "
          "| start without resume |")
    print("|---|---|---|---|---|")
    for kind, name in (("nlpforge", "nlpforge (lazy, restores the data position)"),
                       ("hf", "HF Trainer (datasets cache warm, skips batches)")):
        print(f"| {name} | {m[f'{kind}_10']:.1f} | {m[f'{kind}_90']:.1f} | {m[f'{kind}_90'] / m[f'{kind}_10']:.2f} "
              f"| {m[f'{kind}_start']:.1f} |")
    if "hf_cold_prepare" in r:
        cold = r["hf_cold_prepare"]
        warm = r["runs"]["hf_start"][-1]
        print(f"\nHF datasets, cold: load_dataset {cold['load_seconds']:.1f} s + map(tokenize) "
              f"{cold['map_seconds']:.1f} s; warm: {warm['load_seconds']:.1f} s + {warm['map_seconds']:.1f} s")


if __name__ == "__main__":
    if "--child" in sys.argv:
        parser = argparse.ArgumentParser()
        parser.add_argument("--child", action="store_true")
        parser.add_argument("--kind", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--stop-at", type=int, default=0)
        parser.add_argument("--resume", action="store_true")
        child_args = parser.parse_args()
        outcome = (child_nlpforge if child_args.kind == "nlpforge" else child_hf)(child_args)
        print(json.dumps(outcome), flush=True)
    else:
        main()
