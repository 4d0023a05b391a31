"""What an explanation costs: `predict` against `explain` (Integrated Gradients + eager attention) on the
flagship MiniLM model, from the model folder and from the server's /explanations route, over real reviews.

    predict              nlpforge.load(folder).predict([text]), one review at a time
    explain, N steps     nlpforge.load(folder).explain([text], steps=N): Captum's LayerIntegratedGradients with
                         N steps in one batch, plus one eager forward pass for the attention
    served explain       POST /explanations/<model> on `nlpforge serve` (1 worker), 32 steps

Reviews come from ../shared/data/amazon_reviews/digital_video_validation.csv (review_body), cut at the model's
max_seq_length. The model folder is bench/models/stars (bench/flagship.py writes it), else --model.

    .venv/bin/python bench/explain.py [--model FOLDER] [--reviews 10]
"""
import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def timed(call, texts) -> list[float]:
    seconds = []
    for text in texts:
        start = time.perf_counter()
        call(text)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "bench" / "models" / "stars"))
    parser.add_argument("--reviews", type=int, default=10)
    args = parser.parse_args()

    import httpx

    import nlpforge
    from nlpforge.serving import ServerThread, ServeSettings
    from serving_support import management

    data = ROOT.parent / "shared" / "data" / "amazon_reviews" / "digital_video_validation.csv"
    with open(data, newline="", encoding="utf-8") as handle:
        texts = [row["review_body"] for row in csv.DictReader(handle) if len(row["review_body"]) > 400]
    texts = texts[:args.reviews]
    loaded = nlpforge.load(args.model)
    loaded.explain(texts[:1], steps=4)  # load the eager copy once
    rows = [("predict", timed(lambda t: loaded.predict([t]), texts))]
    for steps in (16, 32, 64):
        rows.append((f"explain, {steps} steps", timed(lambda t, s=steps: loaded.explain([t], steps=s), texts)))
    tokens = len(loaded.explain(texts[:1])[0]["words"])
    settings = ServeSettings.of(model_store="/tmp/bench-explain-store", inference_port=0, management_port=0,
                                metrics_port=0, threads=2)
    server = ServerThread(settings).start()
    try:
        response = management(server).post("/models", params={"url": str(Path(args.model).resolve()),
                                                              "model_name": "stars", "synchronous": "true"})
        assert response.status_code == 200, response.text
        client = httpx.Client(base_url=server.url("inference"), timeout=300)
        client.post("/explanations/stars", json={"text": texts[0]})
        rows.append(("served explain, 32 steps",
                     timed(lambda t: client.post("/explanations/stars", json={"text": t}).raise_for_status(),
                           texts)))
    finally:
        server.stop()
    base = statistics.median(rows[0][1])
    print(f"{args.model}: {len(texts)} reviews, {tokens} tokens each (first review)")
    print(f"{'':28} {'median s':>9} {'p90 s':>7} {'x predict':>10}")
    for name, seconds in rows:
        ordered = sorted(seconds)
        median = statistics.median(seconds)
        print(f"{name:28} {median:9.3f} {ordered[int(0.9 * (len(ordered) - 1))]:7.3f} {median / base:10.1f}")


if __name__ == "__main__":
    main()
