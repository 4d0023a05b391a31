"""Bad arguments to the Python API (nlpforge.load(...).predict, the text and vectors functions): each is an nlpforge
error, or a TypeError/ValueError, whose one line names the argument and the fix; never an error from inside
transformers, tokenizers or gensim, and never a silently wrong answer."""
import shutil
from collections import Counter

import pytest

from conftest import toy_rows, write_csv
from nlpforge import load
from nlpforge.errors import ArtifactError, ConfigError, DataError, InputError
from nlpforge.tasks import load as load_task_model
from nlpforge.text.phrases import PhraseSettings, learn_phrases
from nlpforge.text.tokenize import split_sentences, tokenize
from nlpforge.text.vocabulary import build_vocabulary
from nlpforge.training.run import train
from nlpforge.training.settings import job_class
from nlpforge.vectors.query import load_vectors
from test_masked_lm import planted_corpus

TINY = dict(model="bert-tiny", epochs=1, max_steps=1, batch_size=16, max_seq_length=32, progress=False)


@pytest.fixture(autouse=True)
def no_tracking(monkeypatch):
    monkeypatch.setenv("NLPFORGE_TRACKING", "0")


def classifier(folder, **settings):
    """A bert-tiny classifier after one step: only its files and its inputs matter here."""
    train(job_class("text-classification").of(output=str(folder / "model"), **TINY, **settings), log=lambda *_: None)
    return folder / "model"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clf")
    return classifier(folder, train=str(write_csv(folder / "train.csv", toy_rows(20, seed=1))),
                      validation=str(write_csv(folder / "val.csv", toy_rows(6, seed=2))))


@pytest.fixture(scope="module")
def pair_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    rows = [{"premise": r["text"], "hypothesis": r["text"][::-1], "label": r["label"]} for r in toy_rows(20, seed=1)]
    return classifier(folder, train=str(write_csv(folder / "train.csv", rows)),
                      validation=str(write_csv(folder / "val.csv", rows[:6])), text_column=["premise", "hypothesis"])


@pytest.fixture(scope="module")
def fill_mask(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlm")
    train(job_class("masked-lm").of(corpus=[str(planted_corpus(folder / "colours.txt", 60))],
                                    output=str(folder / "model"), max_eval_instances=8, **TINY), log=lambda *_: None)
    return load(folder / "model")


@pytest.fixture(scope="module")
def vectors(tiny_vectors):
    return load_vectors(tiny_vectors)


# --- predict ---------------------------------------------------------------------------------------------------

def test_an_error_in_a_list_of_inputs_names_the_input(model, fill_mask):
    with pytest.raises(InputError, match=r"^\[E420\] input 2 of 3: the text must be a string, got NoneType$"):
        load(model).predict(["fine", None, "fine"])
    with pytest.raises(InputError, match=r"input 2 of 2: the text has no \[MASK\]"):
        fill_mask.predict(["red [MASK] .", "no mask"])
    with pytest.raises(InputError, match=r"a \[MASK\] falls beyond the model's 32 tokens in 'red red red"):
        fill_mask.predict(["red [MASK] .", "red " * 40 + "[MASK]"])
    with pytest.raises(InputError, match=r"^\[E420\] the text must be a string"):  # one input: nothing to number
        load(model).predict([None])


def test_a_table_given_to_a_pair_model_names_a_fix_that_works(pair_model):
    import pandas

    table = pandas.DataFrame({"premise": ["a good film", "dull"], "hypothesis": ["it is good", "it is bad"]})
    loaded = load(pair_model)
    with pytest.raises(InputError, match=r"e\.g\. list\(zip\(df\['premise'\], df\['hypothesis'\]\)\)"):
        loaded.predict(table)
    df = table  # the message's own words
    assert len(loaded.predict(list(zip(df["premise"], df["hypothesis"])))) == 2


def test_a_pair_given_to_fill_mask_says_it_reads_one_text(fill_mask):
    with pytest.raises(InputError, match="reads one text, not a pair"):
        fill_mask.predict(("red [MASK] .", "green"))


def test_predict_file_takes_one_text_column_as_a_string_and_names_an_unknown_reading_key(model, tmp_path):
    from nlpforge.tasks.files import predict_file

    source = write_csv(tmp_path / "in.csv", [{"review": "great film", "stars": 5}, {"review": "dull", "stars": 1}])
    assert predict_file(model, source, tmp_path / "out.jsonl", text_columns="review") == 2  # not columns r, e, v, ...
    with pytest.raises(DataError, match="reading takes delimiter and encoding, not 'delim'"):
        predict_file(model, source, tmp_path / "out.jsonl", text_columns="review", reading={"delim": ";"})


# --- load ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("file, content", [
    ("tokenizer.json", "[]"), ("tokenizer.json", "null"), ("tokenizer.json", '{"a": 1}'),
    ("tokenizer.json", '{"version": "1.0", "added_tokens": [], "normalizer": {"type": "Nope"}}'),
    ("tokenizer_config.json", "[]"), ("tokenizer_config.json", '{"tokenizer_class": 5}'),
])
def test_a_damaged_tokenizer_is_an_artifact_error(model, tmp_path, file, content):
    folder = shutil.copytree(model, tmp_path / "model")
    (folder / file).write_text(content)
    with pytest.raises(ArtifactError, match="tokenizer.json or tokenizer_config.json is damaged.*restore the files"):
        load(folder)


@pytest.mark.parametrize("edit, backend", [({"num_hidden_layers": 3}, "torch"), ({"model_type": "roberta"}, "torch"),
                                           ({"num_hidden_layers": 3}, "onnx")])
def test_a_config_the_weights_do_not_fill_is_refused_not_answered_at_random(model, tmp_path, monkeypatch, edit,
                                                                            backend):
    # an edited config.json built a model that the weights filled in part; the rest answered at random (ONNX: was
    # exported so, and cached)
    import json

    monkeypatch.setenv("NLPFORGE_CACHE", str(tmp_path / "cache"))
    folder = shutil.copytree(model, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **edit}))
    with pytest.raises(ArtifactError, match=r"the weights do not fill the model config.json describes \(\d+ tensor"):
        load(folder, backend=backend)


def test_tokenizer_options_of_a_pipeline_request_pass():
    from nlpforge.tasks import get

    assert get("text-classification").parse_input({"text": "fine", "truncation": True}, None) == "fine"


def test_reading_that_is_not_a_dict_is_named(model, tmp_path):
    from nlpforge.tasks.files import predict_file

    with pytest.raises(DataError, match="reading is a dict such as"):
        predict_file(model, tmp_path / "in.csv", tmp_path / "out.csv", reading="utf-8")


@pytest.mark.parametrize("threads", [0, -1, "2", 1.5])
def test_threads_must_be_a_count(model, threads):
    with pytest.raises(ConfigError, match=f"threads must be a whole number of at least 1, not {threads!r}"):
        load_task_model(model, threads=threads)


# --- vectors ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("word, message", [(None, "not None"), (5, "not 5"), (["word1"], r"not \['word1'\]"),
                                           (b"word1", r"not b'word1'; decode it first")])
def test_a_query_word_must_be_a_string(vectors, word, message):
    for query in (lambda: vectors.similar(word), lambda: vectors.distance("word1", word),
                  lambda: vectors.analogy(word, "word1", "word11")):
        with pytest.raises(InputError, match=f"a query word must be a string, {message}"):
            query()


@pytest.mark.parametrize("topn", [0, -1, 1.5, "2", None, True])
def test_topn_must_be_a_count_not_an_empty_answer(vectors, topn):
    with pytest.raises(InputError, match=f"topn must be a whole number of at least 1, not {topn!r}"):
        vectors.similar("word1", topn=topn)
    with pytest.raises(InputError, match="topn must be a whole number"):
        vectors.analogy("word1", "word11", "word0", topn=topn)


def test_load_vectors_names_a_folder_that_is_not_a_path():
    with pytest.raises(ArtifactError, match="a vectors folder is a path, not None"):
        load_vectors(None)


# --- text ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, error, message", [
    (lambda: tokenize(None), TypeError, "tokenize takes a string, not NoneType"),
    (lambda: tokenize(b"hello"), TypeError, r"decode bytes first"),
    (lambda: tokenize("hello", punctuation="none"), ValueError, "punctuation must be one of sentence-end, keep, drop"),
    (lambda: split_sentences(None), TypeError, "split_sentences takes a string, not NoneType"),
    (lambda: build_vocabulary(["a", "b"]), TypeError, r"count the tokens first, e.g. Counter\(tokens\)"),
])
def test_text_functions_name_an_argument_of_the_wrong_kind(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_phrases_of_strings_are_refused_not_learned_from_their_characters():
    with pytest.raises(DataError, match=r"a sentence is a list of tokens, not a string \('new york is big'\)"):
        learn_phrases(["new york is big"] * 50, PhraseSettings())
    assert build_vocabulary(Counter(["a"] * 5)).tokens[-1] == "a"  # a Counter is still counts


@pytest.mark.parametrize("task, value, option", [
    ("question-answering", {"question": "Who?", "context": "Ann met Bob.", "top_k": 3}, "top_k"),
    ("question-answering", {"question": "Who?", "context": "Ann met Bob.", "max_answer_length": 5},
     "max_answer_length"),
    ("masked-lm", {"text": "a [MASK] .", "targets": ["red"]}, "targets"),
    ("token-classification", {"text": "Ann met Bob.", "ignore_labels": ["O"]}, "ignore_labels"),
    ("text-classification", {"text": "fine", "function_to_apply": "sigmoid"}, "function_to_apply"),
])
def test_a_pipeline_option_the_task_does_not_take_is_refused_not_ignored(task, value, option):
    from nlpforge.tasks import get

    with pytest.raises(InputError, match=f'"{option}" is not an option this model takes, so it would be ignored'):
        get(task).parse_input(value, None)


def test_keys_of_the_clients_own_pass(model):
    assert len(load(model).predict([{"text": "fine", "id": 7}])) == 1  # a request id is no option
