"""The VLN-CE Gymnasium environment, ``vlnkit/VLNCE-v0``: follow an instruction through a 3-D scene.

Defaults are R2R-CE's: actions ``STOP=0``, ``MOVE_FORWARD=1`` (0.25 m), ``TURN_LEFT=2``, ``TURN_RIGHT=3``
(15 degrees), sliding along walls, RGB 224x224 and depth 256x256 (HFOV 90, mounted 1.25 m up), an agent
0.1 m in radius and 1.5 m tall, success within 3.0 m, at most 500 steps. RxR-CE's settings (the RxR-Habitat
challenge's) come by arguments: ``turn_angle=30``, ``look_angle=30`` (adds ``LOOK_UP=4``/``LOOK_DOWN=5``),
``sliding=False``, RGB and depth ``640x480`` HFOV 79, depth over 0.5-5 m, cameras at 0.88 m, an agent
0.18 m in radius and 0.88 m tall; see ``configs/task/rxr_ce.yaml``.

Observations are a ``Dict`` of fresh arrays:

- ``instruction``: the instruction text (``Text``);
- ``rgb`` ``(H, W, 3) uint8``, ``depth`` ``(H, W, 1) float32`` (clipped to ``depth_range``, 0-10 m by
  default, and normalised to [0, 1] as ``(d - min) / (max - min)``, as Habitat does), and with
  ``semantic=True`` ``semantic`` ``(H, W) uint32`` object ids;
- ``heading``: the agent's heading in radians, ``(1,)`` (habitat-lab's ``HeadingSensor``);
- with ``panorama=True``: ``panorama_rgb`` ``(12, H, W, 3)``, ``panorama_depth`` ``(12, H, W, 1)`` and
  ``panorama_semantic`` ``(12, H, W)``, view ``k`` turned ``30 k`` degrees to the agent's left.

With ``go_toward_point=True`` the action space is a ``Dict`` of ``action`` (the discrete actions plus
``GO_TOWARD_POINT``, the last id), ``distance`` (metres) and ``angle`` (radians, left positive, relative
to the heading): the agent turns to the angle and walks up to the distance, sliding along walls when
``sliding`` is on (as VLN-CE's does) and otherwise stopping at a collision. ``step`` also takes a plain
action id.

``info`` holds ``episode_id``, ``scene_id``, ``position`` ``[x, y, z]``, ``heading``, ``collided`` (the last
motion was blocked) and ``collisions`` (count so far) and, unless ``guidance=False``, the privileged
``distance_to_goal`` (geodesic, metres; ``None`` in episodes without goals) and ``oracle_action`` (the
shortest-path follower's next action).

The reward is 0 except on STOP, where it is 1.0 when the geodesic distance to the goal is below the
success distance. Episodes without goals (test splits) can be run but never succeed.

An episode's start and goals must lie on the scene's navigable floor, up to :data:`FLOOR_TOLERANCE_M`
(1 m horizontally, 0.5 m vertically): ``reset`` snaps them onto the floor, and snapping a position from
farther away would silently score another place, so such an episode is refused with a
:class:`~vlnkit.envs.datasets.DatasetFormatError` naming it, the position, the nearest navigable point
and its distance. The vertical band is habitat-sim's ``is_navigable`` default (``max_y_delta=0.5``);
the horizontal metre absorbs the difference between habitat-sim's navmesh, on which R2R-CE positions
were recorded, and this package's floor grid (eroded by the agent radius), while any position truly off
the map is refused.

nDTW and sDTW are scored against :meth:`VLNCEEnv.reference_path`: with ``ndtw_reference="gt"`` (the
default, as VLN-CE) the dense ground-truth locations of ``{split}_gt.json.gz``, which must then exist and
cover every episode with goals (the environment refuses to start otherwise, naming the file); with
``"sparse"`` the episodes' own sparse ``reference_path``, which scores even a perfect agent far below 1.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from vlnkit.envs import episode_from_options
from vlnkit.envs.continuous.backend import AgentSpec, SensorSpec, SimulatorBackend
from vlnkit.envs.continuous.geometry import forward_vector, quat_from_yaw, wrap_angle, yaw_from_quat
from vlnkit.envs.continuous.oracle import follower_action
from vlnkit.envs.continuous.renderer import FAR_PLANE
from vlnkit.envs.datasets import (
    DatasetFormatError,
    VLNCEEpisode,
    VLNCEGroundTruth,
    check_ground_truth,
    default_scenes_dir,
    list_vlnce_splits,
    read_vlnce_gt,
    read_vlnce_split,
    resolve_scene_files,
    vlnce_gt_path,
    vlnce_split_path,
)

STOP, MOVE_FORWARD, TURN_LEFT, TURN_RIGHT, LOOK_UP, LOOK_DOWN = 0, 1, 2, 3, 4, 5
ACTION_NAMES = ("stop", "move_forward", "turn_left", "turn_right", "look_up", "look_down")
PANORAMA_VIEWS = 12
NDTW_REFERENCES = ("gt", "sparse")
"""What nDTW can be scored against: the ground-truth file's dense path, or the episode's sparse one."""
FLOOR_TOLERANCE_M = (1.0, 0.5)
"""How far (metres, horizontally and vertically) an episode's start or goal may lie from the nearest
navigable point of its scene (see the module docstring)."""


class VLNCEEnv(gymnasium.Env):
    """Vision-and-language navigation in continuous environments (see the module docstring).

    Args:
        data_dir: a VLN-CE release folder (``<split>/<split>.json.gz``); ``None`` uses the built-in
            synthetic houses (generated once and cached).
        split: the split to read.
        scenes_dir: the scenes root that ``scene_id`` paths resolve under (default
            :func:`default_scenes_dir`); a ``scene_id`` escaping it is refused.
        split_suffix: file-name suffix of the split files (``""`` for R2R-CE, ``"_guide"`` for RxR-CE).
        require_vocab: refuse split files without ``instruction_vocab`` (R2R-CE's loader needs it).
        forward_step, turn_angle, look_angle: action sizes (metres, degrees, degrees; ``look_angle=0``
            leaves out LOOK_UP/LOOK_DOWN).
        sliding: slide along walls when a motion is blocked.
        rgb_size, rgb_hfov, depth_size, depth_hfov, depth_range, normalize_depth, sensor_height: the
            cameras (sizes as ``(width, height)``).
        semantic: add a semantic camera (same size and field of view as the RGB camera).
        panorama, panorama_size, panorama_hfov: add the 12-view panorama observation.
        go_toward_point, max_point_distance: add the ``GO_TOWARD_POINT(r, theta)`` action.
        success_distance: SR's threshold in metres; max_steps: the step limit (truncation).
        guidance: put ``distance_to_goal`` and ``oracle_action`` in ``info``.
        oracle_stop_distance: the follower stops within this geodesic distance of the goal.
        agent_radius, agent_height: the agent's body (the navigable floor is computed for this cylinder).
        ndtw_reference: ``"gt"`` or ``"sparse"``, what :meth:`reference_path` returns (module docstring).
        backend: ``"mesh"`` (built in), ``"habitat"`` (habitat-sim) or a ready backend.
        episodes, ground_truth: pass these (with ``scenes_dir``) instead of ``data_dir``.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        data_dir: str | Path | None = None,
        split: str = "val_unseen",
        scenes_dir: str | Path | None = None,
        split_suffix: str = "",
        require_vocab: bool = True,
        forward_step: float = 0.25,
        turn_angle: float = 15.0,
        look_angle: float = 0.0,
        sliding: bool = True,
        rgb_size: Sequence[int] = (224, 224),
        rgb_hfov: float = 90.0,
        depth_size: Sequence[int] = (256, 256),
        depth_hfov: float = 90.0,
        depth_range: Sequence[float] = (0.0, 10.0),
        normalize_depth: bool = True,
        sensor_height: float = 1.25,
        semantic: bool = False,
        panorama: bool = False,
        panorama_size: Sequence[int] = (224, 224),
        panorama_hfov: float = 90.0,
        go_toward_point: bool = False,
        max_point_distance: float = 5.0,
        success_distance: float = 3.0,
        max_steps: int = 500,
        guidance: bool = True,
        oracle_stop_distance: float = 0.5,
        agent_radius: float = 0.1,
        agent_height: float = 1.5,
        ndtw_reference: str = "gt",
        backend: str | SimulatorBackend = "mesh",
        episodes: Sequence[VLNCEEpisode] | None = None,
        ground_truth: Mapping[str, VLNCEGroundTruth] | None = None,
    ) -> None:
        if ndtw_reference not in NDTW_REFERENCES:
            raise ValueError(f"ndtw_reference (task.ndtw_reference) must be 'gt' or 'sparse', got {ndtw_reference!r}")
        self.ndtw_reference = ndtw_reference
        if episodes is None:
            if data_dir is None:
                from vlnkit.envs.synth.houses import default_houses

                data_dir = default_houses()
            data_dir = Path(data_dir)
            path = vlnce_split_path(data_dir, split, split_suffix)
            if not path.is_file():
                present = ", ".join(list_vlnce_splits(data_dir, split_suffix)) or "none"
                raise DatasetFormatError(path, None, None, f"split {split!r} not found (splits present: {present})")
            episodes = read_vlnce_split(path, require_vocab=require_vocab).episodes
            gt_path = vlnce_gt_path(data_dir, split, split_suffix)
            if ground_truth is None and gt_path.is_file():
                ground_truth = read_vlnce_gt(gt_path)
            if ndtw_reference == "gt":
                check_ground_truth(gt_path, episodes, ground_truth)
            self.split_path: Path | None = path
        else:
            self.split_path = None
        if not episodes:
            raise ValueError(f"no episodes in split {split!r} of {data_dir}")
        if scenes_dir is None:
            if data_dir is None:
                raise ValueError("pass scenes_dir with in-memory episodes")
            scenes_dir = default_scenes_dir(Path(data_dir))
        self.scenes_dir = Path(scenes_dir)
        self.episodes = list(episodes)
        self.ground_truth = dict(ground_truth or {})
        self._scene_paths = self._resolve_scenes()

        self.forward_step = float(forward_step)
        self.turn = math.radians(turn_angle)
        self.turn_angle = float(turn_angle)
        self.look = math.radians(look_angle)
        self.sliding = bool(sliding)
        self.success_distance = float(success_distance)
        self.max_steps = int(max_steps)
        self.guidance = guidance
        self.oracle_stop_distance = float(oracle_stop_distance)
        self.panorama = panorama
        self.panorama_size = (int(panorama_size[0]), int(panorama_size[1]))
        self.panorama_hfov = float(panorama_hfov)
        self.max_point_distance = float(max_point_distance)

        mount = (0.0, float(sensor_height), 0.0)
        sensors = [
            SensorSpec("rgb", "rgb", int(rgb_size[0]), int(rgb_size[1]), float(rgb_hfov), mount),
            SensorSpec("depth", "depth", int(depth_size[0]), int(depth_size[1]), float(depth_hfov), mount,
                       float(depth_range[0]), float(depth_range[1]), bool(normalize_depth)),
        ]
        if semantic:
            sensors.append(SensorSpec("semantic", "semantic", int(rgb_size[0]), int(rgb_size[1]), float(rgb_hfov), mount))
        self.sensors = tuple(sensors)
        agent = AgentSpec(radius=float(agent_radius), height=float(agent_height))
        self.backend = self._make_backend(backend, agent)

        self.num_discrete = 6 if look_angle else 4
        self.go_toward_point_id = self.num_discrete if go_toward_point else None
        if go_toward_point:
            self.action_space: spaces.Space = spaces.Dict({
                "action": spaces.Discrete(self.num_discrete + 1),
                "distance": spaces.Box(0.0, self.max_point_distance, shape=(1,), dtype=np.float32),
                "angle": spaces.Box(-math.pi, math.pi, shape=(1,), dtype=np.float32),
            })
        else:
            self.action_space = spaces.Discrete(self.num_discrete)
        self.observation_space = self._observation_space()
        self._episode: VLNCEEpisode | None = None
        self._yaw = 0.0
        self._pitch = 0.0
        self._steps = 0
        self._collisions = 0
        self._collided = False

    # ------------------------------------------------------------------ construction
    def _resolve_scenes(self) -> dict[str, Path]:
        """Scene file per scene id; a missing or unreadable file or an escaping id is an error naming the
        episode (the check ``vlnkit data check`` runs too)."""
        paths, errors = resolve_scene_files(self.split_path or Path("<episodes>"), self.episodes, self.scenes_dir)
        if errors:
            raise errors[0]
        return paths

    def _make_backend(self, backend: str | SimulatorBackend, agent: AgentSpec) -> SimulatorBackend:
        if not isinstance(backend, str):
            return backend
        if backend == "mesh":
            from vlnkit.envs.continuous.mesh_backend import MeshBackend

            return MeshBackend(self.sensors, agent)
        if backend == "habitat":
            from vlnkit.envs.continuous.habitat_backend import HabitatSimBackend

            return HabitatSimBackend(self.sensors, agent)
        raise ValueError(f"unknown backend {backend!r}; expected 'mesh', 'habitat' or a SimulatorBackend")

    def _observation_space(self) -> spaces.Dict:
        charset = frozenset(string.printable) | frozenset("".join(ep.instruction for ep in self.episodes))
        longest = max(len(ep.instruction) for ep in self.episodes)
        obs: dict[str, spaces.Space] = {
            "instruction": spaces.Text(max_length=max(longest, 1), min_length=0, charset=charset),
            "heading": spaces.Box(-math.pi, math.pi, shape=(1,), dtype=np.float32),
        }
        for spec in self.sensors:
            shape = (spec.height, spec.width)
            if spec.kind == "rgb":
                obs[spec.uuid] = spaces.Box(0, 255, shape=(*shape, 3), dtype=np.uint8)
            elif spec.kind == "depth":
                high = 1.0 if spec.normalize_depth else spec.max_depth
                obs[spec.uuid] = spaces.Box(0.0, high, shape=(*shape, 1), dtype=np.float32)
            else:
                obs[spec.uuid] = spaces.Box(0, np.iinfo(np.uint32).max, shape=shape, dtype=np.uint32)
        if self.panorama:
            w, h = self.panorama_size
            obs["panorama_rgb"] = spaces.Box(0, 255, shape=(PANORAMA_VIEWS, h, w, 3), dtype=np.uint8)
            obs["panorama_depth"] = spaces.Box(0.0, FAR_PLANE, shape=(PANORAMA_VIEWS, h, w, 1), dtype=np.float32)
            obs["panorama_semantic"] = spaces.Box(0, np.iinfo(np.uint32).max, shape=(PANORAMA_VIEWS, h, w), dtype=np.uint32)
        return spaces.Dict(obs)

    # ------------------------------------------------------------------ episodes
    def episode_index(self, episode_id: str) -> int:
        """Index of the episode with ``episode_id`` (raises ``KeyError``)."""
        for i, ep in enumerate(self.episodes):
            if ep.episode_id == episode_id:
                return i
        raise KeyError(f"no episode {episode_id!r} in this environment")

    @property
    def episode(self) -> VLNCEEpisode:
        """The current episode."""
        if self._episode is None:
            raise RuntimeError("call reset() first")
        return self._episode

    def scene_path(self, episode: VLNCEEpisode) -> Path:
        """The scene file of ``episode``."""
        return self._scene_paths[episode.scene_id]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Start an episode: ``options={"episode_id": ...}`` or ``{"episode_index": i}``, else a random one."""
        super().reset(seed=seed)
        index = episode_from_options(options, self.episode_index, len(self.episodes), self.np_random)
        ep = self.episodes[index]
        self.backend.load_scene(self.scene_path(ep))
        self._check_on_floor(index, ep)
        self._episode = ep
        self.backend.set_agent_state(ep.start_position, ep.start_rotation)
        self._yaw = yaw_from_quat(np.asarray(ep.start_rotation))
        self._pitch = 0.0
        self._steps = 0
        self._collisions = 0
        self._collided = False
        self._goals = [list(p) for p in ep.goal_positions]
        return self._observation(), self._info()

    def _check_on_floor(self, index: int, ep: VLNCEEpisode) -> None:
        """Refuse ``ep`` (at ``index``) when its start or a goal lies farther than :data:`FLOOR_TOLERANCE_M`
        from the current scene's navigable floor."""
        points = [("start_position", ep.start_position)]
        points += [(f"goals[{g}].position", goal) for g, goal in enumerate(ep.goal_positions)]
        max_horizontal, max_vertical = FLOOR_TOLERANCE_M
        for name, point in points:
            p = np.asarray(point, dtype=np.float64)
            nearest = np.asarray(self.backend.snap_point(p), dtype=np.float64)
            horizontal = math.hypot(nearest[0] - p[0], nearest[2] - p[2])
            vertical = abs(float(nearest[1] - p[1]))
            if horizontal <= max_horizontal and vertical <= max_vertical:
                continue
            if np.isfinite(nearest).all():
                found = (f"the nearest navigable point {nearest.round(3).tolist()} is {horizontal:.2f} m away "
                         f"horizontally and {vertical:.2f} m vertically")
            else:
                found = "no navigable point was found near it"
            raise DatasetFormatError(
                self.split_path or Path("<episodes>"), None, f"episodes[{index}].{name}",
                f"episode {ep.episode_id!r}: position {p.tolist()} is off the navigable floor of scene "
                f"{ep.scene_id!r}: {found}; a position must lie within {max_horizontal} m horizontally and "
                f"{max_vertical} m vertically of the floor",
            )

    # ------------------------------------------------------------------ stepping
    def _parse_action(self, action: Any) -> tuple[int, float, float]:
        if isinstance(action, Mapping):
            kind = int(np.asarray(action["action"]).reshape(-1)[0])
            distance = float(np.asarray(action.get("distance", 0.0)).reshape(-1)[0])
            angle = float(np.asarray(action.get("angle", 0.0)).reshape(-1)[0])
            return kind, distance, angle
        return int(action), 0.0, 0.0

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        """Apply one action; STOP terminates the episode, ``max_steps`` truncates it."""
        if self._episode is None:
            raise RuntimeError("call reset() before step()")
        kind, distance, angle = self._parse_action(action)
        limit = self.num_discrete + (self.go_toward_point_id is not None)
        if not 0 <= kind < limit:
            raise ValueError(f"invalid action {kind}; this environment has actions 0..{limit - 1}")
        self._collided = False
        position = self.backend.get_agent_state().position
        if kind == MOVE_FORWARD:
            self._move(position, self._yaw, self.forward_step, self.sliding)
        elif kind == TURN_LEFT:
            self._turn(self.turn)
        elif kind == TURN_RIGHT:
            self._turn(-self.turn)
        elif kind == LOOK_UP and kind < self.num_discrete:
            self._pitch = min(self._pitch + self.look, math.pi / 2)
        elif kind == LOOK_DOWN and kind < self.num_discrete:
            self._pitch = max(self._pitch - self.look, -math.pi / 2)
        elif kind == self.go_toward_point_id:
            self._yaw = wrap_angle(self._yaw + angle)
            self._move(position, self._yaw, min(max(distance, 0.0), self.max_point_distance), self.sliding)
        self._steps += 1
        terminated = kind == STOP
        truncated = not terminated and self._steps >= self.max_steps
        reward = 0.0
        if terminated and self._goals:
            reward = float(self.distance_to_goal() < self.success_distance)
        return self._observation(), reward, terminated, truncated, self._info()

    def _move(self, position: np.ndarray, yaw: float, distance: float, sliding: bool) -> None:
        target = position + distance * forward_vector(yaw)
        outcome = self.backend.try_step(position, target, sliding=sliding)
        self.backend.set_agent_state(outcome.position, quat_from_yaw(yaw))
        self._collided = outcome.collided
        self._collisions += int(outcome.collided)

    def _turn(self, delta: float) -> None:
        self._yaw = wrap_angle(self._yaw + delta)
        state = self.backend.get_agent_state()
        self.backend.set_agent_state(state.position, quat_from_yaw(self._yaw))

    # ------------------------------------------------------------------ observations
    def _observation(self) -> dict[str, Any]:
        obs: dict[str, Any] = {
            "instruction": self.episode.instruction,
            "heading": np.array([self._yaw], dtype=np.float32),
        }
        obs.update(self.backend.render(self._pitch))
        if self.panorama:
            w, h = self.panorama_size
            pano = self.backend.render_panorama(PANORAMA_VIEWS, w, h, self.panorama_hfov, self._pitch)
            obs["panorama_rgb"] = pano["rgb"]
            obs["panorama_depth"] = pano["depth"]
            obs["panorama_semantic"] = pano["semantic"]
        return obs

    def distance_to_goal(self, position: Sequence[float] | None = None) -> float:
        """Geodesic distance from ``position`` (default: the agent) to the episode's goal (``nan``
        without goals)."""
        if not self._goals:
            return math.nan
        if position is None:
            position = self.backend.get_agent_state().position
        return float(self.backend.geodesic_distance(position, self._goals))

    def reference_path(self, episode: VLNCEEpisode) -> np.ndarray | None:
        """The path ``(R, 3)`` nDTW and sDTW score ``episode`` against: its ground-truth locations, or with
        ``ndtw_reference="sparse"`` its ``reference_path``; ``None`` when it has none (test splits)."""
        if self.ndtw_reference == "sparse":
            return np.array(episode.reference_path) if episode.reference_path else None
        truth = self.ground_truth.get(episode.episode_id)
        if truth is not None:
            return np.array(truth.locations)
        if episode.goals:
            raise ValueError(f"episode {episode.episode_id!r} has no ground-truth path to score nDTW against: pass "
                             "ground_truth= or ndtw_reference='sparse'")
        return None

    def oracle_action(self) -> int:
        """The shortest-path follower's next action from the current state (STOP without goals)."""
        if not self._goals:
            return STOP
        position = self.backend.get_agent_state().position
        return follower_action(self.backend, position, self._yaw, self._goals, self.turn_angle, self.oracle_stop_distance)

    def _info(self) -> dict[str, Any]:
        state = self.backend.get_agent_state()
        info: dict[str, Any] = {
            "episode_id": self.episode.episode_id,
            "scene_id": self.episode.scene_id,
            "position": [float(v) for v in state.position],
            "heading": float(self._yaw),
            "collided": bool(self._collided),
            "collisions": int(self._collisions),
        }
        if self.guidance:
            info["distance_to_goal"] = self.distance_to_goal() if self._goals else None
            info["oracle_action"] = self.oracle_action()
        return info

    def action_names(self) -> list[str]:
        """Names of the discrete actions, by id."""
        names = list(ACTION_NAMES[: self.num_discrete])
        if self.go_toward_point_id is not None:
            names.append("go_toward_point")
        return names

    def close(self) -> None:
        """Release the backend's rendering resources."""
        self.backend.close()
