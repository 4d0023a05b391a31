"""An output folder is replaced whole (written beside it, then renamed in), through a symbolic link too, and is
emptied and written in place where it cannot be renamed (a mount point, a parent this process cannot write)."""
import pytest

from conftest import planted_sentences
from nlpforge.models import artifact
from nlpforge.vectors.query import load_vectors
from nlpforge.vectors.train import Word2VecSettings, train_vectors

QUIET = dict(log=lambda *_: None)


@pytest.fixture
def train(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(s) for s in planted_sentences(60)) + "\n", encoding="utf-8")

    def train(output, **settings):
        train_vectors(Word2VecSettings.of(corpus=[str(corpus)], output=str(output), min_count=1, vector_size=8,
                                          epochs=1, workers=1, **settings), **QUIET)
    return train


def test_an_output_given_as_a_link_keeps_the_link_and_fills_its_folder(train, tmp_path):
    (tmp_path / "big" / "vec").mkdir(parents=True)
    link = tmp_path / "vec"
    link.symlink_to(tmp_path / "big" / "vec")
    for settings in (dict(phrase_min_count=2), dict(phrase_passes=0, save_training_state=False)):
        train(link, **settings)
        assert link.is_symlink()
    assert load_vectors(link).phrases is None  # no earlier phrases join the query words
    assert sorted(p.name for p in (tmp_path / "big" / "vec").iterdir()) == \
        ["nlpforge-vectors.json", "vectors.bin", "vocab.tsv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big", "corpus.txt", "vec"]  # nothing left beside
    assert sorted(p.name for p in (tmp_path / "big").iterdir()) == ["vec"]


@pytest.mark.parametrize("why", ["mount point", "parent not writable"])
def test_a_folder_that_cannot_be_renamed_is_written_in_place(train, tmp_path, monkeypatch, why):
    folder = tmp_path / "vec"
    train(folder, phrase_min_count=2)
    assert (folder / "phrases.json").is_file()
    if why == "mount point":
        monkeypatch.setattr(artifact.os.path, "ismount", lambda path: str(path) == str(folder))
    else:  # the hidden folder beside it cannot be made
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        monkeypatch.setattr(artifact, "sibling_folder", lambda folder, suffix: blocker / f"{folder.name}.{suffix}")
    train(folder, phrase_passes=0, save_training_state=False)
    assert sorted(p.name for p in folder.iterdir()) == ["nlpforge-vectors.json", "vectors.bin", "vocab.tsv"]
    assert load_vectors(folder).phrases is None
