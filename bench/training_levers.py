"""Training-speed levers, each alone against the engine as it ships: nlpforge fine-tuning MiniLM-L6 on Amazon reviews.

Every arm is a whole nlpforge run (`train(job)`, the run bench/training.py times) with the same steps,
data, batch 16, 128 tokens and seed, in its own process. The arms alternate over the rounds (forward,
then backward), so that drift in the machine's speed hits every arm; an arm's figure is the median over
its rounds of samples/s over the warm steps (after the first 5).

  default          the engine's defaults: SDPA attention, fused AdamW, torch's default threads, CPU dropout
                   masks from 16-bit draws (nlpforge.models.dropout), the [CLS]-only last layer
  torch-dropout    torch's own dropout (bernoulli_ masks, SDPA's math kernel for attention dropout)
  full-last-layer  transformers' BertForSequenceClassification: the last layer computed for every token
  previous         both of the above: the engine before those two changes
  compile          --compile: torch.compile of the model (inductor, dynamic shapes); the compile time
                   shows in the seconds to the first step, apart from the steady-state samples/s
  compile-pad16    --compile with each batch padded to a multiple of 16 tokens
  compile-static16 torch.compile with static shapes, batches padded to a multiple of 16 tokens, so at
                   most 8 lengths compile (each one minutes on a small CPU; not in the default arms)
  eager            transformers' eager attention instead of SDPA
  foreach          AdamW(foreach=True) instead of the fused kernel
  for-loop         AdamW(foreach=False, fused=False): one parameter at a time
  fused-qkv        each self-attention's query, key and value projections as one matmul against their
                   concatenated weights (the same weights and names; sums in another order, so not bit-identical)
  interop1         torch.set_num_interop_threads(1)
  bind             OMP_PROC_BIND=close OMP_PLACES=cores: OpenMP threads pinned to cores
  passive          OMP_WAIT_POLICY=PASSIVE: OpenMP threads sleep between kernels instead of spinning

Every arm also times what keeping the best epoch's weights costs: the in-memory copy the engine makes
(seconds and the RSS it adds) against writing the same weights to a safetensors file.

    .venv/bin/python bench/training_levers.py [--steps 60] [--rounds 2] [--arms default,compile,eager,...]
"""
import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from training import COMMON, DATA, TRAIN, VALIDATION, WORK, peak_mb  # noqa: E402

ARMS = {
    "default": {},
    "torch-dropout": {"torch_dropout": True},
    "full-last-layer": {"full_last_layer": True},
    "previous": {"torch_dropout": True, "full_last_layer": True},
    "compile": {"compile": True},
    "compile-pad16": {"compile": True, "pad_to": 16},
    "compile-static16": {"compile": True, "pad_to": 16, "static": True},
    "eager": {"attention": "eager"},
    "foreach": {"optimizer": "foreach"},
    "for-loop": {"optimizer": "for-loop"},
    "fused-qkv": {"fused_qkv": True},
    "interop1": {"interop_threads": 1},
    "bind": {"env": {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}},
    "passive": {"env": {"OMP_WAIT_POLICY": "PASSIVE"}},
    # glibc serves blocks over its mmap threshold with fresh mappings, so each batch's activations would be
    # page-faulted in and zeroed again; a 32 MB threshold and no trimming keep them in the reused heap.
    "malloc-heap": {"env": {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=33554432:"
                                              "glibc.malloc.trim_threshold=4294967296"}},
}
DEFAULT_ARMS = [arm for arm in ARMS if arm not in ("compile-static16", "previous")]
WARMUP_STEPS = 5


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


# ---------------------------------------------------------------- child (one per run)

def padded_collate(collate, multiple: int):
    """`collate` with the sequence length rounded up to a multiple (0 pads ids, masks and segments: MiniLM's
    [PAD] is 0), so that a static-shape compile sees at most max_seq_length / multiple lengths."""
    import torch

    from nlpforge.data.batching import MODEL_INPUTS

    def pad(rows):
        batch = collate(rows)
        extra = -batch["input_ids"].shape[1] % multiple
        for key in MODEL_INPUTS:
            if extra and key in batch:
                batch[key] = torch.nn.functional.pad(batch[key], (0, extra), value=0)  # (B, T + extra)
        return batch

    return pad


def fuse_qkv(model) -> None:
    """Make every transformers BertSelfAttention in `model` project query, key and value with one matmul
    against the three weights concatenated (cheap next to the matmul, and the gradient splits back to each).
    The last layer's [CLS]-only path calls the three projections itself and is left as it is. Encoders only:
    a decoder's key/value cache is not handled."""
    import types

    import torch
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import BertSelfAttention, eager_attention_forward

    def forward(self, hidden_states, attention_mask=None, cache=None, **kwargs):
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])      # (3H, H)
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        shape = (*hidden_states.shape[:-1], 3, -1, self.attention_head_size)               # (B, T, 3, heads, d)
        qkv = torch.nn.functional.linear(hidden_states, weight, bias).view(shape)
        query, key, value = (qkv[:, :, i].transpose(1, 2) for i in range(3))              # (B, heads, T, d)
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        out, weights = attend(self, query, key, value, attention_mask,
                              dropout=0.0 if not self.training else self.dropout.p, scaling=self.scaling, **kwargs)
        return out.reshape(*hidden_states.shape[:-1], -1).contiguous(), weights

    for module in model.modules():
        if isinstance(module, BertSelfAttention):
            module.forward = types.MethodType(forward, module)


def best_weights_cost(model) -> dict:
    """The engine's in-memory copy of the weights (as loop.py makes it at a best epoch) against a file."""
    from safetensors.torch import save_file

    before, started = rss_mb(), time.perf_counter()
    copy = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    copied = time.perf_counter() - started
    grown = rss_mb() - before
    with tempfile.TemporaryDirectory(dir=WORK) as folder:
        started = time.perf_counter()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(Path(folder) / "best.safetensors"))
        written = time.perf_counter() - started
    return {"copy_seconds": copied, "copy_rss_mb": grown, "write_seconds": written,
            "weights_mb": sum(v.numel() * v.element_size() for v in copy.values()) / 2**20}


def child(arm: str, steps: int) -> dict:
    lever = ARMS[arm]
    import torch

    if lever.get("interop_threads"):
        torch.set_num_interop_threads(lever["interop_threads"])
    from nlpforge.training import loop, run
    from nlpforge.training.settings import job_class

    if lever.get("optimizer"):
        fused_adamw = loop.make_optimizer

        def make_optimizer(model, learning_rate, weight_decay):
            groups = fused_adamw(model, learning_rate, weight_decay).param_groups  # the engine's decay groups
            return torch.optim.AdamW([{"params": g["params"], "weight_decay": g["weight_decay"]} for g in groups],
                                     lr=learning_rate, fused=False, foreach=lever["optimizer"] == "foreach")

        loop.make_optimizer = make_optimizer
    if lever.get("static"):
        compile_model = torch.compile
        torch.compile = lambda model, **options: compile_model(model, **{**options, "dynamic": False})
    if lever.get("torch_dropout"):
        run.use_cpu_dropout = lambda model: None
    if lever.get("full_last_layer"):
        import transformers

        from nlpforge.tasks import text_classification
        text_classification.cls_pooled_classifier = lambda: transformers.BertForSequenceClassification
    engine_fit, cost = run.fit, {}

    def fit(model, data, *args, **kwargs):
        if lever.get("attention"):
            model.set_attn_implementation(lever["attention"])
        if lever.get("fused_qkv"):
            fuse_qkv(model)
        if lever.get("pad_to"):
            data = dataclasses.replace(data, collate=padded_collate(data.collate, lever["pad_to"]))
        state = engine_fit(model, data, *args, **kwargs)
        cost.update(best_weights_cost(model))
        return state

    run.fit = fit
    marks = []
    job = job_class("text-classification").of(
        train=str(TRAIN), validation=str(VALIDATION), text_column=["review_body"], label_column="star_rating",
        model="minilm-l6", output=str(WORK / f"lever-{arm}"), overwrite=True, epochs=1, max_steps=steps,
        progress=False, log_every=0, compile=bool(lever.get("compile")), **COMMON)
    started = time.perf_counter()
    result = run.train(job, log=lambda *_: None, on_step=lambda step: marks.append(time.perf_counter()))
    warm = marks[min(WARMUP_STEPS, len(marks) - 1):]
    step_seconds = [b - a for a, b in zip(warm, warm[1:])]
    samples_per_step = result.samples / len(marks)
    return {"samples_per_second": samples_per_step * (len(warm) - 1) / (warm[-1] - warm[0]),
            "median_step_seconds": statistics.median(step_seconds), "first_step_seconds": marks[0] - started,
            "padded_tokens_per_sample": result.padded_tokens / result.samples, "steps": len(marks),
            "validation_accuracy": result.metrics.get("validation_accuracy"), "peak_mb": peak_mb(),
            "best_weights": cost}


# ---------------------------------------------------------------- parent

def run_arm(arm: str, steps: int, timeout: float) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **ARMS[arm].get("env", {})}
    done = subprocess.run([sys.executable, __file__, "--child", arm, "--steps", str(steps)], capture_output=True,
                          text=True, timeout=timeout, env=env)
    lines = [line for line in done.stdout.strip().splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"arm {arm} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def summarise(runs: dict, peak_flops: float, non_embedding: int) -> dict:
    from machine import training_flops

    default = statistics.median(r["samples_per_second"] for r in runs["default"]) if "default" in runs else None
    summary = {}
    for arm, rows in runs.items():
        rate = statistics.median(r["samples_per_second"] for r in rows)
        tokens = statistics.median(r["padded_tokens_per_sample"] for r in rows)
        summary[arm] = {"samples_per_second": rate, "vs_default": rate / default if default else None,
                        "runs": [r["samples_per_second"] for r in rows],
                        "first_step_seconds": statistics.median(r["first_step_seconds"] for r in rows),
                        "padded_tokens_per_sample": tokens,
                        "flops_share": rate * training_flops(non_embedding, 6, 384, tokens, tokens) / peak_flops,
                        "peak_mb": max(r["peak_mb"] for r in rows),
                        "best_weights": {k: statistics.median(r["best_weights"][k] for r in rows)
                                         for k in rows[0]["best_weights"]}}
    return summary


def non_embedding_parameters() -> int:
    """MiniLM-L6's weights outside the embeddings: what the FLOPs of a token go through."""
    from nlpforge.models.registry import build_model, load_tokenizer, resolve_base

    base = resolve_base("minilm-l6")
    model = build_model(base, "AutoModelForSequenceClassification", load_tokenizer(base), num_labels=5)
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    return sum(p.numel() for p in model.parameters()) - embedding


def print_table(results: dict) -> None:
    print(f"\nmachine: {results['machine']}; fp32 matmul {results['matmul_gflops']:.1f} GFLOP/s (best of before "
          f"{results['matmul_gflops_before']:.1f} and after {results['matmul_gflops_after']:.1f}); "
          f"{results['steps']} steps x {results['rounds']} rounds")
    print("| arm | samples/s (median) | vs default | runs | s to first step | padded tokens/sample "
          "| share of matmul FLOP/s | peak RSS |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for arm, row in results["arms"].items():
        ratio = f"{row['vs_default']:.2f}x" if row["vs_default"] else "-"
        runs = ", ".join(f"{v:.1f}" for v in row["runs"])
        print(f"| {arm} | {row['samples_per_second']:.1f} | {ratio} | {runs} | {row['first_step_seconds']:.1f} | "
              f"{row['padded_tokens_per_sample']:.1f} | {100 * row['flops_share']:.0f}% | {row['peak_mb']:.0f} MB |")
    default = results["arms"].get("default")
    for arm, row in results["arms"].items():
        if default and ARMS[arm].get("compile"):
            print(f"{arm}: about {row['first_step_seconds'] - default['first_step_seconds']:.0f} s of compiling "
                  "before the first step")
    cost = (default or next(iter(results["arms"].values())))["best_weights"]
    print(f"\nbest epoch's weights ({cost['weights_mb']:.0f} MB): in-memory copy {1000 * cost['copy_seconds']:.0f} ms "
          f"(+{cost['copy_rss_mb']:.0f} MB RSS), written to a safetensors file {1000 * cost['write_seconds']:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"comma-separated, of: {', '.join(ARMS)}")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one run may take")
    args = parser.parse_args()
    arms = args.arms.split(",")
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    if not DATA.is_dir():
        raise SystemExit(f"needs {DATA}")
    from machine import describe, matmul_flops

    WORK.mkdir(parents=True, exist_ok=True)
    before = matmul_flops()
    runs = {arm: [] for arm in arms}
    for round_index in range(args.rounds):
        for arm in arms if round_index % 2 == 0 else arms[::-1]:
            runs[arm].append(run_arm(arm, args.steps, args.timeout))
            print(f"round {round_index + 1} {arm}: {runs[arm][-1]['samples_per_second']:.1f} samples/s, first step "
                  f"after {runs[arm][-1]['first_step_seconds']:.1f} s", flush=True)
    after = matmul_flops()
    peak = max(before, after)
    results = {"machine": describe(), "matmul_gflops": peak / 1e9, "matmul_gflops_before": before / 1e9,
               "matmul_gflops_after": after / 1e9, "steps": args.steps, "rounds": args.rounds,
               "arms": summarise(runs, peak, non_embedding_parameters()), "raw": runs}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "training-levers.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


if __name__ == "__main__":
    if "--child" in sys.argv:
        parser = argparse.ArgumentParser()
        parser.add_argument("--child", required=True, choices=list(ARMS))
        parser.add_argument("--steps", type=int, required=True)
        child_args = parser.parse_args()
        print(json.dumps(child(child_args.child, child_args.steps)), flush=True)
    else:
        main()
