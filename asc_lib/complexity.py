"""Model size against the DCASE2024 Task 1 limits (128 kB of parameters, 30 M MACs per 1 s clip)."""

from __future__ import annotations

from torch import nn

MAX_PARAM_BYTES = 128 * 1024  # 128 kB: 131,072 parameters in INT8
MAX_MACS = 30_000_000


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def param_bytes(model: nn.Module, bits: int = 8) -> int:
    """Parameter memory when every parameter is stored with ``bits`` bits."""
    return count_params(model) * bits // 8
