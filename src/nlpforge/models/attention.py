"""Attention probabilities from scores and a transformers attention mask, for nlpforge's own attention paths
(the [CLS]-only last layer, CPU dropout attention)."""
import torch


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax over the last dimension of (B, heads, Tq, Tk) scores, after a mask that broadcasts to them:
    boolean (True = attend) or additive (0 or a large negative number), as transformers builds them."""
    if mask is not None:
        scores = (scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool
                  else scores + mask)
    return scores.softmax(-1)
