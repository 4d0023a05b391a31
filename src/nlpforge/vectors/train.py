"""Train word2vec (skip-gram or CBOW, negative sampling) on gensim, from a raw corpus to a vectors folder.

    nlpforge vectors train --corpus imdb_50k.csv.gz --corpus brown_corpus.tar.gz --column review --output vectors/imdb

    result = train_vectors(Word2VecSettings.of(corpus=["reviews.csv"], output="vectors/reviews"))

The folder holds what queries need, apart from what further training needs:

    vectors.bin             KeyedVectors in the word2vec binary format (any word2vec tool reads it)
    vocab.tsv               the word2vec vocabulary with counts (nlpforge.text.vocabulary format)
    phrases.json            the phrase model, applied to query words too (absent with --phrase-passes 0)
    nlpforge-vectors.json   settings, corpus, sizes, timings and versions
    training/word2vec.model the full gensim model (weights + training state) to continue training;
                            gensim's own format, needed by nobody who only queries
"""
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from nlpforge.errors import ConfigError, DataError
from nlpforge.models.artifact import writing_folder
from nlpforge.settings import (MAX_SEED, Settings, check_apart, check_output_folder, check_writable, cores, group,
                               setting, to_flat)
from nlpforge.text.corpus import CorpusSettings
from nlpforge.text.phrases import PhraseSettings
from nlpforge.text.prepare import PreparedCorpus, prepare_corpus
from nlpforge.text.vocabulary import Vocabulary

METADATA = "nlpforge-vectors.json"
# gensim's compiled training loop takes the window and the epochs as C ints: a larger value kills its worker
# threads with an OverflowError while train() waits for them forever.
GENSIM_INT = 2**31 - 1


@dataclass
class Word2VecSettings(Settings):
    """Train word vectors (word2vec with negative sampling) from a raw corpus."""

    text: CorpusSettings = group(CorpusSettings)
    phrase: PhraseSettings = group(PhraseSettings)
    output: str = setting("vectors", "folder to write the vectors to")
    architecture: Literal["skipgram", "cbow"] = setting("skipgram", "skipgram (better for rare words) or cbow (faster)")
    vector_size: int = setting(100, "dimensions of each word vector (50-300 is usual)", min=1, max=2000)
    window: int = setting(5, "context words on each side of the target word", min=1, max=GENSIM_INT)
    min_count: int = setting(5, "ignore words (and phrases) seen fewer times than this", min=1)
    # Training time grows linearly with `negative`; word2vec's papers use 2-20.
    negative: int = setting(5, "negative samples per positive one (this trainer uses negative sampling)", min=1,
                            max=100)
    # gensim reads a sample of 1 or more as a word count, int(sample * 2.6), which overflows near 1e308.
    sample: float = setting(1e-3, "down-sampling threshold for frequent words (0 turns it off)", min=0, max=1e18)
    epochs: int = setting(5, "passes over the corpus", min=1, max=GENSIM_INT)
    # gensim's compiled loop crashes the process (no exception) once steps overflow the vectors: alpha=1e300
    # segfaults. Usual rates are 0.025-0.05.
    alpha: float = setting(0.025, "initial learning rate, decaying linearly to min-alpha", max=1)
    min_alpha: float = setting(0.0001, "final learning rate", max=1)
    # One thread each: gensim starts them all before training, so a mistyped 10**11 would never start.
    workers: int | None = setting(None, "training threads (default: all cores)", min=1, max=1024)
    seed: int = setting(1, "seed of the initial vectors and sampling", min=0, max=MAX_SEED)
    workdir: str | None = setting(None, "folder for the intermediate token file (default: a temporary folder)")
    save_training_state: bool = setting(True, "also save the full gensim model, to continue training later")

    def check(self):
        if not 0 < self.min_alpha <= self.alpha:
            raise ConfigError("need 0 < min-alpha <= alpha")


@dataclass
class TrainedVectors:
    folder: Path
    words: int  # vocabulary size
    corpus_tokens: int
    seconds: dict = field(default_factory=dict)

    def text(self) -> str:
        stages = ", ".join(f"{name} {s:.1f}s" for name, s in self.seconds.items())
        return (f"wrote {self.words:,} word vectors to {self.folder} "
                f"({self.corpus_tokens:,} corpus tokens; {stages})")


def word2vec_from_prepared(prepared: PreparedCorpus, settings: Word2VecSettings):
    """Train a gensim Word2Vec on a prepared token file; the vocabulary comes from its counts (no extra scan)."""
    from gensim.models import Word2Vec

    model = Word2Vec(vector_size=settings.vector_size, window=settings.window, min_count=settings.min_count,
                     sg=int(settings.architecture == "skipgram"), hs=0, negative=settings.negative,
                     sample=settings.sample, alpha=settings.alpha, min_alpha=settings.min_alpha,
                     workers=settings.workers or cores(), seed=settings.seed, epochs=settings.epochs)
    model.build_vocab_from_freq(prepared.counts, corpus_count=prepared.sentences)
    if len(model.wv) == 0:
        raise DataError(f"no word occurs min-count={settings.min_count} times in the corpus "
                        f"({prepared.tokens:,} tokens); lower --min-count or give a larger corpus")
    total = prepared.tokens
    model.corpus_total_words = total
    model.train(corpus_file=str(prepared.path), total_words=total, epochs=settings.epochs,
                start_alpha=settings.alpha, end_alpha=settings.min_alpha)
    return model


def _versions() -> dict:
    import gensim

    return {"nlpforge": _nlpforge_version(), "gensim": gensim.__version__, "python": platform.python_version()}


def _nlpforge_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nlpforge")
    except PackageNotFoundError:
        return "unknown"


def save_vectors_folder(model, prepared: PreparedCorpus, settings: Word2VecSettings, folder: Path,
                        seconds: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.wv.save_word2vec_format(str(folder / "vectors.bin"), binary=True)
    counts = {word: int(model.wv.get_vecattr(word, "count")) for word in model.wv.index_to_key}
    Vocabulary([], counts, settings.min_count, None, prepared.tokens, len(prepared.counts)).save(folder / "vocab.tsv")
    if prepared.phrases is not None:
        prepared.phrases.save(folder / "phrases.json")
    if settings.save_training_state:
        (folder / "training").mkdir(exist_ok=True)
        model.save(str(folder / "training" / "word2vec.model"))
    metadata = {"format": "nlpforge-vectors", "version": 1, "settings": to_flat(settings),
                "words": len(model.wv), "vector_size": model.wv.vector_size,
                "corpus_tokens": prepared.corpus_tokens, "prepared_tokens": prepared.tokens,
                "sentences": prepared.sentences, "phrases": len(prepared.phrases.phrases) if prepared.phrases else 0,
                "seconds": {k: round(v, 2) for k, v in seconds.items()}, "versions": _versions()}
    (folder / METADATA).write_text(json.dumps(metadata, indent=2), encoding="utf-8")


def train_vectors(settings: Word2VecSettings, log: Callable[[str], None] = print) -> TrainedVectors:
    """Prepare the corpus (one streaming pass per phrase layer), train word2vec and save the folder."""
    folder = Path(settings.output)
    check_apart(folder, settings.text.source.corpus)
    check_output_folder(folder, "--output", "vectors folder", METADATA)
    here = Path.cwd()
    if Path(os.path.realpath(folder)) in (here, *here.parents):  # the new folder is renamed into its place
        raise ConfigError(f"--output {settings.output}: is the current folder or holds it, which cannot be replaced; "
                          "name a folder for the vectors")
    parent = Path(settings.workdir).expanduser() if settings.workdir else None
    if parent is not None:
        check_writable(parent, "--workdir", folder=True)
        parent.mkdir(parents=True, exist_ok=True)  # TemporaryDirectory makes no missing folders
    with tempfile.TemporaryDirectory(prefix="nlpforge-vectors-", dir=parent) as workdir:
        log(f"preparing {settings.text.names} ...")
        prepared = prepare_corpus(settings.text, settings.phrase, workdir)
        seconds = dict(prepared.seconds)
        log(f"{prepared.corpus_tokens:,} tokens in {prepared.sentences:,} sentences"
            + (f", {len(prepared.phrases.phrases):,} phrases" if prepared.phrases else ""))
        start = time.perf_counter()
        model = word2vec_from_prepared(prepared, settings)
        seconds["word2vec"] = time.perf_counter() - start
    # Written beside the folder and renamed into place, so that an earlier folder keeps none of its files (a
    # phrases.json this run did not learn would still join query words) and an interrupted save leaves it whole.
    with writing_folder(folder) as written:
        save_vectors_folder(model, prepared, settings, written, seconds)
    return TrainedVectors(folder, len(model.wv), prepared.corpus_tokens, seconds)
