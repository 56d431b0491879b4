"""VLN-CE metrics pinned by hand-computed cases (definitions in shared/docs/metrics.md)."""

import math

import numpy as np
import pytest

from vlnkit.eval.metrics import (
    aggregate,
    continuous_metrics,
    drop_repeats,
    trajectory_length,
)


def one(path, dist, ref, shortest, stopped, **kw):
    out = continuous_metrics([np.array(path, float)], [np.array(dist, float)], [None if ref is None else np.array(ref, float)],
                             [shortest], [stopped], **kw)
    return {k: float(v[0]) for k, v in out.items()}


def test_navigation_error_is_the_final_geodesic_distance():
    m = one([[0, 0, 0], [1, 0, 0]], [5.0, 4.2], None, 5.0, True)
    assert m["navigation_error"] == 4.2


def test_success_needs_stop_and_strictly_less_than_three_metres():
    path = [[0, 0, 0], [1, 0, 0]]
    assert one(path, [5.0, 2.99], None, 5.0, True)["success"] == 1.0
    assert one(path, [5.0, 2.99], None, 5.0, False)["success"] == 0.0  # never called STOP
    assert one(path, [5.0, 3.0], None, 5.0, True)["success"] == 0.0  # 3.0 is not < 3.0


def test_oracle_success_uses_any_point():
    m = one([[0, 0, 0], [1, 0, 0], [2, 0, 0]], [5.0, 2.5, 6.0], None, 5.0, True)
    assert m["oracle_success"] == 1.0 and m["success"] == 0.0
    assert one([[0, 0, 0], [1, 0, 0]], [5.0, 3.1], None, 5.0, True)["oracle_success"] == 0.0


def test_path_length_and_spl():
    # Steps of 3 m and 4 m (a 3-4-5 triangle): TL = 7.
    path = [[0, 0, 0], [3, 0, 0], [3, 0, 4]]
    m = one(path, [8.0, 4.0, 1.0], None, 5.0, True)
    assert m["path_length"] == 7.0
    assert m["spl"] == pytest.approx(5.0 / 7.0)
    # A path shorter than the shortest one (the goal is reached within 3 m) caps at 1.
    assert one([[0, 0, 0], [1, 0, 0]], [4.0, 2.0], None, 4.0, True)["spl"] == 1.0
    assert one(path, [8.0, 4.0, 1.0], None, 5.0, False)["spl"] == 0.0


def test_ndtw_and_sdtw_by_hand():
    # P = (0,0,0) (1,0,0) [repeat dropped] (2,0,0); R = (0,0,0) (2,0,0).
    # Cost matrix rows R, columns P': [[0, 1, 2], [2, 1, 0]]; the best monotone path 0 + 1 + 0 = 1.
    path = [[0, 0, 0], [1, 0, 0], [1, 0, 0], [2, 0, 0]]
    m = one(path, [2.0, 1.0, 1.0, 0.0], [[0, 0, 0], [2, 0, 0]], 2.0, True)
    assert m["ndtw"] == pytest.approx(math.exp(-1.0 / (2 * 3.0)))
    assert m["sdtw"] == pytest.approx(m["ndtw"])
    failed = one(path, [2.0, 1.0, 1.0, 0.0], [[0, 0, 0], [2, 0, 0]], 2.0, False)
    assert failed["ndtw"] == pytest.approx(m["ndtw"]) and failed["sdtw"] == 0.0
    # Identical paths: nDTW 1.
    assert one([[0, 0, 0], [0, 0, 1]], [1.0, 0.0], [[0, 0, 0], [0, 0, 1]], 1.0, True)["ndtw"] == 1.0


def test_ndtw_uses_three_dimensional_distance():
    # One reference point 3 m above the only path point: DTW 3, |R| = 1: exp(-3 / 3).
    m = one([[0, 0, 0]], [0.0], [[0, 3, 0]], 0.0, True)
    assert m["ndtw"] == pytest.approx(math.exp(-1.0))


def test_steps_collisions_and_missing_reference():
    m = one([[0, 0, 0], [0.25, 0, 0]], [5.0, 4.75], None, 5.0, False, steps=[12], collisions=[3])
    assert m["steps"] == 12.0 and m["collisions"] == 3.0
    assert math.isnan(m["ndtw"]) and math.isnan(m["sdtw"])


def test_helpers_and_aggregate():
    assert drop_repeats(np.array([[0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]])).tolist() == [[0, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert trajectory_length(np.array([[0, 0, 0], [0, 3, 4]])) == 5.0
    per = continuous_metrics([np.zeros((1, 3)), np.zeros((1, 3))], [np.array([1.0]), np.array([4.0])], [None, None],
                             [1.0, 4.0], [True, True])
    means = aggregate(per)
    assert means["success"] == 0.5 and means["num_episodes"] == 2
    assert means["spl"] == 0.5  # zero-length paths: SPL is SR (l / max(0, l) = 1)


def test_inconsistent_inputs_raise():
    with pytest.raises(ValueError, match="one goal distance per position"):
        continuous_metrics([np.zeros((2, 3))], [np.zeros(3)], [None], [1.0], [True])
    with pytest.raises(ValueError, match="same length"):
        continuous_metrics([np.zeros((2, 3))], [], [None], [1.0], [True])


def test_episodes_without_goal_have_no_success_metrics():
    m = one([[0, 0, 0], [1, 0, 0]], [math.nan, math.nan], None, math.nan, True)
    assert all(math.isnan(m[k]) for k in ("navigation_error", "success", "oracle_success", "spl", "sdtw"))
    assert m["path_length"] == 1.0
