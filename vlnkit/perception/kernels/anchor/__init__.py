"""AnchorAttention: anchor pass, stripe selection and sparse pass over FlexAttention, with a dense reference."""

from .attention import (
    AnchorStats,
    anchor_attention,
    anchor_block_mask,
    anchor_recall,
    gather_selected,
    segment_block_mask,
    select_stripes,
)
from .config import AnchorConfig
from .reference import anchor_attention_reference, anchor_dense_masks

__all__ = [
    "AnchorConfig",
    "AnchorStats",
    "anchor_attention",
    "anchor_attention_reference",
    "anchor_block_mask",
    "anchor_dense_masks",
    "anchor_recall",
    "gather_selected",
    "segment_block_mask",
    "select_stripes",
]

