"""Multi-word phrases as gensim's Phrases finds them: « Rio de Janeiro » -> « rio_de_janeiro ».

Each pass joins pairs of tokens that co-occur far more than chance; a second pass over the joined
text joins pairs again, so trigrams (`rio_de` + `janeiro`) form. Learning runs in integer ids with
numpy (text/pair_counts.py), with gensim's counts, scores and joins; the learned passes are gensim
`FrozenPhrases`. The model is saved as a readable JSON file of phrases and scores (no pickle) and
applied at query time too.

    model = learn_phrases(corpus, PhraseSettings(phrase_min_count=5, phrase_threshold=10))
    model.apply(["flights", "to", "rio", "de", "janeiro"])   # -> ["flights", "to", "rio_de_janeiro"]
    model.save("phrases.json"); PhraseModel.load("phrases.json")
"""
import json
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Literal

import numpy as np

from nlpforge.errors import ConfigError, DataError
from nlpforge.settings import Settings, replacing, setting
from nlpforge.text.pair_counts import IdJoiner, PairCounts, TokenIds, write_sentences

FORMAT = "nlpforge-phrases"
VERSION = 1  # of the saved file's layout
# gensim 4's `Phrases.export_phrases` re-splits a learned pair on the delimiter, so a pair whose
# first part is already a phrase ("rio_de" + "janeiro") is scored as "rio" + "janeiro" and lost:
# the second pass would find no trigram. Learning with a separator that never occurs in tokens,
# then renaming it to the user's delimiter, keeps each pair's two parts apart.
_LEARNING_DELIMITER = "\u241f"


@dataclass
class PhraseSettings(Settings):
    """How multi-word phrases are detected (gensim Phrases, one pass per extra word)."""

    phrase_passes: int = setting(2, "Phrases passes: 2 forms trigrams (rio_de_janeiro), 0 turns phrases off",
                                 min=0, max=4)
    phrase_min_count: int = setting(5, "ignore word pairs seen fewer times than this", min=1)
    phrase_threshold: float = setting(10.0, "score a pair needs to become a phrase (default scoring: ~10; npmi: -1..1)")
    phrase_scoring: Literal["default", "npmi"] = setting("default", "pair score: default (Mikolov et al.) or npmi "
                                                                    "(normalised PMI)")
    phrase_connectors: Literal["english", "none"] = setting("english", "connector words allowed inside phrases "
                                                                       "(the, of, ...): english or none")
    phrase_delimiter: str = setting("_", "joins the words of a phrase")

    def check(self):
        if self.phrase_scoring == "npmi" and not -1 <= self.phrase_threshold <= 1:
            raise ConfigError("with npmi scoring, phrase-threshold must be between -1 and 1")
        if self.phrase_scoring == "default" and self.phrase_threshold <= 0:
            raise ConfigError("with default scoring, phrase-threshold must be above 0 (10 is usual)")
        if not self.phrase_delimiter or any(c.isspace() for c in self.phrase_delimiter):
            raise ConfigError("phrase-delimiter must be a non-empty string without spaces")


@dataclass
class PhraseLearningSettings(PhraseSettings):
    """PhraseSettings where the phrases are the product (`nlpforge corpus phrases`), so 0 passes is no choice."""

    phrase_passes: int = setting(2, "Phrases passes: 1 joins word pairs, 2 forms trigrams (rio_de_janeiro)",
                                 min=1, max=4)


def _connector_words(name: str) -> frozenset:
    from gensim.models.phrases import ENGLISH_CONNECTOR_WORDS

    return ENGLISH_CONNECTOR_WORDS if name == "english" else frozenset()


def _frozen(layer: dict):
    """A gensim FrozenPhrases from a saved layer, built through the public constructor."""
    from gensim.models.phrases import Phrases

    empty = Phrases(min_count=layer["min_count"], threshold=layer["threshold"], scoring=layer["scoring"],
                    delimiter=layer["delimiter"], connector_words=frozenset(layer["connector_words"]))
    frozen = empty.freeze()
    frozen.phrasegrams = dict(layer["phrasegrams"])
    return frozen


@dataclass
class PhraseModel:
    """The learned passes, applied in order; `apply` joins the phrases of one token list."""

    settings: PhraseSettings
    layers: list = field(default_factory=list)  # gensim FrozenPhrases, one per pass
    corpus_tokens: int = 0  # tokens the first pass learned from

    def apply(self, tokens: list[str]) -> list[str]:
        for layer in self.layers:
            tokens = layer[tokens]
        return tokens

    def apply_all(self, sentences: Iterable[list[str]]) -> Iterator[list[str]]:
        for tokens in sentences:
            yield self.apply(tokens)

    @property
    def phrases(self) -> dict[str, float]:
        """Every phrase of every pass with its score."""
        found = {}
        for layer in self.layers:
            found.update(layer.phrasegrams)
        return found

    def save(self, path) -> Path:
        """Write the phrase file to `path` whole or not at all: an earlier file survives a failed save."""
        path = Path(path)
        layers = [{"min_count": layer.min_count, "threshold": layer.threshold, "scoring": self.settings.phrase_scoring,
                   "delimiter": layer.delimiter, "connector_words": sorted(layer.connector_words),
                   "phrasegrams": dict(sorted(layer.phrasegrams.items(), key=lambda item: -item[1]))}
                  for layer in self.layers]
        saved = {"format": FORMAT, "version": VERSION, "settings": asdict(self.settings),
                 "corpus_tokens": self.corpus_tokens, "layers": layers}
        with replacing(path) as partial:
            partial.write_text(json.dumps(saved, indent=1, ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path) -> "PhraseModel":
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such phrase file; make one with `nlpforge corpus phrases`")
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataError(f"{path}: not a phrase file ({error})") from None
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            raise DataError(f"{path}: not a phrase file written by nlpforge (no \"format\": \"{FORMAT}\")")
        if saved.get("version") != VERSION:
            raise DataError(f"{path}: phrase file version {saved.get('version')!r}, but this nlpforge reads version "
                            f"{VERSION}; learn the phrases again with `nlpforge corpus phrases`")
        try:
            settings = PhraseSettings(**saved["settings"])
            layers = [_frozen(layer) for layer in saved["layers"]]
        except KeyError as error:
            problem = f"no {error.args[0]!r} entry"
        except (TypeError, ValueError, AttributeError, ConfigError) as error:
            problem = getattr(error, "message", None) or str(error).splitlines()[0]
        else:
            return cls(settings, layers, saved.get("corpus_tokens", 0))
        raise DataError(f"{path}: the phrase file is damaged ({problem}); learn the phrases again with "
                        "`nlpforge corpus phrases`")


def learn_phrases(sentences: Iterable[list[str]], settings: PhraseSettings, spill_dir=None) -> PhraseModel:
    """Learn `settings.phrase_passes` passes over `sentences` (read once), spilling ids to `spill_dir`
    (a temporary folder when None)."""
    with PhraseLearner(settings, spill_dir) as learner:
        return learner.learn(sentences)


class PhraseLearner:
    """Learns the passes in integer ids: the corpus is read once, and each pass reads the previous
    pass's ids from a spill file (4 bytes a token) with its phrases joined, not text.

        with PhraseLearner(settings, spill_dir) as learner:
            model = learner.learn(sentences)
            counts, sentences = learner.write_joined("tokens.txt")   # the corpus with every pass joined
    """

    def __init__(self, settings: PhraseSettings, spill_dir=None):
        self.settings = settings
        if spill_dir is not None:
            Path(spill_dir).mkdir(parents=True, exist_ok=True)
        self._scratch = tempfile.TemporaryDirectory(prefix="phrases-", dir=spill_dir)
        self.ids = TokenIds(_connector_words(settings.phrase_connectors))
        self._last = None  # (counts of the last pass's input, its joiner)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._scratch.cleanup()

    def learn(self, sentences: Iterable[list[str]]) -> PhraseModel:
        return self.learn_chunks(self.ids.chunks(sentences))

    def learn_chunks(self, chunks) -> PhraseModel:
        """Learn from the corpus as chunks of (ids from `self.ids`, tokens per sentence), e.g.
        `self.ids.encode(corpus.encoded())`, which tokenises in parallel."""
        settings = self.settings
        model = PhraseModel(settings)
        counts = PairCounts(self.ids, spill=Path(self._scratch.name) / "pass-0")
        for chunk in chunks:
            counts.add_ids(*chunk)
        for number in range(settings.phrase_passes):
            if number:
                joined = PairCounts(self.ids, spill=Path(self._scratch.name) / f"pass-{number}")
                for chunk in self._joined_ids():
                    joined.add_ids(*chunk)
                counts.remove_spill()
                counts = joined
            counts.finish()
            if counts.words == 0:
                raise DataError("the corpus is empty: no tokens to learn phrases from")
            if number == 0:
                model.corpus_tokens = counts.words
            learned = counts.phrasegrams(settings.phrase_scoring, settings.phrase_min_count,
                                         settings.phrase_threshold, _LEARNING_DELIMITER)
            phrasegrams = {phrase.replace(_LEARNING_DELIMITER, settings.phrase_delimiter): score
                           for phrase, score in learned.items()}
            model.layers.append(_frozen({
                "min_count": settings.phrase_min_count, "threshold": settings.phrase_threshold,
                "scoring": settings.phrase_scoring, "delimiter": settings.phrase_delimiter,
                "connector_words": self.ids.connectors, "phrasegrams": phrasegrams}))
            self._last = counts, IdJoiner(self.ids, phrasegrams, settings.phrase_delimiter)
            counts.drop_counts()  # the pair counts are the big part; only the phrases are kept
        return model

    def _joined_ids(self):
        counts, join = self._last
        for chunk in counts.spilled():
            yield join(*chunk)

    def write_joined(self, path) -> tuple[Counter, int]:
        """Write the learned corpus with every pass's phrases joined to `path`, one sentence a line;
        returns its token counts and number of sentences."""
        words = np.array(self.ids.words, dtype=object)
        return write_sentences(path, ((words, ids, lengths) for ids, lengths in self._joined_ids()))
