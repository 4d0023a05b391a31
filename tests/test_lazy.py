"""Lazy data: a memory-mapped Arrow copy, tokenized on the fly; start-up and memory stay flat."""
import json
import subprocess
import sys
import textwrap

import pytest

from conftest import toy_rows, write_csv
from nlpforge.data.labelled import load_labelled
from nlpforge.errors import DataError

PROBE = textwrap.dedent("""
    import json, sys, time
    start = time.perf_counter()
    from nlpforge.training.run import train
    from nlpforge.training.settings import job_class
    marks = {}
    def on_step(step):
        if step == 1:
            marks["first_step"] = time.perf_counter() - start
            marks["anon_mb"] = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssAnon")) / 1024
    train(job_class("text-classification").of(
        train=sys.argv[1], validation=sys.argv[2], output=sys.argv[3], model="bert-tiny", epochs=1, max_steps=2,
        batch_size=8, max_seq_length=16, data_loading="lazy", progress=False, log_every=0), log=lambda *_: None,
        on_step=on_step)
    print(json.dumps(marks))
""")


def _big_csv(path, rows: int):
    """Review-sized rows (~300 characters), so the file dwarfs any per-row bookkeeping."""
    base = toy_rows(1000, seed=3)
    padding = " ".join(["the plot and the acting of this film were discussed at length"] * 5)
    with open(path, "w") as handle:
        handle.write("text,label\n")
        for i in range(rows):
            row = base[i % 1000]
            handle.write(f"{row['text']} {padding} {i},{row['label']}\n")
    return path


def test_lazy_splits_match_the_in_memory_ones(tmp_path):
    rows = toy_rows(50) + [{"text": "", "label": "pos"}, {"text": "<b>x</b> &amp; y", "label": "neg"}]
    train = write_csv(tmp_path / "t.csv", rows)
    validation = write_csv(tmp_path / "v.csv", toy_rows(10, seed=4))
    eager = load_labelled(train, validation, text_columns="text", label_column="label")
    lazy = load_labelled(train, validation, text_columns="text", label_column="label", lazy=True)
    assert lazy.labels == eager.labels
    assert list(lazy.train.texts) == eager.train.texts
    assert list(lazy.train.label_ids) == eager.train.label_ids
    assert list(lazy.validation.texts) == eager.validation.texts
    assert lazy.files[0].empty_dropped == 1


def test_lazy_errors_name_the_file(tmp_path):
    train = write_csv(tmp_path / "t.csv", toy_rows(20))
    with pytest.raises(DataError, match="no column 'body'"):
        load_labelled(train, text_columns="body", label_column="label", lazy=True)
    bad = write_csv(tmp_path / "v.csv", toy_rows(4) + [{"text": "hmm", "label": "maybe"}])
    with pytest.raises(DataError, match=r"v.csv: data row 5: label 'maybe' never appears"):
        load_labelled(train, bad, text_columns="text", label_column="label", lazy=True)


@pytest.mark.slow
def test_time_to_first_step_and_memory_do_not_grow_with_the_file(tmp_path):
    validation = write_csv(tmp_path / "val.csv", toy_rows(20, seed=5))
    results = {}
    for rows in (1_000, 400_000, "400000-again"):
        train = tmp_path / "train-400000.csv" if rows == "400000-again" else _big_csv(tmp_path / f"train-{rows}.csv", rows)
        done = subprocess.run([sys.executable, "-c", PROBE, str(train), str(validation), str(tmp_path / f"m{rows}")],
                              capture_output=True, text=True, timeout=300,
                              env={**__import__("os").environ, "NLPFORGE_CACHE": str(tmp_path / "cache")})
        assert done.returncode == 0, done.stderr
        results[rows] = json.loads(done.stdout.strip().splitlines()[-1])
    small, large, again = results[1_000], results[400_000], results["400000-again"]
    file_mb = (tmp_path / "train-400000.csv").stat().st_size / 2**20
    assert file_mb > 100
    # 400x the rows: the heap grows by per-row indices only, a small fraction of the file (which
    # pandas alone would hold several times over).
    assert large["anon_mb"] - small["anon_mb"] < 0.5 * file_mb, (results, file_mb)
    # The one-off Arrow copy is the only start-up cost that grows with the file; once cached,
    # the start is as quick as a 1k-row file's (with slack for a busy 2-core machine).
    assert again["first_step"] < 1.5 * small["first_step"] + 10, results
