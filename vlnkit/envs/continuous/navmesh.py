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
   where that neighbouring column holds wall samples in the agent's body band (from ``max_climb`` to
   ``height`` above the floor, so a lintel over a door does not count), the side is moved onto the
   wall's face. These sides, sampled every quarter cell, are the obstacle boundary. A cell is eroded
   when the horizontal Euclidean distance from its centre to the boundary of its own level is below
   the agent's radius, so the agent keeps exactly its radius from walls, to within a cell's
   quantisation.
4. The remaining cells are linked to their 16 neighbours (the 8 around plus the 8 knight moves, each
   only when the cells it crosses are navigable, so paths do not cut corners), weighted by 3-D length.
   One Dijkstra search on that graph (:func:`scipy.sparse.csgraph.dijkstra`) gives every cell's grid
   distance to a goal; with knight moves a grid path is at most about 2.7% longer than the straight
   line.
5. Geodesics are any-angle (:mod:`vlnkit.envs.continuous.geodesic`): shortest paths that bend only
   around the obstacle corners at the agent's radius, which the grid distance bounds from above. The
   distance reported is the length of the path returned.

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
from vlnkit.envs.continuous.geodesic import (
    ExactField,
    Visibility,
    build_visibility,
    chain,
    exact_field,
    first_hop,
    first_hops,
)
from vlnkit.envs.continuous.sight import SightGrid

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
    """Geodesics to one goal set: the grid distance of every floor cell and each cell's next cell toward
    it (an upper bound, and the fallback), and the any-angle distances of the corner vertices
    (:mod:`vlnkit.envs.continuous.geodesic`; ``None`` when the field was built without goal points)."""

    distance: np.ndarray
    next_cell: np.ndarray
    exact: ExactField | None = None


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
        wall_normal: ``(n, 2)`` unit ``(x, z)`` direction away from the nearest obstacle (zeros far from one).
        agent: the agent the floor was eroded for.
        boundary: ``(M, 3)`` points along the obstacle boundary (sides of floor cells facing a missing
            neighbour, before erosion), from which clearance is measured.
        corners: ``(C, 3)`` convex corners of the obstacles (where shortest paths bend).
        floor_start, floor_height: the floor cells before erosion, as ``column_start``/``height`` are
            for the navigable ones (``None`` when unknown): where the floor is, however near a wall.
        floor_clearance: clearance of each of those floor cells' centres (capped as :meth:`clearance`).
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
    boundary: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    corners: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    floor_start: np.ndarray | None = None
    floor_height: np.ndarray | None = None
    floor_clearance: np.ndarray | None = None
    _tree: cKDTree | None = field(default=None, repr=False)
    _boundary_tree: cKDTree | None = field(default=None, repr=False)
    _visibility: Visibility | None = field(default=None, repr=False)
    _near_wall: NearWall | None = field(default=None, repr=False)
    _sight: SightGrid | None = field(default=None, repr=False)
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
        return _nearest_level(self.columns(points), heights, self.column_start, self.height, SNAP_HEIGHT_TOLERANCE)

    def on_floor(self, points: np.ndarray) -> np.ndarray:
        """Whether each point ``(N, 3)`` stands on the floor before erosion (a floor cell of its column
        within ``max_climb`` of its height), however close to a wall."""
        if self.floor_start is None or self.floor_height is None:
            return self.cells_at(points, points[:, 1]) >= 0
        return _nearest_level(self.columns(points), points[:, 1], self.floor_start, self.floor_height,
                              self.agent.max_climb) >= 0

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

    def clearance(self, points: np.ndarray, with_nearest: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Horizontal distance (metres) from each point ``(N, 3)`` to the nearest obstacle boundary at its
        level, capped at the agent radius plus four cells; with ``with_nearest``, also that boundary point."""
        if self._boundary_tree is None and len(self.boundary):
            self._boundary_tree = cKDTree(self.boundary[:, [0, 2]])
        pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
        clearance, nearest = _clearance(self.boundary, pts, self.agent.max_climb, self.agent.radius + 4 * self.cell_size,
                                        self._boundary_tree)
        return (clearance, nearest) if with_nearest else clearance

    def clear(self, points: np.ndarray, slack: float = 0.0) -> np.ndarray:
        """Whether each point ``(N, 3)`` stands on the floor (before erosion) with a clearance of at least
        the agent radius minus ``slack``: the same answer as :meth:`on_floor` and :meth:`clearance`
        together, with the nearest boundary points looked up per floor cell (see :class:`NearWall`)."""
        return self.sight.clear(points, slack)

    @property
    def near_wall(self) -> NearWall:
        """The per-cell boundary lists behind :meth:`clear` (built on first use, then kept)."""
        if self._near_wall is None:
            self._near_wall = NearWall.build(self)
        return self._near_wall

    @property
    def sight(self) -> SightGrid:
        """The compiled point and segment tests of this navmesh (:mod:`.sight`; built on first use)."""
        if self._sight is None:
            self._sight = SightGrid.of(self)
        return self._sight

    @property
    def visibility(self) -> Visibility:
        """The corner-vertex graph for any-angle geodesics (built on first use, then kept)."""
        if self._visibility is None:
            self._visibility = build_visibility(self)
        return self._visibility

    def goal_field(self, goal_cells: np.ndarray, goal_points: np.ndarray | None = None) -> GoalField:
        """Geodesics to the nearest of ``goal_cells``: the grid field, and with ``goal_points`` (the goals
        on the floor, one per cell) the any-angle field over the corner vertices."""
        dist, pred, _ = dijkstra(self.graph, directed=False, indices=np.asarray(goal_cells, dtype=np.int64),
                                 min_only=True, return_predecessors=True)
        exact = None if goal_points is None else exact_field(self, self.visibility, goal_points)
        return GoalField(distance=dist.astype(np.float64), next_cell=pred.astype(np.int64), exact=exact)

    def grid_distance_at(self, field: GoalField, point: np.ndarray, cell: int) -> float:
        """The grid geodesic from ``point`` (standing on ``cell``): the best of the cell and its 8
        neighbours, each plus the straight hop from ``point`` to its centre (an upper bound)."""
        return float(self.grid_distances_at(field, np.asarray(point, dtype=np.float64)[None, :], np.array([cell]))[0])

    def grid_distances_at(self, field: GoalField, points: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """:meth:`grid_distance_at` for many points ``(K, 3)`` standing on ``cells`` ``(K,)``."""
        cells = np.asarray(cells, dtype=np.int64)
        cand = np.concatenate([cells[:, None], self.ring[cells]], axis=1)
        hops = np.linalg.norm(self.positions[np.maximum(cand, 0)] - points[:, None, :], axis=2)
        return np.where(cand >= 0, field.distance[np.maximum(cand, 0)] + hops, np.inf).min(axis=1)

    def distance_at(self, field: GoalField, point: np.ndarray, cell: int) -> float:
        """Geodesic distance from ``point`` (standing on ``cell``) to the goals: the any-angle distance
        where the field has one (:func:`~vlnkit.envs.continuous.geodesic.first_hop`), else the grid one."""
        bound = self.grid_distance_at(field, point, cell)
        if field.exact is None or not math.isfinite(bound):
            return bound
        p = np.array([point[0], self.height[cell], point[2]], dtype=np.float64)
        return first_hop(self, self.visibility, field.exact, p, bound)[0]

    def distances_at(self, field: GoalField, points: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """:meth:`distance_at` for many points ``(K, 3)`` standing on ``cells`` ``(K,)``, in one batch."""
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        cells = np.asarray(cells, dtype=np.int64)
        bounds = self.grid_distances_at(field, points, cells)
        finite = np.flatnonzero(np.isfinite(bounds))
        if field.exact is None or not len(finite):
            return bounds
        on_floor = points[finite].copy()
        on_floor[:, 1] = self.height[cells[finite]]
        bounds[finite] = first_hops(self, self.visibility, field.exact, on_floor, bounds[finite])[0]
        return bounds

    def shortest_path(self, field: GoalField, point: np.ndarray, cell: int) -> np.ndarray:
        """Corner points ``(K, 3)`` of the shortest path from ``point`` (on ``cell``) to the goals, whose
        length is :meth:`distance_at` (empty when unreachable)."""
        p = np.array([point[0], self.height[cell], point[2]], dtype=np.float64)
        bound = self.grid_distance_at(field, p, cell)
        if not math.isfinite(bound):
            return np.zeros((0, 3))
        if field.exact is not None:
            _, node = first_hop(self, self.visibility, field.exact, p, bound)
            if node >= 0:
                return chain(self.visibility, field.exact, p, node)
        return self._grid_path(field, p, cell)

    def _grid_path(self, field: GoalField, p: np.ndarray, cell: int) -> np.ndarray:
        """The path of the grid field, through the best cell around ``cell`` (as :meth:`grid_distance_at`
        picks it), so that its length is the grid distance."""
        around = self.ring[cell]
        cand = np.concatenate([[cell], around[around >= 0]])
        hops = np.linalg.norm(self.positions[cand] - p, axis=1)
        first = int(cand[np.argmin(field.distance[cand] + hops)])
        return np.concatenate([p[None, :], self.positions[self.cell_path(field, first)]])

    def cell_path(self, field: GoalField, cell: int) -> list[int]:
        """Cells from ``cell`` to the goal following ``field`` (empty when the goal is unreachable)."""
        if not np.isfinite(field.distance[cell]):
            return []
        path = [cell]
        nxt = field.next_cell
        while nxt[path[-1]] >= 0:
            path.append(int(nxt[path[-1]]))
        return path

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


@dataclass
class NearWall:
    """Per floor cell, the obstacle boundary points that can decide whether a point in that cell clears
    the agent radius ``r``: those within ``r`` plus half the cell's diagonal of its centre, at its level.
    A point in the cell closer than ``r`` to a boundary point is at most that far from the centre, so
    the list is complete; a cell whose centre's clearance exceeds that reach holds only clear points.

    Attributes:
        row: ``(F,)`` row of ``points`` for each floor cell, ``-1`` where the whole cell is clear.
        points: ``(R, K, 2)`` boundary ``(x, z)`` per row, padded with points far away.
    """

    row: np.ndarray
    points: np.ndarray

    @classmethod
    def build(cls, nav: NavMesh) -> NearWall:
        """The lists of ``nav`` (its floor cells before erosion and its boundary points)."""
        cs, radius = nav.cell_size, nav.agent.radius
        reach = radius + cs * math.sqrt(0.5) + 1e-9
        near = np.flatnonzero(nav.floor_clearance < reach)
        row = np.full(len(nav.floor_height), -1, dtype=np.int64)
        row[near] = np.arange(len(near))
        if not len(near) or not len(nav.boundary):
            return cls(row=np.full(len(nav.floor_height), -1, dtype=np.int64), points=np.zeros((0, 1, 2)))
        column = np.searchsorted(nav.floor_start, near, side="right") - 1
        centres = np.stack([nav.origin[0] + (column // nav.shape[1] + 0.5) * cs,
                            nav.origin[2] + (column % nav.shape[1] + 0.5) * cs], axis=1)
        if nav._boundary_tree is None:
            nav._boundary_tree = cKDTree(nav.boundary[:, [0, 2]])
        level = nav.floor_height[near]
        k = 64
        while True:
            k = min(k, len(nav.boundary))
            _, idx = nav._boundary_tree.query(centres, k=k, distance_upper_bound=reach)
            idx = idx.reshape(len(near), k)
            if k == len(nav.boundary) or not (idx[:, -1] < len(nav.boundary)).any():
                break
            k *= 2
        found = idx < len(nav.boundary)
        safe = np.where(found, idx, 0)
        found &= np.abs(nav.boundary[safe, 1] - level[:, None]) < nav.agent.max_climb
        first = np.argsort(~found, axis=1, kind="stable")[:, :max(1, int(found.sum(axis=1).max()))]
        safe, found = np.take_along_axis(safe, first, axis=1), np.take_along_axis(found, first, axis=1)
        points = np.where(found[:, :, None], nav.boundary[safe][:, :, [0, 2]], 1e9)
        return cls(row=row, points=points)


def _nearest_level(cols: np.ndarray, heights: np.ndarray, column_start: np.ndarray, cell_height: np.ndarray,
                   tolerance: float) -> np.ndarray:
    """For columns ``cols`` (-1 outside), the cell of each column whose height is nearest to ``heights``
    (within ``tolerance``), or -1; cells of column ``c`` are ``column_start[c]:column_start[c+1]``."""
    safe = np.maximum(cols, 0)
    lo = column_start[safe]
    count = np.where(cols >= 0, column_start[safe + 1] - lo, 0)
    best = np.full(len(cols), -1, dtype=np.int64)
    one = np.flatnonzero(count == 1)
    best[one] = np.where(np.abs(cell_height[lo[one]] - heights[one]) <= tolerance, lo[one], -1)
    many = np.flatnonzero(count > 1)
    if not len(many):
        return best
    lo, hi, level = lo[many], lo[many] + count[many], heights[many]
    pick = np.full(len(many), -1, dtype=np.int64)
    pick_dh = np.full(len(many), float(tolerance))
    for k in range(int(count[many].max())):
        cand = lo + k
        valid = cand < hi
        dh = np.where(valid, np.abs(cell_height[np.minimum(cand, len(cell_height) - 1)] - level), np.inf)
        better = valid & (dh <= pick_dh)
        pick[better] = cand[better]
        pick_dh[better] = dh[better]
    best[many] = pick
    return best


@dataclass
class WallExtents:
    """Where the wall samples lie inside each column, per ``cell_height`` slice: for the sorted keys
    ``column * ny + slice`` that hold samples of steep triangles, their ``(min x, max x, min z, max z)``."""

    keys: np.ndarray
    extent: np.ndarray
    ny: int
    origin_y: float
    cell_height: float

    @classmethod
    def collect(cls, keys: np.ndarray, points: np.ndarray, ny: int, origin_y: float, cell_height: float) -> WallExtents:
        """The extents of sample ``points`` ``(N, 3)`` grouped by their ``keys``."""
        order = np.argsort(keys, kind="stable")
        k, p = keys[order], points[order]
        first = np.flatnonzero(np.r_[True, k[1:] != k[:-1]]) if len(k) else np.zeros(0, dtype=np.int64)
        ext = np.zeros((4, len(first)))
        if len(first):
            ext[0] = np.minimum.reduceat(p[:, 0], first)
            ext[1] = np.maximum.reduceat(p[:, 0], first)
            ext[2] = np.minimum.reduceat(p[:, 2], first)
            ext[3] = np.maximum.reduceat(p[:, 2], first)
        return cls(keys=k[first], extent=ext, ny=ny, origin_y=origin_y, cell_height=cell_height)

    @classmethod
    def merge(cls, parts: list[WallExtents], ny: int, origin_y: float, cell_height: float) -> WallExtents:
        """One table from the tables of several sample chunks."""
        keys = np.concatenate([q.keys for q in parts]) if parts else np.zeros(0, dtype=np.int64)
        if not len(keys):
            return cls(keys=keys, extent=np.zeros((4, 0)), ny=ny, origin_y=origin_y, cell_height=cell_height)
        ext = np.concatenate([q.extent for q in parts], axis=1)
        order = np.argsort(keys, kind="stable")
        k, e = keys[order], ext[:, order]
        first = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        merged = np.stack([np.minimum.reduceat(e[0], first), np.maximum.reduceat(e[1], first),
                           np.minimum.reduceat(e[2], first), np.maximum.reduceat(e[3], first)])
        return cls(keys=k[first], extent=merged, ny=ny, origin_y=origin_y, cell_height=cell_height)

    def faces(self, columns: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """``(4, N)``: the extent of the wall samples of each column between heights ``low`` and
        ``high`` (NaN where it holds none there)."""
        out = np.full((4, len(columns)), np.nan)
        if not len(self.keys):
            return out
        first = np.clip(np.floor((low - self.origin_y) / self.cell_height).astype(np.int64), 0, self.ny - 1)
        last = np.clip(np.floor((high - self.origin_y) / self.cell_height).astype(np.int64), 0, self.ny - 1)
        mins = np.full((2, len(columns)), np.inf)
        maxs = np.full((2, len(columns)), -np.inf)
        for k in range(int((last - first).max(initial=0)) + 1):
            level = first + k
            valid = level <= last
            key = columns * self.ny + level
            pos = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
            hit = valid & (self.keys[pos] == key)
            e = self.extent[:, pos]
            mins[0] = np.where(hit, np.minimum(mins[0], e[0]), mins[0])
            maxs[0] = np.where(hit, np.maximum(maxs[0], e[1]), maxs[0])
            mins[1] = np.where(hit, np.minimum(mins[1], e[2]), mins[1])
            maxs[1] = np.where(hit, np.maximum(maxs[1], e[3]), maxs[1])
        found = np.isfinite(mins[0])
        out[0, found], out[1, found] = mins[0, found], maxs[0, found]
        out[2, found], out[3, found] = mins[1, found], maxs[1, found]
        return out


BOUNDARY_SAMPLES = 5
"""Points per cell side when the obstacle boundary is sampled (spacing cell_size / 4: a point at the
agent radius from a side is measured to within a fraction of a millimetre)."""


def _boundary_points(centres: np.ndarray, ix: np.ndarray, iz: np.ndarray, ring: np.ndarray, cs: float,
                     shape: tuple[int, int], walls: WallExtents, agent: AgentSpec) -> tuple[np.ndarray, np.ndarray]:
    """Points ``(M, 3)`` along the obstacle boundary, at the floor height of the cell they face: for each
    floor cell and each missing :data:`RING8` neighbour, the side (or corner) toward it, moved to the
    face of the wall samples inside that neighbour's column when it holds any in the agent's band above
    the cell's floor (``walls`` from :func:`_floor_cells`; a lintel or shelf above the agent does not
    count), so that a wall is placed to within a sample spacing, not a cell.

    Also returns the convex obstacle corners ``(C, 3)``: the corner points toward a missing diagonal
    neighbour whose two axis neighbours are present (the tip of an obstacle sticking into the floor).
    """
    nx, nz = shape
    index = {off: d for d, off in enumerate(RING8)}
    parts, corners = [], []
    t = np.linspace(-0.5, 0.5, BOUNDARY_SAMPLES) * cs
    for d, (dx, dz) in enumerate(RING8):
        cells = np.flatnonzero(ring[:, d] < 0)
        if not len(cells):
            continue
        c = centres[cells]
        jx, jz = ix[cells] + dx, iz[cells] + dz
        inside = (jx >= 0) & (jx < nx) & (jz >= 0) & (jz < nz)
        column = np.where(inside, jx * nz + jz, 0)
        extent = walls.faces(column, c[:, 1] + agent.max_climb, c[:, 1] + agent.height)
        column = np.arange(len(cells))
        if dx and dz:
            corner = c + np.array([dx * cs / 2, 0.0, dz * cs / 2])
            for axis, step, row in ((0, dx, 0 if dx > 0 else 1), (2, dz, 2 if dz > 0 else 3)):
                face = extent[row, column]
                edge = corner[:, axis]
                moved = np.clip(face, edge - (cs if step < 0 else 0), edge + (cs if step > 0 else 0))
                corner[:, axis] = np.where(inside & np.isfinite(face), moved, edge)
            parts.append(corner)
            convex = (ring[cells, index[(dx, 0)]] >= 0) & (ring[cells, index[(0, dz)]] >= 0)
            corners.append(corner[convex])
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
    points = np.concatenate(parts) if parts else np.zeros((0, 3))
    tips = np.concatenate(corners) if corners else np.zeros((0, 3))
    if len(tips):
        _, first = np.unique(np.round(tips / 1e-3).astype(np.int64), axis=0, return_index=True)
        tips = tips[np.sort(first)]
    return points, tips


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
                 shape: tuple[int, int], ny: int) -> tuple[np.ndarray, np.ndarray, WallExtents]:
    """Column index and floor height of every floor cell with enough headroom (steps 1-2), and the
    extents of the samples of steep (wall) triangles per column and slice, which place obstacle faces
    inside their columns. Ceilings and other downward faces are not
    walls: they never bound a column sideways."""
    nx, nz = shape
    normals = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    walkable_tri = normals[:, 1] >= math.cos(math.radians(agent.max_slope_deg)) * np.maximum(lengths, 1e-12)
    walkable_tri &= lengths > 0
    wall_tri = (np.abs(normals[:, 1]) < math.cos(math.radians(agent.max_slope_deg)) * lengths) & (lengths > 0)
    all_keys, walk_keys, walk_tops = [], [], []
    wall_parts = []
    for pts, tri in _sample_triangles(tris, cs, ch):
        i = np.clip(((pts[:, 0] - origin[0]) / cs).astype(np.int64), 0, nx - 1)
        k = np.clip(((pts[:, 2] - origin[2]) / cs).astype(np.int64), 0, nz - 1)
        y = np.clip(((pts[:, 1] - origin[1]) / ch).astype(np.int64), 0, ny - 1)
        keys = (i * nz + k) * ny + y
        all_keys.append(np.unique(keys))
        w = walkable_tri[tri]
        steep = np.flatnonzero(wall_tri[tri])
        if len(steep):
            wall_parts.append(WallExtents.collect(keys[steep], pts[steep], ny, float(origin[1]), ch))
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
    walls = WallExtents.merge(wall_parts, ny, float(origin[1]), ch)
    if len(wk) == 0:
        return run_col[:0], np.zeros(0), walls
    pos = np.minimum(np.searchsorted(wk, keys[tops]), len(wk) - 1)
    walkable = wk[pos] == keys[tops]
    floor_h = np.where(walkable, wtop[pos], np.nan)
    above = np.full(len(starts), np.inf)
    same = run_col[1:] == run_col[:-1]
    above[:-1][same] = origin[1] + level[starts[1:]][same] * ch
    ok = walkable & (above - floor_h >= agent.height)
    return run_col[ok], floor_h[ok], walls


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
    col, h, walls = _floor_cells(tris, agent, lo, cs, ch, shape, ny)
    if len(col) == 0:
        raise ValueError("no navigable floor: no upward-facing surface with enough headroom for the agent")
    ix, iz = col // shape[1], col % shape[1]
    column_start = np.searchsorted(col, np.arange(shape[0] * shape[1] + 1)).astype(np.int64)
    table = _neighbour_table(ix, iz, h, column_start, shape, OFFSETS16, agent.max_climb)

    # Erosion by exactly the agent radius: the Euclidean distance from each cell centre to the obstacle
    # boundary (the sides of floor cells that miss a neighbour), measured at the cell's own level.
    centres = np.stack([lo[0] + (ix + 0.5) * cs, h, lo[2] + (iz + 0.5) * cs], axis=1)
    boundary, corners = _boundary_points(centres, ix, iz, table[:, :8], cs, shape, walls, agent)
    floor_start = column_start.copy()
    floor_height = h.astype(np.float64)
    reach = agent.radius + 4 * cs
    clearance, nearest = _clearance(boundary, centres, agent.max_climb, reach)
    keep = clearance >= agent.radius
    if not keep.any():
        raise ValueError(f"no navigable floor: every floor cell is within the agent radius {agent.radius} m of an obstacle")
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
        boundary=boundary,
        corners=corners,
        floor_start=floor_start,
        floor_height=floor_height,
        floor_clearance=clearance.astype(np.float64),
    )
