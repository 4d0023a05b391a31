"""Text normalisation shared by every stage: HTML clean-up, Unicode, case, URL and number masks.

Real reviews carry HTML entities (`&amp;`, `&#34;`), `<br />` tags and stray markup;
`clean_html` turns them into plain text before tokenization. `normalize` is the whole chain the
corpus stage applies to each document:

    normalize("Caf\u00e9&amp;bar<br />http://x.io", NormalizeSettings(mask_urls=True))
    # -> "café&bar <url>"  (lowercasing happens per sentence, see nlpforge.text.tokenize)
"""
import html
import re
import unicodedata
from dataclasses import dataclass

from nlpforge.training.config import setting

_BREAK = re.compile(r"<\s*br\s*/?\s*>|<\s*/?\s*p\s*/?\s*>", re.IGNORECASE)
_TAG = re.compile(r"</?[a-zA-Z][^<>]{0,200}>")
_SPACES = re.compile(r"\s+")
_URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"']+", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
_NUMBER = re.compile(r"(?<![^\W\d_])[-+]?\d+(?:[.,:/]\d+)*(?![^\W\d_])")

URL_TOKEN = "<url>"
NUMBER_TOKEN = "<num>"


@dataclass
class NormalizeSettings:
    """How raw text is cleaned before it is split into sentences and tokens."""

    lowercase: bool = setting(True, "lowercase every token")
    mask_urls: bool = setting(False, "replace URLs and e-mail addresses with <url>")
    mask_numbers: bool = setting(False, "replace numbers (12, 3.5, 1,000, 10/10) with <num>")
    html: bool = setting(True, "remove HTML tags (<br />) and unescape entities (&amp;)")


def clean_html(text: str) -> str:
    """Unescape HTML entities, turn `<br />` into spaces, drop other tags, squeeze whitespace."""
    text = _BREAK.sub(" ", text)
    text = _TAG.sub(" ", text)
    # Entities are unescaped after tags are removed, so `&lt;b&gt;` stays literal text.
    text = html.unescape(html.unescape(text)) if "&amp;" in text else html.unescape(text)
    return _SPACES.sub(" ", text).strip()


def normalize(text: str, settings: NormalizeSettings | None = None) -> str:
    """HTML clean-up, Unicode NFKC and the optional masks. Case is left for `tokenize`.

    Lowercasing is not done here because the sentence splitter uses capitals as a hint.
    """
    settings = settings or NormalizeSettings()
    if settings.html and ("<" in text or "&" in text):
        text = clean_html(text)
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    if settings.mask_urls and ("://" in text or "www." in text or "@" in text):
        text = _EMAIL.sub(f" {URL_TOKEN} ", _URL.sub(f" {URL_TOKEN} ", text))
    if settings.mask_numbers:
        text = _NUMBER.sub(f" {NUMBER_TOKEN} ", text)
    return text
