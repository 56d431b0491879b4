"""Street panoramas labelled with what the modular agent reads: ``vlnkit data perception --source city --out DIR``.

Each sample is one node of a synthetic city: its rendered RGB panorama
(:class:`~vlnkit.envs.continuous.city.CityPanoramaSource`, ``height`` x ``width`` equirectangular, rolled so
that column 0 starts at compass bearing 0 and bearings grow to the right) and, as the target, the
``(sectors, categories)`` closeness of the city's scene description at heading 0
(:class:`~vlnkit.envs.street.panorama.SceneFeatureSource`: sector ``k`` covers bearings ``[k, k + 1) * 360 /
sectors``, so it is the columns ``[k, k + 1) * width / sectors`` of the image). The categories are the synthetic
city's whole catalogue (:data:`READOUT_CATEGORIES`), so every city's targets have the same columns.

The split is by city, so validation scenes are unseen: ``train_cities`` (seeds 1, 2, 3 by default) for
training and ``val_cities`` (seed 0, the city ``vlnkit eval`` runs the agents on) for validation.

Layout of ``DIR``::

    meta.json                    format, source "city", categories, sectors, radius, sizes, the split
    cities/train/city_001.npz    rgb (N, H, W, 3) uint8, closeness (N, sectors, categories) float32
    cities/val/city_000.npz

A city's file is written atomically once complete, so an interrupted run resumes at the first missing city;
a folder written with other settings is refused, naming the settings that differ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vlnkit.envs.synth.scene import ALL_CATEGORIES

READOUT_CATEGORIES: tuple[str, ...] = tuple(sorted(ALL_CATEGORIES))
"""The landmark categories of the synthetic city, in the sorted order :class:`SceneFeatureSource` gives them."""

NORTH_AT_COLUMN_0 = 180.0
"""The heading to observe a panorama source at so that column 0 of the image starts at bearing 0 (the sources
put the heading at the centre column)."""


@dataclass(frozen=True)
class ReadoutDataConfig:
    """What ``vlnkit data perception --source city`` renders (see the module docstring)."""

    train_cities: tuple[int, ...] = (1, 2, 3)
    val_cities: tuple[int, ...] = (0,)
    city_size: str = "small"
    height: int = 64
    width: int = 256
    sectors: int = 8
    radius: float = 30.0
    categories: tuple[str, ...] = field(default=READOUT_CATEGORIES)

    def __post_init__(self) -> None:
        if set(self.train_cities) & set(self.val_cities):
            raise ValueError(f"perception data: a city is in both splits ({sorted(set(self.train_cities) & set(self.val_cities))}); "
                             "validation cities must be unseen")
        if not self.train_cities or not self.val_cities:
            raise ValueError("perception data: train_cities and val_cities must each name at least one city seed")
        if self.width % self.sectors or self.width % 4:
            raise ValueError(f"perception data: width {self.width} must be a multiple of 4 and of sectors={self.sectors}")


def render_city(seed: int, config: ReadoutDataConfig, progress: bool = False) -> dict[str, np.ndarray]:
    """Every node of the synthetic city ``seed``: ``rgb`` panoramas and ``closeness`` targets, columns in
    ``config.categories`` order."""
    from vlnkit.envs.continuous.city import CityPanoramaSource
    from vlnkit.envs.datasets import read_graph
    from vlnkit.envs.street.panorama import SceneFeatureSource
    from vlnkit.envs.synth import default_city

    root = default_city(seed=seed, size=config.city_size)
    graph = read_graph(root)
    pixels = CityPanoramaSource(root, "rgb", height=config.height, width=config.width, cache_size=1)
    pixels.bind(graph)
    scene = SceneFeatureSource(root / "graph" / "scene.jsonl", sectors=config.sectors, radius=config.radius)
    scene.bind(graph)
    unknown = sorted(set(scene.categories) - set(config.categories))
    if unknown:
        raise ValueError(f"{scene.path}: categories {unknown} are not in the readout's categories")
    present = [i for i, c in enumerate(config.categories) if c in scene.categories]
    columns = [scene.categories.index(config.categories[i]) for i in present]
    rgb = np.empty((graph.num_nodes, config.height, config.width, 3), dtype=np.uint8)
    closeness = np.zeros((graph.num_nodes, config.sectors, len(config.categories)), dtype=np.float32)
    for node in tqdm(range(graph.num_nodes), desc=f"city {seed}", unit="pano", disable=not progress):
        rgb[node] = pixels.observe(node, NORTH_AT_COLUMN_0)
        closeness[node][:, present] = scene.observe(node, 0.0)[:, columns]
    return {"rgb": rgb, "closeness": closeness}


def write_readout_data(out: str | Path, config: ReadoutDataConfig = ReadoutDataConfig(),
                       progress: bool = True) -> dict[str, Any]:
    """Render the split cities into ``out`` (see the module docstring), resuming a stopped run; returns the
    meta data."""
    from vlnkit.perception.data import FORMAT, check_meta, write_meta, write_npz

    root = Path(out)
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
    meta: dict[str, Any] = {"format": FORMAT, "source": "city", "config": settings,
                            "categories": list(config.categories), "sectors": config.sectors,
                            "splits": {"train": list(config.train_cities), "val": list(config.val_cities)}}
    check_meta(root, meta)
    write_meta(root, meta, complete=False)
    counts = {}
    for split, seeds in meta["splits"].items():
        counts[split] = 0
        for seed in seeds:
            path = shard_path(root, split, seed)
            if not path.is_file():
                write_npz(path, render_city(seed, config, progress))
            with np.load(path) as data:
                counts[split] += len(data["rgb"])
    meta["images"] = counts
    write_meta(root, meta)
    return meta


def shard_path(root: Path, split: str, seed: int) -> Path:
    """The file of city ``seed`` in ``split``."""
    return root / "cities" / split / f"city_{seed:03d}.npz"


def load_city_split(root: str | Path, meta: dict[str, Any], split: str) -> dict[str, np.ndarray]:
    """``rgb`` and ``closeness`` of every city of ``split``."""
    from vlnkit.perception.data import load_shards

    paths = [shard_path(Path(root), split, int(seed)) for seed in meta["splits"][split]]
    return load_shards(paths, ("rgb", "closeness"), f"vlnkit data perception --source city --out {root}")
