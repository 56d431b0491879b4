"""Labelled perception data rendered from the synthetic houses: ``vlnkit data perception --out DIR``.

Each image is one camera view at a random floor point of a generated house, rendered as the VLN-CE
environment renders it (1.25 m up, ``hfov`` degrees, ``size`` x ``size`` pixels): RGB, depth in metres and
the category of every pixel. Categories are the houses' object categories (:data:`HOUSE_CATEGORIES`: walls,
floors, ceilings and every furniture kind), class 0 being pixels that see nothing.

The split is by house, so validation scenes are unseen: of ``houses_count`` houses of ``houses_seed``, the
last quarter (at least one) is ``val`` and the rest ``train``, as the houses release splits its
``val_unseen`` houses. The default seed is not the evaluation release's (0), so the evaluation houses stay
unseen by anything trained on this data.

Layout of ``DIR``::

    meta.json                  categories, sizes, seeds, the split, images per split
    houses/train/house_000.npz rgb (N, H, W, 3) uint8, depth (N, H, W) float16 metres (0: nothing hit),
    houses/val/house_009.npz   label (N, H, W) uint8 category indices

A house's file is written atomically once it is complete, so an interrupted run resumes at the first
missing house; a folder written with other settings is refused, naming the settings that differ.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vlnkit.envs.synth.house_layout import FURNITURE
from vlnkit.envs.synth.houses import split_houses

HOUSE_CATEGORIES: tuple[str, ...] = ("nothing", "wall", "floor", "ceiling", *sorted(FURNITURE))
"""Pixel classes of the houses data: index 0 is a pixel that sees no geometry."""

FORMAT = "vlnkit-perception-v1"


@dataclass(frozen=True)
class PerceptionDataConfig:
    """What ``vlnkit data perception`` renders (see the module docstring)."""

    houses_seed: int = 1000
    houses_count: int = 12
    places_per_house: int = 60
    views_per_place: int = 4
    size: int = 224
    hfov: float = 90.0
    seed: int = 0

    def __post_init__(self) -> None:
        if int(self.houses_count) < 2:
            raise ValueError(f"perception data: houses_count must be at least 2 (one unseen house for val), "
                             f"got {self.houses_count}")
        for name in ("places_per_house", "views_per_place", "size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"perception data: {name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 < float(self.hfov) < 180.0:
            raise ValueError(f"perception data: hfov must be in (0, 180) degrees, got {self.hfov}")


def house_splits(count: int) -> dict[str, list[int]]:
    """House indices of each split: ``val`` is the houses release's ``val_unseen`` (the last quarter, at least
    one), ``train`` the rest."""
    members = split_houses(count)
    return {"train": members["train"], "val": members["val_unseen"]}


def category_lookup(objects: dict[int, dict[str, Any]]) -> np.ndarray:
    """A table mapping object id -> category index of :data:`HOUSE_CATEGORIES` (unknown ids -> 0)."""
    index = {name: i for i, name in enumerate(HOUSE_CATEGORIES)}
    table = np.zeros(max(objects, default=0) + 1, dtype=np.uint8)
    for obj, extras in objects.items():
        category = str(extras.get("category", ""))
        if category not in index:
            raise ValueError(f"object {obj} has category {category!r}, which is not one of HOUSE_CATEGORIES")
        table[obj] = index[category]
    return table


def render_house_views(scene: Path, config: PerceptionDataConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``places_per_house`` x ``views_per_place`` labelled views of one house (views of a place are evenly
    spaced around a random heading)."""
    from vlnkit.envs.continuous.backend import AgentSpec
    from vlnkit.envs.continuous.geometry import quat_from_yaw
    from vlnkit.envs.continuous.mesh_backend import MeshBackend

    backend = MeshBackend(sensors=(), agent=AgentSpec())
    try:
        backend.load_scene(scene)
        table = category_lookup(backend.scene.geometry.objects)
        rgb, depth, label = [], [], []
        for _ in range(config.places_per_house):
            backend.set_agent_state(backend.sample_navigable_point(rng),
                                    quat_from_yaw(float(rng.uniform(-np.pi, np.pi))))
            pano = backend.render_panorama(config.views_per_place, config.size, config.size, config.hfov)
            ids = np.minimum(pano["semantic"], len(table) - 1)
            rgb.append(pano["rgb"])
            depth.append(pano["depth"][..., 0].astype(np.float16))
            label.append(table[ids])
        return {"rgb": np.concatenate(rgb), "depth": np.concatenate(depth), "label": np.concatenate(label)}
    finally:
        backend.close()


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` compressed to ``path`` atomically (a stopped run leaves no partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz")
    os.close(fd)
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def check_meta(out: Path, meta: dict[str, Any]) -> None:
    """Refuse to add to a data folder written with other settings than ``meta``'s, naming the settings."""
    path = out / "meta.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    diff = [k for k in ("format", "categories", "config") if old.get(k) != meta[k]]
    if diff:
        changed = [k for k in meta["config"] if old.get("config", {}).get(k) != meta["config"][k]]
        raise ValueError(f"{path} was written with other settings ({', '.join(changed or diff)} differ); "
                         "use another --out or delete the folder")


def write_meta(out: Path, meta: dict[str, Any], complete: bool = True) -> None:
    """Write ``meta.json`` into ``out``; ``complete=False`` marks a folder still being rendered."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").write_text(json.dumps({**meta, "complete": complete}, indent=2) + "\n", encoding="utf-8")


def write_perception_data(out: str | Path, config: PerceptionDataConfig = PerceptionDataConfig(),
                          progress: bool = True) -> dict[str, Any]:
    """Render the houses perception data into ``out`` (see the module docstring); returns ``meta.json``'s
    content. Houses already written by an earlier run with the same settings are kept."""
    from vlnkit.perception.scorers.synthetic import synthetic_house_scenes

    out = Path(out)
    meta: dict[str, Any] = {"format": FORMAT, "categories": list(HOUSE_CATEGORIES), "config": asdict(config)}
    check_meta(out, meta)
    write_meta(out, meta, complete=False)
    splits = house_splits(config.houses_count)
    images: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="vlnkit-perception-") as work:
        for split, members in splits.items():
            images[split] = 0
            for index in tqdm(members, desc=f"perception {split}", disable=not progress):
                path = out / "houses" / split / f"house_{index:03d}.npz"
                if not path.is_file():
                    scene = next(synthetic_house_scenes(config.houses_seed, [index], work))
                    rng = np.random.default_rng([config.seed, config.houses_seed, index])
                    write_npz(path, render_house_views(scene, config, rng))
                with np.load(path) as data:
                    images[split] += len(data["label"])
    meta.update(splits=splits, images=images)
    write_meta(out, meta)
    return meta


def read_meta(root: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of a perception data folder, checked to be complete and of this format."""
    path = Path(root) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"no perception data at {root} (missing meta.json); write it with "
                                f"`vlnkit data perception --out {root}`")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    if not meta.get("complete"):
        raise ValueError(f"{path}: the data is incomplete (an interrupted run); run `vlnkit data perception "
                         f"--out {root}` again to finish it")
    return meta


def load_split(root: str | Path, split: str) -> dict[str, np.ndarray]:
    """All images of ``split`` (``train`` or ``val``): ``rgb``, ``depth`` (float32 metres), ``label`` of a houses
    folder, or ``rgb`` and ``closeness`` of a city folder (:mod:`vlnkit.perception.readout_data`)."""
    meta = read_meta(root)
    if split not in meta["splits"]:
        raise ValueError(f"{root}: no split {split!r}; splits: {', '.join(meta['splits'])}")
    if meta.get("source") == "city":
        from vlnkit.perception.readout_data import load_city_split

        return load_city_split(root, meta, split)
    paths = [Path(root) / "houses" / split / f"house_{index:03d}.npz" for index in meta["splits"][split]]
    arrays = load_shards(paths, ("rgb", "depth", "label"), f"vlnkit data perception --out {root}")
    arrays["depth"] = arrays["depth"].astype(np.float32)
    return arrays


def load_shards(paths: list[Path], keys: tuple[str, ...], command: str) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of every ``.npz`` shard in ``paths``, concatenated in order; a missing or damaged
    shard is an error naming it and the ``command`` that writes it again."""
    parts: dict[str, list[np.ndarray]] = {key: [] for key in keys}
    for path in paths:
        try:
            with np.load(path) as data:
                for key in keys:
                    parts[key].append(data[key])
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f"{path}: unreadable perception shard ({err}); delete it and run `{command}` again") from err
    return {key: np.concatenate(value) for key, value in parts.items()}
