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
IMDB = SHARED_DATA / "imdb" / "imdb_50k.csv.gz"
BROWN = SHARED_DATA / "brown" / "brown_corpus.tar.gz"

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


def run_cli(args, cwd=None, timeout: int = 300):
    """`nlpforge ARGS` in a fresh process, as a user runs it."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "nlpforge", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def assert_user_error(result, message: str) -> None:
    """A user error: non-zero exit, one line on stderr that holds `message`, no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.fixture
def toy_files(tmp_path):
    """(train.csv, validation.csv) of the separable toy task, string labels."""
    return write_csv(tmp_path / "train.csv", toy_rows(240, seed=1)), write_csv(tmp_path / "val.csv", toy_rows(60, seed=2))


@pytest.fixture
def amazon():
    if not AMAZON.is_dir():
        pytest.skip(f"shared data not found at {AMAZON} (set NLPFORGE_SHARED_DATA to its folder)")
    return AMAZON


@pytest.fixture
def imdb():
    if not IMDB.is_file():
        pytest.skip(f"IMDB corpus not found at {IMDB} (set NLPFORGE_SHARED_DATA to the shared data folder)")
    return IMDB


@pytest.fixture
def brown():
    if not BROWN.is_file():
        pytest.skip(f"Brown corpus not found at {BROWN} (set NLPFORGE_SHARED_DATA to the shared data folder)")
    return BROWN


# Capitals and countries: each word is one "kind" (city or country) and one "nation". Sentences
# mix a word with marker words of its kind and of its nation, so in a word2vec space
# france - paris + berlin lands on germany: the relation the corpus holds.
NATIONS = {"french": ("paris", "france"), "german": ("berlin", "germany"), "italian": ("rome", "italy"),
           "spanish": ("madrid", "spain"), "polish": ("warsaw", "poland"), "greek": ("athens", "greece")}
KIND_MARKERS = ({"city": ["street", "mayor", "downtown", "tram", "district", "square"],
                 "country": ["nation", "border", "government", "province", "flag", "territory"]})
NATION_MARKERS = {nation: [f"{nation}{i}" for i in range(5)] for nation in NATIONS}


def relation_sentences(n: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        nation = rng.choice(list(NATIONS))
        kind = rng.randrange(2)
        word = NATIONS[nation][kind]
        words = [word] + rng.sample(KIND_MARKERS["city" if kind == 0 else "country"], 3) \
            + rng.sample(NATION_MARKERS[nation], 3)
        rng.shuffle(words)
        sentences.append(words)
    return sentences


@pytest.fixture(scope="session")
def relation_corpus(tmp_path_factory) -> Path:
    """A text file, one sentence a line, built to hold the capital-of relation (see NATIONS)."""
    path = tmp_path_factory.mktemp("relation") / "capitals.txt"
    path.write_text("\n".join(" ".join(s) for s in relation_sentences(4000)) + "\n", encoding="utf-8")
    return path


def planted_sentences(n: int, seed: int = 0) -> list[list[str]]:
    """Random words from a 400-word vocabulary; every fourth sentence holds « rio de janeiro »."""
    rng = random.Random(seed)
    words = [f"word{i}" for i in range(400)]
    sentences = []
    for i in range(n):
        sentence = rng.choices(words, k=10)
        if i % 4 == 0:
            at = rng.randrange(len(sentence))
            sentence[at:at] = ["rio", "de", "janeiro"]
        sentences.append(sentence)
    return sentences


@pytest.fixture(scope="session")
def tiny_vectors(tmp_path_factory) -> Path:
    """A small word2vec folder trained once on `planted_sentences`; tests that damage it work on copies."""
    from nlpforge.vectors.train import Word2VecSettings, train_vectors

    folder = tmp_path_factory.mktemp("vectors")
    (folder / "corpus.txt").write_text("\n".join(" ".join(s) for s in planted_sentences(60)) + "\n")
    train_vectors(Word2VecSettings.of(corpus=[str(folder / "corpus.txt")], output=str(folder / "vec"), min_count=1,
                                      vector_size=8, epochs=1, workers=1), log=lambda *_: None)
    return folder / "vec"


class Killed(Exception):
    """Stands in for a SIGKILL: the run stops between two checkpoints and saves nothing."""


def kill_at(step: int):
    """An on_step callback that kills the run just after optimizer step `step`."""
    def on_step(current: int) -> None:
        if current == step:
            raise Killed
    return on_step


def classifier_job(**values):
    """Settings of a text-classification training job, from flat names (as the CLI and config files give them)."""
    from nlpforge.training.settings import job_class

    return job_class("text-classification").of(**values)


def train_classifier(log=lambda *_: None, on_step=None, **values):
    """Train a text classifier with these settings, quietly."""
    from nlpforge.training.run import train

    return train(classifier_job(**values), log=log, on_step=on_step)


# The settings the pinned predictions (tests/data/pinned_text_classification.json) were made with.
TINY = dict(model="bert-tiny", epochs=6, learning_rate=2e-3, batch_size=16, max_seq_length=32, warmup_ratio=0.1,
            layer_lr_decay=1.0, progress=False, seed=0)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A bert-tiny classifier trained once on the toy task, shared by read-only tests."""
    folder = tmp_path_factory.mktemp("tiny")
    train = write_csv(folder / "train.csv", toy_rows(240, seed=1))
    validation = write_csv(folder / "val.csv", toy_rows(60, seed=2))
    return train_classifier(train=str(train), validation=str(validation), output=str(folder / "model"), **TINY)


@pytest.fixture(scope="session")
def ui_world(tmp_path_factory):
    """What the web app's browser tests look at (see ui_support.build_world), built once; the endpoint is
    deleted at the end of the session."""
    from ui_support import build_world

    world = build_world(tmp_path_factory.mktemp("ui-world"))
    yield world
    world["predictor"].delete_endpoint()
