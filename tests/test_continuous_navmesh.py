"""Habitat conventions, scene loading and the navigable floor on hand-made meshes and the real test scenes."""

import math

import numpy as np
import pytest
import trimesh
from conftest import shared_sample

from vlnkit.envs.continuous.backend import AgentSpec
from vlnkit.envs.continuous.geodesic import path_length
from vlnkit.envs.continuous.geometry import (
    forward_vector,
    habitat_to_zup,
    quat_from_yaw,
    quat_rotate,
    wrap_angle,
    yaw_from_quat,
    zup_to_habitat,
)
from vlnkit.envs.continuous.navmesh import NavMeshSettings, build_navmesh
from vlnkit.envs.continuous.scene import SceneLoadError, load_scene_geometry


def box(lo, hi):
    """Triangles of an axis-aligned box from corner ``lo`` to ``hi`` (Habitat frame)."""
    mesh = trimesh.creation.box(extents=np.subtract(hi, lo))
    mesh.apply_translation(np.add(lo, hi) / 2)
    return mesh.vertices[mesh.faces]


def room_with_door(extra=()):
    """A 6 x 4 m floor (top at y = 0) split by a 0.1 m wall at x = 3 with a door for z in [1.5, 2.5]."""
    parts = [box((0, -0.05, 0), (6, 0, 4)), box((2.95, 0, 0), (3.05, 2.5, 1.5)), box((2.95, 0, 2.5), (3.05, 2.5, 4))]
    return np.concatenate(parts + list(extra))


@pytest.fixture(scope="module")
def door_room():
    return build_navmesh(room_with_door())


def test_quaternions_follow_habitat():
    # The real sample's first start rotation is 60 degrees about +y.
    q = quat_from_yaw(math.pi / 3)
    assert np.allclose(q, [0.0, 0.5, 0.0, math.sqrt(3) / 2])
    assert yaw_from_quat(np.array([-0.0, 0.49999999999999983, 0.0, 0.8660254037844387])) == pytest.approx(math.pi / 3)
    assert np.allclose(forward_vector(0.0), [0, 0, -1])
    assert np.allclose(forward_vector(math.pi / 2), [-1, 0, 0])  # a left turn from -z faces -x
    assert np.allclose(quat_rotate(quat_from_yaw(math.pi / 2), [0, 0, -1]), [-1, 0, 0])
    assert wrap_angle(3 * math.pi / 2) == pytest.approx(-math.pi / 2)
    assert wrap_angle(-math.pi) == pytest.approx(math.pi)


def test_zup_frame_conversion():
    assert np.allclose(zup_to_habitat(np.array([1.0, 2.0, 3.0])), [1.0, 3.0, -2.0])
    assert np.allclose(habitat_to_zup(zup_to_habitat(np.array([[1.0, 2.0, 3.0]]))), [[1.0, 2.0, 3.0]])


def _exact_geodesic(nav, start, goal):
    """Geodesic distance and shortest path from ``start`` to ``goal`` with the any-angle field."""
    start, goal = np.asarray(start, dtype=float), np.asarray(goal, dtype=float)
    field = nav.goal_field([nav.locate(goal)], goal[None, :])
    cell = nav.locate(start)
    return nav.distance_at(field, start, cell), nav.shortest_path(field, start, cell)


def _wrap_length(start, goal, corner, radius):
    """By hand: the shortest path from ``start`` to ``goal`` ((x, z) pairs) around a circle of ``radius``
    about ``corner``, when the straight line would cut it: two tangents and the arc between them."""
    cs, cg = np.subtract(start, corner), np.subtract(goal, corner)
    ds, dg = np.linalg.norm(cs), np.linalg.norm(cg)
    between = math.acos(np.dot(cs, cg) / (ds * dg))
    arc = (2 * math.pi - between) - math.acos(radius / ds) - math.acos(radius / dg)
    return math.sqrt(ds**2 - radius**2) + math.sqrt(dg**2 - radius**2) + radius * arc


def test_geodesic_on_an_empty_floor_is_the_straight_line():
    nav = build_navmesh(box((0, -0.05, 0), (6, 0, 4)))
    d, path = _exact_geodesic(nav, [1.0, 0.0, 1.0], [5.0, 0.0, 3.0])
    assert d == pytest.approx(math.hypot(4.0, 2.0), abs=0.01)
    assert len(path) == 2


def test_geodesic_around_the_corner_of_an_l_shaped_corridor():
    # A 4 x 4 m floor whose quadrant x < 3, z > 1 is a solid block, leaving an L of x 0-4, z 0-1 and
    # x 3-4, z 0-4. The path wraps the block's corner (3, 1) along a circle of the agent's radius 0.1 m.
    nav = build_navmesh(np.concatenate([box((0, -0.05, 0), (4, 0, 4)), box((-0.1, 0, 1), (3, 2.5, 4.1))]))
    d, path = _exact_geodesic(nav, [0.5, 0.0, 0.5], [3.5, 0.0, 3.5])
    assert d == pytest.approx(_wrap_length((0.5, 0.5), (3.5, 3.5), (3.0, 1.0), 0.1), abs=0.01)
    assert d == pytest.approx(path_length(path), abs=1e-9)


def test_geodesic_goes_through_the_door(door_room):
    nav = door_room
    start, goal = np.array([1.0, 0.0, 0.5]), np.array([5.0, 0.0, 0.5])
    d, path = _exact_geodesic(nav, start, goal)
    # By hand: tangent to the circle of 0.1 m about the jamb corner (2.95, 1.5), its arc, 0.1 m across
    # the wall's thickness, then the mirror image to the goal.
    cs = np.array([-1.95, -1.0])
    arc = math.acos(np.dot(cs, [0.0, 1.0]) / np.linalg.norm(cs)) - math.acos(0.1 / np.linalg.norm(cs))
    assert d == pytest.approx(2 * (math.sqrt(cs @ cs - 0.01) + 0.1 * arc) + 0.1, abs=0.01)
    assert d == pytest.approx(path_length(path), abs=1e-9)
    assert np.allclose(path[0], start) and np.linalg.norm(path[-1] - goal) < 1e-9
    assert 1.5 < path[:, 2].max() < 1.65  # over the jambs' circles, through the door


def test_geodesic_is_its_path_length_and_never_below_the_straight_line():
    furniture = [box((1.0, 0.0, 1.0), (1.6, 0.8, 1.4)), box((4.0, 0.0, 2.6), (4.3, 1.0, 3.5))]
    nav = build_navmesh(room_with_door(furniture))
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(12):
        start, goal = nav.sample(rng), nav.sample(rng)
        d, path = _exact_geodesic(nav, start, goal)
        straight = math.hypot(*(goal - start)[[0, 2]])
        assert d >= straight - 1e-9
        assert d == pytest.approx(path_length(path), abs=1e-9)
        assert np.linalg.norm(path[-1] - goal) < 1e-9
        grid = nav.grid_distance_at(nav.goal_field([nav.locate(goal)]), start, nav.locate(start))
        assert d <= grid + 1e-9  # the grid distance is an upper bound
        checked += d > straight + 0.05
    assert checked >= 3  # some pairs had to go round an obstacle


def test_walk_stops_at_the_wall_and_slides(door_room):
    nav = door_room
    start = np.array([2.5, 0.0, 0.5])
    point, _, blocked = nav.walk(start, np.array([3.5, 0.0, 0.5]), nav.locate(start))
    assert blocked and point[0] == pytest.approx(2.85, abs=0.05) and point[2] == pytest.approx(0.5)
    # Diagonal into the wall: free up to x = 2.85 (z = 0.675), then the rest's z part (0.325 m) slides.
    point, _, blocked = nav.slide(start, np.array([3.5, 0.0, 1.0]), nav.locate(start))
    assert blocked
    assert point[0] == pytest.approx(2.85, abs=0.05)
    assert point[2] == pytest.approx(1.0, abs=0.05)


def test_erosion_keeps_the_agent_radius_from_walls(door_room):
    nav = door_room
    assert nav.locate([2.88, 0.0, 0.5]) == -1  # 7 cm from the wall face
    assert nav.locate([2.75, 0.0, 0.5]) >= 0  # 20 cm from it
    assert nav.locate([3.0, 0.0, 2.0]) >= 0  # in the door


@pytest.mark.parametrize("radius", [0.1, 0.18])
def test_erosion_is_euclidean_and_exactly_the_radius(radius):
    # Grid origin is the mesh minimum minus 1 mm, so cell centres sit at x = 0.024 + 0.05 k.
    nav = build_navmesh(room_with_door(), AgentSpec(radius=radius))
    centres = np.arange(0.024, 2.95, 0.05)
    gap = 2.95 - centres  # distance of each centre from the wall face at x = 2.95
    kept = np.array([nav.locate([x, 0.0, 0.524]) >= 0 for x in centres])
    np.testing.assert_array_equal(kept[gap < 0.9], gap[gap < 0.9] >= radius)
    # Beside the door jamb's corner (2.95, 1.5) a centre is kept by its straight-line distance to the
    # corner, not by its distance along the grid.
    for x, z in ((2.874, 1.574), (2.824, 1.574), (2.874, 1.624), (2.824, 1.624)):
        assert (nav.locate([x, 0.0, z]) >= 0) == (math.hypot(2.95 - x, z - 1.5) >= radius), (x, z)


def test_headroom_steps_and_islands():
    table = [box((1.0, 0.7, 1.0), (2.0, 0.75, 2.0))] + [box((x, 0, z), (x + 0.05, 0.7, z + 0.05)) for x in (1.0, 1.95) for z in (1.0, 1.95)]
    step = [box((4.0, 0.0, 0.5), (5.0, 0.15, 1.5))]
    ledge = [box((4.0, 0.0, 2.5), (5.0, 0.35, 3.5))]
    nav = build_navmesh(room_with_door(table + step + ledge))
    floor = nav.component[nav.locate([0.5, 0.0, 0.5])]
    assert nav.locate([1.5, 0.0, 1.5]) == -1  # under the table: 0.7 m of headroom
    top = nav.locate([1.5, 0.75, 1.5])
    assert top >= 0 and nav.component[top] != floor  # the table top is an island
    on_step = nav.locate([4.5, 0.15, 1.0])
    assert on_step >= 0 and nav.component[on_step] == floor  # 0.15 m step: climbable
    on_ledge = nav.locate([4.5, 0.35, 3.0])
    assert on_ledge >= 0 and nav.component[on_ledge] != floor  # 0.35 m: too high
    assert nav.largest == floor


def test_agent_radius_changes_the_door_width():
    narrow = np.concatenate([box((0, -0.05, 0), (6, 0, 4)), box((2.95, 0, 0), (3.05, 2.5, 1.8)), box((2.95, 0, 2.2), (3.05, 2.5, 4))])
    thin = build_navmesh(narrow, AgentSpec(radius=0.1))
    fat = build_navmesh(narrow, AgentSpec(radius=0.25))
    assert thin.component[thin.locate([1, 0, 2])] == thin.component[thin.locate([5, 0, 2])]
    assert fat.component[fat.locate([1, 0, 2])] != fat.component[fat.locate([5, 0, 2])]


def test_missing_and_broken_scene_files(tmp_path):
    with pytest.raises(SceneLoadError, match="not found"):
        load_scene_geometry(tmp_path / "absent.glb")
    broken = tmp_path / "broken.glb"
    broken.write_bytes(b"glTF not really")
    with pytest.raises(SceneLoadError, match="cannot read"):
        load_scene_geometry(broken)
    text = tmp_path / "scene.txt"
    text.write_text("not a mesh")
    with pytest.raises(SceneLoadError, match="unsupported"):
        load_scene_geometry(text)


def test_real_test_scenes_load_z_up_and_have_floor():
    scenes = shared_sample("test_scenes")
    room = load_scene_geometry(scenes / "simple_room.glb")
    lo, hi = room.bounds
    assert hi[1] - lo[1] < 2.5 and hi[0] - lo[0] > 10  # z-up file: the room's height ends up on y
    nav = build_navmesh(room.triangles)
    floor_height = float(np.median(nav.height[nav.component == nav.largest]))
    assert floor_height == pytest.approx(0.145, abs=0.02)
    plane = load_scene_geometry(scenes / "plane.glb")
    nav = build_navmesh(plane.triangles, settings=NavMeshSettings(max_cells=100_000))
    assert nav.cell_size == pytest.approx(math.sqrt(200.002**2 / 100_000), rel=1e-3)  # coarsened to fit
    assert nav.num_cells > 90_000
    assert nav.locate([0.0, 0.0, 0.0]) >= 0


def test_points_without_a_nearest_cell_are_a_clear_error(door_room):
    nav = door_room
    assert nav.locate([1e300, 0.0, 0.5]) == -1 and nav.locate([math.nan, 0.0, 0.5]) == -1
    assert nav.locate([1.7e308, 0.0, 0.5]) == -1  # (x - origin) / cell size overflows
    for point in ([1e300, 0.0, 0.5], [math.inf, 0.0, 0.5], [1.0, math.nan, 0.5]):
        with pytest.raises(ValueError, match="no nearest floor cell"):
            nav.snap_cell(np.array(point))
    # A finite far point still has a nearest cell: the floor's east edge (x = 6 m less the agent radius).
    assert nav.positions[nav.snap_cell(np.array([1e6, 0.0, 0.5]))][0] == pytest.approx(5.9, abs=0.05)


def test_the_geodesics_benchmarks_reference_solver_matches_the_hand_computed_corner():
    from vlnkit.benchmarks.geodesics import ReferenceSolver, free_space

    tris = np.concatenate([box((0, -0.05, 0), (4, 0, 4)), box((-0.1, 0, 1), (3, 2.5, 4.1))])
    agent = AgentSpec()
    solver = ReferenceSolver(free_space(tris, agent.radius, agent.height, agent.max_climb, agent.max_slope_deg, 0.0))
    d = solver.distance(np.array([0.5, 0.5]), np.array([3.5, 3.5]))
    # The reference's circles are 64-gons inscribed in the circle: shorter than the arc by a hair.
    assert d == pytest.approx(_wrap_length((0.5, 0.5), (3.5, 3.5), (3.0, 1.0), 0.1), abs=1e-3)
    assert solver.distance(np.array([0.5, 0.5]), np.array([2.5, 0.5])) == pytest.approx(2.0, abs=1e-9)


def test_compiled_fit_tests_match_a_naive_reference(door_room):
    # The compiled point and segment tests of vlnkit.envs.continuous.sight against the plain definitions:
    # a point fits when it is on the floor with clearance >= r; a segment when each half-cell sample
    # stands on a navigable cell or fits.
    from vlnkit.envs.continuous.geodesic import CLEARANCE_SLACK, visible

    nav = door_room
    rng = np.random.default_rng(3)
    points = np.c_[rng.uniform(2.5, 3.5, 4000), np.zeros(4000), rng.uniform(0.0, 4.0, 4000)]
    naive = nav.on_floor(points) & (nav.clearance(points) >= nav.agent.radius - CLEARANCE_SLACK)
    assert np.array_equal(nav.clear(points, CLEARANCE_SLACK), naive)
    assert 0.2 < naive.mean() < 0.8
    a = np.c_[rng.uniform(0.5, 5.5, 300), np.zeros(300), rng.uniform(0.5, 3.5, 300)]
    b = np.c_[rng.uniform(0.5, 5.5, 300), np.zeros(300), rng.uniform(0.5, 3.5, 300)]
    expected = []
    for p, q in zip(a, b):
        steps = max(1, math.ceil(math.hypot(*(q - p)[[0, 2]]) / (0.5 * nav.cell_size)))
        t = np.arange(1, steps)[:, None] / steps
        samples = p + t * (q - p)
        fits = (nav.cells_at(samples, samples[:, 1]) >= 0) | (
            nav.on_floor(samples) & (nav.clearance(samples) >= nav.agent.radius - CLEARANCE_SLACK))
        expected.append(bool(fits.all()))
    got = visible(nav, a, b)
    assert got.tolist() == expected and 0 < sum(expected) < len(expected)
