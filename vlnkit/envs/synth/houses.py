"""Synthetic houses released in the R2R-CE format, for offline VLN-CE runs.

:func:`generate_houses` writes a release folder that the same readers as real data load::

    <out>/scenes/synth/house_NNN/house_NNN.glb     the houses (z-up .glb, labels in glTF extras)
    <out>/{train,val_seen,val_unseen,test}/{split}.json.gz      episodes + instruction_vocab
    <out>/{train,val_seen,val_unseen}/{split}_gt.json.gz        ground truth (locations, actions)

``scene_id`` is ``synth/house_NNN/house_NNN.glb`` under the scenes root ``<out>/scenes``. The last quarter
of the houses (at least one) are unseen: ``val_unseen`` and ``test`` use them, ``train`` and ``val_seen``
the others (with a single house every split uses it). Test episodes carry no goals, reference path or
info, as in the real release.

An episode starts at a random floor point of one room, facing a random heading, and ends near an object
of another room; its geodesic length lies within :data:`GEODESIC_RANGE_M`. The reference path is the
geodesic shortest path (corner points, with points added so that none is more than 2 m from the
next); the ground truth is the shortest-path follower's run under R2R-CE's motion model, and every
episode's follower must stop within 0.5 m of the goal. The instruction names the rooms, the turns and the
objects the reference path actually passes and the goal object (:mod:`~vlnkit.envs.synth.house_instructions`).
Tokens use a vocabulary built from the train split (``<pad>`` 0, ``<unk>`` 1), zero-padded to 200.

Everything is drawn from generators seeded by ``(seed, house, split)`` in a fixed order, floats are
rounded before writing, and the ``.glb`` and gzip outputs carry no timestamps: the same seed and count
give the same bytes.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vlnkit.envs.continuous.backend import AgentSpec
from vlnkit.envs.continuous.geometry import quat_from_yaw
from vlnkit.envs.continuous.mesh_backend import MeshBackend, load_scene
from vlnkit.envs.continuous.oracle import STOP, rollout_follower
from vlnkit.envs.datasets import VLNCEEpisode, VLNCEGroundTruth, write_vlnce_gt, write_vlnce_split
from vlnkit.envs.synth import cache_dir
from vlnkit.envs.synth.house_instructions import UNMENTIONED, describe_path
from vlnkit.envs.synth.house_layout import HouseLayout, HouseObject, furnish_house, house_scene, plan_house

SPLIT_EPISODES: dict[str, int] = {"train": 20, "val_seen": 6, "val_unseen": 20, "test": 6}
SPLIT_CODES = {"train": 1, "val_seen": 2, "val_unseen": 3, "test": 4}
GEODESIC_RANGE_M = (4.0, 18.0)
GOAL_GAP_M = (0.3, 1.0)
REFERENCE_SPACING_M = 2.0
FOLLOWER_STOP_M = 0.5
MAX_TOKENS = 200
DECIMALS = 6
CACHE_VERSION = 4
_TOKEN = re.compile(r"[a-z0-9']+|[.,!?;]")


def tokenize(text: str) -> list[str]:
    """Lower-case words and punctuation marks of an instruction."""
    return _TOKEN.findall(text.lower())


def build_vocab(texts: list[str]) -> dict[str, Any]:
    """An ``instruction_vocab`` with the fields of the R2R-CE release, words sorted after ``<pad>`` and ``<unk>``."""
    words = ["<pad>", "<unk>"] + sorted({t for text in texts for t in tokenize(text)} - {"<pad>", "<unk>"})
    index = {w: i for i, w in enumerate(words)}
    return {"word_list": words, "word2idx_dict": index, "stoi": dict(index), "itos": list(words),
            "num_vocab": len(words), "UNK_INDEX": 1, "PAD_INDEX": 0}


def encode(text: str, vocab: Mapping[str, Any]) -> list[int]:
    """Token ids of ``text`` (unknown words map to ``UNK_INDEX``), zero-padded or cut to 200."""
    index = vocab["word2idx_dict"]
    ids = [index.get(t, vocab["UNK_INDEX"]) for t in tokenize(text)][:MAX_TOKENS]
    return ids + [vocab["PAD_INDEX"]] * (MAX_TOKENS - len(ids))


def _round(values: Any) -> list[float]:
    return [round(float(v), DECIMALS) + 0.0 for v in values]


def _densify(corners: np.ndarray, spacing: float) -> np.ndarray:
    """The corner polyline with points added so that consecutive points are at most ``spacing`` apart."""
    out = [corners[0]]
    for a, b in zip(corners[:-1], corners[1:]):
        n = max(1, int(math.ceil(np.linalg.norm(b - a) / spacing)))
        out.extend(a + (b - a) * (k / n) for k in range(1, n + 1))
    return np.array(out)


class HouseEpisodeMaker:
    """Samples episodes in one house whose scene is loaded in ``backend``."""

    def __init__(self, layout: HouseLayout, backend: MeshBackend, scene_id: str) -> None:
        self.layout = layout
        self.backend = backend
        self.scene_id = scene_id
        nav = backend.navmesh
        self.cells = nav.positions
        main = nav.component == nav.largest
        xz = self.cells[:, [0, 2]]
        self.room_cells = {
            room.index: np.flatnonzero(main & (xz[:, 0] > room.x0) & (xz[:, 0] < room.x1) & (xz[:, 1] > room.z0) & (xz[:, 1] < room.z1))
            for room in layout.rooms
        }
        self.targets = [o for o in layout.objects if o.category not in UNMENTIONED]

    def connected(self) -> bool:
        """Whether every room has floor in the house's largest connected area."""
        return all(len(cells) > 0 for cells in self.room_cells.values())

    def _goal_cells(self, obj: HouseObject) -> np.ndarray:
        cells = self.room_cells[obj.room]
        x0, z0, x1, z1 = obj.footprint()
        p = self.cells[cells]
        gap = np.hypot(np.maximum.reduce([x0 - p[:, 0], np.zeros(len(p)), p[:, 0] - x1]),
                       np.maximum.reduce([z0 - p[:, 2], np.zeros(len(p)), p[:, 2] - z1]))
        return cells[(gap >= GOAL_GAP_M[0]) & (gap <= GOAL_GAP_M[1])]

    def sample(self, rng: np.random.Generator) -> tuple[dict[str, Any], VLNCEGroundTruth] | None:
        """One episode (record fields and ground truth), or ``None`` when this draw does not qualify."""
        goal_obj = self.targets[int(rng.integers(len(self.targets)))]
        goal_cells = self._goal_cells(goal_obj)
        others = [r.index for r in self.layout.rooms if r.index != goal_obj.room and len(self.room_cells[r.index])]
        if len(goal_cells) == 0 or not others:
            return None
        goal = np.array(_round(self.cells[goal_cells[int(rng.integers(len(goal_cells)))]]))
        start_room = others[int(rng.integers(len(others)))]
        start_cells = self.room_cells[start_room]
        start = np.array(_round(self.cells[start_cells[int(rng.integers(len(start_cells)))]]))
        yaw = round(float(rng.uniform(-math.pi, math.pi)), 4)
        distance = self.backend.geodesic_distance(start, [goal])
        if not GEODESIC_RANGE_M[0] <= distance <= GEODESIC_RANGE_M[1]:
            return None
        locations, actions = rollout_follower(self.backend, start, yaw, [goal], stop_distance=FOLLOWER_STOP_M)
        if actions[-1] != STOP:
            return None
        corners = self.backend.shortest_path(start, [goal])
        instruction = describe_path(self.layout, corners, yaw, goal_obj, rng)
        fields = {
            "scene_id": self.scene_id,
            "start_position": _round(start),
            "start_rotation": _round(quat_from_yaw(yaw)),
            "info": {"geodesic_distance": round(distance, DECIMALS)},
            "goals": [{"position": _round(goal), "radius": 3.0}],
            "instruction_text": instruction,
            "reference_path": [_round(p) for p in _densify(corners, REFERENCE_SPACING_M)],
        }
        gt = VLNCEGroundTruth(tuple(tuple(_round(p)) for p in locations), tuple(actions),
                              sum(1 for a in actions if a == 1))
        return fields, gt


def _house_name(index: int) -> str:
    return f"house_{index:03d}"


def build_house(seed: int, index: int, scenes_dir: Path, attempts: int = 8) -> tuple[HouseLayout, Path, MeshBackend]:
    """Generate house ``index`` of ``seed``, write its ``.glb`` under ``scenes_dir`` and load it; a layout
    whose rooms are not all connected is drawn again (deterministically)."""
    name = _house_name(index)
    path = scenes_dir / "synth" / name / f"{name}.glb"
    path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        rng = np.random.default_rng([seed, index, attempt])
        layout = plan_house(rng, name)
        furnish_house(rng, layout)
        path.write_bytes(house_scene(layout).export(file_type="glb"))
        backend = MeshBackend(sensors=(), agent=AgentSpec())
        backend.use_scene(load_scene(path), path)
        if HouseEpisodeMaker(layout, backend, "").connected():
            return layout, path, backend
    raise RuntimeError(f"could not generate a connected house {name} for seed {seed} in {attempts} attempts")


def split_houses(count: int) -> dict[str, list[int]]:
    """House indices of each split of a release of ``count`` houses: the last quarter (at least one, when there
    are two or more) is held out for ``val_unseen`` and ``test``."""
    unseen = max(1, round(count / 4)) if count > 1 else 0
    seen = list(range(count - unseen))
    held_out = list(range(count - unseen, count)) or seen
    return {"train": seen, "val_seen": seen, "val_unseen": held_out, "test": held_out}


def generate_houses(out_dir: str | Path, seed: int, count: int,
                    episodes_per_house: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Generate ``count`` houses with ``seed`` and write them with their episodes as an R2R-CE release
    under ``out_dir`` (see the module docstring). ``episodes_per_house`` overrides
    :data:`SPLIT_EPISODES`. Returns a JSON-able summary."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    per_house = {**SPLIT_EPISODES, **(episodes_per_house or {})}
    out = Path(out_dir)
    scenes = out / "scenes"
    houses = [build_house(seed, i, scenes) for i in range(count)]
    members_of = split_houses(count)
    drafts: dict[str, list[tuple[dict[str, Any], VLNCEGroundTruth]]] = {}
    for split, members in members_of.items():
        drafts[split] = []
        for i in members:
            layout, path, backend = houses[i]
            maker = HouseEpisodeMaker(layout, backend, path.relative_to(scenes).as_posix())
            rng = np.random.default_rng([seed, i, SPLIT_CODES[split]])
            made: list[tuple[dict[str, Any], VLNCEGroundTruth]] = []
            for _ in range(per_house[split] * 50):
                if len(made) == per_house[split]:
                    break
                draft = maker.sample(rng)
                if draft is not None:
                    made.append(draft)
            drafts[split].extend(made)
    vocab = build_vocab([f["instruction_text"] for f, _ in drafts["train"]])
    counts = {}
    for split, items in drafts.items():
        episodes, gt = [], {}
        for n, (f, truth) in enumerate(items, start=1):
            test = split == "test"
            episodes.append(VLNCEEpisode(
                episode_id=str(n),
                trajectory_id=str(n),
                scene_id=f["scene_id"],
                start_position=tuple(f["start_position"]),
                start_rotation=tuple(f["start_rotation"]),
                instruction=f["instruction_text"],
                instruction_tokens=tuple(encode(f["instruction_text"], vocab)),
                goals=() if test else tuple((tuple(g["position"]), g["radius"]) for g in f["goals"]),
                reference_path=None if test else tuple(tuple(p) for p in f["reference_path"]),
                geodesic_distance=None if test else f["info"]["geodesic_distance"],
            ))
            gt[str(n)] = truth
        write_vlnce_split(episodes, out / split / f"{split}.json.gz", vocab)
        if split != "test":
            write_vlnce_gt(gt, out / split / f"{split}_gt.json.gz")
        counts[split] = len(episodes)
    for _, _, backend in houses:
        backend.close()
    return {
        "out_dir": str(out),
        "scenes_dir": str(scenes),
        "seed": seed,
        "houses": [_house_name(i) for i in range(count)],
        "unseen_houses": [_house_name(i) for i in members_of["val_unseen"]] if count > 1 else [],
        "rooms": sum(len(h[0].rooms) for h in houses),
        "objects": sum(len(h[0].objects) for h in houses),
        "episodes": counts,
        "vocab_size": vocab["num_vocab"],
    }


def default_houses(seed: int = 0, count: int = 4) -> Path:
    """The built-in synthetic houses release (generated on first use into the cache, ``$VLNKIT_CACHE`` or
    ``~/.cache/vlnkit``, then reused).
    Generation happens in a temporary folder renamed into place, so concurrent first uses are safe."""
    target = cache_dir() / f"houses-v{CACHE_VERSION}-seed{seed}-count{count}"
    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        generate_houses(tmp, seed, count)
        (tmp / ".complete").write_text("ok\n")
        if target.exists() and not (target / ".complete").is_file():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / ".complete").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
