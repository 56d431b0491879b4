"""Ground-truth attention spots of the synthetic houses' episodes, to measure the ASP against.

The houses' episode records (R2R-CE format) carry no landmark list, unlike the synthetic city's
``landmarks`` field. The instruction generator (:func:`vlnkit.envs.synth.house_instructions.describe_path`)
names, in order: the object passed in the starting room (when the path leaves it), then per room entered
the room and the object passed in it (not in the last room), and finally the goal object; the room the
path starts in is named only as the place to leave. :func:`house_spots` lists exactly those from the
generator's own inputs (layout, path corners, goal object), and :func:`release_spots` gets those inputs
by replaying the generation of a release's split, checking that every replayed instruction is the
episode's.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np

from vlnkit.envs.synth import house_instructions, houses
from vlnkit.envs.synth.house_instructions import passed_object, room_visits
from vlnkit.envs.synth.house_layout import HouseLayout, HouseObject


def house_spots(layout: HouseLayout, corners: np.ndarray, goal: HouseObject) -> list[str]:
    """The spots the generated instruction for walking ``corners`` to ``goal`` names, in its order."""
    # The generator's own 10 cm resampling of the path, so that rooms and passed objects come out the same.
    points, arc, _ = house_instructions._densify(np.asarray(corners, dtype=np.float64))
    visits = room_visits(layout, points, arc)
    spots: list[str] = []
    if len(visits) > 1:
        passed = passed_object(layout, visits[0], points, arc, goal.object_id)
        if passed is not None:
            spots.append(passed[0].describe())
    for n, visit in enumerate(visits[1:], start=1):
        spots.append(f"the {layout.rooms[visit.room].name}")
        passed = passed_object(layout, visit, points, arc, goal.object_id)
        if passed is not None and n < len(visits) - 1:
            spots.append(passed[0].describe())
    spots.append(goal.describe())
    return spots


@contextmanager
def _recording_instructions() -> Iterator[list[tuple[str, list[str]]]]:
    """While active, every instruction the houses generator writes is recorded with its spots."""
    records: list[tuple[str, list[str]]] = []
    real = houses.describe_path

    def describe(layout: HouseLayout, corners: np.ndarray, start_yaw: float, goal: HouseObject,
                 rng: np.random.Generator) -> str:
        text = real(layout, corners, start_yaw, goal, rng)
        records.append((text, house_spots(layout, corners, goal)))
        return text

    with mock.patch.object(houses, "describe_path", describe):
        yield records


def release_spots(seed: int, count: int, split: str) -> list[tuple[str, list[str]]]:
    """``(instruction, spots)`` of every episode of ``split`` of the houses release ``(seed, count)``, in
    episode order, by replaying its generation (the houses are rebuilt in a temporary folder)."""
    members = houses.split_houses(count)[split]
    per_house = houses.SPLIT_EPISODES[split]
    out: list[tuple[str, list[str]]] = []
    with tempfile.TemporaryDirectory(prefix="vlnkit-spots-") as tmp, _recording_instructions() as records:
        for i in members:
            layout, path, backend = houses.build_house(seed, i, Path(tmp) / "scenes")
            maker = houses.HouseEpisodeMaker(layout, backend, path.name)
            rng = np.random.default_rng([seed, i, houses.SPLIT_CODES[split]])
            made = 0
            for _ in range(per_house * 50):
                if made == per_house:
                    break
                records.clear()
                if maker.sample(rng) is not None:
                    made += 1
                    out.append(records[-1])
            backend.close()
    return out
