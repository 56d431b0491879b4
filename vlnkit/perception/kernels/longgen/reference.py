"""Dense references of the LongGen sparse patterns: explicit bool masks [N, N], built position by position."""

from __future__ import annotations

import torch
from torch import Tensor


def sink_window_dense_mask(n: int, sink: int, window: int, device: torch.device | str = "cpu") -> Tensor:
    """Causal mask where query i sees keys j <= i with j < sink (attention sink) or i - j < window."""
    mask = torch.zeros(n, n, dtype=torch.bool, device=device)
    for i in range(n):
        mask[i, : min(sink, i + 1)] = True
        mask[i, max(0, i - window + 1) : i + 1] = True
    return mask


def strided_dense_mask(
    n: int, block: int, local_blocks: int, stride: int, device: torch.device | str = "cpu"
) -> Tensor:
    """Causal blockwise-strided mask: query i in block b sees keys j <= i whose block c satisfies
    ``b - c < local_blocks`` (its own and the previous blocks) or ``c % stride == 0`` (every stride-th block)."""
    mask = torch.zeros(n, n, dtype=torch.bool, device=device)
    for i in range(n):
        for c in range(i // block + 1):
            if i // block - c < local_blocks or c % stride == 0:
                mask[i, c * block : min((c + 1) * block, i + 1)] = True
    return mask
