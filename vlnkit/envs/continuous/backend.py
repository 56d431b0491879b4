"""The simulator backend protocol of continuous navigation, and the settings it is built from.

A backend owns one scene at a time and one agent in it. It answers everything the VLN-CE environment
needs: agent state, rendered sensors, motion with collisions, geodesic distances and paths, and
navigable points. Two backends implement it: :class:`~vlnkit.envs.continuous.mesh_backend.MeshBackend`
(built in: trimesh + moderngl on EGL + a navigable grid) and
:class:`~vlnkit.envs.continuous.habitat_backend.HabitatSimBackend` (used when ``habitat_sim`` imports).

Units, axes and rotations are Habitat's (see :mod:`vlnkit.envs.continuous.geometry`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

SensorKind = Literal["rgb", "depth", "semantic"]


@dataclass(frozen=True)
class AgentSpec:
    """The agent's body as the navigable floor sees it (Habitat's VLN-CE values by default).

    Attributes:
        radius: cylinder radius in metres; the floor is eroded by it.
        height: cylinder height in metres; places with less headroom are not navigable.
        max_climb: the highest step the agent walks up or down, in metres.
        max_slope_deg: the steepest floor that counts as walkable, in degrees.
    """

    radius: float = 0.1
    height: float = 1.5
    max_climb: float = 0.2
    max_slope_deg: float = 45.0


@dataclass(frozen=True)
class SensorSpec:
    """One pinhole camera mounted on the agent.

    Attributes:
        uuid: the observation key (``rgb``, ``depth``, ``semantic``).
        kind: what it measures: colour, depth or per-pixel object ids.
        width, height: image size in pixels.
        hfov: horizontal field of view in degrees.
        position: mount point in the agent frame (metres; Habitat's default ``[0, 1.25, 0]``).
        min_depth, max_depth, normalize_depth: depth clipping and scaling to ``[0, 1]`` as Habitat's
            depth sensor does (pixels that see no geometry read 0).
    """

    uuid: str
    kind: SensorKind
    width: int = 224
    height: int = 224
    hfov: float = 90.0
    position: tuple[float, float, float] = (0.0, 1.25, 0.0)
    min_depth: float = 0.0
    max_depth: float = 10.0
    normalize_depth: bool = True

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return (self.width, self.height)


def process_depth(depth: np.ndarray, spec: SensorSpec) -> np.ndarray:
    """Raw metric depth ``(H, W)`` (0 where nothing was hit) to the sensor's output ``(H, W, 1)`` float32:
    clipped to ``[min_depth, max_depth]`` and, with ``normalize_depth``, scaled to ``[0, 1]``; pixels that
    hit nothing stay 0."""
    hit = depth > 0.0
    out = np.clip(depth, spec.min_depth, spec.max_depth)
    if spec.normalize_depth:
        out = (out - spec.min_depth) / (spec.max_depth - spec.min_depth)
    out = np.where(hit, out, 0.0).astype(np.float32)
    return out[..., None]


@dataclass
class AgentState:
    """Where the agent stands (``position`` on the floor, metres) and its ``rotation`` ``[x, y, z, w]``."""

    position: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 0.0, 1.0]))


@dataclass(frozen=True)
class StepOutcome:
    """Result of a motion attempt: the position reached and whether the motion was blocked (the agent
    moved less than it was asked to, Habitat's collision criterion)."""

    position: np.ndarray
    collided: bool


@runtime_checkable
class SimulatorBackend(Protocol):
    """What the VLN-CE environment needs from a simulator (one scene, one agent at a time)."""

    agent: AgentSpec
    sensors: tuple[SensorSpec, ...]

    def load_scene(self, path: str | Path) -> None:
        """Make ``path`` (a ``.glb``/``.gltf``/``.ply``/``.obj`` scene) the current scene; cheap when it
        is already loaded."""

    def set_agent_state(self, position: Sequence[float], rotation: Sequence[float]) -> None:
        """Place the agent at ``position`` with ``rotation`` ``[x, y, z, w]``."""

    def get_agent_state(self) -> AgentState:
        """The agent's state (copies)."""

    def render(self, pitch: float = 0.0) -> dict[str, np.ndarray]:
        """Every configured sensor's image from the agent's pose, the cameras tilted by ``pitch``
        radians (up positive); fresh arrays keyed by sensor uuid."""

    def render_panorama(self, views: int, width: int, height: int, hfov: float = 90.0,
                        pitch: float = 0.0) -> dict[str, np.ndarray]:
        """``views`` images around the agent, view ``k`` turned ``k * 360 / views`` degrees to the
        agent's left: ``rgb (views, H, W, 3) uint8``, ``depth (views, H, W, 1) float32`` (metres, 0 where
        nothing was hit) and ``semantic (views, H, W) uint32``."""

    def try_step(self, start: Sequence[float], end: Sequence[float], sliding: bool = True) -> StepOutcome:
        """Move from ``start`` toward ``end`` along the floor: stop at an obstacle, or slide along it
        when ``sliding``."""

    def geodesic_distance(self, start: Sequence[float], goals: Sequence[Sequence[float]]) -> float:
        """Shortest walking distance from ``start`` to the nearest of ``goals`` (``inf`` when none is
        reachable)."""

    def probe(self, start: Sequence[float], ends: np.ndarray, goals: Sequence[Sequence[float]]) -> np.ndarray:
        """For each of ``ends`` ``(K, 3)``: walk from ``start`` toward it without sliding and return the
        geodesic distance to the nearest goal from where the walk stopped (what the shortest-path
        follower scores headings by; one call for all headings)."""

    def shortest_path(self, start: Sequence[float], goals: Sequence[Sequence[float]]) -> np.ndarray:
        """Corner points ``(K, 3)`` of a shortest walkable path from ``start`` to the nearest goal
        (empty when none is reachable)."""

    def sample_navigable_point(self, rng: np.random.Generator) -> np.ndarray:
        """A random navigable point of the scene's largest connected floor area."""

    def is_navigable(self, point: Sequence[float]) -> bool:
        """Whether the agent can stand at ``point``."""

    def snap_point(self, point: Sequence[float]) -> np.ndarray:
        """The navigable point nearest to ``point``."""

    def topdown_map(self, height: float) -> tuple[np.ndarray, np.ndarray]:
        """The navigable floor near ``height`` seen from above: a bool image (row ``k`` at increasing
        ``z``, column ``i`` at increasing ``x``) and its extent ``(x0, z0, x1, z1)`` in metres."""

    def semantic_labels(self) -> dict[int, str]:
        """Category name of each object id that semantic images can hold (0: no object)."""

    def close(self) -> None:
        """Release rendering resources."""
