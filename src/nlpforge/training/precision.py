"""Mixed precision: `fp32`, `bf16` (autocast on CPU and CUDA), `fp16` (CUDA, with a gradient
scaler) and `auto`, which times a matmul in each safe dtype on the device at hand and keeps the
fastest. On a CPU without native bf16 (AVX2-only parts), bf16 can be two orders of magnitude
slower than fp32, so `auto` measures rather than assumes.

    precision = resolve_precision("auto", device)
    with autocast(precision, device): loss = model(**batch).loss
"""
import contextlib
import time
from functools import lru_cache

import torch

from nlpforge.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _matmul_seconds(device: torch.device, dtype: torch.dtype | None, size: int = 384, repeats: int = 8) -> float:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    context = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    with context:
        a @ b  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - start


@lru_cache(maxsize=4)
def measured_fastest(device_type: str) -> str:
    device = torch.device(device_type)
    candidates = {"fp32": None, "bf16": torch.bfloat16}
    if device_type == "cuda" and not torch.cuda.is_bf16_supported():
        candidates = {"fp32": None, "fp16": torch.float16}
    timings = {name: _matmul_seconds(device, dtype) for name, dtype in candidates.items()}
    best = min(timings, key=timings.get)
    # Lower precision must win clearly to be worth its rounding.
    return best if best == "fp32" or timings[best] < 0.8 * timings["fp32"] else "fp32"


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not '{precision}'")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("fp16 needs a CUDA GPU (its gradient scaler is CUDA-only); "
                          "on CPU use --precision bf16 or fp32")
    if precision == "auto":
        return measured_fastest(device.type)
    return precision


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device):
    """A GradScaler for fp16 on CUDA; None otherwise (bf16 keeps fp32's exponent range)."""
    if precision == "fp16":
        return torch.amp.GradScaler(device.type)
    return None
