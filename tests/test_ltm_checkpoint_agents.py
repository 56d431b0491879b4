"""`vlnkit train ltm` output loads into the agent it was trained for (modular, policy, llm, each built the
way `vlnkit eval` builds it), and a checkpoint of other sizes is refused with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlnkit.agents import create
from vlnkit.agents.memory_support import agent_memory
from vlnkit.agents.policy.train import train_policy
from vlnkit.cli import main
from vlnkit.config import load_config
from vlnkit.envs.street.panorama import SceneFeatureSource
from vlnkit.envs.synth import default_city
from vlnkit.memory.checkpoint import load_torch
from vlnkit.memory.train import train_agent_ltm

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SECTORS = 8
"""Panorama sectors of the agents' default configs and of the tiny policy."""


def categories() -> int:
    """Feature columns of the built-in synthetic city (the release both training and eval default to)."""
    return len(SceneFeatureSource(default_city() / "graph" / "scene.jsonl").categories)


def expected_sizes(agent: str) -> tuple[int, int]:
    """(embedding, descriptor) sizes by hand: the view, plus one heading entry per sector for the modular
    and policy agents, whose descriptors are the view alone; the llm agent's are the view for both."""
    view = SECTORS * categories()
    return (view, view) if agent == "llm" else (view + SECTORS, view)


def train(agent: str, out: Path, *extra: str) -> dict:
    """A tiny `vlnkit train ltm agent=AGENT out=OUT` (3 episodes, 2 steps); returns its summary."""
    return train_agent_ltm(load_config("train_ltm", [
        f"agent={agent}", "episodes=3", "train.steps=2", "train.batch_size=8", "train.warmup_steps=1",
        "train.checkpoint_every=2", f"out={out}", "progress=false", *extra]))


def eval_agent(agent: str, weights: Path, *extra: str) -> object:
    """The agent as `vlnkit eval agent=AGENT agent.ltm_weights=WEIGHTS` builds it."""
    cfg = load_config("eval", [f"agent={agent}", f"agent.ltm_weights={weights}", *extra])
    return create(str(cfg.agent.name), cfg.agent, num_actions=4)


def assert_holds(agent: object, weights: Path) -> None:
    """The agent's LTM model has exactly the weights of the checkpoint ``weights``."""
    memory, _ = agent_memory(agent)
    state = load_torch(weights)["model"]
    loaded = memory.ltm.model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(value, state[key]) for key, value in loaded.items())


@pytest.fixture(scope="module")
def policy_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("policy") / "policy.pt"
    train_policy(load_config("train_policy", [
        f"out={out}", "episodes=2", "train.epochs=1", "train.batch_size=2", "train.warmup_epochs=0",
        "model.d_model=16", "model.heads=2", "model.layers=1", "model.queries=2", "memory_variant=stm_only",
        "progress=false", "noise=0.0", "train.threads=1", "cities=[0]", "dagger.rounds=1", "dagger.eval_episodes=1"]))
    return out


@pytest.fixture(scope="module")
def modular_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ltm") / "modular.pt"
    train("modular", out)
    return out


@pytest.mark.parametrize("agent", ["modular", "policy", "llm"])
def test_trained_ltm_loads_into_the_agent_it_was_trained_for(agent: str, tmp_path: Path,
                                                              policy_checkpoint: Path) -> None:
    extra = [f"agent.checkpoint={policy_checkpoint}"] if agent == "policy" else []
    out = tmp_path / "ltm.pt"
    summary = train(agent, out, *extra)
    dim, descriptor_dim = expected_sizes(agent)
    assert (summary["agent"], summary["dim"], summary["descriptor_dim"]) == (agent, dim, descriptor_dim)
    state = load_torch(out)
    assert (state["dim"], state["descriptor_dim"]) == (dim, descriptor_dim)
    assert_holds(eval_agent(agent, out, *extra), out)


def test_checkpoint_of_other_sizes_is_refused_with_one_line(modular_weights: Path) -> None:
    view = SECTORS * categories()
    with pytest.raises(ValueError) as refused:
        eval_agent("llm", modular_weights)
    message = str(refused.value)
    assert "\n" not in message
    assert str(modular_weights) in message
    assert f"dim is {view + SECTORS} in the file, the llm agent's memory expects {view}" in message
    assert f"`vlnkit train ltm agent=llm out={modular_weights}`" in message


def test_ltm_settings_of_the_agent_are_trained_and_checked(tmp_path: Path, modular_weights: Path) -> None:
    shallow = ["++agent.memory_overrides.ltm.depth=1"]
    out = tmp_path / "shallow.pt"
    train("modular", out, *shallow)
    assert load_torch(out)["ltm_config"]["depth"] == 1
    assert_holds(eval_agent("modular", out, *shallow), out)
    with pytest.raises(ValueError, match="ltm.depth is 1 in the file, the modular agent's memory expects 6"):
        eval_agent("modular", out)
    with pytest.raises(ValueError, match="ltm.depth is 6 in the file, the modular agent's memory expects 1"):
        eval_agent("modular", modular_weights, *shallow)


def test_resuming_a_checkpoint_of_other_sizes_is_one_error_line(tmp_path: Path, modular_weights: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ltm.pt"
    out.write_bytes(modular_weights.read_bytes())
    args = ["train", "ltm", "agent=llm", "episodes=2", "train.steps=1", f"out={out}", "progress=false"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and str(out) in lines[0]
    view = SECTORS * categories()
    assert f"dim is {view + SECTORS} in the file, this training run expects {view}" in lines[0]
    assert "resume=false" in lines[0]
