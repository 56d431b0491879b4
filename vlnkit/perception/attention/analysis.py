"""Attention analyses on captured maps (:class:`~vlnkit.perception.attention.hook.Capture`): spatial strength
profiles and attention distance per head (ViT-VA), head span, WAAD and FAI (Preplan-and-Anchor), and
head importance by pruning and by its gradient proxy.

Re-implemented from ``docs/perception-attention.md`` (sections 5 and 6); every function takes attention
probabilities ``A`` ``(..., N_q, N_k)`` whose rows sum to 1 and returns numbers per head, so they apply to
any site. Entropy, concentration, sink and local-focus indicators are
:func:`vlnkit.perception.kernels.deconstructed.attention_indicators`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor


def _offsets(grid: tuple[int, int], wrap_columns: bool) -> tuple[Tensor, Tensor]:
    """Row and column offsets ``(N, N)`` from query patch to key patch on a ``grid`` (row-major); columns wrap
    around (a panorama's yaw) when ``wrap_columns``, into ``[-G_c // 2, (G_c - 1) // 2]``."""
    rows, cols = grid
    r = torch.arange(rows).repeat_interleave(cols)
    c = torch.arange(cols).repeat(rows)
    dr = r[None, :] - r[:, None]
    dc = c[None, :] - c[:, None]
    if wrap_columns:
        dc = (dc + cols // 2) % cols - cols // 2
    return dr, dc


def spatial_strength(probs: Tensor, grid: tuple[int, int], wrap_columns: bool = False) -> Tensor:
    """The mean attention from a patch to the patch at each relative offset ``(dr, dc)``, per head.

    ``probs`` ``(B, H, N, N)`` over the ``N = G_r * G_c`` patches of ``grid`` (row-major; strip CLS first).
    Returns ``(H, 2 G_r - 1, W)`` with ``W = 2 G_c - 1`` (or ``G_c`` with ``wrap_columns``): each cell is the
    sum of the attention at that offset divided by the number of (query, key) pairs at it, so edge effects do
    not dominate; the centre is the self offset ``(0, 0)``."""
    b, h, n, _ = probs.shape
    rows, cols = grid
    if n != rows * cols:
        raise ValueError(f"spatial_strength: {n} tokens for a {rows}x{cols} grid; strip non-patch tokens first")
    dr, dc = _offsets(grid, wrap_columns)
    width = cols if wrap_columns else 2 * cols - 1
    col0 = cols // 2 if wrap_columns else cols - 1
    cell = ((dr + rows - 1) * width + (dc + col0)).flatten()
    cells = (2 * rows - 1) * width
    counts = torch.bincount(cell, minlength=cells).clamp_min(1).to(probs.dtype)
    mass = probs.sum(0).reshape(h, -1)
    total = torch.zeros(h, cells, dtype=probs.dtype).index_add_(1, cell, mass)
    return (total / (counts * b)).reshape(h, 2 * rows - 1, width)


def attention_distance(probs: Tensor, grid: tuple[int, int], wrap_columns: bool = False) -> Tensor:
    """Mean attention distance per head ``(H,)``: ``sum_k A[q, k] ||p_k - p_q||`` (in patches) averaged over
    queries and the batch, for ``probs`` ``(B, H, N, N)`` over the patches of ``grid``."""
    dr, dc = _offsets(grid, wrap_columns)
    distance = torch.sqrt((dr.float() ** 2 + dc.float() ** 2)).to(probs.dtype)
    return (probs * distance).sum(-1).mean(dim=(0, 2))


def head_span(probs: Tensor, first_row: int = 0) -> Tensor:
    """Preplan-and-Anchor's head span ``d = mean_t sum_{s <= t} A[t, s] (t - s)`` per head ``(..., )`` of causal
    maps ``probs`` ``(..., N_q, N)`` whose query rows are the positions ``first_row .. first_row + N_q - 1``
    (e.g. a response's rows only)."""
    t = torch.arange(probs.shape[-2]) + first_row
    lag = (t[:, None] - torch.arange(probs.shape[-1])[None, :]).clamp_min(0).to(probs.dtype)
    return (probs * lag).sum(-1).mean(-1)


def local_global_heads(spans: Tensor, share: float = 0.3) -> tuple[Tensor, Tensor]:
    """Boolean masks (same shape as ``spans``, over every (layer, head)) of the ``share`` of heads with the
    lowest span (local) and with the highest (global)."""
    flat = spans.flatten()
    k = max(1, int(round(share * flat.numel())))
    order = torch.argsort(flat, stable=True)
    local = torch.zeros_like(flat, dtype=torch.bool)
    local[order[:k]] = True
    glob = torch.zeros_like(flat, dtype=torch.bool)
    glob[order[-k:]] = True
    return local.reshape(spans.shape), glob.reshape(spans.shape)


def waad(local_map: Tensor, window: int = 10) -> Tensor:
    """WAAD per token ``(N,)``: ``sum_{s <= t} A_loc[t, s] min(t - s, W)`` of the mean local-head map
    ``(N, N)``. Peaks mark the start of a chunk (a "preplan" token)."""
    n = local_map.shape[-1]
    t = torch.arange(n)
    lag = (t[:, None] - t[None, :]).clamp(min=0, max=window).to(local_map.dtype)
    return (local_map * lag).sum(-1)


def fai(global_map: Tensor, h_lo: int = 10, h_hi: int = 100) -> Tensor:
    """FAI per token ``(N,)``: the mean over ``t in [s + h_lo, min(N - 1, s + h_hi)]`` of ``A_glob[t, s]``,
    NaN where that range is empty. High FAI marks an "anchor" token that later tokens keep reading."""
    n = global_map.shape[-1]
    out = torch.full((n,), float("nan"), dtype=global_map.dtype)
    for s in range(n):
        lo, hi = s + h_lo, min(n - 1, s + h_hi)
        if lo <= hi:
            out[s] = global_map[lo: hi + 1, s].mean()
    return out


def head_importance(evaluate: Callable[[dict[str, Tensor]], dict[str, float]], sites: Sequence[str], heads: int
                    ) -> dict[str, np.ndarray]:
    """Pruning-based head importance: ``evaluate(scales)`` runs the model with the head scales ``scales``
    (site -> ``(H,)``, e.g. through :class:`~vlnkit.perception.attention.interventions.HeadScale`) and returns
    metrics (accuracy, confidence, loss, ...); each head is masked alone (scale 0). Returns, per metric,
    ``(len(sites), heads)`` changes: masked minus unmasked."""
    base = evaluate({})
    out = {metric: np.zeros((len(sites), heads)) for metric in base}
    for i, site in enumerate(sites):
        for h in range(heads):
            scores = evaluate({site: torch.ones(heads).index_fill(0, torch.tensor([h]), 0.0)})
            for metric, value in scores.items():
                out[metric][i, h] = value - base[metric]
    return out


def gradient_head_importance(loss: Callable[[dict[str, Tensor]], Tensor], sites: Sequence[str], heads: int
                             ) -> np.ndarray:
    """Michel et al.'s gradient proxy of head importance, ``|dL / d xi_h|`` at ``xi = 1``: ``loss(scales)``
    runs the model with head gates ``scales`` (site -> ``(H,)``, applied by
    :class:`~vlnkit.perception.attention.interventions.HeadScale`) and returns a scalar loss (average it over
    a batch for the expectation). Returns ``(len(sites), heads)``."""
    gates = {site: torch.ones(heads, requires_grad=True) for site in sites}
    grads = torch.autograd.grad(loss(gates), [gates[site] for site in sites], allow_unused=True)
    return np.stack([np.zeros(heads) if g is None else g.abs().detach().numpy() for g in grads])
