"""The VLN-CM agent (``vlncm``): zero-shot navigation with collision mitigation in continuous scenes.

At the start of an episode the Attention Spot Predictor splits the instruction into its ordered attention
spots (:mod:`.asp`). Then every step:

1. the View Selector scores the 12 panorama views against the current spot and picks the best one; its
   angle is the direction (:mod:`.view_selector`);
2. the Progress Monitor records that similarity; after ``pm_window`` consecutive falls the spot counts as
   passed and the next spot is selected from the same panorama (:mod:`.progress`);
3. the Open Map Predictor turns the depth panorama into an occupancy grid and gives the longest
   collision-free distance in that direction (:mod:`.open_map`); with ``omp=false`` the distance is a
   fixed ``step_distance`` instead (the paper's ablation);
4. when that distance is under ``arrive_distance`` and the agent has already moved toward this spot and
   sees it at its best similarity yet, the spot counts as reached and the next one is selected;
   otherwise the agent takes the most similar view it can move along (a detour);
5. the agent moves with ``GO_TOWARD_POINT(distance, angle)``, or STOPs once every spot is behind it or
   after ``max_moves`` moves; after ``max_spot_moves`` moves toward one spot it goes on to the next.

Steps 4 and the move budgets are the project's additions where the paper is silent (how a spot is reached,
what to do when the chosen direction is blocked); all numbers are configuration values
(``configs/agent/vlncm.yaml``).

Actions: with ``motion=point`` (the default) :meth:`VLNCMAgent.act` returns the environment's
``GO_TOWARD_POINT`` as its ``Dict`` action ``{"action", "distance", "angle"}`` (``task.go_toward_point``
must be on; STOP stays the plain id 0). ``motion=discrete`` executes each move as R2R-CE's primitive
turns and forward steps instead (for environments without ``GO_TOWARD_POINT``).

Of the environment's ``info`` the agent reads only ``collided`` (whether the last move was blocked, as
a bump sensor would tell; the ``forward_blocked`` baseline reads the same): the headings (from the
``heading`` observation) of consecutive blocked moves are kept until a move goes through, and the Open
Map Predictor marks an obstacle just beyond the agent in each, where its cameras may see none
(``uses_info`` is true for that flag alone).

The ``semantic`` scorer reads the simulator's object labels: the agent loads them from the scene file of
each episode (``info["scene_id"]`` under the scenes root), which is privileged information the agent
uses only with that scorer. ``episode_stats`` reports the spots and what happened to them.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vlnkit.agents.base import register
from vlnkit.agents.vlncm.asp import LLMSpotPredictor, RuleSpotPredictor, SpotPredictor
from vlnkit.agents.vlncm.open_map import OccupancyMap, OpenMapConfig, OpenMapPredictor
from vlnkit.agents.vlncm.spots import SpotFollower
from vlnkit.agents.vlncm.view_selector import Selection, view_angle
from vlnkit.config import config_dir
from vlnkit.perception.scorers import ImageTextScorer, Views, create_scorer

log = logging.getLogger(__name__)

STOP, MOVE_FORWARD, TURN_LEFT, TURN_RIGHT = 0, 1, 2, 3
DISCRETE_ACTION_COUNTS = (4, 6)
"""Discrete action counts of VLN-CE environments (R2R-CE; RxR-CE with LOOK_UP/LOOK_DOWN); with
``GO_TOWARD_POINT`` it is one more, with the last id."""

Action = int | dict[str, Any]
LabelSource = Callable[[str], Mapping[int, Sequence[str]]]


class SceneLabels:
    """The phrases of each object id of a scene, by ``scene_id`` under ``scenes_dir`` (kept for the
    last ``cache`` scenes)."""

    def __init__(self, scenes_dir: str | Path, cache: int = 8) -> None:
        self.scenes_dir = Path(scenes_dir).expanduser()
        self.cache = int(cache)
        self._labels: OrderedDict[str, dict[int, tuple[str, ...]]] = OrderedDict()

    def __call__(self, scene_id: str) -> Mapping[int, Sequence[str]]:
        """The labels of ``scene_id``."""
        from vlnkit.envs.datasets import resolve_scene_path
        from vlnkit.perception.scorers.semantic import scene_labels

        if scene_id not in self._labels:
            self._labels[scene_id] = scene_labels(resolve_scene_path(self.scenes_dir, scene_id))
            while len(self._labels) > self.cache:
                self._labels.popitem(last=False)
        self._labels.move_to_end(scene_id)
        return self._labels[scene_id]


class VLNCMAgent(SpotFollower):
    """The VLN-CM agent (see the module docstring).

    Args:
        asp: the attention spot predictor.
        scorer: the image-text scorer of the view selector.
        num_actions: the environment's number of actions (its ``Dict`` action's ``action`` ids).
        omp: the open map predictor; ``None`` moves ``step_distance`` every time.
        step_distance: the fixed move without the OMP (metres).
        pm_window, pm_min_drop: the progress monitor's rule.
        arrive_distance: the shortest move worth making (metres); see :meth:`act`.
        max_moves: STOP after this many moves.
        max_spot_moves: move on to the next spot after this many moves toward one spot.
        motion: ``point`` (``GO_TOWARD_POINT``) or ``discrete`` (turns and forward steps).
        turn_angle, forward_step: the primitive actions' sizes, for ``motion=discrete``.
        labels: where the scene labels come from (needed by scorers with ``needs_labels``).
    """

    uses_info = True

    def __init__(self, asp: SpotPredictor, scorer: ImageTextScorer, num_actions: int,
                 omp: OpenMapPredictor | None = None, step_distance: float = 2.5, pm_window: int = 2,
                 pm_min_drop: float = 0.0, arrive_distance: float = 0.3, max_moves: int = 40,
                 max_spot_moves: int = 6, motion: str = "point", turn_angle: float = 15.0, forward_step: float = 0.25,
                 labels: LabelSource | None = None) -> None:
        if motion not in ("point", "discrete"):
            raise ValueError(f"motion must be 'point' or 'discrete', got {motion!r}")
        if motion == "point" and num_actions - 1 not in DISCRETE_ACTION_COUNTS:
            raise ValueError(
                f"motion=point needs the environment's GO_TOWARD_POINT action, but it has {num_actions} actions: "
                "switch on task.go_toward_point, or use agent.motion=discrete")
        if scorer.needs_labels and labels is None:
            raise ValueError("this scorer reads scene labels: pass a label source")
        super().__init__(asp, scorer, pm_window, pm_min_drop, max_moves, max_spot_moves)
        self.privileged = ("semantic labels (semantic views + scene annotations)",) if scorer.needs_labels else ()
        self.omp = omp
        self.step_distance = float(step_distance)
        self.arrive_distance = float(arrive_distance)
        self.motion = motion
        self.go_toward_point = num_actions - 1
        self.turn = math.radians(turn_angle)
        self.forward_step = float(forward_step)
        self.label_source = labels
        self.labels: Mapping[int, Sequence[str]] | None = None
        self.pending: deque[int] = deque()
        self.bumps: list[float] = []

    def reset(self, observation: dict[str, Any], info: dict[str, Any], seed: int) -> None:
        """Predict the episode's attention spots and start at the first."""
        self.start_spots(str(observation["instruction"]))
        self.labels = None
        if self.scorer.needs_labels and self.label_source is not None:
            self.labels = self.label_source(str(info["scene_id"]))
        self.pending.clear()
        self.bumps.clear()

    def act(self, observation: dict[str, Any], info: dict[str, Any] | None = None) -> Action:
        """The next action: ``GO_TOWARD_POINT`` toward the current spot (or its primitive steps), or STOP."""
        if self.pending:
            return self.pending.popleft()
        if self.moves >= self.max_moves:
            return STOP
        if self.spot_moves >= self.max_spot_moves:
            self.next_spot()
        views = Views(observation["panorama_rgb"], observation.get("panorama_semantic"), self.labels)
        heading = float(np.asarray(observation["heading"]).reshape(-1)[0])
        if info and info.get("collided"):
            self.bumps.append(heading)
        else:
            self.bumps.clear()
        occupancy = None
        if self.omp is not None:
            occupancy = self.omp.occupancy(observation["panorama_depth"], [b - heading for b in self.bumps])
        while True:
            selection = self.select(views)
            if selection is None:
                return STOP
            angle, distance = self._heading(occupancy, selection.angle)
            if distance >= self.arrive_distance:
                break
            if self.spot_moves > 0 and self.at_best(selection):
                self.reach()
                continue
            detour = self._detour(occupancy, selection)
            if detour is None:
                self.next_spot()
                continue
            angle, distance = detour
            break
        self.moved()
        return self._action(angle, distance)

    def _heading(self, occupancy: OccupancyMap | None, angle: float) -> tuple[float, float]:
        """The heading to move along near ``angle`` and how far: the OMP's best, or ``angle`` and the
        fixed step without it."""
        if occupancy is None or self.omp is None:
            return angle, self.step_distance
        return self.omp.best_heading(occupancy, angle)

    def _detour(self, occupancy: OccupancyMap | None, selection: Selection) -> tuple[float, float] | None:
        """The heading and distance toward the most similar view with room for a move, when the chosen
        one has none."""
        moves = [self._heading(occupancy, view_angle(k, len(selection.scores))) for k in range(len(selection.scores))]
        open_views = [k for k, (_, distance) in enumerate(moves) if distance >= self.arrive_distance]
        if not open_views:
            return None
        return moves[max(open_views, key=lambda k: selection.scores[k])]

    def _action(self, angle: float, distance: float) -> Action:
        if self.motion == "point":
            return {"action": self.go_toward_point, "distance": np.array([distance], dtype=np.float32),
                    "angle": np.array([angle], dtype=np.float32)}
        turns = int(round(angle / self.turn))
        self.pending.extend([TURN_LEFT if turns > 0 else TURN_RIGHT] * abs(turns))
        self.pending.extend([MOVE_FORWARD] * max(1, int(distance / self.forward_step + 1e-6)))
        return self.pending.popleft()


# ------------------------------------------------------------------------------------------ factory


def load_vlncm_config(name: str, cfg: DictConfig | Mapping[str, Any] | None = None, **fixed: Any) -> DictConfig:
    """The ``agent:`` section of ``configs/agent/<name>.yaml`` over the shared ``configs/vlncm/modules.yaml``,
    with ``fixed`` and then ``cfg`` merged over it (unknown keys raise). Interpolations into the run
    config, which a bare agent config cannot resolve, become null, so the agent can be built outside a
    run too. The ``memory`` key the run config's memory group sets for every agent is dropped: VLN-CM
    owns no Mem4Nav memory."""
    root = Path(config_dir())
    modules = OmegaConf.load(root / "vlncm" / "modules.yaml")
    defaults = OmegaConf.merge(modules, OmegaConf.load(root / "agent" / f"{name}.yaml").agent, fixed)
    for key, value in list(defaults.items_ex(resolve=False)):
        if isinstance(value, str) and value.startswith("${"):
            defaults[key] = None
    OmegaConf.set_struct(defaults, True)
    given = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})
    given.pop("memory", None)
    return OmegaConf.merge(defaults, given)


def agent_config(cfg: DictConfig | Mapping[str, Any] | None = None) -> DictConfig:
    """The ``vlncm`` agent's config (:func:`load_vlncm_config`; ``omp`` defaults to true)."""
    return load_vlncm_config("vlncm", cfg, omp=True)


def build_asp(cfg: DictConfig) -> SpotPredictor:
    """The attention spot predictor ``cfg.asp`` names (``llm`` with the rule-based fallback, or ``rules``)."""
    if cfg.asp == "rules":
        return RuleSpotPredictor()
    if cfg.asp != "llm":
        raise ValueError(f"asp must be 'llm' or 'rules', got {cfg.asp!r}")
    from vlnkit.agents.llm.client import OpenAIClient
    from vlnkit.agents.llm.server import LocalLLMServer

    base_url, model = str(cfg.llm.base_url), str(cfg.llm.model)
    server = None
    if cfg.llm.start_server:
        server = LocalLLMServer(cfg.llm.model_path, port=0, threads=cfg.llm.server_threads).start()
        base_url, model = server.base_url, server.alias
    client = OpenAIClient(
        base_url, model, api_key=cfg.llm.api_key, timeout=float(cfg.llm.timeout), max_retries=int(cfg.llm.max_retries),
        invalid_retries=int(cfg.llm.invalid_retries), temperature=float(cfg.llm.temperature),
        max_tokens=int(cfg.llm.max_tokens), seed=None if cfg.llm.seed is None else int(cfg.llm.seed),
        structured=str(cfg.llm.structured), cache_size=int(cfg.llm.cache_size), cache_dir=cfg.llm.cache_dir,
    )
    return LLMSpotPredictor(client, fallback=RuleSpotPredictor(), server=server)


def build_scorer(cfg: DictConfig) -> ImageTextScorer:
    """The view selector's scorer ``cfg.scorer`` names, with its options from the config."""
    if cfg.scorer == "clip":
        if not cfg.clip_dir:
            raise ValueError("scorer=clip needs agent.clip_dir: a local CLIP folder (save_pretrained layout)")
        return create_scorer("clip", model_dir=str(cfg.clip_dir), device=str(cfg.device))
    if cfg.scorer == "synth_clip":
        return create_scorer("synth_clip", weights=str(cfg.synth_clip_weights), device=str(cfg.device))
    if cfg.scorer == "semantic":
        return create_scorer("semantic", device=str(cfg.device), half_coverage=float(cfg.semantic.half_coverage),
                             min_coverage=float(cfg.semantic.min_coverage), sharpness=float(cfg.semantic.sharpness))
    return create_scorer(str(cfg.scorer))


def scenes_root(cfg: DictConfig) -> Path:
    """The scenes root of the run: ``scenes_dir``, ``task_scenes_dir``, else the release's (``data_dir``
    or the built-in synthetic houses ``houses_seed``/``houses_count``)."""
    from vlnkit.envs.continuous.env import default_scenes_dir

    for key in ("scenes_dir", "task_scenes_dir"):
        if cfg.get(key):
            return Path(str(cfg[key])).expanduser()
    if cfg.data_dir:
        return default_scenes_dir(Path(str(cfg.data_dir)).expanduser())
    from vlnkit.envs.synth.houses import default_houses

    return default_scenes_dir(default_houses(seed=int(cfg.houses_seed or 0), count=int(cfg.houses_count or 4)))


@register("vlncm")
def _vlncm(cfg: DictConfig, num_actions: int) -> VLNCMAgent:
    cfg = agent_config(cfg)
    scorer = build_scorer(cfg)
    omp = None
    if cfg.omp:
        omp = OpenMapPredictor(OpenMapConfig(**OmegaConf.to_container(cfg.open_map, resolve=True)))
    return VLNCMAgent(
        build_asp(cfg), scorer, num_actions, omp=omp, step_distance=float(cfg.step_distance),
        pm_window=int(cfg.pm_window), pm_min_drop=float(cfg.pm_min_drop), arrive_distance=float(cfg.arrive_distance),
        max_moves=int(cfg.max_moves), max_spot_moves=int(cfg.max_spot_moves), motion=str(cfg.motion),
        turn_angle=float(cfg.turn_angle or 15.0),
        forward_step=float(cfg.forward_step or 0.25),
        labels=SceneLabels(scenes_root(cfg)) if scorer.needs_labels else None,
    )
