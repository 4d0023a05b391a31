"""Bad options and files given to `nlpforge train <task>`: worker and thread counts no machine has, base model
folders that are damaged or not laid out as BERT, a CSV whose first row holds an unquoted separator, a masked-LM
model written into its own corpus, hand-edited checkpoints, and held-out files that are the training data. Each
ends in one line naming the problem and the fix (or, for the held-out files, a warning), never a traceback.
"""
import shutil

import pytest

from conftest import toy_rows, write_csv
from nlpforge.errors import ConfigError, DataError
from nlpforge.training.settings import job_class
from test_cli_bad_input import run_in_process
from test_cli_bad_input_more import assert_one_line

TRAIN = ["--max-steps", "1", "--batch-size", "8", "--max-seq-length", "16", "--no-progress", "--output", "model-out"]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """Untrained two-layer base folders in Hugging Face format: BERT's layout and DistilBERT's."""
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

    from nlpforge.models.registry import load_tokenizer, resolve_base

    folder = tmp_path_factory.mktemp("bases")
    tokenizer = load_tokenizer(resolve_base("bert-tiny"))
    for name, model in (("bert", BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                                      num_attention_heads=2, intermediate_size=64))),
                        ("distilbert", DistilBertModel(DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2,
                                                                        n_heads=2, hidden_dim=64)))):
        model.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
    return folder


@pytest.fixture
def toy(tmp_path, monkeypatch):
    write_csv(tmp_path / "train.csv", toy_rows(24))
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- counts of threads and worker processes -----------------------------------------------------------------

@pytest.mark.parametrize("setting, value, words", [
    ("num_workers", 10**12, "num-workers must be between 0 and 64, not 1000000000000"),
    ("threads", 10**12, "threads must be between 1 and 256, not 1000000000000"),
])
def test_worker_and_thread_counts_are_bounded_before_any_process_starts(setting, value, words):
    # Unbounded, --num-workers forked DataLoader workers until memory ran out, and --threads overflowed in torch.
    with pytest.raises(ConfigError, match=words):
        job_class("text-classification").of(train="t.csv", output="m", **{setting: value})


def test_a_precision_the_device_lacks_is_one_line_before_launching_processes(toy, capsys):
    code, out, err = run_in_process(["train", "text-classification", "--train", "train.csv", "--model", "bert-tiny",
                                     "--nproc", "2", "--device", "cpu", "--precision", "fp16", *TRAIN], capsys)
    assert_one_line(code, out, err, "fp16 needs a CUDA GPU", "--precision bf16 or fp32")
    assert "launching" not in out  # before, each of the processes torchrun started said so, then torchrun


# --- bases not laid out as BERT -----------------------------------------------------------------------------

def test_a_base_without_bert_layers_trains_unfrozen_and_refuses_freeze_layers(bases):
    from transformers import DistilBertForSequenceClassification

    from nlpforge.models.frozen import frozen_layer_count

    model = DistilBertForSequenceClassification.from_pretrained(bases / "distilbert", num_labels=2)
    assert frozen_layer_count(model, None, pretrained=True) == 0  # the classifier's default: freeze what it can
    with pytest.raises(ConfigError, match="--freeze-layers 1 needs an encoder of BERT's layout .* is 'distilbert'; "
                                          "use --freeze-layers 0"):
        frozen_layer_count(model, 1, pretrained=True)


def test_a_distilbert_base_gets_one_line_for_freeze_layers(bases, toy, capsys):
    (toy / "t.conll").write_text("Ann\tB-PER\nsat\tO\n\nBob\tB-PER\nran\tO\n\nEve\tB-PER\nate\tO\n")
    code, out, err = run_in_process(["train", "token-classification", "--train", "t.conll", "--model",
                                     bases / "distilbert", "--freeze-layers", "1", *TRAIN], capsys)
    assert_one_line(code, out, err, "--freeze-layers 1 needs an encoder of BERT's layout", "use --freeze-layers 0")


# --- damaged base folders -----------------------------------------------------------------------------------

def damage_config(folder):
    (folder / "config.json").write_text("{not json")


def config_list(folder):
    (folder / "config.json").write_text("[1, 2]")


def truncate_weights(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def remove_weights(folder):
    (folder / "model.safetensors").unlink()


def damage_tokenizer(folder):
    (folder / "tokenizer.json").write_text("garbage")


def resize_config(folder):
    import json

    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 16}))


@pytest.mark.parametrize("damage, words", [
    (damage_config, ["base/config.json is not a JSON object", "name another --model folder"]),
    (config_list, ["base/config.json is not a JSON object"]),
    (truncate_weights, ["base/model.safetensors: damaged", "restore the file or name another --model"]),
    (remove_weights, ["base: cannot load weights or tokenizer", "restore the folder or name another --model"]),
    (damage_tokenizer, ["base: cannot load weights or tokenizer", "restore the folder or name another --model"]),
    # before, the encoder was initialised at random without a word, as a head of another shape is
    (resize_config, ["base: the weights do not fit config.json", "restore config.json or name another --model"]),
], ids=["config-not-json", "config-a-list", "weights-truncated", "weights-missing", "tokenizer-damaged",
        "config-resized"])
def test_a_damaged_base_folder_is_one_line(bases, toy, capsys, damage, words):
    shutil.copytree(bases / "bert", toy / "base")
    damage(toy / "base")
    code, out, err = run_in_process(["train", "text-classification", "--train", "train.csv", "--model", "base",
                                     *TRAIN], capsys)
    assert_one_line(code, out, err, *words)
    assert not (toy / "model-out").exists()


# --- a CSV row with more fields than the header -------------------------------------------------------------

def test_a_first_row_with_an_unquoted_separator_is_named_not_read_as_an_index(tmp_path, capsys, monkeypatch):
    from nlpforge.data.readers import read_table

    rows = toy_rows(24)
    (tmp_path / "extra.csv").write_text("text,label\nwhat a film, really,pos\n"
                                        + "".join(f"{row['text']},{row['label']}\n" for row in rows))
    with pytest.raises(DataError, match="extra.csv: cannot be read as csv: data row 1 has more fields than the "
                                        "header's 2; quote a text that holds the separator ','"):
        read_table(tmp_path / "extra.csv", columns=["text", "label"])
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process(["train", "text-classification", "--train", "extra.csv", "--model", "bert-tiny",
                                     *TRAIN], capsys)
    assert_one_line(code, out, err, "data row 1 has more fields than the header's 2")


def test_row_names_before_every_row_are_still_read(tmp_path):
    from nlpforge.data.readers import read_table

    # R's write.table: a header without the row names' column
    (tmp_path / "r.csv").write_text('"text","label"\n"1","good, film","pos"\n"2","bad","neg"\n')
    table = read_table(tmp_path / "r.csv", columns=["text", "label"])
    assert table.frame["text"].tolist() == ["good, film", "bad"]


def test_row_names_with_old_mac_line_endings_and_long_texts_are_still_read(tmp_path):
    # The count of fields per row reads the text as csv does: a lone \r ends a row, and a review may be longer than
    # csv's 128 kB default field limit, in a fresh process that has not imported the corpus reader.
    import subprocess
    import sys

    long = "word " * 30_000
    (tmp_path / "r.csv").write_bytes(f'text,label\r1,"{long}",pos\r2,bad film,neg\r3,good film,pos\r'.encode())
    read = subprocess.run([sys.executable, "-c", "from nlpforge.data.readers import read_table; "
                           f"print(read_table({str(tmp_path / 'r.csv')!r}).frame['label'].tolist())"],
                          capture_output=True, text=True, timeout=120)
    assert read.stdout.strip() == "['pos', 'neg', 'pos']", read.stderr


# --- outputs kept apart from every data setting -------------------------------------------------------------

@pytest.mark.parametrize("output", ["corpus/model", "corpus"])
def test_masked_lm_output_inside_its_corpus_folder_is_refused(tmp_path, monkeypatch, capsys, output):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "text.txt").write_text("A first sentence. A second one.\n\nAnother document here.\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process(["train", "masked-lm", "--corpus", "corpus", "--model", "bert-tiny",
                                     "--overwrite", *TRAIN[:-2], "--output", output], capsys)
    assert_one_line(code, out, err, f"--output {output}:", "the input corpus", "choose a path apart from the inputs")
    assert sorted(p.name for p in (tmp_path / "corpus").iterdir()) == ["text.txt"]


def test_masked_lm_checkpoints_inside_its_corpus_folder_are_refused(tmp_path, monkeypatch, capsys):
    # Before, the first run wrote them there, and its resume then read MANIFEST.json as a corpus file.
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "text.txt").write_text("A first sentence. A second one.\n\nAnother document here.\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process(["train", "masked-lm", "--corpus", "corpus", "--model", "bert-tiny",
                                     "--checkpoint-dir", "corpus/checkpoints", *TRAIN], capsys)
    assert_one_line(code, out, err, "--checkpoint-dir corpus/checkpoints is inside the input corpus",
                    "choose a folder outside it")
    assert sorted(p.name for p in (tmp_path / "corpus").iterdir()) == ["text.txt"]


def test_a_column_named_like_a_folder_here_is_no_input_folder(toy, capsys):
    # Only the data files (train, validation, test, a corpus) are inputs to keep outputs and checkpoints out of: a
    # folder that shares the text column's name is not one.
    (toy / "text").mkdir()
    code, out, err = run_in_process(["train", "text-classification", "--train", "train.csv", "--model", "bert-tiny",
                                     "--text-column", "text", "--checkpoint-dir", "text/checkpoints", *TRAIN], capsys)
    assert code == 0, err


def test_a_column_name_too_long_for_a_file_name_is_not_a_traceback(toy, capsys):
    code, out, err = run_in_process(["train", "text-classification", "--train", "train.csv", "--model", "bert-tiny",
                                     "--label-column", "x" * 5000, *TRAIN], capsys)
    assert code != 0 and "Traceback" not in out + err
    assert err.startswith("error: [E100] train.csv: no column 'xxx") and len(err.strip().splitlines()) == 1


# --- held-out files that are the training data --------------------------------------------------------------

def test_a_test_file_that_is_the_training_file_is_warned_about(tmp_path):
    from nlpforge.training.run import warn_if_held_out_is_training_data

    train = write_csv(tmp_path / "train.csv", toy_rows(24))
    lines = []
    job = job_class("text-classification").of(train=str(train), test=str(train), output=str(tmp_path / "m"))
    warn_if_held_out_is_training_data(job.data, lines.append)
    assert lines == [f"warning: --test {train} is also training data (--train {train}), so the test metrics measure "
                     "what the model has seen; give a held-out file"]


# --- checkpoints edited by hand -----------------------------------------------------------------------------

@pytest.mark.parametrize("files, problem", [
    ({"state.json": "{}"}, "state.json lacks entries"),
    ({"state.json": "[]"}, "state.json lacks entries"),
    ({"state.json": "{}", "MANIFEST.json": "[1]"}, "MANIFEST.json does not give each file's bytes and sha256"),
    ({"state.json": "{}", "MANIFEST.json": '{"model.safetensors": 5}'},
     "MANIFEST.json does not give each file's bytes and sha256"),
], ids=["state-empty", "state-a-list", "manifest-a-list", "manifest-entry-a-number"])
def test_a_checkpoint_of_the_wrong_shape_is_damaged_not_a_traceback(tmp_path, files, problem):
    from nlpforge.training.checkpoint import find_checkpoint

    step = tmp_path / "step-00000001"
    step.mkdir()
    (step / "COMPLETE").write_text("ok\n")
    for name, text in files.items():
        (step / name).write_text(text)
    with pytest.raises(ConfigError, match=f"is damaged \\({problem}\\)"):
        find_checkpoint(str(step), tmp_path, log=lambda *_: None)


# --- a masked-LM corpus read as one document ----------------------------------------------------------------

def test_masked_lm_on_one_text_document_names_the_document_boundary(tmp_path, monkeypatch, capsys):
    # Two-sentence blocks between blank lines: auto reads the file as one document with short paragraphs.
    (tmp_path / "short.txt").write_text("\n\n".join(f"Sentence {i} here.\nAnd one more {i}." for i in range(6)) + "\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process(["train", "masked-lm", "--corpus", "short.txt", "--model", "bert-tiny",
                                     *TRAIN], capsys)
    assert_one_line(code, out, err, "short.txt: 1 document", "--document-boundary blank-line (or line)")


# --- files of tagged sentences and questions that hold none -------------------------------------------------

def test_squad_answers_found_nowhere_in_their_context_are_named(tmp_path):
    import json

    from nlpforge.data.squad import read_squad

    qas = [{"id": f"q{i}", "question": "What is the code?", "answers": [{"text": "amber", "answer_start": 4}]}
           for i in range(3)]
    (tmp_path / "q.json").write_text(json.dumps({"data": [{"paragraphs": [{"context": "The code is birch.",
                                                                           "qas": qas}]}]}))
    with pytest.raises(DataError, match="q.json: no questions with answers: the text of each of its 3 answers occurs "
                                        "nowhere in its context"):
        read_squad(tmp_path / "q.json")


def test_an_empty_jsonl_file_of_tagged_sentences_is_described_as_jsonl(tmp_path):
    from nlpforge.data.sequences import read_tagged

    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r'e.jsonl: no tagged sentences; a JSONL file holds one \{"tokens": '):
        read_tagged(tmp_path / "e.jsonl")
