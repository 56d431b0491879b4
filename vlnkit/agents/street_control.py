"""Control on the street graph, shared by the street agents (modular, VLN-CM): the geometry of the links at
a node, and the discrete actions that turn the agent to face a chosen link.

Directions are classified relative to the heading the agent arrived with (its travel heading): straight
within :data:`STRAIGHT_MAX_DEG`, left or right between :data:`TURN_MIN_DEG` and :data:`TURN_MAX_DEG`, around
from :data:`AROUND_MIN_DEG`. Facing a link uses the navigator's rotation semantics: under ``touchdown``
LEFT/RIGHT rotate to the next outgoing link counter-clockwise/clockwise, so the agent picks the side that
needs fewer rotations; under ``velma`` a reversal uses TURN_AROUND when the action exists. The agent
observes its heading after every action, so control is closed-loop.
"""

from __future__ import annotations

import numpy as np

from vlnkit.envs.street.actions import StreetAction

STRAIGHT_MAX_DEG = 30.0
TURN_MIN_DEG = 45.0
TURN_MAX_DEG = 135.0
AROUND_MIN_DEG = 150.0
ALIGNED_DEG = 1.0

FORWARD = int(StreetAction.FORWARD)
LEFT = int(StreetAction.LEFT)
RIGHT = int(StreetAction.RIGHT)
TURN_AROUND = int(StreetAction.TURN_AROUND)
STOP = int(StreetAction.STOP)


def link_headings(links: np.ndarray) -> list[float]:
    """The outgoing link headings of an observation's ``links`` (the -1 padding removed)."""
    return [float(h) for h in np.asarray(links, dtype=np.float64).reshape(-1) if h >= 0.0]


def relative(heading: float, target: float) -> float:
    """Signed angle from ``heading`` to ``target`` in (-180, 180]; positive is clockwise (right)."""
    d = (float(target) - float(heading)) % 360.0
    return d - 360.0 if d > 180.0 else d


def is_junction(links: list[float]) -> bool:
    """An intersection: three or more outgoing links."""
    return len(links) >= 3


def exit_for(links: list[float], travel: float, direction: str) -> float | None:
    """The link that goes ``direction`` (``straight``, ``left``, ``right``, ``around``) for an agent that
    arrived heading ``travel``, the one closest to the ideal angle; ``None`` when no link does."""
    ideal = {"straight": 0.0, "left": -90.0, "right": 90.0, "around": 180.0}[direction]
    best, best_error = None, np.inf
    for h in links:
        rel = relative(travel, h)
        if direction == "straight":
            ok = abs(rel) <= STRAIGHT_MAX_DEG
        elif direction == "around":
            ok = abs(rel) >= AROUND_MIN_DEG
        else:
            ok = TURN_MIN_DEG <= abs(rel) <= TURN_MAX_DEG and (rel < 0) == (direction == "left")
        error = abs(relative(ideal, rel))
        if ok and error < best_error:
            best, best_error = h, error
    return best


def closest_link(links: list[float], heading: float) -> float | None:
    """The link closest to ``heading`` (``None`` without links)."""
    if not links:
        return None
    return min(links, key=lambda h: abs(relative(heading, h)))


def aligned(heading: float, target: float) -> bool:
    """Whether ``heading`` is ``target`` (to :data:`ALIGNED_DEG`)."""
    return abs(relative(heading, target)) <= ALIGNED_DEG


def rotate_towards(heading: float, target: float, links: list[float], semantics: str = "touchdown",
                   num_actions: int = 4) -> int:
    """The rotation action that brings ``heading`` closer to the link ``target``."""
    rel = relative(heading, target)
    if semantics == "velma":
        if abs(rel) >= AROUND_MIN_DEG and num_actions > TURN_AROUND:
            return TURN_AROUND
        return LEFT if rel < 0 else RIGHT
    others = [h for h in links if not aligned(h, heading)]
    if not others:
        return FORWARD
    ccw = sorted(others, key=lambda h: (heading - h) % 360.0)
    cw = sorted(others, key=lambda h: (h - heading) % 360.0)
    left_turns = next((i for i, h in enumerate(ccw) if aligned(h, target)), len(ccw)) + 1
    right_turns = next((i for i, h in enumerate(cw) if aligned(h, target)), len(cw)) + 1
    return LEFT if left_turns <= right_turns else RIGHT


def bearing(source: np.ndarray, target: np.ndarray) -> float:
    """Compass bearing in degrees from ``source`` to ``target`` (east, north metres)."""
    d = np.asarray(target, dtype=np.float64)[:2] - np.asarray(source, dtype=np.float64)[:2]
    return float(np.degrees(np.arctan2(d[0], d[1])) % 360.0)
