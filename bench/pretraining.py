"""BERT pre-training, measured: does it pay on the flagship task, and does domain adaptation?

1. A WordPiece tokenizer (16k entries) from the pre-training corpus: IMDB, Brown and the Amazon
   review bodies (digital video train + software; never the validation or out-of-domain files).
2. bert-mini (4 layers, hidden 256) pre-trained from scratch on that corpus with masked LM + NSP for
   a fixed time budget (default 60 minutes), evaluated every tenth of the run: the accuracy curve.
3. Star ratings (digital video train -> validation) fine-tuned from the pre-trained folder and from a
   random bert-mini of the same shape and tokenizer, over 3 seeds.
4. all-MiniLM-L6-v2 adapted to the domain (masked LM on Amazon bodies + IMDB, no NSP) for a time
   budget, then the star model fine-tuned from it and from plain MiniLM, over 3 seeds.

Each stage's result is kept in bench/results/pretraining.json, so a rerun continues where it
stopped. Run it alone on the machine (`uptime` first): the budgets are wall-clock.

    .venv/bin/python bench/pretraining.py [--pretrain-minutes 60] [--adapt-minutes 25] [--seeds 3] [--adapt-seeds 3]
                                          [--fine-tune-epochs 4] [--fine-tune-learning-rate 2e-4]
                                          [--fine-tune-max-seq-length 128] [--fine-tune-train-rows N]
                                          [--fine-tune-set KEY=VALUE ...] [--skip-adaptation]
    .venv/bin/python bench/pretraining.py --skip-adaptation --name cram --pretrain-set dropout=0 nsp=false  # a variant
"""
import argparse
import csv
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from flagship import parse_overrides  # noqa: E402
from machine import describe  # noqa: E402

from nlpforge.text.wordpiece import WordPieceSettings, train_wordpiece  # noqa: E402
from nlpforge.training.run import train  # noqa: E402
from nlpforge.training.settings import job_class  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
AMAZON = SHARED / "amazon_reviews"
IMDB = SHARED / "imdb" / "imdb_50k.csv.gz"
BROWN = SHARED / "brown" / "brown_corpus.tar.gz"
IN_DOMAIN = [AMAZON / "digital_video_train.csv", AMAZON / "digital_software_sentiment.csv", IMDB]
CORPUS = [*IN_DOMAIN, BROWN]
WORK = Path("bench/results/pretraining")
RESULTS = Path("bench/results/pretraining.json")


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def save_results(results: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")


def steps_per_second(**job) -> float:
    """A short probe of the same job: optimizer steps per second once warm."""
    marks = []
    probe = dict(job, output=str(WORK / "probe"), overwrite=True, max_steps=25, eval_every=0, checkpoint_dir=None)
    train(job_class("masked-lm").of(**probe), log=lambda *_: None,
          on_step=lambda step: marks.append(time.perf_counter()))
    return (len(marks) - 6) / (marks[-1] - marks[5])


def pretrain(name: str, minutes: float, results: dict, **job) -> dict:
    """A masked-LM run sized to `minutes` of training (from a probe of its speed), evaluated ten times."""
    if name in results:
        return results[name]
    plan = results.setdefault("plans", {})
    if name not in plan:  # planned once, so an interrupted run resumes towards the same step count
        rate = steps_per_second(**job)
        plan[name] = {"steps_per_second": rate, "steps": max(20, int(rate * minutes * 60 * 0.93))}
        save_results(results)  # evaluations take the rest of the budget
    steps = plan[name]["steps"]
    print(f"{name}: {plan[name]['steps_per_second']:.2f} steps/s -> {steps} steps for {minutes} min", flush=True)
    started = time.perf_counter()
    result = train(job_class("masked-lm").of(**job, output=str(WORK / name), overwrite=True, max_steps=steps,
                                             eval_every=max(1, steps // 10), epochs=100, log_every=25,
                                             progress=False, checkpoint_every=250, resume="auto"))
    rows = [json.loads(line) for line in (WORK / name / "metrics.jsonl").read_text().splitlines()]
    curve = [(r["step"], r["validation_mlm_accuracy"], r.get("validation_nsp_accuracy"), r["validation_perplexity"])
             for r in rows if "validation_mlm_accuracy" in r]
    results[name] = {"steps": steps, "steps_per_second_alone": plan[name]["steps_per_second"],
                     "wall_seconds": time.perf_counter() - started,
                     "train_seconds": result.train_seconds, "samples": result.samples,
                     "samples_per_second": result.samples_per_second, "curve": curve,
                     "metrics": {k: v for k, v in result.metrics.items() if k.startswith("validation_")},
                     "corpus": json.loads((WORK / name / "nlpforge.json").read_text())["corpus"]}
    save_results(results)
    plot_curve(name, curve)
    return results[name]


def plot_curve(name: str, curve: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, mlm, nsp, _ = zip(*curve)
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.plot(steps, mlm, marker="o", label="masked-LM accuracy")
    if any(v is not None for v in nsp):
        axes.plot(steps, nsp, marker="s", label="NSP accuracy")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("held-out accuracy")
    axes.set_title(f"{name}: held-out accuracy during pre-training")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    Path("docs").mkdir(exist_ok=True)
    figure.savefig(f"docs/{name}-curve.png", dpi=110)
    plt.close(figure)


def train_sample(rows: int) -> Path:
    """`rows` reviews drawn at random (seed 0) from the star-rating training file, written once as a CSV."""
    path = WORK / f"digital_video_train-{rows}.csv"
    if not path.exists():
        with open(AMAZON / "digital_video_train.csv", newline="", encoding="utf-8") as f:
            header, *body = list(csv.reader(f))
        if not 0 < rows < len(body):
            sys.exit(f"--fine-tune-train-rows must be between 1 and {len(body) - 1} (the training file has "
                     f"{len(body)} reviews; 0 uses all of them)")
        with open(path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([header, *random.Random(0).sample(body, rows)])
    return path


def fine_tune(name: str, model: str, seeds: int, results: dict, tokenizer: str | None = None,
              train_file: Path = AMAZON / "digital_video_train.csv", **settings) -> dict:
    """Star ratings from `model`, one run per seed; validation accuracy and macro-F1, mean and sd."""
    runs = results.setdefault("fine_tune", {}).setdefault(name, [])
    for seed in range(len(runs), seeds):
        started = time.perf_counter()
        result = train(job_class("text-classification").of(
            train=str(train_file), validation=str(AMAZON / "digital_video_validation.csv"),
            text_column=["review_body"], label_column="star_rating", model=model, tokenizer=tokenizer,
            output=str(WORK / f"{name}-{seed}"), overwrite=True, seed=seed, progress=False, log_every=0, **settings),
            log=lambda *_: None)
        runs.append({"seed": seed, "accuracy": result.metrics["validation_accuracy"],
                     "macro_f1": result.metrics["validation_macro_f1"], "best_epoch": result.metrics["best_epoch"],
                     "wall_seconds": time.perf_counter() - started,
                     "per_epoch": [(r["epoch"], r["validation_accuracy"], r["validation_macro_f1"])
                                   for r in result.history if "validation_accuracy" in r]})
        print(f"{name} seed {seed}: {runs[-1]}", flush=True)
        save_results(results)
    return summary(runs)


def summary(runs: list) -> dict:
    out = {}
    for key in ("accuracy", "macro_f1"):
        values = [r[key] for r in runs]
        out[key] = (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    return out


def print_bert_mini(results: dict, scratch: dict, pretrained: dict, random_init: dict, seeds: int,
                    suffix: str = "") -> None:
    m = scratch["metrics"]
    print(f"\nmachine: {results['machine']}")
    nsp = f", NSP {m['validation_nsp_accuracy']:.3f}" if "validation_nsp_accuracy" in m else ""
    print(f"bert-mini from scratch, {'MLM + NSP' if nsp else 'MLM only'}: {scratch['steps']:,} steps in "
          f"{scratch['train_seconds'] / 60:.0f} min, {scratch['samples_per_second']:.1f} samples/s; "
          f"held-out MLM accuracy {m['validation_mlm_accuracy']:.3f}"
          f"{nsp}, perplexity {m['validation_perplexity']:.1f}")
    print(f"\n| star-rating fine-tune ({seeds} seeds) | val accuracy (mean ± sd) | val macro-F1 (mean ± sd) |")
    print("|---|---:|---:|")
    for name, row in (("bert-mini, random initialisation", random_init), ("bert-mini, pre-trained here", pretrained)):
        print(f"| {name} | {row['accuracy'][0]:.3f} ± {row['accuracy'][1]:.3f} | "
              f"{row['macro_f1'][0]:.3f} ± {row['macro_f1'][1]:.3f} |")
    gain = pretrained["accuracy"][0] - random_init["accuracy"][0]
    print(f"\npre-training vs random initialisation: {100 * gain:+.1f} points of accuracy (goal: +5)")
    results.setdefault("summary", {})[f"pretraining_gain{suffix}"] = gain
    save_results(results)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pretrain-minutes", type=float, default=60)
    parser.add_argument("--adapt-minutes", type=float, default=25)
    parser.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds for the bert-mini comparison")
    parser.add_argument("--adapt-seeds", type=int, default=3, help="fine-tuning seeds for the MiniLM comparison")
    parser.add_argument("--fine-tune-epochs", type=int, default=4,
                        help="epochs of each bert-mini star-rating fine-tune (both arms; the best epoch counts)")
    parser.add_argument("--fine-tune-learning-rate", type=float, default=2e-4,
                        help="peak learning rate of each bert-mini star-rating fine-tune (both arms)")
    parser.add_argument("--fine-tune-max-seq-length", type=int, default=128,
                        help="tokens kept of each review in the bert-mini star-rating fine-tunes (both arms)")
    parser.add_argument("--fine-tune-train-rows", type=int, default=0,
                        help="fine-tune both bert-mini arms on this many reviews drawn at random from the training "
                             "file (0: all of it), to see how the gain depends on the amount of labelled data")
    parser.add_argument("--fine-tune-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="other settings of both bert-mini star-rating fine-tunes (flat names, as in a config "
                             "file), e.g. pooling=mean; each becomes part of the runs' names")
    parser.add_argument("--skip-adaptation", action="store_true", help="only the bert-mini comparison")
    parser.add_argument("--pretrain-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="bert-mini pre-training settings changed from the script's recipe (batch 32, 128 tokens, "
                             "5e-4, warmup 6%%, weight decay 0.01, MLM + NSP; flat names, as in a config file), "
                             "e.g. dropout=0 nsp=false learning_rate=1e-3")
    parser.add_argument("--name", default="",
                        help="a suffix for this variant's results, so that it does not reuse the plain recipe's")
    args = parser.parse_args()
    if args.pretrain_set and not args.name:  # the plain recipe's stored results would stand in for the variant's
        parser.error("--pretrain-set needs --name, so that the variant keeps its own results")
    missing = [str(p) for p in CORPUS if not p.exists()]
    if missing:
        sys.exit(f"needs {', '.join(missing)}")
    WORK.mkdir(parents=True, exist_ok=True)
    results = load_results()
    results["machine"] = describe()

    tokenizer = WORK / "tokenizer"
    if not (tokenizer / "tokenizer.json").exists():
        started = time.perf_counter()
        train_wordpiece(WordPieceSettings.of(corpus=[str(p) for p in CORPUS], output=str(tokenizer),
                                             vocab_size=16000))
        results["tokenizer_seconds"] = time.perf_counter() - started
        save_results(results)

    recipe = dict(batch_size=32, max_seq_length=128, learning_rate=5e-4, warmup_ratio=0.06, weight_decay=0.01)
    recipe.update(parse_overrides(args.pretrain_set))
    variant = f"-{args.name}" if args.name else ""
    scratch = pretrain(f"bert-mini-pretrained{variant}", args.pretrain_minutes, results,
                       corpus=[str(p) for p in CORPUS], model="bert-mini", tokenizer=str(tokenizer),
                       max_eval_instances=1000, **recipe)
    small = dict(epochs=args.fine_tune_epochs, learning_rate=args.fine_tune_learning_rate, batch_size=32,
                 max_seq_length=args.fine_tune_max_seq_length)
    suffix = "" if args.fine_tune_epochs == 4 else f"-{args.fine_tune_epochs}-epochs"  # 4: the first runs' names
    if args.fine_tune_learning_rate != 2e-4:
        suffix += f"-lr{args.fine_tune_learning_rate:g}"
    if args.fine_tune_max_seq_length != 128:
        suffix += f"-seq{args.fine_tune_max_seq_length}"
    if args.fine_tune_train_rows:
        suffix += f"-rows{args.fine_tune_train_rows}"
        small["train_file"] = train_sample(args.fine_tune_train_rows)
    for key, value in parse_overrides(args.fine_tune_set).items():
        suffix += f"-{key}{value}"
        small[key] = value
    pretrained = fine_tune(f"stars-from-pretrained-bert-mini{variant}{suffix}",
                           str(WORK / f"bert-mini-pretrained{variant}"), args.seeds, results, **small)
    random_init = fine_tune(f"stars-from-random-bert-mini{suffix}", "bert-mini", args.seeds, results,
                            tokenizer=str(tokenizer), **small)

    if args.skip_adaptation:
        print_bert_mini(results, scratch, pretrained, random_init, args.seeds, f"{variant}{suffix}")
        return
    adapted = pretrain("minilm-adapted", args.adapt_minutes, results, corpus=[str(p) for p in IN_DOMAIN],
                       model="minilm-l6", nsp=False, batch_size=32, max_seq_length=128, learning_rate=5e-5,
                       warmup_ratio=0.06, max_eval_instances=500)
    flagship = dict(epochs=2, learning_rate=1e-4, batch_size=16, max_seq_length=128)
    from_adapted = fine_tune("stars-from-adapted-minilm", str(WORK / "minilm-adapted"), args.adapt_seeds, results,
                             **flagship)
    from_plain = fine_tune("stars-from-plain-minilm", "minilm-l6", args.adapt_seeds, results, **flagship)

    print(f"\nmachine: {results['machine']}")
    print("\n| pre-training run | steps | train time | samples/s | held-out MLM accuracy | NSP accuracy | perplexity |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, run in (("bert-mini from scratch, MLM + NSP", scratch), ("MiniLM-L6 domain adaptation, MLM", adapted)):
        m = run["metrics"]
        nsp = f"{m['validation_nsp_accuracy']:.3f}" if "validation_nsp_accuracy" in m else "–"
        print(f"| {name} | {run['steps']:,} | {run['train_seconds'] / 60:.0f} min | {run['samples_per_second']:.1f} | "
              f"{m['validation_mlm_accuracy']:.3f} | {nsp} | {m['validation_perplexity']:.1f} |")
    print(f"\n| star-rating fine-tune (seeds: {args.seeds} bert-mini, {args.adapt_seeds} MiniLM) "
          "| val accuracy (mean ± sd) | val macro-F1 (mean ± sd) |")
    print("|---|---:|---:|")
    for name, row in (("bert-mini, random initialisation", random_init), ("bert-mini, pre-trained here", pretrained),
                      ("MiniLM-L6 as shipped", from_plain), ("MiniLM-L6 adapted to the domain", from_adapted)):
        print(f"| {name} | {row['accuracy'][0]:.3f} ± {row['accuracy'][1]:.3f} | "
              f"{row['macro_f1'][0]:.3f} ± {row['macro_f1'][1]:.3f} |")
    gain = pretrained["accuracy"][0] - random_init["accuracy"][0]
    adaptation = from_adapted["accuracy"][0] - from_plain["accuracy"][0]
    print(f"\npre-training vs random initialisation: {100 * gain:+.1f} points of accuracy (goal: +5)")
    print(f"domain adaptation vs plain MiniLM: {100 * adaptation:+.1f} points of accuracy")
    results.setdefault("summary", {}).update({f"pretraining_gain{variant}{suffix}": gain,
                                              "adaptation_gain": adaptation})
    save_results(results)


if __name__ == "__main__":
    main()
