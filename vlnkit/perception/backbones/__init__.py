"""Shared model backbones, one module per family, built by name with :func:`create_model`.

- ``tiny_clip``: the small CLIP-style image-text model vlnkit trains on its synthetic renders
  (:mod:`.tiny_clip`).
"""

from vlnkit.perception.backbones import tiny_clip as _tiny_clip  # noqa: F401  (registers tiny_clip)
from vlnkit.perception.backbones.registry import available_models, create_model, register_model

__all__ = ["available_models", "create_model", "register_model"]
