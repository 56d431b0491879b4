"""Procedural street network of the synthetic city.

The city is laid out in its own planar frame ``(u, v)`` in metres: avenues run along ``v`` at uneven
spacing, streets along ``u``, a few diagonal avenues cut across, some streets stop mid-block (dead
ends) or at another street (T-junctions), some run past the city edge into stubs, and a few block
sides are closed. Crossings closer than :data:`MERGE_RADIUS_M` merge into one intersection. Every street
segment between two intersections is then cut into panorama nodes about :data:`NODE_SPACING_M` apart,
joined by links in both directions, and only the largest connected part is kept, so the graph is
strongly connected.

The frame is rotated by a random angle and placed around a fictional origin in the Atlantic; positions
are rounded to the 6 decimals that ``nodes.txt`` stores and every link heading is the integer compass
bearing between the rounded positions of its two nodes, as in the real Touchdown files.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from vlnkit.envs.street.graph import EARTH_RADIUS_M, StreetGraph

NODE_SPACING_M = 10.0
MERGE_RADIUS_M = 15.0
ORIGIN_LAT = 40.5
ORIGIN_LNG = -41.0


@dataclass(frozen=True)
class CityLayout:
    """Size parameters of one city size: extent, block spacing and how irregular the grid is."""

    width_m: float
    height_m: float
    avenue_gap_m: tuple[float, float]
    street_gap_m: tuple[float, float]
    diagonals: int
    partial_share: float = 0.15
    stub_share: float = 0.3
    closed_share: float = 0.05


LAYOUTS: dict[str, CityLayout] = {
    "small": CityLayout(1150.0, 920.0, (110.0, 200.0), (55.0, 100.0), diagonals=1),
    "medium": CityLayout(2350.0, 1900.0, (110.0, 210.0), (55.0, 105.0), diagonals=2),
    "large": CityLayout(4700.0, 3800.0, (110.0, 220.0), (55.0, 110.0), diagonals=4),
}


@dataclass(frozen=True)
class StreetNetwork:
    """The generated street graph with the geometry the scene and route generators need.

    Attributes:
        graph: the panorama graph, nodes in ``nodes.txt`` order.
        xy: node positions in metres (east, north) from the fictional origin, derived from the
            rounded lat/lng that are written, so bearings computed from the files agree with them.
        uv: node positions in the city's own grid frame (metres), used to split the city by area.
        extent: ``(width, height)`` of the grid frame in metres.
        rotation_deg: angle of the grid frame's ``u`` axis counter-clockwise from east.
        segments: each street segment between two intersections or dead ends as its chain of node
            indices, end to end.
    """

    graph: StreetGraph
    xy: np.ndarray
    uv: np.ndarray
    extent: tuple[float, float]
    rotation_deg: float
    segments: tuple[tuple[int, ...], ...]


def bearing_deg(dx: np.ndarray | float, dy: np.ndarray | float) -> np.ndarray:
    """Compass bearing in degrees [0, 360) of an (east, north) displacement."""
    return np.degrees(np.arctan2(dx, dy)) % 360.0


def latlng_to_xy(lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
    """Equirectangular (east, north) metres of WGS84 positions about the fictional origin."""
    north = np.radians(np.asarray(lat) - ORIGIN_LAT) * EARTH_RADIUS_M
    east = np.radians(np.asarray(lng) - ORIGIN_LNG) * EARTH_RADIUS_M * math.cos(math.radians(ORIGIN_LAT))
    return np.stack([east, north], axis=-1)


def xy_to_latlng(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`latlng_to_xy`."""
    lat = ORIGIN_LAT + np.degrees(xy[..., 1] / EARTH_RADIUS_M)
    lng = ORIGIN_LNG + np.degrees(xy[..., 0] / (EARTH_RADIUS_M * math.cos(math.radians(ORIGIN_LAT))))
    return lat, lng


def make_panoids(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct 22-character panorama ids shaped like Street View's (16 random bytes, base64url)."""
    ids: list[str] = []
    taken: set[str] = set()
    while len(ids) < count:
        raw = rng.integers(0, 256, size=(count - len(ids), 16), dtype=np.uint8)
        for row in raw:
            pid = base64.urlsafe_b64encode(row.tobytes()).decode("ascii")[:22]
            if pid not in taken:
                taken.add(pid)
                ids.append(pid)
    return ids


def _gaps(rng: np.random.Generator, total: float, gap: tuple[float, float]) -> list[float]:
    """Positions 0, ... of parallel lines with uneven spacing drawn from ``gap``, the last at or before ``total``."""
    pos = [0.0]
    while True:
        nxt = pos[-1] + float(rng.uniform(*gap))
        if nxt > total:
            return pos
        pos.append(nxt)


def _grid_lines(rng: np.random.Generator, layout: CityLayout) -> list[tuple[np.ndarray, np.ndarray]]:
    """Centre lines of all streets in the grid frame, as (start, end) point pairs."""
    avenues = _gaps(rng, layout.width_m, layout.avenue_gap_m)
    streets = _gaps(rng, layout.height_m, layout.street_gap_m)
    lines: list[tuple[np.ndarray, np.ndarray]] = []
    for fixed, cross, along_u in ((avenues, streets, False), (streets, avenues, True)):
        lo_edge, hi_edge = cross[0], cross[-1]
        for pos in fixed:
            lo, hi = lo_edge, hi_edge
            if rng.random() < layout.stub_share:
                lo -= float(rng.uniform(20.0, 45.0))
            if rng.random() < layout.stub_share:
                hi += float(rng.uniform(20.0, 45.0))
            if rng.random() < layout.partial_share and len(cross) > 3:
                # Stop at another street (T-junction) or in the middle of a block (dead end).
                k = int(rng.integers(1, len(cross) - 1))
                end = cross[k]
                if rng.random() < 0.5:
                    end += float(rng.uniform(0.35, 0.65)) * (cross[k + 1] - cross[k])
                if rng.random() < 0.5:
                    hi = end
                else:
                    lo = end
            a, b = (np.array([lo, pos]), np.array([hi, pos])) if along_u else (np.array([pos, lo]), np.array([pos, hi]))
            lines.append((a, b))
    for _ in range(layout.diagonals):
        centre = np.array([rng.uniform(0.2, 0.8) * layout.width_m, rng.uniform(0.2, 0.8) * layout.height_m])
        angle = math.radians(float(rng.uniform(25.0, 65.0)) * (1 if rng.random() < 0.5 else -1))
        direction = np.array([math.cos(angle), math.sin(angle)])
        ends = _clip_to_box(centre, direction, layout.width_m, layout.height_m)
        lines.append(ends)
    return lines


def _clip_to_box(
    point: np.ndarray, direction: np.ndarray, width: float, height: float
) -> tuple[np.ndarray, np.ndarray]:
    """The segment of the infinite line through ``point`` along ``direction`` inside [0,width]x[0,height]."""
    t_lo, t_hi = -math.inf, math.inf
    for axis, size in ((0, width), (1, height)):
        if abs(direction[axis]) > 1e-12:
            t1 = (0.0 - point[axis]) / direction[axis]
            t2 = (size - point[axis]) / direction[axis]
            t_lo, t_hi = max(t_lo, min(t1, t2)), min(t_hi, max(t1, t2))
    return point + t_lo * direction, point + t_hi * direction


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


def _junction_segments(
    rng: np.random.Generator, lines: list[tuple[np.ndarray, np.ndarray]], closed_share: float
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Intersections and dead ends of the street lines, and the street segments joining them.

    Returns the junction positions and the segments as junction index pairs. Crossings are looked for
    up to :data:`MERGE_RADIUS_M` beyond a line's ends, so a street that stops just short of another
    meets it; crossings closer than that merge.
    """
    crossings: list[tuple[int, float, int, float, np.ndarray]] = []
    lengths = [float(np.linalg.norm(b - a)) for a, b in lines]
    for i, (a1, b1) in enumerate(lines):
        d1 = b1 - a1
        for j in range(i + 1, len(lines)):
            a2, b2 = lines[j]
            d2 = b2 - a2
            denom = _cross(d1, d2)
            if abs(denom) < 1e-9:
                continue
            t = _cross(a2 - a1, d2) / denom
            s = _cross(a2 - a1, d1) / denom
            e1, e2 = MERGE_RADIUS_M / lengths[i], MERGE_RADIUS_M / lengths[j]
            if -e1 <= t <= 1 + e1 and -e2 <= s <= 1 + e2:
                crossings.append((i, t, j, s, a1 + t * d1))
    points = np.array([c[4] for c in crossings]).reshape(-1, 2)
    cluster = _merge_close(points, MERGE_RADIUS_M)
    n_clusters = int(cluster.max()) + 1 if len(cluster) else 0
    centres = np.zeros((n_clusters, 2))
    np.add.at(centres, cluster, points)
    centres /= np.bincount(cluster, minlength=n_clusters)[:, None]

    per_line: list[list[tuple[float, int]]] = [[] for _ in lines]
    for (i, t, j, s, _), c in zip(crossings, cluster.tolist()):
        per_line[i].append((t, c))
        per_line[j].append((s, c))
    junctions = list(centres)
    segments: list[tuple[int, int]] = []
    for li, hits in enumerate(per_line):
        if not hits:
            continue
        first_t: dict[int, float] = {}
        for t, c in sorted(hits):
            first_t.setdefault(c, t)
        chain = [c for c, _ in sorted(first_t.items(), key=lambda kv: (kv[1], kv[0]))]
        ts = sorted(first_t.values())
        a, b = lines[li]
        if ts[0] * lengths[li] > MERGE_RADIUS_M:
            junctions.append(a.copy())
            chain.insert(0, len(junctions) - 1)
        if (1.0 - ts[-1]) * lengths[li] > MERGE_RADIUS_M:
            junctions.append(b.copy())
            chain.append(len(junctions) - 1)
        segments.extend(zip(chain[:-1], chain[1:]))
    unique: dict[tuple[int, int], tuple[int, int]] = {}
    for a, b in segments:
        if a != b:
            unique.setdefault((min(a, b), max(a, b)), (a, b))
    kept = [seg for key, seg in sorted(unique.items()) if not (key[1] < n_clusters and rng.random() < closed_share)]
    return np.array(junctions).reshape(-1, 2), kept


def _merge_close(points: np.ndarray, radius: float) -> np.ndarray:
    """Cluster label per point, joining points closer than ``radius`` (labels in first-seen order)."""
    n = len(points)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    if n:
        pairs = cKDTree(points).query_pairs(radius, output_type="ndarray")
        for a, b in pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))].tolist() if len(pairs) else []:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots = [find(i) for i in range(n)]
    label: dict[int, int] = {}
    return np.array([label.setdefault(r, len(label)) for r in roots], dtype=np.int64)


def _largest_component(n_junctions: int, segments: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The segments of the largest connected part of the junction graph."""
    a = np.array([s[0] for s in segments])
    b = np.array([s[1] for s in segments])
    adj = coo_matrix((np.ones(len(segments)), (a, b)), shape=(n_junctions, n_junctions))
    _, labels = connected_components(adj, directed=False)
    sizes = np.bincount(labels[a], minlength=labels.max() + 1)
    best = int(np.argmax(sizes))
    return [s for s in segments if labels[s[0]] == best]


def build_network(rng: np.random.Generator, layout: CityLayout) -> StreetNetwork:
    """Generate a strongly connected street graph for ``layout`` from ``rng``."""
    lines = _grid_lines(rng, layout)
    junction_uv, segments = _junction_segments(rng, lines, layout.closed_share)
    segments = _largest_component(len(junction_uv), segments)

    used = sorted({j for seg in segments for j in seg})
    node_of_junction = {j: k for k, j in enumerate(used)}
    uv: list[np.ndarray] = [junction_uv[j] for j in used]
    yaw_dir: list[np.ndarray | None] = [None] * len(used)
    link_a: list[int] = []
    link_b: list[int] = []
    chains: list[list[int]] = []
    for ja, jb in segments:
        pa, pb = junction_uv[ja], junction_uv[jb]
        delta = pb - pa
        length = float(np.linalg.norm(delta))
        unit = delta / length
        normal = np.array([-unit[1], unit[0]])
        k = max(1, int(round(length / NODE_SPACING_M)))
        chain = [node_of_junction[ja]]
        for i in range(1, k):
            along = length * i / k + float(rng.uniform(-0.8, 0.8))
            side = float(rng.uniform(-0.25, 0.25))
            uv.append(pa + along * unit + side * normal)
            yaw_dir.append(None)
            chain.append(len(uv) - 1)
        chain.append(node_of_junction[jb])
        drive = unit if rng.random() < 0.5 else -unit
        for node in chain:
            if yaw_dir[node] is None:
                yaw_dir[node] = drive
        chains.append(chain)
        link_a.extend(chain[:-1])
        link_b.extend(chain[1:])

    uv_arr = np.array(uv)
    n = len(uv_arr)
    rotation = float(rng.uniform(-40.0, 40.0))
    cos_r, sin_r = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    rot = np.array([[cos_r, -sin_r], [sin_r, cos_r]])
    centred = uv_arr - np.array([layout.width_m / 2, layout.height_m / 2])
    lat, lng = xy_to_latlng(centred @ rot.T)
    lat, lng = np.round(lat, 6), np.round(lng, 6)
    xy = latlng_to_xy(lat, lng)
    yaw_xy = np.array(yaw_dir) @ rot.T
    yaw = np.round(bearing_deg(yaw_xy[:, 0], yaw_xy[:, 1]) + rng.normal(0.0, 2.0, size=n)) % 360

    order = rng.permutation(n)
    new_index = np.empty(n, dtype=np.int64)
    new_index[order] = np.arange(n)
    # Interleave forward and backward links so each segment's two directions sit together.
    src = np.stack([np.array(link_a), np.array(link_b)], axis=1).ravel()
    dst = np.stack([np.array(link_b), np.array(link_a)], axis=1).ravel()
    d = xy[dst] - xy[src]
    heading = np.round(bearing_deg(d[:, 0], d[:, 1])) % 360
    graph = StreetGraph.from_arrays(
        make_panoids(rng, n),
        yaw=yaw[order],
        lat=lat[order],
        lng=lng[order],
        seen=None,
        link_src=new_index[src],
        link_dst=new_index[dst],
        link_heading=heading,
    )
    return StreetNetwork(
        graph=graph,
        xy=xy[order],
        uv=uv_arr[order],
        extent=(layout.width_m, layout.height_m),
        rotation_deg=rotation,
        segments=tuple(tuple(int(new_index[i]) for i in chain) for chain in chains),
    )
