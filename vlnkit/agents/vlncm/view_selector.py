"""View Selector (VS): the panorama view most similar to the current attention spot gives the direction.

The panorama has ``N`` views (12 in VLN-CE's panorama observation) ``360 / N`` degrees apart, view ``k``
turned ``k * 360 / N`` degrees to the agent's left; the selected view's angle (radians, left positive,
in ``(-pi, pi]``) is what ``GO_TOWARD_POINT`` takes. Similarities come from any
:class:`~vlnkit.perception.scorers.ImageTextScorer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vlnkit.envs.continuous.geometry import wrap_angle
from vlnkit.perception.scorers import ImageTextScorer, Views


def view_angle(k: int, views: int = 12) -> float:
    """The heading change (radians, left positive, in ``(-pi, pi]``) that faces view ``k`` of ``views``."""
    return wrap_angle(2.0 * math.pi * k / views)


@dataclass(frozen=True)
class Selection:
    """The chosen view, its angle and similarity, and every view's similarity."""

    view: int
    angle: float
    score: float
    scores: np.ndarray


class ViewSelector:
    """Picks the view of the highest similarity to a spot (ties: the lowest view index, i.e. ahead first)."""

    def __init__(self, scorer: ImageTextScorer) -> None:
        self.scorer = scorer

    def select(self, views: Views, spot: str) -> Selection:
        """The view of ``views`` most similar to ``spot``."""
        scores = np.asarray(self.scorer.similarity(views, [spot]), dtype=np.float64)[0]
        k = int(np.argmax(scores))
        return Selection(k, view_angle(k, len(views)), float(scores[k]), scores)
