"""Clean-up every text gets when it is read: HTML entities and tags become plain text.

Real reviews carry HTML entities (`&amp;`, `&#34;`), `<br />` tags and stray markup:

    clean_html("Great&#34;s film<br />Loved it &amp; more")   # 'Great"s film Loved it & more'
"""
import html
import re

_BREAK = re.compile(r"<\s*br\s*/?\s*>|<\s*/?\s*p\s*/?\s*>", re.IGNORECASE)
_TAG = re.compile(r"</?[a-zA-Z][^<>]{0,200}>")
_SPACES = re.compile(r"\s+")


def clean_html(text: str) -> str:
    """Unescape HTML entities, turn `<br />` into spaces, drop other tags, squeeze whitespace."""
    text = _BREAK.sub(" ", text)
    text = _TAG.sub(" ", text)
    # Entities are unescaped after tags are removed, so `&lt;b&gt;` stays literal text.
    text = html.unescape(html.unescape(text)) if "&amp;" in text else html.unescape(text)
    return _SPACES.sub(" ", text).strip()
