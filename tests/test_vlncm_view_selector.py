"""The View Selector: the most similar view and its GO_TOWARD_POINT angle."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from vlnkit.agents.vlncm.view_selector import ViewSelector, view_angle
from vlnkit.perception.scorers import Views


class FixedScorer:
    """Scores view ``k`` with ``scores[k]`` for every phrase."""

    needs_labels = False

    def __init__(self, scores: Sequence[float]) -> None:
        self.scores = np.asarray(scores, dtype=np.float64)

    def similarity(self, views: Views, texts: Sequence[str]) -> np.ndarray:
        return np.tile(self.scores, (len(texts), 1))


@pytest.mark.parametrize("k, angle", [(0, 0.0), (3, math.pi / 2), (6, math.pi), (9, -math.pi / 2), (11, -math.pi / 6)])
def test_view_angles_turn_left_positive(k: int, angle: float) -> None:
    assert view_angle(k) == pytest.approx(angle)


def test_the_best_view_gives_the_direction_and_its_score() -> None:
    scores = np.zeros(12)
    scores[9] = 0.8
    scores[2] = 0.5
    selection = ViewSelector(FixedScorer(scores)).select(Views(np.zeros((12, 4, 4, 3), np.uint8)), "the sofa")
    assert selection.view == 9
    assert selection.angle == pytest.approx(-math.pi / 2)
    assert selection.score == pytest.approx(0.8)
    assert selection.scores.shape == (12,)
