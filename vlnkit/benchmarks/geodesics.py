"""Geodesic accuracy of the mesh backend against an independent exact solver, and query time.

The reference is built from the scene's triangles alone, never from the navmesh: per floor level, the
walkable triangles at that height (projected to ``(x, z)``) eroded by the agent radius at their edges,
minus every other triangle's part in the agent's height band above the floor (``max_climb`` to
``height``), inflated by the radius, all with shapely (arcs as polygons of 64 sides per circle). The
shortest path in that polygon is exact on its visibility graph: the reflex corners of the free space
linked where the segment lies in the free space and is tangent at both ends, plus the start and the goal.

Same-run baseline: the 16-neighbour grid metric of the same navmesh (what vlnkit measured before its
geodesics became any-angle). Errors are ``(vlnkit - reference) / reference`` over random start/goal pairs
on the ground floor of synthetic houses. Query time is one ``geodesic_distance`` call with the goal's
field already computed: ``query_ms`` at the random start (nothing asked nearby before), and
``query_ms_along_path`` at points every 0.25 m along the shortest path, asked in order as an agent's
positions are (earlier answers then bound the search).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

QUICK = {"houses": 2, "pairs": 60}
STEP_M = 0.25
"""Spacing of the query points along each shortest path (VLN-CE's forward step)."""
QUAD_SEGS = 16


def _clip_to_band(tri: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The part of triangle ``tri`` ``(3, 3)`` with ``lo < y < hi``, as a polygon ``(K, 3)`` (K may be 0)."""
    poly = list(tri)
    for bound, keep_below in ((lo, False), (hi, True)):
        out = []
        for i, p in enumerate(poly):
            q = poly[(i + 1) % len(poly)]
            p_in = p[1] <= bound if keep_below else p[1] >= bound
            q_in = q[1] <= bound if keep_below else q[1] >= bound
            if p_in:
                out.append(p)
            if p_in != q_in:
                t = (bound - p[1]) / (q[1] - p[1])
                out.append(p + t * (q - p))
        poly = out
        if not poly:
            break
    return np.array(poly).reshape(-1, 3)


def free_space(triangles: np.ndarray, radius: float, height: float, max_climb: float, max_slope_deg: float,
               level: float) -> Any:
    """The region ``(x, z)`` where the agent's centre may stand on the floor at height ``level``."""
    import shapely
    from shapely.ops import unary_union

    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    walkable = (normals[:, 1] >= math.cos(math.radians(max_slope_deg)) * lengths) & (lengths > 0)
    on_level = np.abs(triangles[:, :, 1] - level).max(axis=1) <= max_climb
    floor = unary_union([shapely.Polygon(t[:, [0, 2]]) for t in triangles[walkable & on_level]])
    parts = []
    for t in triangles[~(walkable & on_level)]:
        piece = _clip_to_band(t, level + max_climb, level + height)
        if len(piece) >= 2:
            flat = piece[:, [0, 2]]
            parts.append(shapely.Polygon(flat) if len(piece) >= 3 and shapely.Polygon(flat).area > 1e-12
                         else shapely.LineString(flat))
    blocked = unary_union(parts).buffer(radius, quad_segs=QUAD_SEGS)
    return floor.buffer(-radius, quad_segs=QUAD_SEGS).difference(blocked)


class ReferenceSolver:
    """Exact shortest paths in one free-space polygon (see the module docstring)."""

    def __init__(self, free: Any) -> None:
        import shapely
        from shapely.geometry.polygon import orient

        polys = list(free.geoms) if hasattr(free, "geoms") else [free]
        self.free = free
        shapely.prepare(free)
        points, prev, nxt = [], [], []
        for poly in polys:
            poly = orient(poly, 1.0)
            for ring in [poly.exterior, *poly.interiors]:
                xy = np.asarray(ring.coords)[:-1]
                a, b = np.roll(xy, 1, axis=0), np.roll(xy, -1, axis=0)
                turn = (xy[:, 0] - a[:, 0]) * (b[:, 1] - xy[:, 1]) - (xy[:, 1] - a[:, 1]) * (b[:, 0] - xy[:, 0])
                reflex = turn < 0
                points.append(xy[reflex])
                prev.append(a[reflex])
                nxt.append(b[reflex])
        self.points = np.concatenate(points)
        self.prev = np.concatenate(prev)
        self.next = np.concatenate(nxt)
        v = len(self.points)
        i, j = np.triu_indices(v, k=1)
        ok = self._tangent(i, self.points[j]) & self._tangent(j, self.points[i])
        i, j = i[ok], j[ok]
        seen = self._visible(self.points[i], self.points[j])
        i, j = i[seen], j[seen]
        from scipy.sparse import csr_matrix

        w = np.linalg.norm(self.points[i] - self.points[j], axis=1)
        self.graph = csr_matrix((np.concatenate([w, w]), (np.concatenate([i, j]), np.concatenate([j, i]))),
                                shape=(v, v))

    def _tangent(self, vertex: np.ndarray, other: np.ndarray) -> np.ndarray:
        """Whether the line from each ``vertex`` to ``other`` leaves both its ring neighbours on one side."""
        p = self.points[vertex]
        d = other - p

        def side(q: np.ndarray) -> np.ndarray:
            e = q - p
            return d[:, 0] * e[:, 1] - d[:, 1] * e[:, 0]

        s1, s2 = side(self.prev[vertex]), side(self.next[vertex])
        return s1 * s2 >= -1e-12

    def _visible(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        import shapely

        if not len(a):
            return np.zeros(0, dtype=bool)
        lines = shapely.linestrings(np.stack([a, b], axis=1))
        return shapely.covers(self.free, lines)

    def distance(self, start: np.ndarray, goal: np.ndarray) -> float:
        """Shortest walking distance from ``start`` to ``goal`` (each ``(x, z)``; ``inf`` if none)."""
        from scipy.sparse import bmat, csr_matrix
        from scipy.sparse.csgraph import dijkstra

        if self._visible(start[None], goal[None])[0]:
            return float(np.linalg.norm(goal - start))
        v = len(self.points)
        links = []
        for q in (start, goal):
            idx = np.arange(v)
            idx = idx[self._tangent(idx, np.repeat(q[None], v, axis=0))]
            idx = idx[self._visible(self.points[idx], np.repeat(q[None], len(idx), axis=0))]
            links.append(csr_matrix((np.linalg.norm(self.points[idx] - q, axis=1), (idx, np.zeros(len(idx), int))),
                                    shape=(v, 1)))
        column = csr_matrix(np.hstack([links[0].toarray(), links[1].toarray()]))
        graph = bmat([[self.graph, column], [column.T, None]]).tocsr()
        return float(dijkstra(graph, directed=False, indices=v)[v + 1])


def run(houses: int = 4, pairs: int = 200, seed: int = 0) -> dict[str, Any]:
    """Mean, p95 and worst relative error of vlnkit's and the grid's geodesics against the reference."""
    from vlnkit.envs.synth.houses import build_house

    rng = np.random.default_rng(seed)
    errors, grid_errors, query_ms, along_ms = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(houses):
            _, _, backend = build_house(seed, index, Path(tmp))
            nav = backend.navmesh
            agent = nav.agent
            ground = np.flatnonzero((nav.component == nav.largest) & (np.abs(nav.height) < 1e-3))
            solver = ReferenceSolver(free_space(backend.scene.geometry.triangles, agent.radius, agent.height,
                                                agent.max_climb, agent.max_slope_deg, 0.0))
            picks = nav.positions[rng.choice(ground, size=(pairs // houses, 2))]
            for start, goal in picks:
                reference = solver.distance(start[[0, 2]], goal[[0, 2]])
                if not math.isfinite(reference) or reference < 0.5:
                    continue
                field = backend.goal_field([goal])
                t0 = time.perf_counter()
                ours = backend.geodesic_distance(start, [goal])
                query_ms.append((time.perf_counter() - t0) * 1e3)
                path = backend.shortest_path(start, [goal])
                for point in _along(path, STEP_M)[1:]:
                    t0 = time.perf_counter()
                    backend.geodesic_distance(point, [goal])
                    along_ms.append((time.perf_counter() - t0) * 1e3)
                grid = nav.grid_distance_at(field, start, nav.locate(start))
                errors.append((ours - reference) / reference)
                grid_errors.append((grid - reference) / reference)
    e, g = np.array(errors), np.array(grid_errors)
    return {
        "name": "geodesics",
        "baseline": "grid: the 16-neighbour grid metric of the same navmesh; reference: exact shapely visibility graph",
        "pairs": int(len(e)),
        "mean_error_pct": round(100 * float(e.mean()), 3),
        "p95_error_pct": round(100 * float(np.percentile(np.abs(e), 95)), 3),
        "worst_error_pct": round(100 * float(np.abs(e).max()), 3),
        "grid_mean_error_pct": round(100 * float(g.mean()), 3),
        "grid_worst_error_pct": round(100 * float(np.abs(g).max()), 3),
        "query_ms": round(float(np.median(query_ms)), 4),
        "query_ms_along_path": round(float(np.median(along_ms)), 4),
    }


def _along(path: np.ndarray, step: float) -> np.ndarray:
    """Points every ``step`` metres along the polyline ``path`` ``(K, 3)``, as an agent's positions."""
    if len(path) < 2:
        return path
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    at = np.concatenate([[0.0], np.cumsum(seg)])
    s = np.arange(0.0, at[-1], step)
    return np.stack([np.interp(s, at, path[:, i]) for i in range(3)], axis=1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``vlnkit bench geodesics``."""
    parser.add_argument("--houses", type=int, default=4, help="synthetic houses to measure on")
    parser.add_argument("--pairs", type=int, default=200, help="start/goal pairs in all")
    parser.add_argument("--seed", type=int, default=0)
