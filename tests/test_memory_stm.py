"""ShortTermMemory: eviction order on a hand-worked sequence, radius-then-cosine retrieval, frames, state."""

import numpy as np

from vlnkit.memory.stm import ShortTermMemory

E = np.eye(4, dtype=np.float32)


def test_eviction_order_worked_by_hand():
    # capacity 3, lam 0.5, score = 0.5 * freq - 0.5 * (t_now - step); lowest is evicted, ties -> oldest step
    stm = ShortTermMemory(dim=4, capacity=3, lam=0.5)
    origin = np.zeros(3)
    assert stm.write(10, E[0], origin, step=0) is None  # A: freq 1, step 0
    assert stm.write(11, E[1], origin, step=1) is None  # B: freq 1, step 1
    assert stm.write(10, E[0], origin, step=2) is None  # A again: freq 2, step 2
    assert stm.write(12, E[2], origin, step=3) is None  # C: freq 1, step 3
    # t=4: A 1.0-1.0=0, B 0.5-1.5=-1.0, C 0.5-0.5=0 -> B goes
    assert np.allclose(sorted(stm.eviction_scores(4)), [-1.0, 0.0, 0.0])
    assert stm.write(13, E[3], origin, step=4) == (11, -1)  # D: freq 1, step 4
    # t=5: A 1.0-1.5=-0.5, C 0.5-1.0=-0.5, D 0.5-0.5=0 -> tie A/C, A is older -> A goes
    assert stm.write(14, E[0], origin, step=5) == (10, -1)  # E: freq 1, step 5
    # two retrieval hits on C lift its frequency to 3
    for _ in range(2):
        hits = stm.retrieve(E[2], origin, k=1)
        assert hits.keys.tolist() == [12]
    # t=7: C 1.5-2.0=-0.5, D 0.5-1.5=-1.0, E 0.5-1.0=-0.5 -> D goes
    assert stm.write(15, E[1], origin, step=7) == (13, -1)
    assert sorted(int(k) for k in stm.state_dict()["keys"]) == [12, 14, 15]
    assert len(stm) == 3


def test_object_ids_tell_entries_at_one_key_apart():
    stm = ShortTermMemory(dim=4, capacity=4)
    stm.write(7, E[0], np.zeros(3), step=0, object_id=1)
    stm.write(7, E[1], np.zeros(3), step=1, object_id=2)
    stm.write(7, E[2], np.zeros(3), step=2, object_id=1)
    assert len(stm) == 2
    hits = stm.retrieve(E[2], np.zeros(3), k=5)
    assert hits.object_ids.tolist()[0] == 1 and hits.cosines[0] == 1.0


def test_retrieval_filters_by_radius_then_ranks_by_cosine():
    stm = ShortTermMemory(dim=2, capacity=8, eps=3.0, top_k=2)
    vectors = [[1, 0], [0.8, 0.6], [0, 1], [1, 0.1]]
    positions = [[0, 0, 0], [2, 0, 0], [1, 1, 0], [10, 0, 0]]  # the last is 10 m away
    for key, (v, p) in enumerate(zip(vectors, positions)):
        stm.write(key, np.array(v), np.array(p, float), step=key)
    hits = stm.retrieve(np.array([1.0, 0.05]), np.zeros(3))
    assert hits.keys.tolist() == [0, 1]
    assert np.allclose(hits.cosines, [np.cos(np.arctan(0.05)), np.cos(np.arctan(0.05) - np.arctan(0.75))], atol=1e-6)
    assert len(stm.retrieve(np.array([1.0, 0.0]), np.array([50.0, 0, 0]))) == 0


def test_relative_coordinates_follow_frame_origins():
    stm = ShortTermMemory(dim=2, capacity=4, eps=1.0)
    origins = np.array([[100.0, 0, 0], [0.0, 50.0, 0]])
    stm.write(1, np.array([1.0, 0.0]), np.array([1.0, 0.0, 0.0]), step=0, frame=0)  # world (101, 0)
    stm.write(2, np.array([0.0, 1.0]), np.array([0.0, 2.0, 0.0]), step=1, frame=1)  # world (0, 52)
    hits = stm.retrieve(np.array([1.0, 1.0]), np.array([101.0, 0.5, 0.0]), origins)
    assert hits.keys.tolist() == [1] and np.allclose(hits.positions, [[101.0, 0.0, 0.0]])
    moved = origins + np.array([[5.0, 0, 0], [0, 0, 0]])  # frame 0's node was corrected by +5 m
    assert len(stm.retrieve(np.array([1.0, 1.0]), np.array([101.0, 0.5, 0.0]), moved)) == 0
    assert stm.retrieve(np.array([1.0, 1.0]), np.array([106.0, 0.0, 0.0]), moved).keys.tolist() == [1]


def test_state_dict_round_trip():
    rng = np.random.default_rng(0)
    stm = ShortTermMemory(dim=8, capacity=16)
    for step in range(40):
        stm.write(int(rng.integers(20)), rng.standard_normal(8), rng.uniform(-2, 2, 3), step)
    restored = ShortTermMemory(dim=1, capacity=1)
    restored.load_state_dict(stm.state_dict())
    query = rng.standard_normal(8)
    a, b = stm.retrieve(query, np.zeros(3), k=5), restored.retrieve(query, np.zeros(3), k=5)
    assert np.array_equal(a.keys, b.keys) and np.array_equal(a.cosines, b.cosines)
    assert np.array_equal(stm.eviction_scores(50), restored.eviction_scores(50))
