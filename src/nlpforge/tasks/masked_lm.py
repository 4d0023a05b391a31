"""BERT pre-training (masked LM + next-sentence prediction), from scratch or on a domain; fill-mask.

    nlpforge tokenizer train --corpus imdb_50k.csv.gz --column review --output tokenizers/imdb
    nlpforge train masked-lm --model bert-mini --tokenizer tokenizers/imdb --corpus imdb_50k.csv.gz \\
        --column review --output models/imdb-bert                 # from scratch
    nlpforge train masked-lm --model minilm-l6 --corpus reviews.csv --output models/minilm-reviews   # adaptation
    nlpforge predict models/imdb-bert "the acting was [MASK] ."
    # {"masks": [{"position": 4, "predictions": [{"token": "great", "token_id": 2307, "score": 0.31}, ...]}], ...}

Instances are made (nlpforge.data.pretraining) as BERT's own data creation makes them: documents ->
sentences -> segment pairs that fill max_seq_length (a shorter random target with short_seq_prob); with NSP, B is
the real continuation of A half of the time and a span of another document otherwise. Masks are
drawn anew every epoch (RoBERTa's dynamic masking), from the seed, the epoch and the instance, so
a resumed run draws the same ones: masked_lm_prob of the tokens, at most max_predictions_per_seq,
80% [MASK], 10% a random token, 10% unchanged (whole words together with --whole-word-masking).

Head: BertForPreTraining's (a transform and a decoder tied to the input embeddings, plus the NSP
classifier). A base without one, such as all-MiniLM-L6-v2, gets a fresh one, and the log and the
model card say so. The loss scores the masked positions only: on a small encoder the vocabulary
projection of every position would cost more than the encoder itself. Metrics on held-out
instances with fixed masks: masked-LM accuracy, perplexity and NSP accuracy.
"""
import functools
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from nlpforge.data.batching import MODEL_INPUTS
from nlpforge.data.labelled import file_sha256
from nlpforge.data.pretraining import (InstanceDataset, MaskingCollate, build_instances, cached_instances,
                                       chars_per_token, document_spans, sentence_tokens)
from nlpforge.errors import ConfigError, DataError, InputError
from nlpforge.settings import Settings, group, setting
from nlpforge.tasks.base import MAX_TEXT_CHARS, Task, TrainingData, check_keys, softmax, text_of, truncated_flags
from nlpforge.text.corpus import CorpusSource, DocumentBoundary

MASK = "[MASK]"
MAX_TOP_K = 100
EVAL_KEYS = (*MODEL_INPUTS, "labels", "next_sentence_label")


@dataclass
class MaskedLmData(Settings):
    """Which corpus to pre-train on, and how BERT's pre-training instances are made from it."""

    source: CorpusSource = group(CorpusSource)
    validation: list[str] = setting([], "held-out corpus (default: documents held out of --corpus)")
    validation_documents: int = setting(200, "documents of --corpus held out when no --validation is given", min=1)
    max_eval_instances: int = setting(1000, "held-out instances evaluated after every epoch (fixed masks)", min=1)
    document_boundary: DocumentBoundary = setting(
        "auto", "documents of a text file: blank-line (BERT's format), file, line, or auto (from the file)")
    nsp: bool = setting(True, "next-sentence prediction: half of the B segments come from another document")
    short_seq_prob: float = setting(0.1, "share of documents whose instances aim at a shorter random length",
                                    min=0, max=1)
    masked_lm_prob: float = setting(0.15, "share of tokens masked", min=0.01, max=0.9)
    max_predictions_per_seq: int = setting(20, "most masked tokens per instance", min=1)
    whole_word_masking: bool = setting(False, "mask all the pieces of a word together")


# --- the model ---------------------------------------------------------------------------------------------
@functools.cache
def pretraining_class():
    """BertForPreTraining whose forward, given labels, scores masked positions only and returns per-example
    losses and counts (what the engine and the metrics need), not (B, T, vocabulary) logits."""
    from dataclasses import dataclass as model_output

    import torch
    import torch.nn.functional as F
    from transformers import BertForPreTraining as TransformersBertForPreTraining
    from transformers.utils import ModelOutput

    @model_output
    class PreTrainingStats(ModelOutput):
        loss: torch.Tensor | None = None           # (B,) masked-token cross-entropy mean (+ NSP cross-entropy)
        mlm_loss: torch.Tensor | None = None       # (B,) summed masked-token cross-entropy
        mlm_correct: torch.Tensor | None = None    # (B,) masked tokens predicted right
        mlm_count: torch.Tensor | None = None      # (B,) masked tokens
        nsp_correct: torch.Tensor | None = None    # (B,) 1 where NSP was right

    # Named as its base so that config.json says "BertForPreTraining", which it is: the same weights and
    # heads, with a leaner forward when labels are given.
    class BertForPreTraining(TransformersBertForPreTraining):
        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None,
                    next_sentence_label=None, **kwargs):
            if labels is None:
                return super().forward(input_ids=input_ids, attention_mask=attention_mask,
                                       token_type_ids=token_type_ids, **kwargs)
            sequence, pooled = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                         return_dict=False)[:2]          # (B, T, H), (B, H)
            masked = labels != -100                                        # (B, T)
            rows = masked.nonzero()[:, 0]                                  # (M,)
            scores = self.cls.predictions(sequence[masked]).float()        # (M, V)
            targets = labels[masked]                                       # (M,)
            token_loss = F.cross_entropy(scores, targets, reduction="none")
            zeros = torch.zeros(len(labels), device=labels.device, dtype=torch.float32)
            loss_sum = zeros.index_add(0, rows, token_loss)
            correct = zeros.index_add(0, rows, (scores.argmax(-1) == targets).float())
            count = masked.sum(1).float()
            loss = loss_sum / count.clamp(min=1)
            nsp_correct = zeros
            if next_sentence_label is not None:
                relation = self.cls.seq_relationship(pooled).float()       # (B, 2)
                loss = loss + F.cross_entropy(relation, next_sentence_label, reduction="none")
                nsp_correct = (relation.argmax(-1) == next_sentence_label).float()
            return PreTrainingStats(loss=loss, mlm_loss=loss_sum, mlm_correct=correct, mlm_count=count,
                                    nsp_correct=nsp_correct)

    return BertForPreTraining


def pretraining_stats(model, batch) -> dict:
    """The evaluation forward: per-example masked-LM and NSP counts."""
    out = model(**batch)
    return {"mlm_loss": out.mlm_loss, "mlm_correct": out.mlm_correct, "mlm_count": out.mlm_count,
            "nsp_correct": out.nsp_correct}


def summarise(outputs: list[dict], prefix: str, nsp: bool) -> dict:
    count = max(sum(float(o["mlm_count"]) for o in outputs), 1.0)
    loss = sum(float(o["mlm_loss"]) for o in outputs) / count
    metrics = {f"{prefix}_mlm_accuracy": sum(float(o["mlm_correct"]) for o in outputs) / count,
               f"{prefix}_mlm_loss": loss, f"{prefix}_perplexity": math.exp(min(loss, 50.0))}
    if nsp:
        metrics[f"{prefix}_nsp_accuracy"] = sum(float(o["nsp_correct"]) for o in outputs) / max(len(outputs), 1)
    return metrics


# --- the task ----------------------------------------------------------------------------------------------
class MaskedLm(Task):
    name = "masked-lm"
    same_inputs_every_epoch = False  # new masks every epoch: frozen layers' outputs are not worth keeping
    summary = ("Pre-train a BERT encoder with masked LM and next-sentence prediction, from scratch or on your "
               "domain's text; the model then fills [MASK].")
    settings = MaskedLmData
    model_class = "AutoModelForMaskedLM"
    outputs = {"logits": ("batch", "sequence")}
    example_input = "the acting was [MASK] ."
    metrics = ("validation_mlm_accuracy", "validation_perplexity", "validation_nsp_accuracy")
    channels = {"train": "corpus", "validation": "validation"}
    max_batch_tokens = 512  # (tokens, vocabulary) logits come back: 512 x 30522 floats is 62 MB

    # --- training -------------------------------------------------------------------------------------
    def prepare(self, settings: MaskedLmData, tokenizer, *, max_seq_length: int, seed: int, log) -> TrainingData:
        from nlpforge.text.sentences import cached_file, sentence_table

        if tokenizer.mask_token_id is None or tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
            raise ConfigError("masked-LM pre-training needs a BERT tokenizer with [CLS], [SEP] and [MASK]; train one "
                              "with `nlpforge tokenizer train`")
        table = sentence_table(settings.source, settings.document_boundary)
        sentences, documents = table.column("sentence"), table.column("document").to_numpy()
        spans = document_spans(documents)
        multi = sum(end - start >= 2 for start, end in spans)
        if settings.nsp and multi == 0:
            raise DataError(f"{', '.join(settings.source.corpus)}: --nsp needs documents of two or more sentences, "
                            f"but all {len(spans):,} documents have one sentence, so 0 real next-sentence pairs can be "
                            "made; give documents with several sentences (text files: a blank line between "
                            "documents, or --document-boundary file), or train without it: --no-nsp")
        ratio = chars_per_token(tokenizer, sentences)
        tokens = sentence_tokens(sentences, ratio)
        if settings.validation:
            train_spans, held_table = spans, sentence_table(CorpusSource(corpus=settings.validation,
                                                                         column=settings.source.column,
                                                                         reading=settings.source.reading),
                                                            settings.document_boundary)
            held_sentences = held_table.column("sentence")
            held_spans = document_spans(held_table.column("document").to_numpy())
            held_tokens = sentence_tokens(held_sentences, ratio)
        else:
            if len(spans) < 2:
                split = ("; --document-boundary blank-line (or line) splits a text file into documents where auto "
                         "took it for one" if settings.document_boundary == "auto" else "")
                raise DataError(f"{', '.join(settings.source.corpus)}: {len(spans)} document; holding some out for "
                                f"validation needs at least two, or give --validation{split}")
            held = min(settings.validation_documents, max(1, len(spans) // 10))
            chosen = set(np.random.default_rng(seed).choice(len(spans), size=held, replace=False).tolist())
            train_spans = [span for i, span in enumerate(spans) if i not in chosen]
            held_spans = [span for i, span in enumerate(spans) if i in chosen]
            held_sentences, held_tokens = sentences, tokens
        plan = cached_instances(cached_file(settings.source, settings.document_boundary), train_spans, tokens,
                                max_seq_length, settings, seed)
        if len(plan) == 0:
            raise DataError(f"{', '.join(settings.source.corpus)}: no training instances could be made")
        held_plan = build_instances(held_spans, held_tokens, max_seq_length, settings.short_seq_prob,
                                    settings.nsp, seed + 1).take(settings.max_eval_instances)
        if len(held_plan) == 0:
            held_from = (f"--validation {', '.join(settings.validation)}" if settings.validation else
                         f"the {len(held_spans):,} document(s) held out of --corpus")
            raise DataError(f"{held_from}: no validation instance could be made (with --nsp a document of one "
                            "sentence makes none); give documents of two or more sentences"
                            + ("" if settings.validation else ", or --validation FILE") + ", or train with --no-nsp")
        collate = MaskingCollate(tokenizer, max_seq_length, settings, seed)
        held_set = InstanceDataset(held_sentences, held_plan)
        eval_rows = collate.features([held_set[i] for i in range(len(held_set))], epoch=-1)  # fixed masks

        def set_epoch(epoch: int) -> None:
            collate.epoch = epoch

        def evaluate(run) -> dict:
            return summarise(run(pretraining_stats, eval_rows, keys=EVAL_KEYS), "validation", settings.nsp)

        random_share = float(plan.random_next.mean()) if settings.nsp else 0.0
        nsp_line = f"on, {random_share:.1%} of B segments from another document" if settings.nsp else "off"
        report = "\n".join([
            "data report",
            f"  corpus {', '.join(settings.source.corpus)}: {len(spans):,} documents, {len(documents):,} sentences "
            f"({multi:,} documents of two or more sentences); about {ratio:.1f} characters a token",
            f"  {len(plan):,} training instances from {len(train_spans):,} documents, about "
            f"{int(plan.tokens.mean())} tokens each; held out: {len(held_plan):,} instances from "
            f"{len(held_spans):,} documents" + (" of --validation" if settings.validation else ""),
            f"  NSP: {nsp_line}; masking {settings.masked_lm_prob:.0%} of tokens, at most "
            f"{settings.max_predictions_per_seq} an instance{', whole words' if settings.whole_word_masking else ''}, "
            "new masks every epoch"])
        files = [{"path": str(path), "sha256": file_sha256(path) if Path(path).is_file() else "", "rows": 0,
                  "role": "corpus"} for path in settings.source.corpus]
        return TrainingData(
            train=InstanceDataset(sentences, plan), lengths=plan.tokens, collate=collate,
            step=lambda model, batch: model(**batch).loss, evaluate=evaluate,
            metric_for_best="validation_mlm_accuracy",
            fingerprint={"corpus": cached_file(settings.source, settings.document_boundary).name,
                         "instances": len(plan), **{k: getattr(settings, k) for k in (
                             "nsp", "short_seq_prob", "masked_lm_prob", "max_predictions_per_seq",
                             "whole_word_masking")}},
            report=report, files=files, set_epoch=set_epoch,
            extra={"corpus": {"documents": len(spans), "sentences": int(len(documents)),
                              "training_instances": len(plan), "held_out_instances": len(held_plan),
                              "chars_per_token": ratio, "random_next_share": random_share},
                   "nsp": settings.nsp, "whole_word_masking": settings.whole_word_masking},
            card_notes=[f"Pre-trained with masked LM ({settings.masked_lm_prob:.0%} of tokens, 80% [MASK] / 10% "
                        f"random / 10% unchanged, new masks every epoch)"
                        + (" and next-sentence prediction" if settings.nsp else "")
                        + f" on {len(spans):,} documents ({len(documents):,} sentences) of "
                        + ", ".join(f"`{c}`" for c in settings.source.corpus) + "."])

    def build_model(self, base, tokenizer, data: TrainingData, model_args, log):
        from nlpforge.models.registry import build_model

        if base.pretrained:
            try:
                model_type = json.loads((base.weights / "config.json").read_text(encoding="utf-8")).get("model_type")
            except (OSError, ValueError, AttributeError):
                model_type = None
            if model_type != "bert":
                raise ConfigError(f"{base.name}: masked-LM pre-training needs a BERT encoder (model_type bert), and "
                                  f"this base is {model_type!r}; use a BERT-family folder or a from-scratch "
                                  "shape such as bert-mini")
        missing: list = []
        model = build_model(base, pretraining_class(), tokenizer, model_args.max_seq_length, model_args.dropout,
                            missing=missing)
        fresh = sorted({name.rsplit(".", 1)[0] for name in missing if name.startswith("cls.")})
        if base.pretrained and fresh:
            note = (f"{base.name} has no masked-LM head: a fresh one was built ({', '.join(fresh)}), its decoder "
                    "tied to the input word embeddings.")
            log(note)
            data.card_notes.append(note)
            data.extra["fresh_head"] = fresh
        if not data.extra["nsp"]:  # unused weights would stop DistributedDataParallel
            for parameter in [*model.cls.seq_relationship.parameters(), *model.bert.pooler.parameters()]:
                parameter.requires_grad = False
        return model

    def describe_metrics(self, metrics: dict) -> str:
        text = (f"masked-LM accuracy {metrics['validation_mlm_accuracy']:.4f}, "
                f"perplexity {metrics['validation_perplexity']:.2f}")
        if "validation_nsp_accuracy" in metrics:
            text += f", NSP accuracy {metrics['validation_nsp_accuracy']:.4f}"
        return text

    # --- prediction (fill-mask) ------------------------------------------------------------------------
    def parse_input(self, value, max_chars: int | None = MAX_TEXT_CHARS):
        """A text with one or more [MASK]: a string, or {"text": ..., "top_k": 5}."""
        top_k = 5
        if isinstance(value, tuple) and len(value) == 2:  # a pair: --text-pair, or two --text-column of a file
            value = {"text": value[0], "text_pair": value[1]}
        if isinstance(value, dict):
            check_keys(value, (("text",), ("top_k",)))
            if "text" not in value:
                raise InputError('a JSON object must hold the text under "text", e.g. {"text": "the acting was '
                                 '[MASK] .", "top_k": 5}')
            top_k = value.get("top_k", top_k)
            if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
                raise InputError(f"top_k must be an integer from 1 to {MAX_TOP_K}, not {top_k!r}")
            value = value["text"]
        text = text_of(value, max_chars)
        if MASK not in text:
            raise InputError(f"the text has no {MASK} token; put {MASK} where a word should be predicted, e.g. "
                             f"'the acting was {MASK} .'")
        return text, top_k

    def preprocess(self, loaded, inputs: list) -> list[dict]:
        texts = [text for text, _ in inputs]
        encoded = loaded.tokenizer(texts, truncation=True, max_length=loaded.max_seq_length,
                                   return_offsets_mapping=True)
        truncated = truncated_flags(texts, encoded, loaded.max_seq_length)
        mask_id = loaded.tokenizer.mask_token_id
        features = []
        for i, (text, _) in enumerate(inputs):
            ids = encoded["input_ids"][i]
            positions = [p for p, token in enumerate(ids) if token == mask_id]
            if len(positions) < text.count(MASK):
                # a server's batch pools several requests' texts, so a position in it would mislead: the text says
                which = f" in {text[:40] + '...' if len(text) > 40 else text!r}" if len(inputs) > 1 else ""
                raise InputError(f"a {MASK} falls beyond the model's {loaded.max_seq_length} tokens{which}; shorten "
                                 "the text")
            features.append({**{k: encoded[k][i] for k in MODEL_INPUTS if k in encoded}, "positions": positions,
                             "truncated": truncated[i]})
        return features

    def postprocess(self, loaded, inputs: list, features: list[dict], outputs: list[dict]) -> list[dict]:
        tokenizer = loaded.tokenizer
        answers = []
        for (text, top_k), feature, output in zip(inputs, features, outputs):
            filled = list(feature["input_ids"])
            masks = []
            for position in feature["positions"]:
                probabilities = softmax(output["logits"][position])  # (V,)
                best = np.argsort(-probabilities)[:top_k]
                filled[position] = int(best[0])
                masks.append({"position": position, "predictions": [
                    {"token": tokenizer.convert_ids_to_tokens(int(t)), "token_id": int(t),
                     "score": float(probabilities[t])} for t in best]})
            answers.append({"masks": masks, "sequence": tokenizer.decode(filled, skip_special_tokens=True),
                            "truncated": feature["truncated"]})
        return answers

    def evaluate_file(self, loaded, path, batch_size: int = 64, text_columns=None,
                      reading: dict | None = None) -> tuple[dict, str]:
        """Masked-LM accuracy, perplexity and NSP accuracy on a corpus file, with masks fixed by seed 0. A table's
        text column is `text_columns` (one), else the training corpus's; `reading` holds its delimiter and
        encoding. NSP is scored only where the file has two documents or more to draw random B segments from."""
        import torch

        from nlpforge.tasks.base import run_features
        from nlpforge.text.sentences import sentence_table

        if text_columns and len(text_columns) > 1:
            raise ConfigError(f"a masked-LM model reads one text column, not {len(text_columns)}: give --text-column "
                              "once")
        hyper = loaded.metadata.get("hyperparameters", {})
        column = text_columns[0] if text_columns else hyper.get("column")
        settings = MaskedLmData.of(corpus=[str(path)], column=column, nsp=hyper.get("nsp", True),
                                   document_boundary=hyper.get("document_boundary", "auto"), **(reading or {}))
        table = sentence_table(settings.source, settings.document_boundary)
        sentences = table.column("sentence")
        spans = document_spans(table.column("document").to_numpy())
        if settings.nsp and len(spans) < 2:  # no other document: B could only be the real next sentence
            settings = replace(settings, nsp=False)
        plan = build_instances(spans, sentence_tokens(sentences, chars_per_token(loaded.tokenizer, sentences)),
                               loaded.max_seq_length, settings.short_seq_prob, settings.nsp, 0)
        if len(plan) == 0:
            raise DataError(f"{path}: no instance could be made from its {len(spans):,} documents (with NSP a "
                            "document of one sentence makes one only as a random pair); give documents of two or "
                            "more sentences")
        collate = MaskingCollate(loaded.tokenizer, loaded.max_seq_length, settings, 0)
        dataset = InstanceDataset(sentences, plan.take(10_000))
        rows = collate.features([dataset[i] for i in range(len(dataset))], epoch=-1)
        model = pretraining_class().from_pretrained(str(loaded.folder)).eval()

        def call(arrays):
            with torch.inference_mode():
                stats = pretraining_stats(model, {k: torch.from_numpy(v) for k, v in arrays.items()})
            return {k: v.numpy() for k, v in stats.items()}

        metrics = summarise(run_features(call, rows, loaded.pad_id, batch_size, keys=EVAL_KEYS), "data",
                            settings.nsp)
        metrics = {k.removeprefix("data_"): v for k, v in metrics.items()}
        text = (f"{loaded.folder.name} on {path} ({len(rows):,} instances from {len(spans):,} documents, fixed masks): "
                + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics, text

    def csv_row(self, loaded, answer: dict) -> dict:
        tokens = [" ".join(p["token"] for p in mask["predictions"]) for mask in answer["masks"]]
        return {"sequence": answer["sequence"], "predictions": " | ".join(tokens)}


TASK = MaskedLm()
