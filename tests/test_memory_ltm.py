"""LongTermMemory: the write/read rules of mem4nav.md, cached and literal inverses agree, state round trip."""

import numpy as np
import pytest
import torch

from vlnkit.memory.ltm import LongTermMemory, LTMConfig

DIM = 32


def _memories(**overrides):
    torch.manual_seed(0)
    cached = LongTermMemory(DIM, config=LTMConfig(cache_inverse=True, **overrides))
    literal = LongTermMemory(DIM, config=LTMConfig(cache_inverse=False, **overrides))
    literal.model.load_state_dict(cached.model.state_dict())
    return cached, literal


def test_write_follows_the_rule_and_read_decodes_the_last_embedding():
    cached, literal = _memories(depth=3)
    rng = np.random.default_rng(0)
    v1, v2 = rng.standard_normal((2, DIM)).astype(np.float32)
    for memory in (cached, literal):
        memory.write(np.array([5]), v1[None])
        memory.write(np.array([5]), v2[None])
    model = cached.model
    with torch.no_grad():
        first = model.write(None, torch.from_numpy(v1[None]))
        theta = model.r.inverse(first)[:, :DIM]
        expected = model.r(torch.cat([theta, torch.from_numpy(v2[None])], dim=1))[0].numpy()
    for memory in (cached, literal):
        assert np.allclose(memory.token(5), expected, atol=1e-5)
        with torch.no_grad():
            recovered = model.r.inverse(torch.from_numpy(memory.token(5)[None]))[0].numpy()
        assert np.allclose(recovered[DIM:], v2, atol=1e-5)
        assert np.allclose(recovered[:DIM], 0.0, atol=1e-5)


def test_cached_and_literal_inverse_give_the_same_retrievals():
    cached, literal = _memories(depth=2, flush_every=16)
    rng = np.random.default_rng(1)
    keys = rng.integers(-30, 60, 300)
    embeddings = rng.standard_normal((300, DIM)).astype(np.float32)
    for i in range(0, 300, 3):
        for memory in (cached, literal):
            memory.write(keys[i : i + 3], embeddings[i : i + 3])
    assert len(cached) == len(literal) == len(set(keys.tolist()))
    for _ in range(20):
        query, position = rng.standard_normal(DIM), rng.uniform(-50, 50, 3)
        a, b = cached.read(query, position), literal.read(query, position)
        assert np.array_equal(a.keys, b.keys)
        for field in ("distances", "tokens", "embeddings", "positions", "descriptors"):
            assert np.allclose(getattr(a, field), getattr(b, field), atol=1e-4), field


def test_read_decodes_with_the_heads_and_honours_m():
    memory = LongTermMemory(DIM, descriptor_dim=8, config=LTMConfig(depth=1, top_m=3))
    assert len(memory.read(np.ones(DIM), np.zeros(3))) == 0
    rng = np.random.default_rng(2)
    memory.write(np.arange(10), rng.standard_normal((10, DIM)))
    readout = memory.read(np.ones(DIM), np.zeros(3))
    assert len(readout) == 3 and readout.descriptors.shape == (3, 8) and readout.positions.shape == (3, 3)
    assert np.all(np.diff(readout.distances) >= 0)
    assert len(memory.read(np.ones(DIM), np.zeros(3), m=7)) == 7
    stored = {k: memory.token(k) for k in readout.keys.tolist()}
    assert all(np.array_equal(stored[k], t) for k, t in zip(readout.keys.tolist(), readout.tokens))


def test_state_round_trip_gives_identical_reads():
    memory = LongTermMemory(DIM, config=LTMConfig(depth=2, buffer_size=16))
    rng = np.random.default_rng(3)
    memory.write(rng.integers(0, 80, 200), rng.standard_normal((200, DIM)))
    restored = LongTermMemory(DIM, config=LTMConfig(depth=2, buffer_size=16))
    restored.load_state_dict(memory.state_dict())
    for _ in range(10):
        query, position = rng.standard_normal(DIM), rng.uniform(-5, 5, 3)
        a, b = memory.read(query, position), restored.read(query, position)
        assert np.array_equal(a.keys, b.keys) and np.array_equal(a.embeddings, b.embeddings)
    with pytest.raises(ValueError):
        LongTermMemory(DIM + 4).load_state_dict(memory.state_dict())
