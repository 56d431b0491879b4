"""TokenIndex: HNSW recall against exact search, updates of existing keys, rebuilds, state round trip."""

import faiss
import numpy as np
import pytest

from vlnkit.memory.index import TokenIndex


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def test_recall_at_3_on_10k_random_tokens():
    rng = np.random.default_rng(0)
    dim, n = 256, 10_000
    tokens = rng.standard_normal((n, dim)).astype(np.float32)
    keys = np.arange(n) * 7 - 30_000  # arbitrary, partly negative keys
    index = TokenIndex(dim)
    index.upsert(keys, tokens)
    index.merge()
    queries = rng.standard_normal((200, dim)).astype(np.float32)
    squared = (queries**2).sum(1)[:, None] - 2 * queries @ tokens.T + (tokens**2).sum(1)[None]
    exact = keys[np.argsort(squared, axis=1)[:, :3]]
    found = [index.search(q, 3)[0] for q in queries]
    recall = np.mean([len(set(f.tolist()) & set(e.tolist())) / 3 for f, e in zip(found, exact)])
    assert recall >= 0.95


def test_updates_match_a_brute_force_reference():
    rng = np.random.default_rng(1)
    index = TokenIndex(8, m=8, buffer_size=16)
    reference: dict[int, np.ndarray] = {}
    for round_ in range(400):
        keys = rng.integers(-40, 120, size=int(rng.integers(1, 6)))
        vectors = rng.standard_normal((len(keys), 8)).astype(np.float32)
        index.upsert(keys, vectors)
        reference.update(zip(keys.tolist(), vectors))
        if round_ % 25 == 0:
            all_keys = np.array(sorted(reference))
            assert len(index) == len(all_keys)
            assert np.array_equal(np.sort(index.keys()), all_keys)
            assert np.array_equal(index.get(all_keys), np.stack([reference[k] for k in all_keys.tolist()]))
            query = rng.standard_normal(8).astype(np.float32)
            keys_found, distances = index.search(query, 5)
            exact = np.sort(np.linalg.norm(np.stack(list(reference.values())) - query, axis=1))[:5]
            assert np.allclose(distances, exact, atol=1e-4)
            assert np.allclose(np.linalg.norm(index.get(keys_found) - query, axis=1), distances, atol=1e-4)
    assert index.tombstones <= max(len(index), index.buffer_size)


def test_rebuild_drops_tombstones_and_keeps_every_key():
    rng = np.random.default_rng(2)
    index = TokenIndex(4, m=8, buffer_size=8)
    for _ in range(20):
        index.upsert(np.arange(10), rng.standard_normal((10, 4)))
        index.merge()
    before = {k: v for k, v in zip(index.keys().tolist(), index.get(index.keys()))}
    index.rebuild()
    assert index.tombstones == 0 and len(index) == 10
    assert all(np.array_equal(index.get(np.array([k]))[0], v) for k, v in before.items())
    with pytest.raises(KeyError):
        index.get(np.array([99]))


def test_state_round_trip_gives_identical_searches_and_growth():
    rng = np.random.default_rng(3)
    index = TokenIndex(16, m=8, buffer_size=32)
    index.upsert(rng.integers(0, 500, 600), rng.standard_normal((600, 16)))
    restored = TokenIndex(1)
    restored.load_state_dict(index.state_dict())
    more_keys, more = rng.integers(0, 900, 300), rng.standard_normal((300, 16))
    for copy in (index, restored):
        copy.upsert(more_keys, more)
    for query in rng.standard_normal((20, 16)).astype(np.float32):
        a, b = index.search(query, 4), restored.search(query, 4)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_empty_index_searches_to_nothing():
    index = TokenIndex(4)
    keys, distances = index.search(np.zeros(4), 3)
    assert len(keys) == 0 and len(distances) == 0
