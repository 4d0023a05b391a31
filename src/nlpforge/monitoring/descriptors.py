"""Descriptors of each text: the numbers the monitor baselines and compares.

    values = describe(["Loved it", "", "ÉÉÉ 123"], tokenizer)   # {"length_chars": array([...]), ...}

Without a tokenizer the WordPiece descriptors are left out; with one (the model's own), they are
pieces per word and the share of pieces that are the unknown token. A trained classifier adds its
confidence (top softmax score) per scored text, see `nlpforge.monitoring.scoring`.
"""
import numpy as np

# name -> SageMaker inferred_type
FEATURES = {
    "length_chars": "Integral",
    "length_words": "Integral",
    "pieces_per_word": "Fractional",
    "unknown_piece_rate": "Fractional",
    "non_letter_share": "Fractional",
    "non_ascii_share": "Fractional",
    "empty_or_whitespace": "Integral",
}
TOKENIZER_FEATURES = ("pieces_per_word", "unknown_piece_rate")
# what a trained classifier adds (nlpforge.monitoring.scoring); its predicted label is a String feature
MODEL_FEATURES = {"confidence": "Fractional"}
LENGTH_FEATURES = ("length_chars", "length_words")


def _character_shares(text: str) -> tuple[float, float]:
    """(non-letter share, non-ASCII share) of the characters that are not whitespace."""
    characters = [c for c in text if not c.isspace()]
    if not characters:
        return 0.0, 0.0
    return (sum(not c.isalpha() for c in characters) / len(characters),
            sum(ord(c) > 127 for c in characters) / len(characters))


def describe(texts: list, tokenizer=None) -> dict[str, np.ndarray]:
    """Each descriptor of each text as a float array; a missing text (None) is NaN everywhere, an empty one 0."""
    names = [n for n in FEATURES if tokenizer is not None or n not in TOKENIZER_FEATURES]
    values = {name: np.full(len(texts), np.nan) for name in names}
    for i, text in enumerate(texts):
        if text is None:
            continue
        words = text.split()
        values["length_chars"][i] = len(text)
        values["length_words"][i] = len(words)
        values["empty_or_whitespace"][i] = float(not words)
        values["non_letter_share"][i], values["non_ascii_share"][i] = _character_shares(text)
        if tokenizer is not None:
            pieces = tokenizer.tokenize(text) if words else []
            values["pieces_per_word"][i] = len(pieces) / len(words) if words else 0.0
            values["unknown_piece_rate"][i] = (sum(p == tokenizer.unk_token for p in pieces) / len(pieces)
                                               if pieces else 0.0)
    return values
