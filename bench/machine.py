"""What the benchmarks run on: CPU model, cores, and the measured fp32 matmul FLOP/s.

    from machine import describe, matmul_flops
"""
import os
import platform
import time

import torch


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def matmul_flops(size: int = 1024, seconds: float = 2.0, dtype=torch.float32, repeats: int = 5) -> float:
    """Sustained FLOP/s of square matmuls on the current torch thread count: the best of `repeats` windows of
    `seconds / repeats` each, so that a burst of load from another process lowers one window, not the figure."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(repeats):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / repeats:
            a @ b
            count += 1
        best = max(best, 2 * size ** 3 * count / (time.perf_counter() - start))
    return best


def describe() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {gpu}")


def training_flops(parameters_non_embedding: int, layers: int, hidden: int, padded_tokens: int,
                   mean_length: float) -> float:
    """Approximate training FLOPs: 6 per weight per token, plus attention's 12 * T * H per token per layer."""
    return padded_tokens * (6 * parameters_non_embedding + 12 * layers * mean_length * hidden)
