"""Any-angle geodesics on a :class:`~vlnkit.envs.continuous.navmesh.NavMesh`: shortest paths of the agent's
cylinder that bend only around obstacle corners, as habitat-sim's navmesh paths do.

Among obstacles inflated by the agent radius ``r``, a shortest path is straight except where it wraps
around a convex obstacle corner, along the circle of radius ``r`` about it; its straight parts are
tangent to those circles. So the path is a chain of straight segments between *vertices* on those
circles, plus the start and the goal (the visibility graph of the inflated obstacles):

1. Vertices. Around every convex obstacle corner (``NavMesh.corners``), the corners of the regular
   polygon of :data:`ARC_STEPS` sides circumscribing the circle of radius ``r + 1 mm``. Its sides stay
   outside the circle, and a tangent through the nearest polygon corner is longer than the exact one
   by a fraction of a millimetre. A vertex is kept where it stands on the floor and its clearance (to
   the nearest obstacle boundary) is at least ``r``; the ends of each free arc are added too, so that
   the corners of curved obstacles (many small corners, each with a narrow free arc) get vertices.
   Where the eroded border bulges without a corner (round or slanted obstacles), border cells projected
   just outside the radius serve as vertices too.
2. Edges. A segment between two vertices is a candidate only when it is nearly tangent to the circles
   of both ends (within :data:`TANGENT_SLACK`): any other segment would not wrap around the corners it
   joins, so no shortest path uses it. It is kept when it is walkable: every sample along it (every half
   cell) is on a navigable cell, or stands on the floor with a clearance of at least ``r``.
3. Per goal set, one Dijkstra search over the vertex graph plus the goals gives every vertex's distance
   to the nearest goal and its next vertex toward it.
4. A query point's distance is the smallest ``|p - v| + D(v)`` over the goals and the vertices that ``p``
   sees along a tangent. Candidates are tried in increasing order of that value, so the first one in
   sight is the answer. The grid distance
   (16-neighbour Dijkstra) bounds the candidates from above and is the answer where no candidate does
   better (for example on ramps, where a straight segment in ``(x, z)`` is not the shortest on the
   slope). An earlier answer ``d'`` at a point ``p'`` that ``p`` sees bounds them from below: the
   distance changes no faster than one walks, so ``D(p) >= d' - |p - p'|`` (less a small margin), and a
   candidate below that cannot be in sight. Along a trajectory or among the probes of the follower this
   skips most of the candidates behind walls.

The distance reported and the path returned are the same chain, so the geodesic distance always equals
the length of the shortest path.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

if TYPE_CHECKING:
    from vlnkit.envs.continuous.navmesh import NavMesh

VERTEX_MARGIN = 1e-3
"""How far (metres) beyond the agent radius the vertex polygons' sides stay off their corners."""
ARC_STEPS = 32
"""Sides of the polygon that stands for the circle around each obstacle corner."""
ARC_SAMPLES = 4
"""Each polygon side is probed at this many angles, so that a corner whose free arc is narrower than a
side (a corner of a curved obstacle, drawn as many small ones) still gets the vertices at its ends."""
TANGENT_SLACK = math.sin(math.radians(25.0))
"""An edge counts as tangent at a vertex when the cosine between it and the vertex's radius direction is
at most this. A true tangent is within half a polygon step (5.6 degrees) of some corner vertex, but the
radius direction of a border vertex on a curved obstacle is only as good as the nearest boundary
sample; a wider slack only costs visibility checks, never correctness."""
CLEARANCE_SLACK = 1e-4
BULGE_MARGIN = 3e-3
"""How far beyond the agent radius border-cell vertices sit: enough that the chord between two
neighbouring ones on a curved border stays clear of it."""
BULGE_REACH_CELLS = 3
BULGE_NEIGHBOURS = 16
BULGE_FLAT = 2e-4
"""Metres a neighbouring border vertex must stand behind (or may stand in front of) a vertex's tangent
for the border to count as convex there."""
LOWER_BOUND_MARGIN = 0.02
"""Metres taken off the lower bound from an earlier answer (step 4 of the module docstring), for the
vertex polygons' millimetres and rounding."""
RECENT_ANSWERS = 16
"""Earlier answers per goal field kept as sources of lower bounds."""
_PAIR_CHUNK = 4_000_000
_MEMO_SIZE = 4096


@dataclass
class Visibility:
    """The vertex graph of one navmesh (see the module docstring).

    Attributes:
        points: ``(V, 3)`` vertex positions on the floor.
        away: ``(V, 2)`` unit ``(x, z)`` direction from each vertex's obstacle toward the vertex.
        graph: ``(V, V)`` symmetric CSR matrix of walkable tangent edges, weights in metres (3-D).
    """

    points: np.ndarray
    away: np.ndarray
    graph: csr_matrix


@dataclass
class ExactField:
    """Distances of the vertices to one goal set over the vertex graph.

    Attributes:
        goals: ``(G, 3)`` goal points on the floor (graph nodes ``V .. V+G-1``).
        distance: ``(V + G,)`` distance of each vertex (then each goal, 0) to the nearest goal.
        next_node: ``(V + G,)`` the next node toward that goal (-1 at a goal or when unreachable).
    """

    goals: np.ndarray
    distance: np.ndarray
    next_node: np.ndarray
    memo: OrderedDict = field(default_factory=OrderedDict, repr=False)
    recent: np.ndarray = field(default_factory=lambda: np.full((RECENT_ANSWERS, 4), np.nan), repr=False)
    """The latest answered points and their distances ``(x, y, z, d)``, sources of lower bounds."""
    nodes: np.ndarray | None = field(default=None, repr=False)
    """The vertices then the goals, as the graph numbers them (filled on first query)."""


def visible(nav: NavMesh, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For pairs of floor points ``a[i] -> b[i]`` (``(P, 3)`` each), whether the straight segment between
    them is walkable for the agent (step 2 of the module docstring; compiled in :mod:`.sight`)."""
    return nav.sight.visible(a, b, CLEARANCE_SLACK)


def build_visibility(nav: NavMesh) -> Visibility:
    """The vertex graph of ``nav`` (steps 1-2 of the module docstring)."""
    points, away = _arc_vertices(nav)
    bulge_points, bulge_away = _bulge_vertices(nav)
    points, away = np.concatenate([points, bulge_points]), np.concatenate([away, bulge_away])
    v = len(points)
    rows, cols = [], []
    per = max(1, _PAIR_CHUNK // max(v, 1))
    for lo in range(0, v, per):
        i, j = np.meshgrid(np.arange(lo, min(lo + per, v)), np.arange(v), indexing="ij")
        upper = j > i
        i, j = i[upper], j[upper]
        tangent = _tangent(points[j] - points[i], away[i]) & _tangent(points[i] - points[j], away[j])
        rows.append(i[tangent])
        cols.append(j[tangent])
    i = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    j = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    ok = visible(nav, points[i], points[j]) if len(i) else np.zeros(0, dtype=bool)
    i, j = i[ok], j[ok]
    w = np.linalg.norm(points[j] - points[i], axis=1)
    graph = csr_matrix((np.concatenate([w, w]), (np.concatenate([i, j]), np.concatenate([j, i]))), shape=(v, v))
    return Visibility(points=points, away=away, graph=graph)


def _arc_vertices(nav: NavMesh) -> tuple[np.ndarray, np.ndarray]:
    """Vertices around every obstacle corner and their radius directions (step 1 of the module
    docstring): on each corner's polygon, the free probes (on the floor, clearance at least the agent
    radius) that start or end a run of free probes or fall on a polygon corner."""
    radius = nav.agent.radius
    steps = ARC_STEPS * ARC_SAMPLES
    theta = 2 * math.pi * np.arange(steps) / steps
    ring = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    spoke = (radius + VERTEX_MARGIN) / math.cos(math.pi / ARC_STEPS)
    k = len(nav.corners)
    points = np.repeat(nav.corners, steps, axis=0)
    away = np.tile(ring, (k, 1))
    points[:, [0, 2]] += spoke * away
    if not k:
        return points, away
    free = nav.clear(points, CLEARANCE_SLACK).reshape(k, steps)
    ends = free & ~(np.roll(free, 1, axis=1) & np.roll(free, -1, axis=1))
    on_side = np.zeros(steps, dtype=bool)
    on_side[::ARC_SAMPLES] = True
    keep = (free & on_side[None, :]) | ends
    return points[keep.ravel()], away[keep.ravel()]


def _bulge_vertices(nav: NavMesh) -> tuple[np.ndarray, np.ndarray]:
    """Vertices where the eroded floor's border is convex away from any corner (the sides of round or
    slanted obstacles): each border cell projected onto the contour at ``r`` plus
    :data:`BULGE_MARGIN` from its nearest boundary point, kept when no projection nearby stands in
    front of its tangent and some stands behind it (so not on a straight wall, nor in a recess)."""
    radius = nav.agent.radius
    cells = np.flatnonzero((nav.ring < 0).any(axis=1))
    if not len(cells):
        return np.zeros((0, 3)), np.zeros((0, 2))
    centres = nav.positions[cells]
    clearance, nearest = nav.clearance(centres, with_nearest=True)
    close = clearance < radius + 2 * nav.cell_size
    centres, nearest, clearance = centres[close], nearest[close], clearance[close]
    away = (centres - nearest)[:, [0, 2]] / np.maximum(clearance, 1e-12)[:, None]
    points = centres.copy()
    points[:, [0, 2]] = nearest[:, [0, 2]] + (radius + BULGE_MARGIN) * away
    _, first = np.unique(np.round(points / 0.005).astype(np.int64), axis=0, return_index=True)
    first = np.sort(first)
    points, away = points[first], away[first]
    keep = nav.clear(points, CLEARANCE_SLACK)
    points, away = points[keep], away[keep]
    if len(points) < 2:
        return points, away
    tree = cKDTree(points[:, [0, 2]])
    k = min(BULGE_NEIGHBOURS + 1, len(points))
    dist, idx = tree.query(points[:, [0, 2]], k=k, distance_upper_bound=BULGE_REACH_CELLS * nav.cell_size)
    found = (idx < len(points)) & (dist > 0)
    safe = np.where(found, idx, 0)
    level = found & (np.abs(points[safe, 1] - points[:, None, 1]) <= nav.agent.max_climb)
    ahead = ((points[safe] - points[:, None, :])[:, :, [0, 2]] * away[:, None, :]).sum(axis=2)
    front = np.where(level, ahead, -np.inf).max(axis=1)
    behind = np.where(level, ahead, np.inf).min(axis=1)
    convex = (front <= BULGE_FLAT) & (behind < -BULGE_FLAT)
    return points[convex], away[convex]


def _tangent(d: np.ndarray, away: np.ndarray) -> np.ndarray:
    """Whether each segment direction ``d`` ``(P, 3)`` is tangent, at its start vertex, to that vertex's
    corner circle (``away`` ``(P, 2)``: the vertex's radius direction)."""
    flat = d[:, [0, 2]]
    return np.abs((flat * away).sum(axis=1)) <= TANGENT_SLACK * np.linalg.norm(flat, axis=1)


def exact_field(nav: NavMesh, vis: Visibility, goals: np.ndarray) -> ExactField:
    """Distances of all vertices to the nearest of ``goals`` ``(G, 3)`` (step 3 of the module docstring)."""
    goals = np.atleast_2d(np.asarray(goals, dtype=np.float64))
    v, g = len(vis.points), len(goals)
    gi, vi = np.meshgrid(np.arange(g), np.arange(v), indexing="ij")
    gi, vi = gi.ravel(), vi.ravel()
    tangent = _tangent(goals[gi] - vis.points[vi], vis.away[vi])
    gi, vi = gi[tangent], vi[tangent]
    ok = visible(nav, vis.points[vi], goals[gi]) if len(vi) else np.zeros(0, dtype=bool)
    gi, vi = gi[ok] + v, vi[ok]
    w = np.linalg.norm(goals[gi - v] - vis.points[vi], axis=1)
    links = csr_matrix((w, (vi, gi)), shape=(v + g, v + g))
    base = csr_matrix((vis.graph.data, vis.graph.indices, vis.graph.indptr), shape=(v, v))
    base.resize((v + g, v + g))
    graph = (base + links + links.T).tocsr()
    dist, pred, _ = dijkstra(graph, directed=False, indices=np.arange(v, v + g), min_only=True,
                          return_predecessors=True)
    return ExactField(goals=goals, distance=dist.astype(np.float64), next_node=pred.astype(np.int64))


def first_hop(nav: NavMesh, vis: Visibility, field: ExactField, point: np.ndarray, bound: float) -> tuple[float, int]:
    """The distance from ``point`` to the goals through the best node in its sight, and that node
    (``-1`` when no node in sight does better than ``bound``; step 4 of the module docstring)."""
    key = tuple(np.round(point, 5).tolist()) + (round(bound, 6),)
    hit = field.memo.get(key)
    if hit is not None:
        return hit
    distance, node = first_hops(nav, vis, field, np.asarray(point, dtype=np.float64)[None, :], np.array([bound]))
    answer = (float(distance[0]), int(node[0]))
    field.memo[key] = answer
    while len(field.memo) > _MEMO_SIZE:
        field.memo.popitem(last=False)
    return answer


def first_hops(nav: NavMesh, vis: Visibility, field: ExactField, points: np.ndarray,
               bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`first_hop` for many points ``(K, 3)`` with upper bounds ``(K,)``."""
    if field.nodes is None:
        field.nodes = np.ascontiguousarray(np.concatenate([vis.points, field.goals]))
    points = np.atleast_2d(np.asarray(points, dtype=np.float64))
    distance = np.empty(len(points))
    node = np.empty(len(points), dtype=np.int64)
    for k, p in enumerate(points):
        distance[k], node[k] = nav.sight.first_hop(p, field.nodes, field.distance, len(vis.points), vis.away,
                                                   float(bounds[k]), field.recent, LOWER_BOUND_MARGIN,
                                                   TANGENT_SLACK, CLEARANCE_SLACK)
        if node[k] >= 0:
            field.recent[1:] = field.recent[:-1]
            field.recent[0] = (p[0], p[1], p[2], distance[k])
    return distance, node


def chain(vis: Visibility, field: ExactField, point: np.ndarray, node: int) -> np.ndarray:
    """The path ``point -> node -> ... -> goal`` as corner points ``(K, 3)``."""
    nodes = np.concatenate([vis.points, field.goals])
    path = [np.asarray(point, dtype=np.float64), nodes[node]]
    while field.next_node[node] >= 0:
        node = int(field.next_node[node])
        path.append(nodes[node])
    return np.array(path)


def path_length(points: np.ndarray) -> float:
    """Length of a polyline ``(K, 3)`` in metres."""
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum()) if len(points) > 1 else 0.0

