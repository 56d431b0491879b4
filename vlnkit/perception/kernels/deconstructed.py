"""Relaxed attention variants and attention-map indicators of "Deconstructing Attention".

Xue, Moosavi, Aletras, "Deconstructing Attention: Investigating Design Principles for Effective Language
Modeling" (arXiv 2510.11602), re-implemented from ``docs/perception-attention.md`` section 10. Standard
attention ``softmax(q k^T / sqrt(d)) v`` follows four principles; the mixers here relax the first two and fit
the token-mixer interface (``forward(q, k, v)`` on per-head [B, H, N, D] tensors, registered in
:mod:`.mixers`):

- :class:`MLPMixer` (``mlp``, no token mixing): ``out_i = SiLU(q_i) * v_i``. In a transformer layer the query
  projection plays FC_Gt, the value projection FC_Up and the output projection FC_Dn, so the layer is
  ``FC_Dn(SiLU(FC_Gt(h)) * FC_Up(h))``; the keys are unused.
- :class:`TaylorMixer` (``taylor``, "Approx"): ``exp(x)`` replaced by its 2nd-order Taylor expansion
  ``1 + x + x^2/2`` of ``x = q.k / sqrt(d)``, normalised by the kernel sum. The kernel equals
  ``((x + 1)^2 + 1) / 2 >= 1/2``, so the normalisation never divides by zero. Parallel (quadratic) form
  :func:`taylor_attention` and recurrent form :func:`taylor_attention_recurrent`, which carries the
  order-0, order-1 and order-2 states ``(sum v, sum k v^T, sum (k (x) k) v^T)`` and their key sums.
- :class:`KeyOnlyMixer` (``key_only``, "Non-approx"): scores ``s_j = (SiLU(q_j) * k_j).sum() / sqrt(d)``
  depend only on the key position, ``o_i = sum_{j<=i} e^{s_j} v_j / sum_{j<=i} e^{s_j}``. Parallel form
  :func:`key_only_attention` and recurrent form :func:`key_only_attention_recurrent` (running max-stabilised
  numerator and denominator).

Every mixer has a ``causal`` flag (default True); non-causal, each query sees all N keys (the recurrent forms
are causal only). The mixers' ``pairwise`` attribute says whether a score compares a query with a key at
another position (only then are rotary position embeddings meaningful).

The indicators of the paper, computed per head from an attention map ``A`` [B, H, N, N] whose rows sum to 1:
:func:`attention_entropy`, :func:`attention_concentration` (``||A||_F``), :func:`head_diversity`,
:func:`attention_sink`, :func:`local_focus` (``LocFoc_N``), gathered by :func:`attention_indicators`, and
:func:`minmax_normalise` for the paper's min-max normalised entropy, concentration and head diversity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _causal_mask(n_q: int, n_k: int, device: torch.device) -> Tensor:
    """[n_q, n_k] boolean mask, True where key j may be seen by query i (j <= i, queries aligned to the end)."""
    offset = n_k - n_q
    return torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril(offset)


def softmax_attention_map(q: Tensor, k: Tensor, causal: bool = True, scale: float | None = None) -> Tensor:
    """The attention map ``softmax(q k^T * scale)`` [B, H, N, N] of standard attention (what SDPA applies)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale
    if causal:
        scores = scores.masked_fill(~_causal_mask(q.shape[-2], k.shape[-2], q.device), float("-inf"))
    return scores.softmax(dim=-1)


# ----------------------------------------------------------------------------------------------------------
# MLP (no token mixing)
# ----------------------------------------------------------------------------------------------------------

class MLPMixer(nn.Module):
    """The MLP variant: ``out_i = SiLU(q_i) * v_i``, no interaction between tokens.

    With the layer's projections this is ``FC_Dn(SiLU(FC_Gt(h)) * FC_Up(h))`` (q = FC_Gt, v = FC_Up, the
    output projection = FC_Dn). ``k`` is accepted for the interface and unused; q and v need the same last
    dim. ``causal`` is accepted for uniformity and changes nothing (no token sees another).
    """

    pairwise = False

    def __init__(self, causal: bool = True) -> None:
        super().__init__()
        self.causal = causal

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if q.shape[-1] != v.shape[-1]:
            raise ValueError(f"the mlp mixer gates v with q: need equal last dims, got {q.shape[-1]} and {v.shape[-1]}")
        return F.silu(q) * v


# ----------------------------------------------------------------------------------------------------------
# Approx: 2nd-order Taylor kernel
# ----------------------------------------------------------------------------------------------------------

def taylor_kernel(x: Tensor) -> Tensor:
    """``1 + x + x^2 / 2``, the 2nd-order Taylor expansion of ``exp(x)`` (always >= 1/2)."""
    return 1.0 + x + 0.5 * x * x


def taylor_attention_map(q: Tensor, k: Tensor, causal: bool = True) -> Tensor:
    """The Approx attention map [B, H, N, N]: ``f(q_i.k_j / sqrt(d))`` normalised over the visible keys."""
    weights = taylor_kernel((q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]))
    if causal:
        weights = weights * _causal_mask(q.shape[-2], k.shape[-2], q.device)
    return weights / weights.sum(dim=-1, keepdim=True)


def taylor_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = True) -> Tensor:
    """Approx attention in parallel (quadratic) form: :func:`taylor_attention_map` applied to ``v``."""
    return taylor_attention_map(q, k, causal) @ v


@dataclass
class TaylorState:
    """The recurrent state of Approx attention after some tokens: per order the value sums and key sums.

    ``s0`` [B, H, E] = sum v_j, ``z0`` [B, H] = the token count; ``s1`` [B, H, D, E] = sum k_j v_j^T,
    ``z1`` [B, H, D] = sum k_j; ``s2`` [B, H, D, D, E] = sum (k_j (x) k_j) v_j^T, ``z2`` [B, H, D, D] =
    sum k_j (x) k_j.
    """

    s0: Tensor
    z0: Tensor
    s1: Tensor
    z1: Tensor
    s2: Tensor
    z2: Tensor

    @classmethod
    def zeros(cls, b: int, h: int, d: int, e: int, like: Tensor) -> TaylorState:
        """The empty state (no token seen)."""
        new = like.new_zeros
        return cls(new(b, h, e), new(b, h), new(b, h, d, e), new(b, h, d), new(b, h, d, d, e), new(b, h, d, d))


def taylor_attention_recurrent(q: Tensor, k: Tensor, v: Tensor, state: TaylorState | None = None
                               ) -> tuple[Tensor, TaylorState]:
    """Causal Approx attention token by token, summing the order-0/1/2 states.

    With ``x = q.k / sqrt(d)``, ``sum_j f(x_ij) v_j = s0 + q.s1 / sqrt(d) + (q (x) q).s2 / (2 d)`` and the
    same with the key sums for the denominator. ``state`` continues an earlier call (streaming). Returns the
    outputs [B, H, N, E] and the state after the last token. Costs O(N D^2 E), memory O(D^2 E).
    """
    b, h, n, d = q.shape
    st = TaylorState.zeros(b, h, d, v.shape[-1], v) if state is None else state
    c1, c2 = 1.0 / math.sqrt(d), 1.0 / (2.0 * d)
    outs = []
    for t in range(n):
        qt, kt, vt = q[:, :, t], k[:, :, t], v[:, :, t]
        kk = kt.unsqueeze(-1) * kt.unsqueeze(-2)
        st = TaylorState(
            st.s0 + vt, st.z0 + 1.0,
            st.s1 + kt.unsqueeze(-1) * vt.unsqueeze(-2), st.z1 + kt,
            st.s2 + kk.unsqueeze(-1) * vt[:, :, None, None, :], st.z2 + kk,
        )
        qq = qt.unsqueeze(-1) * qt.unsqueeze(-2)
        num = st.s0 + c1 * torch.einsum("bhd,bhde->bhe", qt, st.s1) + c2 * torch.einsum("bhij,bhije->bhe", qq, st.s2)
        den = st.z0 + c1 * (qt * st.z1).sum(-1) + c2 * (qq * st.z2).sum((-1, -2))
        outs.append(num / den.unsqueeze(-1))
    return torch.stack(outs, dim=2), st


class TaylorMixer(nn.Module):
    """The Approx variant (``taylor``): 2nd-order Taylor kernel in place of exp, normalised by its sum.

    Config: ``causal`` (default True); ``form`` ``"parallel"`` (quadratic, default) or ``"recurrent"``
    (:func:`taylor_attention_recurrent`, causal only).
    """

    pairwise = True

    def __init__(self, causal: bool = True, form: str = "parallel") -> None:
        super().__init__()
        if form not in ("parallel", "recurrent"):
            raise ValueError(f"form must be 'parallel' or 'recurrent', got {form!r}")
        if form == "recurrent" and not causal:
            raise ValueError("the recurrent form of the taylor mixer is causal only")
        self.causal = causal
        self.form = form

    def attention_map(self, q: Tensor, k: Tensor) -> Tensor:
        """The map this mixer applies to v."""
        return taylor_attention_map(q, k, self.causal)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if self.form == "recurrent":
            return taylor_attention_recurrent(q, k, v)[0]
        return taylor_attention(q, k, v, self.causal)


# ----------------------------------------------------------------------------------------------------------
# Non-approx: scores of the key position only
# ----------------------------------------------------------------------------------------------------------

def key_only_scores(q: Tensor, k: Tensor) -> Tensor:
    """The Non-approx scores ``s_j = (SiLU(q_j) * k_j).sum() / sqrt(d)`` [B, H, N], one per key position."""
    return (F.silu(q) * k).sum(-1) / math.sqrt(q.shape[-1])


def key_only_attention_map(q: Tensor, k: Tensor, causal: bool = True) -> Tensor:
    """The Non-approx map [B, H, N, N]: row i is the softmax of ``s_j`` over the visible keys ``j``."""
    n = q.shape[-2]
    scores = key_only_scores(q, k).unsqueeze(-2).expand(*q.shape[:-2], n, n)
    if causal:
        scores = scores.masked_fill(~_causal_mask(n, n, q.device), float("-inf"))
    return scores.softmax(dim=-1)


def key_only_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = True) -> Tensor:
    """Non-approx attention in parallel form: :func:`key_only_attention_map` applied to ``v``."""
    return key_only_attention_map(q, k, causal) @ v


@dataclass
class KeyOnlyState:
    """The recurrent state of Non-approx attention: the running max score ``m`` [B, H], the numerator
    ``num`` [B, H, E] = sum e^{s_j - m} v_j and the denominator ``den`` [B, H] = sum e^{s_j - m}."""

    m: Tensor
    num: Tensor
    den: Tensor


def key_only_attention_recurrent(q: Tensor, k: Tensor, v: Tensor, state: KeyOnlyState | None = None
                                 ) -> tuple[Tensor, KeyOnlyState]:
    """Causal Non-approx attention token by token with a max-stabilised running numerator and denominator
    (O(N E) time, O(E) memory). ``state`` continues an earlier call. Returns outputs [B, H, N, E] and the state."""
    b, h, n, _ = q.shape
    s = key_only_scores(q, k)
    if state is None:
        state = KeyOnlyState(v.new_full((b, h), float("-inf")), v.new_zeros(b, h, v.shape[-1]), v.new_zeros(b, h))
    outs = []
    for t in range(n):
        m = torch.maximum(state.m, s[:, :, t])
        decay = torch.exp(state.m - m)
        w = torch.exp(s[:, :, t] - m)
        state = KeyOnlyState(m, state.num * decay.unsqueeze(-1) + w.unsqueeze(-1) * v[:, :, t], state.den * decay + w)
        outs.append(state.num / state.den.unsqueeze(-1))
    return torch.stack(outs, dim=2), state


class KeyOnlyMixer(nn.Module):
    """The Non-approx variant (``key_only``): softmax over the past of scores depending only on the key.

    ``q`` is gated by SiLU inside (the paper's ``q = SiLU(h W_Q)``). Config: ``causal`` (default True);
    ``form`` ``"parallel"`` (default) or ``"recurrent"`` (:func:`key_only_attention_recurrent`, causal only).
    """

    pairwise = False

    def __init__(self, causal: bool = True, form: str = "parallel") -> None:
        super().__init__()
        if form not in ("parallel", "recurrent"):
            raise ValueError(f"form must be 'parallel' or 'recurrent', got {form!r}")
        if form == "recurrent" and not causal:
            raise ValueError("the recurrent form of the key_only mixer is causal only")
        self.causal = causal
        self.form = form

    def attention_map(self, q: Tensor, k: Tensor) -> Tensor:
        """The map this mixer applies to v."""
        return key_only_attention_map(q, k, self.causal)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if self.form == "recurrent":
            return key_only_attention_recurrent(q, k, v)[0]
        return key_only_attention(q, k, v, self.causal)


# ----------------------------------------------------------------------------------------------------------
# Attention indicators
# ----------------------------------------------------------------------------------------------------------

def attention_entropy(attn: Tensor) -> Tensor:
    """Entropy ``-sum_j a_ij log a_ij`` of each row, averaged over rows and batch: [H] for ``attn`` [B, H, N, N]
    (``0 log 0 = 0``)."""
    terms = torch.where(attn > 0, -attn * attn.clamp_min(1e-30).log(), torch.zeros_like(attn))
    return terms.sum(-1).mean(dim=(0, 2))


def attention_concentration(attn: Tensor) -> Tensor:
    """Concentration ``||A||_F`` of each head's map, averaged over the batch: [H]."""
    return attn.pow(2).sum(dim=(-1, -2)).sqrt().mean(0)


def head_diversity(attn: Tensor) -> Tensor:
    """HeadDiv: the standard deviation across heads (population, correction 0) at each position (i, j <= i),
    averaged over the lower triangle with normalisation ``2 / (L (L + 1))`` and over the batch: a scalar."""
    n = attn.shape[-1]
    std = attn.std(dim=1, correction=0)
    lower = torch.ones(n, n, dtype=torch.bool, device=attn.device).tril()
    return (std * lower).sum(dim=(-1, -2)).mean() * 2.0 / (n * (n + 1))


def attention_sink(attn: Tensor) -> Tensor:
    """Sink: the mean attention to the first token, ``mean_i A[i, 0]`` over rows and batch: [H]."""
    return attn[..., 0].mean(dim=(0, 2))


def local_focus(attn: Tensor, distance: int) -> Tensor:
    """LocFoc_N: the mean attention at relative distance N, ``mean_{i >= N} A[i, i - N]``: [H]."""
    n = attn.shape[-1]
    if not 0 <= distance < n:
        raise ValueError(f"distance must lie in [0, {n}), got {distance}")
    return attn.diagonal(offset=-distance, dim1=-2, dim2=-1).mean(dim=(0, 2))


def attention_indicators(attn: Tensor, distances: Sequence[int] = (0, 1, 2, 3)) -> dict[str, Tensor]:
    """All indicators of one layer's map ``attn`` [B, H, N, N]: ``entropy``, ``concentration``, ``sink`` and
    ``locfoc_N`` per head [H], ``head_div`` a scalar."""
    out = {
        "entropy": attention_entropy(attn),
        "concentration": attention_concentration(attn),
        "head_div": head_diversity(attn),
        "sink": attention_sink(attn),
    }
    for d in distances:
        out[f"locfoc_{d}"] = local_focus(attn, d)
    return out


def minmax_normalise(values: Sequence[float]) -> list[float]:
    """Min-max normalisation to [0, 1] (the paper's for entropy, concentration and HeadDiv across layers);
    all zeros when the values are equal."""
    lo, hi = min(values), max(values)
    return [0.0 if hi == lo else (x - lo) / (hi - lo) for x in values]
