"""The contract every vision backbone of :mod:`vlnkit.perception.backbones` follows.

A backbone turns images ``(B, 3, H, W)`` into a list of feature maps ``(B, C_i, H / s_i, W / s_i)``, one per
entry of :attr:`Backbone.feature_info` (stride ``s_i`` and channels ``C_i``), and, when it was built with
``num_classes > 0``, into class logits. Dense heads (segmentation, depth, category readouts) and agents only use
this contract, so any registered backbone can feed them::

    model = create_model("cswin_nano", num_classes=0)
    maps = model.forward_features(images)          # strides 4/8/16/32
    [f.channels for f in model.feature_info]

``forward`` returns the logits when the model has a classifier and the feature maps otherwise. A segmentation
network (``dense_task = "seg"``, e.g. PP-MobileSeg with its AAM and head) returns dense logits
``(B, num_classes, H, W)`` at the input size instead of one row per image.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass(frozen=True)
class FeatureInfo:
    """One feature map of a backbone: its stride against the input and its channel count."""

    stride: int
    channels: int


class Backbone(nn.Module):
    """Base class of the vision backbones: multi-scale feature maps and optional class logits.

    Subclasses set :attr:`feature_info`, :attr:`num_classes` and :attr:`default_input_size` (the input
    ``(H, W)`` of the published configuration, used by tests and benchmarks) and implement
    :meth:`forward_features` and, for classifiers, :meth:`forward_head`.
    """

    feature_info: list[FeatureInfo]
    num_classes: int = 0
    default_input_size: tuple[int, int] = (224, 224)
    dense_task: str | None = None
    """``"seg"`` for a model whose own head is a segmentation head (its logits are per pixel)."""

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Feature maps ``(B, C_i, H_i, W_i)``, one per :attr:`feature_info` entry, finest first."""
        raise NotImplementedError

    def forward_head(self, features: list[Tensor]) -> Tensor:
        """Class logits ``(B, num_classes)`` (per-pixel logits for a ``dense_task`` model) from the output of
        :meth:`forward_features`."""
        raise NotImplementedError(f"{type(self).__name__} has no classifier (num_classes=0)")

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        """Logits when the model has a classifier, else the feature maps."""
        features = self.forward_features(x)
        return self.forward_head(features) if self.num_classes > 0 else features
