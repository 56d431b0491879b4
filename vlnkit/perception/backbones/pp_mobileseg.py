"""PP-MobileSeg: StrideFormer backbone + Aggregated Attention Module (AAM) + segmentation head + VIM.

PP-MobileSeg (PaddleSeg release/2.8) is a mobile semantic-segmentation network, re-implemented here in plain
PyTorch from the design notes (``docs/perception-vision.md`` §3):

- **StrideFormer** backbone: a MobileNetV3 stem and four stages of inverted residual units (``smb1`` .. ``smb4``,
  strides 4/8/16/32), the last two followed by **strided SEA** blocks (squeeze-enhanced axial attention computed
  on a stride-2 copy of the map: axial row/column attention on means over one axis with an interpolated
  positional table, gated by a detail-enhancement convolution of ``[q; k; v]``).
- **AAM** (``inj_type="AAM"``, Tiny): ``out = a1 * a2 * a3 * (e1 + e2) + e3`` at 1/16, the "ensemble voting" of
  the sigmoid gates of the three features filtering the detail features before the semantic one is added;
  **AAMSx8** (Base): ``out = a2 * a3 * e1 + e3`` at 1/8.
- **Head**: depthwise 1x1 conv + BN + ReLU, Dropout2d, 1x1 classifier; logits are bilinearly upsampled to the
  input size (x16 for Tiny, x8 for Base).
- **VIM** (valid interpolate module, :func:`vim_predict`): at inference, only the classes that win the low-res
  argmax are upsampled; an approximation of the full argmax, used by :meth:`PPMobileSeg.predict` only when the
  model has at least 30 classes.

Registered as ``pp_mobileseg_tiny`` (1,492,298 parameters at 150 classes) and ``pp_mobileseg_base``
(5,943,878). As a :class:`~vlnkit.perception.backbones.base.Backbone` the model exposes F8, F16 and F32
(strides 8/16/32); ``forward`` returns full-resolution logits ``(B, classes, H, W)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlnkit.perception.attention.hook import AttentionSite, probe_heads, probe_logits, probe_probs
from vlnkit.perception.backbones.base import Backbone, FeatureInfo
from vlnkit.perception.backbones.layers import DropPath, make_divisible
from vlnkit.perception.backbones.registry import register_model

__all__ = [
    "AAM",
    "AAMSx8",
    "BASE_CONFIG",
    "MV3Config",
    "PPMobileSeg",
    "ResidualUnit",
    "SeaBlock",
    "SegHead",
    "StrideFormer",
    "StrideFormerConfig",
    "StridedSeaAttention",
    "TINY_CONFIG",
    "paddle_hardsigmoid",
    "sea_hsigmoid",
    "vim_predict",
]

VIM_MIN_CLASSES = 30
""":meth:`PPMobileSeg.predict` uses VIM only for models with at least this many classes (else full argmax)."""

_ACTIVATIONS = {"relu": nn.ReLU, "hardswish": nn.Hardswish}


def paddle_hardsigmoid(x: Tensor) -> Tensor:
    """Paddle's ``Hardsigmoid(slope=0.2, offset=0.5)`` = ``clamp(0.2 x + 0.5, 0, 1)`` (the SE gate).

    Not torch's ``hardsigmoid`` (``relu6(x + 3) / 6``), which the SEA gate uses instead."""
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


def sea_hsigmoid(x: Tensor) -> Tensor:
    """The SEA gate ``h_sigmoid(x) = relu6(x + 3) / 6`` (exactly 0.5 at 0)."""
    return F.relu6(x + 3.0) / 6.0


class ConvBN(nn.Sequential):
    """``Conv2d`` (no bias unless asked) + ``BatchNorm2d``, optionally followed by an activation."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: type[nn.Module] | None = None,
        bias: bool = False,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias),
            nn.BatchNorm2d(out_ch),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """MobileNetV3 squeeze-and-excitation: GAP -> 1x1 (c -> c/4, bias) -> ReLU -> 1x1 (bias) -> Paddle
    Hardsigmoid(0.2, 0.5) -> channel-wise scaling of the input."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        if channels // reduction < 1:
            raise ValueError(f"SE needs channels >= reduction, got channels={channels}, reduction={reduction}")
        self.reduce = nn.Conv2d(channels, channels // reduction, 1)
        self.expand = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = self.expand(F.relu(self.reduce(s)))
        return x * paddle_hardsigmoid(s)


@dataclass(frozen=True)
class MV3Config:
    """One MobileNetV3 inverted residual unit: kernel, expand width, out width, SE, activation, stride."""

    kernel: int
    expand: int
    out: int
    se: bool
    act: str
    stride: int


class ResidualUnit(nn.Module):
    """MobileNetV3 inverted residual unit.

    1x1 expand + BN + act (always, even if expand == in) -> depthwise kxk (stride s) + BN + act -> SE (optional)
    -> 1x1 project + BN (no activation); identity shortcut iff ``stride == 1`` and ``in == out``."""

    def __init__(self, in_ch: int, cfg: MV3Config) -> None:
        super().__init__()
        if cfg.act not in _ACTIVATIONS:
            raise ValueError(f"MV3 activation {cfg.act!r} is not supported; expected one of {sorted(_ACTIVATIONS)}")
        if cfg.stride not in (1, 2):
            raise ValueError(f"MV3 stride must be 1 or 2, got {cfg.stride}")
        if cfg.kernel < 1 or cfg.kernel % 2 == 0:
            raise ValueError(f"MV3 kernel size must be a positive odd integer, got {cfg.kernel}")
        act = _ACTIVATIONS[cfg.act]
        expand, out = make_divisible(cfg.expand), make_divisible(cfg.out)
        self.use_shortcut = cfg.stride == 1 and in_ch == out
        self.expand_conv = ConvBN(in_ch, expand, 1, act=act)
        self.dw_conv = ConvBN(expand, expand, cfg.kernel, cfg.stride, groups=expand, act=act)
        self.se = SqueezeExcite(expand) if cfg.se else nn.Identity()
        self.project = ConvBN(expand, out, 1)
        self.out_channels = out

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.se(self.dw_conv(self.expand_conv(x))))
        return x + y if self.use_shortcut else y


class StridedSeaAttention(nn.Module, AttentionSite):
    """Strided squeeze-enhanced axial (SEA) attention. An attention site (:mod:`vlnkit.perception.attention`):
    probes see the row branch's, then the column branch's axial maps.

    With ``xs = BN(DW3x3_stride2(x))`` (``H = ceil(H0 / 2)``), ``q, k = BN(1x1(xs))`` (``n d_k`` channels) and
    ``v = BN(1x1(xs))`` (``n r d_k`` channels):

    - detail enhancement ``D = BN(1x1(ReLU6(BN(DW3x3([q; k; v])))))`` (the DW conv is sized from the concat
      width ``2 n d_k + n r d_k``);
    - row branch: ``q_r = mean_W(q) + PE_q(H)``, ``k_r = mean_W(k) + PE_k(H)``, ``v_r = mean_W(v)``,
      ``o_r = proj_r(softmax(q_r^T k_r d_k^-0.5) v_r)``; the column branch likewise with means over ``H``;
    - ``o = o_r + o_c + v`` (broadcast), ``out = h_sigmoid(proj(o)) * D``, bilinearly resized back to
      ``(H0, W0)`` (odd sizes work: the stride-2 conv rounds up and the resize restores the input size).

    ``PE`` is a learnable ``(1, n d_k, 16)`` table linearly interpolated to the axis length. ``proj``,
    ``proj_r`` and ``proj_c`` are ReLU6 + 1x1 conv + BN with the BN gamma initialised to 0, so that at
    initialisation the axial branch is off and ``out = 0.5 D`` exactly.
    """

    PE_LENGTH = 16

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float = 2.0) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("key_dim", key_dim), ("num_heads", num_heads)):
            if value < 1:
                raise ValueError(f"SEA {name} must be a positive integer, got {value}")
        value_dim = int(attn_ratio * key_dim)
        if value_dim < 1:
            raise ValueError(f"SEA attn_ratio * key_dim must be >= 1, got {attn_ratio} * {key_dim}")
        self.num_heads, self.key_dim, self.value_dim = num_heads, key_dim, value_dim
        self.scale = key_dim**-0.5
        nh_kd, dh = num_heads * key_dim, num_heads * value_dim
        self.stride_conv = ConvBN(dim, dim, 3, stride=2, groups=dim, bias=True)
        self.to_q = ConvBN(dim, nh_kd)
        self.to_k = ConvBN(dim, nh_kd)
        self.to_v = ConvBN(dim, dh)
        concat = 2 * nh_kd + dh
        self.detail = nn.Sequential(ConvBN(concat, concat, 3, groups=concat), nn.ReLU6(), ConvBN(concat, dim))
        self.proj = nn.Sequential(nn.ReLU6(), ConvBN(dh, dim))
        self.proj_r = nn.Sequential(nn.ReLU6(), ConvBN(dh, dh))
        self.proj_c = nn.Sequential(nn.ReLU6(), ConvBN(dh, dh))
        for branch in (self.proj, self.proj_r, self.proj_c):
            nn.init.zeros_(branch[1][1].weight)
        self.pe_row_q = nn.Parameter(torch.randn(1, nh_kd, self.PE_LENGTH))
        self.pe_row_k = nn.Parameter(torch.randn(1, nh_kd, self.PE_LENGTH))
        self.pe_col_q = nn.Parameter(torch.randn(1, nh_kd, self.PE_LENGTH))
        self.pe_col_k = nn.Parameter(torch.randn(1, nh_kd, self.PE_LENGTH))

    @staticmethod
    def _pe(table: Tensor, length: int) -> Tensor:
        """The positional table linearly interpolated to ``length`` positions: ``(1, n d_k, length)``."""
        return F.interpolate(table, size=length, mode="linear", align_corners=False)

    def _axial(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Multi-head attention along one axis: ``q, k (B, n d_k, L)``, ``v (B, n r d_k, L)`` -> ``(B, n r d_k, L)``."""
        b, _, length = q.shape
        n = self.num_heads
        q = q.reshape(b, n, self.key_dim, length).transpose(-1, -2)
        k = k.reshape(b, n, self.key_dim, length)
        v = v.reshape(b, n, self.value_dim, length).transpose(-1, -2)
        attn = probe_probs(self, torch.softmax(probe_logits(self, torch.matmul(q, k) * self.scale), dim=-1))
        return probe_heads(self, torch.matmul(attn, v)).transpose(-1, -2).reshape(b, n * self.value_dim, length)

    def detail_features(self, xs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``q, k, v`` of the strided map ``xs`` and the detail-enhancement map ``D``."""
        q, k, v = self.to_q(xs), self.to_k(xs), self.to_v(xs)
        return q, k, v, self.detail(torch.cat([q, k, v], dim=1))

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        xs = self.stride_conv(x)
        h, w = xs.shape[-2:]
        q, k, v, detail = self.detail_features(xs)
        row = self._axial(
            q.mean(-1) + self._pe(self.pe_row_q, h), k.mean(-1) + self._pe(self.pe_row_k, h), v.mean(-1)
        )
        col = self._axial(
            q.mean(-2) + self._pe(self.pe_col_q, w), k.mean(-2) + self._pe(self.pe_col_k, w), v.mean(-2)
        )
        o = self.proj_r(row.unsqueeze(-1)) + self.proj_c(col.unsqueeze(-2)) + v
        out = sea_hsigmoid(self.proj(o)) * detail
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)


class SeaMlp(nn.Module):
    """The SEA block's feed-forward: ``BN(1x1 C -> mC) -> DW3x3 (bias) -> ReLU6 -> BN(1x1 mC -> C)``."""

    def __init__(self, dim: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        if hidden < 1:
            raise ValueError(f"SEA mlp_ratio must give at least one hidden channel, got {mlp_ratio} for dim {dim}")
        self.fc1 = ConvBN(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = ConvBN(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.relu6(self.dwconv(self.fc1(x))))


class SeaBlock(nn.Module):
    """One StrideFormer transformer block (no LayerNorm anywhere):
    ``x <- x + SEA(x)``, ``x <- x + MLP(x)`` (with optional stochastic depth)."""

    def __init__(
        self,
        dim: int,
        key_dim: int,
        num_heads: int,
        attn_ratio: float = 2.0,
        mlp_ratio: float = 2.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.attn = StridedSeaAttention(dim, key_dim, num_heads, attn_ratio)
        self.mlp = SeaMlp(dim, mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(x))
        return x + self.drop_path(self.mlp(x))


@dataclass(frozen=True)
class StrideFormerConfig:
    """A StrideFormer variant: the four MV3 stages, stem width, and the two SEA stages' settings."""

    stages: tuple[tuple[MV3Config, ...], ...]
    stem_channels: int
    depths: tuple[int, int]
    key_dims: tuple[int, int]
    num_heads: int
    mlp_ratios: tuple[float, float]
    attn_ratio: float = 2.0


class StrideFormer(nn.Module):
    """StrideFormer backbone: stem (Conv3x3 s2 + BN + Hardswish), MV3 stages ``smb1`` .. ``smb4`` and SEA stages
    ``trans1`` (after ``smb3``, 1/16) and ``trans2`` (after ``smb4``, 1/32).

    :meth:`forward` returns ``[F8, F16, F32]``: the output of ``smb2``, of ``trans1`` (also the input of
    ``smb4``) and of ``trans2``."""

    def __init__(self, cfg: StrideFormerConfig, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if len(cfg.stages) != 4:
            raise ValueError(f"StrideFormer needs 4 MV3 stages, got {len(cfg.stages)}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        stem = make_divisible(cfg.stem_channels)
        self.stem = ConvBN(3, stem, 3, stride=2, act=nn.Hardswish)
        channels = stem
        stages = []
        for stage_cfg in cfg.stages:
            units = []
            for unit_cfg in stage_cfg:
                units.append(ResidualUnit(channels, unit_cfg))
                channels = units[-1].out_channels
            stages.append(nn.Sequential(*units))
        self.smb1, self.smb2, self.smb3, self.smb4 = stages
        self.out_channels = [self.smb2[-1].out_channels, self.smb3[-1].out_channels, self.smb4[-1].out_channels]
        rates = torch.linspace(0.0, drop_path_rate, sum(cfg.depths)).tolist()
        self.trans1 = nn.Sequential(
            *(
                SeaBlock(self.out_channels[1], cfg.key_dims[0], cfg.num_heads, cfg.attn_ratio, cfg.mlp_ratios[0], r)
                for r in rates[: cfg.depths[0]]
            )
        )
        self.trans2 = nn.Sequential(
            *(
                SeaBlock(self.out_channels[2], cfg.key_dims[1], cfg.num_heads, cfg.attn_ratio, cfg.mlp_ratios[1], r)
                for r in rates[cfg.depths[0] :]
            )
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        f8 = self.smb2(self.smb1(self.stem(x)))
        f16 = self.trans1(self.smb3(f8))
        f32 = self.trans2(self.smb4(f16))
        return [f8, f16, f32]


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize (align_corners False) to ``size``."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class AAM(nn.Module):
    """Aggregated Attention Module (Tiny): ``out = a1 * a2 * a3 * (e1 + e2) + e3`` at 1/16.

    Per input ``i`` (F8 bilinearly resized to the size of F16, i.e. x0.5; F16; F32) an embedding ``e_i = ConvBN_1x1(f_i)`` and a gate
    ``a_i = sigmoid(ConvBN_1x1(f_i))``; the F32 gate and embedding are computed at 1/32 and then upsampled."""

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256) -> None:
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"AAM takes 3 inputs (F8, F16, F32), got in_channels={list(in_channels)}")
        self.embed = nn.ModuleList(ConvBN(c, out_channels) for c in in_channels)
        self.gate = nn.ModuleList(ConvBN(c, out_channels) for c in in_channels)
        self.out_channels = out_channels

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        f8, f16, f32 = features
        size = f16.shape[-2:]
        l1 = _resize(f8, size)
        e1, a1 = self.embed[0](l1), torch.sigmoid(self.gate[0](l1))
        e2, a2 = self.embed[1](f16), torch.sigmoid(self.gate[1](f16))
        a3 = _resize(torch.sigmoid(self.gate[2](f32)), size)
        e3 = _resize(self.embed[2](f32), size)
        return a1 * a2 * a3 * (e1 + e2) + e3


class AAMSx8(nn.Module):
    """AAM at 1/8 (Base): ``out = a2 * a3 * e1 + e3`` with ``e1`` the F8 embedding, ``a2`` the gate of F16
    (upsampled to 1/8 *before* its conv), ``a3`` / ``e3`` the F32 gate and embedding (upsampled after)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256) -> None:
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"AAMSx8 takes 3 inputs (F8, F16, F32), got in_channels={list(in_channels)}")
        self.embed1 = ConvBN(in_channels[0], out_channels)
        self.gate2 = ConvBN(in_channels[1], out_channels)
        self.gate3 = ConvBN(in_channels[2], out_channels)
        self.embed3 = ConvBN(in_channels[2], out_channels)
        self.out_channels = out_channels

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        f8, f16, f32 = features
        size = f8.shape[-2:]
        e1 = self.embed1(f8)
        a2 = torch.sigmoid(self.gate2(_resize(f16, size)))
        a3 = _resize(torch.sigmoid(self.gate3(f32)), size)
        e3 = _resize(self.embed3(f32), size)
        return a2 * a3 * e1 + e3


class SegHead(nn.Module):
    """Segmentation head: depthwise 1x1 conv (no bias) + BN + ReLU -> Dropout2d -> 1x1 conv (bias) -> classes."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = ConvBN(in_channels, in_channels, 1, groups=in_channels, act=nn.ReLU)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.conv(x)))


_INJECTIONS: dict[str, tuple[type[nn.Module], int]] = {"AAM": (AAM, 16), "AAMSx8": (AAMSx8, 8)}


class PPMobileSeg(Backbone):
    """PP-MobileSeg: StrideFormer -> AAM (or AAMSx8) -> segmentation head; logits upsampled to the input size.

    As a :class:`Backbone` the features are F8, F16, F32 of the StrideFormer. :meth:`forward_head` maps them to
    the head's low-resolution logits (1/16 for AAM, 1/8 for AAMSx8), :meth:`forward` to full-resolution logits
    ``(B, classes, H, W)`` (bilinear, align_corners False) and :meth:`predict` to a label map (through
    :func:`vim_predict` when ``num_classes >= 30``). With ``num_classes=0`` there is no AAM and no head and
    :meth:`forward` returns the feature maps.
    """

    default_input_size = (512, 512)
    dense_task = "seg"

    def __init__(
        self,
        cfg: StrideFormerConfig,
        num_classes: int = 150,
        inj_type: str = "AAM",
        aam_channels: int = 256,
        head_dropout: float = 0.1,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if inj_type not in _INJECTIONS:
            raise ValueError(f"inj_type {inj_type!r} is not supported; expected one of {sorted(_INJECTIONS)}")
        if aam_channels < 1:
            raise ValueError(f"aam_channels must be a positive integer, got {aam_channels}")
        self.num_classes = num_classes
        self.inj_type = inj_type
        self.backbone = StrideFormer(cfg, drop_path_rate)
        self.feature_info = [FeatureInfo(s, c) for s, c in zip((8, 16, 32), self.backbone.out_channels)]
        injection, self.output_stride = _INJECTIONS[inj_type]
        if num_classes > 0:
            self.aam = injection(self.backbone.out_channels, aam_channels)
            self.head = SegHead(aam_channels, num_classes, head_dropout)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """``[F8, F16, F32]`` of the StrideFormer for images ``(B, 3, H, W)``."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        return self.backbone(x)

    def forward_head(self, features: list[Tensor]) -> Tensor:
        """The head's low-resolution logits ``(B, classes, H / s, W / s)`` (``s`` = 16 for AAM, 8 for AAMSx8)."""
        if self.num_classes == 0:
            return super().forward_head(features)
        return self.head(self.aam(features))

    def forward_lowres(self, x: Tensor) -> Tensor:
        """Low-resolution logits of images ``x`` (what learned policies should consume)."""
        return self.forward_head(self.forward_features(x))

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        """Full-resolution logits ``(B, classes, H, W)`` (feature maps when ``num_classes == 0``)."""
        features = self.forward_features(x)
        if self.num_classes == 0:
            return features
        return _resize(self.forward_head(features), x.shape[-2:])

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Label map ``(B, H, W)`` int64: VIM (:func:`vim_predict`) when ``num_classes >= 30``, else the argmax
        of the full-resolution logits."""
        if self.num_classes == 0:
            raise ValueError("predict needs a model with a head (num_classes > 0), got num_classes=0")
        lowres = self.forward_lowres(x)
        if self.num_classes >= VIM_MIN_CLASSES:
            return vim_predict(lowres, x.shape[-2:])
        return _resize(lowres, x.shape[-2:]).argmax(dim=1)


def vim_predict(lowres_logits: Tensor, size: Sequence[int], mode: str = "bilinear") -> Tensor:
    """VIM (valid interpolate module): label map ``(B, H, W)`` int64 from low-res logits ``(B, C, h, w)``.

    Per image, ``L = unique(argmax_c logits)``; only the ``|L|`` channels of ``L`` are upsampled to ``size``
    (``mode``, align_corners False for bilinear), their argmax is taken and mapped back through ``L``. An
    approximation of the full argmax: a class that never wins at low resolution can win after bilinear mixing.
    Data-dependent (``unique``), so a post-processing function, not part of a traced graph."""
    if lowres_logits.ndim != 4:
        raise ValueError(f"expected low-res logits of shape (B, C, h, w), got {tuple(lowres_logits.shape)}")
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"VIM upsampling mode must be 'bilinear' or 'nearest', got {mode!r}")
    size = tuple(int(s) for s in size)
    kwargs: dict[str, Any] = {"align_corners": False} if mode == "bilinear" else {}
    labels = []
    for logits in lowres_logits:
        present = torch.unique(logits.argmax(dim=0))
        picked = F.interpolate(logits[present].unsqueeze(0), size=size, mode=mode, **kwargs)
        labels.append(present[picked[0].argmax(dim=0)])
    return torch.stack(labels)


def _mv3(*rows: tuple[int, int, int, bool, str, int]) -> tuple[MV3Config, ...]:
    """One MV3 stage from ``(kernel, expand, out, se, act, stride)`` rows."""
    return tuple(MV3Config(*row) for row in rows)


TINY_CONFIG = StrideFormerConfig(
    stages=(
        _mv3((3, 16, 16, True, "relu", 1), (3, 64, 32, False, "relu", 2), (3, 48, 24, False, "relu", 1)),
        _mv3((5, 96, 32, True, "hardswish", 2), (5, 96, 32, True, "hardswish", 1)),
        _mv3((5, 160, 64, True, "hardswish", 2), (5, 160, 64, True, "hardswish", 1)),
        _mv3((3, 384, 128, True, "hardswish", 2), (3, 384, 128, True, "hardswish", 1)),
    ),
    stem_channels=16,
    depths=(2, 2),
    key_dims=(16, 24),
    num_heads=4,
    mlp_ratios=(2.0, 4.0),
)
"""StrideFormer-Tiny (``MobileSeg_Tiny``): F8/F16/F32 widths 32/64/128, 2 + 2 SEA blocks, 4 heads."""

BASE_CONFIG = StrideFormerConfig(
    stages=(
        _mv3((3, 16, 16, True, "relu", 1), (3, 64, 32, False, "relu", 2), (3, 96, 32, False, "relu", 1)),
        _mv3((5, 128, 64, True, "hardswish", 2), (5, 240, 64, True, "hardswish", 1)),
        _mv3((5, 384, 128, True, "hardswish", 2), (5, 384, 128, True, "hardswish", 1)),
        _mv3((5, 768, 192, True, "hardswish", 2), (5, 768, 192, True, "hardswish", 1)),
    ),
    stem_channels=16,
    depths=(3, 3),
    key_dims=(16, 24),
    num_heads=8,
    mlp_ratios=(2.0, 4.0),
)
"""StrideFormer-Base (``MobileSeg_Base``): F8/F16/F32 widths 64/128/192, 3 + 3 SEA blocks, 8 heads."""


@register_model("pp_mobileseg_tiny")
def pp_mobileseg_tiny(**kwargs: Any) -> PPMobileSeg:
    """PP-MobileSeg-Tiny: StrideFormer-Tiny + AAM + head (150 ADE20K classes: 1,492,298 parameters)."""
    kwargs.setdefault("inj_type", "AAM")
    return PPMobileSeg(TINY_CONFIG, **kwargs)


@register_model("pp_mobileseg_base")
def pp_mobileseg_base(**kwargs: Any) -> PPMobileSeg:
    """PP-MobileSeg-Base: StrideFormer-Base + AAMSx8 + head at 1/8 (150 classes: 5,943,878 parameters)."""
    kwargs.setdefault("inj_type", "AAMSx8")
    return PPMobileSeg(BASE_CONFIG, **kwargs)
