"""The navigable floor of a scene for a cylinder agent, and geodesics on it.

:func:`build_navmesh` turns a triangle soup into a grid of floor cells, in the spirit of Recast (which
builds habitat-sim's navmesh) with the same parameters:

1. Every triangle is sampled densely enough (half a cell across, half a cell height up) that each
   column of ``cell_size x cell_size`` and each ``cell_height`` slice it crosses gets a sample; samples
   of triangles no steeper than ``max_slope_deg`` are walkable.
2. In each column, the occupied slices form solid runs. The top of a run is a floor candidate when its
   top slice holds a walkable sample; it is a floor cell when the next run above leaves at least the
   agent's height of headroom. A column may hold several floor cells (storeys, tables).
3. Floor cells in neighbouring columns are linked when their heights differ by at most ``max_climb``.
   The sides of a cell that misses one of its 8 links face an obstacle (wall, drop, edge of the mesh);
   where that neighbouring column holds wall samples, the side is moved onto the wall's face. These
   sides, sampled every quarter cell, are the obstacle boundary. A cell is eroded when the horizontal
   Euclidean distance from its centre to the boundary of its own level is below the agent's radius,
   so the agent keeps exactly its radius from walls, to within a cell's quantisation.
4. The remaining cells are linked to their 16 neighbours (the 8 around plus the 8 knight moves, each
   only when the cells it crosses are navigable, so paths do not cut corners), weighted by 3-D length.
   Geodesic distances from a goal are one Dijkstra search on that graph with
   :func:`scipy.sparse.csgraph.dijkstra`; with knight moves a grid path is at most about 2.7% longer
   than the straight line.

Positions between cell centres are answered by the nearest cells: geodesic distance is the minimum over
the cell of the point and its 8 neighbours of the cell's distance plus the straight hop to it.
Motion along the floor samples the segment every half cell; it stops before the first sample off the
floor or across a step higher than ``max_climb``. Sliding walks the blocked remainder of a motion again
along the wall's tangent (the wall's normal pointing from the nearest boundary point to the cell)
and along each axis, keeping the end closest to the target.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, dijkstra
from scipy.spatial import cKDTree

from vlnkit.envs.continuous.backend import AgentSpec

RING8: tuple[tuple[int, int], ...] = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1))
KNIGHT: tuple[tuple[int, int], ...] = ((1, 2), (2, 1), (-1, 2), (-2, 1), (1, -2), (2, -1), (-1, -2), (-2, -1))
OFFSETS16 = RING8 + KNIGHT
_CHUNK_POINTS = 3_000_000
SNAP_HEIGHT_TOLERANCE = 0.5
"""How far (metres) above or below a floor cell a point may be and still be on that cell."""


@dataclass(frozen=True)
class NavMeshSettings:
    """Grid resolution of the navigable floor.

    Attributes:
        cell_size: column width in metres (habitat-sim's navmesh default, 0.05).
        cell_height: slice height in metres used to find solid runs and headroom.
        max_cells: when the scene's footprint would need more columns than this, the cell size grows
            to fit (large outdoor planes), keeping memory and build time bounded.
    """

    cell_size: float = 0.05
    cell_height: float = 0.1
    max_cells: int = 1_000_000


@dataclass
class GoalField:
    """Geodesic distance of every floor cell to a goal set, and each cell's next cell toward it."""

    distance: np.ndarray
    next_cell: np.ndarray


@dataclass
class NavMesh:
    """A navigable floor grid (see the module docstring). Cells are sorted by column, then height.

    Attributes:
        origin: ``(x, y, z)`` of the grid's corner; column ``(i, k)`` spans
            ``x in origin.x + [i, i+1) * cell_size`` and ``z in origin.z + [k, k+1) * cell_size``.
        cell_size: column width in metres.
        shape: ``(nx, nz)`` columns.
        ix, iz: column of each cell; height: floor height of each cell (metres).
        column_start: cells of column ``c = ix * nz + iz`` are ``column_start[c]:column_start[c+1]``.
        graph: the 16-neighbour graph (CSR, symmetric, weights in metres).
        ring: ``(n, 8)`` index of the linked cell in each :data:`RING8` direction, or -1.
        component: connected-component label of each cell; largest: the label with most cells.
        wall_normal: ``(n, 2)`` unit ``(x, z)`` direction away from the nearest border (zeros far from one).
        agent: the agent the floor was eroded for.
    """

    origin: np.ndarray
    cell_size: float
    shape: tuple[int, int]
    ix: np.ndarray
    iz: np.ndarray
    height: np.ndarray
    column_start: np.ndarray
    graph: csr_matrix
    ring: np.ndarray
    component: np.ndarray
    largest: int
    wall_normal: np.ndarray
    agent: AgentSpec
    _tree: cKDTree | None = field(default=None, repr=False)
    _positions: np.ndarray | None = field(default=None, repr=False)

    @property
    def num_cells(self) -> int:
        """Number of navigable cells."""
        return len(self.height)

    @property
    def positions(self) -> np.ndarray:
        """``(n, 3)`` centre of each cell on the floor."""
        if self._positions is None:
            cs = self.cell_size
            self._positions = np.stack(
                [self.origin[0] + (self.ix + 0.5) * cs, self.height.astype(np.float64), self.origin[2] + (self.iz + 0.5) * cs],
                axis=1,
            )
        return self._positions

    def columns(self, points: np.ndarray) -> np.ndarray:
        """Column index of each point ``(N, 3)`` (-1 outside the grid)."""
        cs = self.cell_size
        i = np.floor((points[:, 0] - self.origin[0]) / cs).astype(np.int64)
        k = np.floor((points[:, 2] - self.origin[2]) / cs).astype(np.int64)
        inside = (i >= 0) & (i < self.shape[0]) & (k >= 0) & (k < self.shape[1])
        return np.where(inside, i * self.shape[1] + k, -1)

    def cells_at(self, points: np.ndarray, heights: np.ndarray) -> np.ndarray:
        """For each point, the cell of its column whose floor is nearest to ``heights`` (within
        :data:`SNAP_HEIGHT_TOLERANCE`), or -1."""
        cols = self.columns(points)
        ok = cols >= 0
        lo = np.where(ok, self.column_start[np.maximum(cols, 0)], 0)
        hi = np.where(ok, self.column_start[np.maximum(cols, 0) + 1], 0)
        best = np.full(len(points), -1, dtype=np.int64)
        best_dh = np.full(len(points), SNAP_HEIGHT_TOLERANCE)
        for k in range(int((hi - lo).max(initial=0))):
            cand = lo + k
            valid = cand < hi
            dh = np.where(valid, np.abs(self.height[np.minimum(cand, self.num_cells - 1)] - heights), np.inf)
            better = valid & (dh <= best_dh)
            best[better] = cand[better]
            best_dh[better] = dh[better]
        return best

    def locate(self, point: Sequence[float]) -> int:
        """The cell under ``point`` (-1 when it is not on the floor); the scalar twin of :meth:`cells_at`."""
        y = float(point[1])
        fi = (float(point[0]) - float(self.origin[0])) / self.cell_size
        fk = (float(point[2]) - float(self.origin[2])) / self.cell_size
        if not (math.isfinite(fi) and math.isfinite(fk)):
            return -1
        i, k = math.floor(fi), math.floor(fk)
        if not (0 <= i < self.shape[0] and 0 <= k < self.shape[1]):
            return -1
        column = i * self.shape[1] + k
        best, best_dh = -1, SNAP_HEIGHT_TOLERANCE
        for cell in range(int(self.column_start[column]), int(self.column_start[column + 1])):
            dh = abs(float(self.height[cell]) - y)
            if dh <= best_dh:
                best, best_dh = cell, dh
        return best

    def snap_cell(self, point: np.ndarray) -> int:
        """The cell under ``point``, else the cell whose centre is nearest to it, however far (callers
        that take positions from data check the distance). Raises ``ValueError`` for a point whose
        distance to the floor cannot be computed (not finite, or so far out that it overflows)."""
        cell = self.locate(point)
        if cell >= 0:
            return cell
        if self._tree is None:
            self._tree = cKDTree(self.positions)
        p = np.asarray(point, dtype=np.float64)
        distance, nearest = self._tree.query(p) if np.isfinite(p).all() else (math.inf, -1)
        if not math.isfinite(distance):
            raise ValueError(f"position {p.tolist()} has no nearest floor cell: its distance to the floor is not finite")
        return int(nearest)

    def walk(self, start: np.ndarray, end: np.ndarray, start_cell: int) -> tuple[np.ndarray, int, bool]:
        """Walk the straight line from ``start`` (on ``start_cell``) toward ``end`` (only its ``x, z``
        matter). Returns the last reachable point (on the floor height), its cell, and whether the
        line was blocked before ``end``."""
        delta = np.array([end[0] - start[0], 0.0, end[2] - start[2]])
        length = math.hypot(delta[0], delta[2])
        base_h = float(self.height[start_cell])
        if length < 1e-9:
            return np.array([start[0], base_h, start[2]]), start_cell, False
        n = max(1, math.ceil(length / (0.5 * self.cell_size)))
        t = np.arange(1, n + 1, dtype=np.float64) / n
        pts = start[None, :] + t[:, None] * delta[None, :]
        cells = self.cells_at(pts, np.full(n, base_h))
        chain = np.concatenate([[start_cell], cells])
        heights = np.where(chain >= 0, self.height[np.maximum(chain, 0)], np.nan)
        bad = (cells < 0) | ~(np.abs(np.diff(heights)) <= self.agent.max_climb)
        if not bad.any():
            last = int(cells[-1])
            return np.array([end[0], float(self.height[last]), end[2]]), last, False
        first = int(np.argmax(bad))
        if first == 0:
            return np.array([start[0], base_h, start[2]]), start_cell, True
        cell = int(cells[first - 1])
        p = pts[first - 1]
        return np.array([p[0], float(self.height[cell]), p[2]]), cell, True

    def walk_many(self, start: np.ndarray, ends: np.ndarray, start_cell: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`walk` from one start toward many ``ends`` ``(K, 3)`` at once: the points reached ``(K, 3)``
        and their cells ``(K,)``."""
        delta = ends - start[None, :]
        delta[:, 1] = 0.0
        length = float(np.hypot(delta[:, 0], delta[:, 2]).max(initial=0.0))
        n = max(1, math.ceil(length / (0.5 * self.cell_size)))
        t = np.arange(1, n + 1, dtype=np.float64) / n
        pts = start[None, None, :] + t[None, :, None] * delta[:, None, :]
        base_h = float(self.height[start_cell])
        cells = self.cells_at(pts.reshape(-1, 3), np.full(pts.shape[0] * n, base_h)).reshape(-1, n)
        chain = np.concatenate([np.full((len(ends), 1), start_cell), cells], axis=1)
        heights = np.where(chain >= 0, self.height[np.maximum(chain, 0)], np.nan)
        bad = (cells < 0) | ~(np.abs(np.diff(heights, axis=1)) <= self.agent.max_climb)
        reach = np.where(bad.any(axis=1), np.argmax(bad, axis=1) - 1, n - 1)
        rows = np.arange(len(ends))
        out = np.where((reach >= 0)[:, None], pts[rows, np.maximum(reach, 0)], start[None, :])
        out_cells = np.where(reach >= 0, cells[rows, np.maximum(reach, 0)], start_cell)
        out[:, 1] = self.height[out_cells]
        return out, out_cells

    def slide(self, start: np.ndarray, end: np.ndarray, start_cell: int) -> tuple[np.ndarray, int, bool]:
        """Like :meth:`walk`, but a blocked motion continues along the wall: the rest of the motion is
        walked again along the wall's tangent, and along each axis alone (walls of a grid are
        axis-aligned up close), keeping whichever ends closest to ``end`` (as Recast's
        ``moveAlongSurface`` returns the reachable point closest to the target)."""
        point, cell, blocked = self.walk(start, end, start_cell)
        if not blocked:
            return point, cell, False
        rest = np.array([end[0] - point[0], end[2] - point[2]])
        moves = [np.array([rest[0], 0.0]), np.array([0.0, rest[1]])]
        normal = self.wall_normal[cell]
        into = float(rest @ normal)
        if into < 0.0:
            moves.insert(0, rest - into * normal)
        best, best_cell, best_gap = point, cell, math.hypot(*rest)
        for move in moves:
            if not move.any():
                continue
            slid, slid_cell, _ = self.walk(point, point + np.array([move[0], 0.0, move[1]]), cell)
            gap = math.hypot(end[0] - slid[0], end[2] - slid[2])
            if gap < best_gap - 1e-9:
                best, best_cell, best_gap = slid, slid_cell, gap
        return best, best_cell, True

    def goal_field(self, goal_cells: np.ndarray) -> GoalField:
        """Geodesic distances of all cells to the nearest of ``goal_cells``, and next cells toward it."""
        dist, pred, _ = dijkstra(self.graph, directed=False, indices=np.asarray(goal_cells, dtype=np.int64),
                                 min_only=True, return_predecessors=True)
        return GoalField(distance=dist.astype(np.float64), next_cell=pred.astype(np.int64))

    def distance_at(self, field: GoalField, point: np.ndarray, cell: int) -> float:
        """Geodesic distance from ``point`` (standing on ``cell``) using ``field``: the best of the cell
        and its 8 neighbours, each plus the straight hop from ``point`` to its centre."""
        around = self.ring[cell]
        cand = np.concatenate([[cell], around[around >= 0]])
        hops = np.linalg.norm(self.positions[cand] - point, axis=1)
        return float(np.min(field.distance[cand] + hops))

    def distances_at(self, field: GoalField, points: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """:meth:`distance_at` for many points ``(K, 3)`` standing on ``cells`` ``(K,)``."""
        cand = np.concatenate([cells[:, None], self.ring[cells]], axis=1)
        valid = cand >= 0
        safe = np.where(valid, cand, cells[:, None])
        hops = np.linalg.norm(self.positions[safe] - points[:, None, :], axis=2)
        values = np.where(valid, field.distance[safe] + hops, np.inf)
        return values.min(axis=1)

    def cell_path(self, field: GoalField, cell: int) -> list[int]:
        """Cells from ``cell`` to the goal following ``field`` (empty when the goal is unreachable)."""
        if not np.isfinite(field.distance[cell]):
            return []
        path = [cell]
        nxt = field.next_cell
        while nxt[path[-1]] >= 0:
            path.append(int(nxt[path[-1]]))
        return path

    def string_pull(self, start: np.ndarray, start_cell: int, cells: list[int]) -> np.ndarray:
        """Corner points of the path ``start -> cells``: from each corner, the furthest following cell
        centre in straight walkable sight becomes the next corner."""
        pts = self.positions[cells]
        corners = [np.asarray(start, dtype=np.float64)]
        anchor, anchor_cell, i = corners[0], start_cell, 0
        last = len(cells) - 1
        while i < last:
            j = i + 1
            while j < last and not self.walk(anchor, pts[j + 1], anchor_cell)[2]:
                j += 1
            corners.append(pts[j])
            anchor, anchor_cell, i = pts[j], cells[j], j
        if len(corners) == 1:
            corners.append(pts[-1])
        return np.array(corners)

    def sample(self, rng: np.random.Generator, largest_only: bool = True) -> np.ndarray:
        """A uniformly random cell centre (of the largest component by default)."""
        pool = np.flatnonzero(self.component == self.largest) if largest_only else np.arange(self.num_cells)
        return self.positions[int(pool[rng.integers(len(pool))])].copy()

    def occupancy(self, height: float | None = None, band: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """A top-down map: ``(nz, nx)`` bool image of columns holding a navigable cell (within ``band``
        metres of ``height`` when given; row ``k`` is ``z`` index ``k``) and the ``(x0, z0, x1, z1)`` extent
        it covers."""
        img = np.zeros((self.shape[1], self.shape[0]), dtype=bool)
        near = slice(None) if height is None else np.abs(self.height - height) < band
        img[self.iz[near], self.ix[near]] = True
        cs = self.cell_size
        extent = np.array([self.origin[0], self.origin[2], self.origin[0] + self.shape[0] * cs,
                           self.origin[2] + self.shape[1] * cs])
        return img, extent


BOUNDARY_SAMPLES = 5
"""Points per cell side when the obstacle boundary is sampled (spacing cell_size / 4: a point at the
agent radius from a side is measured to within a fraction of a millimetre)."""


def _boundary_points(centres: np.ndarray, ix: np.ndarray, iz: np.ndarray, ring: np.ndarray, cs: float,
                     shape: tuple[int, int], extent: np.ndarray) -> np.ndarray:
    """Points ``(M, 3)`` along the obstacle boundary, at the floor height of the cell they face: for each
    floor cell and each missing :data:`RING8` neighbour, the side (or corner) toward it, moved to the
    face of the wall samples inside that neighbour's column when it holds any (``extent`` from
    :func:`_floor_cells`), so that a wall is placed to within a sample spacing, not a cell."""
    nx, nz = shape
    parts = []
    t = np.linspace(-0.5, 0.5, BOUNDARY_SAMPLES) * cs
    for d, (dx, dz) in enumerate(RING8):
        cells = np.flatnonzero(ring[:, d] < 0)
        if not len(cells):
            continue
        c = centres[cells]
        jx, jz = ix[cells] + dx, iz[cells] + dz
        inside = (jx >= 0) & (jx < nx) & (jz >= 0) & (jz < nz)
        column = np.where(inside, jx * nz + jz, 0)
        if dx and dz:
            corner = c + np.array([dx * cs / 2, 0.0, dz * cs / 2])
            for axis, step, row in ((0, dx, 0 if dx > 0 else 1), (2, dz, 2 if dz > 0 else 3)):
                face = extent[row, column]
                edge = corner[:, axis]
                moved = np.clip(face, edge - (cs if step < 0 else 0), edge + (cs if step > 0 else 0))
                corner[:, axis] = np.where(inside & np.isfinite(face), moved, edge)
            parts.append(corner)
            continue
        axis = 0 if dx else 2
        step = dx if dx else dz
        face = extent[(0 if step > 0 else 1) + (0 if dx else 2), column]
        edge = c[:, axis] + step * cs / 2
        side = np.where(inside & np.isfinite(face), np.clip(face, edge - (cs if step < 0 else 0), edge + (cs if step > 0 else 0)), edge)
        pts = np.repeat(c[:, None, :], BOUNDARY_SAMPLES, axis=1)
        pts[:, :, axis] = side[:, None]
        across = c[:, 2 - axis, None] + t[None, :]
        lo_face = extent[2 if dx else 0, column][:, None]
        hi_face = extent[3 if dx else 1, column][:, None]
        known = (inside & np.isfinite(extent[2 if dx else 0, column]))[:, None]
        pts[:, :, 2 - axis] = np.where(known, np.clip(across, lo_face, hi_face), across)
        parts.append(pts.reshape(-1, 3))
    return np.concatenate(parts) if parts else np.zeros((0, 3))


def _clearance(boundary: np.ndarray, points: np.ndarray, band: float, reach: float,
               tree: cKDTree | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal distance from each point to the nearest boundary point within ``band`` metres of its
    height (capped at ``reach``), and that boundary point (the point itself where none is in reach).

    Boundary points of other levels (a wall's top above its foot) share the same ``(x, z)``, so the
    nearest neighbours are fetched in growing batches until a batch reaches past the best same-level
    one: the answer is exact, not the best of a fixed few.
    """
    n = len(points)
    clearance = np.full(n, reach)
    nearest = points.copy()
    if len(boundary) == 0:
        return clearance, nearest
    tree = tree if tree is not None else cKDTree(boundary[:, [0, 2]])
    todo = np.arange(n)
    k = 8
    while len(todo):
        k = min(k, len(boundary))
        dist, idx = tree.query(points[todo][:, [0, 2]], k=k, distance_upper_bound=reach)
        dist, idx = dist.reshape(len(todo), k), idx.reshape(len(todo), k)
        found = idx < len(boundary)
        safe = np.where(found, idx, 0)
        same_level = found & (np.abs(boundary[safe, 1] - points[todo, None, 1]) < band)
        level_dist = np.where(same_level, dist, reach)
        best = level_dist.argmin(axis=1)
        rows = np.arange(len(todo))
        value = np.minimum(level_dist[rows, best], reach)
        clearance[todo] = value
        hit = value < reach
        nearest[todo[hit]] = boundary[safe[rows, best]][hit]
        # Exact unless all k neighbours were in reach and none of them was on this level.
        done = ~found[:, -1] | same_level.any(axis=1) | (k == len(boundary))
        todo = todo[~done]
        k *= 4
    return clearance, nearest


def _sample_triangles(tris: np.ndarray, cs: float, ch: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield chunks of sample points ``(N, 3)`` and the index of the triangle each came from.

    A triangle is sampled on the barycentric grid of resolution ``m``, ``m`` the smallest that keeps
    neighbouring samples within half a cell horizontally and half a slice vertically.
    """
    v0, v1, v2 = tris[:, 0], tris[:, 1], tris[:, 2]
    need = np.zeros(len(tris))
    for a, b in ((v0, v1), (v1, v2), (v2, v0)):
        d = b - a
        need = np.maximum(need, np.maximum(np.hypot(d[:, 0], d[:, 2]) / (0.5 * cs), np.abs(d[:, 1]) / (0.5 * ch)))
    res = np.maximum(1, np.ceil(need)).astype(np.int64)
    order = np.argsort(res, kind="stable")
    sorted_res = res[order]
    bounds = np.flatnonzero(np.diff(sorted_res)) + 1
    for group in np.split(order, bounds):
        m = int(res[group[0]])
        i, j = np.meshgrid(np.arange(m + 1), np.arange(m + 1), indexing="ij")
        keep = (i + j) <= m
        a = (i[keep] / m).astype(np.float32)
        b = (j[keep] / m).astype(np.float32)
        per = max(1, _CHUNK_POINTS // len(a))
        for s in range(0, len(group), per):
            idx = group[s : s + per]
            p0 = v0[idx][:, None, :]
            e1 = (v1[idx] - v0[idx])[:, None, :]
            e2 = (v2[idx] - v0[idx])[:, None, :]
            pts = p0 + a[None, :, None] * e1 + b[None, :, None] * e2
            yield pts.reshape(-1, 3), np.repeat(idx, len(a))


def _group_max(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique ``keys`` (sorted) and the largest of their ``values``."""
    if len(keys) == 0:
        return keys, values
    order = np.lexsort((values, keys))
    k, v = keys[order], values[order]
    last = np.append(np.flatnonzero(np.diff(k)), len(k) - 1)
    return k[last], v[last]


def _neighbour_table(ix: np.ndarray, iz: np.ndarray, h: np.ndarray, column_start: np.ndarray,
                     shape: tuple[int, int], offsets: tuple[tuple[int, int], ...], climb: float) -> np.ndarray:
    """``(n, len(offsets))``: per cell and direction, the cell of the neighbouring column whose floor
    is closest in height and within ``climb``, or -1."""
    nx, nz = shape
    n = len(h)
    levels = int(np.diff(column_start).max(initial=0))
    table = np.full((n, len(offsets)), -1, dtype=np.int64)
    for d, (dx, dz) in enumerate(offsets):
        jx, jz = ix + dx, iz + dz
        valid = (jx >= 0) & (jx < nx) & (jz >= 0) & (jz < nz)
        col = np.where(valid, jx * nz + jz, 0)
        lo = np.where(valid, column_start[col], 0)
        hi = np.where(valid, column_start[col + 1], 0)
        best = np.full(n, -1, dtype=np.int64)
        best_dh = np.full(n, np.inf)
        for k in range(levels):
            cand = lo + k
            ok = cand < hi
            dh = np.where(ok, np.abs(h[np.minimum(cand, n - 1)] - h), np.inf)
            better = ok & (dh <= climb) & (dh < best_dh)
            best[better] = cand[better]
            best_dh[better] = dh[better]
        table[:, d] = best
    return table


def _crossed(dx: int, dz: int) -> list[tuple[int, int]]:
    """The intermediate offsets a move by ``(dx, dz)`` passes through (none for the 4 axis moves)."""
    sx, sz = int(np.sign(dx)), int(np.sign(dz))
    if abs(dx) + abs(dz) == 1:
        return []
    if abs(dx) == 1 and abs(dz) == 1:
        return [(dx, 0), (0, dz)]
    if abs(dz) == 2:
        return [(0, sz), (dx, sz)]
    return [(sx, 0), (sx, dz)]


def _floor_cells(tris: np.ndarray, agent: AgentSpec, origin: np.ndarray, cs: float, ch: float,
                 shape: tuple[int, int], ny: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column index and floor height of every floor cell with enough headroom (steps 1-2), and per
    column the extent ``(min x, max x, min z, max z)`` of its samples of steep (wall) triangles (NaN where
    none), which places obstacle faces inside their columns. Ceilings and other downward faces are not
    walls: they never bound a column sideways."""
    nx, nz = shape
    normals = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    walkable_tri = normals[:, 1] >= math.cos(math.radians(agent.max_slope_deg)) * np.maximum(lengths, 1e-12)
    walkable_tri &= lengths > 0
    wall_tri = (np.abs(normals[:, 1]) < math.cos(math.radians(agent.max_slope_deg)) * lengths) & (lengths > 0)
    all_keys, walk_keys, walk_tops = [], [], []
    extent = np.full((4, nx * nz), np.nan)
    extent[[0, 2]] = np.inf
    extent[[1, 3]] = -np.inf
    for pts, tri in _sample_triangles(tris, cs, ch):
        i = np.clip(((pts[:, 0] - origin[0]) / cs).astype(np.int64), 0, nx - 1)
        k = np.clip(((pts[:, 2] - origin[2]) / cs).astype(np.int64), 0, nz - 1)
        y = np.clip(((pts[:, 1] - origin[1]) / ch).astype(np.int64), 0, ny - 1)
        keys = (i * nz + k) * ny + y
        all_keys.append(np.unique(keys))
        w = walkable_tri[tri]
        steep = np.flatnonzero(wall_tri[tri])
        if len(steep):
            c = i[steep] * nz + k[steep]
            np.minimum.at(extent[0], c, pts[steep, 0])
            np.maximum.at(extent[1], c, pts[steep, 0])
            np.minimum.at(extent[2], c, pts[steep, 2])
            np.maximum.at(extent[3], c, pts[steep, 2])
        uk, top = _group_max(keys[w], pts[w, 1].astype(np.float64))
        walk_keys.append(uk)
        walk_tops.append(top)
    keys = np.unique(np.concatenate(all_keys))
    wk, wtop = _group_max(np.concatenate(walk_keys), np.concatenate(walk_tops))
    col = keys // ny
    level = keys % ny
    new_run = np.ones(len(keys), dtype=bool)
    new_run[1:] = (col[1:] != col[:-1]) | (level[1:] != level[:-1] + 1)
    starts = np.flatnonzero(new_run)
    tops = np.append(starts[1:] - 1, len(keys) - 1)
    run_col = col[starts]
    extent[~np.isfinite(extent)] = np.nan
    if len(wk) == 0:
        return run_col[:0], np.zeros(0), extent
    pos = np.minimum(np.searchsorted(wk, keys[tops]), len(wk) - 1)
    walkable = wk[pos] == keys[tops]
    floor_h = np.where(walkable, wtop[pos], np.nan)
    above = np.full(len(starts), np.inf)
    same = run_col[1:] == run_col[:-1]
    above[:-1][same] = origin[1] + level[starts[1:]][same] * ch
    ok = walkable & (above - floor_h >= agent.height)
    return run_col[ok], floor_h[ok], extent


def build_navmesh(triangles: np.ndarray, agent: AgentSpec = AgentSpec(),
                  settings: NavMeshSettings = NavMeshSettings()) -> NavMesh:
    """Compute the navigable floor of ``triangles`` ``(T, 3, 3)`` (Habitat frame) for ``agent``.

    Raises ``ValueError`` when nothing is navigable.
    """
    tris = np.asarray(triangles, dtype=np.float64)
    lo = tris.reshape(-1, 3).min(axis=0) - 1e-3
    hi = tris.reshape(-1, 3).max(axis=0) + 1e-3
    cs = float(settings.cell_size)
    area = (hi[0] - lo[0]) * (hi[2] - lo[2])
    if area / cs**2 > settings.max_cells:
        cs = math.sqrt(area / settings.max_cells)
    ch = float(settings.cell_height)
    shape = (int(math.ceil((hi[0] - lo[0]) / cs)), int(math.ceil((hi[2] - lo[2]) / cs)))
    ny = int(math.ceil((hi[1] - lo[1]) / ch)) + 1
    col, h, extent = _floor_cells(tris, agent, lo, cs, ch, shape, ny)
    if len(col) == 0:
        raise ValueError("no navigable floor: no upward-facing surface with enough headroom for the agent")
    ix, iz = col // shape[1], col % shape[1]
    column_start = np.searchsorted(col, np.arange(shape[0] * shape[1] + 1)).astype(np.int64)
    table = _neighbour_table(ix, iz, h, column_start, shape, OFFSETS16, agent.max_climb)

    # Erosion by exactly the agent radius: the Euclidean distance from each cell centre to the obstacle
    # boundary (the sides of floor cells that miss a neighbour), measured at the cell's own level.
    centres = np.stack([lo[0] + (ix + 0.5) * cs, h, lo[2] + (iz + 0.5) * cs], axis=1)
    boundary = _boundary_points(centres, ix, iz, table[:, :8], cs, shape, extent)
    reach = agent.radius + 4 * cs
    clearance, nearest = _clearance(boundary, centres, agent.height, reach)
    keep = clearance >= agent.radius
    if not keep.any():
        raise ValueError(f"no navigable floor: every floor cell is within the agent radius {agent.radius} m of an obstacle")
    # Wall normals: from the nearest boundary point toward the cell.
    away = centres[:, [0, 2]] - nearest[:, [0, 2]]
    norm = np.linalg.norm(away, axis=1, keepdims=True)
    normal = np.divide(away, norm, out=np.zeros_like(away), where=(norm > 0) & (clearance[:, None] < reach))

    remap = np.full(len(h) + 1, -1, dtype=np.int64)
    remap[np.flatnonzero(keep)] = np.arange(int(keep.sum()))
    table = remap[np.where(table >= 0, table, len(h))][keep]
    ix, iz, h = ix[keep], iz[keep], h[keep]
    col = col[keep]
    column_start = np.searchsorted(col, np.arange(shape[0] * shape[1] + 1)).astype(np.int64)
    n = len(h)
    index = {off: d for d, off in enumerate(OFFSETS16)}
    src, dst, weight = [], [], []
    for d, (dx, dz) in enumerate(OFFSETS16):
        ok = table[:, d] >= 0
        for via in _crossed(dx, dz):
            ok &= table[:, index[via]] >= 0
        a = np.flatnonzero(ok)
        b = table[a, d]
        src.append(a)
        dst.append(b)
        weight.append(np.sqrt((dx * cs) ** 2 + (dz * cs) ** 2 + (h[b] - h[a]) ** 2))
    graph = csr_matrix((np.concatenate(weight), (np.concatenate(src), np.concatenate(dst))), shape=(n, n))
    graph = graph.maximum(graph.T).tocsr()
    _, component = connected_components(graph, directed=False)
    largest = int(np.bincount(component).argmax())
    ring = table[:, :8]
    # A neighbour kept in the ring must be reachable: drop ring links that the graph does not have.
    for d, (dx, dz) in enumerate(RING8):
        ok = ring[:, d] >= 0
        for via in _crossed(dx, dz):
            ok &= table[:, index[via]] >= 0
        ring[~ok, d] = -1
    return NavMesh(
        origin=lo.astype(np.float64),
        cell_size=cs,
        shape=shape,
        ix=ix.astype(np.int64),
        iz=iz.astype(np.int64),
        height=h.astype(np.float64),
        column_start=column_start,
        graph=graph,
        ring=ring,
        component=component.astype(np.int64),
        largest=largest,
        wall_normal=normal[keep].astype(np.float64),
        agent=agent,
    )
