"""Sparsifiner attention: a learned, instance-dependent sparse connectivity mask for softmax attention.

A light :class:`MaskPredictor` turns the per-head queries and keys into a low-rank approximation of the
attention map (connectivity logits ``C = q̃ k̂ · H^-0.5``, coefficients ``α = softmax(C[1:])`` over a basis ``B``
of ``n_down`` token patterns, approximation ``Â = α B``); each non-CLS query then keeps its ``⌈keep · N⌉``
keys of largest ``Â`` (mask ``M``, CLS row dense, no gradient) and the attention is the softmax of the masked
logits. The CPU path is a dense masked reference: it costs as much as dense attention (the FLOP savings need a
sparse kernel). :func:`sparsifiner_attention` is shared by the ``sparsifiner`` token mixer and the Sparsifiner
backbone (:mod:`vlnkit.perception.backbones.sparsifiner`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlnkit.perception.attention.hook import probe_heads, probe_logits, probe_probs

AttentionMode = Literal["dense", "sparse"]
ATTENTION_MODES: tuple[str, ...] = ("dense", "sparse")


def check_mode(mode: str) -> None:
    """Raise a ValueError unless ``mode`` is ``"dense"`` (teacher / recon phase) or ``"sparse"`` (masked)."""
    if mode not in ATTENTION_MODES:
        raise ValueError(f"Sparsifiner mode must be one of {ATTENTION_MODES}, got {mode!r}")


def attention_budget(keep_rate: float, num_tokens: int) -> int:
    """Keys kept per non-CLS query: ``⌈keep_rate · N⌉`` (the product is rounded to 9 decimals first so float
    noise such as ``0.7 · 10 = 7.000000000000001`` does not add a key)."""
    if not 0.0 < keep_rate <= 1.0:
        raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    return math.ceil(round(keep_rate * num_tokens, 9))


class MaskPredictor(nn.Module):
    """The connectivity predictor of one attention layer, shared over heads (Sparsifiner ``MaskPredictor``).

    ``q̃ = q W_cq + b``, ``k̃ = k W_ck + b`` reduce the head dim ``d`` to ``c = d // reduce_c_factor``;
    ``k̂ = k̃ᵀ P_n`` reduces the ``N`` keys to ``n_down = N // reduce_n_factor``; ``C = q̃ k̂ · H^-0.5``
    (the scale uses the number of heads ``H``, not the head dim); ``α = softmax(C[1:])`` over ``n_down`` (the CLS
    query row is dropped); ``Â = α B`` with the basis ``B`` from ``P_back``:

    - inference basis (``inference_basis=True``): ``α`` keeps its ``basis_topk`` largest entries per row (the
      others 0) and ``B = Threshold_{basis_threshold}(|P_backᵀ|)`` (non-negative, sparse);
    - training (recon) basis: ``B = P_backᵀ``, signed, no threshold, ``α`` untouched.

    ``P_n`` and ``P_back`` are ``N × n_down`` parameters, so the token count ``N`` is fixed.
    """

    def __init__(
        self,
        num_tokens: int,
        head_dim: int,
        num_heads: int,
        reduce_n_factor: int = 6,
        reduce_c_factor: int = 2,
        basis_threshold: float = 0.02,
        basis_topk: int = 8,
    ) -> None:
        super().__init__()
        n_down = num_tokens // reduce_n_factor
        channels = head_dim // reduce_c_factor
        if n_down < 1:
            raise ValueError(f"n_down = num_tokens // reduce_n_factor = {num_tokens} // {reduce_n_factor} is 0; "
                             "expected at least 1")
        if channels < 1:
            raise ValueError(f"c = head_dim // reduce_c_factor = {head_dim} // {reduce_c_factor} is 0; "
                             "expected at least 1")
        if not 1 <= basis_topk <= n_down:
            raise ValueError(f"basis_topk (BASIS_COEF.TOPK) = {basis_topk} must be in [1, n_down = "
                             f"{num_tokens} // {reduce_n_factor} = {n_down}]")
        self.num_tokens = num_tokens
        self.num_heads = num_heads
        self.n_down = n_down
        self.basis_threshold = basis_threshold
        self.basis_topk = basis_topk
        self.scale = num_heads**-0.5
        self.proj_c_q = nn.Linear(head_dim, channels)
        self.proj_c_k = nn.Linear(head_dim, channels)
        self.proj_n = nn.Parameter(torch.empty(num_tokens, n_down))
        self.proj_back_n = nn.Parameter(torch.empty(num_tokens, n_down))
        nn.init.trunc_normal_(self.proj_n, std=0.02)
        nn.init.trunc_normal_(self.proj_back_n, std=0.02)

    def basis(self, inference_basis: bool) -> Tensor:
        """The basis ``B`` [n_down, N]: ``Threshold(|P_backᵀ|)`` for inference, signed ``P_backᵀ`` for recon."""
        back = self.proj_back_n.t()
        if inference_basis:
            return F.threshold(back.abs(), self.basis_threshold, 0.0)
        return back

    def coefficients(self, q: Tensor, k: Tensor) -> Tensor:
        """The coefficients ``α = softmax(C[1:])`` [B, H, N-1, n_down] from per-head q, k [B, H, N, d]."""
        if q.shape[-2] != self.num_tokens or k.shape[-2] != self.num_tokens:
            raise ValueError(f"the mask predictor is built for N = {self.num_tokens} tokens (P_n, P_back are "
                             f"N x n_down), got q with {q.shape[-2]} and k with {k.shape[-2]} tokens")
        q_c = self.proj_c_q(q[:, :, 1:])
        k_hat = self.proj_c_k(k).transpose(-2, -1) @ self.proj_n
        return ((q_c @ k_hat) * self.scale).softmax(dim=-1)

    def forward(self, q: Tensor, k: Tensor, inference_basis: bool) -> Tensor:
        """The approximation ``Â = α B`` [B, H, N-1, N] of the attention map without its CLS row."""
        alpha = self.coefficients(q, k)
        if inference_basis:
            top = alpha.topk(self.basis_topk, dim=-1)
            alpha = torch.zeros_like(alpha).scatter(-1, top.indices, top.values)
        return alpha @ self.basis(inference_basis)


def connectivity_mask(approximation: Tensor, budget: int) -> Tensor:
    """The mask ``M`` [B, H, N, N] (bool): the ``budget`` keys of largest ``Â`` for each non-CLS query, the CLS
    row all ones. Built from indices only, so no gradient flows through it."""
    rows, keys = approximation.shape[-2:]
    if rows != keys - 1:
        raise ValueError(f"the approximation must be [.., N-1, N] (CLS row dropped), got {tuple(approximation.shape)}")
    if not 1 <= budget <= keys:
        raise ValueError(f"budget must be in [1, N = {keys}], got {budget}")
    index = approximation.detach().topk(budget, dim=-1).indices
    keep = torch.zeros(approximation.shape, dtype=torch.bool, device=approximation.device)
    keep.scatter_(-1, index, True)
    cls_row = torch.ones(*approximation.shape[:-2], 1, keys, dtype=torch.bool, device=approximation.device)
    return torch.cat([cls_row, keep], dim=-2)


def masked_softmax_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float, site: nn.Module | None = None
) -> tuple[Tensor, Tensor]:
    """``A = softmax(mask(q kᵀ · scale, ~M → −∞))`` with NaNs (fully masked rows) set to 0; returns (A v, A).
    ``mask=None`` is dense attention. The probes attached to ``site`` (:mod:`vlnkit.perception.attention`)
    see and may edit the masked logits, ``A`` and ``A v``."""
    logits = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    attn = probe_probs(site, probe_logits(site, logits).softmax(dim=-1).nan_to_num())
    return probe_heads(site, attn @ v), attn


@dataclass
class SparsifinerAttentionOutput:
    """What one Sparsifiner attention computes: the mixed values ``out`` [B, H, N, E], the attention map
    ``attn`` [B, H, N, N] (dense in "dense" mode, masked in "sparse" mode), the predictor's approximation
    ``approximation`` [B, H, N-1, N] (recon basis in "dense" mode, inference basis in "sparse" mode) and the
    connectivity ``mask`` [B, H, N, N] ("sparse" mode; None in "dense" mode)."""

    out: Tensor
    attn: Tensor
    approximation: Tensor
    mask: Tensor | None


def sparsifiner_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    predictor: MaskPredictor,
    keep_rate: float,
    mode: AttentionMode = "sparse",
    scale: float | None = None,
    site: nn.Module | None = None,
) -> SparsifinerAttentionOutput:
    """Sparsifiner attention of per-head q, k [B, H, N, D] and v [B, H, N, E].

    ``"sparse"``: ``Â`` from the inference basis, ``M = top-k_keys(Â)`` with ``k = ⌈keep_rate · N⌉`` (CLS row
    dense, detached) and masked softmax attention. ``"dense"`` (teacher / attention-reconstruction phase): dense
    softmax attention, ``Â`` from the signed recon basis for the reconstruction loss. ``scale`` defaults to
    ``D^-0.5``. Nothing is stored on the modules. ``site``: the attention module whose probes see the
    masked softmax (:func:`masked_softmax_attention`).
    """
    check_mode(mode)
    if q.shape[1] != predictor.num_heads:
        raise ValueError(f"the mask predictor is built for {predictor.num_heads} heads, got q with {q.shape[1]}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    sparse = mode == "sparse"
    approximation = predictor(q, k, inference_basis=sparse)
    mask = connectivity_mask(approximation, attention_budget(keep_rate, k.shape[-2])) if sparse else None
    out, attn = masked_softmax_attention(q, k, v, mask, scale, site)
    return SparsifinerAttentionOutput(out, attn, approximation, mask)
