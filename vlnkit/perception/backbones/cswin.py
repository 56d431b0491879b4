"""CSWin Transformer (CVPR 2022): cross-shaped window self-attention with locally-enhanced positional encoding.

Re-implemented from the math of ``docs/perception-vision.md`` section 1 (the official code,
``microsoft/CSWin-Transformer``, is MIT; nothing is copied from it). Registered models:

- ``cswin_t``: the published CSWin-T (``CSWin_64_12211_tiny_224``): 22,320,552 parameters with its 1000-class
  head, 4.32 GMACs at 224x224;
- ``cswin_nano``: a small configuration for tests and CPU experiments (dims 32-256, one block per stage) that
  keeps every code path: both stripe branches in stages 1-3, global attention in stage 4, stripe padding.

One block (input ``X``, a ``H x W`` map of ``C`` channels, ``K`` heads, stripe width ``sw``)::

    Q, K, V = LN(X) W_qkv                                 # C -> 3C, with bias
    branch 1: channels [0, C/2), heads [0, K/2)  -> windows (H, sw)   vertical stripes
    branch 2: channels [C/2, C), heads [K/2, K)  -> windows (sw, W)   horizontal stripes
    per window and head: softmax(q k^T * d^-0.5) v + LePE(v)          d = (C/2) / (K/2) = C / K
    X <- X + proj(concat(branch 1, branch 2));  X <- X + MLP(LN(X))

LePE is a depthwise 3x3 convolution (with bias) of ``V`` added to the attention output. It is computed **per
window**: each stripe's values are laid out as a small image and convolved with zero padding at the stripe's
borders, so with ``sw = 1`` the vertical branch's kernel acts as 3x1 (doc pitfall 1). Stage 4 always has one
branch with all channels and heads and a single window, the whole map: global attention plus LePE on the map
(at 224x224 its 7x7 map equals the stripe width 7, the official ``last_stage``).

Arbitrary input sizes (the official segmentation backbone's padding path, doc pitfall 3): the input is padded
at the bottom and right with zeros to a multiple of 4, so stage ``i`` has ``ceil(H / s_i) x ceil(W / s_i)``
tokens. A stripe branch pads its queries, keys and values symmetrically with zeros along its stripe axis to a
multiple of the stripe width and crops the output; padded keys are not masked (they enter the softmax with
logit 0, their values are 0). A stripe wider than the map is narrowed to the map (one window over the whole
axis, no padded tokens). Where nothing needs padding (e.g. every 224x224 input) all of this is a no-op.

``circular=True`` (vlnkit-specific, for cylindrical panoramas whose left and right edges meet) pads circularly
along the width wherever the model pads along the width inside the network: the stem and merge convolutions,
the vertical branch's stripe padding (a stripe across the seam holds the columns of both edges), and the LePE
convolution of every window that spans the full width (horizontal stripes and the global stage; a vertical
stripe's side borders are stripe borders, zero-padded as always). Heights are zero-padded either way. When the
width is a multiple of :func:`circular_period` (224 px for stripe widths ``[1, 2, 7]``), rolling the panorama
along its width by a multiple of that period rolls every feature map by the matching number of columns.

Outputs: :meth:`CSWinTransformer.forward_features` returns the 4 stage outputs, NCHW, at strides 4/8/16/32
(``feature_norms=True`` adds a LayerNorm per stage output, as the official segmentation backbone does, whose
21,808,448 parameters it then has with ``num_classes=0``); with ``num_classes > 0`` the head LayerNorm -> mean
over tokens -> Linear gives the logits. ``num_classes=0`` drops the head, its LayerNorm included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlnkit.perception.attention.hook import AttentionSite, probe_heads, probe_logits, probe_probs
from vlnkit.perception.backbones.base import Backbone, FeatureInfo
from vlnkit.perception.backbones.layers import DropPath, init_weights_trunc_normal
from vlnkit.perception.backbones.registry import register_model

__all__ = ["CSWinBlock", "CSWinTransformer", "LePEAttention", "circular_period"]

BRANCH_MODES = ("vertical", "horizontal", "global")


def _pad_hw(x: Tensor, top: int, bottom: int, left: int, right: int, circular_w: bool) -> Tensor:
    """Pad an NCHW tensor: zeros along the height; along the width circularly when ``circular_w``, else zeros."""
    if circular_w and (left or right):
        x = F.pad(x, (left, right, 0, 0), mode="circular")
        left = right = 0
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom))
    return x


class LePEAttention(nn.Module, AttentionSite):
    """Multi-head attention of one CSWin branch over its windows, plus the per-window LePE (``lepe``). An
    attention site (:mod:`vlnkit.perception.attention`): probes see ``(B * windows, heads, tokens, tokens)``
    maps and the head outputs with the LePE added.

    Args:
        dim: channels of the branch (half the block's channels for a stripe branch, all for the global one).
        num_heads: heads of the branch; the scale is ``(dim / num_heads) ** -0.5``.
        mode: ``"vertical"`` (windows ``H x sw``), ``"horizontal"`` (windows ``sw x W``) or ``"global"``
            (one window, the whole map).
        split_size: the stripe width ``sw`` (ignored by ``"global"``).
        circular: the map is a cylinder along its width (see the module docstring).
        attn_drop: dropout on the attention weights.

    :meth:`forward` takes ``q, k, v`` as ``(B, H, W, dim)`` maps and returns the ``(B, H, W, dim)`` output.
    """

    def __init__(self, dim: int, num_heads: int, mode: str, split_size: int = 7, circular: bool = False,
                 attn_drop: float = 0.0) -> None:
        super().__init__()
        if mode not in BRANCH_MODES:
            raise ValueError(f"mode must be one of {BRANCH_MODES}, not {mode!r}")
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if mode != "global" and split_size < 1:
            raise ValueError(f"split_size must be positive, not {split_size}")
        self.dim, self.num_heads, self.mode = dim, num_heads, mode
        self.split_size, self.circular = int(split_size), bool(circular)
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.lepe = nn.Conv2d(dim, dim, 3, padding=0, groups=dim)  # padded by hand: per window, maybe circular
        self.attn_drop = nn.Dropout(attn_drop)

    def window_size(self, height: int, width: int) -> tuple[int, int]:
        """The ``(H_sp, W_sp)`` window of this branch on a ``height x width`` map (a stripe wider than the map
        is narrowed to it)."""
        if self.mode == "vertical":
            return height, min(self.split_size, width)
        if self.mode == "horizontal":
            return min(self.split_size, height), width
        return height, width

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attention within each window plus LePE of the window's values: ``(B, H, W, dim)`` maps in and out."""
        b, h, w, c = q.shape
        h_sp, w_sp = self.window_size(h, w)
        pad_h, pad_w = -h % h_sp, -w % w_sp
        top, left = pad_h // 2, pad_w // 2
        n_h, n_w = (h + pad_h) // h_sp, (w + pad_w) // w_sp
        n_win, n_tok = b * n_h * n_w, h_sp * w_sp

        def windows(t: Tensor) -> Tensor:  # (B, H, W, C) -> (B * windows, C, h_sp, w_sp)
            t = _pad_hw(t.permute(0, 3, 1, 2), top, pad_h - top, left, pad_w - left, self.circular)
            t = t.reshape(b, c, n_h, h_sp, n_w, w_sp).permute(0, 2, 4, 1, 3, 5)
            return t.reshape(n_win, c, h_sp, w_sp)

        def heads(t: Tensor) -> Tensor:  # (B * windows, C, h_sp, w_sp) -> (B * windows, heads, tokens, head_dim)
            return t.reshape(n_win, self.num_heads, self.head_dim, n_tok).transpose(-2, -1)

        qw, kw, vw = windows(q), windows(k), windows(v)
        lepe = self.lepe(_pad_hw(vw, 1, 1, 1, 1, self.circular and w_sp == w))
        attn = probe_logits(self, (heads(qw) * self.scale) @ heads(kw).transpose(-2, -1))
        attn = self.attn_drop(probe_probs(self, attn.softmax(dim=-1)))
        out = probe_heads(self, attn @ heads(vw) + heads(lepe))
        out = out.transpose(-2, -1).reshape(b, n_h, n_w, c, h_sp, w_sp).permute(0, 1, 4, 2, 5, 3)
        out = out.reshape(b, h + pad_h, w + pad_w, c)
        return out[:, top : top + h, left : left + w]

    def extra_repr(self) -> str:
        split = "" if self.mode == "global" else f", split_size={self.split_size}"
        return f"dim={self.dim}, num_heads={self.num_heads}, mode={self.mode}{split}, circular={self.circular}"


class CSWinBlock(nn.Module):
    """One CSWin block on a ``(B, H, W, C)`` map: cross-shaped window attention (``attns``: the vertical and
    horizontal stripe branches, or one global branch when ``last_stage``) and an MLP, each pre-norm with a
    residual connection."""

    def __init__(self, dim: int, num_heads: int, split_size: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, last_stage: bool = False,
                 circular: bool = False) -> None:
        super().__init__()
        self.branch_num = 1 if last_stage else 2
        if not last_stage and (dim % 2 or num_heads % 2):
            raise ValueError(f"a two-branch block needs an even dim and num_heads, not {dim} and {num_heads}")
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        if last_stage:
            branches = [("global", dim, num_heads)]
        else:
            branches = [("vertical", dim // 2, num_heads // 2), ("horizontal", dim // 2, num_heads // 2)]
        self.attns = nn.ModuleList(LePEAttention(d, n, mode, split_size, circular, attn_drop)
                                   for mode, d, n in branches)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(drop), nn.Linear(hidden, dim),
                                 nn.Dropout(drop))

    def forward(self, x: Tensor) -> Tensor:
        """The block's output ``(B, H, W, C)``."""
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        if self.branch_num == 1:
            out = self.attns[0](q, k, v)
        else:
            half = x.shape[-1] // 2
            parts = (slice(None, half), slice(half, None))
            out = torch.cat([attn(q[..., s], k[..., s], v[..., s]) for attn, s in zip(self.attns, parts)], dim=-1)
        x = x + self.drop_path(self.proj_drop(self.proj(out)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConvNorm(nn.Module):
    """Strided convolution (the stem or a merge between stages) then LayerNorm over channels:
    ``(B, H, W, C_in)``, or ``(B, C_in, H, W)`` with ``channels_first``, to ``(B, H', W', C_out)``. With
    ``circular`` the width is padded circularly, the height with zeros."""

    def __init__(self, in_chans: int, out_chans: int, kernel: int, stride: int, padding: int,
                 circular: bool = False) -> None:
        super().__init__()
        self.padding, self.circular = padding, circular
        self.conv = nn.Conv2d(in_chans, out_chans, kernel, stride, padding=0)
        self.norm = nn.LayerNorm(out_chans)

    def forward(self, x: Tensor, channels_first: bool = False) -> Tensor:
        """The convolved, normalised map ``(B, H', W', C_out)``."""
        if not channels_first:
            x = x.permute(0, 3, 1, 2)
        p = self.padding
        x = self.conv(_pad_hw(x, p, p, p, p, self.circular))
        return self.norm(x.permute(0, 2, 3, 1))


class CSWinTransformer(Backbone):
    """The CSWin Transformer (see the module docstring): stem, 4 stages of :class:`CSWinBlock` joined by
    strided-convolution merges, optional classification head.

    Args:
        num_classes: classes of the head (LayerNorm -> mean over tokens -> Linear); 0 drops the head.
        in_chans: input channels.
        embed_dim: channels of stage 1; stage ``i`` (from 0) has ``embed_dim * 2**i``.
        depths: blocks per stage (4 stages).
        num_heads: heads per stage (even in stages 1-3: half go to each stripe branch).
        split_size: stripe width per stage; a 4th entry is accepted for parity with the published
            configurations (``[1, 2, 7, 7]``) and ignored, as stage 4 always attends globally.
        mlp_ratio: MLP hidden size over channels.
        qkv_bias: bias of the qkv projection (the published models use it).
        drop_rate, attn_drop_rate: dropout after the projections / on the attention weights.
        drop_path_rate: stochastic depth of the last block, rising linearly from 0 at the first.
        circular: the input is a cylindrical panorama (its width wraps around); see the module docstring.
        feature_norms: a LayerNorm on each stage output of :meth:`forward_features`, as in the official
            segmentation backbone (dense use: only with ``num_classes=0``).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, embed_dim: int = 64,
                 depths: Sequence[int] = (1, 2, 21, 1), num_heads: Sequence[int] = (2, 4, 8, 16),
                 split_size: Sequence[int] = (1, 2, 7, 7), mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 circular: bool = False, feature_norms: bool = False) -> None:
        super().__init__()
        if not (len(depths) == len(num_heads) == 4 and len(split_size) in (3, 4)):
            raise ValueError("CSWin has 4 stages: depths and num_heads need 4 entries, split_size 3 or 4")
        if feature_norms and num_classes > 0:
            raise ValueError("feature_norms is the dense (segmentation) backbone's: build it with num_classes=0")
        self.num_classes, self.circular = int(num_classes), bool(circular)
        self.split_size = list(split_size[:3])
        dims = [embed_dim * 2**i for i in range(4)]
        self.feature_info = [FeatureInfo(stride=4 * 2**i, channels=d) for i, d in enumerate(dims)]

        self.stem = ConvNorm(in_chans, dims[0], 7, 4, 2, circular)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        for i, (dim, depth, heads) in enumerate(zip(dims, depths, num_heads)):
            last, start = i == 3, sum(depths[:i])
            split = 0 if last else self.split_size[i]
            self.stages.append(nn.Sequential(*(
                CSWinBlock(dim, heads, split, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, rates[start + j],
                           last_stage=last, circular=circular)
                for j in range(depth))))
            if not last:
                self.merges.append(ConvNorm(dim, dims[i + 1], 3, 2, 1, circular))
        self.feature_norms = nn.ModuleList(nn.LayerNorm(d) for d in dims) if feature_norms else None
        if self.num_classes > 0:
            self.norm = nn.LayerNorm(dims[-1])
            self.head = nn.Linear(dims[-1], self.num_classes)
        self.apply(init_weights_trunc_normal)

    @property
    def period(self) -> int:
        """Width period in pixels of a circular model: rolling the input by a multiple of it rolls every map."""
        return circular_period(self.split_size)

    def branch_nums(self) -> list[int]:
        """Branches per stage (``[2, 2, 2, 1]``: stripe pairs in stages 1-3, global attention in stage 4)."""
        return [stage[0].branch_num for stage in self.stages]

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The 4 stage outputs ``(B, C_i, ceil(H / s_i), ceil(W / s_i))`` at strides 4/8/16/32."""
        pad_h, pad_w = -x.shape[-2] % 4, -x.shape[-1] % 4
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.stem(x, channels_first=True)
        features = []
        for i, stage in enumerate(self.stages):
            if i:
                x = self.merges[i - 1](x)
            x = stage(x)
            y = self.feature_norms[i](x) if self.feature_norms is not None else x
            features.append(y.permute(0, 3, 1, 2).contiguous())
        return features

    def forward_head(self, features: list[Tensor]) -> Tensor:
        """Logits ``(B, num_classes)``: LayerNorm of the stage-4 tokens, mean over tokens, Linear."""
        if self.num_classes == 0:
            return super().forward_head(features)
        tokens = features[-1].flatten(2).transpose(1, 2)
        return self.head(self.norm(tokens).mean(dim=1))


def circular_period(split_size: Sequence[int]) -> int:
    """Width period in pixels of a circular CSWin with stripe widths ``split_size`` (stages 1-3):
    ``lcm(4 sw_1, 8 sw_2, 16 sw_3, 32)``.

    The stem (stride 4) and the merges (stride 2 on maps of stride 4, 8, 16) commute with rolls by multiples of
    4, 8, 16 and 32 px; the vertical stripes of stage ``i`` (stride ``s_i``) with rolls by multiples of
    ``s_i * sw_i`` px; global attention with any roll of its map. 224 px for ``[1, 2, 7]``.
    """
    return math.lcm(4 * split_size[0], 8 * split_size[1], 16 * split_size[2], 32)


@register_model("cswin_t")
def cswin_t(**kwargs: Any) -> CSWinTransformer:
    """CSWin-T: dims 64-512, depths [1, 2, 21, 1], heads [2, 4, 8, 16], stripe widths [1, 2, 7, 7]
    (1000 classes: 22,320,552 parameters)."""
    config: dict[str, Any] = dict(embed_dim=64, depths=(1, 2, 21, 1), num_heads=(2, 4, 8, 16),
                                  split_size=(1, 2, 7, 7))
    return CSWinTransformer(**{**config, **kwargs})


@register_model("cswin_nano")
def cswin_nano(**kwargs: Any) -> CSWinTransformer:
    """A small CSWin for tests and CPU experiments: dims 32-256, one block per stage, heads [2, 2, 4, 8]
    (head dims 16, 32, 32, 32), stripe widths [1, 2, 7, 7]."""
    config: dict[str, Any] = dict(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(2, 2, 4, 8),
                                  split_size=(1, 2, 7, 7))
    return CSWinTransformer(**{**config, **kwargs})
