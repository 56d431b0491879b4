"""Heads shared by every vision backbone of :mod:`vlnkit.perception.backbones`.

- :mod:`.dense`: an FPN neck over any backbone's ``feature_info``, semantic segmentation and depth heads,
  :class:`~.dense.DensePredictor` (backbone + head), and the dense losses and metrics (mIoU, pixel accuracy,
  confusion matrix, depth abs-rel).
- :mod:`.readout`: :class:`~.readout.CategoryReadout`, one learned query per landmark category attending over a
  panorama feature map (a Transformer-brain-encoder style decoder) and regressing the ``(sectors, categories)``
  closeness array of the street environments, with its attention maps kept for inspection, and
  :func:`~.readout.bearing_from_attention`; :class:`~.readout.ReadoutPredictor` (backbone + readout),
  :func:`~.readout.panorama_augment` (exact turns and mirrors of a panorama with its sector targets) and
  :func:`~.readout.readout_scores`.
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
from vlnkit.perception.heads.readout import (
    CategoryReadout,
    ReadoutPredictor,
    bearing_from_attention,
    panorama_augment,
    readout_scores,
    sine_position_encoding,
)

__all__ = [
    "CategoryReadout",
    "DensePredictor",
    "DepthHead",
    "FPNNeck",
    "ReadoutPredictor",
    "SegmentationHead",
    "bearing_from_attention",
    "class_iou",
    "confusion_matrix",
    "depth_abs_rel",
    "depth_loss",
    "miou",
    "panorama_augment",
    "pixel_accuracy",
    "readout_scores",
    "segmentation_loss",
    "sine_position_encoding",
]
