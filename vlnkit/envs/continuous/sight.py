"""Where the agent's cylinder fits, compiled: the point and segment tests behind the any-angle geodesics
of :mod:`vlnkit.envs.continuous.geodesic`, in numba so that one geodesic query costs microseconds.

A point fits when it stands on a navigable cell of the navmesh, or on the floor (before erosion) with a
clearance of at least the agent radius minus a slack. Clearance is decided per floor cell from
:class:`~vlnkit.envs.continuous.navmesh.NearWall`'s lists: a cell far from walls holds only clear points;
otherwise the centre's clearance ``C`` and the point's offset ``d`` from the centre decide (clear when
``C - d`` reaches the limit, blocked when ``C + d`` does not, since clearance changes no faster than the
point moves), and only the remaining points are measured against the cell's boundary points.

A segment fits when every sample along it (every half cell) fits. Samples are tried every few first
(closer together than the agent's diameter, so a segment across an obstacle fails early), then the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

if TYPE_CHECKING:
    from vlnkit.envs.continuous.navmesh import NavMesh

STRIDE_FRACTION = 0.9
"""The sparse first pass of a segment test samples at most this fraction of the agent's diameter apart."""
RECENT_REACH = 2.0
"""Metres within which an earlier answer is used for a lower bound (farther ones are rarely in sight)."""


@dataclass(frozen=True)
class SightGrid:
    """The arrays of one navmesh that the compiled tests read (see the module docstring).

    ``args`` is their order in every compiled function: grid origin and cell size, grid shape, the
    navigable cells per column and their heights, the floor cells before erosion per column, their
    heights and centre clearances, NearWall's rows and boundary points, then the radius, ``max_climb``
    and the height tolerance for standing on a navigable cell.
    """

    args: tuple
    stride: int
    half_cell: float

    @classmethod
    def of(cls, nav: NavMesh) -> SightGrid:
        """The arrays of ``nav`` (built by :func:`~vlnkit.envs.continuous.navmesh.build_navmesh`)."""
        from vlnkit.envs.continuous.navmesh import SNAP_HEIGHT_TOLERANCE

        if nav.floor_start is None or nav.floor_height is None or nav.floor_clearance is None:
            raise ValueError("the navmesh has no floor cells before erosion: build it with build_navmesh")
        near = nav.near_wall
        args = (float(nav.origin[0]), float(nav.origin[2]), float(nav.cell_size), int(nav.shape[0]),
                int(nav.shape[1]), nav.column_start, nav.height, nav.floor_start, nav.floor_height,
                nav.floor_clearance, near.row, np.ascontiguousarray(near.points, dtype=np.float64),
                float(nav.agent.radius), float(nav.agent.max_climb), float(SNAP_HEIGHT_TOLERANCE))
        half = 0.5 * nav.cell_size
        return cls(args=args, stride=max(1, int(STRIDE_FRACTION * 2 * nav.agent.radius // half)), half_cell=half)

    def clear(self, points: np.ndarray, slack: float) -> np.ndarray:
        """Whether each point ``(N, 3)`` stands on the floor with a clearance of at least the radius minus
        ``slack`` (navigable cells are measured too: no shortcut)."""
        pts = np.ascontiguousarray(np.atleast_2d(points), dtype=np.float64)
        return _points_fit(pts, False, slack, *self.args)

    def visible(self, a: np.ndarray, b: np.ndarray, slack: float) -> np.ndarray:
        """For pairs ``a[i] -> b[i]`` (``(P, 3)`` each), whether every sample of the segment fits."""
        a = np.ascontiguousarray(np.atleast_2d(a), dtype=np.float64)
        b = np.ascontiguousarray(np.atleast_2d(b), dtype=np.float64)
        return _segments_fit(a, b, self.stride, self.half_cell, slack, *self.args)

    def first_hop(self, point: np.ndarray, nodes: np.ndarray, distance: np.ndarray, vertices: int,
                  away: np.ndarray, bound: float, recent: np.ndarray, margin: float, tangent_slack: float,
                  slack: float) -> tuple[float, int]:
        """The smallest ``|point - n| + distance[n]`` over the nodes in sight of ``point`` below ``bound``
        (vertices, the first ``vertices`` nodes, only along a tangent: the cosine between the segment and
        the vertex's ``away`` direction at most ``tangent_slack``), and that node; ``(bound, -1)`` when
        none. Each row ``(x, y, z, d)`` of ``recent`` (NaN rows unused) within :data:`RECENT_REACH` that
        ``point`` sees gives the lower bound ``d - |point - (x, y, z)| - margin``: nodes below it are not
        tried."""
        p = np.asarray(point, dtype=np.float64)
        total, node = _first_hop(float(p[0]), float(p[1]), float(p[2]), nodes, distance, vertices, away,
                                 float(bound), recent, float(margin), float(tangent_slack), self.stride,
                                 self.half_cell, slack, *self.args)
        return float(total), int(node)


@njit(cache=True)
def _nearest(col, y, start, heights, tol):
    best = -1
    best_dh = tol
    for c in range(start[col], start[col + 1]):
        dh = abs(heights[c] - y)
        if dh <= best_dh:
            best = c
            best_dh = dh
    return best


@njit(cache=True)
def _fits(x, y, z, navigable_ok, slack, ox, oz, cs, nx, nz, cstart, cheight, fstart, fheight, fclear, nrow,
          npts, radius, max_climb, snap):
    i = int(math.floor((x - ox) / cs))
    k = int(math.floor((z - oz) / cs))
    if i < 0 or i >= nx or k < 0 or k >= nz:
        return False
    col = i * nz + k
    if navigable_ok and _nearest(col, y, cstart, cheight, snap) >= 0:
        return True
    f = _nearest(col, y, fstart, fheight, max_climb)
    if f < 0:
        return False
    row = nrow[f]
    if row < 0:
        return True
    limit = radius - slack
    dx = x - (ox + (i + 0.5) * cs)
    dz = z - (oz + (k + 0.5) * cs)
    offset = math.sqrt(dx * dx + dz * dz)
    if fclear[f] - offset >= limit:
        return True
    if fclear[f] + offset < limit:
        return False
    limit2 = max(limit, 0.0) ** 2
    for j in range(npts.shape[1]):
        px = npts[row, j, 0] - x
        pz = npts[row, j, 1] - z
        if px * px + pz * pz < limit2:
            return False
    return True


@njit(cache=True)
def _points_fit(pts, navigable_ok, slack, ox, oz, cs, nx, nz, cstart, cheight, fstart, fheight, fclear, nrow,
                npts, radius, max_climb, snap):
    out = np.empty(len(pts), dtype=np.bool_)
    for n in range(len(pts)):
        out[n] = _fits(pts[n, 0], pts[n, 1], pts[n, 2], navigable_ok, slack, ox, oz, cs, nx, nz, cstart, cheight,
                       fstart, fheight, fclear, nrow, npts, radius, max_climb, snap)
    return out


@njit(cache=True)
def _segment_fits(ax, ay, az, bx, by, bz, stride, half, slack, ox, oz, cs, nx, nz, cstart, cheight, fstart,
                  fheight, fclear, nrow, npts, radius, max_climb, snap):
    length = math.hypot(bx - ax, bz - az)
    steps = max(1, int(math.ceil(length / half)))
    for sparse in (True, False):
        for k in range(1, steps):
            if (k % stride == 0) != sparse:
                continue
            t = k / steps
            if not _fits(ax + t * (bx - ax), ay + t * (by - ay), az + t * (bz - az), True, slack, ox, oz, cs, nx,
                         nz, cstart, cheight, fstart, fheight, fclear, nrow, npts, radius, max_climb, snap):
                return False
    return True


@njit(cache=True)
def _segments_fit(a, b, stride, half, slack, ox, oz, cs, nx, nz, cstart, cheight, fstart, fheight, fclear, nrow,
                  npts, radius, max_climb, snap):
    out = np.empty(len(a), dtype=np.bool_)
    for n in range(len(a)):
        out[n] = _segment_fits(a[n, 0], a[n, 1], a[n, 2], b[n, 0], b[n, 1], b[n, 2], stride, half, slack, ox, oz,
                               cs, nx, nz, cstart, cheight, fstart, fheight, fclear, nrow, npts, radius,
                               max_climb, snap)
    return out


@njit(cache=True)
def _first_hop(px, py, pz, nodes, distance, vertices, away, bound, recent, margin, tangent_slack, stride, half,
               slack, ox, oz, cs, nx, nz, cstart, cheight, fstart, fheight, fclear, nrow, npts, radius, max_climb,
               snap):
    lower = -np.inf
    for r in range(len(recent)):
        if math.isnan(recent[r, 3]):
            continue
        gap = math.sqrt((recent[r, 0] - px) ** 2 + (recent[r, 1] - py) ** 2 + (recent[r, 2] - pz) ** 2)
        bound_here = recent[r, 3] - gap - margin
        if gap > RECENT_REACH or bound_here <= lower:
            continue
        if _segment_fits(px, py, pz, recent[r, 0], recent[r, 1], recent[r, 2], stride, half, slack, ox, oz, cs,
                         nx, nz, cstart, cheight, fstart, fheight, fclear, nrow, npts, radius, max_climb, snap):
            lower = bound_here
    n = len(nodes)
    total = np.empty(n)
    index = np.empty(n, dtype=np.int64)
    count = 0
    for j in range(n):
        dx = nodes[j, 0] - px
        dy = nodes[j, 1] - py
        dz = nodes[j, 2] - pz
        value = math.sqrt(dx * dx + dy * dy + dz * dz) + distance[j]
        if not (value < bound - 1e-9 and value >= lower):
            continue
        if j < vertices and abs(dx * away[j, 0] + dz * away[j, 1]) > tangent_slack * math.sqrt(dx * dx + dz * dz):
            continue
        total[count] = value
        index[count] = j
        count += 1
    order = np.argsort(total[:count], kind="mergesort")
    for o in order:
        j = index[o]
        if _segment_fits(px, py, pz, nodes[j, 0], nodes[j, 1], nodes[j, 2], stride, half, slack, ox, oz, cs, nx,
                         nz, cstart, cheight, fstart, fheight, fclear, nrow, npts, radius, max_climb, snap):
            return total[o], j
    return bound, -1
