"""Buildings and street objects of the synthetic city, and what each panorama sees of them.

Buildings line both sides of every street segment: storefronts with a colour and sign text (banks,
cafes, pharmacies, ...) and plain buildings (apartment blocks, churches, ...), some covered by
scaffolding. Street objects stand on the kerb (trees, fire hydrants, mailboxes, bus stops, benches,
parked cars, ...) and at intersections (traffic lights at signalised junctions, stop signs at others).

Two files describe the scene beside the graph, for renderers, perception and instruction generators:

``graph/landmarks.json``
    A JSON list, one object per landmark::

        {"id": "lm000042", "category": "bank", "kind": "storefront", "colour": "red",
         "text": "Harbor Savings Bank", "lat": 40.5012345, "lng": -41.0023456,
         "facing": 215, "size": [14.2, 18.0, 22.4]}

    ``kind`` is ``storefront``, ``building`` or ``object``; ``text`` is the sign text or ``null``;
    ``lat``/``lng`` locate the facade centre of a building or the foot of an object; ``facing`` is the
    integer compass heading its front faces (buildings and kerb objects face the street, parked cars
    face the traffic direction, junction objects face the crossing); ``size`` is
    ``[width, depth, height]`` in metres (a building's width is its street frontage).

``graph/scene.jsonl``
    One JSON line per node, in ``nodes.txt`` order::

        {"panoid": "...", "landmarks": [{"id": "lm000042", "category": "bank", "colour": "red",
         "text": "Harbor Savings Bank", "heading": 87.4, "distance": 12.3}, ...]}

    listing every landmark within :data:`VISIBILITY_RADIUS_M` metres of the panorama, nearest first;
    ``heading`` is the absolute compass bearing from the panorama to the landmark in degrees [0, 360)
    and ``distance`` the distance in metres (both rounded to 0.1).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.spatial import cKDTree

from vlnkit.envs.synth.network import StreetNetwork, bearing_deg, xy_to_latlng

VISIBILITY_RADIUS_M = 25.0

FIRST_NAMES = (
    "Rosa", "Joe", "Mia", "Sam", "Ana", "Leo", "Nina", "Omar", "Lucy", "Ravi", "Hana", "Theo", "Ivy", "Marco",
    "Yuki", "Zoe",
)
SURNAMES = (
    "Miller", "Chen", "Garcia", "Okafor", "Rossi", "Novak", "Kim", "Patel", "Murphy", "Silva", "Cohen",
    "Larsen", "Moreau", "Tanaka", "Haddad", "Kowalski",
)
PLACES = (
    "Elm", "Harbor", "Maple", "Union", "Park", "River", "Liberty", "Grand", "Summit", "Lake", "Oak", "Cedar",
    "Bay", "Bridge", "Market", "Orchard",
)
ADJECTIVES = (
    "Golden", "Little", "Happy", "Silver", "Lucky", "Old", "Sunny", "Corner", "Daily", "Urban", "Royal",
    "Velvet", "Copper", "Bright", "Quiet", "Wild",
)

SHOP_COLOURS = ("red", "blue", "green", "yellow", "white", "black", "orange", "purple", "grey", "brown")
BUILDING_COLOURS = ("white", "grey", "brown", "beige", "red", "yellow", "black", "blue", "green")


@dataclass(frozen=True)
class Category:
    """A kind of landmark: how it looks, how large it is and how often instructions mention it.

    Attributes:
        name: the category label used in files and instructions ("fire hydrant").
        kind: ``storefront``, ``building`` or ``object``.
        colours: the colours it comes in.
        size: typical ``(width, depth, height)`` in metres (buildings draw their own).
        salience: relative weight for being mentioned in an instruction (0: never on its own).
        signs: sign text patterns with ``{first}``, ``{surname}``, ``{place}``, ``{adj}`` slots.
    """

    name: str
    kind: str
    colours: tuple[str, ...]
    size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    salience: float = 1.0
    signs: tuple[str, ...] = ()


def _shop(name: str, *signs: str, salience: float = 3.0) -> Category:
    return Category(name, "storefront", SHOP_COLOURS, salience=salience, signs=signs)


STOREFRONTS: tuple[Category, ...] = (
    _shop("bank", "{place} Savings Bank", "First {place} Bank", "{surname} Trust"),
    _shop("cafe", "{first}'s Cafe", "The {adj} Bean", "{place} Coffee", "Cafe {surname}"),
    _shop("pharmacy", "{place} Pharmacy", "{surname} Drugs", "{adj} Cross Pharmacy"),
    _shop("restaurant", "{surname}'s Kitchen", "The {adj} Table", "{place} Grill"),
    _shop("bakery", "{first}'s Bakery", "{adj} Crust Bakery", "{place} Bread Co."),
    _shop("bookstore", "{place} Books", "The {adj} Page", "{surname} Books"),
    _shop("hotel", "Hotel {surname}", "The {place} Hotel", "{place} Inn"),
    _shop("grocery store", "{place} Market", "{surname} Grocery", "{adj} Basket Foods"),
    _shop("pizzeria", "{first}'s Pizza", "{place} Pizza", "Pizza {surname}"),
    _shop("bar", "The {adj} Tap", "{surname}'s Pub", "{place} Tavern"),
    _shop("barber shop", "{first}'s Barbers", "{place} Cuts"),
    _shop("laundromat", "{place} Laundromat", "{adj} Suds Laundry"),
    _shop("flower shop", "{first}'s Flowers", "{adj} Petal Florist"),
    _shop("shoe store", "{place} Shoes", "{surname} Footwear"),
    _shop("hardware store", "{place} Hardware", "{surname} Tools"),
    _shop("gym", "{place} Fitness", "{adj} Iron Gym"),
    _shop("deli", "{first}'s Deli", "{place} Deli"),
    _shop("ice cream shop", "{adj} Scoop", "{first}'s Ice Cream"),
    _shop("jewelry store", "{surname} Jewelers", "{adj} Ring Jewelry"),
    _shop("clothing store", "{place} Outfitters", "{surname} & Co."),
    _shop("pet shop", "{place} Pets", "{adj} Paw Pet Supply"),
    _shop("post office", "{place} Post Office"),
    _shop("cinema", "{place} Cinema", "The {adj} Screen"),
)

BUILDINGS: tuple[tuple[Category, float], ...] = (
    (Category("apartment building", "building", BUILDING_COLOURS, salience=0.5), 5.0),
    (Category("office building", "building", BUILDING_COLOURS, salience=0.7), 2.0),
    (Category("townhouse", "building", BUILDING_COLOURS, salience=0.3), 2.0),
    (Category("church", "building", ("white", "grey", "brown", "red"), salience=3.0), 0.3),
    (Category("school", "building", ("red", "brown", "yellow", "white"), salience=2.5), 0.3),
    (Category("warehouse", "building", ("grey", "brown", "white", "blue"), salience=0.7), 0.6),
    (Category("parking garage", "building", ("grey", "white", "black"), salience=2.0, signs=("{place} Parking",)), 0.4),
)

SCAFFOLDING = Category("scaffolding", "object", ("green", "blue", "grey", "white", "black"), salience=2.0)
TREE = Category("tree", "object", ("green",), (3.0, 3.0, 8.0), salience=0.5)
TRAFFIC_LIGHT = Category("traffic light", "object", ("yellow", "black", "grey"), (0.5, 0.5, 5.0), salience=0.0)
STOP_SIGN = Category("stop sign", "object", ("red",), (0.75, 0.1, 2.5), salience=1.0, signs=("STOP",))
CAR_COLOURS = ("white", "black", "silver", "red", "blue", "grey", "yellow", "green")
PARKED_CAR = Category("parked car", "object", CAR_COLOURS, (4.5, 1.8, 1.5))

# Kerb objects: category, chance per street side, most per side.
KERB_OBJECTS: tuple[tuple[Category, float, int], ...] = (
    (Category("fire hydrant", "object", ("red", "yellow", "silver"), (0.4, 0.4, 0.8), salience=2.0), 0.5, 1),
    (Category("mailbox", "object", ("blue", "blue", "blue", "red", "green"), (0.5, 0.5, 1.2), salience=2.0), 0.15, 1),
    (Category("bus stop", "object", ("blue", "grey", "green"), (4.0, 1.5, 2.5), 2.5, ("Bus {route}",)), 0.08, 1),
    (Category("bench", "object", ("green", "brown", "black", "red"), (1.8, 0.6, 0.9), salience=1.5), 0.15, 2),
    (Category("trash can", "object", ("green", "black", "grey"), (0.6, 0.6, 1.0), salience=0.5), 0.2, 2),
    (Category("newsstand", "object", ("green", "red", "yellow"), (3.0, 2.0, 2.5), 2.0, ("NEWS",)), 0.05, 1),
    (Category("phone booth", "object", ("silver", "red"), (1.0, 1.0, 2.2), salience=2.0), 0.04, 1),
    (Category("bike rack", "object", ("silver", "blue", "black"), (3.0, 0.6, 0.9), salience=1.0), 0.08, 1),
    (Category("food cart", "object", ("silver", "yellow", "red"), (2.5, 1.5, 2.2), salience=2.5,
              signs=("Halal Food", "Hot Dogs", "Tacos", "Pretzels", "Coffee & Donuts")), 0.06, 1),
    (Category("planter", "object", ("brown", "grey", "orange"), (1.0, 1.0, 0.8), salience=1.0), 0.08, 2),
    (Category("construction barrier", "object", ("orange", "white"), (2.0, 0.5, 1.0), salience=1.5), 0.05, 2),
)

ALL_CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in (
        *STOREFRONTS,
        *(b for b, _ in BUILDINGS),
        SCAFFOLDING,
        TREE,
        TRAFFIC_LIGHT,
        STOP_SIGN,
        PARKED_CAR,
        *(k for k, _, _ in KERB_OBJECTS),
    )
}

FACADE_OFFSET_M = 9.5
KERB_OFFSET_M = 6.5
PARKING_OFFSET_M = 4.2
CORNER_OFFSET_M = 8.0
JUNCTION_MARGIN_M = 12.0


@dataclass(frozen=True)
class Scene:
    """All landmarks of the city and, per node, the landmarks visible from it.

    Attributes:
        ids, category, kind, colour, text: per-landmark attributes (``text`` is ``None`` without a sign).
        xy: landmark positions in metres (east, north) from the fictional origin.
        facing: integer compass heading each landmark's front faces.
        size: ``(width, depth, height)`` per landmark in metres.
        vis_ptr: ``vis_ptr[i]:vis_ptr[i+1]`` indexes the landmarks visible from node ``i``.
        vis_landmark, vis_heading, vis_distance: visible landmark index, compass bearing from the node
            (degrees) and distance (metres), nearest first per node, rounded as written.
        light_at: per node, the index of a traffic light standing at that intersection, or -1.
    """

    ids: tuple[str, ...]
    category: tuple[str, ...]
    kind: tuple[str, ...]
    colour: tuple[str, ...]
    text: tuple[str | None, ...]
    xy: np.ndarray
    facing: np.ndarray
    size: np.ndarray
    vis_ptr: np.ndarray
    vis_landmark: np.ndarray
    vis_heading: np.ndarray
    vis_distance: np.ndarray
    light_at: np.ndarray

    @property
    def num_landmarks(self) -> int:
        """Number of landmarks."""
        return len(self.ids)

    def visible(self, node: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Landmark indices, bearings and distances visible from ``node``, nearest first."""
        a, b = self.vis_ptr[node], self.vis_ptr[node + 1]
        return self.vis_landmark[a:b], self.vis_heading[a:b], self.vis_distance[a:b]


class _Placed(NamedTuple):
    """One placed landmark before filtering; ``clearance`` is the distance it needs from every node."""

    category: Category
    colour: str
    text: str | None
    x: float
    y: float
    facing: float
    size: tuple[float, float, float]
    clearance: float


class _Placer:
    """Collects landmarks as they are placed, drawing their colours and sign texts."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.rows: list[_Placed] = []

    def sign(self, category: Category) -> str | None:
        """A sign text for ``category`` from its patterns, or ``None`` when it has none."""
        if not category.signs:
            return None
        pattern = category.signs[int(self.rng.integers(len(category.signs)))]
        return pattern.format(
            first=FIRST_NAMES[int(self.rng.integers(len(FIRST_NAMES)))],
            surname=SURNAMES[int(self.rng.integers(len(SURNAMES)))],
            place=PLACES[int(self.rng.integers(len(PLACES)))],
            adj=ADJECTIVES[int(self.rng.integers(len(ADJECTIVES)))],
            route=int(self.rng.integers(1, 120)),
        )

    def add(
        self,
        category: Category,
        pos: np.ndarray,
        facing_vec: np.ndarray,
        clearance: float,
        size: tuple[float, float, float] | None = None,
    ) -> None:
        """Place a landmark of ``category`` at ``pos`` with its front toward ``facing_vec``."""
        colour = category.colours[int(self.rng.integers(len(category.colours)))]
        text = self.sign(category)
        facing = float(bearing_deg(facing_vec[0], facing_vec[1]))
        x, y = float(pos[0]), float(pos[1])
        self.rows.append(_Placed(category, colour, text, x, y, facing, size or category.size, clearance))


def _place_along_segment(placer: _Placer, start: np.ndarray, end: np.ndarray) -> None:
    """Buildings on both sides of one street segment, and the kerb objects in front of them."""
    rng = placer.rng
    delta = end - start
    length = float(np.linalg.norm(delta))
    unit = delta / length
    left = np.array([-unit[1], unit[0]])
    building_weights = np.array([w for _, w in BUILDINGS])
    building_weights /= building_weights.sum()
    for side in (1.0, -1.0):
        normal = side * left
        along = JUNCTION_MARGIN_M
        while along < length - JUNCTION_MARGIN_M - 6.0:
            width = min(float(rng.uniform(8.0, 22.0)), length - JUNCTION_MARGIN_M - along)
            centre = start + (along + width / 2) * unit
            if rng.random() < 0.55:
                category = STOREFRONTS[int(rng.integers(len(STOREFRONTS)))]
                height = float(rng.uniform(6.0, 25.0))
            else:
                category = BUILDINGS[int(rng.choice(len(BUILDINGS), p=building_weights))][0]
                height = float(rng.uniform(8.0, 60.0))
            size = (round(width, 1), round(float(rng.uniform(10.0, 25.0)), 1), round(height, 1))
            placer.add(category, centre + FACADE_OFFSET_M * normal, -normal, FACADE_OFFSET_M - 1.5, size)
            if rng.random() < 0.07:
                scaffold = (size[0], 1.5, round(float(rng.uniform(4.0, 8.0)), 1))
                front = centre + (FACADE_OFFSET_M - 1.0) * normal
                placer.add(SCAFFOLDING, front, -normal, FACADE_OFFSET_M - 2.5, scaffold)
            along += width
        if length < 2 * JUNCTION_MARGIN_M:
            continue
        lo, hi = 10.0, length - 10.0
        if rng.random() < 0.4:
            pos = lo + float(rng.uniform(0.0, 6.0))
            while pos < hi:
                placer.add(TREE, start + pos * unit + KERB_OFFSET_M * normal, -normal, KERB_OFFSET_M - 1.5)
                pos += float(rng.uniform(12.0, 20.0))
        for category, chance, most in KERB_OBJECTS:
            for _ in range(most):
                if rng.random() < chance:
                    pos = float(rng.uniform(lo, hi))
                    placer.add(category, start + pos * unit + KERB_OFFSET_M * normal, -normal, KERB_OFFSET_M - 1.5)
        if rng.random() < 0.35:
            for _ in range(int(rng.integers(1, 4))):
                pos = float(rng.uniform(lo, hi))
                # Cars park on the right of their lane, facing the traffic direction of that side.
                spot = start + pos * unit + PARKING_OFFSET_M * normal
                placer.add(PARKED_CAR, spot, -side * unit, PARKING_OFFSET_M - 1.2)


def _place_at_junction(placer: _Placer, net: StreetNetwork, node: int) -> int:
    """Traffic lights (signalised crossings) or a stop sign at an intersection's corners.

    Returns the number of traffic lights placed.
    """
    rng = placer.rng
    _, headings = net.graph.out_links(node)
    order = np.sort(headings)
    gaps = np.diff(np.append(order, order[0] + 360.0))
    corners = [float(order[i] + gaps[i] / 2) % 360.0 for i in range(len(order)) if gaps[i] >= 60.0]
    if not corners:
        return 0
    picks = rng.permutation(len(corners))
    here = net.xy[node]
    signalised = rng.random() < 0.55
    chosen = picks[:2] if signalised else picks[:1] if rng.random() < 0.35 else picks[:0]
    for c in sorted(chosen.tolist()):
        rad = math.radians(corners[c])
        out = np.array([math.sin(rad), math.cos(rad)])
        placer.add(TRAFFIC_LIGHT if signalised else STOP_SIGN, here + CORNER_OFFSET_M * out, -out, 4.0)
    return len(chosen) if signalised else 0


def build_scene(rng: np.random.Generator, net: StreetNetwork) -> Scene:
    """Place buildings and street objects along ``net`` and compute what every node sees."""
    placer = _Placer(rng)
    for chain in net.segments:
        _place_along_segment(placer, net.xy[chain[0]], net.xy[chain[-1]])
    junction_of_row: dict[int, int] = {}
    for node in np.flatnonzero(net.graph.out_degree >= 3).tolist():
        first = len(placer.rows)
        for row in range(first, first + _place_at_junction(placer, net, node)):
            junction_of_row[row] = node

    pos = np.array([[r.x, r.y] for r in placer.rows])
    clearance = np.array([r.clearance for r in placer.rows])
    nearest, _ = cKDTree(net.xy).query(pos)
    keep = np.flatnonzero(nearest >= clearance)
    rows = [placer.rows[i] for i in keep.tolist()]
    light_at = np.full(net.graph.num_nodes, -1, dtype=np.int64)
    for new, old in enumerate(keep.tolist()):
        node = junction_of_row.get(old)
        if node is not None and light_at[node] < 0:
            light_at[node] = new
    xy = pos[keep]

    groups = cKDTree(xy).query_ball_point(net.xy, r=VISIBILITY_RADIUS_M)
    counts = np.array([len(g) for g in groups], dtype=np.int64)
    vis_ptr = np.zeros(len(groups) + 1, dtype=np.int64)
    np.cumsum(counts, out=vis_ptr[1:])
    flat = np.fromiter((i for g in groups for i in sorted(g)), dtype=np.int64, count=int(vis_ptr[-1]))
    owner = np.repeat(np.arange(len(groups)), counts)
    d = xy[flat] - net.xy[owner]
    dist = np.round(np.hypot(d[:, 0], d[:, 1]), 1)
    heading = np.round(bearing_deg(d[:, 0], d[:, 1]), 1) % 360.0
    order = np.lexsort((flat, dist, owner))
    return Scene(
        ids=tuple(f"lm{i:06d}" for i in range(len(rows))),
        category=tuple(r.category.name for r in rows),
        kind=tuple(r.category.kind for r in rows),
        colour=tuple(r.colour for r in rows),
        text=tuple(r.text for r in rows),
        xy=xy,
        facing=np.array([int(round(r.facing)) % 360 for r in rows], dtype=np.int64),
        size=np.array([r.size for r in rows], dtype=np.float64).reshape(-1, 3),
        vis_ptr=vis_ptr,
        vis_landmark=flat[order],
        vis_heading=heading[order],
        vis_distance=dist[order],
        light_at=light_at,
    )


def landmarks_json(scene: Scene) -> str:
    """The text of ``graph/landmarks.json``: a JSON list with one landmark object per line."""
    lat, lng = xy_to_latlng(scene.xy)
    lines = []
    for i in range(scene.num_landmarks):
        record = {
            "id": scene.ids[i],
            "category": scene.category[i],
            "kind": scene.kind[i],
            "colour": scene.colour[i],
            "text": scene.text[i],
            "lat": round(float(lat[i]), 7),
            "lng": round(float(lng[i]), 7),
            "facing": int(scene.facing[i]),
            "size": [round(float(v), 1) for v in scene.size[i]],
        }
        lines.append(json.dumps(record, ensure_ascii=False))
    return "[\n" + ",\n".join(lines) + "\n]\n"


def scene_jsonl(scene: Scene, panoids: tuple[str, ...]) -> str:
    """The text of ``graph/scene.jsonl``: per node (in ``panoids`` order) the landmarks it sees."""
    heads = [
        json.dumps(
            {"id": scene.ids[i], "category": scene.category[i], "colour": scene.colour[i], "text": scene.text[i]},
            ensure_ascii=False,
        )[:-1]
        for i in range(scene.num_landmarks)
    ]
    out = []
    for node, pid in enumerate(panoids):
        lms, hs, ds = scene.visible(node)
        items = ", ".join(
            f'{heads[i]}, "heading": {h!r}, "distance": {d!r}}}'
            for i, h, d in zip(lms.tolist(), hs.tolist(), ds.tolist())
        )
        out.append(f'{{"panoid": {json.dumps(pid)}, "landmarks": [{items}]}}\n')
    return "".join(out)
