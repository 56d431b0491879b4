"""LTM pre-training: a short run learns, checkpoints load with weights_only and resume; the encoder."""

from dataclasses import replace

import numpy as np
import torch

from vlnkit.memory import LTMConfig, Mem4NavConfig, Mem4NavMemory
from vlnkit.memory.benchmark import AppearanceField, street_walk
from vlnkit.memory.checkpoint import load_torch
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
