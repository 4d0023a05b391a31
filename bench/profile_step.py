"""Where a training step's time goes: nlpforge fine-tuning MiniLM-L6 on Amazon reviews under torch.profiler.

The profiled steps (after a few warm-up steps) are split by what each operator is:
  matmul        mm / addmm / bmm / baddbmm (linear layers, attention scores and values), forward and backward
  attention     softmax and scaled-dot-product kernels, their backward, the mask
  layernorm     LayerNorm forward and backward
  gelu          GELU forward and backward
  embedding     embedding lookups and their backward
  optimizer     everything under the optimizer's step (AdamW) and zero_grad
  other ops     every other operator (dropout, adds, copies, the loss, gradient clipping, ...)
  outside ops   the step's wall time not inside any operator: Python, data collation, the loop itself

    .venv/bin/python bench/profile_step.py [--steps 12] [--threads 2] [--max-seq-length 128]
"""
import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data" / "amazon_reviews"
WORK = HERE / "results" / "profile"

CATEGORIES = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "attention": ("aten::_softmax", "aten::_softmax_backward_data", "aten::_scaled_dot_product",
                  "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::masked_fill"),
    "layernorm": ("aten::native_layer_norm", "aten::native_layer_norm_backward"),
    "gelu": ("aten::gelu", "aten::gelu_backward"),
    "embedding": ("aten::embedding", "aten::embedding_dense_backward", "aten::embedding_backward"),
}


def category(event) -> str:
    parent = event
    while parent is not None:
        if parent.name.startswith(("Optimizer.step", "Optimizer.zero_grad")):
            return "optimizer"
        parent = parent.cpu_parent
    for name, prefixes in CATEGORIES.items():
        if event.name.startswith(prefixes):
            return name
    return "other ops"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="profiled steps (after 4 warm-up steps)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int, default=128)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    sys.path.insert(0, str(HERE))
    from machine import describe, matmul_flops

    from nlpforge.training.run import train
    from nlpforge.training.settings import job_class

    torch.set_num_threads(args.threads)
    warmup, marks = 4, []
    plan = schedule(wait=1, warmup=warmup - 1, active=args.steps, repeat=1)
    job = job_class("text-classification").of(
        train=str(DATA / "digital_video_train.csv"), validation=str(DATA / "digital_video_validation.csv"),
        text_column=["review_body"], label_column="star_rating", model="minilm-l6", output=str(WORK / "model"),
        overwrite=True, epochs=1, max_steps=warmup + args.steps, progress=False, log_every=0, batch_size=16,
        learning_rate=5e-5, max_seq_length=args.max_seq_length, threads=args.threads, seed=42)
    with profile(activities=[ProfilerActivity.CPU], schedule=plan) as profiler:
        def on_step(step):
            marks.append(time.perf_counter())
            profiler.step()

        train(job, log=lambda *_: None, on_step=on_step)
    wall = (marks[warmup + args.steps - 1] - marks[warmup - 1]) * 1e6  # microseconds of the active steps
    seconds, others = defaultdict(float), defaultdict(float)
    for event in profiler.events():
        if event.device_type.name == "CPU" and event.name.startswith("aten::"):
            part = category(event)
            seconds[part] += event.self_cpu_time_total
            if part == "other ops":
                others[event.name] += event.self_cpu_time_total
    inside = sum(seconds.values())
    seconds["outside ops"] = max(0.0, wall - inside)
    total = sum(seconds.values())
    rows = sorted(seconds.items(), key=lambda kv: -kv[1])
    print(f"machine: {describe()}; fp32 matmul {matmul_flops() / 1e9:.1f} GFLOP/s")
    print(f"MiniLM-L6, batch 16, max {args.max_seq_length} tokens, {args.threads} threads: {args.steps} profiled "
          f"steps, {wall / 1e6 / args.steps:.3f} s per step (wall)\n")
    print("| part | ms per step | share |\n|---|---:|---:|")
    for name, value in rows:
        print(f"| {name} | {value / 1e3 / args.steps:.1f} | {100 * value / total:.1f}% |")
    print("\n| largest of the other ops | ms per step |\n|---|---:|")
    for name, value in sorted(others.items(), key=lambda kv: -kv[1])[:8]:
        print(f"| {name} | {value / 1e3 / args.steps:.1f} |")
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "breakdown.json").write_text(json.dumps({"seconds_per_step": wall / 1e6 / args.steps,
                                                     "ms_per_step": {k: v / 1e3 / args.steps for k, v in rows}},
                                                    indent=2) + "\n")


if __name__ == "__main__":
    main()
