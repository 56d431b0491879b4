"""Dense reference of AnchorAttention: the same selection rule and attended set, one softmax over full scores.

It materialises [B, H, N, N] scores in float64-capable dtype, so it is for small sizes only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._flex import dense_masked_attention
from .config import AnchorConfig


def anchor_dense_masks(n: int, cfg: AnchorConfig, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
    """``(anchor_mask [N,N], middle_mask [N,N], group_of_query [N])``: the keys of the anchor pass (causal,
    initial tokens plus the query's own group) and the candidate keys of stripe selection (after the
    initial tokens, before the query's group)."""
    i = torch.arange(n, device=device)[:, None]
    j = torch.arange(n, device=device)[None, :]
    group_start = (i // cfg.group_size) * cfg.group_size
    anchor_mask = (j <= i) & ((j < cfg.init_tokens) | (j >= group_start))
    middle_mask = (j >= cfg.init_tokens) & (j < group_start)
    return anchor_mask, middle_mask, torch.arange(n, device=device) // cfg.group_size


def anchor_attention_reference(
    q: Tensor, k: Tensor, v: Tensor, cfg: AnchorConfig, selected: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``(o, selected)``: AnchorAttention computed densely; ``selected`` [B, H, groups, N] marks the middle
    keys each query group adds to its anchor keys. Pass ``selected`` to reuse a given selection."""
    batch, heads, n, dim = q.shape
    dtype = torch.promote_types(q.dtype, torch.float32)
    scale = cfg.softmax_scale(dim)
    anchor_mask, middle_mask, group_of = anchor_dense_masks(n, cfg, q.device)
    if selected is None:
        scores = (q.to(dtype) @ k.to(dtype).transpose(-1, -2)) * scale
        anchor = scores.masked_fill(~anchor_mask, float("-inf")).amax(dim=-1)
        bs = cfg.block_size
        mean_q = q.to(dtype).view(batch, heads, n // bs, bs, dim).mean(dim=3)
        mean_anchor = anchor.view(batch, heads, n // bs, bs).mean(dim=-1)
        sub_scores = (mean_q @ k.to(dtype).transpose(-1, -2)) * scale
        keep = (sub_scores + cfg.theta >= mean_anchor[..., None]) & middle_mask[::bs]
        groups = -(-n // cfg.group_size)
        per_group = cfg.group_size // bs
        padded = torch.zeros(batch, heads, groups * per_group, n, dtype=torch.bool, device=q.device)
        padded[:, :, : n // bs] = keep
        selected = padded.view(batch, heads, groups, per_group, n).any(dim=3)
    mask = anchor_mask | selected[:, :, group_of, :]
    out, _ = dense_masked_attention(q, k, v, mask, scale=scale)
    return out, selected
