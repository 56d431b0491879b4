"""TopologyGraph on hand-made descriptors: creation vs merging at delta, running means, edge weights
averaged on revisits, Dijkstra planning, spatial gating, drawing and state round trip."""

import networkx as nx
import numpy as np
import pytest

from vlnkit.memory.graph import TopologyGraph


def _observe(graph, descriptor, position, cost=0.0):
    return graph.observe(np.array(descriptor, dtype=np.float32), np.array(position, dtype=np.float64), cost)


def test_nodes_are_created_beyond_delta_and_merged_within():
    graph = TopologyGraph(descriptor_dim=2, delta=0.5, alpha=1.0, beta=0.5)
    assert _observe(graph, [1.0, 0.0], [0, 0, 0]) == 0
    assert _observe(graph, [0.9, 0.1], [2, 0, 0]) == 0  # distance 0.141 <= 0.5: merged
    assert np.allclose(graph.descriptors[0], [0.95, 0.05])
    assert np.allclose(graph.positions[0], [1, 0, 0])
    assert _observe(graph, [0.0, 1.0], [10, 0, 0], cost=2.0) == 1  # distance 1.34 > 0.5: new node
    assert graph.edge_weight(0, 1) == pytest.approx(1.0 * 9.0 + 0.5 * 2.0)
    assert _observe(graph, [0.1, 0.9], [12, 0, 0]) == 1
    assert np.allclose(graph.positions[1], [11, 0, 0])
    assert _observe(graph, [1.0, 0.0], [0, 0, 0]) == 0
    assert graph.counts.tolist() == [3, 2]
    assert np.allclose(graph.descriptors[0], [(0.95 * 2 + 1.0) / 3, (0.05 * 2) / 3], atol=1e-6)
    assert np.allclose(graph.positions[0], [2 / 3, 0, 0])
    assert graph.edge_weight(1, 0) == pytest.approx(11.0 - 2 / 3)
    assert _observe(graph, [0.0, 1.0], [10, 0, 0], cost=1.0) == 1  # revisit of the edge 0 -> 1
    assert np.allclose(graph.positions[1], [32 / 3, 0, 0])
    assert graph.edge_weight(0, 1) == pytest.approx((10.0 + (10.0 + 0.5 * 1.0)) / 2)
    assert graph.graph.edges[0, 1]["traversals"] == 2
    assert graph.graph.number_of_edges() == 2


def test_staying_on_a_node_adds_no_edge_and_end_episode_breaks_the_chain():
    graph = TopologyGraph(descriptor_dim=2, delta=0.5)
    for _ in range(3):
        _observe(graph, [1.0, 0.0], [0, 0, 0])
    assert graph.graph.number_of_edges() == 0
    graph.end_episode()
    _observe(graph, [0.0, 1.0], [5, 0, 0])
    assert graph.graph.number_of_edges() == 0 and len(graph) == 2


def test_dijkstra_takes_the_cheaper_detour():
    graph = TopologyGraph(descriptor_dim=4, delta=0.1, alpha=1.0, beta=1.0)
    corners = {"a": [0, 0, 0], "b": [10, 0, 0], "c": [5, 1, 0]}
    code = {"a": [1, 0, 0, 0], "b": [0, 1, 0, 0], "c": [0, 0, 1, 0]}
    for name, cost in (("a", 0.0), ("b", 20.0)):  # a -> b costs 10 + 20
        _observe(graph, code[name], corners[name], cost)
    graph.end_episode()
    for name in ("a", "c", "b"):  # a -> c -> b costs about 5.1 + 5.1
        _observe(graph, code[name], corners[name])
    assert graph.plan(0, 1) == [0, 2, 1]
    assert graph.path_cost([0, 2, 1]) == pytest.approx(2 * np.hypot(5, 1))
    with pytest.raises(nx.NetworkXNoPath):
        graph.plan(1, 0)


def test_match_radius_keeps_lookalikes_far_apart_separate():
    gated = TopologyGraph(descriptor_dim=2, delta=0.5, match_radius=30.0)
    everywhere = TopologyGraph(descriptor_dim=2, delta=0.5, match_radius=None)
    for graph in (gated, everywhere):
        _observe(graph, [1.0, 0.0], [0, 0, 0])
        _observe(graph, [1.0, 0.0], [500, 0, 0])
        _observe(graph, [1.0, 0.0], [520, 0, 0])
    assert len(gated) == 2 and gated.counts.tolist() == [1, 2]
    assert len(everywhere) == 1 and everywhere.counts.tolist() == [3]


def test_nodes_follow_their_running_mean_between_hash_buckets():
    graph = TopologyGraph(descriptor_dim=2, delta=0.5, match_radius=10.0)
    for x in (8, 12, 12, 12, 12):  # the mean moves 8 -> 11.2, from hash bucket [0, 10) to [10, 20)
        assert _observe(graph, [1.0, 0.0], [x, 0, 0]) == 0
    assert graph.positions[0][0] == pytest.approx(11.2)
    node, _ = graph.nearest(np.array([1.0, 0.0]), np.array([20.5, 0.0, 0.0]))  # searches buckets 1..3
    assert node == 0


def test_draw_writes_a_png(tmp_path):
    graph = TopologyGraph(descriptor_dim=2, delta=0.5)
    for i, d in enumerate(([1, 0], [0, 1], [1, 0], [-1, 0])):
        _observe(graph, d, [i * 5.0, i % 2, 0])
    path = graph.draw(tmp_path / "graph.png", highlight=[0, 1])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_state_dict_round_trip():
    rng = np.random.default_rng(0)
    graph = TopologyGraph(descriptor_dim=3, delta=0.8)
    for i in range(200):
        _observe(graph, rng.standard_normal(3), [i * 1.5, 0, 0], cost=float(i % 3))
    restored = TopologyGraph(descriptor_dim=1)
    restored.load_state_dict(graph.state_dict())
    assert np.array_equal(restored.descriptors, graph.descriptors)
    assert np.array_equal(restored.positions, graph.positions)
    assert sorted(restored.graph.edges(data="weight")) == sorted(graph.graph.edges(data="weight"))
    assert restored.current == graph.current
    probe = rng.standard_normal(3).astype(np.float32)
    assert restored.observe(probe, np.array([10.0, 0, 0])) == graph.observe(probe, np.array([10.0, 0, 0]))
