"""AnchorAttention through FlexAttention: anchor pass, stripe selection, sparse pass, merge.

1. Anchor pass: exact causal attention over the initial tokens plus the query's own group; it yields the
   partial output, its log-sum-exp and the running max per query (the anchor).
2. Stripe selection: per group and per sub-block of ``block_size`` queries, the mean query is scored against
   every middle key; key j is kept for the whole group if ``mean_q . k_j * scale + theta >= mean anchor`` for
   any sub-block of the group.
3. Sparse pass: the selected key/value columns of every group are gathered into one compact sequence per
   (batch, head), a block-aligned segment per group, and each query attends to its group's segment only;
   the result is merged into the anchor pass by log-sum-exp, which continues the online softmax of step 1.
   Its cost follows the number of selected columns, however scattered they are.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask

from .._flex import MaskMod, block_mask_from_tables, merge_attention, run_flex
from .config import AnchorConfig

MAX_GATHERED_ELEMENTS = 2**31 - 1
"""Largest gathered key tensor one sparse-pass kernel gets: past 2^31 elements the kernel's 32-bit offsets
overflow (seen as an illegal memory access at B=4, H=32, N=64K on an H100), so larger selections run in
slices of heads (and of batch rows when one head is already too large)."""


@dataclass
class AnchorStats:
    """What a call selected: ``selected`` [B, H, groups, N] middle keys per query group, ``density`` the
    fraction of causal (query, key) pairs attended, ``tile_density`` the fraction of causal tiles computed."""

    selected: Tensor
    density: float
    tile_density: float


@functools.cache
def _anchor_mask_mod(group_size: int, init_tokens: int) -> MaskMod:
    def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        group_start = (q_idx // group_size) * group_size
        return (kv_idx <= q_idx) & ((kv_idx < init_tokens) | (kv_idx >= group_start))

    return mask_mod


@functools.cache
def anchor_block_mask(n: int, cfg: AnchorConfig, device: torch.device) -> BlockMask:
    """Static block mask of the anchor pass for length ``n`` (cached per length, config and device)."""
    bs = cfg.block_size
    blocks = torch.arange(n // bs, device=device)
    qb, kb = blocks[:, None], blocks[None, :]
    group_start = (qb * bs // cfg.group_size) * cfg.group_size
    allowed = (kb * bs < cfg.init_tokens) | (kb * bs >= group_start)
    full = (allowed & (kb < qb))[None, None]
    partial = (allowed & (kb == qb))[None, None]
    return block_mask_from_tables(partial, full, _anchor_mask_mod(cfg.group_size, cfg.init_tokens), bs, n, n)


def _segment_mask_mod(seg_start: Tensor, counts: Tensor, group_size: int) -> MaskMod:
    def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        group = q_idx // group_size
        start = seg_start[b, h, group]
        return (kv_idx >= start) & (kv_idx < start + counts[b, h, group])

    return mask_mod


def select_stripes(q: Tensor, k: Tensor, anchor: Tensor, cfg: AnchorConfig) -> Tensor:
    """Stripe selection: bool [B, H, groups, N] of the middle keys kept for each query group."""
    batch, heads, n, dim = q.shape
    bs, gs = cfg.block_size, cfg.group_size
    scale = cfg.softmax_scale(dim)
    groups = -(-n // gs)
    mean_q = q.float().view(batch, heads, n // bs, bs, dim).mean(dim=3).to(q.dtype)
    mean_anchor = anchor.float().view(batch, heads, n // bs, bs).mean(dim=-1)
    selected = torch.zeros(batch, heads, groups, n, dtype=torch.bool, device=q.device)
    for g in range(1, groups):
        start = g * gs
        if start <= cfg.init_tokens:
            continue
        subs = slice(start // bs, min(start + gs, n) // bs)
        scores = (mean_q[:, :, subs] @ k[:, :, cfg.init_tokens : start].transpose(-1, -2)).float() * scale
        keep = (scores + cfg.theta >= mean_anchor[:, :, subs, None]).any(dim=2)
        selected[:, :, g, cfg.init_tokens : start] = keep
    return selected


def gather_selected(
    k: Tensor, v: Tensor, selected: Tensor, block_size: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gather the selected columns into compact keys/values ``[B, H, L, D]``.

    Group g's columns (ascending) fill a segment starting at ``seg_start[b, h, g]``, a multiple of
    ``block_size``, of ``counts[b, h, g]`` columns; the rest of the sequence is zero padding. Returns
    ``(k_sel, v_sel, seg_start, counts)``; differentiable with respect to k and v.
    """
    batch, heads, groups, _ = selected.shape
    counts = selected.sum(dim=-1)
    seg_len = (counts + block_size - 1) // block_size * block_size
    seg_start = torch.cumsum(seg_len, dim=-1) - seg_len
    total = max(int(seg_len.sum(dim=-1).max()), block_size)
    bi, hi, gi, pos = selected.nonzero(as_tuple=True)
    flat_counts = counts.flatten()
    row_start = torch.cumsum(flat_counts, dim=0) - flat_counts
    rank = torch.arange(pos.numel(), device=pos.device) - row_start[(bi * heads + hi) * groups + gi]
    dest = seg_start[bi, hi, gi] + rank
    k_sel = k.new_zeros(batch, heads, total, k.shape[-1]).index_put((bi, hi, dest), k[bi, hi, pos])
    v_sel = v.new_zeros(batch, heads, total, v.shape[-1]).index_put((bi, hi, dest), v[bi, hi, pos])
    return k_sel, v_sel, seg_start, counts


def segment_block_mask(seg_start: Tensor, counts: Tensor, n: int, kv_len: int, cfg: AnchorConfig) -> BlockMask:
    """Block mask of the sparse pass over gathered keys: each query tile sees its group's segment, whole
    tiles as full blocks and the segment's last, partly filled tile with the mask applied."""
    bs = cfg.block_size
    kv_blocks = kv_len // bs
    group_of_block = torch.arange(n // bs, device=seg_start.device) * bs // cfg.group_size
    first = (seg_start // bs)[:, :, group_of_block]
    whole = (counts // bs)[:, :, group_of_block]
    ragged = (counts % bs != 0)[:, :, group_of_block]
    offsets = torch.arange(kv_blocks, device=seg_start.device)
    full_indices = (first[..., None] + offsets).clamp(max=kv_blocks - 1).to(torch.int32)
    partial_indices = (first + whole).clamp(max=kv_blocks - 1)[..., None].expand_as(full_indices).to(torch.int32)
    return BlockMask.from_kv_blocks(
        ragged.to(torch.int32),
        partial_indices.contiguous(),
        whole.to(torch.int32),
        full_indices,
        BLOCK_SIZE=bs,
        mask_mod=_segment_mask_mod(seg_start, counts, cfg.group_size),
        seq_lengths=(n, kv_len),
    )


def _slices(batch: int, heads: int, per_head: int) -> list[tuple[slice, slice]]:
    """(batch, head) slices whose gathered tensors stay within :data:`MAX_GATHERED_ELEMENTS`."""
    if batch * heads * per_head <= MAX_GATHERED_ELEMENTS:
        return [(slice(None), slice(None))]
    if batch * per_head <= MAX_GATHERED_ELEMENTS:
        step = MAX_GATHERED_ELEMENTS // (batch * per_head)
        return [(slice(None), slice(h, h + step)) for h in range(0, heads, step)]
    step = max(1, MAX_GATHERED_ELEMENTS // per_head)
    return [(slice(b, b + 1), slice(h, h + step)) for b in range(batch) for h in range(0, heads, step)]


def _sparse_pass(
    q: Tensor, k: Tensor, v: Tensor, selected: Tensor, cfg: AnchorConfig, scale: float
) -> tuple[Tensor, Tensor]:
    """Attention of each query group over its gathered selected columns: ``(o, lse)``."""
    batch, heads, n, _ = q.shape
    bs = cfg.block_size
    seg_len = (selected.sum(dim=-1) + bs - 1) // bs * bs
    longest = max(int(seg_len.sum(dim=-1).max()), bs)
    by_rows: dict[int | None, list[tuple[Tensor, Tensor]]] = {}
    for rows, cols in _slices(batch, heads, longest * max(k.shape[-1], v.shape[-1])):
        k_sel, v_sel, seg_start, counts = gather_selected(k[rows, cols], v[rows, cols], selected[rows, cols], bs)
        mask = segment_block_mask(seg_start, counts, n, k_sel.shape[2], cfg)
        by_rows.setdefault(rows.start, []).append(run_flex(q[rows, cols], k_sel, v_sel, mask, scale=scale, lse=True))
    out = torch.cat([torch.cat([o for o, _ in parts], dim=1) for parts in by_rows.values()], dim=0)
    lse = torch.cat([torch.cat([row_lse for _, row_lse in parts], dim=1) for parts in by_rows.values()], dim=0)
    return out, lse


def _stats(selected: Tensor, n: int, cfg: AnchorConfig) -> AnchorStats:
    gs, init, bs = cfg.group_size, cfg.init_tokens, cfg.block_size
    counts = selected.sum(dim=-1)
    rows = torch.arange(n, device=selected.device)
    group_start = (rows // gs) * gs
    anchor_pairs = float((torch.clamp(group_start, max=init) + rows + 1 - group_start).sum())
    rows_per_group = torch.bincount(rows // gs, minlength=selected.shape[2]).to(torch.float64)
    selected_pairs = (counts.to(torch.float64) * rows_per_group).sum(dim=-1).mean()
    anchor_tiles = float(anchor_block_mask(n, cfg, selected.device).to_dense().sum())
    sparse_tiles = (((counts + bs - 1) // bs).to(torch.float64) * rows_per_group / bs).sum(dim=-1).mean()
    q_blocks = n // bs
    return AnchorStats(
        selected=selected,
        density=(anchor_pairs + float(selected_pairs)) / (n * (n + 1) / 2),
        tile_density=(anchor_tiles + float(sparse_tiles)) / (q_blocks * (q_blocks + 1) / 2),
    )


def anchor_attention(
    q: Tensor, k: Tensor, v: Tensor, cfg: AnchorConfig | None = None, return_stats: bool = False
) -> Tensor | tuple[Tensor, AnchorStats]:
    """Causal AnchorAttention of [B, H, N, D] inputs (N a multiple of ``cfg.block_size``).

    Returns ``o`` [B, H, N, D], or ``(o, AnchorStats)`` with ``return_stats``. Differentiable with respect to
    q, k, v through both passes; the selection itself is a discrete choice and passes no gradient.
    """
    cfg = cfg or AnchorConfig()
    n = q.shape[2]
    if n % cfg.block_size:
        raise ValueError(f"sequence length {n} must be a multiple of block_size {cfg.block_size}")
    scale = cfg.softmax_scale(q.shape[-1])
    anchor_mask = anchor_block_mask(n, cfg, q.device)
    out_anchor, lse_anchor, anchor = run_flex(q, k, v, anchor_mask, scale=scale, lse=True, max_scores=True)
    with torch.no_grad():
        selected = select_stripes(q.detach(), k.detach(), anchor, cfg)
    out_sparse, lse_sparse = _sparse_pass(q, k, v, selected, cfg, scale)
    out = merge_attention(out_anchor, lse_anchor, out_sparse, lse_sparse)
    if not return_stats:
        return out
    return out, _stats(selected, n, cfg)


def anchor_recall(
    q: Tensor, k: Tensor, selected: Tensor, cfg: AnchorConfig, num_queries: int = 64, seed: int = 0
) -> float:
    """Mean share of the dense causal attention mass that AnchorAttention's attended keys cover, over
    ``num_queries`` random query positions (same positions for every batch row and head)."""
    batch, heads, n, dim = q.shape
    scale = cfg.softmax_scale(dim)
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, n, (num_queries,), generator=generator).to(q.device)
    keys = torch.arange(n, device=q.device)
    total = 0.0
    for row_chunk in rows.split(16):
        scores = (q[:, :, row_chunk].float() @ k.float().transpose(-1, -2)) * scale
        causal = keys[None, :] <= row_chunk[:, None]
        probs = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        group_start = (row_chunk // cfg.group_size) * cfg.group_size
        attended = causal & ((keys[None, :] < cfg.init_tokens) | (keys[None, :] >= group_start[:, None]))
        attended = attended | selected[:, :, row_chunk // cfg.group_size, :]
        total += float((probs * attended).sum(dim=-1).sum())
    return total / (batch * heads * num_queries)
