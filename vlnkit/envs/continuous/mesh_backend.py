"""The built-in simulator backend: trimesh scenes, moderngl/EGL rendering, a navigable floor grid.

It implements :class:`~vlnkit.envs.continuous.backend.SimulatorBackend` with the pieces of this package:
:func:`~vlnkit.envs.continuous.scene.load_scene_geometry` (files), :class:`~vlnkit.envs.continuous.renderer.Renderer`
(RGB, depth and semantic images in one pass per image size) and
:func:`~vlnkit.envs.continuous.navmesh.build_navmesh` (floor, collisions, geodesics). Loaded scenes are
kept in a small LRU cache so that alternating between a few scenes does not rebuild them, and the
geodesic field of each goal set is computed once and cached.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlnkit.envs.continuous.backend import AgentSpec, AgentState, SensorSpec, StepOutcome, process_depth
from vlnkit.envs.continuous.geometry import yaw_from_quat
from vlnkit.envs.continuous.navmesh import GoalField, NavMesh, NavMeshSettings, build_navmesh
from vlnkit.envs.continuous.renderer import Renderer
from vlnkit.envs.continuous.scene import SceneGeometry, UpAxis, load_scene_geometry

DEFAULT_SENSORS: tuple[SensorSpec, ...] = (
    SensorSpec("rgb", "rgb", 224, 224, 90.0),
    SensorSpec("depth", "depth", 256, 256, 90.0),
)
"""R2R-CE's sensors: RGB 224x224 and depth 256x256, both HFOV 90, mounted 1.25 m up."""


@dataclass
class LoadedScene:
    """A scene ready to simulate: its geometry, navigable floor and renderer."""

    geometry: SceneGeometry
    navmesh: NavMesh
    renderer: Renderer


def load_scene(path: str | Path, agent: AgentSpec = AgentSpec(), settings: NavMeshSettings = NavMeshSettings(),
               up: UpAxis = "auto") -> LoadedScene:
    """Read a scene file and build its navigable floor (the renderer's context is created on first use)."""
    geometry = load_scene_geometry(path, up=up)
    return LoadedScene(geometry, build_navmesh(geometry.triangles, agent, settings), Renderer(geometry))


class MeshBackend:
    """Simulator backend on real scene geometry (see the module docstring).

    Args:
        sensors: the cameras rendered by :meth:`render`.
        agent: the agent's body (radius, height, climb, slope).
        navmesh: grid resolution of the navigable floor.
        up: the scene files' up axis (``auto``: z for ``.glb`` as habitat-sim assumes, else y).
        scene_cache: how many loaded scenes to keep.
        field_cache: how many goal sets' geodesic fields to keep per scene.
    """

    def __init__(self, sensors: Sequence[SensorSpec] = DEFAULT_SENSORS, agent: AgentSpec = AgentSpec(),
                 navmesh: NavMeshSettings = NavMeshSettings(), up: UpAxis = "auto", scene_cache: int = 4,
                 field_cache: int = 64) -> None:
        self.sensors = tuple(sensors)
        uuids = [s.uuid for s in self.sensors]
        if len(set(uuids)) != len(uuids):
            raise ValueError(f"sensor uuids must be unique, got {uuids}")
        self.agent = agent
        self.navmesh_settings = navmesh
        self.up = up
        self.scene_cache = scene_cache
        self.field_cache = field_cache
        self._scenes: OrderedDict[Path, LoadedScene] = OrderedDict()
        self._fields: OrderedDict[tuple, GoalField] = OrderedDict()
        self._scene: LoadedScene | None = None
        self._path: Path | None = None
        self._state = AgentState(np.zeros(3))
        self._cell = -1

    # ------------------------------------------------------------------ scenes
    def load_scene(self, path: str | Path) -> None:
        """Make ``path`` the current scene (from the cache when it was loaded recently)."""
        key = Path(path).resolve()
        hit = self._scenes.get(key)
        if hit is None:
            hit = load_scene(key, self.agent, self.navmesh_settings, self.up)
            self._scenes[key] = hit
            while len(self._scenes) > self.scene_cache:
                old_key, old = self._scenes.popitem(last=False)
                old.renderer.release()
                self._fields = OrderedDict((k, v) for k, v in self._fields.items() if k[0] != old_key)
        else:
            self._scenes.move_to_end(key)
        self._scene, self._path = hit, key

    def use_scene(self, scene: LoadedScene, key: str | Path) -> None:
        """Make an already built scene current under the cache key ``key`` (for generators that build
        scenes in memory)."""
        key = Path(key)
        self._scenes[key] = scene
        self._scenes.move_to_end(key)
        self._scene, self._path = scene, key

    @property
    def scene(self) -> LoadedScene:
        """The current scene."""
        if self._scene is None:
            raise RuntimeError("no scene loaded: call load_scene() first")
        return self._scene

    @property
    def navmesh(self) -> NavMesh:
        """The current scene's navigable floor."""
        return self.scene.navmesh

    def topdown_map(self, height: float) -> tuple[np.ndarray, np.ndarray]:
        """Navigable columns within a metre of ``height`` seen from above, and their extent."""
        return self.navmesh.occupancy(height)

    def semantic_labels(self) -> dict[int, str]:
        """Category name of each object id of the current scene."""
        return self.scene.geometry.labels()

    # ------------------------------------------------------------------ agent
    def set_agent_state(self, position: Sequence[float], rotation: Sequence[float]) -> None:
        """Place the agent; a position off the floor is snapped to the nearest floor cell."""
        nav = self.navmesh
        p = np.asarray(position, dtype=np.float64)
        cell = nav.locate(p)
        if cell < 0:
            cell = nav.snap_cell(p)
            p = nav.positions[cell].copy()
        else:
            p = np.array([p[0], nav.height[cell], p[2]])
        self._state = AgentState(p, np.asarray(rotation, dtype=np.float64).copy())
        self._cell = cell

    def get_agent_state(self) -> AgentState:
        """The agent's position and rotation (copies)."""
        return AgentState(self._state.position.copy(), self._state.rotation.copy())

    # ------------------------------------------------------------------ rendering
    def _eye(self, spec: SensorSpec) -> np.ndarray:
        return self._state.position + np.asarray(spec.position, dtype=np.float64)

    def render(self, pitch: float = 0.0) -> dict[str, np.ndarray]:
        """Every sensor's image from the agent's pose; sensors of the same size and field of view share
        one pass."""
        yaw = yaw_from_quat(self._state.rotation)
        out: dict[str, np.ndarray] = {}
        groups: OrderedDict[tuple, list[SensorSpec]] = OrderedDict()
        for spec in self.sensors:
            groups.setdefault((spec.width, spec.height, spec.hfov, spec.position), []).append(spec)
        for (width, height, hfov, _), specs in groups.items():
            frame = self.scene.renderer.render(self._eye(specs[0]), yaw, pitch, width, height, hfov)
            for spec in specs:
                if spec.kind == "rgb":
                    out[spec.uuid] = frame.rgb
                elif spec.kind == "depth":
                    out[spec.uuid] = process_depth(frame.depth, spec)
                else:
                    out[spec.uuid] = frame.semantic
        return out

    def render_panorama(self, views: int, width: int, height: int, hfov: float = 90.0,
                        pitch: float = 0.0) -> dict[str, np.ndarray]:
        """``views`` images around the agent from the first sensor's mount point, view ``k`` turned
        ``k * 360 / views`` degrees left of the agent's heading."""
        yaw = yaw_from_quat(self._state.rotation)
        yaws = [yaw + 2.0 * np.pi * k / views for k in range(views)]
        eye = self._eye(self.sensors[0]) if self.sensors else self._state.position + np.array([0.0, 1.25, 0.0])
        frame = self.scene.renderer.render_views(eye, yaws, pitch, width, height, hfov)
        return {"rgb": frame.rgb, "depth": frame.depth[..., None], "semantic": frame.semantic}

    # ------------------------------------------------------------------ motion
    def try_step(self, start: Sequence[float], end: Sequence[float], sliding: bool = True) -> StepOutcome:
        """Move along the floor from ``start`` toward ``end``; blocked when the agent moved less than
        asked (Habitat's criterion)."""
        nav = self.navmesh
        a = np.asarray(start, dtype=np.float64)
        b = np.asarray(end, dtype=np.float64)
        cell = nav.locate(a)
        if cell < 0:
            cell = nav.snap_cell(a)
        if sliding:
            point, _, _ = nav.slide(a, b, cell)
        else:
            point, _, _ = nav.walk(a, b, cell)
        asked = float(np.hypot(b[0] - a[0], b[2] - a[2]))
        moved = float(np.hypot(point[0] - a[0], point[2] - a[2]))
        return StepOutcome(point, moved < asked - 1e-5)

    # ------------------------------------------------------------------ geodesics
    def goal_field(self, goals: Sequence[Sequence[float]]) -> GoalField:
        """The geodesic field of a goal set in the current scene (computed once, then cached)."""
        g = np.asarray(goals, dtype=np.float64).reshape(-1, 3)
        key = (self._path, tuple(np.round(g, 4).ravel().tolist()))
        hit = self._fields.get(key)
        if hit is None:
            nav = self.navmesh
            cells = np.array([nav.snap_cell(p) for p in g], dtype=np.int64)
            on_floor = np.array([nav.locate(p) >= 0 for p in g])
            points = np.where(on_floor[:, None], g, nav.positions[cells])
            points[:, 1] = nav.height[cells]
            hit = nav.goal_field(cells, points)
            self._fields[key] = hit
            while len(self._fields) > self.field_cache:
                self._fields.popitem(last=False)
        else:
            self._fields.move_to_end(key)
        return hit

    def geodesic_distance(self, start: Sequence[float], goals: Sequence[Sequence[float]]) -> float:
        """Walking distance from ``start`` to the nearest goal (``inf`` when unreachable)."""
        nav = self.navmesh
        p = np.asarray(start, dtype=np.float64)
        cell = nav.locate(p)
        if cell < 0:
            cell = nav.snap_cell(p)
        return nav.distance_at(self.goal_field(goals), p, cell)

    def probe(self, start: Sequence[float], ends: np.ndarray, goals: Sequence[Sequence[float]]) -> np.ndarray:
        """Geodesic distance to the goals from the end of a non-sliding walk toward each of ``ends``."""
        nav = self.navmesh
        a = np.asarray(start, dtype=np.float64)
        cell = nav.locate(a)
        if cell < 0:
            cell = nav.snap_cell(a)
        points, cells = nav.walk_many(a, np.asarray(ends, dtype=np.float64), cell)
        return nav.distances_at(self.goal_field(goals), points, cells)

    def shortest_path(self, start: Sequence[float], goals: Sequence[Sequence[float]]) -> np.ndarray:
        """Corner points of a shortest path from ``start`` to the nearest goal (empty if unreachable)."""
        nav = self.navmesh
        p = np.asarray(start, dtype=np.float64)
        cell = nav.locate(p)
        if cell < 0:
            cell = nav.snap_cell(p)
        return nav.shortest_path(self.goal_field(goals), p, cell)

    # ------------------------------------------------------------------ sampling
    def sample_navigable_point(self, rng: np.random.Generator) -> np.ndarray:
        """A random cell centre of the largest connected floor area."""
        return self.navmesh.sample(rng)

    def is_navigable(self, point: Sequence[float]) -> bool:
        """Whether ``point`` lies on a navigable cell."""
        return self.navmesh.locate(np.asarray(point, dtype=np.float64)) >= 0

    def snap_point(self, point: Sequence[float]) -> np.ndarray:
        """The point itself on its floor cell, else the nearest cell centre however far (the environment
        refuses episode positions beyond its tolerance); NaNs for a point with no measurable nearest
        cell (not finite, or too far out), as habitat-sim answers a point it cannot snap."""
        nav = self.navmesh
        p = np.asarray(point, dtype=np.float64)
        cell = nav.locate(p)
        if cell >= 0:
            return np.array([p[0], nav.height[cell], p[2]])
        try:
            return nav.positions[nav.snap_cell(p)].copy()
        except ValueError:
            return np.full(3, np.nan)

    def close(self) -> None:
        """Release the renderers of all cached scenes."""
        for scene in self._scenes.values():
            scene.renderer.release()
        self._scenes.clear()
        self._fields.clear()
        self._scene = None
