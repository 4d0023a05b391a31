"""Extractive question answering data: SQuAD v1.1 / v2.0 JSON, or JSONL, read and checked.

    examples, report = read_squad("train-v1.1.json")
    examples[0]   # QAExample(id, question, context, answers=[("Denver Broncos", 177)], impossible=False)

JSON: {"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", "answers":
[{"text", "answer_start"}], "is_impossible"}]}]}]}. JSONL: one {"id", "question", "context",
"answers": {"text": [...], "answer_start": [...]}} (or a list of {"text", "answer_start"}) a line.
An answer whose `answer_start` does not point at its text is never trusted silently: it moves to
the nearest place the text occurs (counted), or is dropped when the text is nowhere (counted). An
`answer_start` beyond its context is an error naming the question.
"""
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

from nlpforge.data.readers import SNIFF_BYTES, check_text, json_record
from nlpforge.errors import DataError


@dataclass
class QAExample:
    id: str
    question: str
    context: str
    answers: list = field(default_factory=list)   # [(text, character start)]
    impossible: bool = False


@dataclass
class QAReport:
    path: str
    examples: int = 0
    contexts: int = 0
    impossible: int = 0
    moved: int = 0      # answer_start did not match; moved to the nearest occurrence of the text
    dropped: int = 0    # answer text not in the context at all

    @property
    def version(self) -> str:
        return "2.0" if self.impossible else "1.1"

    def text(self) -> str:
        line = (f"{self.path}: {self.examples:,} questions on {self.contexts:,} contexts (SQuAD v{self.version}"
                + (f", {self.impossible:,} without an answer" if self.impossible else "") + ")")
        if self.moved or self.dropped:
            line += (f"; {self.moved + self.dropped:,} answer_start values did not match their text: {self.moved:,} "
                     f"moved to the nearest occurrence, {self.dropped:,} dropped")
        return line


def read_squad(path) -> tuple[list[QAExample], QAReport]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path (relative paths start at {Path.cwd()})")
    data = path.read_bytes()
    if path.suffix.lower() == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise DataError(f"{path}: not a readable gzip file ({error})") from None
    check_text(data[:SNIFF_BYTES], path)
    text = data.decode("utf-8-sig", errors="replace")
    report = QAReport(str(path))
    raw = _jsonl(text, path) if _is_jsonl(text, path) else _json(text, path)
    contexts = set()
    examples = []
    for qid, question, context, answers, impossible, where in raw:
        if not isinstance(question, str) or not isinstance(context, str) or not context.strip():
            raise DataError(f"{where}: question {qid}: needs a \"question\" and a non-empty \"context\"")
        checked = []
        for answer_text, start in answers:
            if not isinstance(start, int) or start < 0 or start >= len(context):
                raise DataError(f"{where}: question {qid}: answer_start {start} is beyond its context "
                                f"({len(context)} characters)")
            if context[start:start + len(answer_text)] != answer_text:
                nearest = _nearest(context, answer_text, start)
                if nearest is None:
                    report.dropped += 1
                    continue
                report.moved += 1
                start = nearest
            checked.append((answer_text, start))
        if not checked and not impossible:
            continue  # every answer was dropped: nothing to learn from this question
        contexts.add(context)
        report.impossible += bool(impossible)
        examples.append(QAExample(str(qid), question, context, checked, bool(impossible)))
    report.examples, report.contexts = len(examples), len(contexts)
    if not examples:
        raise DataError(f"{path}: no questions with answers; is this a SQuAD file?")
    return examples, report


def _is_jsonl(text: str, path: Path) -> bool:
    """JSONL by name (.jsonl), or a .json file whose first line is a whole record with a "question"."""
    if ".jsonl" in [s.lower() for s in path.suffixes]:
        return True
    first = text.lstrip().split("\n", 1)[0]
    try:
        record = json.loads(first)
    except (json.JSONDecodeError, RecursionError):
        return False
    return isinstance(record, dict) and "question" in record and "data" not in record


def _nearest(context: str, answer: str, start: int) -> int | None:
    if not answer:
        return None
    found, position = [], context.find(answer)
    while position >= 0:
        found.append(position)
        position = context.find(answer, position + 1)
    return min(found, key=lambda p: abs(p - start)) if found else None


def _json(text: str, path: Path):
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}); a SQuAD file is one JSON "
                        "document, JSONL files end in .jsonl") from None
    except RecursionError:
        raise DataError(f"{path}: nested too deeply to be a SQuAD file") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise DataError(f"{path}: no \"data\" key; a SQuAD file is {{\"data\": [{{\"paragraphs\": [...]}}]}}")
    for article in document["data"]:
        for paragraph in article.get("paragraphs", []):
            context = paragraph.get("context")
            for qa in paragraph.get("qas", []):
                answers = [(a.get("text", ""), a.get("answer_start")) for a in qa.get("answers", [])]
                yield qa.get("id", "?"), qa.get("question"), context, answers, qa.get("is_impossible", False), path


def _jsonl(text: str, path: Path):
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        record = json_record(line, number, path)
        answers = record.get("answers", [])
        if isinstance(answers, dict):
            answers = [{"text": t, "answer_start": s} for t, s in zip(answers.get("text", []),
                                                                     answers.get("answer_start", []))]
        pairs = [(a.get("text", ""), a.get("answer_start")) for a in answers]
        impossible = record.get("is_impossible", not pairs)
        yield (record.get("id", f"line {number}"), record.get("question"), record.get("context"), pairs, impossible,
               f"{path}: line {number}")
