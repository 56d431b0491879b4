"""CLS (coverage weighted by length score) pinned by hand-computed cases, street and continuous.

Street, as map2seq_vln computes it: ``PC = mean_r exp(-hops(r, P))`` over the gold nodes ``r`` (hops to
the nearest predicted node, undirected), ``EPL = PC * |R|``, ``LS = EPL / (EPL + |EPL - |P||)``,
``CLS = PC * LS``. Continuous, as Jain et al. (2019): the same with ``exp(-d(r, P) / 3 m)``, Euclidean
distances and path lengths in metres.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlnkit.envs.street.graph import StreetGraph
from vlnkit.eval.metrics import continuous_metrics, street_metrics
from vlnkit.eval.report import metrics_table

from test_eval_runner import release, run  # noqa: F401  (release is a fixture)
from test_metrics import GOLD_T, make_graph, single, t_graph  # noqa: F401  (t_graph is a fixture)

E1, E2 = math.exp(-1), math.exp(-2)  # 0.367879, 0.135335

# ----------------------------------------------------------------------------------------------
# Street (T-junction of test_metrics: 0 - 1 - 2 - 3 along the top, 2 - 4 - 5 down the branch)


def test_perfect_route_has_cls_one(t_graph: StreetGraph) -> None:
    # Every gold node is on the route (PC = 1), EPL = 5 = |P|: LS = 5 / (5 + 0) = 1.
    assert single(t_graph, GOLD_T, GOLD_T)["cls"] == 1.0


def test_route_covering_half_the_gold_nodes(t_graph: StreetGraph) -> None:
    """Gold 0, 1, 2, 3; the agent stops after 0, 1.

    Hops to the nearest predicted node: 0 -> 0, 1 -> 0, 2 -> 1 (node 1), 3 -> 2 (node 1).
    PC = (1 + 1 + e^-1 + e^-2) / 4 = 2.503215 / 4 = 0.625804; EPL = 4 PC = 2.503215;
    LS = 2.503215 / (2.503215 + |2.503215 - 2|) = 0.832620; CLS = PC * LS = 0.521057.
    """
    pc = (2 + E1 + E2) / 4
    ls = 4 * pc / (4 * pc + abs(4 * pc - 2))
    assert single(t_graph, [0, 1], [0, 1, 2, 3])["cls"] == pytest.approx(pc * ls)
    assert pc * ls == pytest.approx(0.521057, abs=1e-6)


def test_too_long_routes_lose_length_score(t_graph: StreetGraph) -> None:
    # Gold 0, 1, 2, all visited (PC = 1, EPL = 3). One node too far, 0 1 2 4: LS = 3 / (3 + 1) = 0.75.
    # A detour 0 1 2 3 2 4 5 (7 nodes; revisits count): LS = 3 / (3 + 4) = 3 / 7.
    m = street_metrics(t_graph, [[0, 1, 2, 4], [0, 1, 2, 3, 2, 4, 5]], [[0, 1, 2]] * 2)
    np.testing.assert_allclose(m["cls"], [0.75, 3 / 7], rtol=1e-12)


def test_wrong_branch_in_a_batch_with_others(t_graph: StreetGraph) -> None:
    """Gold 0, 1, 2, 4, 5; the agent goes straight at 2 to 3 (4 nodes).

    Hops: 0, 1, 2 -> 0; 4 -> 1 (node 2); 5 -> 2. PC = (3 + e^-1 + e^-2) / 5 = 0.700643;
    EPL = 3.503215; LS = 3.503215 / (3.503215 + 0.496785) = 0.875804; CLS = 0.613626.
    Batched with a perfect episode and the half-covering one, each keeps its own value.
    """
    m = street_metrics(t_graph, [[0, 1, 2, 3], GOLD_T, [0, 1]], [GOLD_T, GOLD_T, [0, 1, 2, 3]])
    np.testing.assert_allclose(m["cls"], [0.613626, 1.0, 0.521057], atol=1e-6)


def test_hops_are_undirected() -> None:
    """One-way triangle 0 -> 1 -> 2 -> 0; gold 1, 2, 0, the agent stays at 1.

    Undirected hops to node 1: 1 -> 0, 2 -> 1, 0 -> 1 (along links, 2 would need 2 -> 0 -> 1).
    PC = (1 + 2 e^-1) / 3 = 0.578586; EPL = 1.735759; LS = 1.735759 / (1.735759 + 0.735759) = 0.702305;
    CLS = 0.406344.
    """
    graph = make_graph([(0, 0), (1, 0), (0, 1)], [], one_way=[(0, 1), (1, 2), (2, 0)])
    assert single(graph, [1], [1, 2, 0])["cls"] == pytest.approx(0.406344, abs=1e-6)


def test_unreachable_gold_route_scores_zero() -> None:
    # The gold route lies in the other component: every exp(-inf) = 0, PC = 0, EPL = 0 and
    # LS = 0 / (0 + 2) = 0: CLS = 0, not nan.
    graph = make_graph([(0, 0), (1, 0), (5, 5), (6, 5)], [(0, 1), (2, 3)])
    assert single(graph, [0, 1], [2, 3])["cls"] == 0.0


def test_street_runner_reports_cls(release, tmp_path) -> None:  # noqa: F811
    """Agents that stop at the start of the 5x5 grid routes (hops are Manhattan distances).

    Route 11 has 5 nodes at 0..4 hops from the start: PC = (1 + e^-1 + e^-2 + e^-3 + e^-4) / 5 =
    1.571317 / 5, LS = 1.571317 / (1.571317 + 0.571317) = 0.733358, CLS = 0.230467. Routes 12 and 13
    have 4 nodes at 0..3 hops: PC = 1.553002 / 4, LS = 1.553002 / 2.106004 = 0.737416, CLS = 0.286302.
    Mean (0.230467 + 2 * 0.286302) / 3 = 0.267691.
    """
    out = tmp_path / "run"
    metrics = run(release, out, "agent=forward", "agent.steps=0")
    assert metrics["cls"] == pytest.approx(0.267691, abs=1e-6)
    assert "| sDTW | CLS | KPA |" in (out / "report.md").read_text()


def test_street_table_shows_cls_as_percent_after_sdtw() -> None:
    table = metrics_table({"run": {"sdtw": 0.5, "cls": 0.25, "kpa": 0.75, "num_episodes": 1}})
    header, _, row = table.splitlines()
    labels = [c.strip() for c in header.split("|")]
    cells = [c.strip() for c in row.split("|")]
    assert labels[labels.index("sDTW") + 1] == "CLS"
    assert cells[labels.index("CLS")] == "25.00"


# ----------------------------------------------------------------------------------------------
# Continuous (positions x, y, z in metres; the reference runs along x)

REFERENCE = [[x, 0.0, 0.0] for x in range(5)]  # 0 .. 4 m, PL(R) = 4 m


def cls_of(paths: list, references: list, **kw) -> np.ndarray:
    """``cls`` of episodes whose goal distances are all 1 m (they do not enter CLS)."""
    paths = [np.array(p, float) for p in paths]
    refs = [None if r is None else np.array(r, float) for r in references]
    return continuous_metrics(paths, [np.ones(len(p)) for p in paths], refs, [4.0] * len(paths),
                              [True] * len(paths), **kw)["cls"]


def test_parallel_offset_path() -> None:
    """The path runs 1.5 m beside the reference, point for point: every d(r, P) = 1.5 m.

    PC = exp(-1.5 / 3) = exp(-0.5) = 0.606531. PL(P) = PL(R) = 4 m, so EPL = 4 PC = 2.426123 < PL(P)
    and LS = EPL / (EPL + 4 - EPL) = PC: CLS = PC^2 = exp(-1) = 0.367879. The offset is paid twice,
    in coverage and in length score (CLS = PC only when PL(P) = EPL).
    With d_th = success_distance = 1.5 m, PC = exp(-1) and CLS = exp(-2).
    """
    offset = [[x, 0.0, 1.5] for x in range(5)]
    assert cls_of([offset], [REFERENCE])[0] == pytest.approx(E1)
    assert cls_of([offset], [REFERENCE], success_distance=1.5)[0] == pytest.approx(E2)


def test_path_that_stops_halfway() -> None:
    """The agent walks 0, 1, 2 m along the reference and stops: d(r, P) = 0, 0, 0, 1, 2 m.

    PC = (3 + e^-1/3 + e^-2/3) / 5 = (3 + 0.716531 + 0.513417) / 5 = 0.845990; EPL = 4 PC = 3.383959;
    PL(P) = 2 m; LS = 3.383959 / (3.383959 + 1.383959) = 0.709735; CLS = 0.600429.
    """
    pc = (3 + math.exp(-1 / 3) + math.exp(-2 / 3)) / 5
    ls = 4 * pc / (4 * pc + abs(4 * pc - 2))
    got = cls_of([REFERENCE[:3]], [REFERENCE])[0]
    assert got == pytest.approx(pc * ls)
    assert got == pytest.approx(0.600429, abs=1e-6)


def test_distance_is_to_the_nearest_path_point_in_three_dimensions() -> None:
    # Reference (0,0,0), (4,0,0); the path (0,3,0) -> (4,0,0) -> (4,0,0) [a repeat]: the nearest path
    # point of (0,0,0) is (0,3,0), 3 m up, and (4,0,0) is on the path. PC = (e^-1 + 1) / 2 = 0.683940;
    # PL(R) = 4 m, EPL = 2.735759; PL(P) = 5 m; LS = 2.735759 / (2.735759 + 2.264241) = 0.547152.
    pc = (E1 + 1) / 2
    ls = 4 * pc / (4 * pc + abs(4 * pc - 5))
    got = cls_of([[[0, 3, 0], [4, 0, 0], [4, 0, 0]]], [[[0, 0, 0], [4, 0, 0]]])[0]
    assert got == pytest.approx(pc * ls)


def test_one_point_reference_and_missing_reference() -> None:
    # One reference point 3 m from an agent that never moved: PC = e^-1, EPL = PL(R) * PC = 0 and
    # PL(P) = 0, so EPL = PL(P): LS = 1 (the 0 / 0 taken as lengths that agree), CLS = e^-1. Had the
    # agent walked 1 m, LS = 0 / (0 + 1) = 0. Without a reference CLS is nan, like nDTW; the batch
    # keeps each episode's value in its place.
    got = cls_of([[[0, 0, 0]], [[0, 0, 0], [1, 0, 0]], [[0, 0, 0]]], [[[0, 3, 0]], None, [[0, 3, 0]]])
    assert got[0] == pytest.approx(E1)
    assert math.isnan(got[1])
    assert got[2] == pytest.approx(E1)
    assert cls_of([[[0, 0, 0], [1, 0, 0]]], [[[0, 3, 0]]])[0] == 0.0
