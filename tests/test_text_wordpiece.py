"""WordPiece: the trained folder is a BERT tokenizer that transformers and nlpforge's models load."""
import pytest

from conftest import toy_rows, write_csv
from nlpforge.errors import DataError
from nlpforge.text.wordpiece import WordPieceSettings, train_wordpiece


@pytest.fixture(scope="module")
def wordpiece_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wordpiece")
    corpus = write_csv(folder / "corpus.csv", toy_rows(300) + [{"text": "Unbelievably <br />wonderful acting",
                                                                 "label": "pos"}])
    return train_wordpiece(WordPieceSettings.of(corpus=[str(corpus)], output=str(folder / "tokenizer"), vocab_size=120,
                                             min_frequency=1))


def test_wordpiece_folder_loads_with_auto_tokenizer(wordpiece_folder):
    from transformers import AutoTokenizer

    assert {p.name for p in wordpiece_folder.iterdir()} >= {"tokenizer.json", "vocab.txt", "tokenizer_config.json"}
    tokenizer = AutoTokenizer.from_pretrained(str(wordpiece_folder))
    assert len(tokenizer) == len((wordpiece_folder / "vocab.txt").read_text().splitlines()) <= 120
    encoded = tokenizer("The MOVIE was great", "and the plot")
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2 and "movie" in tokens  # lowercased, BERT pairs
    assert encoded["token_type_ids"][-1] == 1
    pieces = tokenizer.tokenize("unbelievably")
    assert len(pieces) > 1 and all(p.startswith("##") for p in pieces[1:])  # unseen word -> word pieces


def test_wordpiece_folder_starts_a_from_scratch_model(wordpiece_folder):
    from nlpforge.models.registry import build_model, load_tokenizer, resolve_base

    base = resolve_base("bert-tiny", tokenizer=wordpiece_folder)
    tokenizer = load_tokenizer(base)
    model = build_model(base, "AutoModelForSequenceClassification", tokenizer, max_seq_length=32, num_labels=2)
    assert model.config.vocab_size == len(tokenizer) and tokenizer.pad_token_id == 0
    batch = tokenizer(["a great film"], return_tensors="pt")
    assert model(**batch).logits.shape == (1, 2)


def test_wordpiece_on_an_empty_corpus_is_an_error(tmp_path):
    (tmp_path / "empty.txt").write_text("<br />\n\n")
    with pytest.raises(DataError, match="the corpus is empty"):
        train_wordpiece(WordPieceSettings.of(corpus=[str(tmp_path / "empty.txt")], output=str(tmp_path / "t")))
