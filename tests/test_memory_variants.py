"""The memory variants: each config builds a memory holding exactly the parts it names, the old names are
refused with the new ones, the modular agent reads memory only through the retrieval API, and it counts
which part answered each memory question and whether it was right."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vlnkit.agents.base import create
from vlnkit.agents.memory_support import build_memory, memory_from_config
from vlnkit.agents.modular import agent as _registers  # noqa: F401  (registers "modular")
from vlnkit.agents.modular.agent import ANSWERING_PARTS, QUESTION_KINDS
from vlnkit.config import config_dir, load_config
from vlnkit.memory import Mem4NavConfig, Mem4NavMemory

PARTS = {
    "none": (),
    "full": ("octree", "graph", "stm", "ltm"),
    "octree_only": ("octree",),
    "graph_only": ("graph",),
    "stm_only": ("stm",),
    "ltm_only": ("ltm",),
    "no_octree": ("graph", "stm", "ltm"),
    "no_graph": ("octree", "stm", "ltm"),
    "no_stm": ("octree", "graph", "ltm"),
    "no_ltm": ("octree", "graph", "stm"),
    "oracle": ("oracle",),
}
"""What each shipped variant must hold (written out here, not taken from the code under test)."""

OLD_NAMES = ("stm", "ltm", "octree", "graph")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_shipped_configs_are_the_named_variants() -> None:
    shipped = sorted(p.stem for p in (Path(config_dir()) / "memory").glob("*.yaml"))
    assert shipped == sorted(PARTS)
    assert sorted(Mem4NavConfig.variants()) == sorted(PARTS)


@pytest.mark.parametrize("name", sorted(PARTS))
def test_each_variant_config_builds_a_memory_of_exactly_its_parts(name: str) -> None:
    cfg = load_config("eval", ["agent=modular", f"memory={name}", "++agent.memory_overrides.ltm.depth=1"])
    assert cfg.agent.memory == name
    memory = memory_from_config(cfg.agent, dim=16, descriptor_dim=12)
    assert memory.parts == PARTS[name]
    for part in ("octree", "graph", "stm", "ltm", "oracle"):
        assert (getattr(memory, part) is not None) == (part in PARTS[name]), part


def test_old_names_are_refused_naming_the_new_ones(capsys: pytest.CaptureFixture[str]) -> None:
    from hydra.errors import HydraException

    from vlnkit.cli import main

    for old in OLD_NAMES:
        with pytest.raises(HydraException, match=r"(?s)Could not find 'memory/" + old + r"'.*graph_only.*stm_only"):
            load_config("eval", ["agent=modular", f"memory={old}"])
        with pytest.raises(ValueError, match=rf"memory variant '{old}' was renamed: its contents are now \w+.*"
                                             r"none, full, octree_only, graph_only, stm_only, ltm_only"):
            build_memory(old, 16)
    assert main(["eval", "agent=modular", "memory=octree", "limit=1", "progress=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("vlnkit: error:") and "octree_only" in err
    assert "no_graph" in str(pytest.raises(ValueError, Mem4NavConfig.variant, "octree").value)


def test_the_default_study_uses_only_the_named_variants() -> None:
    from vlnkit.eval.ablation import plan_rows

    rows = plan_rows(load_config("ablate").ablation)
    used = {row.value("memory") for row in rows}
    assert used <= set(PARTS)
    assert {row.value("memory") for row in rows if row.group == "grid"} == set(PARTS)


def test_oracle_log_round_trips(tmp_path: Path) -> None:
    memory = build_memory("oracle", 8)
    rng = np.random.default_rng(0)
    for step in range(20):
        memory.write(rng.normal(size=8), np.array([step * 10.0, 0.0, 0.0]), step)
    memory.save(tmp_path / "m")
    restored = Mem4NavMemory.load(tmp_path / "m")
    a, b = memory.trace(), restored.trace()
    assert a.sources == b.sources == ("oracle",) * 20
    assert np.array_equal(a.steps, b.steps) and np.array_equal(a.embeddings, b.embeddings)


# -- the modular agent and the retrieval API --------------------------------------------------------


class SealedMemory(Mem4NavMemory):
    """A memory whose parts raise when read from outside: only its retrieval API works."""

    def _sealed(self) -> None:
        raise AssertionError("the agent read a memory part directly instead of asking the retrieval API")

    octree = property(lambda self: self._sealed())
    graph = property(lambda self: self._sealed())
    stm = property(lambda self: self._sealed())
    ltm = property(lambda self: self._sealed())
    oracle = property(lambda self: self._sealed())


@pytest.fixture(scope="module")
def city_env():
    from vlnkit.envs.street.env import StreetEnv
    from vlnkit.envs.synth import default_city

    return StreetEnv(task="touchdown", data_dir=default_city(), split="dev", episode_kinds="all", panorama="auto")


EPISODES = range(0, 24)
"""Dev episodes of the default city; among them "stop at the second X" (count questions) and "go back to
X" (place questions)."""


def _rollout(env, agent, index: int) -> tuple[list[int], dict[str, int]]:
    obs, _ = env.reset(options={"episode_index": index})
    agent.reset(obs, None, 0)
    actions, done = [], False
    while not done:
        actions.append(agent.act(obs, None))
        obs, _, terminated, truncated, _ = env.step(actions[-1])
        done = terminated or truncated
    return actions, agent.episode_stats()


def _agent(env, variant: str):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return create("modular", {"memory": variant, "memory_overrides": {"ltm": {"depth": 2}}},
                      num_actions=int(env.action_space.n))


@pytest.mark.parametrize("variant", ["full", "oracle", "ltm_only"])
def test_the_agent_runs_with_a_memory_whose_parts_cannot_be_read(city_env, variant: str) -> None:
    plain, sealed = _agent(city_env, variant), _agent(city_env, variant)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        sealed.map.memory = SealedMemory(sealed.map.memory.config)
    with pytest.raises(AssertionError, match="read a memory part directly"):
        _ = sealed.map.memory.stm
    answered = 0
    for index in EPISODES:
        expected, _ = _rollout(city_env, plain, index)
        actions, stats = _rollout(city_env, sealed, index)
        assert actions == expected
        answered += stats["mem_questions"] - stats["mem_answers_fallback"]
    if variant != "ltm_only":
        assert answered > 0       # the memory did answer, through retrieval alone


@pytest.mark.parametrize("variant", ["none", "full", "stm_only", "graph_only", "oracle"])
def test_agent_stats_count_every_question_once(city_env, variant: str) -> None:
    agent = _agent(city_env, variant)
    totals: dict[str, int] = {}
    for index in EPISODES:
        _, stats = _rollout(city_env, agent, index)
        assert stats["mem_questions"] == sum(stats[f"mem_answers_{p}"] for p in ANSWERING_PARTS)
        assert stats["mem_questions"] == sum(stats[f"mem_questions_{k}"] for k in QUESTION_KINDS)
        for part in ANSWERING_PARTS:
            assert 0 <= stats[f"mem_correct_{part}"] <= stats[f"mem_answers_{part}"]
        for key, value in stats.items():
            totals[key] = totals.get(key, 0) + value
    assert totals["mem_questions_count"] > 0 and totals["mem_questions_place"] > 0
    parts = {part for part in ANSWERING_PARTS if totals[f"mem_answers_{part}"]}
    expected = {"none": {"fallback"}, "full": {"stm", "graph"}, "stm_only": {"stm"},
                "graph_only": {"graph", "fallback"}, "oracle": {"oracle"}}[variant]
    assert parts <= expected | {"fallback"} and parts & expected
    if variant == "oracle":        # perfect recall is the truth the answers are scored against
        assert totals["mem_correct_oracle"] == totals["mem_answers_oracle"] == totals["mem_questions"]


def test_metrics_json_sums_the_memory_answers(tmp_path: Path) -> None:
    from vlnkit.eval.runner import evaluate

    cfg = load_config("eval", ["agent=modular", "memory=stm_only", "limit=8", f"out={tmp_path}", "progress=false",
                               "num_plots=0"])
    stats = evaluate(cfg)["agent_stats"]
    assert stats["mem_questions"] == sum(stats[f"mem_answers_{p}"] for p in ANSWERING_PARTS) > 0
    records = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert sum(r["agent_stats"]["mem_answers_stm"] for r in records) == stats["mem_answers_stm"]
