"""Procedural house layouts: rooms, doors, walls and furniture, and their 3-D scene.

A house is a rectangle cut by a hallway running along its long side; the two bands on either side of the
hallway are split into two or three rooms of at least :data:`MIN_ROOM_M` metres. Every room has a door
to the hallway, some neighbouring rooms a door between them. Room types follow size (the largest is the
living room, the smallest the bathroom); each type has its furniture (beds, couches, fridges, toilets,
...), made of boxes and spheres with a named colour, placed against the walls away from the doors, or in
the middle of the room (rugs, tables), or hung on walls (paintings, mirrors).

Everything is laid out in Habitat's frame (metres, y up, floor at y = 0, the house spanning
``x in [0, width]`` and ``z in [0, depth]``). :func:`house_scene` turns a layout into a ``trimesh.Scene``
in the z-up frame habitat-sim expects of ``.glb`` files, one mesh per object part colour, each carrying
``{"category", "object_id", "colour", "room"}`` in its glTF extras and its colour as the material's base
colour; the scene's extras describe rooms, doors and objects (in Habitat's frame).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlnkit.envs.continuous.geometry import habitat_to_zup

WALL_THICKNESS = 0.1
WALL_HEIGHT = 2.6
DOOR_HEIGHT = 2.1
SLAB = 0.05
MIN_ROOM_M = 2.9
DOOR_CLEARANCE_ALONG = 0.35
DOOR_CLEARANCE_DEPTH = 1.1

COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (236, 236, 230), "black": (38, 38, 40), "gray": (128, 128, 132), "brown": (122, 82, 48),
    "beige": (214, 196, 160), "red": (178, 42, 40), "blue": (48, 78, 162), "green": (62, 128, 64),
    "yellow": (222, 190, 62), "orange": (222, 122, 42), "pink": (222, 152, 172), "purple": (112, 62, 142),
    "wood": (150, 108, 66), "cream": (240, 232, 208), "tile": (206, 210, 212), "leaf": (58, 140, 60),
}
"""RGB of every colour name; the first twelve are the ones objects are described with."""
OBJECT_COLOURS = ("white", "black", "gray", "brown", "beige", "red", "blue", "green", "yellow", "orange", "pink", "purple")

Part = tuple[str, tuple[float, float, float], tuple[float, float, float], str | None]
"""``(shape, centre, size, colour)``: ``shape`` is ``box`` or ``sphere`` (size = diameters), the centre is
in the object's frame (floor centre at the origin, back toward ``-z``), ``colour`` ``None`` means the
object's colour."""


@dataclass(frozen=True)
class Room:
    """A room between wall centrelines ``x in [x0, x1]``, ``z in [z0, z1]``; ``kind`` is its type
    (``bedroom``), ``name`` how instructions call it (``small bedroom`` when there are two)."""

    index: int
    kind: str
    name: str
    x0: float
    z0: float
    x1: float
    z1: float

    def contains(self, x: float, z: float, margin: float = 0.0) -> bool:
        """Whether ``(x, z)`` lies inside, at least ``margin`` from the wall centrelines."""
        return self.x0 + margin <= x <= self.x1 - margin and self.z0 + margin <= z <= self.z1 - margin

    @property
    def area(self) -> float:
        """Floor area in square metres."""
        return (self.x1 - self.x0) * (self.z1 - self.z0)


@dataclass(frozen=True)
class Door:
    """An opening of a wall on the line ``axis = at`` (``axis`` ``x`` or ``z``) spanning ``[lo, hi]`` along
    the other axis, between rooms ``rooms``."""

    axis: str
    at: float
    lo: float
    hi: float
    rooms: tuple[int, int]

    @property
    def centre(self) -> tuple[float, float]:
        """``(x, z)`` of the opening's middle."""
        mid = 0.5 * (self.lo + self.hi)
        return (self.at, mid) if self.axis == "x" else (mid, self.at)

    def clearance(self) -> tuple[float, float, float, float]:
        """The ``(x0, z0, x1, z1)`` area around the opening, on both sides, kept free of furniture."""
        lo, hi = self.lo - DOOR_CLEARANCE_ALONG, self.hi + DOOR_CLEARANCE_ALONG
        a, b = self.at - DOOR_CLEARANCE_DEPTH, self.at + DOOR_CLEARANCE_DEPTH
        return (a, lo, b, hi) if self.axis == "x" else (lo, a, hi, b)


@dataclass
class HouseObject:
    """A labelled object: footprint centre ``(x, z)``, turned by ``yaw`` (a multiple of 90 degrees),
    ``elevation`` of its base above the floor, and its parts in its own frame."""

    object_id: int
    category: str
    colour: str
    room: int
    x: float
    z: float
    yaw: float
    width: float
    depth: float
    height: float
    parts: list[Part]
    elevation: float = 0.0
    blocks_floor: bool = True

    def footprint(self) -> tuple[float, float, float, float]:
        """``(x0, z0, x1, z1)`` of the object seen from above."""
        quarter = round(self.yaw / (math.pi / 2)) % 2
        w, d = (self.depth, self.width) if quarter else (self.width, self.depth)
        return (self.x - w / 2, self.z - d / 2, self.x + w / 2, self.z + d / 2)

    def describe(self) -> str:
        """How an instruction names it: ``the red couch`` (plants by their leaves, not their pot)."""
        if self.category == "plant":
            return "the potted plant"
        return f"the {self.colour} {self.category}"


@dataclass
class HouseLayout:
    """A generated house: its rooms, doors, wall boxes, objects and the colours of its surfaces."""

    name: str
    width: float
    depth: float
    rooms: list[Room]
    doors: list[Door]
    walls: list[tuple[tuple[float, float, float], tuple[float, float, float]]]
    objects: list[HouseObject] = field(default_factory=list)
    wall_colour: str = "cream"

    def room_at(self, x: float, z: float) -> int:
        """Index of the room containing ``(x, z)`` (-1 outside every room)."""
        for room in self.rooms:
            if room.contains(x, z):
                return room.index
        return -1


# ----------------------------------------------------------------------------------------------------
# Furniture: shapes
# ----------------------------------------------------------------------------------------------------


def _box(cx: float, cy: float, cz: float, sx: float, sy: float, sz: float, colour: str | None = None) -> Part:
    return ("box", (cx, cy, cz), (sx, sy, sz), colour)


def _solid(w: float, d: float, h: float) -> list[Part]:
    return [_box(0, h / 2, 0, w, h, d)]


def _table(w: float, d: float, h: float) -> list[Part]:
    leg = 0.05
    parts = [_box(0, h - 0.025, 0, w, 0.05, d)]
    for sx in (-1, 1):
        for sz in (-1, 1):
            parts.append(_box(sx * (w / 2 - leg), (h - 0.05) / 2, sz * (d / 2 - leg), leg, h - 0.05, leg))
    return parts


def _chair(w: float, d: float, h: float) -> list[Part]:
    seat = 0.45
    parts = _table(w, d, seat)
    parts.append(_box(0, seat + (h - seat) / 2, -d / 2 + 0.03, w, h - seat, 0.05))
    return parts


def _bed(w: float, d: float, h: float) -> list[Part]:
    return [
        _box(0, 0.15, 0, w, 0.3, d),
        _box(0, 0.4, 0.05, w - 0.1, 0.2, d - 0.2, "white"),
        _box(0, 0.5, -d / 2 + 0.04, w, 1.0, 0.08),
        _box(0, 0.55, -d / 2 + 0.3, w * 0.6, 0.1, 0.3, "white"),
    ]


def _couch(w: float, d: float, h: float) -> list[Part]:
    return [
        _box(0, 0.225, 0, w, 0.45, d),
        _box(0, 0.45 + (h - 0.45) / 2, -d / 2 + 0.1, w, h - 0.45, 0.2),
        _box(-w / 2 + 0.075, 0.55, 0.1, 0.15, 0.2, d - 0.2),
        _box(w / 2 - 0.075, 0.55, 0.1, 0.15, 0.2, d - 0.2),
    ]


def _tv(w: float, d: float, h: float) -> list[Part]:
    return [_box(0, 0.25, 0, w, 0.5, d), _box(0, 0.9, -0.05, w * 0.85, 0.7, 0.06, "black")]


def _plant(w: float, d: float, h: float) -> list[Part]:
    return [_box(0, 0.2, 0, w * 0.8, 0.4, d * 0.8), ("sphere", (0, 0.75, 0), (0.7, 0.7, 0.7), "leaf")]


def _lamp(w: float, d: float, h: float) -> list[Part]:
    return [_box(0, 0.02, 0, w, 0.04, d), _box(0, h / 2, 0, 0.04, h, 0.04, "black"), _box(0, h - 0.15, 0, w, 0.3, d)]


def _stove(w: float, d: float, h: float) -> list[Part]:
    return [_box(0, h / 2, 0, w, h, d), _box(0, h + 0.01, 0, w - 0.05, 0.02, d - 0.05, "black")]


def _toilet(w: float, d: float, h: float) -> list[Part]:
    return [_box(0, 0.2, 0.08, w, 0.4, d - 0.16), _box(0, 0.45, -d / 2 + 0.09, w, 0.5, 0.18)]


def _flat(w: float, d: float, h: float) -> list[Part]:
    return [_box(0, h / 2, 0, w, h, d)]


@dataclass(frozen=True)
class Furniture:
    """A kind of object: size ranges ``(lo, hi)`` of width, depth and height in metres, its shape, the
    colours it comes in, and where it goes: ``wall`` (back to a wall), ``centre`` (middle of the room),
    ``hung`` (on a wall at ``elevation``) or ``floor`` (flat on the floor, walkable)."""

    category: str
    width: tuple[float, float]
    depth: tuple[float, float]
    height: tuple[float, float]
    build: Callable[[float, float, float], list[Part]]
    colours: tuple[str, ...] = OBJECT_COLOURS
    placement: str = "wall"
    elevation: float = 0.0


FURNITURE: dict[str, Furniture] = {f.category: f for f in (
    Furniture("bed", (1.4, 1.8), (2.0, 2.1), (0.55, 0.55), _bed, ("blue", "gray", "brown", "white", "green", "red")),
    Furniture("nightstand", (0.4, 0.5), (0.4, 0.4), (0.55, 0.6), _solid, ("white", "brown", "black", "gray")),
    Furniture("wardrobe", (0.9, 1.4), (0.6, 0.6), (2.0, 2.0), _solid, ("white", "brown", "black", "beige")),
    Furniture("dresser", (0.9, 1.3), (0.5, 0.5), (0.85, 0.9), _solid, ("white", "brown", "black", "beige")),
    Furniture("couch", (1.8, 2.3), (0.9, 0.9), (0.85, 0.85), _couch, ("gray", "blue", "green", "red", "brown", "beige", "black")),
    Furniture("armchair", (0.8, 0.9), (0.8, 0.9), (0.85, 0.85), _couch, ("gray", "blue", "green", "red", "brown", "yellow")),
    Furniture("coffee table", (0.9, 1.2), (0.5, 0.6), (0.45, 0.45), _table, ("brown", "black", "white"), "centre"),
    Furniture("tv", (1.2, 1.6), (0.45, 0.45), (1.25, 1.25), _tv, ("black", "brown", "white")),
    Furniture("bookshelf", (0.8, 1.0), (0.35, 0.35), (1.8, 2.0), _solid, ("brown", "white", "black")),
    Furniture("plant", (0.4, 0.45), (0.4, 0.45), (1.1, 1.1), _plant, ("brown", "white", "gray", "red")),
    Furniture("lamp", (0.35, 0.4), (0.35, 0.4), (1.6, 1.7), _lamp, ("white", "yellow", "orange", "beige")),
    Furniture("rug", (1.4, 2.0), (1.0, 1.4), (0.01, 0.01), _flat, ("red", "blue", "beige", "green", "purple", "orange"), "floor"),
    Furniture("dining table", (1.4, 1.8), (0.9, 1.0), (0.75, 0.75), _table, ("brown", "white", "black"), "centre"),
    Furniture("chair", (0.45, 0.5), (0.45, 0.5), (0.9, 0.95), _chair, ("brown", "white", "black", "red", "green")),
    Furniture("counter", (1.6, 2.6), (0.6, 0.6), (0.9, 0.9), _solid, ("white", "gray", "brown", "black")),
    Furniture("stove", (0.6, 0.6), (0.6, 0.6), (0.9, 0.9), _stove, ("white", "black", "gray")),
    Furniture("fridge", (0.7, 0.8), (0.7, 0.7), (1.8, 1.9), _solid, ("white", "gray", "black")),
    Furniture("sink", (0.6, 0.8), (0.45, 0.5), (0.85, 0.85), _solid, ("white", "gray")),
    Furniture("toilet", (0.4, 0.45), (0.65, 0.7), (0.75, 0.75), _toilet, ("white",)),
    Furniture("bathtub", (1.5, 1.7), (0.75, 0.8), (0.55, 0.55), _solid, ("white", "beige")),
    Furniture("desk", (1.1, 1.4), (0.6, 0.7), (0.75, 0.75), _table, ("brown", "white", "black", "gray")),
    Furniture("washing machine", (0.6, 0.6), (0.6, 0.6), (0.85, 0.85), _solid, ("white",)),
    Furniture("shelf", (0.8, 1.2), (0.35, 0.4), (1.5, 1.6), _solid, ("white", "brown", "gray")),
    Furniture("cabinet", (0.8, 1.2), (0.45, 0.5), (0.9, 0.95), _solid, ("white", "brown", "black", "blue")),
    Furniture("side table", (0.45, 0.55), (0.35, 0.4), (0.6, 0.65), _table, ("brown", "white", "black")),
    Furniture("shoe rack", (0.7, 0.9), (0.3, 0.3), (0.5, 0.5), _solid, ("brown", "white", "black")),
    Furniture("painting", (0.7, 1.0), (0.04, 0.04), (0.5, 0.7), _solid, ("red", "blue", "green", "yellow", "orange", "purple"), "hung", 1.3),
    Furniture("mirror", (0.5, 0.7), (0.03, 0.03), (0.7, 0.9), _solid, ("gray",), "hung", 1.1),
)}

ROOM_FURNITURE: dict[str, tuple[tuple[str, float], ...]] = {
    "bedroom": (("bed", 1.0), ("nightstand", 0.8), ("wardrobe", 0.8), ("dresser", 0.4), ("plant", 0.4),
                ("painting", 0.6), ("lamp", 0.3), ("rug", 0.3)),
    "bathroom": (("toilet", 1.0), ("sink", 1.0), ("bathtub", 0.7), ("mirror", 0.8)),
    "kitchen": (("counter", 1.0), ("fridge", 1.0), ("stove", 1.0), ("cabinet", 0.5), ("plant", 0.3)),
    "living room": (("couch", 1.0), ("tv", 0.9), ("armchair", 0.7), ("coffee table", 0.7), ("bookshelf", 0.5),
                    ("plant", 0.6), ("rug", 0.5), ("painting", 0.6), ("lamp", 0.4)),
    "dining room": (("dining table", 1.0), ("cabinet", 0.6), ("plant", 0.5), ("painting", 0.6)),
    "office": (("desk", 1.0), ("bookshelf", 0.8), ("plant", 0.5), ("armchair", 0.4), ("painting", 0.5)),
    "laundry room": (("washing machine", 1.0), ("shelf", 0.7), ("cabinet", 0.4)),
    "hallway": (("plant", 0.6), ("painting", 0.8), ("side table", 0.5), ("shoe rack", 0.4)),
}
HALLWAY_MAX_DEPTH = 0.45
FLOOR_COLOURS = {"bathroom": "tile", "kitchen": "tile", "laundry room": "tile", "bedroom": "beige", "hallway": "wood"}
EXTRA_KINDS = ("office", "dining room", "bedroom", "laundry room")


# ----------------------------------------------------------------------------------------------------
# Floor plan
# ----------------------------------------------------------------------------------------------------


def _split_widths(rng: np.random.Generator, total: float, parts: int) -> list[float]:
    """``parts`` widths of at least :data:`MIN_ROOM_M` summing to ``total``."""
    spare = total - parts * MIN_ROOM_M
    return (rng.dirichlet(np.ones(parts)) * spare + MIN_ROOM_M).tolist()


def _assign_kinds(rng: np.random.Generator, areas: list[float]) -> list[str]:
    """Room types by size: living room the largest, bathroom the smallest, then kitchen, bedroom and
    others at random."""
    order = np.argsort(areas)[::-1].tolist()
    kinds = [""] * len(areas)
    kinds[order[0]] = "living room"
    kinds[order[-1]] = "bathroom"
    rest = ["kitchen", "bedroom"] + [EXTRA_KINDS[int(i)] for i in rng.permutation(len(EXTRA_KINDS))]
    for room, kind in zip(order[1:-1], rest):
        kinds[room] = kind
    return kinds


def _names(kinds: list[str], areas: list[float]) -> list[str]:
    """Instruction names: a type used twice becomes ``large ...`` and ``small ...``."""
    names = list(kinds)
    for kind in set(kinds):
        same = [i for i, k in enumerate(kinds) if k == kind]
        if len(same) == 2:
            big, small = sorted(same, key=lambda i: -areas[i])
            names[big], names[small] = f"large {kind}", f"small {kind}"
    return names


def _wall_boxes(axis: str, at: float, lo: float, hi: float, doors: list[Door]) -> list[tuple[tuple[float, float, float], tuple[float, float, float]]]:
    """Boxes ``(centre, size)`` of a wall line with its door openings (and a lintel over each)."""
    t = WALL_THICKNESS
    cuts = sorted((d.lo, d.hi) for d in doors)
    pieces, start = [], lo - t / 2
    for a, b in cuts:
        pieces.append((start, a, 0.0, WALL_HEIGHT))
        pieces.append((a, b, DOOR_HEIGHT, WALL_HEIGHT))
        start = b
    pieces.append((start, hi + t / 2, 0.0, WALL_HEIGHT))
    boxes = []
    for a, b, y0, y1 in pieces:
        if b - a <= 1e-6:
            continue
        mid, length = 0.5 * (a + b), b - a
        centre = (at, 0.5 * (y0 + y1), mid) if axis == "x" else (mid, 0.5 * (y0 + y1), at)
        size = (t, y1 - y0, length) if axis == "x" else (length, y1 - y0, t)
        boxes.append((centre, size))
    return boxes


def _door(rng: np.random.Generator, axis: str, at: float, lo: float, hi: float, rooms: tuple[int, int]) -> Door:
    width = float(rng.uniform(0.9, 1.1))
    margin = 0.3 + width / 2
    centre = float(rng.uniform(lo + margin, hi - margin))
    return Door(axis, at, round(centre - width / 2, 3), round(centre + width / 2, 3), rooms)


def plan_house(rng: np.random.Generator, name: str) -> HouseLayout:
    """Draw a floor plan: hallway, rooms, doors and wall boxes (no furniture yet)."""
    width = float(rng.uniform(9.0, 14.0))
    depth = float(rng.uniform(7.6, 11.0))
    hall = float(rng.uniform(1.4, 1.8))
    z_hall = float(rng.uniform(MIN_ROOM_M, depth - hall - MIN_ROOM_M))
    bands = [(0.0, z_hall), (z_hall + hall, depth)]
    boxes: list[tuple[float, float, float, float]] = []
    cuts: list[tuple[int, float]] = []
    for b, (z0, z1) in enumerate(bands):
        parts = int(rng.integers(2, 4)) if width >= 3 * MIN_ROOM_M + 0.6 else 2
        x = 0.0
        for w in _split_widths(rng, width, parts):
            boxes.append((x, z0, x + w, z1))
            x += w
            if x < width - 1e-6:
                cuts.append((b, x))
    areas = [(x1 - x0) * (z1 - z0) for x0, z0, x1, z1 in boxes]
    kinds = _assign_kinds(rng, areas)
    names = _names(kinds, areas)
    rooms = [Room(0, "hallway", "hallway", 0.0, z_hall, width, z_hall + hall)]
    rooms += [Room(i + 1, kinds[i], names[i], *box) for i, box in enumerate(boxes)]

    doors: list[Door] = []
    for room in rooms[1:]:
        at = z_hall if room.z1 <= z_hall + 1e-6 else z_hall + hall
        doors.append(_door(rng, "z", at, room.x0, room.x1, (room.index, 0)))
    for b, x in cuts:
        left = next(r for r in rooms[1:] if abs(r.x1 - x) < 1e-6 and abs(r.z0 - bands[b][0]) < 1e-6)
        right = next(r for r in rooms[1:] if abs(r.x0 - x) < 1e-6 and abs(r.z0 - bands[b][0]) < 1e-6)
        if rng.random() < 0.3:
            doors.append(_door(rng, "x", x, bands[b][0], bands[b][1], (left.index, right.index)))

    lines = [("z", 0.0, 0.0, width), ("z", depth, 0.0, width), ("x", 0.0, 0.0, depth), ("x", width, 0.0, depth),
             ("z", z_hall, 0.0, width), ("z", z_hall + hall, 0.0, width)]
    lines += [("x", x, bands[b][0], bands[b][1]) for b, x in cuts]
    walls = []
    for axis, at, lo, hi in lines:
        on_line = [d for d in doors if d.axis == axis and abs(d.at - at) < 1e-6 and lo - 1e-6 <= d.lo and d.hi <= hi + 1e-6]
        walls.extend(_wall_boxes(axis, at, lo, hi, on_line))
    wall_colour = ("cream", "white", "beige")[int(rng.integers(3))]
    return HouseLayout(name, width, depth, rooms, doors, walls, wall_colour=wall_colour)


# ----------------------------------------------------------------------------------------------------
# Furniture placement
# ----------------------------------------------------------------------------------------------------


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float], gap: float = 0.0) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


class _Placer:
    """Places the furniture of one house, keeping door areas and a walkway free."""

    def __init__(self, rng: np.random.Generator, layout: HouseLayout) -> None:
        self.rng = rng
        self.layout = layout
        self.next_id = 1
        self.clearances = [d.clearance() for d in layout.doors]

    def _size(self, spec: Furniture) -> tuple[float, float, float]:
        return tuple(round(float(self.rng.uniform(lo, hi)), 2) for lo, hi in (spec.width, spec.depth, spec.height))  # type: ignore[return-value]

    def _free(self, box: tuple[float, float, float, float], room: Room, blocks: bool) -> bool:
        inner = (room.x0 + WALL_THICKNESS / 2, room.z0 + WALL_THICKNESS / 2, room.x1 - WALL_THICKNESS / 2, room.z1 - WALL_THICKNESS / 2)
        if box[0] < inner[0] - 1e-6 or box[1] < inner[1] - 1e-6 or box[2] > inner[2] + 1e-6 or box[3] > inner[3] + 1e-6:
            return False
        if not blocks:
            return not any(_overlaps(box, o.footprint()) for o in self.layout.objects if not o.blocks_floor and o.elevation == 0.0)
        if any(_overlaps(box, c) for c in self.clearances):
            return False
        return not any(_overlaps(box, o.footprint(), 0.05) for o in self.layout.objects if o.blocks_floor)

    def _add(self, spec: Furniture, room: Room, x: float, z: float, yaw: float, size: tuple[float, float, float],
             colour: str, elevation: float = 0.0) -> HouseObject:
        w, d, h = size
        obj = HouseObject(self.next_id, spec.category, colour, room.index, round(x, 3), round(z, 3), yaw, w, d, h,
                          spec.build(w, d, h), elevation=elevation, blocks_floor=spec.placement in ("wall", "centre"))
        self.next_id += 1
        self.layout.objects.append(obj)
        return obj

    def against_wall(self, spec: Furniture, room: Room, size: tuple[float, float, float], colour: str,
                     tries: int = 30) -> HouseObject | None:
        """Put an object with its back to a random wall of ``room``, facing into the room."""
        w, d, h = size
        t = WALL_THICKNESS / 2
        hung = spec.placement == "hung"
        if room.kind == "hallway" and not hung and d > HALLWAY_MAX_DEPTH:
            return None
        for _ in range(tries):
            side = int(self.rng.integers(4))
            if side < 2:  # walls along x (north z0, south z1)
                span = (room.x0 + t, room.x1 - t)
                if span[1] - span[0] < w:
                    continue
                x = float(self.rng.uniform(span[0] + w / 2, span[1] - w / 2))
                z = room.z0 + t + d / 2 if side == 0 else room.z1 - t - d / 2
                yaw = 0.0 if side == 0 else math.pi
                box = (x - w / 2, z - d / 2, x + w / 2, z + d / 2)
            else:  # walls along z (west x0, east x1)
                span = (room.z0 + t, room.z1 - t)
                if span[1] - span[0] < w:
                    continue
                z = float(self.rng.uniform(span[0] + w / 2, span[1] - w / 2))
                x = room.x0 + t + d / 2 if side == 2 else room.x1 - t - d / 2
                yaw = math.pi / 2 if side == 2 else -math.pi / 2
                box = (x - d / 2, z - w / 2, x + d / 2, z + w / 2)
            if hung:
                elevation = spec.elevation + float(self.rng.uniform(0.0, 0.3))
                if any(_overlaps(box, o.footprint(), 0.1) for o in self.layout.objects
                       if o.elevation > 0.0 or (o.blocks_floor and o.height > elevation)):
                    continue
                if any(_overlaps(box, c) for c in self.clearances):
                    continue
                return self._add(spec, room, x, z, yaw, size, colour, elevation)
            if self._free(box, room, blocks=True):
                return self._add(spec, room, x, z, yaw, size, colour)
        return None

    def in_middle(self, spec: Furniture, room: Room, size: tuple[float, float, float], colour: str,
                  walkway: float = 0.8, tries: int = 12) -> HouseObject | None:
        """Put an object near the middle of ``room`` leaving a ``walkway`` around it (rugs anywhere free)."""
        w, d, _ = size
        cx, cz = 0.5 * (room.x0 + room.x1), 0.5 * (room.z0 + room.z1)
        for _ in range(tries):
            turn = int(self.rng.integers(2))
            ww, dd = (d, w) if turn else (w, d)
            x = cx + float(self.rng.uniform(-0.4, 0.4))
            z = cz + float(self.rng.uniform(-0.4, 0.4))
            box = (x - ww / 2, z - dd / 2, x + ww / 2, z + dd / 2)
            blocks = spec.placement == "centre"
            around = (box[0] - walkway, box[1] - walkway, box[2] + walkway, box[3] + walkway)
            if blocks and not self._free(around, room, blocks=True):
                continue
            if not blocks and not self._free(box, room, blocks=False):
                continue
            return self._add(spec, room, x, z, turn * math.pi / 2, size, colour)
        return None

    def chairs_around(self, table: HouseObject, room: Room) -> None:
        """Up to four chairs facing the table's long sides."""
        spec = FURNITURE["chair"]
        colour = spec.colours[int(self.rng.integers(len(spec.colours)))]
        size = self._size(spec)
        x0, z0, x1, z1 = table.footprint()
        along_x = (x1 - x0) >= (z1 - z0)
        for offset in (-0.3, 0.3):
            for sign in (-1, 1):
                if along_x:
                    x, z = 0.5 * (x0 + x1) + offset * (x1 - x0), (z0 if sign < 0 else z1) + sign * 0.3
                else:
                    x, z = (x0 if sign < 0 else x1) + sign * 0.3, 0.5 * (z0 + z1) + offset * (z1 - z0)
                # Face the table: yaw turns the chair's front (+z) toward (sin yaw, cos yaw).
                facing = math.atan2(0.0, table.z - z) if along_x else math.atan2(table.x - x, 0.0)
                half = size[0] / 2
                box = (x - half, z - half, x + half, z + half)
                if self._free(box, room, blocks=True):
                    self._add(spec, room, x, z, facing, size, colour)

    def furnish(self, room: Room) -> None:
        """Place the furniture of ``room``'s type: required pieces first, optional ones by chance."""
        for category, chance in ROOM_FURNITURE[room.kind]:
            if self.rng.random() >= chance:
                continue
            spec = FURNITURE[category]
            size = self._size(spec)
            colour = spec.colours[int(self.rng.integers(len(spec.colours)))]
            if spec.placement in ("centre", "floor"):
                obj = self.in_middle(spec, room, size, colour, walkway=1.25 if category == "dining table" else 0.8)
                if obj is not None and category == "dining table":
                    self.chairs_around(obj, room)
            else:
                obj = self.against_wall(spec, room, size, colour)
                if obj is not None and category == "desk":
                    self._desk_chair(obj, room)

    def _desk_chair(self, desk: HouseObject, room: Room) -> None:
        spec = FURNITURE["chair"]
        size = self._size(spec)
        front = np.array([math.sin(desk.yaw), math.cos(desk.yaw)])
        x, z = desk.x + front[0] * (desk.depth / 2 + 0.2), desk.z + front[1] * (desk.depth / 2 + 0.2)
        half = size[0] / 2
        if self._free((x - half, z - half, x + half, z + half), room, blocks=True):
            self._add(spec, room, x, z, desk.yaw + math.pi, size, spec.colours[int(self.rng.integers(len(spec.colours)))])


def furnish_house(rng: np.random.Generator, layout: HouseLayout) -> None:
    """Fill every room of ``layout`` with its furniture (in room order)."""
    placer = _Placer(rng, layout)
    for room in layout.rooms:
        placer.furnish(room)


# ----------------------------------------------------------------------------------------------------
# 3-D scene
# ----------------------------------------------------------------------------------------------------


def _part_mesh(part: Part, obj: HouseObject) -> Any:
    """One part of an object as a trimesh mesh in Habitat's frame."""
    import trimesh

    shape, centre, size, _ = part
    if shape == "sphere":
        mesh = trimesh.creation.icosphere(subdivisions=1, radius=0.5)
        mesh.apply_scale(size)
    else:
        mesh = trimesh.creation.box(extents=size)
    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
    transform = np.array([[c, 0, s, 0], [0, 1, 0, 0], [-s, 0, c, 0], [0, 0, 0, 1]], dtype=np.float64)
    local = np.eye(4)
    local[:3, 3] = centre
    local[1, 3] += obj.elevation
    world = np.eye(4)
    world[:3, 3] = (obj.x, 0.0, obj.z)
    mesh.apply_transform(world @ transform @ local)
    return mesh


def _coloured(mesh: Any, colour: str, metadata: dict[str, Any]) -> Any:
    """``mesh`` converted to the z-up file frame, with a base-colour material and glTF extras."""
    import trimesh
    from trimesh.visual.material import PBRMaterial

    mesh = trimesh.Trimesh(vertices=habitat_to_zup(mesh.vertices), faces=mesh.faces, process=False)
    rgb = COLOURS[colour]
    mesh.visual = trimesh.visual.TextureVisuals(material=PBRMaterial(name=colour, baseColorFactor=[*rgb, 255],
                                                                     metallicFactor=0.0, roughnessFactor=1.0))
    mesh.metadata = metadata
    return mesh


def house_scene(layout: HouseLayout) -> Any:
    """The house as a ``trimesh.Scene`` ready to export as ``.glb`` (see the module docstring)."""
    import trimesh

    scene = trimesh.Scene()
    next_id = 1 + max((o.object_id for o in layout.objects), default=0)

    def add(name: str, mesh: Any, colour: str, metadata: dict[str, Any]) -> None:
        scene.add_geometry(_coloured(mesh, colour, metadata), node_name=name, geom_name=name)

    for room in layout.rooms:
        x0, z0, x1, z1 = room.x0, room.z0, room.x1, room.z1
        centre = ((x0 + x1) / 2, 0.0, (z0 + z1) / 2)
        floor = trimesh.creation.box(extents=(x1 - x0, SLAB, z1 - z0))
        floor.apply_translation((centre[0], -SLAB / 2, centre[2]))
        # The ceiling is one quad facing down: no walkable roof on top of the house.
        h = WALL_HEIGHT
        ceiling = trimesh.Trimesh(vertices=[(x0, h, z0), (x1, h, z0), (x1, h, z1), (x0, h, z1)],
                                  faces=[(0, 1, 2), (0, 2, 3)], process=False)
        floor_colour = FLOOR_COLOURS.get(room.kind, "wood")
        add(f"floor_{room.index}", floor, floor_colour,
            {"category": "floor", "object_id": next_id, "colour": floor_colour, "room": room.name})
        add(f"ceiling_{room.index}", ceiling, "white",
            {"category": "ceiling", "object_id": next_id + 1, "colour": "white", "room": room.name})
        next_id += 2
    walls = []
    for centre, size in layout.walls:
        box = trimesh.creation.box(extents=size)
        box.apply_translation(centre)
        walls.append(box)
    add("walls", trimesh.util.concatenate(walls), layout.wall_colour,
        {"category": "wall", "object_id": next_id, "colour": layout.wall_colour, "room": ""})
    for obj in layout.objects:
        by_colour: dict[str, list[Any]] = {}
        for part in obj.parts:
            by_colour.setdefault(part[3] or obj.colour, []).append(_part_mesh(part, obj))
        room = layout.rooms[obj.room].name
        for colour, meshes in by_colour.items():
            name = f"{obj.category.replace(' ', '_')}_{obj.object_id}_{colour}"
            add(name, trimesh.util.concatenate(meshes), colour,
                {"category": obj.category, "object_id": obj.object_id, "colour": obj.colour, "room": room})
    scene.metadata = {
        "generator": "vlnkit synthetic houses",
        "frame": "habitat (y up); the meshes are stored z-up like Matterport .glb files",
        "name": layout.name,
        "rooms": [{"index": r.index, "type": r.kind, "name": r.name, "bounds": [r.x0, r.z0, r.x1, r.z1]} for r in layout.rooms],
        "doors": [{"rooms": list(d.rooms), "centre": list(d.centre), "width": round(d.hi - d.lo, 3)} for d in layout.doors],
        "objects": [{"object_id": o.object_id, "category": o.category, "colour": o.colour, "room": layout.rooms[o.room].name,
                     "position": [o.x, o.elevation, o.z], "size": [o.width, o.height, o.depth]} for o in layout.objects],
    }
    return scene
