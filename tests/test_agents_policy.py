"""The FLAME-style policy: model shapes, strided history, a tiny imitation run that learns and resumes, and the
agent protocol with and without memory tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vlnkit.agents.base import create
from vlnkit.agents.policy import agent as _registers  # noqa: F401  (registers "policy")
from vlnkit.agents.policy.features import EXTRA_MEMORY_FEATURES, Vocabulary, link_bins, strided_history
from vlnkit.agents.policy.model import FlamePolicy, PolicyConfig
from vlnkit.agents.policy import train as train_module
from vlnkit.agents.policy.train import train_policy
from vlnkit.config import load_config
from vlnkit.memory.checkpoint import load_torch


def test_forward_shapes_and_memory_query_gradient() -> None:
    config = PolicyConfig(vocab_size=20, categories=5, memory_dim=48, num_actions=4, d_model=16, heads=2, layers=2)
    model = FlamePolicy(config)
    b = 2
    words = torch.tensor([[2, 3, 4, 0], [5, 6, 0, 0]])
    instruction = model.encode_instruction(words)
    assert instruction.shape == (b, config.instruction_slots, 16)
    panorama, links = torch.rand(b, 8, 5), torch.zeros(b, 8)
    visual = model.visual_tokens(panorama, links)
    assert visual.shape == (b, 8, 16)
    hidden = torch.zeros(b, 16)
    query = model.memory_query(hidden, visual)
    assert query.shape == (b, 48)
    history = torch.rand(b, 3, 16)
    memory = torch.zeros(b, 3, 48 + EXTRA_MEMORY_FEATURES)
    memory[0, 0, :48] = torch.rand(48)
    memory[0, 0, -1] = 1.0
    previous = torch.full((b,), model.no_action)
    logits, h = model.step(instruction, visual, history, torch.tensor([1, 2, 6]), torch.zeros(b, 3, dtype=torch.bool),
                           memory, query, hidden, previous)
    assert logits.shape == (b, 4) and h.shape == (b, 16)
    assert model.summary(panorama, links, previous).shape == (b, 16)
    logits[0].sum().backward()
    assert model.memory_query_net.weight.grad.abs().sum() > 0   # the query learns through the memory tokens


def test_strided_history_and_features() -> None:
    assert strided_history(0, 4, 4) == []
    assert strided_history(3, 4, 4) == [0, 1, 2]
    assert strided_history(13, 4, 4) == [1, 5, 9, 10, 11, 12]
    assert link_bins(np.array([90.0, 270.0, -1.0]), 90.0).tolist() == [1, 0, 0, 0, 1, 0, 0, 0]
    vocab = Vocabulary.build(["Turn left at the bank.", "Turn right."])
    assert vocab.tokens[:3] == ["<pad>", "<unk>", "turn"]
    assert vocab.encode("turn up", 8).tolist() == [vocab.ids["turn"], 1]


def _train_config(out: Path, epochs: int) -> object:
    return load_config("train_policy", [
        f"out={out}", "episodes=4", f"train.epochs={epochs}", "train.batch_size=2", "train.lr=3e-3",
        "train.warmup_epochs=0", "model.d_model=16", "model.heads=2", "model.layers=1", "model.queries=2",
        "memory_variant=stm_only", "progress=false", "noise=0.0", "train.threads=1",
    ])


class _Interrupted(Exception):
    """Stands for a kill right after a checkpoint was written."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("policy")
    straight = train_policy(_train_config(folder / "straight.pt", 4))
    saves = []

    def save_then_die(obj: object, path: Path) -> Path:
        written = real_save(obj, path)
        if not str(path).endswith(train_module.DEMOS_SUFFIX):
            saves.append(path)
            if len(saves) == 2:
                raise _Interrupted
        return written

    real_save = train_module.save_torch
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "save_torch", save_then_die)
        with pytest.raises(_Interrupted):
            train_policy(_train_config(folder / "resumed.pt", 4))
    interrupted = load_torch(folder / "resumed.pt")
    demos = folder / "resumed.pt.demos.pt"
    stamp = demos.stat().st_mtime_ns
    resumed = train_policy(_train_config(folder / "resumed.pt", 4))
    return {"straight": straight, "resumed": resumed, "interrupted_epoch": interrupted["epoch"], "folder": folder,
            "demos_reused": demos.stat().st_mtime_ns == stamp}


def test_tiny_training_lowers_the_imitation_loss(trained: dict) -> None:
    straight = trained["straight"]
    assert straight["epochs"] == 4 and straight["episodes"] == 4
    assert straight["nll"] < straight["first_epoch_nll"]
    history = load_torch(trained["folder"] / "straight.pt")["history"]
    assert [h["nll"] for h in history] == sorted((h["nll"] for h in history), reverse=True)


def test_training_resumes_from_its_checkpoint(trained: dict) -> None:
    resumed, straight = trained["resumed"], trained["straight"]
    assert trained["interrupted_epoch"] == 2
    assert resumed["epochs"] == 4
    assert trained["demos_reused"]
    # Killed after two epochs and started again, the run ends where the uninterrupted one did.
    assert resumed["nll"] == pytest.approx(straight["nll"], rel=1e-4)
    finished = train_policy(_train_config(trained["folder"] / "resumed.pt", 4))
    assert finished["nll"] == pytest.approx(resumed["nll"])


@pytest.mark.parametrize("settings", [
    {"memory": "full"}, {"memory": "full", "memory_tokens": False}, {"memory": "none"},
])
def test_policy_agent_acts_on_observations_alone(trained: dict, settings: dict) -> None:
    from vlnkit.envs.street.env import StreetEnv
    from vlnkit.envs.synth import default_city

    env = StreetEnv(task="touchdown", data_dir=default_city(), split="dev", episode_kinds="all", panorama="auto")
    config = {"checkpoint": str(trained["folder"] / "resumed.pt"), "memory_overrides": {"ltm": {"depth": 2}}, **settings}
    agent = create("policy", config, num_actions=int(env.action_space.n))
    assert agent.uses_info is False
    obs, _ = env.reset(options={"episode_index": 0})
    agent.reset(obs, None, 0)
    done, steps = False, 0
    while not done:
        action = agent.act(obs, None)
        assert 0 <= action < env.action_space.n
        obs, _, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
        steps += 1
    assert steps <= env.max_steps
    assert (agent.memory.writes > 0) == (settings.get("memory_tokens", True) and settings["memory"] != "none")


def test_policy_agent_needs_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="vlnkit train policy"):
        create("policy", {"checkpoint": str(tmp_path / "missing.pt")})
