"""LongGen hybrid sparse attention: sink + sliding window, blockwise strided, layer schedule (FlexAttention)."""

from .pattern import (
    block_density,
    longgen_attention,
    longgen_block_mask,
    longgen_layer_schedule,
    longgen_mask_mod,
    sink_window_mask_mod,
    strided_mask_mod,
)
from .reference import sink_window_dense_mask, strided_dense_mask

__all__ = [
    "block_density",
    "longgen_attention",
    "longgen_block_mask",
    "longgen_layer_schedule",
    "longgen_mask_mod",
    "sink_window_dense_mask",
    "sink_window_mask_mod",
    "strided_dense_mask",
    "strided_mask_mod",
]
