"""Attention kernels and sparse patterns shared by the project's transformers (op library, one folder per op).

- :func:`lightning_attn`: causal linear attention with per-head decay (Triton on CUDA, blockwise PyTorch
  elsewhere), with naive recurrent/quadratic references in :mod:`.lightning`.
- :mod:`.longgen`, :mod:`.anchor`, :mod:`.paro`: sparse softmax patterns on FlexAttention with dense references.
- :func:`create_token_mixer`: the registry the transformers select their token mixing from by config.
"""

from .anchor import AnchorConfig, anchor_attention
from .lightning import lightning_attn, transnormer_slopes
from .longgen import longgen_attention, longgen_block_mask, longgen_layer_schedule
from .mixers import TOKEN_MIXERS, available_token_mixers, create_token_mixer, register_token_mixer
from .paro import ParoPlan, calibrate_paro, paro_attention

__all__ = [
    "TOKEN_MIXERS",
    "AnchorConfig",
    "ParoPlan",
    "anchor_attention",
    "available_token_mixers",
    "calibrate_paro",
    "create_token_mixer",
    "lightning_attn",
    "longgen_attention",
    "longgen_block_mask",
    "longgen_layer_schedule",
    "paro_attention",
    "register_token_mixer",
    "transnormer_slopes",
]
