"""Extractive question answering (SQuAD): the span of a context that answers a question.

    nlpforge train question-answering --train train-v1.1.json --validation dev-v1.1.json \\
        --model minilm-l6 --output models/qa
    nlpforge.load("models/qa").predict({"question": "Who won?", "context": "The Broncos won the game."})
    # [{"answer": "The Broncos", "start": 0, "end": 11, "score": 0.83}]

Features: question + context windows of max_seq_length tokens (384 by default here) that overlap by
`--doc-stride` (128), the question cut to 64 tokens as BERT's SQuAD code does, with the offsets that
map tokens back to context characters; an answer outside a window is "no answer" ([CLS]) in that
window. Head: transformers' QA head (start and end logits). Post-processing: the n-best (20) starts
and ends of every window, spans of at most `--max-answer-length` (30) tokens inside the context,
scored start + end logit, the best over all windows of the question. SQuAD v2.0: the null score
([CLS] start + end, lowest over windows) wins when it beats the best span by more than a threshold
chosen on the validation file. Metrics: the official SQuAD exact match and F1 (lower case, no
punctuation, no articles, the best gold answer), and for v2.0 the same on questions with and without
answers.
"""
import collections
import re
import string
from dataclasses import dataclass

import numpy as np

from nlpforge.data.batching import MODEL_INPUTS, pad_batch
from nlpforge.data.labelled import file_sha256
from nlpforge.data.squad import QAExample, read_squad
from nlpforge.errors import ConfigError, InputError
from nlpforge.settings import Settings, setting
from nlpforge.tasks.base import (MAX_TEXT_CHARS, FeatureDataset, Task, TrainingData, check_keys, hold_out,
                                run_features, softmax, text_of)
from nlpforge.tasks.explanations import explain_inputs


@dataclass
class QuestionAnsweringData(Settings):
    """Which SQuAD-style files a question answerer trains on, and how contexts become windows."""

    train: str = setting("", "training file: SQuAD v1.1/v2.0 JSON, or JSONL (question, context, answers)",
                         required=True)
    validation: str | None = setting(None, "validation file (default: a tenth of --train's questions)")
    test: str | None = setting(None, "test file, evaluated once with the best weights at the end")
    doc_stride: int = setting(128, "context tokens that consecutive windows share", min=0)
    n_best: int = setting(20, "start and end candidates per window when picking the answer", min=1)
    max_answer_length: int = setting(30, "longest answer, in tokens", min=1)
    validation_fraction: float = setting(0.1, "share of --train held out when no --validation is given",
                                         min=0.001, max=0.999)


# --- the official SQuAD v1.1 evaluation rules ---------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, squeeze whitespace (SQuAD's evaluate-v1.1.py)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1_score(prediction: str, truth: str) -> float:
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    if not predicted or not gold:  # v2.0: a right "no answer" is an exact match
        return float(predicted == gold)
    common = collections.Counter(predicted) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(examples: list[QAExample], predictions: dict, prefix: str) -> dict:
    """Exact match and F1 in percent, the best over each question's gold answers; HasAns/NoAns for v2.0."""
    rows = {"all": [], "has": [], "no": []}
    for example in examples:
        golds = [text for text, _ in example.answers] or [""]
        prediction = predictions.get(example.id, "")
        pair = (max(exact_match(prediction, g) for g in golds), max(f1_score(prediction, g) for g in golds))
        rows["all"].append(pair)
        rows["no" if example.impossible else "has"].append(pair)
    metrics = {}
    for key, name in (("all", ""), ("has", "has_answer_"), ("no", "no_answer_")):
        if rows[key] and (key == "all" or rows["no"]):
            metrics[f"{prefix}_{name}exact_match"] = 100 * float(np.mean([e for e, _ in rows[key]]))
            metrics[f"{prefix}_{name}f1"] = 100 * float(np.mean([f for _, f in rows[key]]))
    return metrics


# --- windows and answers --------------------------------------------------------------------------------------
MAX_QUESTION_TOKENS = 64  # longer questions are cut, further where windows would keep < 2 strides of context


def windows(tokenizer, examples: list, max_seq_length: int, doc_stride: int, label: bool) -> list[dict]:
    """Question + context windows with context offsets; with `label`, start/end positions ([CLS] when outside)."""
    if doc_stride >= max_seq_length // 2:
        raise ConfigError(f"--doc-stride {doc_stride} must be below half of --max-seq-length {max_seq_length} "
                          f"(so at most {max_seq_length // 2 - 1}; the default stride is 128); give e.g. --doc-stride "
                          f"{max(1, max_seq_length // 4)}")
    # [CLS] question [SEP] context [SEP]: at least one context token beyond two strides, or the tokenizer fails
    questions = short_questions(tokenizer, [e.question.lstrip() for e in examples],
                                max(1, min(MAX_QUESTION_TOKENS, max_seq_length - 4 - 2 * doc_stride)))
    encoded = tokenizer(questions, [e.context for e in examples],
                        truncation="only_second", max_length=max_seq_length, stride=doc_stride,
                        return_overflowing_tokens=True, return_offsets_mapping=True, verbose=False)
    features = []
    for i, ids in enumerate(encoded["input_ids"]):
        sequence = encoded.sequence_ids(i)
        offsets = [tuple(o) if s == 1 else None for o, s in zip(encoded["offset_mapping"][i], sequence)]
        example = int(encoded["overflow_to_sample_mapping"][i])
        feature = {"input_ids": ids, **{k: encoded[k][i] for k in ("token_type_ids", "attention_mask")
                                        if k in encoded}, "example": example, "offsets": offsets}
        if label:
            feature["start_positions"], feature["end_positions"] = answer_positions(examples[example], offsets)
        features.append(feature)
    return features


def short_questions(tokenizer, questions: list[str], limit: int) -> list[str]:
    """Questions cut to their first `limit` tokens, so that every window keeps room for the context (as
    BERT's SQuAD code does with max_query_length 64; real questions are far shorter)."""
    lengths = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    out = []
    for question, offsets in zip(questions, lengths["offset_mapping"]):
        out.append(question[:offsets[limit - 1][1]] if len(offsets) > limit else question)
    return out


def answer_positions(example: QAExample, offsets: list) -> tuple[int, int]:
    """Token positions of the first gold answer in a window, or (0, 0) ([CLS]) when it is not all inside."""
    if example.impossible or not example.answers:
        return 0, 0
    text, start = example.answers[0]
    end = start + len(text)
    inside = [p for p, o in enumerate(offsets) if o is not None]
    if not inside or offsets[inside[0]][0] > start or offsets[inside[-1]][1] < end:
        return 0, 0
    first = next(p for p in inside if offsets[p][1] > start)
    last = next(p for p in reversed(inside) if offsets[p][0] < end)
    return first, last


def best_answers(examples: list, features: list[dict], outputs: list[dict], n_best: int, max_answer_length: int):
    """Per question: (answer text, start, end, score, null margin), the best span over all its windows."""
    by_example = collections.defaultdict(list)
    for feature, output in zip(features, outputs):
        by_example[feature["example"]].append((feature, output))
    results = []
    for index, example in enumerate(examples):
        best, null = None, None
        for feature, output in by_example.get(index, []):
            length = len(feature["input_ids"])
            starts = output["start_logits"][:length].astype(np.float64)
            ends = output["end_logits"][:length].astype(np.float64)
            window_null = starts[0] + ends[0]
            null = window_null if null is None else min(null, window_null)
            offsets = feature["offsets"]
            start_probabilities, end_probabilities = softmax(starts), softmax(ends)
            for s in np.argsort(-starts)[:n_best]:
                for e in np.argsort(-ends)[:n_best]:
                    if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    score = starts[s] + ends[e]
                    if best is None or score > best[0]:
                        best = (score, offsets[s][0], offsets[e][1],
                                float(start_probabilities[s] * end_probabilities[e]))
        if best is None:
            results.append(("", None, None, 0.0, float("inf")))
            continue
        score, start, end, probability = best
        results.append((example.context[start:end], start, end, probability, float(null - score)))
    return results


def choose_null_threshold(examples: list, answers: list) -> float:
    """The null-score margin above which "no answer" maximises F1 on these (v2.0) questions."""
    candidates = sorted({a[4] for a in answers if np.isfinite(a[4])}) or [0.0]
    best, best_f1 = 0.0, -1.0
    for threshold in [candidates[0] - 1.0, *candidates]:
        predictions = {e.id: ("" if a[4] > threshold else a[0]) for e, a in zip(examples, answers)}
        f1 = squad_metrics(examples, predictions, "x")["x_f1"]
        if f1 > best_f1:
            best, best_f1 = threshold, f1
    return float(best)


class QuestionAnswering(Task):
    name = "question-answering"
    summary = "Fine-tune a BERT-family encoder to find the answer to a question in a context (SQuAD)."
    settings = QuestionAnsweringData
    model_class = "AutoModelForQuestionAnswering"
    outputs = {"start_logits": ("batch", "sequence"), "end_logits": ("batch", "sequence")}
    example_input = "{'question': 'Who won?', 'context': 'The Broncos won the game.'}"
    text_columns = ("question", "context")
    inputs_wanted = 'a {"question": ..., "context": ...} dict, a (question, context) tuple, or a list of them'
    metrics = ("validation_f1", "validation_exact_match")
    max_batch_tokens = 4096  # windows are near max_seq_length long: padding costs little
    defaults = {"max_seq_length": 384}  # SQuAD's windows; the engine's 128 is below twice the default doc_stride

    # --- training -------------------------------------------------------------------------------------
    def prepare(self, settings: QuestionAnsweringData, tokenizer, *, max_seq_length: int, seed: int,
                log) -> TrainingData:
        examples, train_report = read_squad(settings.train)
        reports = [train_report]
        if settings.validation:
            held, held_report = read_squad(settings.validation)
            reports.append(held_report)
        else:
            examples, held = hold_out(examples, settings.validation_fraction, seed, what="questions",
                                     source=settings.train)
        train_features = windows(tokenizer, examples, max_seq_length, settings.doc_stride, label=True)
        held_features = windows(tokenizer, held, max_seq_length, settings.doc_stride, label=False)
        v2 = any(e.impossible for e in examples)
        info = {"null_threshold": 0.0 if v2 else None, "version": "2.0" if v2 else "1.1",
                "doc_stride": settings.doc_stride, "n_best": settings.n_best,
                "max_answer_length": settings.max_answer_length}

        def scored(run, features, gold, prefix, choose: bool) -> dict:
            outputs = run(qa_logits, features)
            answers = best_answers(gold, features, outputs, settings.n_best, settings.max_answer_length)
            if v2 and choose:
                info["null_threshold"] = choose_null_threshold(gold, answers)
            threshold = info["null_threshold"] if v2 else float("inf")
            predictions = {e.id: ("" if a[4] > threshold else a[0]) for e, a in zip(gold, answers)}
            return squad_metrics(gold, predictions, prefix)

        test_examples = read_squad(settings.test)[0] if settings.test else None  # read now, not after the epochs

        def test(run) -> dict:
            features = windows(tokenizer, test_examples, max_seq_length, settings.doc_stride, label=False)
            return scored(run, features, test_examples, "test", choose=False)

        outside = sum(1 for f in train_features if f["start_positions"] == 0)
        report = "\n".join(["data report", *(f"  {r.text()}" for r in reports),
                            f"  train {len(examples):,} questions in {len(train_features):,} windows of at most "
                            f"{max_seq_length} tokens (stride {settings.doc_stride}); {outside:,} windows hold no "
                            f"answer; validation {len(held):,} questions"
                            + ("" if settings.validation else " (held out of --train)")])
        return TrainingData(
            train=FeatureDataset(train_features), lengths=[len(f["input_ids"]) for f in train_features],
            collate=lambda rows: pad_batch([{k: r[k] for k in (*MODEL_INPUTS, "start_positions", "end_positions")
                                             if k in r} for r in rows], tokenizer.pad_token_id or 0),
            step=span_loss, evaluate=lambda run: scored(run, held_features, held, "validation", choose=True),
            test=test if settings.test else None, metric_for_best="validation_f1",
            fingerprint={"train_questions": len(examples), "doc_stride": settings.doc_stride,
                         "train": settings.train},
            report=report,
            files=[{"path": r.path, "sha256": file_sha256(r.path), "rows": r.examples,
                    "role": "train" if i == 0 else "validation"}
                   for i, r in enumerate(reports)],
            task_info=info, card_notes=[f"SQuAD v{info['version']}-style extractive question answering."],
            extra={"answer_mismatches": {"moved": train_report.moved, "dropped": train_report.dropped}})

    def build_model(self, base, tokenizer, data: TrainingData, model_args, log):
        from nlpforge.models.registry import build_model

        return build_model(base, self.model_class, tokenizer, model_args.max_seq_length, model_args.dropout)

    def describe_metrics(self, metrics: dict) -> str:
        return f"exact match {metrics['validation_exact_match']:.2f}, F1 {metrics['validation_f1']:.2f}"

    # --- prediction -----------------------------------------------------------------------------------
    def parse_input(self, value, max_chars: int | None = MAX_TEXT_CHARS):
        """{"question": ..., "context": ...}, or a (question, context) pair (a file's two text columns)."""
        if isinstance(value, tuple) and len(value) == 2:
            value = {"question": value[0], "context": value[1]}
        if not isinstance(value, dict):
            raise InputError('a question-answering model takes a question and the text to find its answer in: '
                             'send {"question": "...", "context": "..."} (`nlpforge predict MODEL QUESTION --text-pair '
                             'CONTEXT`; files: question and context columns)')
        check_keys(value, (("question",), ("context",)))
        if "context" not in value:
            raise InputError('the "context" is missing: send {"question": "...", "context": "..."}')
        if "question" not in value:
            raise InputError('the "question" is missing: send {"question": "...", "context": "..."}')
        question = text_of(value["question"], max_chars, "question")
        if not question.strip():
            raise InputError("the question is empty; send at least one non-space character")
        context = text_of(value["context"], max_chars, "context")
        return QAExample(str(value.get("id", "")), question, context)

    def preprocess(self, loaded, inputs: list) -> list[dict]:
        info = loaded.info
        return windows(loaded.tokenizer, inputs, loaded.max_seq_length, int(info.get("doc_stride", 128)),
                       label=False)

    def postprocess(self, loaded, inputs: list, features: list[dict], outputs: list[dict]) -> list[dict]:
        info = loaded.info
        answers = best_answers(inputs, features, outputs, int(info.get("n_best", 20)),
                               int(info.get("max_answer_length", 30)))
        threshold = info.get("null_threshold")
        out = []
        for text, start, end, score, margin in answers:
            if start is None or (threshold is not None and margin > threshold):
                out.append({"answer": "", "start": None, "end": None, "score": score})
            else:
                out.append({"answer": text, "start": start, "end": end, "score": score})
        return out

    def evaluate_file(self, loaded, path, batch_size: int = 64, text_columns=None,
                      reading: dict | None = None) -> tuple[dict, str]:
        """SQuAD exact match and F1 (and HasAns/NoAns for v2.0) on a file, as the official script counts them."""
        examples, report = read_squad(path)
        answers = self.answers_for(loaded, examples, batch_size)
        threshold = loaded.info.get("null_threshold")
        predictions = {e.id: ("" if threshold is not None and a[4] > threshold else a[0])
                       for e, a in zip(examples, answers)}
        metrics = {k.removeprefix("data_"): v for k, v in squad_metrics(examples, predictions, "data").items()}
        text = (f"{loaded.folder.name} on {report.text()}: "
                + "  ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in metrics.items()))
        return {**metrics, "predictions": predictions}, text

    def answers_for(self, loaded, examples: list, batch_size: int = 32) -> list:
        """(text, start, end, score, null margin) of every question, windows batched across questions."""
        features = self.preprocess(loaded, examples)
        outputs = run_features(loaded.call, features, loaded.pad_id, batch_size, loaded.max_tokens)
        info = loaded.info
        return best_answers(examples, features, outputs, int(info.get("n_best", 20)),
                            int(info.get("max_answer_length", 30)))

    def attribution_target(self, reference):
        """The start logit of the predicted start plus the end logit of the predicted end."""
        start, end = int(reference.start_logits[0].argmax()), int(reference.end_logits[0].argmax())
        return lambda output: output.start_logits[:, start] + output.end_logits[:, end]

    def explain(self, loaded, inputs: list, steps: int = 32) -> list[dict]:
        """The answer plus the explanation of the input's first window (nlpforge.tasks.explanations)."""
        return explain_inputs(loaded, inputs, window_of="example", steps=steps)

    def csv_row(self, loaded, answer: dict) -> dict:
        return {"answer": answer["answer"], "start": answer["start"], "end": answer["end"],
                "score": f"{answer['score']:.6f}"}


def qa_logits(model, batch) -> dict:
    out = model(**batch)
    return {"start_logits": out.start_logits.float(), "end_logits": out.end_logits.float()}


def span_loss(model, batch):
    """Per-example mean of the start and end cross-entropies."""
    import torch

    inputs = {k: v for k, v in batch.items() if k not in ("start_positions", "end_positions")}
    out = model(**inputs)
    start = torch.nn.functional.cross_entropy(out.start_logits.float(), batch["start_positions"], reduction="none")
    end = torch.nn.functional.cross_entropy(out.end_logits.float(), batch["end_positions"], reduction="none")
    return (start + end) / 2


TASK = QuestionAnswering()
