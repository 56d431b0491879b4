"""Perception for the modular agent: which landmarks are visible in which direction, from panorama features.

The street environments' semantic panorama (:class:`vlnkit.envs.street.panorama.SceneFeatureSource`) is an
``(S, C)`` array: for each of ``S`` sectors around the agent (sector 0 facing its heading, clockwise) and
each of ``C`` landmark categories, the closeness ``1 - distance / radius`` of the nearest landmark of that
category (0 when there is none within the radius). :class:`Perception` turns it into landmarks with a side
(``ahead``, ``right``, ``behind``, ``left``), a closeness and an estimated distance, and into words ("on
your left: bank, bench").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlnkit.agents.memory_support import heading_shift

SIDES = ("ahead", "right", "behind", "left")
SIDE_RANGES = {"ahead": (330.0, 30.0), "right": (30.0, 150.0), "behind": (150.0, 210.0), "left": (210.0, 330.0)}
"""Relative bearings (clockwise from the heading, degrees) of each side, as the instructions use them."""


def side_of(bearing: float) -> str:
    """The side a relative bearing falls on."""
    b = float(bearing) % 360.0
    for side, (lo, hi) in SIDE_RANGES.items():
        if (lo <= b < hi) if lo < hi else (b >= lo or b < hi):
            return side
    return "ahead"


def sector_bearings(sectors: int, heading: float | None = None) -> np.ndarray:
    """Relative bearings of the centres of an egocentric panorama's sectors.

    The panorama source rolls north-aligned sectors to the nearest sector of the heading, so sector ``k``
    is centred ``(k + 0.5) * 360 / S`` degrees clockwise from the heading rounded to a sector; with the
    exact ``heading`` the rounding is undone.
    """
    width = 360.0 / sectors
    centres = (np.arange(sectors) + 0.5) * width
    if heading is None:
        return centres
    rounded = heading_shift(heading, sectors) * width
    return (centres + rounded - float(heading)) % 360.0


@dataclass(frozen=True)
class Sighting:
    """A landmark category seen in one sector."""

    category: str
    index: int
    sector: int
    side: str
    closeness: float
    distance_m: float


class Perception:
    """Landmarks per direction from ``(sectors, categories)`` closeness features.

    ``categories`` names the feature columns; ``radius`` is the distance at which closeness reaches 0;
    ``visible`` the closeness from which a landmark counts as seen. Methods take the agent's ``heading``
    to place sectors exactly (see :func:`sector_bearings`); without it sectors are taken as centred on
    their nominal bearings (views decoded from memory).
    """

    def __init__(self, categories: list[str], sectors: int = 8, radius: float = 30.0, visible: float = 0.2) -> None:
        self.categories = list(categories)
        self.sectors = int(sectors)
        self.radius = float(radius)
        self.visible = float(visible)

    def view(self, panorama: np.ndarray) -> np.ndarray:
        """The panorama as a ``(sectors, categories)`` float array (raises on another shape)."""
        view = np.asarray(panorama, dtype=np.float32)
        if view.shape != (self.sectors, len(self.categories)):
            raise ValueError(
                f"expected panorama features of shape ({self.sectors}, {len(self.categories)}), got {view.shape}"
            )
        return view

    def sides(self, heading: float | None = None) -> list[str]:
        """The side of each sector."""
        return [side_of(b) for b in sector_bearings(self.sectors, heading)]

    def landmarks(self, panorama: np.ndarray, heading: float | None = None) -> list[Sighting]:
        """Every visible (sector, category), closest first."""
        view = self.view(panorama)
        sides = self.sides(heading)
        sectors, columns = np.nonzero(view >= self.visible)
        out = [
            Sighting(self.categories[c], int(c), int(k), sides[k], float(view[k, c]),
                     (1.0 - float(view[k, c])) * self.radius)
            for k, c in zip(sectors.tolist(), columns.tolist())
        ]
        return sorted(out, key=lambda s: (-s.closeness, s.sector, s.index))

    def describe(self, panorama: np.ndarray, heading: float | None = None) -> dict[str, list[str]]:
        """Category names visible on each side, closest first, each named once per side."""
        words: dict[str, list[str]] = {side: [] for side in SIDES}
        for s in self.landmarks(panorama, heading):
            if s.category not in words[s.side]:
                words[s.side].append(s.category)
        return words

    def closeness(self, panorama: np.ndarray, category: int, side: str | None = None,
                  heading: float | None = None) -> float:
        """Closeness of the nearest landmark of ``category`` on ``side`` (``None``: anywhere)."""
        view = self.view(panorama)
        if side is None:
            return float(view[:, category].max())
        rows = [k for k, s in enumerate(self.sides(heading)) if s == side]
        return float(max((view[k, category] for k in rows), default=0.0))

    def closeness_around(self, panorama: np.ndarray, category: int, bearing: float, tolerance: float,
                         heading: float | None = None) -> float:
        """Closeness of the nearest landmark of ``category`` in sectors centred within ``tolerance`` degrees
        of the relative ``bearing`` (90: abeam on the right)."""
        view = self.view(panorama)
        centres = sector_bearings(self.sectors, heading)
        off = np.abs((centres - float(bearing) + 180.0) % 360.0 - 180.0)
        rows = np.flatnonzero(off <= tolerance)
        return float(view[rows, category].max()) if len(rows) else 0.0

    def beside(self, panorama: np.ndarray, category: int, heading: float | None = None) -> tuple[str | None, float]:
        """The side (left or right) where ``category`` is closest, and its closeness (``None``, 0 if absent)."""
        left = self.closeness(panorama, category, "left", heading)
        right = self.closeness(panorama, category, "right", heading)
        if max(left, right) <= 0.0:
            return None, 0.0
        return ("left", left) if left > right else ("right", right)

    def facing(self, panorama: np.ndarray, heading: float, target: float) -> np.ndarray:
        """The panorama as the source would give it facing ``target`` degrees instead of ``heading``."""
        view = self.view(panorama)
        shift = heading_shift(target, self.sectors) - heading_shift(heading, self.sectors)
        return np.roll(view, -shift, axis=0)
