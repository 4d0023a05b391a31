"""Token classification (named entities): a tag per word, entities with character offsets out.

    nlpforge train token-classification --train wikiann_en/train.txt --validation wikiann_en/dev.txt \\
        --model minilm-l6 --output models/ner
    nlpforge.load("models/ner").predict("Angela Merkel visited Paris.")
    # [{"entities": [{"entity": "PER", "word": "Angela Merkel", "start": 0, "end": 13, "score": 0.98}, ...],
    #   "truncated": False}]

Data: CoNLL-style files or JSONL (nlpforge.data.sequences), IOB2 or IOBES. Each word's first
sub-token carries its tag and the others are left out of the loss (`--label-all-tokens` tags
them too). A sentence longer than max_seq_length is cut into windows that overlap by `--stride`
tokens, never truncated; at prediction a word takes its tag from the window where it sits
furthest from an edge. Head: transformers' token-classification head. Metrics: entity-level
precision, recall and F1 per type and micro-averaged (seqeval, strict mode), and token accuracy.

Raw text is split into words by `split_words`, the same function at training time (JSONL rows
that give "text" instead of "tokens") and at prediction time. Aggregation: `first` (a word's tag
is its first sub-token's), `max` (its highest-scoring sub-token's) and `simple` (sub-tokens
grouped as they come, as transformers' pipeline does).
"""
import collections
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from nlpforge.data.batching import MODEL_INPUTS, pad_batch
from nlpforge.data.labelled import file_sha256
from nlpforge.data.sequences import entity_types, read_tagged
from nlpforge.errors import DataError, InputError
from nlpforge.settings import Settings, setting
from nlpforge.tasks.base import (MAX_TEXT_CHARS, FeatureDataset, Task, TrainingData, check_keys, hold_out,
                                run_features, softmax, text_of)
from nlpforge.tasks.explanations import explain_inputs

Aggregation = Literal["first", "max", "simple"]
# A word, as the CoNLL corpora split text: a title or initials with their dots (Dr., U.S.), a number
# (3.50, 1,000), letters and digits with inner apostrophes or hyphens (O'Neil, e-mail), or one other
# non-space character.
_WORD = re.compile(r"(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|Inc|Ltd|Co|Corp|vs|etc)\.|(?:[A-Za-z]\.){2,}|\d+(?:[.,]\d+)*"
                   r"|\w+(?:['’\-]\w+)*|[^\w\s]")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """(word, start, end) of every word of a raw text, as training data tokenizes it."""
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


@dataclass
class TokenClassificationData(Settings):
    """Which tagged files a token classifier trains on, and how words become windows."""

    train: str = setting("", "training file: CoNLL (token<TAB>tag lines) or JSONL (tokens and tags)", required=True)
    validation: str | None = setting(None, "validation file (default: a tenth of --train's sentences)")
    test: str | None = setting(None, "test file, evaluated once with the best weights at the end")
    stride: int = setting(32, "tokens that consecutive windows of a long sentence share (at most half a window)",
                          min=0)
    label_all_tokens: bool = setting(False, "tag every sub-token of a word, not only the first")
    validation_fraction: float = setting(0.1, "share of --train held out when no --validation is given",
                                         min=0.001, max=0.999)
    max_train_sentences: int | None = setting(None, "use only this many training sentences", min=1)


def effective_stride(stride: int, max_seq_length: int) -> int:
    """The overlap of consecutive windows: `stride`, at most half a window."""
    return min(stride, (max_seq_length - 2) // 2)


def windows(tokenizer, sentences: list[list[str]], max_seq_length: int, stride: int) -> list[dict]:
    """Features of word-split sentences: windows of at most max_seq_length tokens that overlap by `stride`
    (at most half a window), each with its sentence index, its tokens' word indices and offsets within
    the word, and the first and last content positions."""
    stride = effective_stride(stride, max_seq_length)
    encoded = tokenizer(sentences, is_split_into_words=True, truncation=True, max_length=max_seq_length,
                        stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True, verbose=False)
    features = []
    for i, ids in enumerate(encoded["input_ids"]):
        words = encoded.word_ids(i)
        content = [p for p, w in enumerate(words) if w is not None]
        features.append({"input_ids": ids, **{k: encoded[k][i] for k in ("token_type_ids", "attention_mask")
                                              if k in encoded},
                         "sentence": int(encoded["overflow_to_sample_mapping"][i]), "words": words,
                         "offsets": [tuple(o) for o in encoded["offset_mapping"][i]],
                         "content": (content[0], content[-1]) if content else (0, -1)})
    return features


def label_windows(features: list[dict], tags: list[list[int]], label_all: bool) -> None:
    """Add "labels" to training windows: a word's tag on its first sub-token (on all, with label_all), -100 else."""
    for feature in features:
        sentence_tags, labels, previous = tags[feature["sentence"]], [], None
        for word in feature["words"]:
            if word is None:
                labels.append(-100)
            elif word != previous or label_all:
                labels.append(sentence_tags[word])
            else:
                labels.append(-100)
            previous = word
        feature["labels"] = labels


def word_scores(features: list[dict], outputs: list[dict], sentence_lengths: list[int]) -> list[np.ndarray]:
    """(words, tags) probabilities per sentence, from each word's first sub-token in the window where that
    sub-token sits furthest from a window edge."""
    best: list = [np.full(n, -1.0) for n in sentence_lengths]
    chosen: list = [None] * len(sentence_lengths)
    for feature, output in zip(features, outputs):
        s, (first, last) = feature["sentence"], feature["content"]
        if chosen[s] is None:
            chosen[s] = np.zeros((sentence_lengths[s], output["logits"].shape[-1]))
        previous = None
        for position, word in enumerate(feature["words"]):
            if word is None or word == previous:
                previous = word
                continue
            previous = word
            context = min(position - first, last - position)
            if context > best[s][word]:
                best[s][word] = context
                chosen[s][word] = softmax(output["logits"][position])
    return [c if c is not None else np.zeros((0, 1)) for c in chosen]


def check_scheme(tagged, scheme: str, trained_on: str) -> None:
    """A DataError when a file's entities are tagged in another scheme than the model's: seqeval's strict mode
    would refuse the tags (S-/E- under IOB2) or drop the entities (B- without E- under IOBES)."""
    if tagged.report.scheme != scheme and tagged.tags - {"O"}:
        raise DataError(f"{tagged.report.path}: the tags are {tagged.report.scheme} but {trained_on} uses {scheme}; "
                        f"write the file's tags in {scheme} (IOB2: B-, I-, O; IOBES: also S- for one word, E- for "
                        "the last)")


def entity_metrics(true_tags: list[list[str]], predicted: list[list[str]], scheme: str) -> tuple[dict, dict]:
    """Entity-level scores (seqeval, strict mode): ({precision, recall, f1 (micro), token_accuracy},
    {type: {precision, recall, f1, support}})."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2, IOBES

    report = classification_report(true_tags, predicted, mode="strict", scheme=IOBES if scheme == "IOBES" else IOB2,
                                   output_dict=True, zero_division=0)
    tokens = sum(len(t) for t in true_tags)
    correct = sum(a == b for t, p in zip(true_tags, predicted) for a, b in zip(t, p))
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    metrics = {"precision": float(micro["precision"]), "recall": float(micro["recall"]),
               "f1": float(micro["f1-score"]), "token_accuracy": correct / max(tokens, 1)}
    per_type = {name: {"precision": float(row["precision"]), "recall": float(row["recall"]),
                       "f1": float(row["f1-score"]), "support": int(row["support"])}
                for name, row in report.items() if not name.endswith(" avg")}
    return metrics, per_type


def entity_report(title: str, gold: list[list[str]], predicted: list[list[str]], scheme: str) -> tuple[dict, str]:
    """The scores of `entity_metrics` plus a confusion of entity types, as a dict and as the text report."""
    metrics, per_type = entity_metrics(gold, predicted, scheme)
    confusion = type_confusion(gold, predicted)
    return ({**metrics, "per_type": per_type, "confusion": confusion},
            render_entity_report(title, metrics, per_type, confusion))


class TokenClassification(Task):
    name = "token-classification"
    summary = "Fine-tune a BERT-family encoder to tag words (named entities: PER, ORG, LOC, ...)."
    settings = TokenClassificationData
    model_class = "AutoModelForTokenClassification"
    outputs = {"logits": ("batch", "sequence")}
    example_input = "Angela Merkel visited Paris."
    metrics = ("validation_f1", "validation_precision", "validation_recall", "validation_token_accuracy")
    info_keys = ("labels",)

    # --- training -------------------------------------------------------------------------------------
    def prepare(self, settings: TokenClassificationData, tokenizer, *, max_seq_length: int, seed: int,
                log) -> TrainingData:
        train_file = read_tagged(settings.train)
        if not train_file.tags - {"O"}:
            raise DataError(f"{settings.train}: every tag is O, so there are no entities to learn; tag the entities "
                            "(B-PER, I-PER, ... or IOB1/IOBES), or check the tag column")
        sentences = train_file.sentences
        files = [train_file]
        if settings.validation:
            validation_file = read_tagged(settings.validation)
            unseen = sorted(validation_file.tags - train_file.tags)
            if unseen:
                where = next(line for (tokens, tags), line in zip(validation_file.sentences, validation_file.lines)
                             if set(tags) & set(unseen))
                raise DataError(f"{settings.validation}: line {where}: tag(s) {', '.join(unseen)} never appear in "
                                f"the training file {settings.train}; known tags: {', '.join(sorted(train_file.tags))}")
            check_scheme(validation_file, train_file.report.scheme, f"the training file {settings.train}")
            held = validation_file.sentences
            files.append(validation_file)
        else:
            sentences, held = hold_out(sentences, settings.validation_fraction, seed, what="sentences",
                                       source=settings.train)
        if not any(tag != "O" for _, tags in held for tag in tags):  # F1 would be 0 every epoch: no best one
            source = settings.validation or f"{settings.train}: the {len(held):,} sentences held out for validation"
            raise DataError(f"{source}: every tag is O, so there are no entities to score and choose the best epoch "
                            "by; give a validation file with entities" + ("" if settings.validation else
                                                                          " (--validation) or a larger "
                                                                          "--validation-fraction"))
        if settings.max_train_sentences:
            sentences = sentences[:settings.max_train_sentences]
        labels = ["O", *sorted(train_file.tags - {"O"}, key=lambda t: (t[2:], t[0]))]
        label_id = {tag: i for i, tag in enumerate(labels)}
        scheme = train_file.report.scheme
        train_features = windows(tokenizer, [tokens for tokens, _ in sentences], max_seq_length, settings.stride)
        label_windows(train_features, [[label_id[t] for t in tags] for _, tags in sentences],
                      settings.label_all_tokens)
        held_features = windows(tokenizer, [tokens for tokens, _ in held], max_seq_length, settings.stride)
        long_sentences = len(train_features) - len(sentences)  # windows beyond one per sentence
        extra: dict = {"scheme": scheme, "labels": labels}

        def tags_of(run, features, count_sentences) -> list[list[str]]:
            outputs = run(lambda model, batch: {"logits": model(**batch).logits.float()}, features)
            return [[labels[int(i)] for i in scores.argmax(-1)] if len(scores) else []
                    for scores in word_scores(features, outputs, [len(t) for t, _ in count_sentences])]

        def scored(run, features, gold, prefix) -> dict:
            predicted = tags_of(run, features, gold)
            metrics, extra[f"{prefix}_per_type"] = entity_metrics([tags for _, tags in gold], predicted, scheme)
            return {f"{prefix}_{name}": value for name, value in metrics.items()}

        test_file = read_tagged(settings.test) if settings.test else None  # read now, not after the epochs
        if test_file:
            check_scheme(test_file, scheme, f"the training file {settings.train}")

        def test(run) -> dict:
            features = windows(tokenizer, [tokens for tokens, _ in test_file.sentences], max_seq_length,
                               settings.stride)
            return scored(run, features, test_file.sentences, "test")

        report = "\n".join(["data report", *(f"  {f.report.text()}" for f in files),
                            f"  train {len(sentences):,} sentences in {len(train_features):,} windows of at most "
                            f"{max_seq_length} tokens ({long_sentences:,} extra windows for long sentences, "
                            f"stride {effective_stride(settings.stride, max_seq_length)}); validation "
                            f"{len(held):,} sentences"
                            + ("" if settings.validation else " (held out of --train)"),
                            f"  tags: {', '.join(labels)}"])
        return TrainingData(
            train=FeatureDataset(train_features), lengths=[len(f["input_ids"]) for f in train_features],
            collate=lambda rows: pad_batch([{k: r[k] for k in (*MODEL_INPUTS, "labels") if k in r} for r in rows],
                                           tokenizer.pad_token_id or 0),
            step=token_loss, evaluate=lambda run: scored(run, held_features, held, "validation"),
            test=test if settings.test else None, metric_for_best="validation_f1",
            fingerprint={"labels": labels, "train_sentences": len(sentences), "stride": settings.stride,
                         "label_all_tokens": settings.label_all_tokens, "train": settings.train},
            report=report,
            files=[{"path": f.report.path, "sha256": file_sha256(f.report.path), "rows": f.report.sentences,
                    "role": "train" if i == 0 else "validation"} for i, f in enumerate(files)],
            task_info={"labels": labels, "scheme": scheme, "entity_types": entity_types(labels)},
            card_notes=[f"Entity types: {', '.join(entity_types(labels))} ({scheme})."], extra=extra)

    def build_model(self, base, tokenizer, data: TrainingData, model_args, log):
        from nlpforge.models.registry import build_model

        labels = data.task_info["labels"]
        return build_model(base, self.model_class, tokenizer, model_args.max_seq_length, model_args.dropout,
                           num_labels=len(labels), id2label=dict(enumerate(labels)),
                           label2id={tag: i for i, tag in enumerate(labels)})

    def describe_metrics(self, metrics: dict) -> str:
        return (f"entity F1 {metrics['validation_f1']:.4f} (precision {metrics['validation_precision']:.4f}, "
                f"recall {metrics['validation_recall']:.4f})")

    # --- prediction -----------------------------------------------------------------------------------
    def parse_input(self, value, max_chars: int | None = MAX_TEXT_CHARS):
        """A raw text, {"text": ..., "aggregation": "first"}, or pre-split {"tokens": [...]}."""
        aggregation = "first"
        if isinstance(value, tuple) and len(value) == 2:  # a pair: --text-pair, or two --text-column of a file
            value = {"text": value[0], "text_pair": value[1]}
        if isinstance(value, dict):
            check_keys(value, (("text", "tokens"), ("aggregation",)))
            aggregation = value.get("aggregation", aggregation)
            if aggregation not in ("first", "max", "simple"):
                raise InputError(f"aggregation must be first, max or simple, not {aggregation!r}")
            if "tokens" in value and "text" in value:
                raise InputError('give "text" (a raw text) or "tokens" (its words), not both: the tagger reads one')
            if "tokens" in value:
                tokens = value["tokens"]
                if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t for t in tokens):
                    raise InputError('"tokens" must be a non-empty list of non-empty strings')
                spans, position = [], 0
                for token in tokens:
                    spans.append((token, position, position + len(token)))
                    position += len(token) + 1
                return text_of(" ".join(tokens), max_chars, "tokens' text"), spans, aggregation
            if "text" not in value:
                raise InputError('a JSON object must hold the text under "text" (or words under "tokens"), '
                                 'e.g. {"text": "Angela Merkel visited Paris."}')
            value = value["text"]
        text = text_of(value, max_chars)
        return text, split_words(text), aggregation

    def preprocess(self, loaded, inputs: list) -> list[dict]:
        stride = int(loaded.metadata.get("hyperparameters", {}).get("stride", 32))
        words = [[w for w, _, _ in spans] or [""] for _, spans, _ in inputs]
        return windows(loaded.tokenizer, words, loaded.max_seq_length, stride)

    def postprocess(self, loaded, inputs: list, features: list[dict], outputs: list[dict]) -> list[dict]:
        labels = loaded.labels
        first = word_scores(features, outputs, [len(spans) for _, spans, _ in inputs])
        answers = []
        for sentence, ((text, spans, aggregation), scores) in enumerate(zip(inputs, first)):
            if not spans:
                answers.append({"entities": [], "truncated": False})
                continue
            if aggregation == "simple":
                pieces = sub_token_spans(features, outputs, sentence, spans)
                entities = group_entities(text, [(w, a, b) for w, a, b, _ in pieces],
                                          [labels[int(p.argmax())] for *_, p in pieces], [p.max() for *_, p in pieces])
            else:
                if aggregation == "max":
                    scores = max_scores(features, outputs, sentence, len(spans), scores)
                entities = group_entities(text, spans, [labels[int(i)] for i in scores.argmax(-1)], scores.max(-1))
            answers.append({"entities": entities, "truncated": False})
        return answers

    def tag_sentences(self, loaded, sentences: list[list[str]], batch_size: int = 32) -> list[list[str]]:
        """The predicted tag of every word of pre-split sentences (first sub-token, best window)."""
        stride = int(loaded.metadata.get("hyperparameters", {}).get("stride", 32))
        features = windows(loaded.tokenizer, [s or [""] for s in sentences], loaded.max_seq_length, stride)
        outputs = run_features(loaded.call, features, loaded.pad_id, batch_size, loaded.max_tokens)
        return [[loaded.labels[int(i)] for i in scores.argmax(-1)][:len(words)] if len(words) else []
                for words, scores in zip(sentences, word_scores(features, outputs, [max(1, len(s)) for s in
                                                                                  sentences]))]

    def evaluate_file(self, loaded, path, batch_size: int = 64, text_columns=None,
                      reading: dict | None = None) -> tuple[dict, str]:
        """Entity precision/recall/F1 per type (seqeval, strict), token accuracy, and a confusion of entity types."""
        tagged = read_tagged(path)
        scheme = loaded.info.get("scheme", "IOB2")
        check_scheme(tagged, scheme, f"the model {loaded.folder.name}")
        gold = [tags for _, tags in tagged.sentences]
        predicted = self.tag_sentences(loaded, [tokens for tokens, _ in tagged.sentences], batch_size)
        return entity_report(f"{loaded.folder.name} on {path}", gold, predicted, scheme)

    def attribution_target(self, reference):
        """The mean log-probability of the predicted tag over the window's tokens."""
        tags = reference.logits[0].argmax(-1)
        return lambda output: output.logits.log_softmax(-1).gather(
            -1, tags.expand(output.logits.shape[0], -1).unsqueeze(-1)).squeeze(-1).mean(-1)

    def explain(self, loaded, inputs: list, steps: int = 32) -> list[dict]:
        """The entities plus the explanation of the input's first window (nlpforge.tasks.explanations)."""
        return explain_inputs(loaded, inputs, window_of="sentence", steps=steps)

    def csv_row(self, loaded, answer: dict) -> dict:
        return {"entities": " | ".join(f"{e['entity']}:{e['word']}" for e in answer["entities"])}


def max_scores(features, outputs, sentence: int, words: int, fallback):
    """Per word, the probabilities of its highest-scoring sub-token (aggregation "max")."""
    out = np.array(fallback, copy=True)
    best = np.full(words, -1.0)
    for feature, output in zip(features, outputs):
        if feature["sentence"] != sentence:
            continue
        for position, word in enumerate(feature["words"]):
            if word is None:
                continue
            probabilities = softmax(output["logits"][position])
            if probabilities.max() > best[word]:
                best[word] = probabilities.max()
                out[word] = probabilities
    return out


def group_entities(text: str, spans: list, tags: list[str], confidence) -> list[dict]:
    """Entities from word tags: a B- (or S-) starts one, I-/E- of the same type continue it."""
    entities, current = [], None
    for (word, start, end), tag, score in zip(spans, tags, confidence):
        kind, entity = (tag[0], tag[2:]) if tag != "O" else ("O", None)
        if current is not None and kind in ("I", "E") and entity == current["entity"]:
            current["end"], current["scores"] = end, current["scores"] + [float(score)]
            if kind == "E":
                entities.append(current)
                current = None
            continue
        if current is not None:
            entities.append(current)
            current = None
        if kind in ("B", "I", "S", "E"):
            current = {"entity": entity, "start": start, "end": end, "scores": [float(score)]}
            if kind in ("S", "E"):
                entities.append(current)
                current = None
    if current is not None:
        entities.append(current)
    return [{"entity": e["entity"], "word": text[e["start"]:e["end"]], "start": e["start"], "end": e["end"],
             "score": float(np.mean(e["scores"]))} for e in entities]


def token_loss(model, batch):
    """Per-example mean cross-entropy over the labelled positions."""
    import torch

    labels = batch["labels"]
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()  # (B, T, L)
    token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none",
                                              ignore_index=-100)  # (B, T)
    counted = (labels != -100).sum(1).clamp(min=1)
    return token.sum(1) / counted


TASK = TokenClassification()


def sub_token_spans(features, outputs, sentence: int, spans: list) -> list:
    """(text, start, end, probabilities) of every sub-token of a sentence in its first window: what the
    "simple" aggregation groups as it comes, whole words or not."""
    for feature, output in zip(features, outputs):
        if feature["sentence"] != sentence:
            continue
        pieces = []
        for position, word in enumerate(feature["words"]):
            if word is None:
                continue
            word_text, start, _ = spans[word]
            a, b = feature["offsets"][position]  # characters within the word
            pieces.append((word_text[a:b], start + a, start + b, softmax(output["logits"][position])))
        return pieces
    return []


def type_confusion(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """{gold type: {predicted type: count}} over entities: the same span with another type, "(missed)" when
    no predicted entity has the gold span, and gold "(none)" for a predicted span with no gold entity."""
    from seqeval.metrics.sequence_labeling import get_entities

    confusion: dict = collections.defaultdict(collections.Counter)
    for true_tags, predicted_tags in zip(gold, predicted):
        truth = {(s, e): t for t, s, e in get_entities(true_tags)}
        guess = {(s, e): t for t, s, e in get_entities(predicted_tags)}
        for span, kind in truth.items():
            confusion[kind][guess.get(span, "(missed)")] += 1
        for span, kind in guess.items():
            if span not in truth:
                confusion["(none)"][kind] += 1
    return {gold_type: dict(row) for gold_type, row in sorted(confusion.items())}


def render_entity_report(title: str, metrics: dict, per_type: dict, confusion: dict) -> str:
    lines = [f"{title}: entity F1 {metrics['f1']:.4f}  precision {metrics['precision']:.4f}  recall "
             f"{metrics['recall']:.4f}  token accuracy {metrics['token_accuracy']:.4f}",
             f"  {'type':<16}precision  recall     f1  support"]
    for name, row in per_type.items():
        lines.append(f"  {name:<16}{row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:5.3f}  "
                     f"{row['support']:7d}")
    columns = sorted({c for row in confusion.values() for c in row} - {"(missed)"}) + ["(missed)"]
    lines.append("  entity types (rows gold, columns predicted):")
    lines.append("  " + " " * 16 + "".join(f"{c[:10]:>11}" for c in columns))
    for name, row in confusion.items():
        lines.append(f"  {name:<16}" + "".join(f"{row.get(c, 0):11d}" for c in columns))
    return "\n".join(lines)
