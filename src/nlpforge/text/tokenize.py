"""Sentences and tokens: the step from normalised text to what word2vec and Phrases read.

    split_sentences("It rained. We stayed in!")   # -> ["It rained.", "We stayed in!"]
    tokenize("hello, world!")                     # -> ["hello", "world", "!"]
    render_markers(tokenize("hello, world!"))     # -> "<BOS>hello<SP>world<SP>!<EOS>"

Words keep inner apostrophes and hyphens (`don't`, `well-made`); numbers stay whole (`3.5`);
`<url>` and `<num>` masks are single tokens. By default only sentence-final punctuation
(`.`, `!`, `?`) is kept, as the marker rendering above shows; commas, quotes and brackets are dropped.
"""
import re
from dataclasses import dataclass
from typing import Literal

from nlpforge.settings import Settings, setting

BOS, SEPARATOR, EOS = "<BOS>", "<SP>", "<EOS>"
Punctuation = Literal["sentence-end", "keep", "drop"]

_WORD = r"<url>|<num>|\d+(?:[.,:/]\d+)*|[^\W_]+(?:['’\-][^\W_]+)*"
_TOKEN = {
    "sentence-end": re.compile(rf"{_WORD}|[.!?]+"),
    "keep": re.compile(rf"{_WORD}|[^\w\s]+"),
    "drop": re.compile(_WORD),
}
# A sentence ends at . ! ? (plus closing quotes/brackets) when whitespace and a capital,
# digit or opening quote follow: "It rained. We" splits, "e.g. this" does not. Titles and
# initials ("Mr. Smith", "James B. Parsons") are not sentence ends.
_NOT_AN_END = "".join(rf"(?<!\b{title}\.)" for title in ("Mr", "Mrs", "Ms", "Dr", "St", "Jr", "vs", "Prof")) \
    + r"(?<!\b[A-Z]\.)"
_SENTENCE_END = re.compile(rf"(?<=[.!?]){_NOT_AN_END}[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9<])")


@dataclass
class TokenizeSettings(Settings):
    """How sentences become tokens."""

    punctuation: Punctuation = setting("sentence-end", "punctuation tokens kept: sentence-end (. ! ?), keep (all) "
                                                       "or drop")
    split_sentences: bool = setting(True, "split documents into sentences (off: one document is one sentence)")
    min_sentence_tokens: int = setting(1, "drop sentences with fewer tokens than this", min=1)


def split_sentences(text: str) -> list[str]:
    """Split a document at sentence ends; lines breaks in the input also end sentences."""
    if not isinstance(text, str):
        raise TypeError(f"split_sentences takes a string, not {type(text).__name__}")
    sentences = []
    for line in text.splitlines():
        sentences.extend(part for part in _SENTENCE_END.split(line) if part and not part.isspace())
    return sentences


def tokenize(sentence: str, lowercase: bool = True, punctuation: str = "sentence-end") -> list[str]:
    """The tokens of one sentence (see the module docstring for what counts as a token)."""
    try:  # called once a sentence over whole corpora: the checks cost nothing until one fails
        pattern = _TOKEN[punctuation]
        return pattern.findall(sentence.lower() if lowercase else sentence)
    except KeyError:
        raise ValueError(f"punctuation must be one of {', '.join(_TOKEN)}, not {punctuation!r}") from None
    except (AttributeError, TypeError):
        if isinstance(sentence, str):
            raise
        hint = "; decode bytes first, e.g. sentence.decode('utf-8')" if isinstance(sentence, bytes) else ""
        raise TypeError(f"tokenize takes a string, not {type(sentence).__name__}{hint}") from None


def render_markers(tokens: list[str]) -> str:
    """The marker rendering: « hello, world! » -> « <BOS>hello<SP>world<SP>!<EOS> »: sentence start,
    token separators and sentence end made explicit, for tools that read one string per sentence."""
    return BOS + SEPARATOR.join(tokens) + EOS
