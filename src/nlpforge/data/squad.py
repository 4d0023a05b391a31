"""Extractive question answering data: SQuAD v1.1 / v2.0 JSON, or JSONL, read and checked.

    examples, report = read_squad("train-v1.1.json")
    examples[0]   # QAExample(id, question, context, answers=[("Denver Broncos", 177)], impossible=False)

JSON: {"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", "answers":
[{"text", "answer_start"}], "is_impossible"}]}]}]}. JSONL: one {"id", "question", "context",
"answers": {"text": [...], "answer_start": [...]}} (or a list of {"text", "answer_start"}) a line.
An answer whose `answer_start` does not point at its text is never trusted silently: it moves to
the nearest place the text occurs (counted), or is dropped when the text is nowhere (counted). An
`answer_start` beyond its context, and any part of the file not in the shape above, is an error naming
the question or the place in the file (`data[0].paragraphs[2].qas[1].answers`, or the JSONL line).
"""
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

from nlpforge.data.formats import misspelled_key
from nlpforge.data.readers import SNIFF_BYTES, check_text, decode_counted, json_record, text_lines
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
    replaced_bytes: int = 0  # bytes that were not valid UTF-8 and became U+FFFD

    @property
    def version(self) -> str:
        return "2.0" if self.impossible else "1.1"

    def text(self) -> str:
        line = (f"{self.path}: {self.examples:,} questions on {self.contexts:,} contexts (SQuAD v{self.version}"
                + (f", {self.impossible:,} without an answer" if self.impossible else "") + ")")
        if self.moved or self.dropped:
            line += (f"; {self.moved + self.dropped:,} answer_start values did not match their text: {self.moved:,} "
                     f"moved to the nearest occurrence, {self.dropped:,} dropped")
        if self.replaced_bytes:
            line += f"; {self.replaced_bytes:,} non-UTF-8 bytes replaced with U+FFFD"
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
    text, replaced = decode_counted(data)
    report = QAReport(str(path), replaced_bytes=replaced)
    raw = _jsonl(text, path) if _is_jsonl(text, path) else _json(text, path)
    contexts = set()
    examples = []
    seen: dict = {}  # id -> where it first appears: predictions and scores are keyed by id
    for qid, question, context, answers, impossible, where in raw:
        where = where if str(where).endswith(f": {qid}") else f"{where}: question {qid}"  # a JSONL row's id is its line
        if not isinstance(question, str) or not isinstance(context, str) or not context.strip():
            raise DataError(f"{where}: needs a \"question\" and a non-empty \"context\"")
        if str(qid) in seen:
            raise DataError(f"{where}: the id {str(qid)!r} is also the id of {seen[str(qid)]}; answers are scored "
                            "by id, so give every question its own \"id\"")
        seen[str(qid)] = where
        if impossible in (0, 1) and not isinstance(impossible, float):  # true/false, or 0/1 as some tools write
            impossible = bool(impossible)
        else:
            raise DataError(f"{where}: \"is_impossible\" must be true or false, not {_json_kind(impossible)}")
        if impossible and answers:
            raise DataError(f"{where}: \"is_impossible\" is true but the question has {len(answers)} answer(s); "
                            "give an impossible question \"answers\": [] (SQuAD v2.0 keeps its guesses under "
                            "\"plausible_answers\"), or set \"is_impossible\": false")
        checked = []
        for answer_text, start in answers:
            if not answer_text.strip():
                raise DataError(f"{where}: an answer's \"text\" is empty; give the answer's words, or for a question "
                                "without an answer give \"answers\": [] and \"is_impossible\": true")
            if start < 0:
                raise DataError(f"{where}: answer_start {start} is negative; it counts the "
                                "characters of the context before the answer")
            if start >= len(context):
                raise DataError(f"{where}: answer_start {start} is beyond its context "
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
    if not examples and report.dropped:
        raise DataError(f"{path}: no questions with answers: the text of each of its {report.dropped:,} answers occurs "
                        "nowhere in its context; an answer's text must be copied from the context")
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


SQUAD_SHAPE = ('{"data": [{"paragraphs": [{"context": "...", "qas": [{"id": "...", "question": "...", '
               '"answers": [{"text": "...", "answer_start": 0}]}]}]}]}')
JSONL_SHAPE = ('{"id": "...", "question": "...", "context": "...", "answers": {"text": ["..."], "answer_start": [0]}} '
               '(or "answers": [{"text": "...", "answer_start": 0}])')
ANSWER_SHAPE = '{"text": "...", "answer_start": 0}'


def _json_kind(value) -> str:
    """How a JSON value reads in a message: 'a string "x"', 'an object', ..."""
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:20] + "..."
        return f"a string {json.dumps(shown, ensure_ascii=False)}"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return f"a number {value}"
    return "an object" if isinstance(value, dict) else "a list"


def _shape_error(where: str, value, expected: str, shape: str) -> DataError:
    return DataError(f"{where} is {_json_kind(value)}, not {expected}; the file must look like {shape}")


def _items(container: dict, key: str, where: str, shape: str) -> list:
    """`container[key]` as a list (missing or null: empty), else a DataError naming `where`."""
    value = container.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _shape_error(f"{where}.{key}", value, "a list", shape)
    return value


def _answers(value, where: str, shape: str) -> list[tuple[str, int]]:
    """[(text, answer_start)] from a list of {"text", "answer_start"} objects, or from {"text": [...],
    "answer_start": [...]} (the Hugging Face datasets layout); a DataError naming `where` otherwise."""
    if value is None:
        return []
    if isinstance(value, dict):
        texts, starts = value.get("text", []), value.get("answer_start", [])
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise DataError(f"{where}: an object of answers must hold two lists of the same length, "
                            '{"text": ["..."], "answer_start": [0]}; for one answer write '
                            f"[{ANSWER_SHAPE}]")
        value = [{"text": t, "answer_start": s} for t, s in zip(texts, starts)]
    elif not isinstance(value, list):
        raise _shape_error(where, value, "a list of answers", shape)
    pairs = []
    for i, answer in enumerate(value):
        if not isinstance(answer, dict):
            raise _shape_error(f"{where}[{i}]", answer, f"an answer {ANSWER_SHAPE}", shape)
        text, start = answer.get("text"), answer.get("answer_start")
        if not isinstance(text, str):
            raise DataError(f"{where}[{i}]: \"text\" must be the answer's text as a string, not "
                            f"{_json_kind(text)}; an answer is {ANSWER_SHAPE}")
        if not isinstance(start, int) or isinstance(start, bool):
            raise DataError(f"{where}[{i}]: \"answer_start\" must be a whole number (the answer's first character "
                            f"in the context), not {_json_kind(start)}; an answer is {ANSWER_SHAPE}")
        pairs.append((text, start))
    return pairs


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
    for a, article in enumerate(document["data"]):
        at = f"{path}: data[{a}]"
        if not isinstance(article, dict):
            raise _shape_error(at, article, 'an object with "paragraphs"', SQUAD_SHAPE)
        for p, paragraph in enumerate(_items(article, "paragraphs", at, SQUAD_SHAPE)):
            at_paragraph = f"{at}.paragraphs[{p}]"
            if not isinstance(paragraph, dict):
                raise _shape_error(at_paragraph, paragraph, 'an object with "context" and "qas"', SQUAD_SHAPE)
            context = paragraph.get("context")
            for q, qa in enumerate(_items(paragraph, "qas", at_paragraph, SQUAD_SHAPE)):
                at_qa = f"{at_paragraph}.qas[{q}]"
                if not isinstance(qa, dict):
                    raise _shape_error(at_qa, qa, 'an object with "question" and "answers"', SQUAD_SHAPE)
                answers = _answers(qa.get("answers"), f"{at_qa}.answers", SQUAD_SHAPE)
                if not answers and qa.get("is_impossible") is None:  # else the question would leave the scores unsaid
                    raise DataError(f"{at_qa}: the question has no answers and no \"is_impossible\"; give its "
                                    f"answers, [{ANSWER_SHAPE}], or \"is_impossible\": true for a question that the "
                                    "context does not answer (SQuAD v2.0)")
                qid = qa.get("id")
                impossible = qa.get("is_impossible")
                yield (at_qa.removeprefix(f"{path}: ") if qid is None else qid, qa.get("question"), context, answers,
                       False if impossible is None else impossible, at_qa)


JSONL_KEYS = ("id", "question", "context", "answers", "is_impossible")


def _jsonl(text: str, path: Path):
    for number, line in enumerate(text_lines(text), start=1):
        if not line.strip():
            continue
        record = json_record(line, number, path)
        misspelled = misspelled_key(record, (("question",), ("context",), ("answers",)))
        if misspelled:
            raise DataError(f"{path}: line {number}: the key \"{misspelled[0]}\" is not one a question reads; did "
                            f"you mean \"{misspelled[1]}\"? (a row holds {', '.join(JSONL_KEYS)})")
        pairs = _answers(record.get("answers"), f"{path}: line {number}: answers", JSONL_SHAPE)
        impossible = record.get("is_impossible")
        qid = record.get("id")
        yield (f"line {number}" if qid is None else qid, record.get("question"), record.get("context"), pairs,
               not pairs if impossible is None else impossible,
               f"{path}: line {number}")
