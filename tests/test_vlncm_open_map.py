"""The Open Map Predictor on hand-made depth panoramas: free space, obstacles, walkable distances."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlnkit.agents.vlncm.open_map import FREE, OCCUPIED, UNKNOWN, OpenMapConfig, OpenMapPredictor, panorama_points

SIZE = 64
CAMERA = 1.25
CONFIG = OpenMapConfig(camera_height=CAMERA, pixel_stride=1, max_distance=4.0, safety_margin=0.25, agent_radius=0.1)


def ray_tangents() -> tuple[np.ndarray, np.ndarray]:
    """Per pixel of a 90-degree square view: the ray's right and up slopes."""
    t = (np.arange(SIZE) + 0.5 - SIZE / 2) / (SIZE / 2)
    return t[None, :].repeat(SIZE, 0), -t[:, None].repeat(SIZE, 1)


def room_view(wall: float | None) -> np.ndarray:
    """Depth of one view over a flat floor, with a wall across it ``wall`` metres ahead (or none)."""
    _, up = ray_tangents()
    floor = np.where(up < 0, CAMERA / np.maximum(-up, 1e-9), np.inf)
    depth = np.minimum(floor, wall if wall is not None else np.inf)
    return np.where(np.isfinite(depth), depth, 0.0)


def panorama(walls: dict[int, float]) -> np.ndarray:
    """Twelve views, view ``k`` 30k degrees to the left, with walls in some of them, as ``(12, H, W, 1)``."""
    return np.stack([room_view(walls.get(k)) for k in range(12)])[..., None].astype(np.float32)


def test_points_of_a_wall_ahead_lie_at_its_distance_and_heights() -> None:
    points, heights = panorama_points(panorama({0: 3.0})[:1], hfov=90.0, camera_height=CAMERA)
    wall = heights > 0.05
    assert np.allclose(points[wall, 1], 3.0)
    assert heights[wall].max() == pytest.approx(CAMERA + 3.0 * (1 - 1 / SIZE), rel=1e-6)
    assert np.allclose(heights[~wall], 0.0, atol=1e-6)


def test_a_view_turned_left_puts_its_points_on_the_left() -> None:
    points, heights = panorama_points(panorama({3: 2.0}), hfov=90.0, camera_height=CAMERA)
    wall = heights > 0.05
    assert wall.any()
    assert np.allclose(points[wall, 0], -2.0)


def test_the_grid_marks_floor_free_walls_occupied_and_the_rest_unknown() -> None:
    occupancy = OpenMapPredictor(CONFIG).occupancy(panorama({0: 3.0}))
    assert occupancy.cell_at(0.0, 2.98) == OCCUPIED
    assert occupancy.cell_at(0.0, 2.0) == FREE
    assert occupancy.cell_at(0.0, 0.3) == UNKNOWN
    assert occupancy.cell_at(0.0, 5.5) == UNKNOWN


@pytest.mark.parametrize("wall_view, angle, expected", [
    (0, 0.0, 3.0 - 0.1 - 0.25),
    (3, math.pi / 2, 2.0 - 0.1 - 0.25),
    (0, math.pi / 2, 4.0),
    (0, math.pi, 4.0),
])
def test_free_distance_stops_the_margin_and_radius_short_of_the_wall(wall_view: int, angle: float, expected: float) -> None:
    depth = panorama({wall_view: 3.0 if wall_view == 0 else 2.0})
    distance = OpenMapPredictor(CONFIG).distance(depth, angle)
    assert expected - CONFIG.cell_size - 1e-9 <= distance <= expected + 1e-9


def test_an_oblique_heading_reaches_farther_before_the_wall() -> None:
    omp = OpenMapPredictor(CONFIG)
    depth = panorama({0: 1.5})
    straight = omp.distance(depth, 0.0)
    oblique = omp.distance(depth, math.radians(-30))
    assert oblique == pytest.approx((1.5 - 0.35) / math.cos(math.radians(30)), abs=3 * CONFIG.cell_size)
    assert oblique > straight


def test_distance_is_capped_and_never_negative() -> None:
    omp = OpenMapPredictor(CONFIG)
    assert omp.distance(panorama({}), 0.0) == CONFIG.max_distance
    assert omp.distance(panorama({0: 0.3}), 0.0) == 0.0


def test_obstacles_below_the_body_height_range_do_not_block() -> None:
    low = OpenMapConfig(**{**CONFIG.__dict__, "min_obstacle_height": 2.5 + CAMERA})
    assert OpenMapPredictor(low).distance(panorama({0: 2.0}), 0.0) == low.max_distance


def test_a_bump_blocks_its_direction_only() -> None:
    omp = OpenMapPredictor(CONFIG)
    bumped = omp.occupancy(panorama({}), bumps=[0.0])
    assert omp.free_distance(bumped, 0.0) == 0.0
    assert omp.free_distance(bumped, math.pi / 2) == CONFIG.max_distance
    assert omp.free_distance(omp.occupancy(panorama({})), 0.0) == CONFIG.max_distance
    both = omp.occupancy(panorama({}), bumps=[0.0, -math.pi / 2])
    assert omp.free_distance(both, -math.pi / 2) == 0.0 and omp.free_distance(both, math.pi) == CONFIG.max_distance


def test_the_best_heading_slips_through_a_gap_beside_the_view_centre() -> None:
    omp = OpenMapPredictor(CONFIG)
    depth = panorama({0: 1.0})
    gap = depth[0, :, SIZE // 2 + 2:, 0]
    gap[gap >= 1.0] = 0.0
    occupancy = omp.occupancy(depth)
    assert omp.free_distance(occupancy, 0.0) < 1.0
    angle, distance = omp.best_heading(occupancy, 0.0)
    assert angle < 0 and distance > 2.0
    assert omp.best_heading(omp.occupancy(panorama({})), 0.0) == (0.0, CONFIG.max_distance)
