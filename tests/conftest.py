"""Shared fixtures: toy labelled files, the shared data folder, and skip markers."""
import csv
import os
import random
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NLPFORGE_SHARED_DATA", ROOT.parent / "shared" / "data"))
AMAZON = SHARED_DATA / "amazon_reviews"

POSITIVE = ["great", "excellent", "wonderful", "superb", "love", "fantastic"]
NEGATIVE = ["awful", "terrible", "boring", "worst", "hate", "dreadful"]
FILLER = ["the", "movie", "was", "a", "film", "plot", "really", "and", "it", "acting", "story", "this"]


def toy_rows(n: int, seed: int = 0, labels=("neg", "pos")) -> list[dict]:
    """A separable task: a positive row holds a word from POSITIVE, a negative one from NEGATIVE."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % 2]
        words = rng.sample(FILLER, 5) + [rng.choice(POSITIVE if label == labels[1] else NEGATIVE)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_csv(path: Path, rows: list[dict], fieldnames=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def toy_files(tmp_path):
    """(train.csv, validation.csv) of the separable toy task, string labels."""
    return write_csv(tmp_path / "train.csv", toy_rows(240, seed=1)), write_csv(tmp_path / "val.csv", toy_rows(60, seed=2))


@pytest.fixture
def amazon():
    if not AMAZON.is_dir():
        pytest.skip(f"shared data not found at {AMAZON} (set NLPFORGE_SHARED_DATA to its folder)")
    return AMAZON


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A bert-tiny classifier trained once on the toy task, shared by read-only tests."""
    from nlpforge.training.config import TextClassificationConfig
    from nlpforge.training.text_classification import train_text_classification

    folder = tmp_path_factory.mktemp("tiny")
    train = write_csv(folder / "train.csv", toy_rows(240, seed=1))
    validation = write_csv(folder / "val.csv", toy_rows(60, seed=2))
    result = train_text_classification(TextClassificationConfig(
        train=str(train), validation=str(validation), output=str(folder / "model"), model="bert-tiny",
        epochs=6, learning_rate=2e-3, batch_size=16, max_seq_length=32, warmup_ratio=0.1, progress=False,
        seed=0), log=lambda *_: None)
    return result
