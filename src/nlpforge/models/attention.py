"""Attention probabilities from scores and a transformers attention mask, for nlpforge's own attention paths
(the [CLS]-only last layer, CPU dropout attention), and the choice of torch's attention kernels on a GPU."""
import torch


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax over the last dimension of (B, heads, Tq, Tk) scores, after a mask that broadcasts to them:
    boolean (True = attend) or additive (0 or a large negative number), as transformers builds them."""
    if mask is not None:
        scores = (scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool
                  else scores + mask)
    return scores.softmax(-1)


def attention_for_varying_lengths(device: torch.device | str) -> None:
    """On a CUDA device, take cuDNN out of the kernels torch's scaled_dot_product_attention picks from.

    torch sends masked bf16/fp16 attention on Hopper and newer GPUs to cuDNN first, and cuDNN builds an
    execution plan for every new (batch, length) shape: close to a second per shape, forward and backward.
    nlpforge's batches are padded to their longest row, so nearly every batch is a new shape; on an H200
    bf16 training ran at a seventh of fp32's speed until this was set (docs/benchmarks.md). The flash and
    memory-efficient kernels that take over need no plan. The setting is process-wide; on a CPU it is left alone.
    """
    if torch.device(device).type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)
