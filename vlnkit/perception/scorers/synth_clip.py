"""The ``synth_clip`` scorer: the small CLIP-style model vlnkit trains on its synthetic renders
(:func:`vlnkit.perception.scorers.training.train_clip`, weights from ``vlnkit train clip``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vlnkit.perception.backbones.tiny_clip import load_tiny_clip
from vlnkit.perception.scorers.base import Views


class SynthClipScorer:
    """Cosine similarity of the trained ``tiny_clip`` model's text and image embeddings.

    Args:
        weights: the checkpoint ``vlnkit train clip`` wrote.
        device: torch device.
    """

    needs_labels = False

    def __init__(self, weights: str | Path, device: str = "cpu") -> None:
        self.model, self.vocab, _ = load_tiny_clip(weights, map_location=device)
        self._text_cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def similarity(self, views: Views, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), len(views))`` cosine similarities."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            self._text_cache.update(zip(missing, self.model.encode_text(self.vocab.encode(missing))))
        text = torch.stack([self._text_cache[t] for t in texts])
        image = self.model.encode_image(self.model.preprocess(views.images()))
        return (text @ image.T).cpu().numpy().astype(np.float64)
