"""R2R-style instructions for a path through a synthetic house, from what the path actually passes.

:func:`describe_path` walks the path (its corner points) and collects, in order: the rooms it goes
through (a point belongs to the room whose walls enclose it), the turns at its corners (the signed change
of heading; positive is a left turn in Habitat's frame), the turn needed at the start from the agent's
initial heading, and, per room, the nearest object the path passes within :data:`PASS_DISTANCE_M`
(with the side it is on). The goal object is named at the end. Sentences are drawn from a few templates
with the given random generator, so the same inputs give the same text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vlnkit.envs.continuous.geometry import wrap_angle, yaw_of_direction
from vlnkit.envs.synth.house_layout import HouseLayout, HouseObject

PASS_DISTANCE_M = 1.2
TURN_MIN_DEG = 30.0
TURN_AROUND_DEG = 135.0
SAMPLE_SPACING_M = 0.1
UNMENTIONED = frozenset({"rug"})
ENTRY_WINDOW_M = (0.75, 1.5)
"""A turn this far before and after a door counts as the turn into the room."""


@dataclass(frozen=True)
class RoomVisit:
    """A stretch of the path inside one room: arc-length interval ``[start, end)``."""

    room: int
    start: float
    end: float


def turn_word(angle: float) -> str | None:
    """``left``/``right``/``around`` for a heading change in radians (``None`` below 30 degrees)."""
    deg = math.degrees(abs(angle))
    if deg < TURN_MIN_DEG:
        return None
    if deg >= TURN_AROUND_DEG:
        return "around"
    return "left" if angle > 0 else "right"


def _densify(corners: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points every ~10 cm along the corner polyline, their arc length, and the arc length of each corner."""
    seg = np.linalg.norm(np.diff(corners[:, [0, 2]], axis=0), axis=1)
    corner_s = np.concatenate([[0.0], np.cumsum(seg)])
    pts, arc = [corners[:1, [0, 2]]], [np.zeros(1)]
    for i, length in enumerate(seg):
        n = max(1, int(math.ceil(length / SAMPLE_SPACING_M)))
        t = np.arange(1, n + 1) / n
        pts.append(corners[i, [0, 2]] + t[:, None] * (corners[i + 1, [0, 2]] - corners[i, [0, 2]]))
        arc.append(corner_s[i] + t * length)
    return np.concatenate(pts), np.concatenate(arc), corner_s


def room_visits(layout: HouseLayout, points: np.ndarray, arc: np.ndarray) -> list[RoomVisit]:
    """The rooms a densified path passes through, in order (points in no room, such as door openings,
    stay with the room before them)."""
    visits: list[RoomVisit] = []
    for (x, z), s in zip(points, arc):
        room = layout.room_at(float(x), float(z))
        if room < 0 or (visits and visits[-1].room == room):
            continue
        if visits:
            visits[-1] = RoomVisit(visits[-1].room, visits[-1].start, float(s))
        visits.append(RoomVisit(room, float(s), float(s)))
    if visits:
        visits[-1] = RoomVisit(visits[-1].room, visits[-1].start, float(arc[-1]) + 1e-9)
    return visits


def corner_turns(corners: np.ndarray, corner_s: np.ndarray) -> list[tuple[float, float]]:
    """``(arc length, signed heading change)`` at each interior corner, merging corners less than a
    metre apart into one turn."""
    yaws = [yaw_of_direction(*(corners[i + 1, [0, 2]] - corners[i, [0, 2]])) for i in range(len(corners) - 1)]
    turns: list[tuple[float, float]] = []
    for i in range(1, len(yaws)):
        change = wrap_angle(yaws[i] - yaws[i - 1])
        s = float(corner_s[i])
        if turns and s - turns[-1][0] < 1.0:
            turns[-1] = (turns[-1][0], wrap_angle(turns[-1][1] + change))
        else:
            turns.append((s, change))
    return turns


def _gap(obj: HouseObject, x: float, z: float) -> float:
    """Distance from ``(x, z)`` to the object's footprint."""
    x0, z0, x1, z1 = obj.footprint()
    return math.hypot(max(x0 - x, 0.0, x - x1), max(z0 - z, 0.0, z - z1))


def passed_object(layout: HouseLayout, visit: RoomVisit, points: np.ndarray, arc: np.ndarray,
                  exclude: int) -> tuple[HouseObject, str] | None:
    """The object of the visited room that the path comes closest to (within :data:`PASS_DISTANCE_M`),
    and the side it is on (``left``/``right``), or ``None``."""
    inside = (arc >= visit.start) & (arc < visit.end)
    idx = np.flatnonzero(inside)
    if len(idx) < 2:
        return None
    best: tuple[float, HouseObject, int] | None = None
    for obj in layout.objects:
        if obj.room != visit.room or obj.object_id == exclude or obj.category in UNMENTIONED:
            continue
        gaps = [_gap(obj, float(points[i, 0]), float(points[i, 1])) for i in idx]
        k = int(np.argmin(gaps))
        if gaps[k] <= PASS_DISTANCE_M and (best is None or gaps[k] < best[0]):
            best = (gaps[k], obj, int(idx[k]))
    if best is None:
        return None
    _, obj, i = best
    j = min(i + 1, len(points) - 1)
    direction = points[j] - points[max(j - 1, 0)]
    to_obj = np.array([obj.x, obj.z]) - points[i]
    side = wrap_angle(yaw_of_direction(*to_obj) - yaw_of_direction(*direction))
    return obj, "left" if side > 0 else "right"


_START_TURN = {"left": "Turn left", "right": "Turn right", "around": "Turn around"}
_GO = ("walk", "go", "head")
_EXIT = ("exit the {room}", "leave the {room}", "walk out of the {room}")
_STOP = ("Stop next to {obj}.", "Stop by {obj}.", "Wait near {obj}.", "Stop in front of {obj}.")


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def describe_path(layout: HouseLayout, corners: np.ndarray, start_yaw: float, goal: HouseObject,
                  rng: np.random.Generator) -> str:
    """An instruction for walking ``corners`` (``(K, 3)`` points, start first) from heading ``start_yaw``
    to stop at ``goal`` (see the module docstring)."""
    points, arc, corner_s = _densify(np.asarray(corners, dtype=np.float64))
    visits = room_visits(layout, points, arc)
    turns = corner_turns(np.asarray(corners, dtype=np.float64), corner_s)
    first_yaw = yaw_of_direction(*(corners[1][[0, 2]] - corners[0][[0, 2]])) if len(corners) > 1 else start_yaw
    sentences = []

    start_turn = turn_word(wrap_angle(first_yaw - start_yaw))
    head = visits[0] if visits else None
    opening = _START_TURN.get(start_turn or "", "")
    if head is not None and len(visits) > 1:
        clause = _pick(rng, _EXIT).format(room=layout.rooms[head.room].name)
        passed = passed_object(layout, head, points, arc, goal.object_id)
        text = f"{opening} and {clause}" if opening else clause[0].upper() + clause[1:]
        if passed is not None:
            text += f", passing {passed[0].describe()} on your {passed[1]}"
        sentences.append(text + ".")
    elif opening:
        sentences.append(f"{opening}.")

    for n, visit in enumerate(visits[1:], start=1):
        name = layout.rooms[visit.room].name
        last = n == len(visits) - 1
        turn = next((turn_word(a) for s, a in turns
                     if visit.start - ENTRY_WINDOW_M[0] <= s < min(visit.end, visit.start + ENTRY_WINDOW_M[1]) and turn_word(a)), None)
        passed = passed_object(layout, visit, points, arc, goal.object_id)
        if turn in ("left", "right"):
            text = f"Turn {turn} into the {name}"
        else:
            text = f"{_pick(rng, ('Enter', 'Walk into', 'Go into'))} the {name}"
        if passed is not None and not last:
            text += f" and {_pick(rng, _GO)} past {passed[0].describe()}"
        elif not last:
            text += f" and {_pick(rng, _GO)} {_pick(rng, ('through it', 'straight ahead', 'forward'))}"
        sentences.append(text + ".")
    sentences.append(_pick(rng, _STOP).format(obj=goal.describe()))
    return " ".join(sentences)
