"""Benchmark: raw corpus to word vectors through nlpforge, against gensim alone on the same tokens.

    .venv/bin/python bench/vectors.py                     # IMDB + Brown from ../shared/data, 5 epochs
    .venv/bin/python bench/vectors.py --epochs 1 --max-documents 5000   # a quick look (IMDB only)
    .venv/bin/python bench/vectors.py --only phrases-on                 # one of the two pairs
    .venv/bin/python bench/vectors.py --only phrases-on --rounds 3      # medians of 3 alternating rounds

Four runs, each in its own process (so each peak memory is its own), one after the other in
this one invocation so that the machine's load is as alike as it can be:

    nlpforge, phrases off   raw files -> read, normalise, tokenise -> word2vec
    gensim alone            word2vec on the token file that run wrote (Word2Vec(corpus_file=...))
    nlpforge, phrases on    raw files -> read, normalise, tokenise, 2 Phrases passes -> word2vec
    gensim alone            word2vec on the phrase-joined token file that run wrote

words/s is the raw corpus's token count times the epochs, over the wall time from the first
byte read to the trained model (saving excluded on both sides). The nlpforge runs are then
scored on the Google analogies (restrict_vocab=30000), WordSim353 and SimLex-999.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NLPFORGE_SHARED_DATA", ROOT.parent / "shared" / "data"))
CORPUS = [SHARED / "imdb" / "imdb_50k.csv.gz", SHARED / "brown" / "brown_corpus.tar.gz"]


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _settings(args, phrase_passes: int, workdir: Path):
    from nlpforge.vectors.train import Word2VecSettings

    return Word2VecSettings.of(corpus=[str(p) for p in CORPUS], column="review", output=str(workdir / "vectors"),
                               architecture=args.architecture, vector_size=args.vector_size, epochs=args.epochs,
                               workers=args.workers, phrase_passes=phrase_passes, max_documents=args.max_documents)


def run_nlpforge(args) -> dict:
    from nlpforge.text.prepare import prepare_corpus
    from nlpforge.vectors.evaluate import evaluate_vectors
    from nlpforge.vectors.train import word2vec_from_prepared

    workdir = Path(args.workdir)
    settings = _settings(args, args.phrases, workdir)
    start = time.perf_counter()
    prepared = prepare_corpus(settings.text, settings.phrase, workdir)
    prepare_seconds = time.perf_counter() - start
    model = word2vec_from_prepared(prepared, settings)
    seconds = time.perf_counter() - start
    peak = _peak_mib()
    report = evaluate_vectors(model.wv, restrict_vocab=30_000)
    return {"seconds": seconds, "stages": {**prepared.seconds, "word2vec": seconds - prepare_seconds},
            "corpus_tokens": prepared.corpus_tokens, "prepared_tokens": prepared.tokens,
            "phrases": len(prepared.phrases.phrases) if prepared.phrases else 0, "words": len(model.wv),
            "peak_mib": peak, "token_file": str(prepared.path), "evaluation": report.to_dict()}


def run_gensim(args) -> dict:
    from gensim.models import Word2Vec

    start = time.perf_counter()
    model = Word2Vec(corpus_file=args.token_file, vector_size=args.vector_size, window=5, min_count=5,
                     sg=int(args.architecture == "skipgram"), hs=0, negative=5, sample=1e-3,
                     workers=args.workers, epochs=args.epochs, seed=1)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "words": len(model.wv), "peak_mib": _peak_mib()}


def _child(args, mode: str, extra: list[str]) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--epochs", str(args.epochs),
               "--architecture", args.architecture, "--vector-size", str(args.vector_size),
               "--workers", str(args.workers), *extra]
    if args.max_documents:
        command += ["--max-documents", str(args.max_documents)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"benchmark run {mode} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--architecture", default="skipgram", choices=["skipgram", "cbow"])
    parser.add_argument("--vector-size", type=int, default=100)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-documents", type=int, default=None, help="read only the first N documents (a quick look)")
    parser.add_argument("--output", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--only", choices=["phrases-off", "phrases-on"], help="run one of the two pairs")
    parser.add_argument("--rounds", type=int, default=1, help="rounds per pair, alternating which side runs "
                                                              "first; the table shows each side's median run")
    parser.add_argument("--child", choices=["nlpforge", "gensim"], help=argparse.SUPPRESS)
    parser.add_argument("--phrases", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--token-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        result = run_nlpforge(args) if args.child == "nlpforge" else run_gensim(args)
        print(json.dumps(result))
        return
    missing = [p for p in CORPUS if not p.exists()]
    if missing:
        sys.exit(f"corpus not found: {', '.join(map(str, missing))} (set NLPFORGE_SHARED_DATA)")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-vectors-") as tmp:
        for passes in {"phrases-off": (0,), "phrases-on": (2,)}.get(args.only, (0, 2)):
            workdir = Path(tmp) / f"phrases-{passes}"
            runs = {"nlpforge": [], "gensim": []}
            for number in range(args.rounds):
                # Round 0 runs nlpforge first (gensim reads the token file it writes); later rounds alternate.
                for side in (("nlpforge", "gensim") if number % 2 == 0 else ("gensim", "nlpforge")):
                    if side == "nlpforge":
                        run = _child(args, "nlpforge", ["--phrases", str(passes), "--workdir", str(workdir)])
                    else:
                        run = _child(args, "gensim", ["--token-file", str(workdir / "tokens.txt")])
                    runs[side].append(run)
                    print(f"round {number + 1}, {side}, {passes} phrase passes: {run['seconds']:.1f}s", file=sys.stderr)
            rows[passes] = {side: {**median_run(found), "rounds": [r["seconds"] for r in found]}
                            for side, found in runs.items()}
    print_table(rows, args)
    if args.output:
        args.output.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "output"},
                                           "rows": rows}, indent=2, default=str))


def median_run(runs: list[dict]) -> dict:
    """The run of median wall time (the lower middle one for an even count)."""
    return sorted(runs, key=lambda run: run["seconds"])[(len(runs) - 1) // 2]


def print_table(rows: dict, args) -> None:
    tokens = next(iter(rows.values()))["nlpforge"]["corpus_tokens"]
    print(f"\ncorpus: IMDB + Brown, {tokens:,} tokens; {args.architecture}, {args.vector_size} dimensions, "
          f"{args.epochs} epochs, {args.workers} workers; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores\n")
    print("| run | wall s | words/s | vs gensim alone | peak RSS MiB | vocabulary | analogies | WordSim353 | SimLex-999 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for passes, pair in rows.items():
        ours, alone = pair["nlpforge"], pair["gensim"]
        label = "phrases off" if passes == 0 else f"phrases on ({ours['phrases']:,} phrases)"
        evaluation = ours["evaluation"]
        quality = (f"{evaluation['analogies']['accuracy']:.1%} | "
                   f"{evaluation['similarity']['wordsim353']['spearman']:.3f} "
                   f"({evaluation['similarity']['wordsim353']['oov_pairs']} OOV) | "
                   f"{evaluation['similarity']['simlex999']['spearman']:.3f} "
                   f"({evaluation['similarity']['simlex999']['oov_pairs']} OOV)")
        for name, run in (("nlpforge", ours), ("gensim alone", alone)):
            speed = tokens * args.epochs / run["seconds"]
            ratio = alone["seconds"] / run["seconds"]
            print(f"| {name}, {label} | {run['seconds']:.1f} | {speed:,.0f} | {ratio:.2f}x | {run['peak_mib']:,.0f} | "
                  f"{run['words']:,} | " + (quality if name == "nlpforge" else "- | - | -") + " |")
    if args.rounds > 1:
        def listed(side):
            return ", ".join(f"{seconds:.1f}" for seconds in side["rounds"])

        print("\nwall s per round: " + "; ".join(
            f"phrases {'on' if passes else 'off'}: nlpforge {listed(pair['nlpforge'])}, gensim alone "
            f"{listed(pair['gensim'])}" for passes, pair in rows.items()))
    print("\nnlpforge stages (s): " + "; ".join(
        f"phrases {'on' if passes else 'off'}: " + ", ".join(f"{k} {v:.1f}" for k, v in pair["nlpforge"]["stages"].items())
        for passes, pair in rows.items()))


if __name__ == "__main__":
    main()
