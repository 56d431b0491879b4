"""Agents refuse, before any episode, data that lacks an input they read (issue 19): the shared check, and
the modular, policy and vlncm_street agents on a real-format release without the synthetic city's files."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

import vlnkit.agents  # noqa: F401  (registers every agent)
from vlnkit.agents.base import AgentInputError, create, require_feature_panorama, require_input
from vlnkit.agents.memory_support import ViewCodec
from vlnkit.agents.policy.model import FlamePolicy, PolicyConfig
from vlnkit.envs.datasets import StreetEpisode, write_episodes, write_graph
from vlnkit.envs.street.env import StreetEnv
from vlnkit.envs.street.graph import StreetGraph
from vlnkit.memory.checkpoint import save_torch


def write_real_format_release(root: Path) -> Path:
    """A release in the public Touchdown layout and nothing else (no scene.jsonl, no landmarks.json): four
    nodes on a square, one episode in data/dev.json and data/train.json."""
    nodes = [("sw", 0, 40.0, -73.0), ("se", 0, 40.0, -72.99988), ("ne", 0, 40.00009, -72.99988),
             ("nw", 0, 40.00009, -73.0)]
    links = [("sw", 90, "se"), ("se", 270, "sw"), ("se", 0, "ne"), ("ne", 180, "se"), ("ne", 270, "nw"),
             ("nw", 90, "ne"), ("nw", 180, "sw"), ("sw", 0, "nw")]
    write_graph(StreetGraph.from_lists(nodes, links), root)
    episode = StreetEpisode("1", "touchdown", "Turn right and go to the corner.", ("sw", "se", "ne"), 0.0, 0.0)
    for split in ("dev", "train"):
        write_episodes([episode], root / "data" / f"{split}.json")
    return root


@pytest.fixture
def release(tmp_path: Path) -> Path:
    return write_real_format_release(tmp_path / "release")


def first_observation(release: Path) -> tuple[dict, dict]:
    env = StreetEnv(task="touchdown", data_dir=release, split="dev", panorama="auto")
    return env.reset(options={"episode_index": 0})


def test_require_input_raises_one_line_naming_the_agent_the_input_and_the_fix() -> None:
    require_input(True, "x", "never shown", "never shown")
    with pytest.raises(AgentInputError) as caught:
        require_input(False, "modular", "graph/scene.jsonl", "run on the synthetic city")
    assert str(caught.value) == "agent=modular needs graph/scene.jsonl; run on the synthetic city"
    assert isinstance(caught.value, ValueError)


def test_require_feature_panorama_checks_presence_and_shape() -> None:
    require_feature_panorama("policy", {"panorama": np.zeros((8, 3))}, (8, 3))
    with pytest.raises(AgentInputError, match=r"agent=policy needs observation 'panorama' as \(8, 3\) features.*"
                                              r"got no panorama in the observations"):
        require_feature_panorama("policy", {"instruction": "go"}, (8, 3))
    with pytest.raises(AgentInputError, match=r"got a panorama of shape \(2048,\).*features_path=.*features_index="):
        require_feature_panorama("policy", {"panorama": np.zeros(2048)}, (8, 3))


def test_modular_refuses_a_release_without_the_scene_description(release: Path) -> None:
    with pytest.raises(AgentInputError, match="agent=modular needs the names of its landmark categories from "
                                              f"{release / 'graph' / 'scene.jsonl'}, which does not exist.*"
                                              "agent.categories="):
        create("modular", {"release_dir": str(release), "memory": "none"})


def test_modular_with_given_categories_refuses_the_release_without_features(release: Path) -> None:
    agent = create("modular", {"release_dir": str(release), "categories": ["bank", "cafe"], "memory": "none"})
    obs, info = first_observation(release)
    assert "panorama" not in obs
    with pytest.raises(AgentInputError, match=r"agent=modular needs observation 'panorama' as \(8, 2\) features"):
        agent.reset(obs, info, 0)


def test_policy_refuses_the_release_without_panorama_features(release: Path, tmp_path: Path) -> None:
    config = PolicyConfig(vocab_size=4, categories=3, memory_dim=ViewCodec(8, 3).dim, d_model=16, heads=2, layers=1,
                          queries=2)
    checkpoint = save_torch({
        "model": FlamePolicy(config).state_dict(), "model_config": asdict(config),
        "vocabulary": ["<pad>", "<unk>", "turn", "right"], "categories": ["bank", "cafe", "tree"],
        "heading_weight": 0.3, "round": 0, "epoch": 0, "history": [], "curve": [], "collection": {},
        "lexicon_examples": [],
    }, tmp_path / "policy.pt")
    agent = create("policy", {"checkpoint": str(checkpoint), "memory": "none"})
    obs, info = first_observation(release)
    with pytest.raises(AgentInputError, match=r"agent=policy needs observation 'panorama' as \(8, 3\) features.*"
                                              "got no panorama.*task.panorama=features"):
        agent.reset(obs, info, 0)


def test_vlncm_street_refuses_a_release_without_the_city_labels(release: Path) -> None:
    with pytest.raises(AgentInputError, match="agent=vlncm_street needs the object labels of its semantic scorer "
                                              f"from {release / 'graph' / 'landmarks.json'}, which does not exist"):
        create("vlncm_street", {"release_dir": str(release), "asp": "rules"})


@pytest.mark.parametrize("name, config, missing", [
    ("modular", {}, "scene.jsonl"), ("vlncm_street", {"asp": "rules"}, "landmarks.json"),
])
def test_the_real_touchdown_sample_is_refused_when_the_agent_is_built(touchdown_sample: Path, name: str,
                                                                      config: dict, missing: str) -> None:
    with pytest.raises(AgentInputError, match=f"agent={name} needs .*{touchdown_sample / 'graph' / missing}"):
        create(name, {"release_dir": str(touchdown_sample), **config})
