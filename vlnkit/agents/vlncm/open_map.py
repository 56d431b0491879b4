"""Open Map Predictor (OMP): how far the agent can walk in a direction without a collision.

From the depth panorama (``N`` views, view ``k`` turned ``k * 360 / N`` degrees left, depth in metres
along each camera's axis, 0 where nothing was hit) every pixel is lifted to a 3-D point around the agent.
Points near floor level mark *free* cells of an egocentric top-down grid and points between
``min_obstacle_height`` and ``max_obstacle_height`` (what the agent's body would hit) mark *occupied*
ones; occupied wins, and cells nothing was seen in stay *unknown*. Along a heading, the walkable distance
is where the first occupied cell ahead enters a corridor as wide as the agent plus ``side_margin`` on each
side, less the agent's radius and ``safety_margin``, capped at ``max_distance`` (unknown cells count as
free: the floor right around the agent is below the cameras' field of view).

A view covers 30 degrees of headings, and a door seen in it may not lie on its centre line:
:meth:`OpenMapPredictor.best_heading` looks at headings up to ``heading_spread`` degrees either side of the
chosen view's (every ``heading_step`` degrees) and takes the one with the longest free distance, the
closest to the centre among equals.

The cameras cannot see low obstacles right around the agent (a 0.45 m table top closer than 0.8 m is
below a 1.25 m camera's 45 degree lower field of view). After a blocked move (the collision flag every
VLN-CE step reports) the agent knows there is something close in that direction:
:meth:`OpenMapPredictor.occupancy` takes the headings of such bumps and marks an arc of ``bump_arc``
degrees at ``bump_depth`` metres beyond the agent's radius around each occupied.

The grid's frame: ``x`` to the agent's right, ``y`` ahead, agent at the centre; heading angles are
radians, left positive (as ``GO_TOWARD_POINT`` takes them). The paper gives no numbers for the map; the
defaults below are the project's, sized for the R2R-CE agent (radius 0.1 m, height 1.5 m, camera 1.25 m
up, 90 degree views).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

UNKNOWN, FREE, OCCUPIED = -1, 0, 1


@dataclass(frozen=True)
class OpenMapConfig:
    """Settings of the Open Map Predictor (metres and degrees).

    Attributes:
        hfov: horizontal field of view of each panorama view.
        camera_height: camera height above the floor.
        cell_size: side of a grid cell.
        map_radius: half the side of the egocentric grid.
        floor_tolerance: points lower than this are floor (free).
        min_obstacle_height, max_obstacle_height: points between these heights block the agent.
        agent_radius: the agent's radius.
        safety_margin: clearance kept from the first obstacle ahead.
        side_margin: clearance kept from obstacles beside the path.
        max_distance: the cap of a move.
        pixel_stride: use every ``pixel_stride``-th row and column of the depth images.
        bump_arc, bump_depth: the arc (degrees, centred ahead) and its distance beyond the agent's
            radius that a collision marks occupied.
        heading_spread, heading_step: the headings :meth:`OpenMapPredictor.best_heading` tries (degrees
            either side of the given one, and between tries; a spread of 0 keeps the heading).
    """

    hfov: float = 90.0
    camera_height: float = 1.25
    cell_size: float = 0.05
    map_radius: float = 6.0
    floor_tolerance: float = 0.05
    min_obstacle_height: float = 0.1
    max_obstacle_height: float = 1.6
    agent_radius: float = 0.1
    safety_margin: float = 0.25
    side_margin: float = 0.05
    max_distance: float = 2.5
    pixel_stride: int = 2
    bump_arc: float = 40.0
    bump_depth: float = 0.15
    heading_spread: float = 15.0
    heading_step: float = 5.0


@dataclass
class OccupancyMap:
    """An egocentric top-down grid of :data:`UNKNOWN`, :data:`FREE` and :data:`OCCUPIED` cells; row ``i``,
    column ``j`` is the cell around ``x = (j + 0.5) * cell - radius``, ``y = radius - (i + 0.5) * cell``
    (row 0 farthest ahead)."""

    grid: np.ndarray
    cell_size: float
    radius: float

    def cell_centres(self, state: int) -> np.ndarray:
        """``(K, 2)`` ``(x, y)`` centres of the cells in ``state``."""
        rows, cols = np.nonzero(self.grid == state)
        return np.stack([(cols + 0.5) * self.cell_size - self.radius, self.radius - (rows + 0.5) * self.cell_size], axis=1)

    def _index(self, x: float, y: float) -> tuple[int, int] | None:
        i = int(math.floor((self.radius - y) / self.cell_size))
        j = int(math.floor((x + self.radius) / self.cell_size))
        return (i, j) if 0 <= i < self.grid.shape[0] and 0 <= j < self.grid.shape[1] else None

    def cell_at(self, x: float, y: float) -> int:
        """The state of the cell containing ``(x, y)`` (:data:`UNKNOWN` outside the grid)."""
        index = self._index(x, y)
        return UNKNOWN if index is None else int(self.grid[index])

    def mark(self, x: float, y: float, state: int) -> None:
        """Set the cell containing ``(x, y)`` (ignored outside the grid)."""
        index = self._index(x, y)
        if index is not None:
            self.grid[index] = state


def panorama_points(depth: np.ndarray, hfov: float, camera_height: float, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Egocentric ``(x, y)`` ground positions ``(P, 2)`` and heights above the floor ``(P,)`` of the hit
    pixels of a depth panorama ``(N, H, W)`` or ``(N, H, W, 1)`` (metres along each view's axis)."""
    d = np.asarray(depth, dtype=np.float64)
    if d.ndim == 4:
        d = d[..., 0]
    d = d[:, ::stride, ::stride]
    views, h, w = d.shape
    full_h, full_w = np.asarray(depth).shape[1:3]
    tan_h = math.tan(math.radians(hfov) / 2.0)
    tan_v = tan_h * full_h / full_w
    cols = (np.arange(0, full_w, stride) + 0.5 - full_w / 2.0) / (full_w / 2.0) * tan_h
    rows = (full_h / 2.0 - (np.arange(0, full_h, stride) + 0.5)) / (full_h / 2.0) * tan_v
    xs, ys, hs = [], [], []
    for k in range(views):
        z = d[k]
        hit = z > 0
        lateral = (cols[None, :] * z)[hit]
        forward = z[hit]
        theta = 2.0 * math.pi * k / views
        xs.append(-math.sin(theta) * forward + math.cos(theta) * lateral)
        ys.append(math.cos(theta) * forward + math.sin(theta) * lateral)
        hs.append(camera_height + (rows[:, None] * z)[hit])
    return np.stack([np.concatenate(xs), np.concatenate(ys)], axis=1), np.concatenate(hs)


class OpenMapPredictor:
    """Depth panorama -> occupancy grid -> walkable distance along a heading (see the module docstring)."""

    def __init__(self, config: OpenMapConfig = OpenMapConfig()) -> None:
        self.config = config

    def occupancy(self, depth: np.ndarray, bumps: Sequence[float] = ()) -> OccupancyMap:
        """The egocentric grid seen in a depth panorama, with an obstacle just beyond the agent in each
        direction of ``bumps`` (radians, left positive: where moves from here were blocked)."""
        c = self.config
        points, heights = panorama_points(depth, c.hfov, c.camera_height, c.pixel_stride)
        side = int(math.ceil(2 * c.map_radius / c.cell_size))
        grid = np.full((side, side), UNKNOWN, dtype=np.int8)
        cols = np.floor((points[:, 0] + c.map_radius) / c.cell_size).astype(np.int64)
        rows = np.floor((c.map_radius - points[:, 1]) / c.cell_size).astype(np.int64)
        inside = (rows >= 0) & (rows < side) & (cols >= 0) & (cols < side)
        floor = inside & (heights < c.floor_tolerance)
        grid[rows[floor], cols[floor]] = FREE
        blocking = inside & (heights >= c.min_obstacle_height) & (heights <= c.max_obstacle_height)
        grid[rows[blocking], cols[blocking]] = OCCUPIED
        occupancy = OccupancyMap(grid, c.cell_size, c.map_radius)
        reach = c.agent_radius + c.bump_depth
        for bump in bumps:
            for a in bump + np.radians(np.linspace(-c.bump_arc / 2, c.bump_arc / 2, 13)):
                occupancy.mark(-reach * math.sin(a), reach * math.cos(a), OCCUPIED)
        return occupancy

    def free_distance(self, occupancy: OccupancyMap, angle: float) -> float:
        """The longest collision-free move along ``angle`` (radians, left positive), with the safety
        margin kept and capped at ``max_distance``."""
        c = self.config
        direction = np.array([-math.sin(angle), math.cos(angle)])
        cells = occupancy.cell_centres(OCCUPIED)
        along = cells @ direction
        across = np.abs(cells[:, 0] * direction[1] - cells[:, 1] * direction[0])
        blocked = (along > 0) & (across <= c.agent_radius + c.side_margin + occupancy.cell_size / 2)
        if not blocked.any():
            return c.max_distance
        first = float(along[blocked].min()) - occupancy.cell_size / 2
        return float(np.clip(first - c.agent_radius - c.safety_margin, 0.0, c.max_distance))

    def best_heading(self, occupancy: OccupancyMap, angle: float) -> tuple[float, float]:
        """The heading within ``heading_spread`` of ``angle`` with the longest free distance (ties within a
        cell: the one nearest ``angle``), and that distance."""
        c = self.config
        steps = int(c.heading_spread // c.heading_step) if c.heading_step > 0 else 0
        offsets = sorted((math.radians(k * c.heading_step) for k in range(-steps, steps + 1)), key=abs)
        best_angle, best = angle, self.free_distance(occupancy, angle)
        for offset in offsets[1:]:
            distance = self.free_distance(occupancy, angle + offset)
            if distance > best + occupancy.cell_size:
                best_angle, best = angle + offset, distance
        return best_angle, best

    def distance(self, depth: np.ndarray, angle: float) -> float:
        """:meth:`free_distance` along ``angle`` on the grid of ``depth``."""
        return self.free_distance(self.occupancy(depth), angle)
