"""Heads shared by every vision backbone of :mod:`vlnkit.perception.backbones`.

- :mod:`.dense`: an FPN neck over any backbone's ``feature_info``, semantic segmentation and depth heads,
  :class:`~.dense.DensePredictor` (backbone + head), and the dense losses and metrics (mIoU, pixel accuracy,
  confusion matrix, depth abs-rel).
- :mod:`.readout`: :class:`~.readout.CategoryReadout`, one learned query per landmark category attending over a
  panorama feature map (a Transformer-brain-encoder style decoder) and regressing the ``(sectors, categories)``
  closeness array of the street environments, with its attention maps kept for inspection, and
  :func:`~.readout.bearing_from_attention`.
"""

from vlnkit.perception.heads.dense import (
    DensePredictor,
    DepthHead,
    FPNNeck,
    SegmentationHead,
    class_iou,
    confusion_matrix,
    depth_abs_rel,
    depth_loss,
    miou,
    pixel_accuracy,
    segmentation_loss,
)
from vlnkit.perception.heads.readout import CategoryReadout, bearing_from_attention, sine_position_encoding

__all__ = [
    "CategoryReadout",
    "DensePredictor",
    "DepthHead",
    "FPNNeck",
    "SegmentationHead",
    "bearing_from_attention",
    "class_iou",
    "confusion_matrix",
    "depth_abs_rel",
    "depth_loss",
    "miou",
    "pixel_accuracy",
    "segmentation_loss",
    "sine_position_encoding",
]
