"""The shortest-path follower of VLN-CE: the next discrete action toward a goal along the geodesic.

It works with any :class:`~vlnkit.envs.continuous.backend.SimulatorBackend`, like habitat-sim's greedy
geodesic follower: from the agent's position it probes every heading the agent can reach by turning
(multiples of the turn angle), walks a quarter, a half and all of ``lookahead`` metres along each
without sliding, and scores the heading by the smallest geodesic distance to the goal among those end
points (one :meth:`SimulatorBackend.probe` call); the short walks keep headings that make progress
before a nearby corner. The best heading wins (ties go to the one needing fewer
turns): the follower turns toward it, or moves forward when it already faces it. It stops once the
geodesic distance is at most ``stop_distance`` (0.5 m, the radius within which the R2R-CE ground-truth
follower stops).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vlnkit.envs.continuous.backend import SimulatorBackend
from vlnkit.envs.continuous.geometry import forward_vector

STOP, FORWARD, LEFT, RIGHT = 0, 1, 2, 3
TIE_TOLERANCE_M = 1e-3
PROBE_FRACTIONS = np.array([0.25, 0.5, 1.0])
"""A heading scores the best geodesic distance among walks of these fractions of ``lookahead``."""


def follower_action(backend: SimulatorBackend, position: np.ndarray, yaw: float,
                    goals: Sequence[Sequence[float]], turn_angle_deg: float = 15.0,
                    stop_distance: float = 0.5, lookahead: float = 1.0) -> int:
    """The follower's next action (``STOP=0, FORWARD=1, LEFT=2, RIGHT=3``) for an agent at ``position``
    facing ``yaw`` (radians). Returns STOP when no goal is reachable."""
    here = backend.geodesic_distance(position, goals)
    if here <= stop_distance or not math.isfinite(here):
        return STOP
    turns = max(1, round(360.0 / turn_angle_deg))
    step = math.radians(turn_angle_deg)
    ks = sorted(range(-(turns // 2) + 1 - turns % 2, turns // 2 + 1), key=abs)
    ends = np.array([position + length * forward_vector(yaw + k * step) for k in ks for length in PROBE_FRACTIONS * lookahead])
    scores = backend.probe(position, ends, goals).reshape(len(ks), len(PROBE_FRACTIONS)).min(axis=1)
    best_score, best_k = math.inf, 0
    for k, score in zip(ks, scores.tolist()):
        if score < best_score - TIE_TOLERANCE_M:
            best_score, best_k = score, k
    if best_k == 0:
        return FORWARD
    return LEFT if best_k > 0 else RIGHT


def rollout_follower(backend: SimulatorBackend, position: Sequence[float], yaw: float,
                     goals: Sequence[Sequence[float]], forward_step: float = 0.25, turn_angle_deg: float = 15.0,
                     sliding: bool = True, stop_distance: float = 0.5,
                     max_steps: int = 500) -> tuple[list[np.ndarray], list[int]]:
    """Run the follower from ``position``/``yaw`` with the VLN-CE motion model until it stops or takes
    ``max_steps`` actions. Returns the ground-truth ``locations`` (the start, then the position after each
    forward step) and ``actions`` (ending with STOP when it stopped), as in ``{split}_gt.json.gz``."""
    pos = np.asarray(position, dtype=np.float64)
    locations = [pos.copy()]
    actions: list[int] = []
    turn = math.radians(turn_angle_deg)
    for _ in range(max_steps):
        action = follower_action(backend, pos, yaw, goals, turn_angle_deg, stop_distance)
        actions.append(action)
        if action == STOP:
            break
        if action == FORWARD:
            pos = backend.try_step(pos, pos + forward_step * forward_vector(yaw), sliding).position
            locations.append(pos.copy())
        else:
            yaw = yaw + (turn if action == LEFT else -turn)
    return locations, actions
