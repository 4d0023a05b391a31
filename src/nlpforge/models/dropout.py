"""Dropout for training on a CPU without torch's per-element Bernoulli sampler.

    use_cpu_dropout(model)   # after model.to(device), when the device is a CPU

On a CPU, nn.Dropout draws its mask with `bernoulli_`, one generator call per element: about 5 ns an
element, 10% of a MiniLM fine-tuning step (docs/benchmarks.md, "Where a training step goes"). And
transformers' SDPA attention with dropout falls back to PyTorch's math kernel, which draws its mask the
same way. Here a mask comes from 64-bit random words cut into four 16-bit draws (a quarter of the
generator calls, about 8x faster): an element is dropped when its draw falls below round(p * 65536),
so with probability 0.100006 for p = 0.1, and what is kept is scaled by 1 / (1 - that). The expectation
is dropout's; the masks are another stream from the same torch generator, so a checkpoint's RNG state
still resumes bit-exactly. On a GPU nothing changes (its dropout and attention kernels are fused).
"""
import functools

import torch

from nlpforge.models.attention import masked_softmax

ATTENTION = "nlpforge_cpu_dropout"
_DRAWS = 1 << 16


def drop(x: torch.Tensor, p: float) -> torch.Tensor:
    """x with each element zeroed with probability p (to 1/65536) and the rest scaled to keep the mean."""
    dropped = round(p * _DRAWS)
    if dropped == 0:
        return x
    if dropped >= _DRAWS:
        return x * 0.0
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device).random_(-(1 << 63), None)
    draws = words.view(torch.int16)[:x.numel()].view(x.shape)   # uniform over -32768..32767
    keep = draws >= dropped - (_DRAWS >> 1)
    return x * keep * (_DRAWS / (_DRAWS - dropped))


class CpuDropout(torch.nn.Dropout):
    """nn.Dropout (same p, no weights) whose CPU masks come from `drop`."""

    def forward(self, x):
        if not self.training or x.device.type != "cpu":
            return super().forward(x)
        return drop(x, self.p)


def cpu_dropout_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers' attention interface: SDPA, except when training with dropout on a CPU, where the
    probabilities are computed here and dropped by `drop`. (B, heads, T, d) in, (B, T, heads, d) out."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not dropout or query.device.type != "cpu":
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling            # (B, heads, Tq, Tk)
    probabilities = drop(masked_softmax(scores, attention_mask), dropout)
    return torch.matmul(probabilities, value).transpose(1, 2).contiguous(), None


@functools.cache
def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, cpu_dropout_attention)
    # BertModel builds its padding mask by the attention's name: without this entry it passes none at all
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def use_cpu_dropout(model: torch.nn.Module) -> None:
    """Swap the model's nn.Dropout modules for CpuDropout, and its SDPA attention (encoders only) for
    `cpu_dropout_attention`. Weights, state-dict names and saved config are unchanged."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is torch.nn.Dropout:
                setattr(parent, name, CpuDropout(child.p, child.inplace))
    config = getattr(model, "config", None)
    if config is not None and config._attn_implementation == "sdpa" and not getattr(config, "is_decoder", False) \
            and hasattr(model, "set_attn_implementation"):
        _register()
        try:
            model.set_attn_implementation(ATTENTION)
        except ValueError:  # an architecture that takes no attention function by name keeps SDPA
            pass
