"""Training-free attention interventions as probes (:mod:`.hook`): VAR, VHR, PAINT and head masking.

Re-implemented from ``docs/perception-attention.md`` (sections 1, 2 and 4). Each intervention is a pure
function on one attention call's tensors, with the facts sheet's hand-computed cases in the tests, and a
:class:`~vlnkit.perception.attention.hook.Probe` that applies it to the sites it is attached to.

- **VAR** (Kang et al., ICLR 2025): tokens whose unweighted-RMS-normalised features are above ``tau`` in a
  fixed set of sink dimensions are sinks (:func:`sink_tokens`; dimensions found by
  :func:`calibrate_sink_dimensions`; ``tau`` scaled as ``20 * sqrt(D / 4096)`` by default, since the
  paper's 20 cannot fire below D = 400). In each (head, query) row that puts at least ``summ`` of its mass on
  visual tokens, at most ``rho`` of it on visual sinks, a fraction ``1 - p`` of every sink's mass (text sinks
  too) moves to the non-sink visual tokens in proportion to their attention (:func:`var_redistribute`); rows
  keep their sums.
- **VHR** (He et al., ACL 2025): the vision-aware head divergence ``VHD`` (:func:`head_divergence`, the L2
  distance between a head's output with and without the visual tokens), outliers removed and the top
  ``floor(H / 2)`` heads of each layer chosen (:func:`vhr_heads`); :class:`HeadScale` multiplies the chosen
  heads' outputs (before the output projection) by ``alpha`` = 2.
- **PAINT** (Arif et al.): logits ``z_j <- z_j + alpha |z_j|`` for "local" tokens and ``+ beta |z_j|`` for
  "summary" tokens (:func:`paint_logits`), on the last query row (the decision token) only; the summary
  tokens are the upper-IQR outliers of a CLS-style attention, the local ones its top 25% minus the summary
  ones (:func:`paint_tokens`).
- **CARVE** (Ge et al.): the contrast ``A_q / (A_g + lambda)`` of a task query's attention against a general
  query's (:func:`carve_contrast`), fused over layers and time-weighted steps (:func:`time_weights`), the
  top ``p`` of it split into connected regions of which the ``max(K, floor(p n))`` heaviest are kept
  (:func:`carve_regions`); and the scene-complexity measures its analysis correlates with attention entropy:
  Canny edge density (:func:`texture_complexity`) and normalised hue entropy (:func:`colour_complexity`).
- **Head masking** (:class:`HeadScale` with 0): the primitive of pruning-based head importance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from vlnkit.perception.attention.hook import AttentionCall, Probe

# ----------------------------------------------------------------------------------------------------------
# VAR
# ----------------------------------------------------------------------------------------------------------


def rms_unit(x: Tensor, eps: float = 1e-6) -> Tensor:
    """``x / sqrt(mean(x^2) + eps)`` over the last dim, in float32, with no gain (VAR's sink test)."""
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def default_sink_tau(dim: int) -> float:
    """VAR's ``tau = 20`` scaled to a width ``dim``: ``20 * sqrt(dim / 4096)`` (|rms_unit(x)_d| <= sqrt(dim))."""
    return 20.0 * math.sqrt(dim / 4096.0)


def sink_tokens(x: Tensor, dims: Sequence[int], tau: float) -> Tensor:
    """Boolean ``(..., N)``: tokens ``x`` ``(..., N, D)`` whose ``max_{d in dims} |rms_unit(x)_d| > tau``."""
    if not dims:
        return torch.zeros(x.shape[:-1], dtype=torch.bool, device=x.device)
    return rms_unit(x)[..., list(dims)].abs().amax(-1) > tau


def calibrate_sink_dimensions(x: Tensor, count: int = 2, min_ratio: float = 10.0) -> list[int]:
    """VAR's sink dimensions of a model, from calibration features ``x`` ``(T, D)`` (e.g. the keys' inputs of a
    middle layer over many steps): the up to ``count`` dimensions with the largest
    ``max_t |x_hat_{t,d}| / median_t |x_hat_{t,d}|``, keeping those whose ratio is at least ``min_ratio``."""
    unit = rms_unit(x.reshape(-1, x.shape[-1])).abs()
    ratio = unit.amax(0) / unit.median(0).values.clamp_min(1e-12)
    order = torch.argsort(ratio, descending=True)[:count]
    return [int(d) for d in order if float(ratio[d]) >= min_ratio]


def var_redistribute(probs: Tensor, sink: Tensor, visual: Tensor, p: float = 0.6, rho: float = 0.5,
                     summ: float = 0.2) -> Tensor:
    """VAR's redistribution of attention rows ``probs`` ``(..., N_q, N_k)``.

    ``sink`` and ``visual`` are boolean over the keys (broadcastable to ``(..., N_k)``). A row is selected
    when its visual mass ``S >= summ`` and its visual-sink share ``r = sum_{vis sinks} / sum_{vis} (A + 1e-6)
    <= rho``, and the layer has a visual sink; in a selected row every sink keeps ``p`` of its mass and the
    freed mass goes to the non-sink visual tokens in proportion to their attention. Other rows are returned
    unchanged (bit for bit); row sums are preserved.
    """
    sink = sink[..., None, :].expand_as(probs)
    visual = visual[..., None, :].expand_as(probs)
    vis_sink, vis_free = sink & visual, visual & ~sink
    zero = torch.zeros((), dtype=probs.dtype, device=probs.device)
    s = torch.where(visual, probs, zero).sum(-1)
    r = torch.where(vis_sink, probs, zero).sum(-1) / torch.where(visual, probs + 1e-6, zero).sum(-1).clamp_min(1e-12)
    free = torch.where(vis_free, probs, zero).sum(-1)
    selected = (s >= summ) & (r <= rho) & vis_sink.any(-1) & (free > 0)
    budget = (1.0 - p) * torch.where(sink, probs, zero).sum(-1)
    edited = torch.where(sink, probs * p, probs)
    edited = torch.where(vis_free, edited + (budget / free.clamp_min(1e-12))[..., None] * probs, edited)
    return torch.where(selected[..., None], edited, probs)


def segment_mask(segments: Mapping[str, slice], prefix: str, n: int, device: torch.device | None = None) -> Tensor:
    """Boolean ``(n,)``: the positions of every segment whose name starts with ``prefix``."""
    mask = torch.zeros(n, dtype=torch.bool, device=device)
    for name, where in segments.items():
        if name.startswith(prefix):
            mask[where] = True
    return mask


class VAR(Probe):
    """VAR on the sites it is attached to: sinks from the keys' input features (``call.key_inputs``), the
    visual tokens from the key segments whose names start with ``visual_prefix`` (the policy's ``view0``,
    ``view1``, ...). ``tau`` None: :func:`default_sink_tau` of the key width."""

    def __init__(self, dims: Sequence[int], tau: float | None = None, p: float = 0.6, rho: float = 0.5,
                 summ: float = 0.2, visual_prefix: str = "view") -> None:
        self.dims, self.tau, self.p, self.rho, self.summ = list(dims), tau, p, rho, summ
        self.visual_prefix = visual_prefix
        self.sinks_seen = 0

    def on_probs(self, call: AttentionCall, probs: Tensor) -> Tensor | None:
        if call.key_inputs is None or not self.dims:
            return None
        tau = default_sink_tau(call.key_inputs.shape[-1]) if self.tau is None else self.tau
        sink = sink_tokens(call.key_inputs, self.dims, tau)[:, None]            # (B, 1, N_k) over heads
        visual = segment_mask(call.key_segments, self.visual_prefix, probs.shape[-1], probs.device)
        self.sinks_seen += int((sink[:, 0] & visual).sum())
        return var_redistribute(probs, sink, visual, self.p, self.rho, self.summ)


# ----------------------------------------------------------------------------------------------------------
# VHR and head masking
# ----------------------------------------------------------------------------------------------------------


def head_divergence(heads: Tensor, heads_without: Tensor) -> Tensor:
    """VHD per head: the L2 distance ``(B, H)`` between head outputs ``(B, H, N_q, E)`` with and without
    the visual tokens, at the last query row (the token being decided)."""
    return (heads[..., -1, :] - heads_without[..., -1, :]).float().norm(dim=-1)


def vhr_heads(vhd: Tensor, without_norm_sq: Tensor) -> Tensor:
    """VHR's head choice for one layer: boolean ``(..., H)`` from ``vhd`` ``(..., H)`` and the no-vision
    outputs' squared norms ``TA`` ``(..., H)``. A head above mean + std in both VHD and TA is an outlier (its
    VHD set to 0); then the top ``floor(H / 2)`` heads by VHD are chosen (the sheet's explicit "> median")."""
    def above(x: Tensor) -> Tensor:
        return x > x.mean(-1, keepdim=True) + x.std(-1, correction=0, keepdim=True)

    cleaned = torch.where(above(vhd) & above(without_norm_sq), torch.zeros_like(vhd), vhd)
    top = torch.topk(cleaned, vhd.shape[-1] // 2, dim=-1).indices
    return torch.zeros_like(vhd, dtype=torch.bool).scatter(-1, top, True)


class HeadScale(Probe):
    """Multiplies chosen heads' outputs (before the output projection) by a factor: ``scales`` maps a site
    name to a ``(H,)`` or ``(B, H)`` tensor of factors (1 = unchanged). VHR uses 2 on its chosen heads; head
    masking uses 0. Sites not in ``scales`` are untouched."""

    def __init__(self, scales: Mapping[str, Tensor]) -> None:
        self.scales = dict(scales)

    def on_heads(self, call: AttentionCall, heads: Tensor) -> Tensor | None:
        scale = self.scales.get(call.site)
        if scale is None:
            return None
        scale = scale.to(heads.dtype)
        return heads * (scale[None, :, None, None] if scale.dim() == 1 else scale[:, :, None, None])


# ----------------------------------------------------------------------------------------------------------
# PAINT
# ----------------------------------------------------------------------------------------------------------


def paint_logits(logits: Tensor, local: Tensor, summary: Tensor, alpha: float = 0.7, beta: float = 0.3,
                 row: int | None = -1) -> Tensor:
    """PAINT's modulation of pre-softmax ``logits`` ``(..., N_q, N_k)``: ``z + alpha |z|`` on the ``local``
    keys and ``z + beta |z|`` on the ``summary`` keys (boolean, broadcastable to ``(..., N_k)``; a key in both
    gets ``alpha``), in query row ``row`` only (default the last, the token being generated; None: every
    row). ``-inf`` (masked) logits stay masked."""
    gain = alpha * local.to(logits.dtype) + beta * (summary & ~local).to(logits.dtype)
    finite = torch.isfinite(logits)
    boosted = torch.where(finite, logits + gain[..., None, :] * logits.abs().nan_to_num(0.0, posinf=0.0), logits)
    if row is None:
        return boosted
    out = logits.clone()
    out[..., row, :] = boosted[..., row, :]
    return out


def iqr_outliers(scores: np.ndarray | Tensor) -> np.ndarray:
    """Indices of the upper IQR outliers of ``scores`` (1-D): ``> Q3 + 1.5 IQR`` (numpy's linear quantiles)."""
    s = np.asarray(scores, dtype=np.float64)
    q1, q3 = np.quantile(s, [0.25, 0.75])
    return np.flatnonzero(s > q3 + 1.5 * (q3 - q1))


def paint_tokens(early: np.ndarray | Tensor, late: np.ndarray | Tensor, local_ratio: float = 0.25
                 ) -> tuple[np.ndarray, np.ndarray]:
    """PAINT's dual-stream selection over ``N`` tokens from a CLS-style attention of an early layer and of a
    late layer (1-D, summed over heads): the summary tokens are the late layer's IQR outliers, the local ones
    the early layer's top ``ceil(local_ratio * N)`` minus the summary ones. Returns (local, summary) indices."""
    early = np.asarray(early, dtype=np.float64)
    summary = iqr_outliers(late)
    top = np.argsort(-early, kind="stable")[: math.ceil(local_ratio * len(early))]
    return np.setdiff1d(top, summary), summary


class PAINT(Probe):
    """PAINT on the sites it is attached to: ``local`` and ``summary`` name boolean key masks ``(N_k,)`` (or
    ``(B, N_k)``) per site, set by the caller before each call (e.g. the policy's agent, from the decision
    token's attention over the view tokens in its first layer); sites without masks are untouched. ``row``:
    the query row modulated (:func:`paint_logits`; the policy's decision token is row 0)."""

    def __init__(self, alpha: float = 0.7, beta: float = 0.3, row: int | None = -1) -> None:
        self.alpha, self.beta, self.row = alpha, beta, row
        self.masks: dict[str, tuple[Tensor, Tensor]] = {}

    def on_logits(self, call: AttentionCall, logits: Tensor) -> Tensor | None:
        masks = self.masks.get(call.site)
        if masks is None:
            return None
        local, summary = (m[:, None] if m.dim() == 2 else m for m in masks)   # over heads
        return paint_logits(logits, local, summary, self.alpha, self.beta, self.row)


# ----------------------------------------------------------------------------------------------------------
# CARVE
# ----------------------------------------------------------------------------------------------------------


def carve_contrast(task: Tensor | np.ndarray, general: Tensor | np.ndarray, lam: float = 1e-8) -> np.ndarray:
    """CARVE's closed-form contrast ``A_q / (A_g + lambda)`` of a task query's attention over the visual tokens
    against a general query's (the minimiser of its objective J)."""
    return np.asarray(task, dtype=np.float64) / (np.asarray(general, dtype=np.float64) + lam)


def time_weights(steps: int) -> np.ndarray:
    """CARVE v4's weights of decoding steps ``t_start .. t_end``: ``t - t_start + 1`` (later steps weigh more)."""
    return np.arange(1, steps + 1, dtype=np.float64)


def carve_regions(saliency: np.ndarray, p: float = 0.2, k: int = 3, wrap: bool = False) -> np.ndarray:
    """CARVE's mask of a fused saliency map (2-D, or 1-D over a panorama's views): the pixels at or above its
    ``100 (1 - p)`` percentile, split into 4-connected regions (``wrap``: a 1-D map's ends touch, as the
    views of a panorama do), of which the ``max(k, floor(p * regions))`` with the largest saliency sums are
    kept. Returns a boolean mask of ``saliency``'s shape."""
    s = np.asarray(saliency, dtype=np.float64)
    high = s >= np.percentile(s, 100.0 * (1.0 - p))
    labels, count = ndimage.label(high)
    if wrap and s.ndim == 1 and count > 1 and labels[0] and labels[-1]:
        labels[labels == labels[-1]] = labels[0]
    ids = [i for i in np.unique(labels) if i]
    sums = {i: s[labels == i].sum() for i in ids}
    keep = sorted(ids, key=lambda i: -sums[i])[: max(k, int(p * len(ids)))]
    return np.isin(labels, keep)


def crop_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The bounding box ``(top, left, bottom, right)`` (exclusive ends) of a 2-D boolean mask's True pixels."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        raise ValueError("crop_box: the mask keeps no pixel")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def crop_scale(box: tuple[int, int, int, int], shape: tuple[int, int]) -> float:
    """CARVE's magnification of a crop ``box`` of an image of ``shape`` (H, W): ``max(W / cw, H / ch)``, so the
    refined image is at least the original's size along one side."""
    top, left, bottom, right = box
    return max(shape[1] / (right - left), shape[0] / (bottom - top))


def texture_complexity(image: np.ndarray) -> float:
    """CARVE's texture complexity ``||Canny(I)||_1 / (H W)`` in [0, 1] of an RGB (or grey) image (scikit-image's
    Canny at its default sigma on the grey image)."""
    from skimage.color import rgb2gray
    from skimage.feature import canny

    grey = rgb2gray(image) if np.asarray(image).ndim == 3 else np.asarray(image, dtype=np.float64)
    return float(canny(grey).mean())


def colour_complexity(image: np.ndarray, bins: int = 180) -> float:
    """CARVE's colour complexity ``-(1 / ln B) sum_b rho_b ln rho_b`` of the hue histogram (``B`` bins, OpenCV's
    0-179 hue range by default) of an RGB image, in [0, 1]: 0 for one hue, 1 for a uniform hue histogram."""
    from skimage.color import rgb2hsv

    hue = rgb2hsv(np.asarray(image))[..., 0]
    counts = np.bincount(np.minimum((hue * bins).astype(int), bins - 1).ravel(), minlength=bins)
    rho = counts[counts > 0] / counts.sum()
    return float(-(rho * np.log(rho)).sum() / np.log(bins))
