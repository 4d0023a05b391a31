"""Full-quality flagship fine-tune: MiniLM-L6 on Amazon digital-video reviews, review_body -> 1-5 stars.

Records validation accuracy and macro-F1 next to the TF-IDF + logistic regression baseline on the
same split, wall time, samples/s and the share of the machine's measured matmul FLOP/s used.

    .venv/bin/python bench/flagship.py [--epochs 2] [--max-seq-length 128]
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, matmul_flops, training_flops  # noqa: E402

from nlpforge.data.labelled import load_labelled  # noqa: E402
from nlpforge.evaluation.baseline import fit_baseline  # noqa: E402
from nlpforge.tasks.text_classification import classification_metrics  # noqa: E402
from nlpforge.training.run import train as train_job  # noqa: E402
from nlpforge.training.settings import job_class  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon_reviews"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--class-weights", default="none")
    parser.add_argument("--output", default="bench/results/flagship-model")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"needs {DATA}")
    train, validation = DATA / "digital_video_train.csv", DATA / "digital_video_validation.csv"
    peak_before = matmul_flops()

    data = load_labelled(train, validation, text_columns="review_body", label_column="star_rating")
    started = time.perf_counter()
    baseline = fit_baseline(data.train.texts, data.train.label_ids)
    base = classification_metrics(data.validation.label_ids, baseline.predict(data.validation.texts), data.labels)
    baseline_seconds = time.perf_counter() - started

    config = dict(epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
                  max_seq_length=args.max_seq_length, class_weights=args.class_weights)
    job = job_class("text-classification").of(
        train=str(train), validation=str(validation), text_column=["review_body"], label_column="star_rating",
        model="minilm-l6", output=args.output, overwrite=True, progress=False, log_every=50, **config)
    started = time.perf_counter()
    result = train_job(job)
    wall = time.perf_counter() - started
    peak_after = matmul_flops()
    peak = max(peak_before, peak_after)

    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(args.output)
    embedding = model_config.vocab_size * model_config.hidden_size + \
        (model_config.max_position_embeddings + model_config.type_vocab_size) * model_config.hidden_size
    flops = training_flops(result.parameters - embedding, model_config.num_hidden_layers, model_config.hidden_size,
                           result.padded_tokens, result.padded_tokens / max(result.samples, 1))
    used = flops / result.train_seconds
    row = {
        "machine": describe(), "config": config,
        "validation_accuracy": result.metrics["validation_accuracy"],
        "validation_macro_f1": result.metrics["validation_macro_f1"], "best_epoch": result.metrics["best_epoch"],
        "baseline_accuracy": base["accuracy"], "baseline_macro_f1": base["macro_f1"],
        "baseline_seconds": baseline_seconds, "wall_seconds": wall, "train_seconds": result.train_seconds,
        "samples_per_second": result.samples_per_second, "matmul_flops": peak, "training_flops_per_second": used,
        "flops_share": used / peak, "history": result.history,
    }
    print()
    print(f"machine: {row['machine']}")
    print("| model | val accuracy | val macro-F1 | wall time | samples/s | share of matmul FLOP/s |")
    print("|---|---|---|---|---|---|")
    print(f"| TF-IDF + LR baseline | {base['accuracy']:.3f} | {base['macro_f1']:.3f} | {baseline_seconds:.0f} s | - | - |")
    print(f"| nlpforge MiniLM-L6 ({args.epochs} ep, {args.max_seq_length} tok) | {row['validation_accuracy']:.3f} | "
          f"{row['validation_macro_f1']:.3f} | {wall:.0f} s | {row['samples_per_second']:.1f} | "
          f"{100 * row['flops_share']:.0f}% of {peak / 1e9:.0f} GFLOP/s |")
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "flagship.json").write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
