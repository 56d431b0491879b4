"""LongGen sparse attention through FlexAttention: attention sink + sliding window, blockwise strided
attention, and the hybrid layer schedule (a third of the layers full attention, in the middle).
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask

from .._flex import MaskMod, build_block_mask, run_flex

Pattern = Literal["sink_window", "strided"]


@functools.cache
def sink_window_mask_mod(sink: int, window: int) -> MaskMod:
    """mask_mod: causal, key among the first ``sink`` tokens or within ``window`` of the query (itself included)."""

    def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return (kv_idx <= q_idx) & ((kv_idx < sink) | (q_idx - kv_idx < window))

    return mask_mod


@functools.cache
def strided_mask_mod(block: int, local_blocks: int, stride: int) -> MaskMod:
    """mask_mod: causal, key block within ``local_blocks`` of the query's block or a multiple of ``stride``."""

    def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        kv_block = kv_idx // block
        near = q_idx // block - kv_block < local_blocks
        return (kv_idx <= q_idx) & (near | (kv_block % stride == 0))

    return mask_mod


def longgen_mask_mod(pattern: Pattern, sink: int = 64, window: int = 4096, block: int = 128,
                     local_blocks: int = 8, stride: int = 8) -> MaskMod:
    """The mask_mod of a LongGen sparse pattern with its parameters (unused ones are ignored)."""
    if pattern == "sink_window":
        return sink_window_mask_mod(sink, window)
    if pattern == "strided":
        return strided_mask_mod(block, local_blocks, stride)
    raise ValueError(f"unknown LongGen pattern {pattern!r}; expected 'sink_window' or 'strided'")


def longgen_block_mask(
    pattern: Pattern,
    n: int,
    device: torch.device | str = "cpu",
    block_size: int = 128,
    **params: int,
) -> BlockMask:
    """Block mask of a LongGen pattern for sequence length ``n`` (static: build once per length and reuse)."""
    return build_block_mask(longgen_mask_mod(pattern, **params), n, torch.device(device), block_size)


def longgen_attention(q: Tensor, k: Tensor, v: Tensor, block_mask: BlockMask, scale: float | None = None) -> Tensor:
    """Sparse softmax attention of [B, H, N, D] inputs under a LongGen block mask (differentiable)."""
    return run_flex(q, k, v, block_mask, scale=scale)


def longgen_layer_schedule(num_layers: int, full_fraction: float = 1.0 / 3.0) -> list[str]:
    """Which layers are ``"full"`` and which ``"sparse"``: ``round(L * full_fraction)`` full layers, centred."""
    if num_layers < 0 or not 0.0 <= full_fraction <= 1.0:
        raise ValueError(f"need num_layers >= 0 and 0 <= full_fraction <= 1, got {num_layers}, {full_fraction}")
    n_full = round(num_layers * full_fraction)
    first = (num_layers - n_full) // 2
    return ["full" if first <= i < first + n_full else "sparse" for i in range(num_layers)]


def block_density(block_mask: BlockMask, causal: bool = True) -> float:
    """Fraction of (query block, key block) tiles a block mask computes, over the causal tiles when ``causal``."""
    dense = block_mask.to_dense()
    tiles = dense.shape[-2] * dense.shape[-1]
    if causal:
        q_blocks = dense.shape[-2]
        tiles = q_blocks * (q_blocks + 1) // 2
    return float(dense.sum(dim=(-1, -2)).float().mean()) / tiles
