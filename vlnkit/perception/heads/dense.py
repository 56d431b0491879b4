"""Dense heads on any backbone's feature maps: semantic segmentation and depth, with their losses and metrics.

Both heads share :class:`FPNNeck`, a light Semantic-FPN style neck built from a backbone's
:attr:`~vlnkit.perception.backbones.base.Backbone.feature_info`: a 1x1 lateral convolution per map, a top-down
pathway (each coarser level upsampled and added to the next finer one), a 3x3 smoothing convolution per level,
then every level upsampled to the finest stride and summed (or concatenated). It works the same for a
four-level CNN pyramid (strides 4/8/16/32) and for a plain ViT with one stride-16 map.

- :class:`SegmentationHead`: neck, 3x3 conv + GroupNorm + ReLU, dropout, 1x1 classifier; logits at the finest
  stride, bilinearly upsampled to ``out_size`` when given.
- :class:`DepthHead`: the same neck and trunk, one output channel made positive with a softplus
  (``min_depth + softplus(x)``) or squashed into ``[min_depth, max_depth]`` with a sigmoid.
- :class:`DensePredictor`: a backbone and a head as one module, ``images -> full-resolution outputs``.

Losses and metrics are plain functions on label / depth tensors ``(B, H, W)``: :func:`segmentation_loss`
(pixel cross-entropy with an ignore index), :func:`depth_loss` (scale-invariant log loss by default, or L1;
invalid pixels, ``target <= 0`` as the houses data marks "nothing hit", are left out),
:func:`confusion_matrix`, :func:`class_iou`, :func:`miou`, :func:`pixel_accuracy` and :func:`depth_abs_rel`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlnkit.perception.backbones.base import Backbone, FeatureInfo

__all__ = [
    "DENSE_FUSIONS",
    "DEPTH_ACTIVATIONS",
    "DEPTH_LOSSES",
    "DensePredictor",
    "DepthHead",
    "FPNNeck",
    "SegmentationHead",
    "class_iou",
    "confusion_matrix",
    "depth_abs_rel",
    "depth_loss",
    "miou",
    "pixel_accuracy",
    "segmentation_loss",
]

DENSE_FUSIONS = ("sum", "concat")
"""How :class:`FPNNeck` merges its levels once they are all at the finest stride."""

DEPTH_ACTIVATIONS = ("softplus", "sigmoid")
"""How :class:`DepthHead` makes its output a depth: ``min_depth + softplus(x)`` or a sigmoid into the range."""

DEPTH_LOSSES = ("silog", "l1")
"""The kinds of :func:`depth_loss`."""


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups (the largest divisor of ``channels`` that is at most 32): batch-size
    independent, so the heads train the same with the batch of one image a panorama agent often has."""
    groups = max(g for g in range(1, min(32, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def _check_feature_info(feature_info: Sequence[FeatureInfo]) -> list[FeatureInfo]:
    info = list(feature_info)
    if not info:
        raise ValueError("feature_info is empty; expected at least one FeatureInfo(stride, channels)")
    strides = [f.stride for f in info]
    if any(b <= a for a, b in zip(strides, strides[1:])):
        raise ValueError(f"feature_info strides {strides} must increase strictly (finest map first)")
    if any(f.channels < 1 or f.stride < 1 for f in info):
        raise ValueError(f"feature_info {info} must have positive strides and channel counts")
    return info


class FPNNeck(nn.Module):
    """Semantic-FPN style neck: a backbone's maps -> one ``(B, out_channels, H / s_0, W / s_0)`` map.

    ``feature_info`` is the backbone's (finest first); ``channels`` the width of every level;
    ``fuse="sum"`` adds the levels at the finest stride (``out_channels = channels``), ``"concat"`` stacks
    them (``out_channels = channels * levels``). Upsampling is bilinear to the exact size of the finer map,
    so inputs whose sides are not multiples of the coarsest stride work too.
    """

    def __init__(self, feature_info: Sequence[FeatureInfo], channels: int = 128, fuse: str = "sum") -> None:
        super().__init__()
        if fuse not in DENSE_FUSIONS:
            raise ValueError(f"fuse must be one of {DENSE_FUSIONS}, got {fuse!r}")
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        self.feature_info = _check_feature_info(feature_info)
        self.fuse = fuse
        self.stride = self.feature_info[0].stride
        self.out_channels = channels * (len(self.feature_info) if fuse == "concat" else 1)
        self.lateral = nn.ModuleList(nn.Conv2d(f.channels, channels, 1) for f in self.feature_info)
        self.smooth = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in self.feature_info)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """The fused map at the finest stride from the backbone's maps (one per ``feature_info`` entry)."""
        if len(features) != len(self.feature_info):
            raise ValueError(
                f"got {len(features)} feature maps, expected {len(self.feature_info)} (one per feature_info entry)"
            )
        for i, (x, f) in enumerate(zip(features, self.feature_info)):
            if x.ndim != 4 or x.shape[1] != f.channels:
                raise ValueError(
                    f"feature map {i} has shape {tuple(x.shape)}, expected (B, {f.channels}, H, W) "
                    f"for {f} of feature_info"
                )
        laterals = [conv(x) for conv, x in zip(self.lateral, features)]
        for i in range(len(laterals) - 2, -1, -1):
            laterals[i] = laterals[i] + F.interpolate(
                laterals[i + 1], size=laterals[i].shape[-2:], mode="bilinear", align_corners=False
            )
        size = laterals[0].shape[-2:]
        levels = [
            F.interpolate(smooth(x), size=size, mode="bilinear", align_corners=False) if i else smooth(x)
            for i, (smooth, x) in enumerate(zip(self.smooth, laterals))
        ]
        return torch.cat(levels, dim=1) if self.fuse == "concat" else torch.stack(levels).sum(0)


class _DenseHead(nn.Module):
    """Neck, 3x3 conv + GroupNorm + ReLU trunk, dropout and a 1x1 output conv (the shared body of the heads)."""

    def __init__(self, feature_info: Sequence[FeatureInfo], out_channels: int, channels: int, fuse: str,
                 dropout: float) -> None:
        super().__init__()
        self.neck = FPNNeck(feature_info, channels, fuse)
        self.feature_info = self.neck.feature_info
        self.trunk = nn.Sequential(
            nn.Conv2d(self.neck.out_channels, channels, 3, padding=1, bias=False),
            _group_norm(channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )
        self.out = nn.Conv2d(channels, out_channels, 1)

    def raw(self, features: Sequence[Tensor], out_size: tuple[int, int] | None) -> Tensor:
        """Pre-activation outputs at the finest stride, or bilinearly upsampled to ``out_size``."""
        y = self.out(self.trunk(self.neck(features)))
        if out_size is not None:
            y = F.interpolate(y, size=tuple(out_size), mode="bilinear", align_corners=False)
        return y


class SegmentationHead(_DenseHead):
    """Semantic segmentation logits ``(B, num_classes, H, W)`` from a backbone's feature maps.

    ``channels`` is the neck and trunk width, ``fuse`` the neck's level fusion, ``dropout`` the Dropout2d
    before the classifier.
    """

    def __init__(self, feature_info: Sequence[FeatureInfo], num_classes: int, channels: int = 128,
                 fuse: str = "sum", dropout: float = 0.1) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        super().__init__(feature_info, num_classes, channels, fuse, dropout)
        self.num_classes = num_classes

    def forward(self, features: Sequence[Tensor], out_size: tuple[int, int] | None = None) -> Tensor:
        """Logits at the finest stride, or bilinearly upsampled to ``out_size`` (the input's ``(H, W)``)."""
        return self.raw(features, out_size)


class DepthHead(_DenseHead):
    """Per-pixel depth ``(B, H, W)`` (positive, in the units of the training targets) from feature maps.

    ``activation="softplus"`` gives ``min_depth + softplus(x)`` (any depth above ``min_depth``; ``max_depth``
    unused); ``"sigmoid"`` gives ``min_depth + (max_depth - min_depth) * sigmoid(x)``, a bounded range that
    suits a known sensor range such as the houses renderer's.
    """

    def __init__(self, feature_info: Sequence[FeatureInfo], channels: int = 128, fuse: str = "sum",
                 dropout: float = 0.0, activation: str = "softplus", min_depth: float = 1e-3,
                 max_depth: float = 10.0) -> None:
        if activation not in DEPTH_ACTIVATIONS:
            raise ValueError(f"activation must be one of {DEPTH_ACTIVATIONS}, got {activation!r}")
        if not 0.0 <= min_depth < max_depth:
            raise ValueError(f"expected 0 <= min_depth < max_depth, got min_depth={min_depth}, max_depth={max_depth}")
        super().__init__(feature_info, 1, channels, fuse, dropout)
        self.activation = activation
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)

    def forward(self, features: Sequence[Tensor], out_size: tuple[int, int] | None = None) -> Tensor:
        """Depth at the finest stride, or at ``out_size`` (upsampled before the activation)."""
        x = self.raw(features, out_size)[:, 0]
        if self.activation == "sigmoid":
            return self.min_depth + (self.max_depth - self.min_depth) * torch.sigmoid(x)
        return self.min_depth + F.softplus(x)


class DensePredictor(nn.Module):
    """A backbone and a dense head as one model: ``images (B, 3, H, W) -> outputs at (H, W)``.

    The head must have been built for this backbone's ``feature_info``.
    """

    def __init__(self, backbone: Backbone, head: SegmentationHead | DepthHead) -> None:
        super().__init__()
        if list(backbone.feature_info) != list(head.feature_info):
            raise ValueError(
                f"head was built for feature_info {head.feature_info}, but the backbone has {backbone.feature_info}"
            )
        self.backbone = backbone
        self.head = head

    def forward(self, images: Tensor) -> Tensor:
        """Segmentation logits ``(B, K, H, W)`` or depth ``(B, H, W)`` at the input's resolution."""
        return self.head(self.backbone.forward_features(images), out_size=tuple(images.shape[-2:]))


def segmentation_loss(logits: Tensor, target: Tensor, ignore_index: int | None = 255) -> Tensor:
    """Mean pixel cross-entropy of ``logits (B, K, H, W)`` against labels ``(B, H, W)``.

    Pixels labelled ``ignore_index`` (``None``: none) are left out; when every pixel is ignored the loss is
    a zero that still carries the graph.
    """
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"expected logits (B, K, H, W) and target (B, H, W), got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    target = target.long()
    if ignore_index is not None and bool((target == ignore_index).all()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=-100 if ignore_index is None else ignore_index)


def _valid_depth(target: Tensor, valid: Tensor | None) -> Tensor:
    mask = torch.isfinite(target) & (target > 0)
    if valid is not None:
        if valid.shape != target.shape:
            raise ValueError(f"valid mask has shape {tuple(valid.shape)}, expected the target's {tuple(target.shape)}")
        mask = mask & valid.bool()
    return mask


def _check_depth_shapes(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.ndim < 2:
        raise ValueError(
            "expected depth prediction and target of one shape (B, H, W), "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def depth_loss(pred: Tensor, target: Tensor, valid: Tensor | None = None, kind: str = "silog",
               variance_weight: float = 0.5) -> Tensor:
    """Depth loss of positive ``pred (B, H, W)`` against ``target (B, H, W)`` over the valid pixels.

    Valid pixels have a finite ``target > 0`` (the houses data writes 0 where nothing was hit) and, when
    given, ``valid`` true. ``kind="silog"`` is the scale-invariant log loss of Eigen et al. (2014), per image
    ``mean(g^2) - variance_weight * mean(g)^2`` with ``g = log pred - log target``, averaged over the images
    that have valid pixels. It is the default because a log-space error is relative (a 10 cm error at 1 m
    costs what 1 m costs at 10 m, matching :func:`depth_abs_rel`, so far walls do not drown near obstacles)
    and ``variance_weight = 0.5`` (Eigen's choice) discounts half of a global scale error, which monocular
    training struggles with, while still learning metric scale (``1`` would make it fully scale-invariant,
    useless for metric navigation). ``kind="l1"`` is the mean absolute error in metres over all valid
    pixels, for when metric error is what counts.
    """
    if kind not in DEPTH_LOSSES:
        raise ValueError(f"kind must be one of {DEPTH_LOSSES}, got {kind!r}")
    _check_depth_shapes(pred, target)
    mask = _valid_depth(target, valid)
    if not bool(mask.any()):
        return pred.sum() * 0.0
    if kind == "l1":
        return (pred[mask] - target[mask]).abs().mean()
    safe_target = torch.where(mask, target, torch.ones_like(target))
    safe_pred = torch.where(mask, pred, torch.ones_like(pred))
    g = (torch.log(safe_pred) - torch.log(safe_target)) * mask
    dims = tuple(range(1, pred.ndim))
    count = mask.sum(dims)
    has = count > 0
    n = count[has].to(pred.dtype)
    mean_g = g.sum(dims)[has] / n
    mean_g2 = (g * g).sum(dims)[has] / n
    return (mean_g2 - variance_weight * mean_g * mean_g).mean()


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """``(num_classes, num_classes)`` int64 counts: row = target class, column = predicted class.

    ``pred`` and ``target`` are label tensors of one shape; pixels whose target is ``ignore_index`` are not
    counted. Labels outside ``[0, num_classes)`` (other than the ignored one) raise a ValueError.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have one shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    pred, target = pred.long().reshape(-1), target.long().reshape(-1)
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for name, labels in (("pred", pred), ("target", target)):
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(
                f"{name} has labels in [{int(labels.min())}, {int(labels.max())}], expected [0, {num_classes})"
                + ("" if ignore_index is None else f" or the ignore index {ignore_index}")
            )
    return torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def class_iou(confusion: Tensor) -> Tensor:
    """Per-class IoU ``TP / (TP + FP + FN)`` from a :func:`confusion_matrix` (summed over a data set for a
    data-set score); ``nan`` for a class absent from both prediction and target."""
    confusion = confusion.double()
    tp = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))


def miou(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None) -> float:
    """Mean IoU of label tensors ``pred`` and ``target`` (e.g. ``logits.argmax(1)`` and the labels).

    Standard convention (as mmsegmentation's ``nanmean``): pixels whose target is ``ignore_index`` count for
    nothing, and a class absent from both the prediction and the target (IoU 0/0) is left out of the mean
    instead of counting as 0 or 1. ``nan`` when no pixel is left.
    """
    iou = class_iou(confusion_matrix(pred, target, num_classes, ignore_index))
    return float(iou.nanmean()) if bool((~iou.isnan()).any()) else math.nan


def pixel_accuracy(pred: Tensor, target: Tensor, ignore_index: int | None = None) -> float:
    """Fraction of the pixels whose target is not ``ignore_index`` where ``pred == target`` (``nan`` if none)."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have one shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    keep = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    total = int(keep.sum())
    return float(((pred.long() == target.long()) & keep).sum()) / total if total else math.nan


def depth_abs_rel(pred: Tensor, target: Tensor, valid: Tensor | None = None) -> float:
    """Mean ``|d - d*| / d*`` over the valid pixels (finite ``target > 0`` and ``valid``; ``nan`` if none)."""
    _check_depth_shapes(pred, target)
    pred, target = pred.detach(), target.detach()
    mask = _valid_depth(target, valid)
    if not bool(mask.any()):
        return math.nan
    return float(((pred[mask] - target[mask]).abs() / target[mask]).mean())
