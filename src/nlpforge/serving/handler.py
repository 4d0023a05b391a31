"""The handler contract: how a served model turns requests into answers, in three steps.

    decode_request(body)  -> one input   runs in the server, cheap, validates the request
    predict(batch)        -> outputs     runs in a worker process, on a whole batch
    encode_response(out)  -> JSON value  runs in the server

`setup(folder, backend, threads)` loads the model inside the worker. A task (token
classification, QA, fill-mask, embeddings) adds one subclass and one line in `HANDLERS`.

    handler = TextClassificationHandler()
    handler.setup("models/stars", backend="torch", threads=2)
    handler.predict(["Loved it"])  # [{"label": 5, "score": 0.8, "probabilities": {...}, "truncated": False}]
"""
import os
from abc import ABC, abstractmethod
from pathlib import Path

from nlpforge.errors import ArtifactError, RequestError

BACKENDS = ("torch", "onnx", "onnx-int8")


class Handler(ABC):
    """One task's request decoding, batch prediction and response encoding."""

    task: str = ""

    def setup(self, folder: str, backend: str = "torch", threads: int = 1) -> None:
        """Load the model; called once in each worker process."""

    def decode_request(self, value) -> object:
        """Turn one decoded request value (a str or a JSON object) into one model input."""
        return value

    @abstractmethod
    def predict(self, batch: list) -> list:
        """Outputs for a batch of inputs, one per input and in the same order."""

    def encode_response(self, output) -> object:
        return output

    def explain(self, batch: list) -> list:
        raise RequestError(f"the {self.task} handler does not give explanations", status=400)


def text_of(value, max_chars: int) -> str:
    """The text of one request item: a string, or an object with "text", "data", "body" or "inputs"."""
    if isinstance(value, dict):
        for key in ("text", "data", "body", "inputs", "input"):
            if key in value:
                value = value[key]
                break
        else:
            raise RequestError('a JSON object must hold the text under "text" (or "data"), '
                               'e.g. {"text": "Loved it"}')
    if isinstance(value, (bytes, bytearray)):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("the text is not valid UTF-8; send UTF-8 text") from None
    if not isinstance(value, str):
        raise RequestError(f"the text must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RequestError("the text is empty; send at least one non-space character")
    if len(value) > max_chars:
        raise RequestError(f"the text has {len(value)} characters, over the limit of {max_chars}; "
                           "split it or raise --max-text-chars", status=413)
    return value


class TextClassificationHandler(Handler):
    """nlpforge text classifiers: the label, its score, every class's probability, and a truncation flag."""

    task = "text-classification"

    def __init__(self, max_chars: int = 100_000, chunk_tokens: int = 1024):
        self.max_chars = max_chars
        self.chunk_tokens = chunk_tokens
        self.session = None

    def setup(self, folder: str, backend: str = "torch", threads: int = 1) -> None:
        import torch
        from transformers import AutoTokenizer

        from nlpforge.models.artifact import load

        if backend not in BACKENDS:
            raise ArtifactError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        torch.set_num_threads(max(1, threads))
        self.folder, self.backend, self.threads = Path(folder), backend, threads
        if backend == "torch":
            self.classifier = load(folder)
            self.tokenizer, self.labels = self.classifier.tokenizer, self.classifier.labels
            self.max_seq_length = self.classifier.max_seq_length
        else:
            from nlpforge.models.artifact import read_metadata
            from nlpforge.serving.onnx_backend import open_session

            meta, label_info = read_metadata(folder)
            self.classifier = None
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
            self.labels = label_info["labels"]
            self.max_seq_length = int(meta.get("max_seq_length", 512))
            self.session = open_session(folder, quantized=backend == "onnx-int8", threads=threads)

    def decode_request(self, value) -> str:
        return text_of(value, self.max_chars)

    def _encode(self, texts: list[str], framework: str):
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_seq_length, padding=True,
                                 return_offsets_mapping=True, return_tensors=framework)
        offsets = encoded.pop("offset_mapping")  # (B, T, 2) character spans, (0, 0) for special tokens
        return encoded, _truncated(texts, offsets.tolist())

    def predict(self, batch: list[str]) -> list[dict]:
        """Sorted by length and cut into chunks of at most `chunk_tokens` padded tokens: on a CPU the cost
        is rows x padded length, so padding short reviews to a long one's length would waste most of it."""
        import numpy as np

        encoded = self.tokenizer(batch, truncation=True, max_length=self.max_seq_length,
                                 return_offsets_mapping=True)
        truncated = _truncated(batch, encoded["offset_mapping"])
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in encoded]
        lengths = [len(ids) for ids in encoded["input_ids"]]
        probabilities = np.zeros((len(batch), len(self.labels)), dtype=np.float32)
        for chunk in _chunks(lengths, self.chunk_tokens):
            width = max(lengths[i] for i in chunk)
            arrays = {}
            for name in names:
                fill = (self.tokenizer.pad_token_id or 0) if name == "input_ids" else 0
                rows = np.full((len(chunk), width), fill, dtype=np.int64)  # (B, T)
                for row, i in enumerate(chunk):
                    rows[row, :lengths[i]] = encoded[name][i]
                arrays[name] = rows
            probabilities[chunk] = self._probabilities(arrays)
        return [self._answer(row, flag) for row, flag in zip(probabilities, truncated)]

    def _probabilities(self, arrays: dict):
        import numpy as np

        if self.session is not None:
            feeds = {i.name: arrays[i.name] for i in self.session.get_inputs() if i.name in arrays}
            logits = self.session.run(None, feeds)[0]  # (B, num_labels)
            logits = logits - logits.max(axis=-1, keepdims=True)
            return np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
        import torch

        with torch.inference_mode():
            logits = self.classifier.model(**{k: torch.from_numpy(v) for k, v in arrays.items()}).logits
            return torch.softmax(logits.float(), dim=-1).numpy()

    def _answer(self, row, truncated: bool) -> dict:
        best = int(row.argmax())
        return {"label": self.labels[best], "score": float(row[best]),
                "probabilities": {str(label): float(p) for label, p in zip(self.labels, row)},
                "truncated": bool(truncated)}

    def explain(self, batch: list[str]) -> list[dict]:
        """The prediction plus attention weights: every layer's head-averaged (T, T) matrix and the
        last layer's attention from [CLS] to each token."""
        import torch
        from transformers import AutoModelForSequenceClassification

        if not hasattr(self, "attention_model"):
            # SDPA kernels do not return attention weights; the eager implementation does.
            self.attention_model = AutoModelForSequenceClassification.from_pretrained(
                str(self.folder), attn_implementation="eager").eval()
        out = []
        for text in batch:
            encoded, truncated = self._encode([text], "pt")
            with torch.inference_mode():
                result = self.attention_model(**encoded, output_attentions=True)
            probabilities = torch.softmax(result.logits.float(), dim=-1).numpy()[0]
            layers = [layer[0].mean(dim=0) for layer in result.attentions]  # each (T, T), heads averaged
            tokens = self.tokenizer.convert_ids_to_tokens(encoded["input_ids"][0].tolist())
            out.append({**self._answer(probabilities, truncated[0]), "tokens": tokens,
                        "cls_attention": [round(v, 5) for v in layers[-1][0].tolist()],
                        "attentions": [[[round(v, 5) for v in row] for row in layer.tolist()] for layer in layers]})
        return out


def _truncated(texts: list[str], offsets) -> list[bool]:
    """Whether each text lost characters to truncation: its last token ends before the text does."""
    return [max((end for _, end in spans), default=0) < len(text.rstrip()) for text, spans in zip(texts, offsets)]


def _chunks(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Indices sorted by length, cut so that rows x longest row stays within max_tokens."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    chunks, current = [], []
    for i in order:
        if current and (len(current) + 1) * lengths[i] > max_tokens:
            chunks.append(current)
            current = []
        current.append(i)
    if current:
        chunks.append(current)
    return chunks


class EchoHandler(Handler):
    """Answers with the input's length, without a model: measures the server's own overhead."""

    task = "echo"

    def decode_request(self, value) -> str:
        return text_of(value, 100_000)

    def predict(self, batch: list[str]) -> list[dict]:
        return [{"label": "echo", "score": 1.0, "probabilities": {"echo": 1.0}, "length": len(t),
                 "truncated": False} for t in batch]


HANDLERS: dict[str, type[Handler]] = {
    TextClassificationHandler.task: TextClassificationHandler,
    EchoHandler.task: EchoHandler,
}


def handler_for(folder: str) -> Handler:
    """The handler of a model folder's task (from nlpforge.json), or a clear error."""
    import json

    meta_file = Path(folder) / "nlpforge.json"
    try:
        task = json.loads(meta_file.read_text(encoding="utf-8")).get("task")
    except (OSError, ValueError):
        raise ArtifactError(f"{folder}: not an nlpforge model folder (no readable nlpforge.json); "
                            "give the folder that `nlpforge train` wrote") from None
    if task not in HANDLERS:
        raise ArtifactError(f"{folder}: no handler serves the task {task!r} yet; served tasks: "
                            + ", ".join(HANDLERS))
    return HANDLERS[task]()


def default_threads(workers: int) -> int:
    """Threads per worker: the cores shared out among the workers, at least one each."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))
