"""Street metrics pinned by hand-computed cases on tiny graphs, and checked against a plain
per-episode loop (networkx distances, a textbook DTW and OSA, VELMA's key points, map2seq_vln's CLS)
on random graphs. CLS has its own hand-computed cases in test_cls.py.

Node positions are given in units of one node spacing (10 m) and converted to lat/lng at the
equator, where the graph's equirectangular projection makes the spacing 10 m to within 1e-9.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import networkx as nx
import numpy as np
import pytest
from rapidfuzz.distance import DamerauLevenshtein

from vlnkit.envs.street.graph import EARTH_RADIUS_M, StreetGraph
from vlnkit.eval.metrics import (
    DEFAULT_NDTW_THRESHOLD_M,
    aggregate,
    dtw_distances,
    edit_distance,
    key_point_accuracy,
    key_points,
    street_metrics,
)

SPACING_M = 10.0
SPACING_DEG = math.degrees(SPACING_M / EARTH_RADIUS_M)


def make_graph(
    coords: list[tuple[float, float]],
    edges: list[tuple[int, int]],
    one_way: Sequence[tuple[int, int]] = (),
) -> StreetGraph:
    """Graph with node ``i`` at ``coords[i]`` (east, north in node spacings), two-way ``edges`` and
    ``one_way`` links."""
    nodes = [(f"p{i}", 0.0, north * SPACING_DEG, east * SPACING_DEG) for i, (east, north) in enumerate(coords)]
    links = [(f"p{a}", 0.0, f"p{b}") for a, b in edges] + [(f"p{b}", 0.0, f"p{a}") for a, b in edges]
    links += [(f"p{a}", 0.0, f"p{b}") for a, b in one_way]
    return StreetGraph.from_lists(nodes, links)


@pytest.fixture
def t_graph() -> StreetGraph:
    """A T-junction, all links two-way, 10 m apart; node 2 is the only intersection (out-degree 3).

        0 - 1 - 2 - 3
                |
                4
                |
                5
    """
    return make_graph(
        [(0, 0), (1, 0), (2, 0), (3, 0), (2, -1), (2, -2)],
        [(0, 1), (1, 2), (2, 3), (2, 4), (4, 5)],
    )


GOLD_T = [0, 1, 2, 4, 5]  # turn right at the intersection, goal 5


def single(graph: StreetGraph, pred: list[int], gold: list[int], **kwargs) -> dict[str, float]:
    """Metrics of one episode as plain floats."""
    return {k: float(v[0]) for k, v in street_metrics(graph, [pred], [gold], **kwargs).items()}


# ----------------------------------------------------------------------------------------------
# TC and SPD


def test_task_completion_at_goal_one_hop_and_two_hops(t_graph: StreetGraph) -> None:
    m = street_metrics(t_graph, [[0, 1, 2, 4, 5], [0, 1, 2, 4], [0, 1, 2]], [GOLD_T] * 3)
    # final nodes 5 (the goal), 4 (1 hop from 5), 2 (2 hops: 2-4-5)
    np.testing.assert_array_equal(m["task_completion"], [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(m["shortest_path_distance"], [0.0, 1.0, 2.0])


def test_spd_from_the_wrong_branch(t_graph: StreetGraph) -> None:
    # Went straight at the intersection and stopped at 3: 3-2-4-5 is 3 hops.
    m = single(t_graph, [0, 1, 2, 3], GOLD_T)
    assert m["shortest_path_distance"] == 3.0
    assert m["task_completion"] == 0.0


def test_spd_directed_versus_undirected_and_tc_counts_predecessors() -> None:
    # One-way triangle 0 -> 1 -> 2 -> 0. Gold 1, 2, 0 (goal 0); the agent stops at its start 1.
    graph = make_graph([(0, 0), (1, 0), (0, 1)], [], one_way=[(0, 1), (1, 2), (2, 0)])
    undirected = single(graph, [1], [1, 2, 0])
    directed = single(graph, [1], [1, 2, 0], spd_directed=True)
    assert undirected["shortest_path_distance"] == 1.0  # the link 0 -> 1 taken backwards
    assert directed["shortest_path_distance"] == 2.0  # VELMA: 1 -> 2 -> 0 along the links
    # 1 is a neighbour of the goal only through the incoming link 0 -> 1; TC still counts it.
    assert undirected["task_completion"] == directed["task_completion"] == 1.0


def test_unreachable_goal_gives_infinite_spd_and_zero_scores() -> None:
    graph = make_graph([(0, 0), (1, 0), (5, 5), (6, 5)], [(0, 1), (2, 3)])
    m = single(graph, [0, 1], [2, 3], spd_directed=True)
    assert m["shortest_path_distance"] == math.inf
    assert m["task_completion"] == m["sed"] == m["ndtw_street"] == 0.0


# ----------------------------------------------------------------------------------------------
# SED


def test_sed_uses_the_restricted_damerau_levenshtein_distance() -> None:
    """Diamond S=0, A=1, B=2, C=3, G=4 with two-way links S-A, S-C, C-A, A-B, B-C, A-G, C-G.

    Gold S C A G, prediction S A B C G (ends at the goal, TC 1). After the common S, "C A G" must
    become "A B C G": the unrestricted distance transposes CA -> AC and inserts B (2 edits); the
    optimal string alignment may not edit a transposed pair again and needs 3 (e.g. insert A,
    substitute C -> B, substitute A -> C). pyxDamerauLevenshtein, which the reference code uses,
    computes the latter, so SED = 1 - 3 / max(5, 4) = 0.4 (the unrestricted one would give 0.6).
    """
    graph = make_graph(
        [(0, 0), (1, 1), (2, 1), (1, -1), (2, 0)],
        [(0, 1), (0, 3), (3, 1), (1, 2), (2, 3), (1, 4), (3, 4)],
    )
    gold, pred = [0, 3, 1, 4], [0, 1, 2, 3, 4]
    assert edit_distance(pred, gold) == 3
    assert DamerauLevenshtein.distance(pred, gold) == 2  # the variant not chosen
    m = single(graph, pred, gold)
    assert m["task_completion"] == 1.0
    assert m["sed"] == pytest.approx(0.4)


def test_sed_is_zero_without_task_completion(t_graph: StreetGraph) -> None:
    assert single(t_graph, [0, 1, 2], GOLD_T)["sed"] == 0.0


# ----------------------------------------------------------------------------------------------
# nDTW


def test_ndtw_street_and_standard_on_a_three_node_route(t_graph: StreetGraph) -> None:
    """Gold R = 0, 1, 2; prediction P = 0, 1, 2, 4 (one node too far, into the branch).

    Hop costs d(R_i, P_j):        DTW table (cost + min of up, left, diagonal):
              0  1  2  4                  0  1  2  4
        R=0 [ 0  1  2  3 ]          R=0 [ 0  1  3  6 ]
        R=1 [ 1  0  1  2 ]          R=1 [ 1  0  1  3 ]
        R=2 [ 2  1  0  1 ]          R=2 [ 3  1  0  1 ]
    DTW = 1 hop: nDTW_street = exp(-1 / (2 sqrt(3))).
    In metres every alignment ends on the cell (2, 4), 10 m apart, and the diagonal then (2, 4)
    costs exactly that, so DTW = 10 m: nDTW = exp(-10 / (3 * 10)) = exp(-1/3); with d_th = 5 m,
    exp(-10 / 15). TC = 1 (4 neighbours the goal 2), so sDTW = nDTW.
    """
    m = single(t_graph, [0, 1, 2, 4], [0, 1, 2])
    assert m["ndtw_street"] == pytest.approx(math.exp(-1 / (2 * math.sqrt(3))))
    assert m["sdtw_street"] == pytest.approx(math.exp(-1 / (2 * math.sqrt(3))))
    assert m["ndtw"] == pytest.approx(math.exp(-1 / 3))
    assert m["sdtw"] == pytest.approx(math.exp(-1 / 3))
    tighter = single(t_graph, [0, 1, 2, 4], [0, 1, 2], ndtw_threshold_m=5.0)
    assert tighter["ndtw"] == pytest.approx(math.exp(-2 / 3))
    assert DEFAULT_NDTW_THRESHOLD_M == 10.0


def test_sdtw_is_zero_when_the_task_fails(t_graph: StreetGraph) -> None:
    # Gold 0, 1, 2, 4, 5, prediction 0, 1, 2: the prefix aligns, then 4 and 5 pair with 2 at 1 and
    # 2 hops: DTW = 3 hops, 30 m. TC = 0, so both sDTW are 0 while nDTW is not.
    m = single(t_graph, [0, 1, 2], GOLD_T)
    assert m["ndtw_street"] == pytest.approx(math.exp(-3 / (2 * math.sqrt(5))))
    assert m["ndtw"] == pytest.approx(math.exp(-30 / (5 * 10)))
    assert m["sdtw"] == m["sdtw_street"] == 0.0


def test_dtw_distances_hand_table_and_batching() -> None:
    cost = np.array([[0, 1, 2, 3], [1, 0, 1, 2], [2, 1, 0, 1]], dtype=float)  # the table above
    rng = np.random.default_rng(3)
    costs = [cost] + [rng.random((int(rng.integers(1, 9)), int(rng.integers(1, 9)))) for _ in range(40)]
    got = dtw_distances(costs, batch_size=7)
    assert got[0] == 1.0
    for c, d in zip(costs, got):
        assert d == pytest.approx(reference_dtw(c))


# ----------------------------------------------------------------------------------------------
# KPA


def test_key_points_follow_velma(t_graph: StreetGraph) -> None:
    # Start and second node as two entries, then the move out of the intersection 2.
    assert key_points(GOLD_T, t_graph.out_degree) == [(0,), (1,), (2, 4)]
    assert key_points([3], t_graph.out_degree) == []


def test_kpa_with_a_missed_intersection(t_graph: StreetGraph) -> None:
    # Gold key points (0,), (1,), (2, 4) plus the goal: 4. Going straight at 2 to 3 hits (0,) and
    # (1,) only and fails the task: 2 / 4.
    assert single(t_graph, [0, 1, 2, 3], GOLD_T)["kpa"] == 0.5
    assert single(t_graph, GOLD_T, GOLD_T)["kpa"] == 1.0
    # Stopping at once: no predicted key points, goal 4 hops away: 0 / 4.
    assert single(t_graph, [0], GOLD_T)["kpa"] == 0.0


def test_kpa_is_order_insensitive_like_velma(t_graph: StreetGraph) -> None:
    # A detour 2 -> 3 -> 2 before the right move still hits (2, 4): VELMA intersects sets.
    assert single(t_graph, [0, 1, 2, 3, 2, 4, 5], GOLD_T)["kpa"] == 1.0


def test_kpa_counts_the_start_twice(t_graph: StreetGraph) -> None:
    # Gold 2, 4, 5 starts on the intersection: key points (2,), (4,), (2, 4) and the goal. The agent
    # first goes the wrong way, 2 -> 3 -> 2 -> 4 -> 5: it hits (2,), (2, 4) and the goal but misses
    # (4,), the second node: 3 / 4.
    assert single(t_graph, [2, 3, 2, 4, 5], [2, 4, 5])["kpa"] == 0.75
    assert key_point_accuracy([2, 3, 2, 4, 5], [2, 4, 5], t_graph.out_degree, True) == 0.75


# ----------------------------------------------------------------------------------------------
# Path length, steps, perfect predictions, aggregation, validation


def test_path_length_and_steps(t_graph: StreetGraph) -> None:
    m = street_metrics(t_graph, [[0, 1, 2, 4], [3]], [[0, 1, 2], [3, 2]], pred_steps=[7, 1])
    np.testing.assert_allclose(m["path_length"], [30.0, 0.0], rtol=1e-9)
    np.testing.assert_array_equal(m["steps"], [7.0, 1.0])
    assert "steps" not in street_metrics(t_graph, [[3]], [[3, 2]])
    with pytest.raises(ValueError):
        street_metrics(t_graph, [[3]], [[3, 2]], pred_steps=[1, 2])


def test_perfect_prediction(t_graph: StreetGraph) -> None:
    golds = [GOLD_T, [3, 2, 1, 0], [5, 4, 2, 3], [4]]
    m = street_metrics(t_graph, golds, golds, spd_directed=True)
    expected = {"task_completion": 1.0, "shortest_path_distance": 0.0, "sed": 1.0, "ndtw": 1.0}
    expected |= {"sdtw": 1.0, "ndtw_street": 1.0, "sdtw_street": 1.0, "kpa": 1.0, "cls": 1.0}
    for key, value in expected.items():
        np.testing.assert_array_equal(m[key], np.full(len(golds), value), err_msg=key)


def test_aggregate_means_and_count(t_graph: StreetGraph) -> None:
    m = street_metrics(t_graph, [[0, 1, 2, 4, 5], [0, 1, 2]], [GOLD_T] * 2, pred_steps=[5, 3])
    agg = aggregate(m)
    assert agg["num_episodes"] == 2
    assert agg["task_completion"] == 0.5
    assert agg["shortest_path_distance"] == 1.0
    assert agg["steps"] == 4.0
    assert set(agg) == set(m) | {"num_episodes"}
    empty = aggregate(street_metrics(t_graph, [], []))
    assert empty["num_episodes"] == 0 and math.isnan(empty["task_completion"])
    with pytest.raises(ValueError):
        aggregate({"a": np.zeros(2), "b": np.zeros(3)})


def test_invalid_routes_raise(t_graph: StreetGraph) -> None:
    with pytest.raises(ValueError):
        street_metrics(t_graph, [[]], [[0]])
    with pytest.raises(ValueError):
        street_metrics(t_graph, [[0, 6]], [[0]])
    with pytest.raises(ValueError):
        street_metrics(t_graph, [[0]], [[0], [1]])


# ----------------------------------------------------------------------------------------------
# Vectorised computation against a plain per-episode loop


def reference_dtw(cost: np.ndarray) -> float:
    """Textbook DTW over a full (n + 1) x (m + 1) table."""
    n, m = cost.shape
    table = [[math.inf] * (m + 1) for _ in range(n + 1)]
    table[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            table[i][j] = cost[i - 1, j - 1] + min(table[i - 1][j], table[i][j - 1], table[i - 1][j - 1])
    return table[n][m]


def reference_osa(a: list, b: list) -> int:
    """Optimal string alignment distance, the textbook recurrence."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def reference_metrics(graph: StreetGraph, pred: list[int], gold: list[int], d_th: float) -> dict[str, float]:
    """One episode the way the reference code computes it, on panoid strings with networkx."""
    digraph = graph.to_networkx()
    undirected = digraph.to_undirected()
    p = [graph.panoids[i] for i in pred]
    r = [graph.panoids[i] for i in gold]
    xy = {graph.panoids[i]: graph.xy[i] for i in range(graph.num_nodes)}

    def hops(u: str, v: str, g: nx.Graph) -> float:
        try:
            return float(nx.shortest_path_length(g, u, v))
        except nx.NetworkXNoPath:
            return math.inf

    tc = float(p[-1] == r[-1] or p[-1] in nx.all_neighbors(digraph, r[-1]))
    hop_cost = np.array([[hops(a, b, undirected) for b in p] for a in r])
    metre_cost = np.array([[np.linalg.norm(xy[a] - xy[b]) for b in p] for a in r])
    ndtw_street = math.exp(-reference_dtw(hop_cost) / (2 * math.sqrt(len(r))))
    ndtw = math.exp(-reference_dtw(metre_cost) / (len(r) * d_th))

    def velma_key_points(path: list[str]) -> list:
        if len(path) <= 1:
            return []
        points = list((path[0], path[1]))
        for i in range(len(path)):
            if digraph.out_degree(path[i]) > 2 and i + 1 < len(path):
                points.append((path[i], path[i + 1]))
        return points

    # map2seq_vln's cal_cls: coverage by hops to the nearest predicted node, lengths in nodes.
    coverage = float(np.mean([math.exp(-min(hops(a, b, undirected) for b in p)) for a in r]))
    expected_length = coverage * len(r)
    cls = coverage * expected_length / (expected_length + abs(expected_length - len(p)))

    gold_points = velma_key_points(r)
    kpa = (len(set(gold_points) & set(velma_key_points(p))) + tc) / (len(gold_points) + 1)
    return {
        "task_completion": tc,
        "shortest_path_distance": hops(p[-1], r[-1], undirected),
        "spd_directed": hops(p[-1], r[-1], digraph),
        "sed": tc * (1 - reference_osa(p, r) / max(len(p), len(r))),
        "ndtw_street": ndtw_street,
        "sdtw_street": tc * ndtw_street,
        "ndtw": ndtw,
        "sdtw": tc * ndtw,
        "cls": cls,
        "kpa": kpa,
        "path_length": float(sum(np.linalg.norm(xy[a] - xy[b]) for a, b in zip(p, p[1:]))),
    }


def dedup(route: list[int]) -> list[int]:
    """Drop consecutive repeats."""
    return [n for i, n in enumerate(route) if i == 0 or n != route[i - 1]]


def random_graph_and_routes(seed: int, num_episodes: int) -> tuple[StreetGraph, list[list[int]], list[list[int]]]:
    """A random graph (two-way and one-way links, two components) with walks and arbitrary routes."""
    rng = np.random.default_rng(seed)
    n = 40
    base = nx.gnm_random_graph(32, 50, seed=seed)
    edges = list(base.edges) + [(32 + i, 33 + i) for i in range(7)]  # a separate line 32..39
    # One-way links between nodes not linked yet (a repeated link would count twice in out-degree).
    linked = {frozenset(e) for e in edges}
    one_way = []
    for a, b in rng.integers(0, 32, size=(8, 2)).tolist():
        if a != b and frozenset((a, b)) not in linked:
            linked.add(frozenset((a, b)))
            one_way.append((a, b))
    graph = make_graph([tuple(c) for c in rng.uniform(-20, 20, size=(n, 2))], edges, one_way)
    neighbours = graph.undirected_neighbors

    def walk(start: int, length: int) -> list[int]:
        route = [start]
        for _ in range(length - 1):
            if not neighbours[route[-1]]:
                break
            route.append(int(rng.choice(sorted(neighbours[route[-1]]))))
        return dedup(route)

    golds, preds = [], []
    for e in range(num_episodes):
        start = int(rng.integers(n))
        gold = walk(start, int(rng.integers(1, 12)))
        if e % 3 == 2:  # arbitrary node sequences: no shared start, not walks, maybe unreachable
            pred = dedup([int(x) for x in rng.integers(0, n, size=int(rng.integers(1, 10)))])
        elif e % 5 == 0:
            pred = list(gold)
        else:
            pred = walk(start, int(rng.integers(1, 14)))
        golds.append(gold)
        preds.append(pred)
    return graph, preds, golds


@pytest.mark.parametrize("seed", [0, 1])
def test_vectorised_equals_per_episode_loop(seed: int) -> None:
    graph, preds, golds = random_graph_and_routes(seed, 60)
    d_th = 7.5
    expected = [reference_metrics(graph, p, g, d_th) for p, g in zip(preds, golds)]
    for chunk in (3, 256):
        got = street_metrics(graph, preds, golds, ndtw_threshold_m=d_th, search_chunk=chunk)
        directed = street_metrics(graph, preds, golds, spd_directed=True, search_chunk=chunk)
        for key in got:
            np.testing.assert_allclose(got[key], [e[key] for e in expected], rtol=1e-9, atol=1e-12, err_msg=key)
        np.testing.assert_array_equal(directed["shortest_path_distance"], [e["spd_directed"] for e in expected])
