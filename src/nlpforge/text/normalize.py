"""Text normalisation shared by every stage: HTML clean-up, Unicode, case, URL and number masks.

`normalize` is the whole chain the corpus stage applies to each document: HTML clean-up
(`nlpforge.data.clean.clean_html`, which every reader applies too), Unicode NFKC, and masks:

    normalize("Caf\u00e9&amp;bar<br />http://x.io", NormalizeSettings(mask_urls=True))
    # -> "café&bar <url>"  (lowercasing happens per sentence, see nlpforge.text.tokenize)
"""
import re
import unicodedata
from dataclasses import dataclass

from nlpforge.data.clean import clean_html
from nlpforge.settings import Settings, setting

_URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"']+", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
_NUMBER = re.compile(r"(?<![^\W\d_])[-+]?\d+(?:[.,:/]\d+)*(?![^\W\d_])")

URL_TOKEN = "<url>"
NUMBER_TOKEN = "<num>"


@dataclass
class NormalizeSettings(Settings):
    """How raw text is cleaned before it is split into sentences and tokens."""

    lowercase: bool = setting(True, "lowercase every token")
    mask_urls: bool = setting(False, "replace URLs and e-mail addresses with <url>")
    mask_numbers: bool = setting(False, "replace numbers (12, 3.5, 1,000, 10/10) with <num>")
    html: bool = setting(True, "remove HTML tags (<br />) and unescape entities (&amp;)")


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
