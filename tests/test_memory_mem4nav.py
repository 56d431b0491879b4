"""Mem4NavMemory: retrieval policy, ablation variants by configuration, save/load round trip."""

import json
import math

import numpy as np
import pytest
import torch

from vlnkit.memory import LTMConfig, Mem4NavConfig, Mem4NavMemory, key_node, node_key
from vlnkit.benchmarks.memory import AppearanceField, street_walk
from vlnkit.memory.checkpoint import load_torch

DIM = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(variant: str = "full", **overrides) -> Mem4NavConfig:
    return Mem4NavConfig.variant(variant, dim=DIM, ltm=LTMConfig(depth=2, buffer_size=64), **overrides)


def _walk(n: int, seed: int = 0):
    positions = street_walk(n, seed=seed, step=2.0, block=20.0)
    return AppearanceField(DIM, seed=seed)(positions), positions


def _fill(memory: Mem4NavMemory, n: int, seed: int = 0) -> None:
    embeddings, positions = _walk(n, seed)
    for step, (embedding, position) in enumerate(zip(embeddings, positions)):
        memory.write(embedding, position, step)


def test_write_touches_every_enabled_part():
    torch.manual_seed(0)
    memory = Mem4NavMemory(_config())
    v = np.ones(DIM, dtype=np.float32)
    written = memory.write(v, np.array([3.2, -1.5, 0.0]), step=0)
    assert written.node == 0 and written.leaf == memory.octree.encode_one(np.array([3.2, -1.5, 0.0]))
    assert len(memory.stm) == 1 and len(memory.ltm) == 2
    leaf = memory.leaf(np.array([3.9, -1.1, 0.5]))
    assert leaf.visits == 1 and np.array_equal(leaf.embedding, v) and leaf.token.shape == (2 * DIM,)
    assert memory.node_token(0).shape == (2 * DIM,)
    assert key_node(node_key(7)) == 7 and key_node(written.leaf) is None


def test_stm_answers_when_similar_enough_else_ltm():
    torch.manual_seed(0)
    memory = Mem4NavMemory(_config())
    _fill(memory, 200)
    embeddings, positions = _walk(200)
    near = memory.retrieve(embeddings[-1], positions[-1])
    assert near.source == "stm" and near.scores[0] >= memory.config.tau and near.steps[0] == 199
    far = memory.retrieve(embeddings[-1], positions[-1] + np.array([500.0, 0, 0]))
    assert far.source == "ltm" and len(far) == 3 and far.tokens.shape == (3, 2 * DIM)
    memory.config.tau = math.inf
    forced = memory.retrieve(embeddings[-1], positions[-1])
    assert forced.source == "ltm"
    leaf_keys = forced.keys[forced.keys >= 0]
    assert np.allclose(forced.anchors[forced.keys >= 0], memory.octree.cell_centers(leaf_keys))


@pytest.mark.parametrize("variant", Mem4NavConfig.variants())
def test_every_variant_runs_and_switches_its_parts(variant):
    torch.manual_seed(0)
    memory = Mem4NavMemory(_config(variant))
    _fill(memory, 60)
    config = memory.config
    assert (memory.octree is not None) == config.use_octree
    assert (memory.graph is not None) == config.use_graph
    assert (memory.stm is not None) == config.use_stm
    assert (memory.ltm is not None) == config.use_ltm
    assert (memory.oracle is not None) == config.use_oracle
    assert memory.parts == config.parts
    embeddings, positions = _walk(60)
    found = memory.retrieve(embeddings[-1], positions[-1] + np.array([100.0, 0, 0]))
    assert found.source == ("ltm" if config.use_ltm else "none")
    if config.use_ltm:
        keys = memory.ltm.index.keys()
        # Leaf keys with the octree or without a graph (an LTM alone keys its tokens by leaf cells).
        assert (keys >= 0).any() == (config.use_octree or not config.use_graph)
        assert (keys < 0).any() == config.use_graph
    here = memory.retrieve(embeddings[-1], positions[-1])
    expected = "stm" if config.use_stm else "ltm" if config.use_ltm else "oracle" if config.use_oracle \
        else "octree" if config.use_octree else "none"
    assert here.source == expected
    if expected in ("stm", "oracle", "octree"):
        assert here.steps[0] == 59


def test_trace_recall_and_holds_answer_from_the_parts_that_keep_steps():
    torch.manual_seed(0)
    embeddings, positions = _walk(30)
    for variant, sources in (("none", set()), ("octree_only", {"octree"}), ("stm_only", {"stm"}),
                             ("oracle", {"oracle"}), ("graph_only", set()), ("ltm_only", set()),
                             ("full", {"octree", "stm"})):
        memory = Mem4NavMemory(_config(variant))
        _fill(memory, 30)
        trace = memory.trace()
        assert set(trace.sources) <= sources and bool(len(trace)) == bool(sources), variant
        if sources:
            assert trace.steps.tolist() == sorted(set(trace.steps.tolist()))
            assert trace.steps[-1] == 29 and len(memory.trace(before=10)) <= 10
            assert memory.holds(29) in sources and memory.holds(1000) is None
        else:
            assert memory.holds(29) is None
        recalled = memory.recall(embeddings[12], positions[12], radius=1.0, before=20)
        assert all(step < 20 for step, source in zip(recalled.steps, recalled.sources) if source != "ltm")
        if sources:
            assert 12 in recalled.steps.tolist()


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="unknown memory variant 'nope'; choose from none, full, octree_only"):
        Mem4NavConfig.variant("nope")
    with pytest.raises(ValueError, match="'octree' was renamed.*no_graph.*octree_only"):
        Mem4NavConfig.variant("octree")
    with pytest.raises(ValueError):
        Mem4NavConfig.from_dict({"dimension": 3})
    alone = Mem4NavConfig(use_octree=False, use_graph=False, use_stm=False, use_ltm=True)
    assert alone.parts == ("ltm",)
    config = Mem4NavConfig.variant("no_octree", dim=64, tau=0.5, stm={"capacity": 100, "eps": 2.5})
    assert Mem4NavConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.stm.capacity == 100 and not config.use_octree and config.parts == ("graph", "stm", "ltm")


def test_save_load_round_trip_gives_identical_retrievals(tmp_path):
    torch.manual_seed(0)
    memory = Mem4NavMemory(_config())
    _fill(memory, 400)
    embeddings, positions = _walk(50, seed=1)
    memory.write(embeddings[0], positions[0], step=400)  # leaves LTM writes pending at save time
    memory.save(tmp_path / "mem")
    assert sorted(p.name for p in (tmp_path / "mem").iterdir()) == ["config.json", "memory.pt"]
    load_torch(tmp_path / "mem" / "memory.pt")  # readable with weights_only=True
    restored = Mem4NavMemory.load(tmp_path / "mem")
    assert restored.config == memory.config
    rng = np.random.default_rng(2)
    for i in range(40):
        offset = np.array([rng.uniform(-300, 300), rng.uniform(-300, 300), 0.0]) if i % 2 else np.zeros(3)
        for copy in (memory, restored):
            copy.config.tau = math.inf if i % 3 == 0 else 0.7
        a = memory.retrieve(embeddings[i], positions[i] + offset)
        b = restored.retrieve(embeddings[i], positions[i] + offset)
        assert a.source == b.source
        for name in ("keys", "embeddings", "positions", "anchors", "scores", "tokens", "descriptors", "steps"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or np.array_equal(x, y), name
        for copy in (memory, restored):
            copy.write(embeddings[i], positions[i], step=401 + i)


def test_reset_keeps_the_model_and_empties_the_contents():
    torch.manual_seed(0)
    memory = Mem4NavMemory(_config())
    _fill(memory, 50)
    weights = {k: v.clone() for k, v in memory.ltm.model.state_dict().items()}
    memory.reset()
    assert len(memory.octree) == len(memory.graph) == len(memory.stm) == len(memory.ltm) == 0
    assert len(memory.trace()) == 0
    assert memory.retrieve(np.ones(DIM), np.zeros(3)).source == "none"
    assert all(torch.equal(v, memory.ltm.model.state_dict()[k]) for k, v in weights.items())
