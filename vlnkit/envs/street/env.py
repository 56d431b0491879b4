"""Gymnasium environments for street-graph navigation: ``vlnkit/Touchdown-v0`` and ``vlnkit/Map2Seq-v0``.

Observations are a ``Dict`` (fresh arrays on every call, as Gymnasium requires):

- ``instruction``: the navigation text (``Text`` space),
- ``heading``: the agent's compass heading in degrees, shape ``(1,)``,
- ``position``: metres (east, north) from the graph's centre, from the node's lat/lng, shape ``(2,)``; with
  ``odometry_drift`` it carries an error that accumulates over the episode's moves (a random walk, ``drift`` m
  per axis per move), and with ``pose_noise`` a fresh error on every observation (``pose_noise`` m per axis),
  both drawn from the episode's seed,
- ``links``: headings of the node's outgoing links padded with -1, shape ``(max_out_degree,)``,
- ``panorama``: the node's panorama from the configured source (image or features), absent with
  ``panorama="none"``.

``info`` carries the ``panoid`` of the current node and the ``episode_id`` and, unless ``guidance=False``,
privileged guidance that agents may use only when they are meant to (oracle, imitation learning):
``oracle_action`` (the shortest-path oracle's next action), ``gold_action`` (the next action along the
episode's reference route, see :func:`~vlnkit.envs.street.oracle.gold_action`) and ``distance_to_goal`` (undirected hop count, the
quantity SPD measures).

The reward is 0 on every step except the one that ends the episode with STOP, where it is 1.0 when the
agent stopped at the goal or one of its neighbours (task completion) and 0.0 otherwise.
"""

from __future__ import annotations

import math
import string
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from vlnkit.envs import episode_from_options
from vlnkit.envs.datasets import StreetEpisode, load_street_split
from vlnkit.envs.street.actions import StreetAction
from vlnkit.envs.street.graph import StreetGraph
from vlnkit.envs.street.navigator import NavState, Semantics, StreetNavigator
from vlnkit.envs.street.oracle import NavigableDistances, gold_action, oracle_action
from vlnkit.envs.street.panorama import (
    FeatureArraySource,
    FeatureFolderSource,
    ImageFolderSource,
    PanoramaSource,
    SceneFeatureSource,
)

DEFAULT_SEMANTICS: dict[str, Semantics] = {"touchdown": "touchdown", "map2seq": "velma"}
_GOAL_CACHE_SIZE = 256


def make_panorama_source(kind: str, data_dir: Path, **paths: Any) -> PanoramaSource | None:
    """Build a panorama source by name: ``none``, ``auto`` (the release's scene description when it
    has one, else none), ``scene``, ``features`` (``features_path`` + ``features_index``, or
    ``features_dir``), ``image`` (``image_dir``) or ``render`` (the synthetic city rendered in 3D,
    ``modality`` rgb|depth|semantic, optional ``height``/``width``)."""
    scene = data_dir / "graph" / "scene.jsonl"
    if kind == "none":
        return None
    if kind == "auto":
        return SceneFeatureSource(scene) if scene.is_file() else None
    if kind == "scene":
        return SceneFeatureSource(scene)
    if kind == "features":
        if paths.get("features_dir"):
            return FeatureFolderSource(paths["features_dir"])
        if paths.get("features_path") and paths.get("features_index"):
            return FeatureArraySource(paths["features_path"], paths["features_index"])
        if scene.is_file():
            return SceneFeatureSource(scene)
        raise ValueError("panorama='features' needs features_dir, or features_path and features_index")
    if kind == "image":
        if not paths.get("image_dir"):
            raise ValueError("panorama='image' needs image_dir (a folder of <panoid>.jpg equirectangular images)")
        return ImageFolderSource(paths["image_dir"])
    if kind == "render":
        from vlnkit.envs.continuous.city import CityPanoramaSource

        return CityPanoramaSource(data_dir, **paths)
    raise ValueError(f"unknown panorama kind {kind!r}; expected none, auto, scene, features, image or render")


class StreetEnv(gymnasium.Env):
    """Navigate a street graph by following an instruction; one episode per route of a split.

    Args:
        task: ``touchdown`` or ``map2seq``: default action semantics and which records to use.
        data_dir: a release folder (``graph/`` and ``data/<split>.json``); ``None`` uses the built-in
            synthetic city (generated once and cached).
        split: the split file to read.
        semantics: ``touchdown`` or ``velma``; defaults to the task's usual one.
        max_steps: the step limit (the episode is truncated there).
        steps_per_node: when set, an episode's limit is ``max(max_steps, ceil(steps_per_node * nodes))`` for
            a reference route of ``nodes`` panoids, so long routes stay solvable (the synthetic city's loop
            routes have up to 60 nodes; following one takes up to 1.16 steps per node). ``None`` (the
            default, and the real releases' setting) keeps the fixed limit of the reference code.
        panorama: ``none``, ``auto``, ``scene``, ``features`` or ``image`` (see
            :func:`make_panorama_source`), or a ready :class:`PanoramaSource`.
        episode_kinds: ``task`` keeps only records of the task's layout, ``all`` keeps every record
            (mixed files).
        on_invalid_route: ``error`` or ``skip`` routes through unknown or unlinked panoids.
        graph, episodes: pass these instead of ``data_dir`` to run on data already in memory.
        guidance: put ``oracle_action`` and ``distance_to_goal`` in ``info`` (one graph search per new
            goal, and the oracle's work on every step); switch off for rollouts that never read them.
        pose_noise: standard deviation in metres of the independent Gaussian error of each observed position.
        odometry_drift: standard deviation in metres of the Gaussian error each move adds to the observed
            position's drift (0 in both: exact positions, the reference code's observation).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        task: str = "touchdown",
        data_dir: str | Path | None = None,
        split: str = "dev",
        semantics: Semantics | None = None,
        max_steps: int = 55,
        steps_per_node: float | None = None,
        panorama: str | PanoramaSource = "auto",
        episode_kinds: str = "task",
        on_invalid_route: str = "error",
        graph: StreetGraph | None = None,
        episodes: Sequence[StreetEpisode] | None = None,
        guidance: bool = True,
        pose_noise: float = 0.0,
        odometry_drift: float = 0.0,
        **panorama_paths: Any,
    ) -> None:
        if pose_noise < 0 or odometry_drift < 0:
            raise ValueError(f"pose_noise and odometry_drift must be non-negative metres, got {pose_noise}, {odometry_drift}")
        self.pose_noise, self.odometry_drift = float(pose_noise), float(odometry_drift)
        self._drift = np.zeros(2)
        if task not in DEFAULT_SEMANTICS:
            raise ValueError(f"unknown street task {task!r}; expected touchdown or map2seq")
        if episode_kinds not in ("task", "all"):
            raise ValueError(f"episode_kinds must be 'task' or 'all', got {episode_kinds!r}")
        if (graph is None) != (episodes is None):
            raise ValueError("pass graph and episodes together, or neither")
        if graph is None:
            if data_dir is None:
                from vlnkit.envs.synth import default_city

                data_dir = default_city()
            data_dir = Path(data_dir)
            graph, result = load_street_split(data_dir, split, on_invalid_route=on_invalid_route)
            episodes = result.episodes
        if episode_kinds == "task":
            episodes = [ep for ep in episodes if ep.kind == task]
        if not episodes:
            raise ValueError(f"no {task} episodes in split {split!r} of {data_dir} (episode_kinds={episode_kinds!r})")
        self.task = task
        self.graph = graph
        self.episodes = list(episodes)
        self._episode_rows = {ep.episode_id: i for i, ep in enumerate(self.episodes)}
        self.max_steps = int(max_steps)
        if steps_per_node is not None and not float(steps_per_node) > 0:
            raise ValueError(f"steps_per_node must be a positive number or None, got {steps_per_node!r}")
        self.steps_per_node = None if steps_per_node is None else float(steps_per_node)
        self._budget = self.max_steps
        self.guidance = guidance
        self.navigator = StreetNavigator(graph, semantics or DEFAULT_SEMANTICS[task])
        self._navigable = NavigableDistances(graph, self.navigator.semantics)
        if not isinstance(panorama, str):
            source = panorama
        elif data_dir is None and panorama in ("auto", "none"):
            source = None
        elif data_dir is None:
            raise ValueError(f"panorama={panorama!r} needs data_dir (or pass a PanoramaSource)")
        else:
            source = make_panorama_source(panorama, Path(data_dir), **panorama_paths)
        self.panorama = source
        if source is not None:
            source.bind(graph)

        width = max(int(graph.out_degree.max(initial=0)), 1)
        links = np.full((graph.num_nodes, width), -1.0, dtype=np.float32)
        for i in range(graph.num_nodes):
            _, hs = graph.out_links(i)
            links[i, : len(hs)] = hs
        self._links = list(links)
        self._positions = list(graph.xy.astype(np.float32))
        charset = frozenset(string.printable) | frozenset("".join(ep.instruction for ep in self.episodes))
        longest = max(len(ep.instruction) for ep in self.episodes)
        extent = float(np.abs(graph.xy).max(initial=0.0)) + 1000.0
        obs_spaces: dict[str, spaces.Space] = {
            "instruction": spaces.Text(max_length=max(longest, 1), min_length=0, charset=charset),
            "heading": spaces.Box(0.0, 360.0, shape=(1,), dtype=np.float32),
            "position": spaces.Box(-extent, extent, shape=(2,), dtype=np.float32),
            "links": spaces.Box(-1.0, 360.0, shape=(width,), dtype=np.float32),
        }
        if source is not None:
            obs_spaces["panorama"] = source.space
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = spaces.Discrete(self.navigator.num_actions)
        self._goal_fields: OrderedDict[int, tuple[list[float], list[float]]] = OrderedDict()
        self._episode: StreetEpisode | None = None
        self._state: NavState | None = None

    def _fields(self, goal: int) -> tuple[list[float], list[float]]:
        """Navigable distances (for the oracle) and undirected hop counts to ``goal``, cached."""
        hit = self._goal_fields.get(goal)
        if hit is None:
            hit = (self._navigable.to(goal), self.graph.hops_to(goal).tolist())
            self._goal_fields[goal] = hit
            if len(self._goal_fields) > _GOAL_CACHE_SIZE:
                self._goal_fields.popitem(last=False)
        else:
            self._goal_fields.move_to_end(goal)
        return hit

    def episode_index(self, episode_id: str) -> int:
        """Index of the episode with ``episode_id`` (raises ``KeyError``)."""
        try:
            return self._episode_rows[episode_id]
        except KeyError:
            raise KeyError(f"no episode {episode_id!r} in this environment") from None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Start an episode: ``options={"episode_id": ...}`` or ``{"episode_index": i}``, else a random one."""
        super().reset(seed=seed)
        ep = self.episodes[episode_from_options(options, self.episode_index, len(self.episodes), self.np_random)]
        index_of = self.graph.index
        self._episode = ep
        self._goal = index_of[ep.route[-1]]
        if self.guidance:
            self._distances, self._hops = self._fields(self._goal)
        self._state = self.navigator.start(index_of[ep.route[0]], ep.start_heading)
        self._route = [index_of[p] for p in ep.route]
        self._reached = 0
        self._steps = 0
        self._budget = self.step_budget(ep)
        self._drift = np.zeros(2)
        start_episode = getattr(self.panorama, "start_episode", None)
        if callable(start_episode):   # a source whose output depends on earlier observations (FloAt) starts afresh
            start_episode()
        return self._observation(), self._info()

    def step_budget(self, episode: StreetEpisode) -> int:
        """The step limit of ``episode`` (see ``steps_per_node``)."""
        if self.steps_per_node is None:
            return self.max_steps
        return max(self.max_steps, math.ceil(self.steps_per_node * len(episode.route)))

    @property
    def privileged_observations(self) -> tuple[str, ...]:
        """The simulator labels the panorama observation carries (empty when it is what a camera sees)."""
        return tuple(getattr(self.panorama, "privileged", ()))

    def _observation(self) -> dict[str, Any]:
        state = self._state
        obs = {
            "instruction": self._episode.instruction,
            "heading": np.array([state.heading], dtype=np.float32),
            "position": self._observed_position(state.node),
            "links": self._links[state.node].copy(),
        }
        if self.panorama is not None:
            obs["panorama"] = self.panorama.observe(state.node, state.heading)
        return obs

    def _observed_position(self, node: int) -> np.ndarray:
        """The node's position as the agent observes it: exact, or with drift and noise (see the class)."""
        if not (self.pose_noise or self.odometry_drift):
            return self._positions[node].copy()
        error = self._drift + (self.np_random.normal(0.0, self.pose_noise, 2) if self.pose_noise else 0.0)
        return (self._positions[node] + error).astype(np.float32)

    def _info(self) -> dict[str, Any]:
        state = self._state
        info = {"episode_id": self._episode.episode_id, "panoid": self.graph.panoids[state.node]}
        if self.guidance:
            info["oracle_action"] = oracle_action(self.navigator, state, self._distances)
            info["gold_action"] = gold_action(self.navigator, state, self._route, self._reached, info["oracle_action"])
            info["distance_to_goal"] = self._hops[state.node]
        return info

    def step(self, action: int) -> tuple[dict, float, bool, bool, dict]:
        """Apply one action; the episode terminates on STOP and is truncated at the episode's step budget
        (``max_steps``, or longer for long routes with ``steps_per_node``)."""
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        before = self._state.node
        self._state, terminated = self.navigator.step(self._state, int(action))
        if self.odometry_drift and self._state.node != before:
            self._drift = self._drift + self.np_random.normal(0.0, self.odometry_drift, 2)
        if self._reached + 1 < len(self._route) and self._state.node == self._route[self._reached + 1]:
            self._reached += 1
        self._steps += 1
        truncated = not terminated and self._steps >= self._budget
        reward = 0.0
        if terminated:
            node = self._state.node
            reward = float(node == self._goal or node in self.graph.undirected_neighbors[self._goal])
        return self._observation(), reward, terminated, truncated, self._info()

    @property
    def state(self) -> NavState:
        """The navigator state (privileged: for runners and tests, not for agents)."""
        assert self._state is not None, "call reset() first"
        return self._state

    @property
    def episode(self) -> StreetEpisode:
        """The current episode."""
        assert self._episode is not None, "call reset() first"
        return self._episode

    def action_names(self) -> list[str]:
        """Names of the discrete actions, by id."""
        return [a.name.lower() for a in StreetAction][: self.navigator.num_actions]
