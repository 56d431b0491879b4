"""OverLoCK (CVPR 2025): an "Overview-first, Look-Closely-next" ConvNet with context-mixing dynamic convolution.

Re-implemented in plain PyTorch from the design notes (``docs/perception-vision.md`` §2); no code of the official
repository (``LMMMEng/OverLoCK``) was read or copied. The data flow of one image::

    images ──> stem + Base-Net ──(features 1, 2; x at H/16)──────────────> Focus-Net ──> features 3, 4 ──> head
                              └──> Overview-Net ──> ctx (H/32) ──> prior P ──┘
                                                     └──> aux head (training form only)

- **Base-Net**: the stem (four 3x3 convs, stride 4) and three stages of :class:`RepConvBlock` (large-kernel
  depthwise :class:`DilatedReparamConv` + SE + GRN MLP) with strided 3x3 downsampling between them.
- **Overview-Net**: one more downsampling and a RepConv stage at H/32; its output is the *context* ``ctx``, a
  coarse overview of the whole image (and, in the training form, the input of an auxiliary classifier).
- **Focus-Net**: the Base-Net output re-processed at H/16 and H/32 by :class:`DynamicConvBlock` s, each carrying
  a context stream ``h`` (``C_h = dims[3] / 4`` channels) beside the features ``x``. The context starts as the
  prior ``P = high_level_proj(ctx)`` (upsampled to H/16) and is re-injected into every later block. The core
  is :class:`ContMix`: every pixel's k x k and K x K depthwise kernels are a linear function of its affinity to
  49 pooled regions of the context channels, softmax-normalised with a relative position bias and applied over
  windows clamped inside the image (NATTEN semantics, :func:`neighbourhood_aggregate`).
- **Head**: 1x1 conv to 1024 + BN + SiLU, global average pooling, linear classifier.

Feature maps (strides 4/8/16/32): the Base-Net stage-1 and stage-2 outputs, and the Focus-Net stage outputs
``[x; h]`` (XT: 56, 112, 256 + 84, 336 + 84 channels).

**Two forms.** The *training form* (``deploy=False``) has every :class:`DilatedReparamConv` as a K x K depthwise
conv + BN plus parallel dilated depthwise convs + BN, and the auxiliary head on ``ctx`` (its loss weight is 0.4,
:func:`overlock_loss`). The *deploy form* (``deploy=True``, the default of the factories) has each of them merged
into one K x K depthwise conv with bias and no auxiliary head; :meth:`OverLoCK.reparameterize` converts a trained
training-form model in place, exactly in eval mode (BN running statistics). Fine-tuning a merged model is
reported to be slightly worse: train un-merged, merge for deployment.

Registered:

- ``overlock_xt``: OverLoCK-XT, 16,453,712 parameters in deploy form (17,307,272 in training form, aux head
  included), 2.70 GMACs at 224x224 as :func:`~vlnkit.perception.backbones.layers.count_gmacs` counts it (2.66
  of them convolutions, the rest the dynamic-kernel products);
- ``overlock_nano``: a small configuration for tests and CPU use (112x112, 10 classes) that keeps every code path
  (both window sizes, the prior re-injection, and the resize path at H/32).

Choices the sheet leaves open: the relative position bias is initialised trunc-normal(0.02) (the official
classification code uses zeros, its plug-in ContMix trunc-normal); LayerNorm eps 1e-6; the prior is upsampled
bilinearly; drop-path rates rise linearly over all 17 blocks in data-flow order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlnkit.perception.backbones.base import Backbone, FeatureInfo
from vlnkit.perception.backbones.layers import DropPath, LayerNorm2d, count_parameters, fuse_conv_bn
from vlnkit.perception.backbones.registry import register_model

__all__ = [
    "AUX_LOSS_WEIGHT",
    "DILATED_BRANCHES",
    "BaseNet",
    "ContMix",
    "DilatedReparamConv",
    "DynamicConvBlock",
    "FocusNet",
    "OverLoCK",
    "OverLoCKMaps",
    "OverviewNet",
    "RepConvBlock",
    "clamped_rpb_index",
    "clamped_windows",
    "neighbourhood_aggregate",
    "overlock_loss",
    "subnet_parameters",
]

DILATED_BRANCHES: dict[int, tuple[tuple[int, int], ...]] = {
    17: ((5, 1), (7, 1), (9, 2), (3, 4), (3, 5), (3, 7)),
    15: ((5, 1), (7, 1), (7, 2), (3, 3), (3, 5), (3, 7)),
    13: ((5, 1), (7, 1), (7, 2), (3, 3), (3, 4), (3, 5)),
    7: ((5, 1), (3, 1), (3, 2), (3, 3)),
}
"""The parallel dilated depthwise branches ``(kernel, dilation)`` of a :class:`DilatedReparamConv` of size K."""

AUX_LOSS_WEIGHT = 0.4
"""Weight of the auxiliary (Overview-Net) classification loss in the official training recipe."""

CONTEXT_REGIONS = 7
"""ContMix keys are the context channels average-pooled to a 7 x 7 grid: 49 region tokens."""


# --- small layers ---------------------------------------------------------------------------------------------


def conv_bn(in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
            dilation: int = 1) -> nn.Sequential:
    """``Conv2d`` without bias ("same" padding for odd kernels) followed by ``BatchNorm2d``."""
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    )


def depthwise3x3(channels: int) -> nn.Conv2d:
    """Depthwise 3x3 conv with bias (the conv positional encodings and the MLP's local mixing)."""
    return nn.Conv2d(channels, channels, 3, padding=1, groups=channels)


class ChannelAffine(nn.Module):
    """Per-channel affine ``x · w + b`` (``w`` initialised to ``init``, ``b`` to 0): OverLoCK's layer scale,
    applied to the identity path of its residual blocks ("res-scale")."""

    def __init__(self, channels: int, init: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(init)))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def layer_scale(channels: int, init: float | None) -> nn.Module:
    """A :class:`ChannelAffine` initialised to ``init``, or the identity when ``init`` is None (stages 1-2)."""
    return nn.Identity() if init is None else ChannelAffine(channels, init)


class GRN(nn.Module):
    """Global response normalisation (ConvNeXt-V2): ``(γ · N(x) + 1) · x + β`` with
    ``N(x) = ‖x‖₂ over HW / mean over channels of it``; γ = β = 0 at init (the identity)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        norm = torch.linalg.vector_norm(x, dim=(2, 3), keepdim=True)
        response = norm / (norm.mean(dim=1, keepdim=True) + self.eps)
        return (self.gamma * response + 1) * x + self.beta


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: GAP -> 1x1 (C -> max(16, C/8), bias) -> GELU -> 1x1 (bias) -> sigmoid, scaling
    the channels of the input."""

    def __init__(self, channels: int, reduction: int = 8, min_hidden: int = 16) -> None:
        super().__init__()
        hidden = max(min_hidden, channels // reduction)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.expand(F.gelu(self.reduce(s))))


class ConvMlp(nn.Module):
    """The blocks' MLP: 1x1 (C -> hidden) -> GELU -> (x + DW3x3(x)) -> GRN -> 1x1 (hidden -> C)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.dwconv = depthwise3x3(hidden)
        self.grn = GRN(hidden)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.gelu(self.fc1(x))
        x = x + self.dwconv(x)
        return self.fc2(self.grn(x))


class DilatedReparamConv(nn.Module):
    """Large-kernel depthwise conv re-parameterised from dilated small kernels (UniRepLKNet style).

    Training form: ``BN(DW_KxK(x)) + Σ_(k, r) BN(DW_kxk,dilation r(x))`` over :data:`DILATED_BRANCHES` ``[K]``
    (every branch "same"-padded, so all outputs align). Deploy form: one K x K depthwise conv with bias,
    ``merged``, whose kernel is the sum of the BN-folded kernels, each dilated by zero insertion and zero-padded
    to K x K; :meth:`reparameterize` converts in place and equals the training form in eval mode.
    """

    def __init__(self, channels: int, kernel_size: int, deploy: bool = True) -> None:
        super().__init__()
        if kernel_size not in DILATED_BRANCHES:
            raise ValueError(f"no dilated-branch recipe for kernel size {kernel_size}; "
                             f"known: {sorted(DILATED_BRANCHES)}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.branch_specs = DILATED_BRANCHES[kernel_size]
        self.merged: nn.Conv2d | None = None
        self.large: nn.Sequential | None = None
        self.branches: nn.ModuleList | None = None
        if deploy:
            self.merged = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        else:
            self.large = conv_bn(channels, channels, kernel_size, groups=channels)
            self.branches = nn.ModuleList(conv_bn(channels, channels, k, groups=channels, dilation=r)
                                          for k, r in self.branch_specs)

    @property
    def deploy(self) -> bool:
        """Whether the branches are merged into :attr:`merged`."""
        return self.merged is not None

    def forward(self, x: Tensor) -> Tensor:
        if self.merged is not None:
            return self.merged(x)
        out = self.large(x)
        for branch in self.branches:
            out = out + branch(x)
        return out

    def merged_kernel(self) -> tuple[Tensor, Tensor]:
        """Weight ``(C, 1, K, K)`` and bias ``(C,)`` of the single conv equal to the training form in eval mode
        (the merged conv's own in deploy form)."""
        if self.merged is not None:
            return self.merged.weight, self.merged.bias
        weight, bias = fuse_conv_bn(self.large[0], self.large[1])
        for (k, r), branch in zip(self.branch_specs, self.branches):
            w, b = fuse_conv_bn(branch[0], branch[1])
            span = r * (k - 1) + 1
            dilated = w.new_zeros(w.shape[0], 1, span, span)
            dilated[:, :, ::r, ::r] = w
            pad = (self.kernel_size - span) // 2
            weight = weight + F.pad(dilated, [pad] * 4)
            bias = bias + b
        return weight, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Merge the branches into one conv (in place; no-op in deploy form)."""
        if self.merged is not None:
            return
        weight, bias = self.merged_kernel()
        merged = nn.Conv2d(self.channels, self.channels, self.kernel_size, padding=self.kernel_size // 2,
                           groups=self.channels).to(weight.device, weight.dtype)
        merged.weight.copy_(weight)
        merged.bias.copy_(bias)
        self.merged = merged
        self.large = None
        self.branches = None


# --- Base-Net / Overview-Net block ----------------------------------------------------------------------------


class RepConvBlock(nn.Module):
    """The Base-Net and Overview-Net block: ``x ← x + DW3x3(x)``, then ``x ← ls(x) + DropPath(P(x))`` with
    ``P = LN → DilatedReparam(K) → BN → SE → MLP`` (MLP ratio ``mlp_ratio``, GRN inside)."""

    def __init__(self, dim: int, kernel_size: int, mlp_ratio: float = 4.0, ls_init: float | None = None,
                 drop_path: float = 0.0, deploy: bool = True) -> None:
        super().__init__()
        self.pos_embed = depthwise3x3(dim)
        self.ls = layer_scale(dim, ls_init)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.large_kernel = DilatedReparamConv(dim, kernel_size, deploy)
        self.bn = nn.BatchNorm2d(dim)
        self.se = SqueezeExcite(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.pos_embed(x)
        branch = self.mlp(self.se(self.bn(self.large_kernel(self.norm(x)))))
        return self.ls(x) + self.drop_path(branch)


def make_stem(in_chans: int, dim: int) -> nn.Sequential:
    """Stride-4 stem: 3x3 s2 (-> dim/2), 3x3, 3x3 s2 (-> dim), 3x3, each + BN, GELU between (none at the end)."""
    half = dim // 2
    return nn.Sequential(
        conv_bn(in_chans, half, 3, stride=2), nn.GELU(),
        conv_bn(half, half, 3), nn.GELU(),
        conv_bn(half, dim, 3, stride=2), nn.GELU(),
        conv_bn(dim, dim, 3),
    )


class BaseNet(nn.Module):
    """Stem + RepConv stages 1-3 (strided 3x3 conv + BN between stages): images -> maps at H/4, H/8, H/16."""

    def __init__(self, in_chans: int, dims: Sequence[int], depths: Sequence[int], kernel_sizes: Sequence[int],
                 mlp_ratio: float, ls_inits: Sequence[float | None], drop_paths: Sequence[float],
                 deploy: bool) -> None:
        super().__init__()
        self.stem = make_stem(in_chans, dims[0])
        self.downsamples = nn.ModuleList(conv_bn(dims[i], dims[i + 1], 3, stride=2) for i in range(2))
        rates = iter(drop_paths)
        self.stages = nn.ModuleList(
            nn.Sequential(*(RepConvBlock(dims[i], kernel_sizes[i], mlp_ratio, ls_inits[i], next(rates), deploy)
                            for _ in range(depths[i])))
            for i in range(3)
        )

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.stages[0](self.stem(images))
        maps = [x]
        for down, stage in zip(self.downsamples, self.stages[1:]):
            x = stage(down(x))
            maps.append(x)
        return maps


class OverviewNet(nn.Module):
    """Strided 3x3 conv + BN and a RepConv stage: the Base-Net output (H/16) -> the context ``ctx`` (H/32)."""

    def __init__(self, in_dim: int, dim: int, depth: int, kernel_size: int, mlp_ratio: float,
                 ls_init: float | None, drop_paths: Sequence[float], deploy: bool) -> None:
        super().__init__()
        self.downsample = conv_bn(in_dim, dim, 3, stride=2)
        self.blocks = nn.Sequential(*(RepConvBlock(dim, kernel_size, mlp_ratio, ls_init, drop_paths[i], deploy)
                                      for i in range(depth)))

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


# --- ContMix ----------------------------------------------------------------------------------------------------


def clamped_windows(v: Tensor, k: int) -> Tensor:
    """The k x k window of every pixel of ``v`` ``(B, C, H, W)`` as ``(B, C, k², H, W)`` (window offsets
    row-major), with windows clamped inside the map (NATTEN semantics): the window of row ``i`` starts at
    ``clamp(i − k//2, 0, H − k)``, and likewise for columns. Needs odd ``k ≤ min(H, W)``."""
    b, c, h, w = v.shape
    if k % 2 == 0 or k > min(h, w):
        raise ValueError(f"clamped windows need an odd window {k} no larger than the map {h}x{w}")
    # The valid windows (centres k//2 .. H-1-k//2), then every border pixel takes its nearest valid window.
    valid = F.unfold(v, k).view(b, c * k * k, h - k + 1, w - k + 1)
    return F.pad(valid, [k // 2] * 4, mode="replicate").view(b, c, k * k, h, w)


def clamped_rpb_index(h: int, w: int, k: int, device: torch.device | None = None) -> Tensor:
    """Index ``(H·W, k²)`` into a flattened ``(2k−1) x (2k−1)`` relative-position table: for query ``(qi, qj)``
    and the key ``(ki, kj)`` at each offset of its clamped window, ``(ki − qi + k − 1)·(2k − 1) + kj − qj + k − 1``
    ("key − query", always in range because the window holds the query)."""

    def relative(n: int) -> Tensor:
        query = torch.arange(n, device=device)
        start = (query - k // 2).clamp(0, n - k)
        return start[:, None] + torch.arange(k, device=device)[None, :] - query[:, None] + k - 1

    rows, cols = relative(h), relative(w)
    index = rows[:, None, :, None] * (2 * k - 1) + cols[None, :, None, :]
    return index.reshape(h * w, k * k)


def neighbourhood_aggregate(weights: Tensor, v: Tensor, k: int) -> Tensor:
    """Apply per-pixel, per-group dynamic kernels over clamped windows: ``out[c, p] = Σ_o weights[g(c), p, o] ·
    v[c, window_p(o)]``, with ``weights`` ``(B, G, H·W, k²)`` and ``v`` ``(B, C, H, W)`` whose C channels form G
    consecutive groups. Returns ``(B, C, H, W)``."""
    b, c, h, w = v.shape
    groups = weights.shape[1]
    windows = clamped_windows(v, k).view(b, groups, c // groups, k * k, h * w)
    return torch.einsum("bgcop,bgpo->bgcp", windows, weights).reshape(b, c, h, w)


class ContMix(nn.Module):
    """Context-mixing dynamic convolution: the token mixer of :class:`DynamicConvBlock`.

    Input: ``f̂`` ``(B, C + C_h, H, W)``, the normalised concatenation of features and context. With ``G`` groups
    of ``C / (2G)`` channels::

        x' = GRN(1x1(GELU(BN(DW3x3(f̂)))))              fusion, (C + C_h) -> C  (the values)
        gate = SiLU(BN(1x1(x')));  lepe = BN(DilatedReparam_K(x'))
        Q  = BN(1x1(f̂[:C])) · (C / G)^-½                C/2 channels, one query per pixel
        Kc = BN(1x1(AvgPool_7x7(f̂[C:])))               C/2 channels, 49 context-region keys
        W  = Linear_49->k²+K²(Q_gᵀ Kc_g)                 per group g and pixel; split into k² and K²
        A  = softmax_window(W + RPB_g[key − query])      for the small and the large window
        out = [NA_k(A_small, x'[:C/2]); NA_K(A_large, x'[C/2:])]      clamped windows
        y = BN(1x1(out)) + lepe -> SE -> ⊙ gate -> BN -> 1x1 (C -> C + C_h)

    When ``min(H, W) < K``, ``x'`` and ``f̂`` are bilinearly resized so that the short side is K before Q, Kc and
    the aggregation, and ``out`` is average-pooled back to ``H x W``.
    """

    def __init__(self, dim: int, ctx_dim: int, kernel_size: int, smk_size: int, num_groups: int,
                 deploy: bool = True) -> None:
        super().__init__()
        if dim % (2 * num_groups):
            raise ValueError(f"ContMix needs dim {dim} divisible by 2 x num_groups {num_groups}")
        if smk_size % 2 == 0 or kernel_size % 2 == 0 or smk_size > kernel_size:
            raise ValueError(f"ContMix needs odd window sizes smk_size <= kernel_size, got {smk_size}, {kernel_size}")
        full = dim + ctx_dim
        self.dim = dim
        self.ctx_dim = ctx_dim
        self.kernel_size = kernel_size
        self.smk_size = smk_size
        self.num_groups = num_groups
        self.scale = (dim / num_groups) ** -0.5
        self.fusion = nn.Sequential(depthwise3x3(full), nn.BatchNorm2d(full), nn.GELU(), nn.Conv2d(full, dim, 1),
                                    GRN(dim))
        self.gate = nn.Sequential(conv_bn(dim, dim), nn.SiLU())
        self.lepe = nn.Sequential(DilatedReparamConv(dim, kernel_size, deploy), nn.BatchNorm2d(dim))
        self.query = conv_bn(dim, dim // 2)
        self.key = conv_bn(ctx_dim, dim // 2)
        self.weight_proj = nn.Linear(CONTEXT_REGIONS**2, smk_size**2 + kernel_size**2)
        self.rpb_small = nn.Parameter(torch.empty(num_groups, 2 * smk_size - 1, 2 * smk_size - 1))
        self.rpb_large = nn.Parameter(torch.empty(num_groups, 2 * kernel_size - 1, 2 * kernel_size - 1))
        nn.init.trunc_normal_(self.rpb_small, std=0.02)
        nn.init.trunc_normal_(self.rpb_large, std=0.02)
        self.proj = conv_bn(dim, dim)
        self.se = SqueezeExcite(dim)
        self.out = nn.Sequential(nn.BatchNorm2d(dim), nn.Conv2d(dim, full, 1))

    def dynamic_kernels(self, f_hat: Tensor) -> tuple[Tensor, Tensor]:
        """The softmax-normalised small and large kernels ``(B, G, H·W, k²)``, ``(B, G, H·W, K²)`` of ``f̂``."""
        b, _, h, w = f_hat.shape
        groups = self.num_groups
        q = self.query(f_hat[:, : self.dim]) * self.scale
        keys = self.key(F.adaptive_avg_pool2d(f_hat[:, self.dim :], CONTEXT_REGIONS))
        q = q.view(b, groups, -1, h * w)
        keys = keys.view(b, groups, -1, CONTEXT_REGIONS**2)
        affinity = torch.einsum("bgcp,bgcn->bgpn", q, keys)
        small, large = self.weight_proj(affinity).split([self.smk_size**2, self.kernel_size**2], dim=-1)
        kernels = []
        for logits, table, k in ((small, self.rpb_small, self.smk_size), (large, self.rpb_large, self.kernel_size)):
            bias = table.flatten(1)[:, clamped_rpb_index(h, w, k, f_hat.device)]
            kernels.append((logits + bias).softmax(dim=-1))
        return kernels[0], kernels[1]

    def context_mixing(self, f_hat: Tensor, values: Tensor) -> Tensor:
        """``out``: the values ``x'`` ``(B, C, H, W)`` aggregated with the dynamic kernels of ``f̂`` (small
        window on the first half of the channels, large on the second). Needs ``min(H, W) ≥ K``."""
        small, large = self.dynamic_kernels(f_hat)
        v_small, v_large = values.chunk(2, dim=1)
        return torch.cat([neighbourhood_aggregate(small, v_small, self.smk_size),
                          neighbourhood_aggregate(large, v_large, self.kernel_size)], dim=1)

    def forward(self, f_hat: Tensor) -> Tensor:
        values = self.fusion(f_hat)
        gate = self.gate(values)
        lepe = self.lepe(values)
        h, w = values.shape[-2:]
        short = min(h, w)
        if short < self.kernel_size:
            size = (round(h * self.kernel_size / short), round(w * self.kernel_size / short))
            resized_f = F.interpolate(f_hat, size=size, mode="bilinear", align_corners=False)
            resized_v = F.interpolate(values, size=size, mode="bilinear", align_corners=False)
            out = F.adaptive_avg_pool2d(self.context_mixing(resized_f, resized_v), (h, w))
        else:
            out = self.context_mixing(f_hat, values)
        y = self.se(self.proj(out) + lepe) * gate
        return self.out(y)


class DynamicConvBlock(nn.Module):
    """The Focus-Net block on features ``x`` (C) and context ``h`` (C_h), with the overview prior ``h_r``::

        h ← LS_a(h) + LS_b(h_r)                  (every block but the first of the Focus-Net)
        f = [x; h];  f ← f + DW3x3(f)
        f ← LS1(f) + DropPath(ContMix(LN(f)));  f ← f + DW3x3(f)
        f ← LS2(f) + DropPath(MLP(LN(f)))       MLP (C + C_h) -> mlp_ratio·C -> (C + C_h)

    Returns ``f`` ``(B, C + C_h, H, W)``; the caller splits it into the next ``x`` and ``h``.
    """

    def __init__(self, dim: int, ctx_dim: int, kernel_size: int, smk_size: int, num_groups: int,
                 mlp_ratio: float = 3.0, ls_init: float | None = 1.0, drop_path: float = 0.0,
                 inject_prior: bool = True, deploy: bool = True) -> None:
        super().__init__()
        full = dim + ctx_dim
        self.dim = dim
        self.ctx_scale = ChannelAffine(ctx_dim) if inject_prior else None
        self.prior_scale = ChannelAffine(ctx_dim) if inject_prior else None
        self.pos_embed1 = depthwise3x3(full)
        self.norm1 = LayerNorm2d(full, eps=1e-6)
        self.mixer = ContMix(dim, ctx_dim, kernel_size, smk_size, num_groups, deploy)
        self.ls1 = layer_scale(full, ls_init)
        self.pos_embed2 = depthwise3x3(full)
        self.norm2 = LayerNorm2d(full, eps=1e-6)
        self.mlp = ConvMlp(full, int(dim * mlp_ratio))
        self.ls2 = layer_scale(full, ls_init)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, h: Tensor, prior: Tensor) -> Tensor:
        if self.ctx_scale is not None:
            h = self.ctx_scale(h) + self.prior_scale(prior)
        f = torch.cat([x, h], dim=1)
        f = f + self.pos_embed1(f)
        f = self.ls1(f) + self.drop_path(self.mixer(self.norm1(f)))
        f = f + self.pos_embed2(f)
        return self.ls2(f) + self.drop_path(self.mlp(self.norm2(f)))


class FocusNet(nn.Module):
    """Top-down guided refinement: the Base-Net output (H/16) and the context (H/32) -> maps at H/16 and H/32.

    ``P = high_level_proj(ctx)`` (1x1, C_h channels) is the prior; upsampled to H/16 it is the initial context
    stream and the prior of the stage-3 blocks. Between the stages, features and context are downsampled
    separately (3x3 s2 + BN each); the stage-4 blocks take the un-upsampled ``P`` as prior.
    """

    def __init__(self, ctx_in: int, ctx_dim: int, dims: Sequence[int], depths: Sequence[int],
                 kernel_sizes: Sequence[int], smk_size: int, num_groups: Sequence[int], mlp_ratio: float,
                 ls_inits: Sequence[float | None], drop_paths: Sequence[float], deploy: bool) -> None:
        super().__init__()
        self.dims = tuple(dims)
        self.ctx_dim = ctx_dim
        self.high_level_proj = nn.Conv2d(ctx_in, ctx_dim, 1)
        rates = iter(drop_paths)
        self.stages = nn.ModuleList(
            nn.ModuleList(
                DynamicConvBlock(dims[s], ctx_dim, kernel_sizes[s], smk_size, num_groups[s], mlp_ratio, ls_inits[s],
                                 next(rates), inject_prior=(s, i) != (0, 0), deploy=deploy)
                for i in range(depths[s])
            )
            for s in range(2)
        )
        self.feature_down = conv_bn(dims[0], dims[1], 3, stride=2)
        self.context_down = conv_bn(ctx_dim, ctx_dim, 3, stride=2)

    def forward(self, x: Tensor, ctx: Tensor) -> list[Tensor]:
        prior = self.high_level_proj(ctx)
        priors = (F.interpolate(prior, size=x.shape[-2:], mode="bilinear", align_corners=False), prior)
        h = priors[0]
        maps = []
        for s, blocks in enumerate(self.stages):
            if s == 1:
                x, h = self.feature_down(x), self.context_down(h)
            for block in blocks:
                f = block(x, h, priors[s])
                x, h = f.split([self.dims[s], self.ctx_dim], dim=1)
            maps.append(f)
        return maps


# --- the model ------------------------------------------------------------------------------------------------


@dataclass
class OverLoCKMaps:
    """One pass through the three sub-networks: the four feature maps (finest first) and the Overview-Net
    context ``(B, dims[3], H/32, W/32)``."""

    features: list[Tensor]
    context: Tensor


class OverLoCK(Backbone):
    """OverLoCK: Base-Net -> Overview-Net (context) -> Focus-Net (context-guided ContMix) -> classifier.

    Args:
        depths: RepConv blocks of Base-Net stages 1-3 and of the Overview-Net (stage 4).
        sub_depths: ContMix blocks of the Focus-Net at H/16 and H/32.
        dims: channels of stages 1-4; the context stream has ``dims[3] // 4`` channels.
        kernel_sizes: large kernel K of stages 1-4 (stages 3-4: of both the RepConv and the ContMix blocks);
            each needs a :data:`DILATED_BRANCHES` recipe.
        smk_size: ContMix's small window k.
        mlp_ratio, sub_mlp_ratio: MLP expansion of the RepConv and the ContMix blocks.
        sub_num_heads: ContMix heads of the two Focus stages; each has ``G = 2 · heads`` kernel groups.
        ls_init_values: layer-scale init per stage (None: no layer scale).
        projection: width of the head's 1x1 projection.
        num_classes: classifier size (0: no classifier and no auxiliary head; ``forward`` returns the maps).
        drop_path_rate: stochastic-depth rate of the last block (linear from 0 over all blocks).
        deploy: build the merged form (no dilated branches, no auxiliary head); ``False`` builds the training
            form, converted by :meth:`reparameterize`.
        img_size: the ``default_input_size`` side.
    """

    def __init__(
        self,
        depths: Sequence[int] = (2, 2, 3, 2),
        sub_depths: Sequence[int] = (6, 2),
        dims: Sequence[int] = (56, 112, 256, 336),
        kernel_sizes: Sequence[int] = (17, 15, 13, 7),
        smk_size: int = 5,
        mlp_ratio: float = 4.0,
        sub_mlp_ratio: float = 3.0,
        sub_num_heads: Sequence[int] = (4, 6),
        ls_init_values: Sequence[float | None] = (None, None, 1.0, 1.0),
        projection: int = 1024,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
        deploy: bool = True,
        img_size: int = 224,
    ) -> None:
        super().__init__()
        ctx_dim = dims[3] // 4
        self.num_classes = num_classes
        self.default_input_size = (img_size, img_size)
        self.feature_info = [FeatureInfo(4, dims[0]), FeatureInfo(8, dims[1]),
                             FeatureInfo(16, dims[2] + ctx_dim), FeatureInfo(32, dims[3] + ctx_dim)]
        rates = torch.linspace(0, drop_path_rate, sum(depths) + sum(sub_depths)).tolist()
        base_end, overview_end = sum(depths[:3]), sum(depths)
        self.base_net = BaseNet(in_chans, dims, depths, kernel_sizes, mlp_ratio, ls_init_values,
                                rates[:base_end], deploy)
        self.overview_net = OverviewNet(dims[2], dims[3], depths[3], kernel_sizes[3], mlp_ratio, ls_init_values[3],
                                        rates[base_end:overview_end], deploy)
        self.focus_net = FocusNet(dims[3], ctx_dim, dims[2:], sub_depths, kernel_sizes[2:], smk_size,
                                  [2 * heads for heads in sub_num_heads], sub_mlp_ratio, ls_init_values[2:],
                                  rates[overview_end:], deploy)
        self.head: nn.ModuleDict | None = None
        self.aux_head: nn.ModuleDict | None = None
        if num_classes > 0:
            self.head = nn.ModuleDict({
                "proj": conv_bn(dims[3] + ctx_dim, projection),
                "fc": nn.Linear(projection, num_classes),
            })
            if not deploy:
                self.aux_head = nn.ModuleDict({"norm": nn.BatchNorm2d(dims[3]), "fc": nn.Linear(dims[3], num_classes)})
        self.apply(_init_weights)

    @property
    def deploy(self) -> bool:
        """Whether the model is in the merged deploy form (see :meth:`reparameterize`)."""
        return self.aux_head is None and all(m.deploy for m in self.modules() if isinstance(m, DilatedReparamConv))

    def forward_maps(self, x: Tensor) -> OverLoCKMaps:
        """Images ``(B, 3, H, W)`` -> the feature maps and the Overview-Net context."""
        c1, c2, c3 = self.base_net(x)
        context = self.overview_net(c3)
        f3, f4 = self.focus_net(c3, context)
        return OverLoCKMaps([c1, c2, f3, f4], context)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Feature maps at strides 4/8/16/32: Base-Net stages 1-2, then the Focus-Net's ``[x; h]``."""
        return self.forward_maps(x).features

    def forward_head(self, features: list[Tensor]) -> Tensor:
        """Logits from the last map: 1x1 projection + BN, SiLU, global average pooling, linear classifier."""
        if self.head is None:
            raise NotImplementedError("OverLoCK was built with num_classes=0: it has no classifier")
        x = F.silu(self.head["proj"](features[-1]))
        return self.head["fc"](x.mean(dim=(2, 3)))

    def forward_aux_head(self, context: Tensor) -> Tensor:
        """Auxiliary logits from the Overview-Net context: BN, global average pooling, linear (training form)."""
        if self.aux_head is None:
            raise NotImplementedError("OverLoCK has no auxiliary head (deploy form or num_classes=0)")
        return self.aux_head["fc"](self.aux_head["norm"](context).mean(dim=(2, 3)))

    def forward_train(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Main and auxiliary logits of a training-form classifier, the inputs of :func:`overlock_loss`."""
        maps = self.forward_maps(x)
        return self.forward_head(maps.features), self.forward_aux_head(maps.context)

    @torch.no_grad()
    def reparameterize(self) -> OverLoCK:
        """Convert a training-form model into the deploy form in place and return it: merge every
        :class:`DilatedReparamConv` (using the BN running statistics, so the outputs of the model in eval mode
        are unchanged) and drop the auxiliary head."""
        for module in self.modules():
            if isinstance(module, DilatedReparamConv):
                module.reparameterize()
        self.aux_head = None
        return self


def overlock_loss(logits: Tensor, aux_logits: Tensor, labels: Tensor, aux_weight: float = AUX_LOSS_WEIGHT) -> Tensor:
    """Training loss with deep supervision of the Overview-Net: ``CE(logits) + aux_weight · CE(aux_logits)``."""
    return F.cross_entropy(logits, labels) + aux_weight * F.cross_entropy(aux_logits, labels)


def _init_weights(module: nn.Module) -> None:
    """Truncated-normal(0.02) conv and linear weights with zero biases (norm layers keep their unit init)."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def subnet_parameters(model: OverLoCK) -> dict[str, int]:
    """Parameter count of each sub-network (``base_net`` includes the stem)."""
    parts = {"base_net": model.base_net, "overview_net": model.overview_net, "focus_net": model.focus_net,
             "head": model.head, "aux_head": model.aux_head}
    return {name: count_parameters(part) if part is not None else 0 for name, part in parts.items()}


@register_model("overlock_xt")
def overlock_xt(**kwargs: Any) -> OverLoCK:
    """OverLoCK-XT: depths [2, 2, 3, 2] + [6, 2], dims [56, 112, 256, 336], kernels [17, 15, 13, 7], k 5,
    8 / 12 kernel groups, 1000 classes; deploy form (16,453,712 parameters) unless ``deploy=False``
    (17,307,272, auxiliary head included)."""
    return OverLoCK(**kwargs)


@register_model("overlock_nano")
def overlock_nano(**kwargs: Any) -> OverLoCK:
    """A small OverLoCK for tests and CPU use: 112² input, depths [1, 1, 1, 1] + [2, 1], dims [16, 32, 48, 64]
    (16 context channels), kernels [13, 7, 7, 7], k 3, 4 kernel groups, projection 128, 10 classes. At 112² the
    H/16 map (7 x 7) fits K = 7 and the H/32 one (4 x 4) takes the resize path."""
    cfg: dict[str, Any] = {"depths": (1, 1, 1, 1), "sub_depths": (2, 1), "dims": (16, 32, 48, 64),
                           "kernel_sizes": (13, 7, 7, 7), "smk_size": 3, "sub_num_heads": (2, 2),
                           "projection": 128, "num_classes": 10, "img_size": 112}
    cfg.update(kwargs)
    return OverLoCK(**cfg)
