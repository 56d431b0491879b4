"""LongTermMemory: the write rule with its running state and the read rule, cached and literal inverses agree, state round trip;
the numpy inference path equals the torch modules and follows their weights."""

import numpy as np
import pytest
import torch

from vlnkit.memory.ltm import LongTermMemory, LTMConfig, LTMModel, NumpyInference, TorchInference

DIM = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _memories(**overrides):
    torch.manual_seed(0)
    cached = LongTermMemory(DIM, config=LTMConfig(cache_inverse=True, **overrides))
    literal = LongTermMemory(DIM, config=LTMConfig(cache_inverse=False, **overrides))
    literal.model.load_state_dict(cached.model.state_dict())
    return cached, literal


def _preimage(memory, key):
    with torch.no_grad():
        return memory.model.r.inverse(torch.from_numpy(memory.token(key)[None]))[0].numpy()


def test_write_folds_the_previous_view_into_the_state_and_read_decodes_the_last_view():
    cached, literal = _memories(depth=3)
    rng = np.random.default_rng(0)
    v1, v2, v3 = rng.standard_normal((3, DIM)).astype(np.float32)
    for memory in (cached, literal):
        memory.write(np.array([5]), v1[None])
        memory.write(np.array([5]), v2[None])
    # By hand, with history_decay 0.5: the state after v1 then v2 is 0.5 * 0 + 0.5 * v1.
    with torch.no_grad():
        expected = cached.model.r(torch.from_numpy(np.concatenate([0.5 * v1, v2])[None]))[0].numpy()
    for memory in (cached, literal):
        assert np.allclose(memory.token(5), expected, atol=1e-5)
        memory.write(np.array([5]), v3[None])
        recovered = _preimage(memory, 5)
        assert np.allclose(recovered[DIM:], v3, atol=1e-5)  # the latest view, exactly
        assert np.allclose(recovered[:DIM], 0.25 * v1 + 0.5 * v2, atol=1e-5)  # 0.5 * (0.5 v1) + 0.5 v2
        found = memory.read(v3, np.zeros(3), m=1)
        assert np.allclose(found.embeddings[0], v3, atol=1e-5)
        assert np.allclose(found.history[0], 0.25 * v1 + 0.5 * v2, atol=1e-5)


def test_history_decay_one_is_the_literal_rule_whose_state_stays_zero():
    cached, literal = _memories(depth=2, history_decay=1.0)
    rng = np.random.default_rng(1)
    for v in rng.standard_normal((3, DIM)).astype(np.float32):
        for memory in (cached, literal):
            memory.write(np.array([9]), v[None])
    for memory in (cached, literal):
        recovered = _preimage(memory, 9)
        assert np.allclose(recovered[:DIM], 0.0, atol=1e-5) and np.allclose(recovered[DIM:], v, atol=1e-5)


@pytest.mark.parametrize("later", [1, 2, 3])
def test_an_older_view_is_recovered_from_the_state_better_than_chance(later: int):
    # After `later` further writes to a place, its state still points at the older view: against a
    # random view never written, the older one is the closer to the state far more often than half.
    memory = LongTermMemory(DIM, config=LTMConfig(depth=2))
    rng = np.random.default_rng(later)
    trials, wins = 200, 0
    for key in range(trials):
        old, *newer = rng.standard_normal((1 + later, DIM)).astype(np.float32)
        for v in (old, *newer):
            memory.write(np.array([key]), v[None])
        state = _preimage(memory, key)[:DIM]
        stranger = rng.standard_normal(DIM).astype(np.float32)
        cos = [float(state @ u / (np.linalg.norm(state) * np.linalg.norm(u))) for u in (old, stranger)]
        wins += cos[0] > cos[1]
    assert wins / trials > {1: 0.95, 2: 0.8, 3: 0.65}[later]


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


def _close(actual: np.ndarray, expected: np.ndarray) -> bool:
    """float32 agreement within 1e-5 of the values' scale."""
    return float(np.abs(actual - expected).max()) <= 1e-5 * max(1.0, float(np.abs(expected).max()))


def _agrees_with_the_torch_modules(model: LTMModel, rng: np.random.Generator) -> bool:
    fast, reference = model.inference(), TorchInference(model)
    dim = model.dim
    v = rng.standard_normal((5, dim)).astype(np.float32)
    positions = rng.uniform(-500.0, 500.0, (5, 3)).astype(np.float32)
    tokens = np.concatenate([np.zeros_like(v), v], axis=1)
    many = rng.standard_normal((fast.max_tokens, 2 * dim)).astype(np.float32)
    checks = [_close(fast.r(x), reference.r(x)) for x in (tokens[:1], tokens[:2], many)]
    for rows in (1, 3, 4):
        checks.append(_close(fast.query(v[:rows], positions[:rows]), reference.query(v[:rows], positions[:rows])))
        decoded, expected = fast.decode(v[:rows]), reference.decode(v[:rows])
        checks.append(_close(decoded[0], expected[0]) and _close(decoded[1], expected[1]))
    return all(checks)


def test_numpy_inference_equals_the_torch_modules():
    torch.manual_seed(7)
    model = LTMModel(128, 64, LTMConfig())  # the reference geometry: R of depth 6 with 8 heads
    fast = model.inference()
    assert isinstance(fast, NumpyInference) and fast.max_tokens >= 2
    assert _agrees_with_the_torch_modules(model, np.random.default_rng(8))


def test_inference_snapshot_follows_the_weights():
    torch.manual_seed(9)
    rng = np.random.default_rng(10)
    model = LTMModel(DIM, DIM, LTMConfig(depth=2))
    first = model.inference()
    assert model.inference() is first
    with torch.no_grad():
        model.query_net.first.weight.mul_(1.5)  # in place, as an optimiser step would
    assert model.inference() is not first and _agrees_with_the_torch_modules(model, rng)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.r(torch.randn(4, 2 * DIM)).square().sum().backward()
    optimizer.step()
    assert _agrees_with_the_torch_modules(model, rng)
    other = LTMModel(DIM, DIM, LTMConfig(depth=2))
    model.load_state_dict(other.state_dict(), assign=True)
    assert _agrees_with_the_torch_modules(model, rng)
    model.double()
    assert isinstance(model.inference(), TorchInference)


def test_fast_and_reference_paths_give_the_same_reads():
    torch.manual_seed(11)
    fast = LongTermMemory(DIM, descriptor_dim=8, config=LTMConfig(depth=6, flush_every=8))
    reference = LongTermMemory(DIM, descriptor_dim=8, config=LTMConfig(depth=6, flush_every=8))
    reference.model.load_state_dict(fast.model.state_dict())
    reference.model.inference = lambda: TorchInference(reference.model)
    rng = np.random.default_rng(12)
    for _ in range(40):
        keys, embedding = rng.integers(-20, 80, 2), rng.standard_normal(DIM).astype(np.float32)
        for memory in (fast, reference):
            memory.write(keys, embedding)
    for _ in range(10):
        query, position = rng.standard_normal(DIM), rng.uniform(-50, 50, 3)
        a, b = fast.read(query, position), reference.read(query, position)
        assert np.array_equal(a.keys, b.keys) and np.array_equal(a.embeddings, b.embeddings)
        for field in ("distances", "tokens", "positions", "descriptors"):
            assert _close(getattr(a, field), getattr(b, field)), field
