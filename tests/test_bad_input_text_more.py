"""More bad input to the text and pre-training stages: outputs reached through symbolic links, vocabularies that
could not be used, a vectors folder trained again, and masked-LM data too thin to validate or evaluate on."""
import pytest

from conftest import planted_sentences
from nlpforge.errors import ConfigError
from nlpforge.text.jobs import (PhraseJob, TokenizeJob, VocabularyJob, phrases_from_corpus, vocabulary_from_corpus,
                                write_tokenized)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(" ".join(s) for s in planted_sentences(60)) + "\n", encoding="utf-8")
    return path

# --- an output that is an input through a symbolic link ---------------------------------------------------------

@pytest.mark.parametrize("write", [
    lambda corpus, output: vocabulary_from_corpus(VocabularyJob.of(corpus=[corpus], output=output, min_count=1)),
    lambda corpus, output: write_tokenized(TokenizeJob.of(corpus=[corpus], output=output)),
    lambda corpus, output: phrases_from_corpus(PhraseJob.of(corpus=[corpus], output=output)),
])
def test_an_output_that_is_the_corpus_through_a_link_is_refused(corpus, tmp_path, write):
    link = tmp_path / "link.txt"
    link.symlink_to(corpus)
    before = corpus.read_bytes()
    with pytest.raises(ConfigError, match="is the input"):
        write(str(link), str(corpus))          # the corpus named by a link, the output by its own name
    with pytest.raises(ConfigError, match="is the input"):
        write(str(corpus), str(link))          # and the other way round
    assert corpus.read_bytes() == before


def test_an_output_inside_a_linked_corpus_folder_is_refused(corpus, tmp_path):
    (tmp_path / "data").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ConfigError, match="is inside the input"):
        vocabulary_from_corpus(VocabularyJob.of(corpus=[str(tmp_path / "data")], output=str(tmp_path / "vocab.tsv")))
