"""Shared plumbing of the sparse patterns: FlexAttention dispatch, block masks from block tables, and the
dense masked softmax attention that serves as their reference.

On CUDA, FlexAttention runs compiled (fused Triton kernels that skip masked-out blocks); elsewhere it runs
eagerly, which materialises the scores and evaluates ``mask_mod`` on every element (fine for the tiny CPU
tests), or falls back to the dense reference where eager FlexAttention lacks a feature (see :func:`run_flex`).
Because the eager path ignores the block structure, every mask_mod here is exact per element and the block
tables are only the sparsity the compiled kernel exploits.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Callable

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import AuxRequest, BlockMask, create_block_mask, flex_attention

MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


FLEX_RECOMPILE_LIMIT = 64
"""Dynamo's per-function compile limit while FlexAttention is in use: every mask_mod (pattern) and dtype is a
compiled variant of the one function, more than the default 8, past which dynamo would fall back to the
eager FlexAttention that materialises full score matrices."""


@functools.cache
def _compiled_flex() -> Callable[..., object]:
    """Compiled FlexAttention; automatic dynamic shapes keep a second sequence length from recompiling."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, FLEX_RECOMPILE_LIMIT)
    return torch.compile(flex_attention)


@functools.cache
def _compiled_create_block_mask() -> Callable[..., BlockMask]:
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, FLEX_RECOMPILE_LIMIT)
    return torch.compile(create_block_mask)


def build_block_mask(mask_mod: MaskMod, n: int, device: torch.device, block_size: int = 128) -> BlockMask:
    """BlockMask of ``mask_mod`` over an [n, n] score matrix shared by all batch rows and heads (compiled on
    CUDA, where evaluating the mask densely would be slow for long sequences)."""
    build = _compiled_create_block_mask() if device.type == "cuda" else create_block_mask
    return build(mask_mod, None, None, n, n, device=device, BLOCK_SIZE=block_size)


def run_flex(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    block_mask: BlockMask,
    scale: float | None = None,
    lse: bool = False,
    max_scores: bool = False,
) -> Tensor | tuple[Tensor, ...]:
    """Softmax attention of [B, H, N, D] inputs under a block mask: compiled FlexAttention on CUDA.

    Off CUDA, FlexAttention runs eagerly and has no backward pass and no per-row maxima; there the call
    falls back to :func:`dense_masked_attention` over the mask_mod evaluated densely whenever a gradient or
    the maxima are needed (small sizes only). Returns ``o``, or ``(o, lse)`` / ``(o, lse, max_scores)`` as
    asked (natural-log units, per row); rows with no allowed key give ``o = 0`` and ``lse = max = -inf``.
    """
    if q.is_cuda:
        request = AuxRequest(lse=lse, max_scores=max_scores)
        out, aux = _compiled_flex()(q, k, v, block_mask=block_mask, scale=scale, return_aux=request)
        extras = tuple(t for t, want in ((aux.lse, lse), (aux.max_scores, max_scores)) if want)
    elif max_scores or (torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))):
        mask = dense_mask_from_mod(block_mask.mask_mod, q.shape[0], q.shape[1], q.shape[2], k.shape[2], q.device)
        out, row_lse, row_max = dense_masked_attention(q, k, v, mask, scale, return_max=True)
        extras = tuple(t for t, want in ((row_lse, lse), (row_max, max_scores)) if want)
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*flex_attention.*")
            out, aux = flex_attention(q, k, v, block_mask=block_mask, scale=scale, return_aux=AuxRequest(lse=True))
        extras = (aux.lse,) if lse else ()
    return (out, *extras) if extras else out


def dense_mask_from_mod(
    mask_mod: MaskMod, batch: int, heads: int, q_len: int, kv_len: int, device: torch.device
) -> Tensor:
    """Evaluate a mask_mod on every (b, h, q, kv): a bool tensor [B, H, q_len, kv_len]."""
    b = torch.arange(batch, device=device).view(-1, 1, 1, 1)
    h = torch.arange(heads, device=device).view(1, -1, 1, 1)
    qi = torch.arange(q_len, device=device).view(1, 1, -1, 1)
    ki = torch.arange(kv_len, device=device).view(1, 1, 1, -1)
    return mask_mod(b, h, qi, ki).expand(batch, heads, q_len, kv_len)


def block_mask_from_tables(
    partial: Tensor | None,
    full: Tensor | None,
    mask_mod: MaskMod,
    block_size: int,
    q_len: int,
    kv_len: int,
) -> BlockMask:
    """A BlockMask from bool block tables [B, H, q_blocks, kv_blocks].

    ``partial`` blocks are computed with ``mask_mod`` applied, ``full`` blocks without it (every element of
    them must be allowed by ``mask_mod``); blocks in neither are skipped.
    """
    reference = partial if partial is not None else full
    if reference is None:
        raise ValueError("at least one of partial and full block tables is needed")

    def ordered(table: Tensor) -> tuple[Tensor, Tensor]:
        counts = table.sum(dim=-1, dtype=torch.int32)
        indices = torch.argsort((~table).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return counts, indices

    if partial is None:
        partial = torch.zeros_like(reference)
    counts, indices = ordered(partial)
    full_counts, full_indices = ordered(full) if full is not None else (None, None)
    return BlockMask.from_kv_blocks(
        counts,
        indices,
        full_counts,
        full_indices,
        BLOCK_SIZE=block_size,
        mask_mod=mask_mod,
        seq_lengths=(q_len, kv_len),
    )


def dense_masked_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float | None = None, return_max: bool = False
) -> tuple[Tensor, ...]:
    """Reference softmax attention with a bool mask broadcastable to [B, H, N, M]: ``(o, lse)``, and the
    per-row maximum score with ``return_max``.

    Computes in float32 (float64 for float64 inputs); rows with no allowed key give ``o = 0``, ``lse = -inf``.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q.to(dtype) @ k.to(dtype).transpose(-1, -2)) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - lse.unsqueeze(-1).clamp(min=torch.finfo(dtype).min))
    out = (probs @ v.to(dtype)).to(q.dtype)
    return (out, lse, scores.amax(dim=-1)) if return_max else (out, lse)


def merge_attention(o1: Tensor, lse1: Tensor, o2: Tensor, lse2: Tensor) -> Tensor:
    """Combine two softmax attentions over disjoint key sets from their outputs and log-sum-exps."""
    top = torch.maximum(lse1, lse2)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    w1 = torch.exp(lse1 - top).unsqueeze(-1)
    w2 = torch.exp(lse2 - top).unsqueeze(-1)
    total = (w1 + w2).clamp(min=torch.finfo(w1.dtype).tiny)
    return ((o1.to(w1.dtype) * w1 + o2.to(w2.dtype) * w2) / total).to(o1.dtype)
