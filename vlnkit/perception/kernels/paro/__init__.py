"""PAROAttention: per-head token reordering, static block-sparse masks and INT8 fake-quantised QK."""

from .attention import ParoStats, fake_quant_int8, paro_attention, paro_attention_reference
from .plan import AXIS_ORDERS, ParoPlan, axis_order_permutation, block_attention_mass, calibrate_paro

__all__ = [
    "AXIS_ORDERS",
    "ParoPlan",
    "ParoStats",
    "axis_order_permutation",
    "block_attention_mass",
    "calibrate_paro",
    "fake_quant_int8",
    "paro_attention",
    "paro_attention_reference",
]
