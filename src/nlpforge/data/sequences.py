"""Token-tagged sentences (named entities): CoNLL-style text files and JSONL, read, cleaned and checked.

    data = read_tagged("wikiann_en/train.txt")     # TaggedFile(sentences=[(tokens, tags), ...], report)
    data.sentences[0]                              # (["R.H.", "Saunders", ...], ["B-ORG", "I-ORG", ...])

CoNLL: one `token<TAB or spaces>tag` a line (the tag in the last column), a blank line between
sentences, `-DOCSTART-` lines ignored. JSONL: one {"tokens": [...], "tags": [...]} a line.
Schemes: IOB2 (B-, I-, O) or IOBES (also S- and E-), one per file. Repairs, each counted in the report:
  - a stray I- (or E-) with no entity of its type open is made a B- (or S-);
  - a language prefix on every token (WikiANN's `en:`) is removed;
  - an HTML entity split into tokens (WNUT-17's `&`, `gt`, `;`) becomes the one character.
Stray byte-order marks (U+FEFF, invisible; WNUT-17's dev file has two) are removed from lines.
"""
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from nlpforge.data.formats import table_format
from nlpforge.data.readers import SNIFF_BYTES, check_text, decode_counted, json_record, text_lines
from nlpforge.errors import DataError

_LANGUAGE_PREFIX = re.compile(r"^[a-z]{2,3}:(?=.)")
_ENTITY_NAMES = {"amp", "lt", "gt", "quot", "apos", "nbsp"}


@dataclass
class TaggedReport:
    path: str
    sentences: int = 0
    tokens: int = 0
    repaired_tags: int = 0          # stray I-/E- made B-/S-
    prefixes_removed: int = 0       # tokens that lost a language prefix
    entities_joined: int = 0        # HTML entities rebuilt from split tokens
    replaced_bytes: int = 0         # bytes that were not valid UTF-8 and became U+FFFD
    scheme: str = "IOB2"

    def text(self) -> str:
        parts = [f"{self.path}: {self.sentences:,} sentences, {self.tokens:,} tokens, tags {self.scheme}"]
        if self.repaired_tags:
            parts.append(f"{self.repaired_tags:,} stray I-/E- tags repaired to B-/S-")
        if self.prefixes_removed:
            parts.append(f"{self.prefixes_removed:,} language prefixes removed")
        if self.entities_joined:
            parts.append(f"{self.entities_joined:,} split HTML entities joined")
        if self.replaced_bytes:
            parts.append(f"{self.replaced_bytes:,} non-UTF-8 bytes replaced with U+FFFD")
        return "; ".join(parts)


@dataclass
class TaggedFile:
    sentences: list                 # [(tokens, tags)]
    report: TaggedReport
    lines: list = field(default_factory=list)  # the file line each sentence starts on (1-based)

    @property
    def tags(self) -> set:
        return {tag for _, tags in self.sentences for tag in tags}


def read_tagged(path) -> TaggedFile:
    """Read a CoNLL-style or JSONL file of tagged sentences, with the repairs above; DataError names the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path (relative paths start at {Path.cwd()})")
    raw = path.read_bytes()
    check_text(raw[:SNIFF_BYTES], path)
    text, replaced = decode_counted(raw)
    if table_format(path) == "jsonl":
        sentences, lines = _jsonl(text, path)
    else:
        sentences, lines = _conll(text, path)
    if not sentences:
        layout = ('a JSONL file holds one {"tokens": [...], "tags": [...]} object a line'
                  if table_format(path) == "jsonl" else
                  "a CoNLL file holds `token<TAB>tag` lines with a blank line between sentences")
        raise DataError(f"{path}: no tagged sentences; {layout}")
    report = TaggedReport(str(path), replaced_bytes=replaced)
    prefixed = all(_LANGUAGE_PREFIX.match(token) for tokens, _ in sentences[:200] for token in tokens)
    cleaned = []
    for tokens, tags in sentences:
        if prefixed:
            report.prefixes_removed += sum(bool(_LANGUAGE_PREFIX.match(t)) for t in tokens)
            tokens = [_LANGUAGE_PREFIX.sub("", t) for t in tokens]
        tokens, tags, joined = _join_entities(tokens, tags)
        report.entities_joined += joined
        tags, repaired = repair_tags(tags)
        report.repaired_tags += repaired
        report.tokens += len(tokens)
        cleaned.append((tokens, tags))
    report.sentences = len(cleaned)
    report.scheme = "IOBES" if any(t[:2] in ("S-", "E-") for _, tags in cleaned for t in tags) else "IOB2"
    if report.scheme == "IOBES":
        for (_, tags), line in zip(cleaned, lines):
            open_entity = unclosed_entity(tags)
            if open_entity:
                raise DataError(f"{path}: the sentence at line {line}: entity {open_entity} does not end with "
                                f"E-{open_entity[2:]} (or start with S-), but the file uses IOBES tags (S-, E-); tag "
                                "every sentence in one scheme, IOB2 (B-, I-, O) or IOBES")
    return TaggedFile(cleaned, report, lines)


def _conll(text: str, path: Path) -> tuple[list, list]:
    sentences, lines, tokens, tags, start = [], [], [], [], 0
    for number, line in enumerate(text_lines(text), start=1):
        line = line.replace("\ufeff", "")  # stray byte-order marks, alone on a line or inside a token (WNUT-17)
        stripped = line.strip()
        if not stripped or stripped.startswith("-DOCSTART-"):
            if tokens:
                sentences.append((tokens, tags))
                lines.append(start)
                tokens, tags = [], []
            continue
        columns = line.split("\t") if "\t" in line else stripped.split()
        columns = [c.strip() for c in columns if c.strip()]
        if len(columns) < 2:
            raise DataError(f"{path}: line {number} has one column ({stripped[:40]!r}); each line needs a token and "
                            "its tag, separated by a tab or spaces")
        if not tokens:
            start = number
        tokens.append(columns[0])
        tags.append(columns[-1])
        check_tag(columns[-1], path, number)
    if tokens:
        sentences.append((tokens, tags))
        lines.append(start)
    return sentences, lines


def _jsonl(text: str, path: Path) -> tuple[list, list]:
    sentences, lines = [], []
    for number, line in enumerate(text_lines(text), start=1):
        if not line.strip():
            continue
        record = json_record(line, number, path)
        tokens, tags = record.get("tokens"), record.get("tags", record.get("ner_tags"))
        if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags) or not tokens:
            raise DataError(f"{path}: line {number} needs \"tokens\" and \"tags\" lists of the same, non-zero length")
        for token in tokens:
            if isinstance(token, bool) or not isinstance(token, (str, int, float)) or not str(token).strip():
                raise DataError(f"{path}: line {number}: token {json.dumps(token)} is not a word; \"tokens\" must be "
                                "strings (or numbers) with at least one non-space character (leave blank tokens "
                                "out, with their tags)")
        for tag in tags:
            check_tag(str(tag), path, number)
        sentences.append(([str(t) for t in tokens], [str(t) for t in tags]))
        lines.append(number)
    return sentences, lines


def check_tag(tag: str, path, number: int) -> None:
    if tag != "O" and (len(tag) < 3 or tag[1] != "-" or tag[0] not in "BIES"):
        raise DataError(f"{path}: line {number}: tag {tag!r} is not O, B-TYPE, I-TYPE, E-TYPE or S-TYPE "
                        "(IOB2 or IOBES); is the tag in the last column?")


def repair_tags(tags: list[str]) -> tuple[list[str], int]:
    """A stray I- (E-) with no entity of its type open becomes B- (S-); returns (tags, repairs)."""
    out, repaired, open_type = [], 0, None
    for tag in tags:
        kind, entity = (tag[0], tag[2:]) if tag != "O" else ("O", None)
        if kind in ("I", "E") and open_type != entity:
            tag = ("B-" if kind == "I" else "S-") + entity
            kind = tag[0]
            repaired += 1
        out.append(tag)
        open_type = entity if kind in ("B", "I") else None
    return out, repaired


def unclosed_entity(tags: list[str]) -> str | None:
    """The B-/I- tag of the first entity that IOBES does not close with E- (None when all are closed)."""
    for tag, following in zip(tags, [*tags[1:], "O"]):
        if tag[:2] in ("B-", "I-") and following not in (f"I-{tag[2:]}", f"E-{tag[2:]}"):
            return tag
    return None


def _join_entities(tokens: list[str], tags: list[str]) -> tuple[list[str], list[str], int]:
    """`&`, `gt`, `;` as three tokens -> `>` as one (the first token's tag)."""
    if "&" not in tokens:
        return tokens, tags, 0
    out_tokens, out_tags, joined, i = [], [], 0, 0
    while i < len(tokens):
        if (tokens[i] == "&" and i + 2 < len(tokens) and tokens[i + 2] == ";"
                and tokens[i + 1].lower() in _ENTITY_NAMES):
            out_tokens.append(html.unescape(f"&{tokens[i + 1].lower()};"))
            out_tags.append(tags[i])
            joined += 1
            i += 3
            continue
        out_tokens.append(tokens[i])
        out_tags.append(tags[i])
        i += 1
    return out_tokens, out_tags, joined


def entity_types(tags) -> list[str]:
    """The entity types of a tag set, sorted."""
    return sorted({tag[2:] for tag in tags if tag != "O"})
