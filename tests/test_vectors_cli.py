"""The corpus, vectors and tokenizer commands end to end; bad input is one line with no traceback."""
import json
import subprocess
import sys

import pytest

from conftest import assert_user_error, planted_sentences, run_cli
from test_cli import call  # runs `nlpforge ...` in-process: (exit code, stdout, stderr)


@pytest.fixture(scope="module")
def cli_vectors(relation_corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "vectors"
    code = subprocess.run([sys.executable, "-m", "nlpforge", "vectors", "train", "--corpus", str(relation_corpus),
                           "--output", str(folder), "--vector-size", "24", "--window", "8", "--min-count", "1",
                           "--epochs", "25", "--sample", "0", "--workers", "1", "--seed", "3",
                           "--phrase-passes", "0"], capture_output=True, text=True, timeout=300)
    assert code.returncode == 0, code.stderr
    assert "word vectors to" in code.stdout
    return folder


def test_vectors_queries(cli_vectors, capsys, tmp_path):
    code, out, err = call(capsys, "vectors", "analogy", "paris", "france", "berlin", "--vectors", cli_vectors)
    assert code == 0, err
    assert out.split("\t")[0] == "germany"
    code, out, _ = call(capsys, "vectors", "similar", "rome", "--topn", "3", "--vectors", cli_vectors)
    assert code == 0 and len(out.strip().splitlines()) == 3
    code, out, _ = call(capsys, "vectors", "distance", "paris", "berlin", "--vectors", cli_vectors)
    assert code == 0 and 0 <= float(out) < 2
    code, out, _ = call(capsys, "vectors", "evaluate", "--json", "--vectors", cli_vectors)
    assert code == 0 and json.loads(out)["similarity"]["wordsim353"]["pairs"] == 353
    code, out, _ = call(capsys, "vectors", "plot", "paris", "france", "berlin", "germany", "--output",
                        tmp_path / "map.png", "--vectors", cli_vectors)
    assert code == 0 and (tmp_path / "map.png").stat().st_size > 0


def test_corpus_commands(tmp_path, capsys):
    corpus = tmp_path / "planted.txt"
    corpus.write_text("\n".join(" ".join(s) for s in planted_sentences(3000)) + "\n")
    code, out, err = call(capsys, "corpus", "stats", "--corpus", corpus)
    assert code == 0, err
    assert "sentences  3,000" in out
    code, out, err = call(capsys, "corpus", "phrases", "--corpus", corpus, "--output", tmp_path / "phrases.json")
    assert code == 0, err
    assert "rio_de_janeiro" in out
    code, out, err = call(capsys, "corpus", "vocab", "--corpus", corpus, "--output", tmp_path / "vocab.tsv",
                          "--phrases", tmp_path / "phrases.json", "--held-out", corpus)
    assert code == 0, err
    assert "held-out OOV rate  0.00%" in out and "rio_de_janeiro\t" in (tmp_path / "vocab.tsv").read_text()
    (tmp_path / "hello.txt").write_text("hello, world!\n")
    code, out, err = call(capsys, "corpus", "tokenize", "--corpus", tmp_path / "hello.txt", "--format", "markers")
    assert code == 0 and out.strip() == "<BOS>hello<SP>world<SP>!<EOS>"


def test_tokenizer_train(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the movie was great and the acting superb\n" * 50)
    code, out, err = call(capsys, "tokenizer", "train", "--corpus", corpus, "--output", tmp_path / "tok",
                          "--vocab-size", "60", "--min-frequency", "1")
    assert code == 0, err
    assert "WordPiece tokenizer of" in out and (tmp_path / "tok" / "vocab.txt").is_file()


@pytest.mark.parametrize("args, message", [
    (["corpus", "stats", "--corpus", "absent.txt"], "absent.txt: no such file or folder"),
    (["vectors", "train", "--corpus", "empty.txt", "--output", "v"], "the corpus is empty"),
    (["vectors", "similar", "germny", "--vectors", "{vectors}"], "closest known spellings: germany"),
])
def test_bad_input_is_one_line_without_traceback(tmp_path, cli_vectors, args, message):
    (tmp_path / "empty.txt").write_text("\n<br />\n")
    args = [a.replace("{vectors}", str(cli_vectors)) for a in args]
    assert_user_error(run_cli(args, cwd=tmp_path), message)
