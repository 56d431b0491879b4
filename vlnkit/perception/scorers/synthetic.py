"""Labelled views of synthetic houses: training data for ``synth_clip`` and held-out test data for every
scorer.

:func:`render_places` stands the camera at random floor points of a scene and renders the 12-view
panorama the VLN-CE environment gives (RGB and semantic ids, views 30 degrees apart, 90 degree field of
view, 1.25 m up). Each :class:`Place` knows the phrases of its scene's objects
(:func:`~vlnkit.perception.scorers.semantic.object_phrases`), so :meth:`Place.captions` gives every view
the phrases of what it shows and :func:`selection_queries` the view-selection questions of a place:
"the red couch" -> the view in which red couches cover the most pixels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlnkit.perception.scorers.base import ImageTextScorer, Views
from vlnkit.perception.scorers.semantic import scene_labels, view_coverage

PANORAMA_VIEWS = 12
CAMERA_HEIGHT_M = 1.25


@dataclass
class Place:
    """A rendered panorama with the labels of its scene's objects."""

    rgb: np.ndarray
    semantic: np.ndarray
    labels: dict[int, tuple[str, ...]]

    def views(self) -> Views:
        """The panorama as a scorer's input."""
        return Views(self.rgb, self.semantic, self.labels)

    def phrase_coverage(self) -> dict[str, np.ndarray]:
        """Per phrase, the fraction of each view's pixels showing objects known by it."""
        out: dict[str, np.ndarray] = {}
        for v, coverage in enumerate(view_coverage(self.semantic)):
            for obj, c in coverage.items():
                for phrase in self.labels.get(obj, ()):
                    out.setdefault(phrase, np.zeros(len(self.rgb)))[v] += c
        return out

    def captions(self, min_coverage: float = 0.01) -> list[list[str]]:
        """Per view, the phrases of the objects covering at least ``min_coverage`` of it."""
        per_view: list[list[str]] = [[] for _ in range(len(self.rgb))]
        for phrase, coverage in self.phrase_coverage().items():
            for v in np.flatnonzero(coverage >= min_coverage):
                per_view[int(v)].append(phrase)
        return per_view


def render_places(scene: str | Path, count: int, rng: np.random.Generator, size: int = 64,
                  hfov: float = 90.0) -> list[Place]:
    """``count`` panoramas (``size`` x ``size`` views) at random floor points of ``scene``, facing random
    headings."""
    from vlnkit.envs.continuous.backend import AgentSpec
    from vlnkit.envs.continuous.geometry import quat_from_yaw
    from vlnkit.envs.continuous.mesh_backend import MeshBackend

    backend = MeshBackend(sensors=(), agent=AgentSpec())
    try:
        backend.load_scene(scene)
        labels = scene_labels(scene)
        places = []
        for _ in range(count):
            point = backend.sample_navigable_point(rng)
            backend.set_agent_state(point, quat_from_yaw(float(rng.uniform(-np.pi, np.pi))))
            pano = backend.render_panorama(PANORAMA_VIEWS, size, size, hfov)
            places.append(Place(pano["rgb"], pano["semantic"], labels))
        return places
    finally:
        backend.close()


def synthetic_house_scenes(seed: int, indices: Sequence[int], out_dir: str | Path) -> Iterator[Path]:
    """Generate the synthetic houses ``indices`` of ``seed`` (as the houses release does) under ``out_dir``
    and yield each ``.glb``."""
    from vlnkit.envs.synth.houses import build_house

    for index in indices:
        _, path, backend = build_house(seed, index, Path(out_dir))
        backend.close()
        yield path


@dataclass(frozen=True)
class Query:
    """A view-selection question: which view of ``place`` shows ``text``; ``target`` is the view where
    it covers the most pixels."""

    place: int
    text: str
    target: int


def selection_queries(places: Sequence[Place], min_coverage: float = 0.01, max_views: int = 8) -> list[Query]:
    """The view-selection questions of ``places``: one per phrase whose best view shows it over at
    least ``min_coverage`` of the pixels, except walls and phrases seen in more than ``max_views`` views
    (the room the camera stands in), asked as instructions name things ("the red couch")."""
    queries = []
    for i, place in enumerate(places):
        for phrase, coverage in sorted(place.phrase_coverage().items()):
            if phrase.endswith("wall") or coverage.max() < min_coverage:
                continue
            if int((coverage >= 0.002).sum()) > max_views:
                continue
            queries.append(Query(i, f"the {phrase}", int(np.argmax(coverage))))
    return queries


def selection_accuracy(scorer: ImageTextScorer, places: Sequence[Place], queries: Sequence[Query]) -> dict[str, float]:
    """Top-1 view-selection accuracy of ``scorer`` on ``queries`` (``exact``) and within one view of the
    target (``within_one``, 30 degrees), with the number of queries and chance level."""
    by_place: dict[int, list[Query]] = {}
    for q in queries:
        by_place.setdefault(q.place, []).append(q)
    exact = near = 0
    for i, group in by_place.items():
        sims = scorer.similarity(places[i].views(), [q.text for q in group])
        for q, row in zip(group, sims):
            chosen = int(np.argmax(row))
            gap = abs(chosen - q.target) % PANORAMA_VIEWS
            exact += int(gap == 0)
            near += int(min(gap, PANORAMA_VIEWS - gap) <= 1)
    n = max(len(queries), 1)
    return {"exact": exact / n, "within_one": near / n, "queries": float(len(queries)),
            "chance_exact": 1.0 / PANORAMA_VIEWS, "chance_within_one": 3.0 / PANORAMA_VIEWS}
