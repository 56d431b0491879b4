"""A thin :class:`~vlnkit.envs.continuous.backend.SimulatorBackend` over habitat-sim.

Used when ``habitat_sim`` imports (``backend="habitat"`` in ``gymnasium.make("vlnkit/VLNCE-v0", ...)``
or ``task.backend=habitat`` in a run config); habitat-sim has no wheel for Python 3.11 on PyPI, so
install it from conda (``conda install habitat-sim headless -c conda-forge -c aihabitat``) in an
environment where vlnkit is installed too. The scene's navmesh is habitat-sim's own (the ``.navmesh`` file
beside the scene when there is one, else recomputed with the agent's radius, height and climb); motion
uses ``pathfinder.try_step`` (sliding) or ``try_step_no_sliding``, geodesics
``MultiGoalShortestPath``, and images habitat-sim's sensors. Panorama views come from extra sensors added
on first use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlnkit.envs.continuous.backend import AgentSpec, AgentState, SensorSpec, StepOutcome, process_depth
from vlnkit.envs.continuous.geometry import quat_from_yaw, yaw_from_quat

TOPDOWN_METRES_PER_PIXEL = 0.05


def habitat_available() -> bool:
    """Whether ``habitat_sim`` can be imported here."""
    try:
        import habitat_sim  # noqa: F401
    except ImportError:
        return False
    return True


class HabitatSimBackend:
    """habitat-sim behind the backend protocol (see the module docstring).

    Args:
        sensors: the cameras rendered by :meth:`render`.
        agent: the agent's body, used when the navmesh is recomputed.
        gpu_device_id: the GPU habitat-sim renders on.
    """

    def __init__(self, sensors: Sequence[SensorSpec], agent: AgentSpec = AgentSpec(), gpu_device_id: int = 0) -> None:
        import habitat_sim

        self._hs = habitat_sim
        self.sensors = tuple(sensors)
        self.agent = agent
        self.gpu_device_id = gpu_device_id
        self._sim: Any = None
        self._path: Path | None = None
        self._panorama: tuple[int, int, float] | None = None

    # ------------------------------------------------------------------ configuration
    def _sensor_spec(self, uuid: str, kind: str, width: int, height: int, hfov: float,
                     position: Sequence[float]) -> Any:
        hs = self._hs
        spec = hs.CameraSensorSpec()
        spec.uuid = uuid
        spec.sensor_type = {"rgb": hs.SensorType.COLOR, "depth": hs.SensorType.DEPTH,
                            "semantic": hs.SensorType.SEMANTIC}[kind]
        spec.resolution = [int(height), int(width)]
        spec.position = list(position)
        spec.hfov = float(hfov)
        return spec

    def _configuration(self, path: Path) -> Any:
        hs = self._hs
        sim_cfg = hs.SimulatorConfiguration()
        sim_cfg.scene_id = str(path)
        sim_cfg.gpu_device_id = self.gpu_device_id
        sim_cfg.allow_sliding = True
        specs = [self._sensor_spec(s.uuid, s.kind, s.width, s.height, s.hfov, s.position) for s in self.sensors]
        if self._panorama is not None:
            w, h, hfov = self._panorama
            mount = self.sensors[0].position if self.sensors else (0.0, 1.25, 0.0)
            specs += [self._sensor_spec(f"_pano_{k}", k, w, h, hfov, mount) for k in ("rgb", "depth", "semantic")]
        agent_cfg = hs.agent.AgentConfiguration(height=self.agent.height, radius=self.agent.radius,
                                                sensor_specifications=specs)
        return hs.Configuration(sim_cfg, [agent_cfg])

    def _configure(self, path: Path) -> None:
        cfg = self._configuration(path)
        if self._sim is None:
            self._sim = self._hs.Simulator(cfg)
        else:
            self._sim.reconfigure(cfg)
        pathfinder = self._sim.pathfinder
        if not pathfinder.is_loaded:
            settings = self._hs.NavMeshSettings()
            settings.set_defaults()
            settings.agent_radius = self.agent.radius
            settings.agent_height = self.agent.height
            settings.agent_max_climb = self.agent.max_climb
            settings.agent_max_slope = self.agent.max_slope_deg
            self._sim.recompute_navmesh(pathfinder, settings)
        self._path = path

    def load_scene(self, path: str | Path) -> None:
        """Make ``path`` the current scene (reconfiguring the simulator when it changes)."""
        path = Path(path).resolve()
        if path != self._path:
            self._configure(path)

    @property
    def _agent(self) -> Any:
        if self._sim is None:
            raise RuntimeError("no scene loaded: call load_scene() first")
        return self._sim.get_agent(0)

    # ------------------------------------------------------------------ agent
    def set_agent_state(self, position: Sequence[float], rotation: Sequence[float]) -> None:
        """Place the agent (rotation ``[x, y, z, w]``)."""
        from habitat_sim.utils.common import quat_from_coeffs

        state = self._hs.AgentState()
        state.position = np.asarray(position, dtype=np.float32)
        state.rotation = quat_from_coeffs(np.asarray(rotation, dtype=np.float64))
        self._agent.set_state(state, reset_sensors=True)

    def get_agent_state(self) -> AgentState:
        """The agent's position and rotation ``[x, y, z, w]``."""
        from habitat_sim.utils.common import quat_to_coeffs

        state = self._agent.get_state()
        return AgentState(np.asarray(state.position, dtype=np.float64), np.asarray(quat_to_coeffs(state.rotation), dtype=np.float64))

    # ------------------------------------------------------------------ rendering
    def _tilt(self, uuids: Sequence[str], pitch: float) -> None:
        import magnum as mn

        sensors = self._agent._sensors
        for uuid in uuids:
            sensors[uuid].node.rotation = mn.Quaternion.rotation(mn.Rad(pitch), mn.Vector3.x_axis())

    def render(self, pitch: float = 0.0) -> dict[str, np.ndarray]:
        """Every configured sensor's image, processed like the mesh backend's."""
        self._tilt([s.uuid for s in self.sensors], pitch)
        raw = self._sim.get_sensor_observations()
        out: dict[str, np.ndarray] = {}
        for spec in self.sensors:
            image = np.asarray(raw[spec.uuid])
            if spec.kind == "rgb":
                out[spec.uuid] = np.ascontiguousarray(image[..., :3])
            elif spec.kind == "depth":
                out[spec.uuid] = process_depth(image.astype(np.float32), spec)
            else:
                out[spec.uuid] = image.astype(np.uint32)
        return out

    def render_panorama(self, views: int, width: int, height: int, hfov: float = 90.0,
                        pitch: float = 0.0) -> dict[str, np.ndarray]:
        """``views`` images turning left from the agent's heading, from sensors added on first use."""
        if self._panorama != (width, height, hfov):
            self._panorama = (width, height, hfov)
            state = self.get_agent_state()
            assert self._path is not None
            self._configure(self._path)
            self.set_agent_state(state.position, state.rotation)
        state = self.get_agent_state()
        yaw = yaw_from_quat(state.rotation)
        rgb, depth, sem = [], [], []
        uuids = ["_pano_rgb", "_pano_depth", "_pano_semantic"]
        for k in range(views):
            self.set_agent_state(state.position, quat_from_yaw(yaw + 2.0 * math.pi * k / views))
            self._tilt(uuids, pitch)
            raw = self._sim.get_sensor_observations()
            rgb.append(np.asarray(raw["_pano_rgb"])[..., :3])
            depth.append(np.asarray(raw["_pano_depth"], dtype=np.float32)[..., None])
            sem.append(np.asarray(raw["_pano_semantic"]).astype(np.uint32))
        self.set_agent_state(state.position, state.rotation)
        return {"rgb": np.stack(rgb), "depth": np.stack(depth), "semantic": np.stack(sem)}

    # ------------------------------------------------------------------ motion and geodesics
    def try_step(self, start: Sequence[float], end: Sequence[float], sliding: bool = True) -> StepOutcome:
        """habitat-sim's ``try_step`` (sliding) or ``try_step_no_sliding``."""
        pathfinder = self._sim.pathfinder
        a = np.asarray(start, dtype=np.float32)
        b = np.asarray(end, dtype=np.float32)
        reached = pathfinder.try_step(a, b) if sliding else pathfinder.try_step_no_sliding(a, b)
        reached = np.asarray(reached, dtype=np.float64)
        asked = float(np.hypot(b[0] - a[0], b[2] - a[2]))
        moved = float(np.hypot(reached[0] - a[0], reached[2] - a[2]))
        return StepOutcome(reached, moved < asked - 1e-5)

    def _path_to(self, start: Sequence[float], goals: Sequence[Sequence[float]]) -> Any:
        path = self._hs.MultiGoalShortestPath()
        path.requested_start = np.asarray(start, dtype=np.float32)
        path.requested_ends = [np.asarray(g, dtype=np.float32) for g in goals]
        found = self._sim.pathfinder.find_path(path)
        return path if found else None

    def geodesic_distance(self, start: Sequence[float], goals: Sequence[Sequence[float]]) -> float:
        """habitat-sim's geodesic distance to the nearest goal (``inf`` when unreachable)."""
        path = self._path_to(start, goals)
        return math.inf if path is None else float(path.geodesic_distance)

    def probe(self, start: Sequence[float], ends: np.ndarray, goals: Sequence[Sequence[float]]) -> np.ndarray:
        """Geodesic distance from the end of a non-sliding step toward each of ``ends``."""
        return np.array([self.geodesic_distance(self.try_step(start, end, sliding=False).position, goals) for end in ends])

    def shortest_path(self, start: Sequence[float], goals: Sequence[Sequence[float]]) -> np.ndarray:
        """Corner points of habitat-sim's shortest path (empty when unreachable)."""
        path = self._path_to(start, goals)
        return np.zeros((0, 3)) if path is None else np.asarray(path.points, dtype=np.float64).reshape(-1, 3)

    def sample_navigable_point(self, rng: np.random.Generator) -> np.ndarray:
        """A random navigable point (habitat-sim's sampler, seeded from ``rng``)."""
        pathfinder = self._sim.pathfinder
        pathfinder.seed(int(rng.integers(2**31 - 1)))
        return np.asarray(pathfinder.get_random_navigable_point(), dtype=np.float64)

    def is_navigable(self, point: Sequence[float]) -> bool:
        """habitat-sim's ``is_navigable``."""
        return bool(self._sim.pathfinder.is_navigable(np.asarray(point, dtype=np.float32)))

    def snap_point(self, point: Sequence[float]) -> np.ndarray:
        """habitat-sim's ``snap_point``."""
        return np.asarray(self._sim.pathfinder.snap_point(np.asarray(point, dtype=np.float32)), dtype=np.float64)

    def topdown_map(self, height: float) -> tuple[np.ndarray, np.ndarray]:
        """habitat-sim's top-down view of the navmesh at ``height`` and its extent."""
        pathfinder = self._sim.pathfinder
        image = np.asarray(pathfinder.get_topdown_view(TOPDOWN_METRES_PER_PIXEL, float(height)), dtype=bool)
        lower, upper = pathfinder.get_bounds()
        return image, np.array([lower[0], lower[2], upper[0], upper[2]], dtype=np.float64)

    def semantic_labels(self) -> dict[int, str]:
        """Category of each semantic object id of the scene's semantic annotation (empty without one)."""
        scene = self._sim.semantic_scene
        return {int(obj.semantic_id): obj.category.name() for obj in scene.objects if obj is not None and obj.category is not None}

    def close(self) -> None:
        """Close the simulator."""
        if self._sim is not None:
            self._sim.close()
            self._sim = None
            self._path = None
