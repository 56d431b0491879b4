"""A synthetic city released in the real Touchdown/Map2Seq formats.

:func:`generate_city` writes a release folder that the same readers as real data load::

    <out>/graph/nodes.txt        panoid,yaw,lat,lng (no header, integer yaw)
    <out>/graph/links.txt        start_panoid,heading,end_panoid (integer headings)
    <out>/graph/landmarks.json   buildings and street objects (see vlnkit.envs.synth.scene)
    <out>/graph/scene.jsonl      per node, the landmarks visible from it (see vlnkit.envs.synth.scene)
    <out>/data/{train,dev,test}.json   JSON lines, Touchdown and Map2Seq records mixed
                                        (see vlnkit.envs.synth.episodes)
    <out>/data/memory.json       the memory split: as many plain, count, return and loop episodes each,
                                 in the unseen eastern half (dev and test areas)

Everything is drawn from one ``numpy.random.default_rng(seed)`` in a fixed order, so the same seed and
size give the same bytes. The parts live in :mod:`~vlnkit.envs.synth.network` (streets),
:mod:`~vlnkit.envs.synth.scene` (landmarks), :mod:`~vlnkit.envs.synth.routes` (routes),
:mod:`~vlnkit.envs.synth.instructions` (texts) and :mod:`~vlnkit.envs.synth.episodes` (records).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlnkit.envs.datasets import StreetEpisode, write_episodes, write_graph
from vlnkit.envs.synth.episodes import MEMORY_SPLIT, SPLITS, EpisodeMaker, split_regions
from vlnkit.envs.synth.network import LAYOUTS, StreetNetwork, build_network
from vlnkit.envs.synth.routes import RouteSampler
from vlnkit.envs.synth.scene import Scene, build_scene, landmarks_json, scene_jsonl

SPLIT_SIZES: dict[str, dict[str, int]] = {
    "small": {"train": 300, "dev": 100, "test": 100},
    "medium": {"train": 1500, "dev": 400, "test": 400},
    "large": {"train": 6000, "dev": 1200, "test": 1200},
}
MEMORY_SPLIT_PER_KIND: dict[str, int] = {"small": 50, "medium": 150, "large": 400}
"""Episodes of each memory kind in the ``memory`` split (three small cities give 150 per kind)."""


@dataclass(frozen=True)
class SynthCity:
    """A generated city in memory: streets, landmarks and episodes per split."""

    seed: int
    size: str
    network: StreetNetwork
    scene: Scene
    episodes: dict[str, list[StreetEpisode]]

    def summary(self) -> dict[str, Any]:
        """A JSON-able overview: counts of nodes, links, landmarks and episodes."""
        kinds: Counter[str] = Counter()
        memory: Counter[str] = Counter()
        for eps in self.episodes.values():
            for ep in eps:
                kinds[ep.kind] += 1
                memory[ep.record.get("memory") or "none"] += 1
        return {
            "seed": self.seed,
            "size": self.size,
            "nodes": self.network.graph.num_nodes,
            "links": self.network.graph.num_links,
            "intersections": int(np.count_nonzero(self.network.graph.out_degree >= 3)),
            "landmarks": self.scene.num_landmarks,
            "episodes": {split: len(eps) for split, eps in self.episodes.items()},
            "kinds": dict(sorted(kinds.items())),
            "memory": dict(sorted(memory.items())),
        }


def build_city(seed: int, size: str = "small") -> SynthCity:
    """Generate the city of ``seed`` and ``size`` (``small``, ``medium`` or ``large``) in memory."""
    if size not in LAYOUTS:
        raise ValueError(f"unknown city size {size!r}; choose one of {', '.join(LAYOUTS)}")
    rng = np.random.default_rng(seed)
    network = build_network(rng, LAYOUTS[size])
    scene = build_scene(rng, network)
    sampler = RouteSampler(network, scene, rng)
    maker = EpisodeMaker(network, sampler, rng)
    regions = split_regions(network)
    episodes = {split: maker.split(regions[split], SPLIT_SIZES[size][split]) for split in SPLITS}
    episodes[MEMORY_SPLIT] = maker.memory_split(regions["dev"] | regions["test"], MEMORY_SPLIT_PER_KIND[size])
    return SynthCity(seed, size, network, scene, episodes)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_city(city: SynthCity, out_dir: str | Path) -> None:
    """Write ``city`` as a release folder under ``out_dir`` (see the module docstring)."""
    root = Path(out_dir)
    write_graph(city.network.graph, root)
    _write_text(root / "graph" / "landmarks.json", landmarks_json(city.scene))
    _write_text(root / "graph" / "scene.jsonl", scene_jsonl(city.scene, city.network.graph.panoids))
    for split, episodes in city.episodes.items():
        write_episodes(episodes, root / "data" / f"{split}.json")


def generate_city(out_dir: str | Path, seed: int, size: str = "small") -> dict[str, Any]:
    """Generate a synthetic city and write it to ``out_dir`` in the real release formats.

    Returns a JSON-able summary (nodes, links, intersections, landmarks, episodes per split, record
    kinds and memory patterns).
    """
    city = build_city(seed, size)
    write_city(city, out_dir)
    return {**city.summary(), "out_dir": str(Path(out_dir))}
