"""SageMaker's serializers and deserializers: how Predictor.predict encodes a request and decodes the answer.

    Predictor("stars", serializer=CSVSerializer(), deserializer=JSONDeserializer())

JSON is the model server's native format ({"text": ...} or a list); CSV and plain text send one
text per line. JSON Lines (one JSON value a line) is what SageMaker workshops send to an
inference.py model, e.g. [{"features": ["Loved it"]}] with JSONLinesSerializer.
"""
import csv
import io
import json

from nlpforge.data.readers import text_lines
from nlpforge.errors import EndpointError


def _plain(data):
    """A numpy array or scalar (anything with `tolist`) as Python lists and values, as SageMaker's serializers
    take them; anything else as it is."""
    return data.tolist() if hasattr(data, "tolist") and not isinstance(data, (str, bytes, bytearray)) else data


def _records(data, serializer: str, fix: str) -> list:
    """The records (rows, lines) of a list, tuple or numpy array; anything else, a dict above all (iterating one
    would send its keys, and the answer would be for them), is refused with `fix`."""
    plain = _plain(data)
    if not isinstance(plain, (list, tuple)):
        raise EndpointError(f"{serializer} sends a list of records, one a line, not a {type(data).__name__}; {fix}")
    return plain


def _json_default(value):
    plain = _plain(value)
    if plain is value:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    return plain


class JSONSerializer:
    content_type = "application/json"

    def serialize(self, data) -> bytes:
        if isinstance(data, (bytes, bytearray)):
            return bytes(data)
        return json.dumps(_plain(data), ensure_ascii=False, default=_json_default).encode("utf-8")


class JSONLinesSerializer:
    """A list of JSON values, one a line (application/jsonlines)."""

    content_type = "application/jsonlines"

    def serialize(self, data) -> bytes:
        if isinstance(data, (bytes, bytearray)):
            return bytes(data)
        if isinstance(data, str):
            return data.encode("utf-8")
        if isinstance(data, dict):  # one record, such as {"features": ["Loved it"]}
            data = [data]
        records = _records(data, "JSONLinesSerializer", "give a list such as [{'features': ['Loved it']}]")
        return "\n".join(json.dumps(value, ensure_ascii=False, default=_json_default)
                         for value in records).encode("utf-8")


class CSVSerializer:
    content_type = "text/csv"

    def serialize(self, data) -> bytes:
        if isinstance(data, (bytes, bytearray)):
            return bytes(data)
        if isinstance(data, str):
            return data.encode("utf-8")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for row in _records(data, "CSVSerializer", "give a list of texts or of rows, or use JSONSerializer() for "
                                                   "a dict"):
            writer.writerow(row if isinstance(row, (list, tuple)) else [row])
        return buffer.getvalue().encode("utf-8")


class IdentitySerializer:
    """Sends the data as it is (str or bytes) with the given content type, e.g. 'text/plain'."""

    def __init__(self, content_type: str = "text/plain"):
        if not isinstance(content_type, str) or not content_type.strip():
            raise EndpointError(f"IdentitySerializer's content_type must be a media type such as 'text/plain', not "
                                f"{content_type!r}")
        self.content_type = content_type

    def serialize(self, data) -> bytes:
        if isinstance(data, (bytes, bytearray, memoryview)):
            return bytes(data)
        if isinstance(data, str):
            return data.encode("utf-8")
        # str() of anything else would send its repr, e.g. "['a', 'b']", and get an answer for that text.
        raise EndpointError(f"IdentitySerializer sends a str or bytes as it is, not a {type(data).__name__}; give the "
                            "request body as a string (e.g. one text a line: '\\n'.join(texts)), or use "
                            "JSONSerializer() for a list or dict")


class JSONDeserializer:
    ACCEPT = ("application/json",)

    def deserialize(self, body: bytes, content_type: str | None = None):
        return json.loads(body.decode("utf-8"))


class JSONLinesDeserializer:
    ACCEPT = ("application/jsonlines",)

    def deserialize(self, body: bytes, content_type: str | None = None) -> list:
        return [json.loads(line) for line in text_lines(body.decode("utf-8")) if line.strip()]


class StringDeserializer:
    ACCEPT = ("text/plain", "application/json")

    def deserialize(self, body: bytes, content_type: str | None = None) -> str:
        return body.decode("utf-8")


class CSVDeserializer:
    ACCEPT = ("text/csv",)

    def deserialize(self, body: bytes, content_type: str | None = None) -> list[list[str]]:
        return list(csv.reader(io.StringIO(body.decode("utf-8"))))
