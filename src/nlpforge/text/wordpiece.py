"""Train a BERT WordPiece vocabulary with Hugging Face `tokenizers`, saved as a BERT tokenizer folder.

    nlpforge tokenizer train --corpus imdb_50k.csv.gz --column review --output tokenizers/imdb --vocab-size 30000

    folder = train_wordpiece(WordPieceSettings.of(corpus=["reviews.csv"], output="tokenizers/reviews"))
    AutoTokenizer.from_pretrained(folder)            # transformers loads it
    resolve_base("bert-tiny", tokenizer=folder)      # a from-scratch model starts from it

The folder holds `tokenizer.json` (the fast tokenizer), `vocab.txt` (BERT's one-token-a-line
vocabulary) and `tokenizer_config.json` (class, special tokens, casing). The text is cleaned by
nlpforge's normaliser (HTML, NFKC, masks); lowercasing and accent stripping are BERT's own, so
the saved tokenizer does the same to new text.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from nlpforge.errors import ConfigError, DataError
from nlpforge.settings import Settings, check_apart, check_output_folder, group, setting
from nlpforge.text.corpus import CorpusSource, source_documents
from nlpforge.text.normalize import NormalizeSettings, normalize

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class WordPieceSettings(Settings):
    """Train a BERT WordPiece tokenizer from a corpus."""

    source: CorpusSource = group(CorpusSource)
    normalize: NormalizeSettings = group(NormalizeSettings)
    output: str = setting("", "tokenizer folder to write", required=True)
    # The Rust trainer reserves a table of vocab_size entries (~70 bytes each) and aborts the whole process, with no
    # exception to catch, when that fails: vocab_size=1e9 asks for 70 GB.
    vocab_size: int = setting(30_000, "entries in the vocabulary, special tokens and ## pieces included",
                              min=len(SPECIAL_TOKENS) + 10, max=1_000_000)
    min_frequency: int = setting(2, "pieces seen fewer times than this are not merged into the vocabulary", min=1)
    limit_alphabet: int = setting(1000, "most distinct characters kept as single-character pieces", min=1)
    max_length: int = setting(512, "model_max_length written to tokenizer_config.json", min=8)


def _batches(settings: WordPieceSettings, size: int = 1000) -> Iterator[list[str]]:
    batch = []
    for document in source_documents(settings.source):
        text = normalize(document, settings.normalize)
        if text.strip():
            batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def train_wordpiece(settings: WordPieceSettings) -> Path:
    """Stream the corpus through the WordPiece trainer and save a BERT-compatible tokenizer folder."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    check_apart(settings.output, settings.source.corpus)
    if (Path(settings.output) / "nlpforge.json").is_file() or (Path(settings.output) / "config.json").is_file():
        raise ConfigError(f"--output {settings.output}: holds a model, whose tokenizer this would replace; write the "
                          "tokenizer to its own folder")
    check_output_folder(settings.output, "--output", "tokenizer", "tokenizer.json")
    tokenizer = BertWordPieceTokenizer(lowercase=settings.normalize.lowercase, strip_accents=None, clean_text=True)
    seen = {"documents": 0}

    def counted():
        for batch in _batches(settings):
            seen["documents"] += len(batch)
            yield batch

    tokenizer.train_from_iterator(counted(), vocab_size=settings.vocab_size, min_frequency=settings.min_frequency,
                                  limit_alphabet=settings.limit_alphabet, special_tokens=SPECIAL_TOKENS,
                                  show_progress=False)
    if seen["documents"] == 0:
        raise DataError(f"{', '.join(map(str, settings.source.corpus))}: the corpus is empty (no text after "
                        "normalisation); check the files, and --column for tables")
    folder = Path(settings.output)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_model(str(folder))  # vocab.txt
    fast = BertTokenizerFast(tokenizer_object=tokenizer._tokenizer, vocab_file=str(folder / "vocab.txt"),
                             do_lower_case=settings.normalize.lowercase, model_max_length=settings.max_length,
                             unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                             mask_token="[MASK]")
    fast.save_pretrained(str(folder))
    return folder
