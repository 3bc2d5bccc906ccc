"""Where and how a model runs by default: the device, the dtype, and torch's CPU threads."""

from __future__ import annotations

from typing import Any

import torch


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str | torch.device) -> torch.dtype:
    """bf16 where the hardware does bf16 matmuls natively, else fp32.

    Measured on this project's CPU (AMD EPYC, AVX2, no AVX512-BF16/AMX): a 2048x256 @ 256x1024 bf16
    matmul takes 2.19 s against 0.064 s in fp32, so bf16 is only chosen where oneDNN reports bf16
    support (AVX512-BF16 / AMX) or on a CUDA GPU that supports it.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return torch.bfloat16 if native else torch.float32


# Below this many parameters, one CPU thread beats torch's default on a shared CPU: the shipped model
# (3.4 M) wrote a greedy report in 0.82 s with 1 thread and 8.07 s with 2 on this 2-core machine under
# load 5.8 (issue 24); thread hand-offs cost more than a small matmul gains from them.
SMALL_MODEL_PARAMETERS = 50_000_000


def default_cpu_threads(model: Any) -> int | None:
    """1 for a small model on CPU, None (torch's default) otherwise."""
    if model.device.type != "cpu":
        return None
    return 1 if sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMETERS else None


__all__ = ["SMALL_MODEL_PARAMETERS", "default_cpu_threads", "default_device", "default_dtype"]
