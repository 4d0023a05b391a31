"""Named entities and question answering on real data, against their classic baselines.

1. WikiANN English: MiniLM-L6 fine-tuned on train.txt, entity F1 per type on dev.txt (seqeval,
   strict), beside a CRF (word, shape, affix and neighbour features) trained on the same file.
2. WNUT-17: MiniLM-L6 fine-tuned on train (dev for the best epoch), entity F1 on test.
3. SQuAD v1.1 subsets: MiniLM-L6 fine-tuned on the 269 training questions, exact match and F1 on the
   810 dev questions, beside the paper's sliding-window baseline.
4. Throughput: training samples/s of each run; prediction through the model server (requests/s at
   concurrency 8, dynamic batching); the ONNX int8 backend's change in F1.

Results go to bench/results/ner_qa.json (a rerun continues where it stopped). Run it alone.

    .venv/bin/python bench/ner_qa.py [--epochs-wikiann 2] [--epochs-wnut 5] [--epochs-squad 6]
"""
import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402

from nlpforge import load  # noqa: E402
from nlpforge.data.sequences import read_tagged  # noqa: E402
from nlpforge.data.squad import read_squad  # noqa: E402
from nlpforge.evaluation.crf import fit_crf  # noqa: E402
from nlpforge.evaluation.sliding_window import answer_question  # noqa: E402
from nlpforge.tasks.question_answering import squad_metrics  # noqa: E402
from nlpforge.tasks.token_classification import entity_metrics  # noqa: E402
from nlpforge.training.run import train  # noqa: E402
from nlpforge.training.settings import job_class  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WIKIANN, WNUT, SQUAD = DATA / "ner" / "wikiann_en", DATA / "ner" / "wnut17", DATA / "squad"
WORK = Path("bench/results/ner_qa")
RESULTS = Path("bench/results/ner_qa.json")


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def save(results: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")


def ner_f1(model_folder: Path, path: Path, backend: str = "torch") -> dict:
    model = load(model_folder, backend=backend)
    tagged = read_tagged(path)
    predicted = model.task.tag_sentences(model, [tokens for tokens, _ in tagged.sentences], batch_size=64)
    return eval_scores([tags for _, tags in tagged.sentences], predicted)


def eval_scores(gold: list, predicted: list) -> dict:
    """entity_metrics as stored in the results file: eval_-prefixed scores and eval_per_type."""
    metrics, per_type = entity_metrics(gold, predicted, "IOB2")
    return {**{f"eval_{name}": value for name, value in metrics.items()}, "eval_per_type": per_type}


def qa_scores(model_folder: Path, path: Path, backend: str = "torch") -> dict:
    model = load(model_folder, backend=backend)
    examples, _ = read_squad(path)
    answers = model.task.answers_for(model, examples, batch_size=16)
    return squad_metrics(examples, {e.id: a[0] for e, a in zip(examples, answers)}, "eval")


def fine_tune(name: str, results: dict, task: str, **settings) -> dict:
    if name in results:
        return results[name]
    started = time.perf_counter()
    result = train(job_class(task).of(model="minilm-l6", output=str(WORK / name), overwrite=True, progress=False,
                                      log_every=50, **settings))
    results[name] = {"train_seconds": result.train_seconds, "samples_per_second": result.samples_per_second,
                     "wall_seconds": time.perf_counter() - started,
                     "metrics": {k: v for k, v in result.metrics.items() if isinstance(v, float)}}
    save(results)
    return results[name]


async def _load(url: str, bodies: list, seconds: float, concurrency: int) -> float:
    import httpx

    done, stop = 0, time.perf_counter() + seconds

    async def user(client, k):
        nonlocal done
        i = k
        while time.perf_counter() < stop:
            response = await client.post(url, json=bodies[i % len(bodies)])
            response.raise_for_status()
            done += 1
            i += concurrency

    async with httpx.AsyncClient(timeout=120) as client:
        started = time.perf_counter()
        await asyncio.gather(*(user(client, k) for k in range(concurrency)))
        return done / (time.perf_counter() - started)


def served_rate(model_folder: Path, bodies: list, seconds: float = 15, concurrency: int = 8) -> float:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from serving_support import management, running_server

    with running_server(WORK / "store", auth=False, batch_size=16, max_batch_delay=5) as server:
        response = management(server).post("/models", params={"url": str(model_folder.resolve()), "model_name": "m"})
        response.raise_for_status()
        url = server.url("inference") + "/predictions/m"
        asyncio.run(_load(url, bodies, 3, concurrency))  # warm-up
        return asyncio.run(_load(url, bodies, seconds, concurrency))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs-wikiann", type=int, default=2)
    parser.add_argument("--epochs-wnut", type=int, default=5)
    parser.add_argument("--epochs-squad", type=int, default=6)
    args = parser.parse_args()
    for folder in (WIKIANN, WNUT, SQUAD):
        if not folder.is_dir():
            sys.exit(f"needs {folder}")
    WORK.mkdir(parents=True, exist_ok=True)
    results = load_results()
    results["machine"] = describe()

    wikiann = fine_tune("wikiann", results, "token-classification", train=str(WIKIANN / "train.txt"),
                        validation=str(WIKIANN / "dev.txt"), epochs=args.epochs_wikiann, learning_rate=1e-4,
                        batch_size=32, max_seq_length=64)
    if "wikiann_dev" not in results:
        results["wikiann_dev"] = ner_f1(WORK / "wikiann", WIKIANN / "dev.txt")
        save(results)
    if "crf_dev" not in results:
        started = time.perf_counter()
        crf = fit_crf(read_tagged(WIKIANN / "train.txt").sentences)
        dev = read_tagged(WIKIANN / "dev.txt")
        results["crf_dev"] = {**eval_scores([t for _, t in dev.sentences], crf.tag([w for w, _ in dev.sentences])),
                              "seconds": time.perf_counter() - started}
        save(results)
    wnut = fine_tune("wnut17", results, "token-classification", train=str(WNUT / "train.conll"),
                     validation=str(WNUT / "dev.conll"), test=str(WNUT / "test.conll"), epochs=args.epochs_wnut,
                     learning_rate=1e-4, batch_size=16, max_seq_length=128)
    squad = fine_tune("squad", results, "question-answering", train=str(SQUAD / "train-v1.1-subset.json"),
                      validation=str(SQUAD / "dev-v1.1-subset.json"), epochs=args.epochs_squad, learning_rate=1e-4,
                      batch_size=16, max_seq_length=384, doc_stride=128, eval_batch_size=16)
    if "sliding_window" not in results:
        examples, _ = read_squad(SQUAD / "dev-v1.1-subset.json")
        results["sliding_window"] = squad_metrics(
            examples, {e.id: answer_question(e.question, e.context) for e in examples}, "eval")
        save(results)
    for name, score in (("wikiann_int8", lambda: ner_f1(WORK / "wikiann", WIKIANN / "dev.txt", "onnx-int8")),
                        ("squad_int8", lambda: qa_scores(WORK / "squad", SQUAD / "dev-v1.1-subset.json",
                                                         "onnx-int8")),
                        ("squad_torch", lambda: qa_scores(WORK / "squad", SQUAD / "dev-v1.1-subset.json"))):
        if name not in results:
            results[name] = score()
            save(results)
    if "serving" not in results:
        sentences = [" ".join(tokens) for tokens, _ in read_tagged(WIKIANN / "dev.txt").sentences[:500]]
        examples, _ = read_squad(SQUAD / "dev-v1.1-subset.json")
        results["serving"] = {
            "ner_requests_per_second": served_rate(WORK / "wikiann", [{"text": s} for s in sentences]),
            "qa_requests_per_second": served_rate(WORK / "squad", [{"question": e.question, "context": e.context}
                                                                   for e in examples[:200]])}
        save(results)

    dev, crf = results["wikiann_dev"], results["crf_dev"]
    print(f"\nmachine: {results['machine']}")
    print("\n| WikiANN-en dev | PER F1 | ORG F1 | LOC F1 | micro P | micro R | micro F1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in (("CRF (sklearn-crfsuite)", crf), ("MiniLM-L6, nlpforge", dev)):
        types = row["eval_per_type"]
        print(f"| {name} | " + " | ".join(f"{types[t]['f1']:.3f}" for t in ("PER", "ORG", "LOC"))
              + f" | {row['eval_precision']:.3f} | {row['eval_recall']:.3f} | {row['eval_f1']:.3f} |")
    print(f"\nMiniLM vs CRF: {100 * (dev['eval_f1'] - crf['eval_f1']):+.1f} points micro-F1 (goal: +3)")
    print(f"WNUT-17 test entity F1: {wnut['metrics']['test_f1']:.3f} (precision {wnut['metrics']['test_precision']:.3f},"
          f" recall {wnut['metrics']['test_recall']:.3f})")
    sw, qa = results["sliding_window"], results["squad_torch"]
    print("\n| SQuAD v1.1 dev subset (810 questions) | exact match | F1 |\n|---|---:|---:|")
    print(f"| sliding-window baseline | {sw['eval_exact_match']:.1f} | {sw['eval_f1']:.1f} |")
    print(f"| MiniLM-L6, 269 training questions | {qa['eval_exact_match']:.1f} | {qa['eval_f1']:.1f} |")
    int8 = results["wikiann_int8"]["eval_f1"] - dev["eval_f1"]
    int8_qa = results["squad_int8"]["eval_f1"] - qa["eval_f1"]
    print(f"\nONNX int8 vs torch: WikiANN F1 {100 * int8:+.2f} points, SQuAD F1 {int8_qa:+.2f} points")
    print("\n| run | training samples/s | served requests/s (c=8) |\n|---|---:|---:|")
    print(f"| WikiANN (64 tokens) | {wikiann['samples_per_second']:.1f} | "
          f"{results['serving']['ner_requests_per_second']:.1f} |")
    print(f"| WNUT-17 (128 tokens) | {wnut['samples_per_second']:.1f} | – |")
    print(f"| SQuAD (384-token windows) | {squad['samples_per_second']:.1f} | "
          f"{results['serving']['qa_requests_per_second']:.1f} |")


if __name__ == "__main__":
    main()
