"""BERT pre-training: BERT's instance and masking rules measured, a planted regularity learned, exact
resume, the folder a classifier starts from, fill-mask on every path, and the errors for bad input."""
import json
import random
import signal
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from safetensors.torch import load_file

from conftest import assert_user_error, run_cli, toy_rows, write_csv
from nlpforge import load
from nlpforge.errors import ConfigError, DataError, InputError
from nlpforge.data.pretraining import build_instances, mask_tokens, truncate_pair
from nlpforge.training import checkpoint as ckpt
from nlpforge.models.artifact import training_folder
from nlpforge.training.run import train
from nlpforge.training.settings import job_class

COLOURS = "red green blue yellow black white orange purple brown pink gray gold silver violet cyan".split()


def masked_lm_job(**values):
    return job_class("masked-lm").of(**values)


def planted_corpus(path, documents: int, seed: int = 0):
    """Documents of sentences that repeat one colour word: a masked word is its neighbours' word."""
    rng = random.Random(seed)
    blocks = []
    for _ in range(documents):
        sentences = []
        for _ in range(rng.randint(2, 5)):
            sentences.append(" ".join([rng.choice(COLOURS)] * rng.randint(5, 10)) + " .")
        blocks.append("\n".join(sentences))
    path.write_text("\n\n".join(blocks) + "\n")
    return path


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    return planted_corpus(tmp_path_factory.mktemp("corpus") / "colours.txt", 300)


@pytest.fixture(scope="module")
def tiny_mlm(small_corpus, tmp_path_factory):
    """A bert-tiny masked-LM folder (a few steps: enough to have every file, not to be good)."""
    output = tmp_path_factory.mktemp("mlm") / "model"
    return train(masked_lm_job(corpus=[str(small_corpus)], model="bert-tiny", output=str(output), epochs=1,
                               max_steps=4, batch_size=8, max_seq_length=32, progress=False, log_every=1,
                               max_eval_instances=50), log=lambda *_: None)


def test_the_80_10_10_rule_over_100k_masked_positions():
    rng = np.random.default_rng(0)
    random_ids = np.arange(1000, 30000)
    masked_total = mask = kept = replaced = candidates_total = 0
    while masked_total < 100_000:
        ids = rng.integers(1000, 30000, size=128)
        words = np.arange(128)
        words[0] = words[-1] = -1  # [CLS] and [SEP] are never masked
        masked, labels = mask_tokens(ids, words, rng, 0.15, 1000, mask_id=103, random_ids=random_ids,
                                     whole_word=False)
        chosen = labels != -100
        assert not chosen[0] and not chosen[-1]
        masked_total += chosen.sum()
        candidates_total += 126
        mask += (masked[chosen] == 103).sum()
        kept += (masked[chosen] == ids[chosen]).sum()
        replaced += ((masked[chosen] != 103) & (masked[chosen] != ids[chosen])).sum()
        assert (labels[chosen] == ids[chosen]).all() and (masked[~chosen] == ids[~chosen]).all()
    assert abs(mask / masked_total - 0.8) < 0.01
    assert abs(kept / masked_total - 0.1) < 0.01
    assert abs(replaced / masked_total - 0.1) < 0.01
    assert abs(masked_total / candidates_total - 0.15) < 0.005


def test_masking_caps_predictions_and_keeps_whole_words_together():
    rng = np.random.default_rng(1)
    ids = np.arange(2000, 2100)
    words = np.repeat(np.arange(25), 4)  # 25 words of 4 pieces each
    _, labels = mask_tokens(ids, words, rng, 0.5, 20, 103, np.arange(1000, 2000), whole_word=True)
    chosen = np.flatnonzero(labels != -100)
    assert len(chosen) == 20
    assert all(set(np.flatnonzero(words == w)) <= set(chosen) for w in set(words[chosen]))


def test_nsp_labels_are_half_random_and_pairs_are_well_formed():
    rng = np.random.default_rng(2)
    spans, start = [], 0
    for _ in range(4000):
        size = int(rng.integers(2, 12))
        spans.append((start, start + size))
        start += size
    tokens = rng.integers(5, 40, size=start)
    plan = build_instances(spans, tokens, 128, 0.1, True, seed=3)
    assert abs(plan.random_next.mean() - 0.5) < 0.02
    assert (plan.a_end > plan.a_start).all() and (plan.b_end > plan.b_start).all()
    document = {row: d for d, (s, e) in enumerate(spans) for row in range(s, e)}
    real = plan.random_next == 0
    # A real pair's B follows A in the same document; a random one's B comes from another document.
    assert (plan.b_start[real] == plan.a_end[real]).all()
    assert all(document[a] == document[b] for a, b in zip(plan.a_start[real], plan.b_start[real]))
    assert np.mean([document[a] != document[b] for a, b in zip(plan.a_start[~real], plan.b_start[~real])]) > 0.99
    # short_seq_prob: about a tenth of documents aim at a shorter target.
    assert (plan.tokens < 60).mean() > 0.05


def test_truncation_trims_the_longer_segment():
    rng = np.random.default_rng(0)
    keep_a, keep_b = truncate_pair(list(range(100)), list(range(10)), 50, rng)
    assert (keep_a.stop - keep_a.start, keep_b.stop - keep_b.start) == (40, 10)


def test_a_two_layer_model_learns_the_planted_regularity(tmp_path):
    corpus = planted_corpus(tmp_path / "colours.txt", 2000)
    result = train(masked_lm_job(corpus=[str(corpus)], model="bert-tiny", output=str(tmp_path / "m"), epochs=2,
                                 batch_size=32, max_seq_length=32, learning_rate=3e-3, warmup_ratio=0.05, nsp=False,
                                 max_eval_instances=300, progress=False, log_every=0), log=lambda *_: None)
    counts = Counter(corpus.read_text().split())
    frequency_baseline = max(counts.values()) / sum(counts.values())
    assert frequency_baseline < 0.2
    assert result.metrics["validation_mlm_accuracy"] > frequency_baseline + 0.3  # measured: 0.60 against 0.12
    history = [h["validation_mlm_accuracy"] for h in result.history]
    assert history[-1] > history[0]


def _mlm_args(corpus, output, *extra) -> list[str]:
    return ["train", "masked-lm", "--corpus", str(corpus), "--output", str(output), "--model", "bert-tiny",
            "--epochs", "2", "--batch-size", "8", "--max-seq-length", "32", "--no-progress", "--log-every", "1",
            "--threads", "1", "--max-eval-instances", "40", *extra]


def _curve(folder):
    return [(r["step"], r.get("loss"), r.get("validation_mlm_accuracy"))
            for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())]


def test_resume_after_sigkill_is_bit_exact_for_masked_lm(tmp_path):
    from test_engine import _wait_for_step

    corpus = planted_corpus(tmp_path / "colours.txt", 120)
    reference = subprocess.run([sys.executable, "-m", "nlpforge", *_mlm_args(
        corpus, tmp_path / "reference", "--checkpoint-every", "3", "--checkpoint-dir", str(tmp_path / "ck-ref"))],
        capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr
    steps = max(step for step, _, _ in _curve(tmp_path / "reference"))
    args = _mlm_args(corpus, tmp_path / "interrupted", "--checkpoint-every", "3", "--checkpoint-dir",
                     str(tmp_path / "ck"), "--resume", "auto")
    process = subprocess.Popen([sys.executable, "-m", "nlpforge", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    kill_at = steps // 2 + 2  # in epoch 2, between two checkpoints
    _wait_for_step(training_folder(tmp_path / "interrupted") / "metrics.jsonl", kill_at, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert not (tmp_path / "interrupted" / "nlpforge.json").exists(), "the run finished before the kill"
    assert ckpt.complete_checkpoints(tmp_path / "ck")
    resumed = subprocess.run([sys.executable, "-m", "nlpforge", *args], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    assert _curve(tmp_path / "interrupted") == _curve(tmp_path / "reference")
    first = load_file(str(tmp_path / "reference" / "model.safetensors"))
    second = load_file(str(tmp_path / "interrupted" / "model.safetensors"))
    assert all((first[k] == second[k]).all() for k in first)


def test_the_folder_is_bert_for_pretraining_and_a_classifier_starts_from_it(tiny_mlm, tmp_path):
    folder = tiny_mlm.output
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["BertForPreTraining"] and config["model_type"] == "bert"
    meta = json.loads((folder / "nlpforge.json").read_text())
    assert meta["task"] == "masked-lm" and {"validation_mlm_accuracy", "validation_perplexity",
                                             "validation_nsp_accuracy"} <= set(meta["metrics"])
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert any("validation_perplexity" in row for row in rows)
    assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
    from transformers import BertForPreTraining

    BertForPreTraining.from_pretrained(str(folder))  # transformers reads it as what it says it is
    train_csv = write_csv(tmp_path / "train.csv", toy_rows(80, seed=1))
    result = train(job_class("text-classification").of(train=str(train_csv), output=str(tmp_path / "clf"),
                                                       model=str(folder), epochs=1, max_seq_length=16,
                                                       batch_size=16, progress=False), log=lambda *_: None)
    encoder = load_file(str(folder / "model.safetensors"))["bert.encoder.layer.0.attention.self.query.weight"]
    started = load_file(str(result.output / "model.safetensors"))["bert.encoder.layer.0.attention.self.query.weight"]
    assert (encoder - started).abs().max() < 0.05  # fine-tuned from the pre-trained encoder, not from scratch


def test_fill_mask_from_python_cli_and_file(tiny_mlm, tmp_path):
    model = load(tiny_mlm.output)
    answer = model.predict("red red [MASK] red .")[0]
    assert [m["position"] for m in answer["masks"]] == [3]
    predictions = answer["masks"][0]["predictions"]
    assert len(predictions) == 5 and predictions[0]["score"] >= predictions[-1]["score"]
    assert model.predict([{"text": "[MASK] and [MASK]", "top_k": 2}])[0]["masks"][1]["predictions"][1]["token"]
    done = run_cli(["predict", tiny_mlm.output, "the [MASK] was good ."])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["masks"][0]["position"] == 2
    assert_user_error(run_cli(["predict", tiny_mlm.output, "no mask here"]), "has no [MASK] token")
    with pytest.raises(InputError, match="top_k must be an integer"):
        model.predict([{"text": "[MASK]", "top_k": 0}])


def test_fill_mask_is_served_with_dynamic_batching(tiny_mlm, tmp_path):
    from serving_support import inference, management, metric, running_server

    with running_server(tmp_path / "store", auth=False, batch_size=8, max_batch_delay=50) as server:
        response = management(server).post("/models", params={"url": str(tiny_mlm.output), "model_name": "mlm"})
        assert response.status_code == 200, response.text
        client = inference(server)
        answers = client.post("/predictions/mlm", json=[{"text": f"red [MASK] {i} ."} for i in range(6)]).json()
        assert len(answers) == 6 and all(len(a["masks"]) == 1 for a in answers)
        assert metric(server, "nlpforge_batch_size_count", model="mlm") >= 1
        bad = client.post("/predictions/mlm", json={"text": "nothing to fill"})
        assert bad.status_code == 400 and "[MASK]" in bad.json()["message"]


@pytest.fixture
def one_sentence_documents(tmp_path):
    return write_csv(tmp_path / "tweets.csv", [{"text": f"one short post number {i}"} for i in range(40)])


def test_bad_input_gets_clear_errors(tmp_path, one_sentence_documents, tiny_mlm):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n\n")
    assert_user_error(run_cli(["train", "masked-lm", "--corpus", empty, "--output", tmp_path / "a",
                               "--model", "bert-tiny"]), "the corpus has no sentences")
    assert_user_error(run_cli(["train", "masked-lm", "--corpus", one_sentence_documents, "--output",
                               tmp_path / "b", "--model", "bert-tiny"]),
                      "all 40 documents have one sentence, so 0 real next-sentence pairs can be made")
    # A tokenizer whose vocabulary is not the model's.
    from nlpforge.text.wordpiece import WordPieceSettings, train_wordpiece

    small = train_wordpiece(WordPieceSettings.of(corpus=[str(one_sentence_documents)], output=str(tmp_path / "tok"),
                                                 vocab_size=100, min_frequency=1))
    assert_user_error(run_cli(["train", "masked-lm", "--corpus", one_sentence_documents, "--no-nsp", "--output",
                               tmp_path / "c", "--model", tiny_mlm.output, "--tokenizer", small]),
                      "the tokenizer has")
    # A base with no BERT encoder.
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 30522, "n_layer": 1}))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (tiny_mlm.output / name).exists():
            (gpt / name).write_bytes((tiny_mlm.output / name).read_bytes())
    assert_user_error(run_cli(["train", "masked-lm", "--corpus", one_sentence_documents, "--no-nsp", "--output",
                               tmp_path / "d", "--model", gpt]), "needs a BERT encoder")
    with pytest.raises(ConfigError, match="masked-lm-prob must be between"):
        masked_lm_job(corpus=["x"], output="o", masked_lm_prob=0)
    with pytest.raises(DataError, match="no such file"):
        train(masked_lm_job(corpus=[str(tmp_path / "absent.txt")], output=str(tmp_path / "e"), model="bert-tiny"))


def test_the_sdk_pretrains_and_tunes_on_masked_lm_accuracy(tmp_path, small_corpus, monkeypatch):
    import tarfile

    from nlpforge.sdk import MaskedLanguageModel
    from nlpforge.tuning import CategoricalParameter, HyperparameterTuner

    monkeypatch.setenv("NLPFORGE_TRACKING", "0")
    est = MaskedLanguageModel(base_model="bert-tiny", jobs_root=str(tmp_path / "jobs"),
                              hyperparameters={"epochs": 1, "max-steps": 6, "batch-size": 8, "max-seq-length": 32,
                                               "max-eval-instances": 40, "threads": 1})
    tuner = HyperparameterTuner(est, "validation_mlm_accuracy",
                                {"learning-rate": CategoricalParameter([1e-7, 3e-3])}, strategy="Grid",
                                max_parallel_jobs=2)
    tuner.fit({"train": str(small_corpus)}, job_name="mlm-tuning")
    frame = tuner.analytics().dataframe()
    assert len(frame) == 2 and set(frame["TrainingJobStatus"]) == {"Completed"}
    best = frame.loc[frame["FinalObjectiveValue"].idxmax()]
    assert tuner.best_training_job() == best["TrainingJobName"] and best["learning-rate"] == 3e-3
    archive = tuner.best_estimator().model_data
    with tarfile.open(archive) as tar:
        meta = json.load(tar.extractfile("nlpforge.json"))
    assert meta["task"] == "masked-lm" and meta["hyperparameters"]["corpus"][0].endswith("input/data/train")
    with pytest.raises(ConfigError, match="unknown MaskedLanguageModel hyperparameter"):
        MaskedLanguageModel(hyperparameters={"mask-rate": 0.2})


def test_time_to_the_first_step_does_not_grow_with_the_corpus(tmp_path):
    import time

    def first_step(corpus, name) -> float:
        started, marks = time.perf_counter(), []
        train(masked_lm_job(corpus=[str(corpus)], model="bert-tiny", output=str(tmp_path / name), max_steps=1,
                            batch_size=8, max_seq_length=32, max_eval_instances=20, progress=False, log_every=0),
              log=lambda *_: None, on_step=lambda step: marks.append(time.perf_counter() - started))
        return marks[0]

    small = planted_corpus(tmp_path / "small.txt", 1_000)
    big = planted_corpus(tmp_path / "big.txt", 20_000, seed=1)
    first_step(small, "a"), first_step(big, "b")  # the first use reads each corpus into the cache once
    assert first_step(big, "c") < 1.5 * first_step(small, "d") + 1.0
