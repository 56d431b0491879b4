"""Lightning attention: causal linear attention with per-head decay (references, blockwise, Triton, autograd)."""

from .blockwise import chunk_scan
from .function import LightningAttnFunction, lightning_attn, resolve_backend
from .reference import lightning_attn_quadratic, lightning_attn_recurrent, transnormer_slopes

__all__ = [
    "LightningAttnFunction",
    "chunk_scan",
    "lightning_attn",
    "lightning_attn_quadratic",
    "lightning_attn_recurrent",
    "resolve_backend",
    "transnormer_slopes",
]
