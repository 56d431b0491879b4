"""Blockwise (chunked) lightning attention in plain PyTorch: the CPU path and the fallback everywhere.

One routine, :func:`chunk_scan`, runs the tiled algorithm of Lightning Attention-2 in either direction. The
forward pass is a forward scan; the backward pass is one forward scan (dq) and two reverse scans (dk, dv), see
:mod:`.function`. The Triton kernel in :mod:`.triton_kernels` implements the same routine, line for line.

Forward scan, block of ``L`` rows starting at ``t0`` with local row index ``r`` and running state ``S`` [D, E]::

    O_b = (Q_b K_b^T * M) V_b + (Q_b S) * lam^(r+1)          M[i,j] = lam^(i-j) for j <= i
    S  <- lam^L S + (K_b * lam^(L-1-r))^T V_b

Reverse scan (blocks taken last to first), used for gradients::

    O_b = (Q_b K_b^T * M^T) V_b + (Q_b S) * lam^(L-1-r)      M^T[i,j] = lam^(j-i) for j >= i
    S  <- lam^L S + (K_b * lam^(r+1))^T V_b
"""

from __future__ import annotations

import torch
from torch import Tensor

from .reference import state_dtype

DEFAULT_CHUNK = 64


def chunk_scan(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    s: Tensor,
    initial_state: Tensor | None = None,
    reverse: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[Tensor, Tensor]:
    """Run the blockwise scan over q, k [B,H,N,D] and v [B,H,N,E]; returns ``(o [B,H,N,E], state [B,H,D,E])``.

    ``o`` has the dtype of ``v``; the state is float32 (float64 for float64 inputs). ``initial_state`` is the
    state entering the first block processed (the last block when ``reverse``).
    """
    batch, heads, n, dim_k = q.shape
    dim_v = v.shape[-1]
    dtype = state_dtype(q.dtype)
    device = q.device
    if initial_state is None:
        state = torch.zeros(batch, heads, dim_k, dim_v, dtype=dtype, device=device)
    else:
        state = initial_state.to(dtype)
    out = torch.empty(batch, heads, n, dim_v, dtype=v.dtype, device=device)
    neg_s = -s.to(dtype).view(heads, 1)
    rows = torch.arange(chunk_size, device=device, dtype=dtype)
    diff = rows[:, None] - rows[None, :]
    if reverse:
        diff = -diff
    intra = torch.where(
        diff >= 0, torch.exp(neg_s[:, :, None] * diff.clamp(min=0)), torch.zeros((), dtype=dtype, device=device)
    )
    starts = list(range(0, n, chunk_size))
    if reverse:
        starts.reverse()
    for start in starts:
        length = min(chunk_size, n - start)
        r = rows[:length]
        qb = q[:, :, start : start + length].to(dtype)
        kb = k[:, :, start : start + length].to(dtype)
        vb = v[:, :, start : start + length].to(dtype)
        head_decay = torch.exp(neg_s * (r + 1))
        tail_decay = torch.exp(neg_s * (length - 1 - r))
        out_decay, key_decay = (tail_decay, head_decay) if reverse else (head_decay, tail_decay)
        scores = qb @ kb.transpose(-1, -2) * intra[:, :length, :length]
        ob = scores @ vb + (qb @ state) * out_decay[..., None]
        state = torch.exp(neg_s * length)[..., None] * state + (kb * key_decay[..., None]).transpose(-1, -2) @ vb
        out[:, :, start : start + length] = ob.to(v.dtype)
    return out, state
