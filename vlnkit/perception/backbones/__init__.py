"""Shared model backbones, one module per family, built by name with :func:`create_model`.

Vision backbones follow :class:`~vlnkit.perception.backbones.base.Backbone` (multi-scale feature maps, optional
logits; :func:`available_backbones` lists them):

- ``cswin_t``, ``cswin_nano``: CSWin Transformer, cross-shaped stripe attention with per-stripe LePE
  (:mod:`.cswin`);
- ``dependencyvit_t``, ``dependencyvit_nano``: DependencyViT, reversed attention with a head selector and a
  message controller, and its Lite form with message-controller pruning (:mod:`.dependencyvit`, a
  re-implementation of an unreleased model);
- ``overlock_xt``, ``overlock_nano``: OverLoCK, Base/Overview/Focus nets with ContMix and re-parameterised
  dilated convolutions (:mod:`.overlock`);
- ``pp_mobileseg_tiny``, ``pp_mobileseg_base: PP-MobileSeg, StrideFormer + AAM + segmentation head
  (:mod:`.pp_mobileseg`);
- ``sparsifiner_s``, ``sparsifiner_tiny``: Sparsifiner, a DeiT with learned sparse attention masks
  (:mod:`.sparsifiner`).

Other models:

- ``tiny_clip``: the small CLIP-style image-text model vlnkit trains on its synthetic renders
  (:mod:`.tiny_clip`).
"""

from vlnkit.perception.backbones import cswin as _cswin  # noqa: F401  (registers the families)
from vlnkit.perception.backbones import dependencyvit as _dependencyvit  # noqa: F401
from vlnkit.perception.backbones import overlock as _overlock  # noqa: F401
from vlnkit.perception.backbones import pp_mobileseg as _pp_mobileseg  # noqa: F401
from vlnkit.perception.backbones import sparsifiner as _sparsifiner  # noqa: F401
from vlnkit.perception.backbones import tiny_clip as _tiny_clip  # noqa: F401
from vlnkit.perception.backbones.base import Backbone, FeatureInfo
from vlnkit.perception.backbones.registry import available_backbones, available_models, create_model, register_model

__all__ = ["Backbone", "FeatureInfo", "available_backbones", "available_models", "create_model", "register_model"]
