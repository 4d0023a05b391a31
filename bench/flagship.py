"""Flagship quality: the star rating of an Amazon review from its body, measured so that a change can be seen.

For one recipe (the engine's defaults, changed only by --set), it reports, as mean and standard
deviation over several seeds:
  * on the validation file: accuracy, macro-F1, mean absolute error in stars, and the share of
    predictions within one star;
  * on other_categories.csv (software, video games, gift cards: out of domain), the same four;
and, with --cv K, K-fold cross-validation on train + validation (stratified by star), where each
fold's model picks its best epoch on 10% of its own training part, with TF-IDF + logistic
regression trained and scored on the same folds.

    .venv/bin/python bench/flagship.py                                   # default recipe, seeds 42 43 44
    .venv/bin/python bench/flagship.py --cv 5                            # and 5-fold cross-validation
    .venv/bin/python bench/flagship.py --set class_weights=balanced --name balanced   # one lever alone
    .venv/bin/python bench/flagship.py --seeds 42 --set max_train_rows=300 epochs=1   # a quick look

Results go to bench/results/flagship-<name>.json and print as markdown rows.
"""
import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon_reviews"
TRAIN, VALIDATION = DATA / "digital_video_train.csv", DATA / "digital_video_validation.csv"
OUT_OF_DOMAIN = DATA / "other_categories.csv"
RESULTS = Path(__file__).resolve().parent / "results"


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle)
                if (row.get("review_body") or "").strip() and row.get("star_rating")]


def scores(true_stars: list[int], predicted_stars: list[int]) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    distance = [abs(t - p) for t, p in zip(true_stars, predicted_stars)]
    return {"accuracy": float(accuracy_score(true_stars, predicted_stars)),
            "macro_f1": float(f1_score(true_stars, predicted_stars, labels=[1, 2, 3, 4, 5], average="macro",
                                       zero_division=0)),
            "mae": sum(distance) / len(distance), "within_one": sum(d <= 1 for d in distance) / len(distance)}


def star_probabilities(folder: Path, rows: list[dict]) -> list[dict]:
    """Each row's probability per star, {"1": p, ..., "5": p}."""
    import nlpforge

    model = nlpforge.load(folder)
    return [answer["probabilities"] for answer in model.predict([row["review_body"] for row in rows], batch_size=64)]


def best_stars(probabilities: list[dict]) -> list[int]:
    return [int(max(row, key=row.get)) for row in probabilities]


def averaged(members: list[list[dict]]) -> list[dict]:
    """The ensemble's probabilities: the members' mean, row by row."""
    return [{star: sum(m[i][star] for m in members) / len(members) for star in members[0][i]}
            for i in range(len(members[0]))]


def predicted_stars(folder: Path, rows: list[dict]) -> list[int]:
    return best_stars(star_probabilities(folder, rows))


def train(train_file: Path, validation_file: Path | None, output: Path, seed: int, overrides: dict) -> dict:
    from nlpforge.training.run import train as train_job
    from nlpforge.training.settings import job_class

    job = job_class("text-classification").of(
        train=str(train_file), validation=str(validation_file) if validation_file else None,
        text_column=["review_body"], label_column="star_rating", output=str(output), overwrite=True,
        progress=False, log_every=0, seed=seed, **overrides)
    started = time.perf_counter()
    result = train_job(job, log=lambda *_: None)
    return {"seconds": time.perf_counter() - started, "best_epoch": result.metrics.get("best_epoch"),
            "history": result.history}


def seeds_run(args, overrides: dict, work: Path) -> dict:
    validation, other = read_rows(VALIDATION), read_rows(OUT_OF_DOMAIN)
    truth = {"validation": [int(r["star_rating"]) for r in validation],
             "out_of_domain": [int(r["star_rating"]) for r in other]}
    runs, members = [], {"validation": [], "out_of_domain": []}
    for seed in args.seeds:
        output = work / f"seed-{seed}"
        run = train(TRAIN, VALIDATION, output, seed, overrides)
        run["seed"] = seed
        for part, rows in (("validation", validation), ("out_of_domain", other)):
            members[part].append(star_probabilities(output, rows))
            run[part] = scores(truth[part], best_stars(members[part][-1]))
        runs.append(run)
        print(f"seed {seed}: validation {run['validation']}, out of domain {run['out_of_domain']}, "
              f"{run['seconds']:.0f} s", flush=True)
    # The seeds' models as one ensemble (mean probabilities): what averaging buys, for its training time.
    ensemble = {part: scores(truth[part], best_stars(averaged(members[part]))) for part in members}
    return {"runs": runs, "validation": summary([r["validation"] for r in runs]),
            "out_of_domain": summary([r["out_of_domain"] for r in runs]), "ensemble": ensemble,
            "minutes_per_run": statistics.mean(r["seconds"] for r in runs) / 60}


def cross_validation(args, overrides: dict, work: Path) -> dict:
    from sklearn.model_selection import StratifiedKFold

    from nlpforge.evaluation.baseline import fit_baseline

    rows = read_rows(TRAIN) + read_rows(VALIDATION)
    stars = [int(r["star_rating"]) for r in rows]
    folds = StratifiedKFold(n_splits=args.cv, shuffle=True, random_state=0).split(rows, stars)
    model_scores, baseline_scores = [], []
    for number, (train_at, test_at) in enumerate(folds):
        fold_train = work / f"fold-{number}-train.csv"
        with open(fold_train, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows[i] for i in train_at)
        test = [rows[i] for i in test_at]
        truth = [stars[i] for i in test_at]
        train(fold_train, None, work / f"fold-{number}", args.seeds[0], overrides)  # best epoch: 10% of its train
        model_scores.append(scores(truth, predicted_stars(work / f"fold-{number}", test)))
        baseline = fit_baseline([rows[i]["review_body"] for i in train_at], [stars[i] for i in train_at])
        baseline_scores.append(scores(truth, [int(s) for s in baseline.predict([r["review_body"] for r in test])]))
        print(f"fold {number}: model {model_scores[-1]}, baseline {baseline_scores[-1]}", flush=True)
    return {"folds": args.cv, "rows": len(rows), "model": summary(model_scores), "baseline": summary(baseline_scores),
            "model_folds": model_scores, "baseline_folds": baseline_scores}


def summary(measured: list[dict]) -> dict:
    return {key: {"mean": statistics.mean(m[key] for m in measured),
                  "std": statistics.stdev(m[key] for m in measured) if len(measured) > 1 else 0.0}
            for key in measured[0]}


def cell(stat: dict, digits: int = 3) -> str:
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def parse_overrides(pairs: list[str]) -> dict:
    overrides = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="training settings changed from the engine's defaults (flat names, as in a config file)")
    parser.add_argument("--name", default="default", help="the recipe's name in the results")
    parser.add_argument("--cv", type=int, default=0, help="also K-fold cross-validation on train + validation")
    parser.add_argument("--skip-seeds", action="store_true", help="only the cross-validation")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"needs {DATA}")
    overrides = parse_overrides(args.set)
    work = RESULTS / "flagship" / args.name
    work.mkdir(parents=True, exist_ok=True)
    report = {"machine": describe(), "name": args.name, "overrides": overrides, "seeds": args.seeds}
    if not args.skip_seeds:
        report["seeds_run"] = seeds_run(args, overrides, work)
    if args.cv:
        report["cross_validation"] = cross_validation(args, overrides, work)
    (RESULTS / f"flagship-{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)


def print_report(report: dict) -> None:
    print(f"\nmachine: {report['machine']}; recipe {report['name']}: {report['overrides'] or 'engine defaults'}")
    if "seeds_run" in report:
        run = report["seeds_run"]
        v, o = run["validation"], run["out_of_domain"]
        print("| recipe | seeds | val accuracy | val macro-F1 | val MAE (stars) | val within 1 star | "
              "out-of-domain accuracy | out-of-domain macro-F1 | minutes per run |")
        print("|---|---|---|---|---|---|---|---|---|")
        print(f"| {report['name']} | {len(run['runs'])} | {cell(v['accuracy'])} | {cell(v['macro_f1'])} | "
              f"{cell(v['mae'], 2)} | {cell(v['within_one'])} | {cell(o['accuracy'])} | {cell(o['macro_f1'])} | "
              f"{run['minutes_per_run']:.1f} |")
        if "ensemble" in run and len(run["runs"]) > 1:
            v, o = run["ensemble"]["validation"], run["ensemble"]["out_of_domain"]
            print(f"| {report['name']}, ensemble of the {len(run['runs'])} | 1 | {v['accuracy']:.3f} | "
                  f"{v['macro_f1']:.3f} | {v['mae']:.2f} | {v['within_one']:.3f} | {o['accuracy']:.3f} | "
                  f"{o['macro_f1']:.3f} | {len(run['runs']) * run['minutes_per_run']:.1f} |")
    if "cross_validation" in report:
        cv = report["cross_validation"]
        print(f"\n{cv['folds']}-fold cross-validation on {cv['rows']:,} reviews (train + validation)")
        print("| model | accuracy | macro-F1 | MAE (stars) | within 1 star |")
        print("|---|---|---|---|---|")
        for name, key in ((report["name"], "model"), ("TF-IDF + LR", "baseline")):
            s = cv[key]
            print(f"| {name} | {cell(s['accuracy'])} | {cell(s['macro_f1'])} | {cell(s['mae'], 2)} | "
                  f"{cell(s['within_one'])} |")
        gain = {k: cv["model"][k]["mean"] - cv["baseline"][k]["mean"] for k in ("accuracy", "macro_f1")}
        print(f"model - baseline: accuracy {gain['accuracy']:+.3f}, macro-F1 {gain['macro_f1']:+.3f}")


if __name__ == "__main__":
    main()
