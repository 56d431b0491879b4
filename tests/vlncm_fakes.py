"""Stand-ins for the VLN-CM agents' tests: a spot predictor with fixed spots and a scorer with scripted
view scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vlnkit.perception.scorers import Views


class ListSpots:
    """Predicts the same spots for every instruction."""

    def __init__(self, spots: Sequence[str]) -> None:
        self.spots = list(spots)

    def predict(self, instruction: str) -> list[str]:
        return list(self.spots)


class ScriptedScorer:
    """Per spot, a list of 12-view score rows handed out one call at a time (the last one repeats); the
    views of every call are kept in ``seen``."""

    needs_labels = False

    def __init__(self, rows: dict[str, list[Sequence[float]]]) -> None:
        self.rows = {k: [np.asarray(r, dtype=np.float64) for r in v] for k, v in rows.items()}
        self.calls: dict[str, int] = {}
        self.seen: list[Views] = []

    def similarity(self, views: Views, texts: Sequence[str]) -> np.ndarray:
        self.seen.append(views)
        out = []
        for text in texts:
            i = self.calls.get(text, 0)
            self.calls[text] = i + 1
            rows = self.rows[text]
            out.append(rows[min(i, len(rows) - 1)])
        return np.stack(out)


def peak(view: int, value: float = 1.0, rest: float = 0.1) -> list[float]:
    """12 view scores: ``value`` at ``view``, ``rest`` elsewhere."""
    row = [rest] * 12
    row[view] = value
    return row
