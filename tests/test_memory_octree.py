"""SparseOctree: radius and k-nearest queries equal brute force; visits, embeddings, levels, state."""

import numpy as np
import pytest

from vlnkit.memory.octree import SparseOctree


def _brute(octree, points, level=0):
    cells = np.unique(np.floor(points / octree.cell_size(level)).astype(np.int64), axis=0)
    return (cells + 0.5) * octree.cell_size(level)


@pytest.mark.parametrize("leaf_size, depth", [(1.0, 21), (0.37, 6), (2.5, 1)])
def test_radius_and_knn_equal_brute_force(leaf_size, depth):
    rng = np.random.default_rng(3)
    points = rng.uniform(-60.0, 40.0, size=(4000, 3)) * np.array([1.0, 1.0, 0.1])
    octree = SparseOctree(leaf_size=leaf_size, depth=depth)
    octree.insert(points)
    centers = _brute(octree, points)
    assert len(octree) == len(centers)
    for _ in range(60):
        query = rng.uniform(-70.0, 50.0, size=3)
        radius = rng.uniform(0.0, 12.0)
        distances = np.linalg.norm(centers - query, axis=1)
        codes, found = octree.radius(query, radius)
        assert np.allclose(found, np.sort(distances[distances <= radius]))
        assert np.array_equal(np.sort(codes), np.sort(octree.encode(centers[distances <= radius])))
        k = int(rng.integers(1, 25))
        codes, found = octree.knn(query, k)
        assert np.allclose(found, np.sort(distances)[:k])
        assert np.allclose(np.linalg.norm(octree.cell_centers(codes) - query, axis=1), found)


def test_coarse_level_queries_equal_brute_force():
    rng = np.random.default_rng(4)
    points = rng.uniform(-500.0, 500.0, size=(3000, 3))
    octree = SparseOctree(leaf_size=1.0, depth=8)
    octree.insert(points)
    for level in (1, 3, 5):
        centers = octree.cell_centers(octree.cells(level), level)
        assert len(centers) == len(_brute(octree, points, level))
        for _ in range(20):
            query = rng.uniform(-600.0, 600.0, size=3)
            distances = np.linalg.norm(centers - query, axis=1)
            _, found = octree.radius(query, 120.0, level)
            assert np.allclose(found, np.sort(distances[distances <= 120.0]))
            _, found = octree.knn(query, 7, level)
            assert np.allclose(found, np.sort(distances)[:7])


def test_far_apart_points_kilometres_away():
    octree = SparseOctree(leaf_size=1.0)
    points = np.array([[-250_000.0, 3.0, 0.0], [250_000.0, -7.0, 1.0], [0.2, 0.2, 0.2], [120_000.5, 90_000.5, 0.0]])
    octree.insert(points)
    codes, distances = octree.knn(np.array([249_990.0, 0.0, 0.0]), 2)
    assert codes[0] == octree.encode(points[1])
    assert distances[1] == pytest.approx(np.linalg.norm(np.array([120_000.5, 90_000.5, 0.5]) - [249_990.0, 0.0, 0.0]))
    assert len(octree.radius(np.zeros(3), 1.0)[0]) == 1


def test_visits_embeddings_and_leaf_lookup():
    octree = SparseOctree(leaf_size=2.0, embedding_dim=2)
    positions = np.array([[0.5, 0.5, 0.0], [1.5, 1.0, 0.0], [-0.5, 0.0, 0.0], [1.0, 1.9, 0.0]])
    embeddings = np.array([[1, 0], [0, 1], [5, 5], [2, 2]], dtype=np.float32)
    codes = octree.insert(positions, embeddings, steps=np.array([3, 4, 5, 6]))
    assert codes[0] == codes[1] == codes[3] != codes[2]
    leaf = octree.leaf_at(np.array([0.1, 0.1, 0.1]))
    assert leaf.visits == 3 and leaf.last_step == 6
    assert np.array_equal(leaf.embedding, [2, 2])
    assert np.array_equal(leaf.center, [1.0, 1.0, 1.0])
    octree.insert(np.array([0.2, 0.3, 0.0]), np.array([9, 9]), steps=7)
    assert octree.leaf(int(codes[0])).visits == 4
    assert octree.leaf_at(np.array([10.0, 0.0, 0.0])) is None
    slots = octree.lookup(codes)
    assert slots[0] == slots[1] == slots[3] != slots[2] and slots.min() >= 0
    assert octree.lookup(np.array([12345])).tolist() == [-1]


def test_levels_and_parents():
    octree = SparseOctree(leaf_size=1.0, depth=4)
    octree.insert(np.array([[0.5, 0.5, 0.5], [1.5, 0.5, 0.5], [5.5, 0.5, 0.5], [-0.5, 0.5, 0.5]]))
    assert len(octree.cells(0)) == 4
    assert len(octree.cells(1)) == 3
    assert len(octree.cells(2)) == 3
    assert len(octree.cells(3)) == 2
    parents = octree.parent(octree.codes, 1)
    assert octree.occupied(parents, 1).all()
    assert sorted(octree.cell_centers(octree.cells(3), 3)[:, 0]) == [-4.0, 4.0]


def test_state_dict_round_trip():
    rng = np.random.default_rng(5)
    octree = SparseOctree(leaf_size=0.5, depth=10, embedding_dim=3)
    octree.insert(rng.uniform(-20, 20, (500, 3)), rng.standard_normal((500, 3)), steps=np.arange(500))
    restored = SparseOctree()
    restored.load_state_dict(octree.state_dict())
    assert np.array_equal(restored.codes, octree.codes)
    assert np.array_equal(restored.visits, octree.visits)
    assert np.array_equal(restored.embeddings, octree.embeddings)
    for level in range(11):
        assert np.array_equal(restored.cells(level), octree.cells(level))
    query = np.array([1.0, -2.0, 3.0])
    assert np.array_equal(restored.knn(query, 9)[0], octree.knn(query, 9)[0])
