"""LTM pre-training: a short run learns, checkpoints load with weights_only and resume, and only into a
memory of their sizes; descriptors other than the embeddings; the encoder."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from vlnkit.memory import LTMConfig, Mem4NavConfig, Mem4NavMemory
from vlnkit.benchmarks.memory import AppearanceField, street_walk
from vlnkit.memory.checkpoint import load_torch, save_torch
from vlnkit.memory.train import LTMTrainConfig, RandomProjectionEncoder, Trajectory, encode_trajectory, train_ltm

DIM = 32


def _trajectories(count: int = 6, length: int = 80) -> list[Trajectory]:
    field = AppearanceField(DIM, seed=0)
    return [Trajectory(field(p), p) for p in (street_walk(length, seed=s, block=20.0) for s in range(count))]


def test_training_reduces_the_loss_and_checkpoints(tmp_path):
    torch.set_num_threads(1)
    ltm = LTMConfig(depth=1, heads=2, hidden=64)
    config = LTMTrainConfig(steps=60, batch_size=32, lr=1e-3, warmup_steps=5, checkpoint_every=30)
    data = _trajectories()
    first = train_ltm(data, tmp_path / "ltm.pt", ltm_config=ltm, config=replace(config, steps=1), progress=False)
    last = train_ltm(data, tmp_path / "ltm.pt", ltm_config=ltm, config=config, resume=True, progress=False)
    assert last["retrieval"] < first["retrieval"] and last["cycle"] < first["cycle"]
    state = load_torch(tmp_path / "ltm.pt")
    assert state["step"] == 60 and state["dim"] == DIM
    memory = Mem4NavMemory(Mem4NavConfig(dim=DIM, ltm=ltm))
    memory.load_ltm_weights(tmp_path / "ltm.pt")
    assert all(torch.equal(v, state["model"][k]) for k, v in memory.ltm.model.state_dict().items())
    assert not list(tmp_path.glob(".*tmp"))


def test_default_encoder_handles_images_and_feature_vectors():
    rng = np.random.default_rng(0)
    encoder = RandomProjectionEncoder(dim=16)
    image = rng.integers(0, 255, (64, 256, 3), dtype=np.uint8)
    a = encoder({"panorama": image})
    assert a.shape == (16,) and np.isclose(np.linalg.norm(a), 1.0)
    assert np.array_equal(a, encoder({"panorama": image}))
    features = rng.standard_normal(300)
    assert encoder(features).shape == (16,)
    observations = [
        {"panorama": image, "position": np.array([1.0, 2.0])},
        {"panorama": image // 2, "position": np.array([3.0, 4.0])},
    ]
    trajectory = encode_trajectory(observations, encoder)
    assert trajectory.embeddings.shape == (2, 16) and trajectory.positions.tolist() == [[1, 2, 0], [3, 4, 0]]


TINY = LTMConfig(depth=1, heads=2, hidden=16)
QUICK = LTMTrainConfig(steps=2, batch_size=8, warmup_steps=1, checkpoint_every=2)


def test_descriptors_set_the_descriptor_size_of_the_model(tmp_path, one_torch_thread):
    walks = _trajectories(count=2, length=10)
    described = [Trajectory(t.embeddings, t.positions, t.embeddings[:, :5]) for t in walks]
    train_ltm(described, tmp_path / "ltm.pt", ltm_config=TINY, config=QUICK, progress=False)
    state = load_torch(tmp_path / "ltm.pt")
    assert (state["dim"], state["descriptor_dim"]) == (DIM, 5)
    assert state["model"]["descriptor_head.second.weight"].shape == (5, 16)
    memory = Mem4NavMemory(Mem4NavConfig(dim=DIM, descriptor_dim=5, ltm=TINY))
    memory.load_ltm_weights(tmp_path / "ltm.pt")
    assert torch.equal(memory.ltm.model.descriptor_head.second.weight, state["model"]["descriptor_head.second.weight"])


def test_weights_of_other_sizes_are_refused_naming_file_and_sizes(tmp_path, one_torch_thread):
    path = tmp_path / "ltm.pt"
    train_ltm(_trajectories(count=2, length=10), path, ltm_config=TINY, config=QUICK, progress=False)
    with pytest.raises(ValueError) as refused:
        Mem4NavMemory(Mem4NavConfig(dim=16, ltm=TINY)).load_ltm_weights(path, agent="modular")
    message = str(refused.value)
    assert message.startswith(f"{path} holds LTM weights for a different memory: ")
    assert "dim is 32 in the file, the modular agent's memory expects 16" in message
    assert "descriptor_dim is 32 in the file, the modular agent's memory expects 16" in message
    assert f"`vlnkit train ltm agent=modular out={path}`" in message and "\n" not in message
    with pytest.raises(ValueError, match="ltm.hidden is 16 in the file, this memory expects 64"):
        Mem4NavMemory(Mem4NavConfig(dim=DIM, ltm=replace(TINY, hidden=64))).load_ltm_weights(path)
    with pytest.raises(ValueError, match="ltm.position_scale is 100.0 in the file, this memory expects 50.0"):
        Mem4NavMemory(Mem4NavConfig(dim=DIM, ltm=replace(TINY, position_scale=50.0))).load_ltm_weights(path)


def test_a_file_that_is_no_ltm_checkpoint_is_refused(tmp_path):
    path = save_torch({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt is not an LTM checkpoint of `vlnkit train ltm`"):
        Mem4NavMemory(Mem4NavConfig(dim=DIM, ltm=TINY)).load_ltm_weights(path)


def test_resume_refuses_a_checkpoint_of_other_sizes(tmp_path, one_torch_thread):
    path = tmp_path / "ltm.pt"
    train_ltm(_trajectories(count=2, length=10), path, ltm_config=TINY, config=QUICK, progress=False)
    other = [Trajectory(t.embeddings[:, :8], t.positions) for t in _trajectories(count=2, length=10)]
    with pytest.raises(ValueError, match="dim is 32 in the file, this training run expects 8.*resume=false"):
        train_ltm(other, path, ltm_config=TINY, config=replace(QUICK, steps=4), resume=True, progress=False)
    assert load_torch(path)["step"] == 2


def test_gold_rollouts_revisit_places_and_oracle_rollouts_do_not():
    # The shortest path never comes back to a street node; the city's loop and return routes do.
    from vlnkit.memory.train import collect_street_trajectories

    def revisits(trajectories):
        count = 0
        for t in trajectories:
            places = [(round(x), round(y)) for x, y, _ in t.positions]
            seen = set()
            for i, place in enumerate(places):
                count += place in seen and place != places[i - 1]
                seen.add(place)
        return count

    encoder = RandomProjectionEncoder(16)
    oracle = collect_street_trajectories(None, "dev", 40, 0, encoder, progress=False)
    gold = collect_street_trajectories(None, "dev", 40, 0, encoder, progress=False, teacher="gold")
    assert revisits(oracle) == 0 and revisits(gold) > 20
