"""Probes on ``transformers`` models (SmolLM2 and any model that dispatches through ``AttentionInterface``).

While :func:`~vlnkit.perception.attention.hook.attach` holds a probe on one of a model's attention modules,
the model's ``config._attn_implementation`` is switched to :data:`IMPLEMENTATION`, an attention function
registered with ``transformers.AttentionInterface`` (and SDPA's boolean mask function under the same name
with ``AttentionMaskInterface``). That function runs :func:`~vlnkit.perception.attention.hook.attend`'s
eager path on modules with probes, on the **query heads** after the grouped key/value heads are repeated
(``repeat_kv``), and the model's original implementation (``sdpa`` or ``eager``) on the others. Leaving the
``with`` block restores the original implementation, so a model without probes is untouched. The llama.cpp
server's GGUF model exposes no attention: probe SmolLM2 through ``transformers``
(:func:`vlnkit.agents.llm.transformers_llm.load_transformers_llm` loads the same GGUF).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

IMPLEMENTATION = "vlnkit_probe"
"""The name of the probing attention function in ``transformers``' registries."""


def is_hf_attention(module: nn.Module) -> bool:
    """Whether ``module`` is a ``transformers`` attention module that dispatches through the registry."""
    return hasattr(module, "num_key_value_groups") and hasattr(module, "config") and hasattr(module, "layer_idx")


def _repeat_kv(x: Tensor, groups: int) -> Tensor:
    """``(B, H_kv, N, D)`` -> ``(B, H_kv * groups, N, D)``, each key/value head serving ``groups`` query heads."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def _probing_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                       scaling: float | None = None, dropout: float = 0.0, **kwargs: Any) -> tuple[Tensor, None]:
    """The registered function: probes' eager path on probed modules, the original implementation elsewhere."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from vlnkit.perception.attention.hook import attend, probes_of

    fallback = getattr(module, "_vlnkit_fallback", "sdpa")
    if not probes_of(module):
        if fallback == "sdpa":
            return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, scaling=scaling,
                                                   dropout=dropout, **kwargs)
        eager = sys.modules[type(module).__module__].eager_attention_forward
        additive = None if attention_mask is None else torch.zeros_like(attention_mask, dtype=query.dtype).masked_fill(
            ~attention_mask, torch.finfo(query.dtype).min)
        return eager(module, query, key, value, additive, scaling=scaling, dropout=dropout, **kwargs)
    groups = module.num_key_value_groups
    causal = attention_mask is None and query.shape[2] > 1 and getattr(module, "is_causal", True)
    heads = attend(module, query, _repeat_kv(key, groups), _repeat_kv(value, groups), attn_mask=attention_mask,
                   is_causal=causal, scale=scaling, dropout_p=dropout)
    return heads.transpose(1, 2).contiguous(), None


def _register() -> None:
    """Register :data:`IMPLEMENTATION` with ``transformers`` (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

    if IMPLEMENTATION not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        AttentionInterface.register(IMPLEMENTATION, _probing_attention)
        AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


@contextmanager
def probing(model: nn.Module, chosen: Mapping[str, nn.Module]) -> Iterator[None]:
    """Switch ``model`` to the probing implementation while probes sit on ``chosen`` (a no-op when none of
    them is a ``transformers`` attention module). Supports models whose implementation is sdpa or eager."""
    if not any(is_hf_attention(m) for m in chosen.values()):
        yield
        return
    config = model.config
    original = config._attn_implementation
    if original == IMPLEMENTATION:       # an outer attach already switched it
        yield
        return
    if original not in ("sdpa", "eager"):
        raise ValueError(f"probes support transformers models on sdpa or eager attention; this one uses {original!r}")
    _register()
    attention = [m for m in model.modules() if is_hf_attention(m)]
    for m in attention:
        m._vlnkit_fallback = original
    config._attn_implementation = IMPLEMENTATION
    try:
        yield
    finally:
        config._attn_implementation = original
        for m in attention:
            del m._vlnkit_fallback
