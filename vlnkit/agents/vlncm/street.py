"""VLN-CM on street graphs (``vlncm_street``): the same Attention Spot Predictor, View Selector and Progress
Monitor as the continuous agent, with the graph's links in place of the Open Map Predictor.

A street agent cannot move an arbitrary distance in an arbitrary direction: it stands on a panorama node
and can only follow one of the node's outgoing links. So where the continuous agent moves
``GO_TOWARD_POINT(distance, angle)``, this one maps the chosen direction to a link:

1. at each new node the panorama (equirectangular, the heading at its centre column, as the street
   environments give it) is cut into ``views`` views ``360 / views`` degrees apart, view ``k`` centred
   ``k * 360 / views`` degrees clockwise of the heading (:func:`street_views`);
2. the View Selector scores them against the current spot and the Progress Monitor records the best
   score; ``pm_window`` consecutive falls pass the spot (as in the continuous agent);
3. the direction is the best view within ``max_turn`` degrees of the heading (a spot further round is
   behind: passed, or about to be); when even that view scores under ``visible`` the spot is not in sight
   and the agent follows the street ahead, the street agents' usual default;
4. the agent takes the outgoing link closest to that direction, leaving out the link it came along unless
   it is the only one (a dead end), turning to it with the navigator's rotations and then FORWARD;
5. a spot seen beside the agent (between ``beside_min`` and ``beside_max`` degrees either side) at its
   best score yet, at least ``reach_score``, is reached (the street's "as close as it gets"); the next spot
   is chosen. The agent STOPs once every spot is behind it or after ``max_moves`` moves, and gives up a
   spot after ``max_spot_moves`` moves toward it.

Steps 3 to 5 are the project's additions where the paper (continuous scenes only) has no counterpart;
all numbers are configuration values (``configs/agent/vlncm_street.yaml``). Distances on a street graph
are one link per move, so there is no open-map distance and no ``omp`` switch here.

Views: the ``semantic`` scorer reads the rendered semantic panorama (``task.panorama=render``,
``agent.modality=semantic``) with the city's object labels (:func:`city_labels`, privileged simulator
annotations, used only with that scorer); ``clip`` and ``synth_clip`` read the RGB panorama
(``agent.modality=rgb``, or image panoramas of a real release). The agent reads no ``info``.

What it reads: the observations ``instruction``, ``heading``, ``position``, ``links`` and ``panorama`` in the
scorer's modality and, for the ``semantic`` scorer, the synthetic city's ``graph/landmarks.json`` (the
labels). It refuses to start without them (:class:`~vlnkit.agents.base.AgentInputError`): when it is built
(the labels) and at ``reset`` (the panorama).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from vlnkit.agents.base import register, require_input
from vlnkit.agents.memory_support import release_dir
from vlnkit.agents.street_control import (
    AROUND_MIN_DEG,
    FORWARD,
    STOP,
    aligned,
    closest_link,
    link_headings,
    relative,
    rotate_towards,
)
from vlnkit.agents.vlncm.agent import build_asp, build_scorer, load_vlncm_config
from vlnkit.agents.vlncm.asp import SpotPredictor
from vlnkit.agents.vlncm.spots import SpotFollower
from vlnkit.agents.vlncm.view_selector import Selection
from vlnkit.perception.scorers import ImageTextScorer, Views
from vlnkit.perception.scorers.semantic import object_phrases


def view_bearings(views: int = 12) -> np.ndarray:
    """Relative bearings (degrees clockwise of the heading, in ``(-180, 180]``) of the view centres."""
    bearings = np.arange(views) * 360.0 / views
    return np.where(bearings > 180.0, bearings - 360.0, bearings)


def street_views(panorama: np.ndarray, views: int = 12, fov: float = 60.0, vfov: float = 90.0) -> np.ndarray:
    """Cut an equirectangular panorama ``(H, W[, C])`` whose centre column faces the heading into
    ``views`` views: view ``k`` spans ``fov`` degrees centred ``k * 360 / views`` degrees clockwise of the
    heading (wrapping around the image's edges) and ``vfov`` degrees about the horizon. The pixels are
    taken as they are (no reprojection), so semantic ids stay ids. Returns ``(views, h, w[, C])``."""
    panorama = np.asarray(panorama)
    if panorama.ndim not in (2, 3):
        raise ValueError(f"expected an equirectangular panorama (H, W) or (H, W, C), got shape {panorama.shape}")
    if not 0.0 < fov <= 360.0 or not 0.0 < vfov <= 180.0:
        raise ValueError(f"fov must be in (0, 360] and vfov in (0, 180], got {fov} and {vfov}")
    height, width = panorama.shape[:2]
    kept = max(1, int(round(height * vfov / 180.0)))
    rows = slice((height - kept) // 2, (height - kept) // 2 + kept)
    span = max(1, int(round(width * fov / 360.0)))
    centres = width / 2.0 + view_bearings(views) * width / 360.0
    cols = (np.round(centres - span / 2.0).astype(np.int64)[:, None] + np.arange(span)[None, :]) % width
    return np.stack([panorama[rows][:, c] for c in cols])


@lru_cache(maxsize=4)
def _city_labels(release: str) -> dict[int, tuple[str, ...]]:
    from vlnkit.envs.continuous.city import city_geometry

    labels = {}
    for object_id, extras in city_geometry(release).objects.items():
        if "landmark_id" not in extras:
            continue
        name = str(extras.get("text") or "")
        if extras["category"] == "sign":
            phrases: tuple[str, ...] = (name,)
        else:
            phrases = (*object_phrases(extras), str(extras["category"]), name)
        labels[int(object_id)] = tuple(p for p in dict.fromkeys(phrases) if p)
    return labels


def city_labels(release: str | Path) -> dict[int, tuple[str, ...]]:
    """The phrases of every landmark's semantic id in the rendered synthetic city of ``release``: colour
    and category ("black shoe store"), the category alone (instructions often leave the colour out) and
    the name on a storefront ("Rossi Jewelers"); a sign is known by its name alone. Streets and the ground
    have none."""
    return _city_labels(str(Path(release).expanduser().resolve()))


class StreetVLNCMAgent(SpotFollower):
    """VLN-CM on a street graph (see the module docstring).

    Args:
        asp: the attention spot predictor.
        scorer: the image-text scorer of the view selector.
        num_actions: the environment's number of actions (4 under touchdown semantics, 5 under velma).
        semantics: the navigator's action semantics (how rotations work).
        labels: the object labels of the city (needed by scorers with ``needs_labels``).
        views, view_fov, view_vfov: how the panorama is cut (:func:`street_views`).
        visible: the score under which the spot counts as not in sight.
        max_turn: views further round than this (degrees) are not taken as directions.
        beside_min, beside_max, reach_score: when a spot counts as reached (see the module docstring);
            ``reach_score=None`` leaves passing spots to the progress monitor alone.
        pm_window, pm_min_drop: the progress monitor's rule.
        max_moves: STOP after this many moves.
        max_spot_moves: go on to the next spot after this many moves toward one.
    """

    uses_info = False

    def __init__(self, asp: SpotPredictor, scorer: ImageTextScorer, num_actions: int, semantics: str = "touchdown",
                 labels: Mapping[int, Sequence[str]] | None = None, views: int = 12, view_fov: float = 60.0,
                 view_vfov: float = 90.0, visible: float = 0.3, max_turn: float = 135.0, beside_min: float = 45.0,
                 beside_max: float = 135.0, reach_score: float | None = 0.8, pm_window: int = 2,
                 pm_min_drop: float = 0.0, max_moves: int = 40, max_spot_moves: int = 12) -> None:
        if scorer.needs_labels and labels is None:
            raise ValueError("this scorer reads semantic labels: pass the city's labels")
        super().__init__(asp, scorer, pm_window, pm_min_drop, max_moves, max_spot_moves)
        self.privileged = ("semantic labels (rendered panorama + graph/landmarks.json)",) if scorer.needs_labels else ()
        self.num_actions = int(num_actions)
        self.semantics = semantics
        self.labels = labels
        self.views, self.view_fov, self.view_vfov = int(views), float(view_fov), float(view_vfov)
        self.bearings = view_bearings(self.views)
        self.visible = float(visible)
        self.max_turn = float(max_turn)
        self.beside = (float(beside_min), float(beside_max))
        self.reach_score = None if reach_score is None else float(reach_score)
        self.target: float | None = None
        self.origin: np.ndarray | None = None
        self.rotations = 0

    def reset(self, observation: dict[str, Any], info: dict[str, Any] | None, seed: int) -> None:
        """Predict the episode's attention spots and start at the first; refuses observations whose
        panorama the scorer cannot read (:class:`~vlnkit.agents.base.AgentInputError`)."""
        self._require_panorama(observation.get("panorama"))
        self.start_spots(str(observation["instruction"]))
        self.target = self.origin = None
        self.rotations = 0

    def act(self, observation: dict[str, Any], info: dict[str, Any] | None = None) -> int:
        """The next action: a rotation toward the chosen link, FORWARD along it, or STOP."""
        heading = float(np.asarray(observation["heading"]).reshape(-1)[0])
        links = link_headings(observation["links"])
        position = np.asarray(observation["position"], dtype=np.float64)
        if self.target is not None and np.array_equal(position, self.origin):
            if not aligned(heading, self.target) and self.rotations <= len(links):
                self.rotations += 1
                return rotate_towards(heading, self.target, links, self.semantics, self.num_actions)
            self.target = None
            return FORWARD
        self.target = None
        if self.moves >= self.max_moves or not links:
            return STOP
        if self.spot_moves >= self.max_spot_moves:
            self.next_spot()
        views = self._views(observation["panorama"])
        while True:
            selection = self.select(views)
            if selection is None:
                return STOP
            if not self._reached(selection):
                break
            self.reach()
        self.target = self._link(selection, heading, links)
        self.origin = position
        self.rotations = 0
        self.moved()
        return self.act(observation)

    def _views(self, panorama: np.ndarray) -> Views:
        """The panorama cut into views of the modality the scorer reads."""
        self._require_panorama(panorama)
        cut = street_views(panorama, self.views, self.view_fov, self.view_vfov)
        return Views(semantic=cut, labels=self.labels) if self.scorer.needs_labels else Views(rgb=cut)

    def _require_panorama(self, panorama: np.ndarray | None) -> None:
        """Refuse a panorama the scorer cannot read: the semantic scorer reads the semantic panorama ``(H, W)``
        of object ids, the others an RGB panorama ``(H, W, 3)``."""
        image = None if panorama is None else np.asarray(panorama)
        got = "no panorama in the observations" if image is None else f"shape {image.shape} {image.dtype}"
        if self.scorer.needs_labels:
            semantic = image is not None and image.ndim == 2 and np.issubdtype(image.dtype, np.integer)
            require_input(semantic, "vlncm_street",
                          f"observation 'panorama' as the semantic panorama (H, W) of object ids its semantic scorer "
                          f"reads, got {got}",
                          "only the synthetic city renders one: set task.panorama=render agent.modality=semantic")
        else:
            rgb = image is not None and image.ndim == 3 and image.shape[-1] == 3
            require_input(rgb, "vlncm_street", f"observation 'panorama' as an RGB panorama (H, W, 3), got {got}",
                          "set task.panorama=render agent.modality=rgb on the synthetic city, or give a release's "
                          "images with task.panorama=image +task.panorama_paths.image_dir=DIR (<panoid>.jpg)")

    def _reached(self, selection: Selection) -> bool:
        """Whether the spot is beside the agent at its best score yet (see the module docstring)."""
        if self.reach_score is None or self.spot_moves == 0:
            return False
        side = abs(float(self.bearings[selection.view]))
        return (self.beside[0] <= side <= self.beside[1] and selection.score >= self.reach_score
                and self.at_best(selection))

    def _link(self, selection: Selection, heading: float, links: list[float]) -> float:
        """The outgoing link to take: the one closest to the best view ahead, or straight on when the
        spot is not in sight; the link back only at a dead end."""
        ahead = np.flatnonzero(np.abs(self.bearings) <= self.max_turn)
        best = int(ahead[np.argmax(selection.scores[ahead])])
        want = heading + float(self.bearings[best]) if selection.scores[best] >= self.visible else heading
        onward = [h for h in links if abs(relative(heading, h)) < AROUND_MIN_DEG] or links
        link = closest_link(onward, want)
        assert link is not None
        return link


@register("vlncm_street")
def _vlncm_street(cfg: DictConfig, num_actions: int) -> StreetVLNCMAgent:
    cfg = load_vlncm_config("vlncm_street", cfg)
    scorer = build_scorer(cfg)
    release = release_dir(cfg)
    if scorer.needs_labels:
        landmarks = release / "graph" / "landmarks.json"
        require_input(landmarks.is_file(), "vlncm_street",
                      f"the object labels of its semantic scorer from {landmarks}, which does not exist",
                      "only the synthetic city has them: run on it (no data_dir), or on another release use an "
                      "RGB scorer (agent.scorer=clip agent.clip_dir=DIR agent.modality=rgb) with its images "
                      "(task.panorama=image +task.panorama_paths.image_dir=DIR)")
    return StreetVLNCMAgent(
        build_asp(cfg), scorer, num_actions, semantics=str(cfg.semantics or "touchdown"),
        labels=city_labels(release) if scorer.needs_labels else None, views=int(cfg.views),
        view_fov=float(cfg.view_fov), view_vfov=float(cfg.view_vfov), visible=float(cfg.visible),
        max_turn=float(cfg.max_turn), beside_min=float(cfg.beside_min), beside_max=float(cfg.beside_max),
        reach_score=None if cfg.reach_score is None else float(cfg.reach_score), pm_window=int(cfg.pm_window),
        pm_min_drop=float(cfg.pm_min_drop), max_moves=int(cfg.max_moves), max_spot_moves=int(cfg.max_spot_moves),
    )
