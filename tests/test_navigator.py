"""Navigator semantics on hand-made junctions, and the batched navigator against the single one."""

import numpy as np
import pytest

from vlnkit.envs.street.actions import StreetAction as A
from vlnkit.envs.street.graph import StreetGraph
from vlnkit.envs.street.navigator import BatchedNavigator, NavState, StreetNavigator


def plus_junction() -> StreetGraph:
    """A four-way junction C with arms N, E, S, W, each arm two nodes long (N1 next to C, N2 beyond).

    Headings are compass bearings: from C, N1 is at 0, E1 at 90, S1 at 180, W1 at 270.
    """
    nodes = [(p, 0, 0.0, 0.0) for p in ["C", "N1", "N2", "E1", "E2", "S1", "S2", "W1", "W2"]]
    links = []
    for arm, h in (("N", 0), ("E", 90), ("S", 180), ("W", 270)):
        back = (h + 180) % 360
        links += [("C", h, f"{arm}1"), (f"{arm}1", back, "C"), (f"{arm}1", h, f"{arm}2"), (f"{arm}2", back, f"{arm}1")]
    return StreetGraph.from_lists(nodes, links)


def test_touchdown_turns_rotate_to_next_link_and_forward_snaps():
    g = plus_junction()
    nav = StreetNavigator(g, "touchdown")
    c = g.index["C"]
    s = nav.start(c, 10.0)
    assert s.heading == 0.0
    s, _ = nav.step(s, A.LEFT)
    assert (s.node, s.heading) == (c, 270.0)
    s, _ = nav.step(s, A.RIGHT)
    s, _ = nav.step(s, A.RIGHT)
    assert s.heading == 90.0
    s, _ = nav.step(s, A.FORWARD)
    assert (g.panoids[s.node], s.heading) == ("E1", 90.0)


def test_touchdown_refuses_moves_onto_dead_ends():
    g = plus_junction()
    nav = StreetNavigator(g, "touchdown")
    s = nav.start(g.index["E1"], 90.0)
    nxt, done = nav.step(s, A.FORWARD)
    assert nxt == s and not done  # E2 has one outgoing link: the move is refused
    _, done = nav.step(s, A.STOP)
    assert done


def test_velma_segment_turns_become_forward_and_junction_forward_is_middle():
    g = plus_junction()
    nav = StreetNavigator(g, "velma")
    w1 = g.index["W1"]
    s = nav.start(w1, 90.0)  # facing east toward C
    s, _ = nav.step(s, A.LEFT)  # on a two-link segment LEFT acts as FORWARD
    assert g.panoids[s.node] == "C" and s.prev_node == w1
    s2, _ = nav.step(s, A.FORWARD)  # arrived at C from W: links N, E, S remain; the middle is E
    assert g.panoids[s2.node] == "E1"
    s3, _ = nav.step(s, A.LEFT)  # from forward=E the nearest other link counter-clockwise is N
    assert (s3.node, s3.heading) == (g.index["C"], 0.0)
    s4, _ = nav.step(s, A.TURN_AROUND)
    assert s4.heading == 270.0


def test_velma_dead_end_forward_is_stop():
    g = plus_junction()
    nav = StreetNavigator(g, "velma")
    s = NavState(g.index["E2"], 270.0, g.index["E1"])
    _, done = nav.step(s, A.FORWARD)
    assert done


def random_graph(rng: np.random.Generator, n: int) -> StreetGraph:
    """A random graph with junctions of degree 0-5, one-way links and integer headings."""
    nodes = [(f"p{i}", 0, 0.0, 0.0) for i in range(n)]
    links = []
    for i in range(n):
        deg = rng.choice([0, 1, 2, 2, 2, 3, 3, 4, 5])
        dsts = rng.choice(np.delete(np.arange(n), i), size=deg, replace=False)
        heads = rng.choice(360, size=deg, replace=False)
        links += [(f"p{i}", int(h), f"p{d}") for h, d in zip(heads, dsts)]
    return StreetGraph.from_lists(nodes, links)


@pytest.mark.parametrize("semantics", ["touchdown", "velma"])
@pytest.mark.parametrize("table", [True, False], ids=["compiled-table", "array-rules"])
def test_batched_equals_single_on_random_action_sequences(semantics, table):
    rng = np.random.default_rng()
    for _ in range(3):
        g = random_graph(rng, 60)
        single = StreetNavigator(g, semantics)
        batched = BatchedNavigator(g, semantics)
        batch = 200
        # Starting at a node without links keeps an arbitrary heading, outside the compiled table.
        candidates = np.flatnonzero(g.out_degree > 0) if table else np.flatnonzero(g.out_degree == 0)
        starts = rng.choice(candidates, size=batch)
        starts[: batch // 2] = rng.integers(0, g.num_nodes, size=batch // 2) if not table else starts[: batch // 2]
        headings = rng.uniform(-400, 400, size=batch)
        states = [single.start(int(n), float(h)) for n, h in zip(starts, headings)]
        done = [False] * batch
        batched.reset(starts, headings)
        assert batched.uses_table == table
        for _ in range(40):
            actions = rng.integers(1, single.num_actions, size=batch)
            actions[rng.random(batch) < 0.03] = int(A.STOP)
            batched.step(actions)
            for b in range(batch):
                if not done[b]:
                    states[b], done[b] = single.step(states[b], int(actions[b]))
            assert batched.node.tolist() == [s.node for s in states]
            assert batched.heading.tolist() == [s.heading for s in states]
            assert batched.done.tolist() == done
            if semantics == "velma":
                assert batched.prev_node.tolist() == [s.prev_node for s in states]


def test_invalid_action_is_refused():
    g = plus_junction()
    with pytest.raises(ValueError, match="touchdown"):
        StreetNavigator(g, "touchdown").step(NavState(0, 0.0), int(A.TURN_AROUND))
    with pytest.raises(ValueError, match="semantics"):
        StreetNavigator(g, "flame")
