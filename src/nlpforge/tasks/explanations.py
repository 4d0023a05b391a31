"""Explanations: what a model attends to and which tokens moved its answer, in one JSON shape for every task.

    nlpforge.load("models/stars").explain("Loved it")
    # [{"label": 5, "score": 0.8, ...,                       the task's answer
    #   "words": ["[CLS]", "loved", "it", "[SEP]"],           TorchServe's explanation format:
    #   "importances": [0.02, 0.91, 0.35, -0.2],              Integrated Gradients on the word embeddings,
    #   "delta": 0.0031,                                      normalised to unit length, and the convergence delta
    #   "attention": {"tokens": [...], "layers": 2, "heads": 2, "weights": [L][H][T][T],
    #                 "total_layers": 2, "first_layer": 0, "note": None}}]

The server's /explanations and KServe's :explain answer the same dicts, so a view drawn from a served
model and one drawn from the model folder agree. Attention comes from an eager-attention copy of the
model (SDPA returns no weights); every row is checked to sum to 1, and only real tokens are kept (one
input, unpadded). Long inputs keep the last layers that fit ATTENTION_BUDGET weights, and say so in
`note`. Each task says what is attributed: `Task.attribution_target`.
"""
import math

import numpy as np

from nlpforge.data.batching import MODEL_INPUTS
from nlpforge.errors import ArtifactError, ConfigError

ATTENTION_BUDGET = 1_000_000   # attention weights kept per explanation (layers x heads x T x T)
DEFAULT_STEPS = 32             # Integrated Gradients' steps


def eager_model(loaded):
    """The loaded model's eager-attention copy on CPU (kept on the LoadedModel for the next explanation)."""
    if "attention_model" not in loaded.__dict__:
        loaded.__dict__["attention_model"] = loaded.task.load_weights(loaded.folder, attn_implementation="eager").eval()
    return loaded.__dict__["attention_model"]


def attention_of(result, tokens: list[str]) -> dict:
    """Per-head weights of every layer that fits the budget, rounded; rows checked to sum to 1."""
    layers = [layer[0] for layer in result.attentions]   # each (H, T, T)
    if not layers:
        raise ArtifactError("the model returned no attention weights; it must be loaded with eager attention")
    sums = np.stack([layer.sum(-1).numpy() for layer in layers])
    if not np.allclose(sums, 1.0, atol=1e-3):
        raise ArtifactError(f"attention rows do not sum to 1 (found {sums.min():.4f}..{sums.max():.4f}); the "
                            "weights are not a softmax over the tokens")
    heads, length = layers[0].shape[0], layers[0].shape[-1]
    shown = max(1, min(len(layers), ATTENTION_BUDGET // (heads * length * length)))
    note = None
    if shown < len(layers):
        note = (f"{length} tokens: showing the last {shown} of {len(layers)} layers (one layer holds "
                f"{heads * length * length:,} weights; an explanation keeps at most {ATTENTION_BUDGET:,}, or one "
                "layer)")
    kept = layers[len(layers) - shown:]
    return {"tokens": tokens, "layers": shown, "heads": heads,
            "weights": [np.round(layer.numpy().astype(np.float64), 4).tolist() for layer in kept],
            "total_layers": len(layers), "first_layer": len(layers) - shown, "note": note}


def attributions(model, task, batch: dict, reference, special_ids: set, pad_id: int, steps: int) -> tuple:
    """(importances, delta): LayerIntegratedGradients on the word embeddings against a baseline that keeps
    the special tokens and puts [PAD] everywhere else, as TorchServe's BERT handler does."""
    try:
        from captum.attr import LayerIntegratedGradients
    except ImportError:
        raise ConfigError("token attributions need Captum: pip install captum (or nlpforge[explain])") from None
    import torch

    target = task.attribution_target(reference)
    others = {k: v for k, v in batch.items() if k != "input_ids"}

    def forward(input_ids, *extra):
        rows = input_ids.shape[0]
        return target(model(input_ids=input_ids, **{k: v.expand(rows, -1) for k, v in zip(others, extra)}))

    ids = batch["input_ids"]
    baseline = torch.tensor([[i if i in special_ids else pad_id for i in ids[0].tolist()]])
    integrated = LayerIntegratedGradients(forward, model.get_input_embeddings())
    scores, delta = integrated.attribute(ids, baselines=baseline, additional_forward_args=tuple(others.values()),
                                         n_steps=steps, internal_batch_size=steps, return_convergence_delta=True)
    summed = scores.sum(dim=-1)[0]
    norm = torch.linalg.vector_norm(summed)
    importances = (summed / norm if norm > 0 else summed).tolist()
    return [round(v, 5) for v in importances], float(delta[0])


def explain_feature(loaded, feature: dict, steps: int = DEFAULT_STEPS) -> dict:
    """The explanation fields of one feature (one input, or its first window)."""
    import torch

    model = eager_model(loaded)
    batch = {k: torch.tensor([feature[k]]) for k in MODEL_INPUTS if k in feature}
    tokens = loaded.tokenizer.convert_ids_to_tokens(feature["input_ids"])
    with torch.inference_mode():
        reference = model(**batch, output_attentions=True)
    attention = attention_of(reference, tokens)
    special = set(loaded.tokenizer.all_special_ids)
    with torch.enable_grad():
        importances, delta = attributions(model, loaded.task, batch, reference, special, loaded.pad_id, steps)
    return {"words": tokens, "importances": importances, "delta": delta if math.isfinite(delta) else None,
            "attention": attention}


def explain_inputs(loaded, inputs: list, window_of: str | None = None, steps: int = DEFAULT_STEPS) -> list[dict]:
    """Each input's answer plus the explanation of its first feature (`window_of` names the feature key that
    says which input a window belongs to, for tasks that cut inputs into windows)."""
    from nlpforge.tasks.base import run_features

    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 1000:
        raise ConfigError(f"steps must be a whole number from 1 to 1000, not {steps!r}")
    task = loaded.task
    features = task.preprocess(loaded, inputs)
    answers = task.postprocess(loaded, inputs, features, run_features(loaded.call, features, loaded.pad_id,
                                                                      max_tokens=loaded.max_tokens))
    first: dict = {}
    for index, feature in enumerate(features):
        first.setdefault(feature[window_of] if window_of else index, feature)
    return [{**answer, **explain_feature(loaded, first[i], steps)} for i, answer in enumerate(answers)]
