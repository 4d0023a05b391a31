"""Multi-word phrases with gensim Phrases: « Rio de Janeiro » -> « rio_de_janeiro ».

Each pass joins pairs of tokens that co-occur far more than chance; a second pass over the joined
text joins pairs again, so trigrams (`rio_de` + `janeiro`) form. The learned model is saved as a
readable JSON file of phrases and scores (no pickle) and applied at query time too.

    model = learn_phrases(corpus, PhraseSettings(phrase_min_count=5, phrase_threshold=10))
    model.apply(["flights", "to", "rio", "de", "janeiro"])   # -> ["flights", "to", "rio_de_janeiro"]
    model.save("phrases.json"); PhraseModel.load("phrases.json")
"""
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Literal

from nlpforge.errors import ConfigError, DataError
from nlpforge.settings import Settings, setting

FORMAT = "nlpforge-phrases"
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
        if not self.phrase_delimiter or any(c.isspace() for c in self.phrase_delimiter):
            raise ConfigError("phrase-delimiter must be a non-empty string without spaces")


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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        layers = [{"min_count": layer.min_count, "threshold": layer.threshold, "scoring": self.settings.phrase_scoring,
                   "delimiter": layer.delimiter, "connector_words": sorted(layer.connector_words),
                   "phrasegrams": dict(sorted(layer.phrasegrams.items(), key=lambda item: -item[1]))}
                  for layer in self.layers]
        saved = {"format": FORMAT, "version": 1, "settings": asdict(self.settings),
                 "corpus_tokens": self.corpus_tokens, "layers": layers}
        path.write_text(json.dumps(saved, indent=1, ensure_ascii=False), encoding="utf-8")
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
        return cls(PhraseSettings(**saved["settings"]), [_frozen(layer) for layer in saved["layers"]],
                   saved.get("corpus_tokens", 0))


class _SpillingStream:
    """Yields each sentence of `sentences` and writes it, space-joined, to `path` on the way."""

    def __init__(self, sentences: Iterable[list[str]], path: Path):
        self.sentences, self.path = sentences, path

    def __iter__(self):
        with open(self.path, "w", encoding="utf-8") as out:
            for tokens in self.sentences:
                out.write(" ".join(tokens))
                out.write("\n")
                yield tokens


def read_token_file(path) -> Iterator[list[str]]:
    """Sentences of a file written one sentence a line, tokens separated by spaces."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            tokens = line.split()
            if tokens:
                yield tokens


class TokenFile:
    """A re-iterable view of a token file (see `read_token_file`)."""

    def __init__(self, path):
        self.path = Path(path)

    def __iter__(self):
        return read_token_file(self.path)


def learn_phrases(sentences: Iterable[list[str]], settings: PhraseSettings, spill_dir=None) -> PhraseModel:
    """Learn `settings.phrase_passes` passes over a re-iterable corpus of token lists.

    With `spill_dir`, pass k also writes its input (the corpus with passes < k applied) to
    `spill_dir/phrases-input-{k}.txt`, so a caller that needs the joined corpus applies only the
    last pass to the last file instead of every pass to the raw corpus again.
    """
    from gensim.models.phrases import Phrases

    model = PhraseModel(settings)
    current = sentences
    for number in range(settings.phrase_passes):
        stream = current
        if spill_dir is not None:
            spill = Path(spill_dir) / f"phrases-input-{number}.txt"
            stream = _SpillingStream(current, spill)
        learner = Phrases(stream, min_count=settings.phrase_min_count, threshold=settings.phrase_threshold,
                          scoring=settings.phrase_scoring, delimiter=_LEARNING_DELIMITER,
                          connector_words=_connector_words(settings.phrase_connectors))
        if learner.corpus_word_count == 0:
            raise DataError("the corpus is empty: no tokens to learn phrases from")
        if number == 0:
            model.corpus_tokens = learner.corpus_word_count
        layer = learner.freeze()
        layer.delimiter = settings.phrase_delimiter
        layer.phrasegrams = {phrase.replace(_LEARNING_DELIMITER, settings.phrase_delimiter): score
                             for phrase, score in layer.phrasegrams.items()}
        model.layers.append(layer)
        del learner  # the pair counts are the big part; only the frozen phrases are kept
        if spill_dir is not None:
            current = _Applied(layer, TokenFile(spill))
        else:
            current = _Applied(layer, current)
    return model


class _Applied:
    """A re-iterable corpus with one phrase layer applied."""

    def __init__(self, layer, sentences):
        self.layer, self.sentences = layer, sentences

    def __iter__(self):
        layer = self.layer
        for tokens in self.sentences:
            yield layer[tokens]
