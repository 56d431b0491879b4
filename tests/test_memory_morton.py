"""Morton codes: exact round trips over the whole signed 21-bit range, scalar == vectorised, parents."""

import numpy as np
import pytest

from vlnkit.memory import morton
from vlnkit.memory.octree import SparseOctree


def test_round_trip_random_cells():
    rng = np.random.default_rng(0)
    cells = rng.integers(morton.MIN_CELL, morton.MAX_CELL + 1, size=(200_000, 3))
    assert np.array_equal(morton.decode(morton.encode(cells)), cells)


def test_round_trip_extreme_cells():
    lo, hi = morton.MIN_CELL, morton.MAX_CELL
    corners = np.array(np.meshgrid([lo, lo + 1, -1, 0, 1, hi - 1, hi], [lo, -1, 0, hi], [lo, 0, hi])).reshape(3, -1).T
    codes = morton.encode(corners)
    assert np.array_equal(morton.decode(codes), corners)
    assert codes.min() == 0 and codes.max() == 2**63 - 1
    assert len(np.unique(codes)) == len(corners)


def test_positions_beyond_100_km_and_negative_round_trip():
    rng = np.random.default_rng(1)
    positions = rng.uniform(-900_000.0, 900_000.0, size=(50_000, 3))
    positions[:4] = [[-150_000.25, 120_000.5, -3.0], [250_000.0, -250_000.0, 0.0], [-0.5, -0.5, -0.5], [0, 0, 0]]
    octree = SparseOctree(leaf_size=1.0)
    cells = np.floor(positions).astype(np.int64)
    assert np.array_equal(morton.decode(octree.encode(positions)), cells)
    centers = octree.cell_centers(octree.encode(positions))
    assert np.all(np.abs(centers - positions) <= 0.5)


def test_scalar_encoder_matches_vectorised():
    rng = np.random.default_rng(2)
    cells = rng.integers(morton.MIN_CELL, morton.MAX_CELL + 1, size=(1000, 3))
    codes = morton.encode(cells)
    assert [morton.encode_cell(*c) for c in cells.tolist()] == codes.tolist()
    assert [morton.decode_code(c) for c in codes.tolist()] == [tuple(c) for c in cells.tolist()]


def test_bit_layout_is_x_then_y_then_z():
    unit = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]]) - morton.BIAS
    origin = morton.encode(np.full(3, -morton.BIAS))
    assert origin == 0
    assert morton.encode(unit).tolist() == [1, 2, 4]


def test_parent_codes_are_the_enclosing_cells_across_zero():
    cells = np.array([[-1, -1, -1], [0, 0, 0], [-2, 3, 5], [7, -8, 1]])
    for level in range(1, 6):
        parents = morton.decode(SparseOctree.parent(morton.encode(cells), level) << (3 * level))
        expected = (np.floor_divide(cells + morton.BIAS, 2**level) * 2**level) - morton.BIAS
        assert np.array_equal(parents, expected)


def test_out_of_range_cells_raise():
    with pytest.raises(ValueError):
        morton.encode(np.array([[morton.MAX_CELL + 1, 0, 0]]))
    with pytest.raises(ValueError):
        morton.encode_cell(0, morton.MIN_CELL - 1, 0)
    with pytest.raises(ValueError):
        SparseOctree(leaf_size=0.1).encode(np.array([[200_000.0, 0.0, 0.0]]))
