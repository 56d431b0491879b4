"""Naive references for lightning attention (causal linear attention with per-head decay).

Per head h with decay ``lam = exp(-s_h)`` and state ``S`` of shape [D, E]::

    S_t = lam * S_{t-1} + k_t v_t^T,     o_t = q_t^T S_t,     S_{-1} = initial_state (or 0)

No softmax and no 1/sqrt(d) scaling. Both references compute in float32 (float64 for float64 inputs), are
meant for correctness checks on small sizes and return ``(o, final_state)``; ``o`` has the dtype of ``q``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype states and accumulators use for inputs of ``dtype``: float32, or float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


def _alibi_slopes(num_heads: int) -> list[float]:
    """ALiBi slopes 2^(-8/h * (i+1)); for a head count that is no power of two, the ALiBi interleaving."""
    if num_heads & (num_heads - 1) == 0:
        return [2.0 ** (-8.0 / num_heads * (i + 1)) for i in range(num_heads)]
    closest = 2 ** math.floor(math.log2(num_heads))
    return _alibi_slopes(closest) + _alibi_slopes(2 * closest)[0::2][: num_heads - closest]


def transnormer_slopes(num_heads: int, layer_idx: int = 0, num_layers: int = 1) -> Tensor:
    """TransNormerLLM decay rates ``s`` [num_heads] for one layer (``lam_h = exp(-s_h)``).

    ALiBi-style slopes ``2^(-8/h * (i+1))`` (0.5, 0.25, ... for 8 heads), scaled for layer ``l`` of ``L`` by
    ``1 - l/(L-1) + 1e-5`` so that the first layer decays fastest and the last hardly at all.
    """
    if num_heads < 1:
        raise ValueError(f"num_heads must be positive, got {num_heads}")
    if not 0 <= layer_idx < max(num_layers, 1):
        raise ValueError(f"layer_idx {layer_idx} outside [0, {num_layers})")
    factor = 1.0 - layer_idx / (num_layers - 1) + 1e-5 if num_layers > 1 else 1.0
    return torch.tensor(_alibi_slopes(num_heads), dtype=torch.float32) * factor


def _initial_state(q: Tensor, v: Tensor, initial_state: Tensor | None, dtype: torch.dtype) -> Tensor:
    batch, heads, _, dim_k = q.shape
    if initial_state is None:
        return q.new_zeros(batch, heads, dim_k, v.shape[-1], dtype=dtype)
    return initial_state.to(dtype)


def lightning_attn_recurrent(
    q: Tensor, k: Tensor, v: Tensor, s: Tensor, initial_state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Token-by-token recurrence, the definition itself: ``(o [B,H,N,E], final_state [B,H,D,E])``."""
    dtype = state_dtype(q.dtype)
    decay = torch.exp(-s.to(dtype)).view(1, -1, 1, 1)
    state = _initial_state(q, v, initial_state, dtype)
    qc, kc, vc = q.to(dtype), k.to(dtype), v.to(dtype)
    outputs = []
    for t in range(q.shape[2]):
        state = decay * state + kc[:, :, t, :, None] * vc[:, :, t, None, :]
        outputs.append(torch.einsum("bhd,bhde->bhe", qc[:, :, t], state))
    out = torch.stack(outputs, dim=2) if outputs else vc.new_zeros(vc.shape)
    return out.to(q.dtype), state


def lightning_attn_quadratic(
    q: Tensor, k: Tensor, v: Tensor, s: Tensor, initial_state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Masked quadratic form ``O = (Q K^T * M) V`` with ``M[i,j] = lam^(i-j)`` for ``j <= i``.

    The initial state adds ``lam^(i+1) q_i^T S_0`` to row ``i``; the final state is
    ``lam^N S_0 + sum_j lam^(N-1-j) k_j v_j^T``.
    """
    dtype = state_dtype(q.dtype)
    n = q.shape[2]
    neg_s = -s.to(dtype).view(-1, 1, 1)
    pos = torch.arange(n, device=q.device, dtype=dtype)
    diff = pos[:, None] - pos[None, :]
    mask = torch.where(diff >= 0, torch.exp(neg_s * diff.clamp(min=0)), torch.zeros((), dtype=dtype, device=q.device))
    qc, kc, vc = q.to(dtype), k.to(dtype), v.to(dtype)
    out = (qc @ kc.transpose(-1, -2) * mask) @ vc
    state0 = _initial_state(q, v, initial_state, dtype)
    row_decay = torch.exp(neg_s * (pos + 1)[:, None])
    out = out + (qc @ state0) * row_decay
    key_decay = torch.exp(neg_s * (n - 1 - pos)[:, None])
    final = torch.exp(neg_s * n) * state0 + (kc * key_decay).transpose(-1, -2) @ vc
    return out.to(q.dtype), final
