"""Agents that misbehave on purpose, for the runner's fault tests.

Workers of the ``vector`` and ``ray`` runners load this module through the run config's
``imports=[runner_agents]``. Both agents act exactly like the ``random`` agent (same seed, same
actions), so a run that survives their faults can be compared with a plain random run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vlnkit.agents import register
from vlnkit.agents.base import AgentInputError
from vlnkit.agents.baselines import RandomAgent


class SlowAgent(RandomAgent):
    """The random agent, sleeping ``delay_ms`` before each action (a stand-in for an LLM call)."""

    def __init__(self, num_actions: int, delay_ms: float) -> None:
        super().__init__(num_actions)
        self.delay_s = delay_ms / 1000.0

    def act(self, observation: dict[str, Any], info: dict[str, Any] | None = None) -> int:
        """Sleep, then act randomly."""
        time.sleep(self.delay_s)
        return super().act(observation, info)


class FaultyAgent(RandomAgent):
    """The random agent, failing at the start of chosen episodes.

    ``fail_ids``: always raise. ``raise_once_ids``: raise on the first attempt only. ``crash_once_ids``:
    end the whole process (as a segfault would) on the first attempt only. "First attempt" is tracked
    with marker files in ``marker_dir``, which survive the crashed process.
    """

    def __init__(self, num_actions: int, cfg: DictConfig) -> None:
        super().__init__(num_actions)
        self.fail_ids = {str(i) for i in cfg.get("fail_ids") or []}
        self.raise_once_ids = {str(i) for i in cfg.get("raise_once_ids") or []}
        self.crash_once_ids = {str(i) for i in cfg.get("crash_once_ids") or []}
        self.marker_dir = Path(str(cfg.get("marker_dir") or "."))

    def _first_attempt(self, episode_id: str) -> bool:
        marker = self.marker_dir / f"attempted-{episode_id}"
        if marker.exists():
            return False
        marker.touch()
        return True

    def reset(self, observation: dict[str, Any], info: dict[str, Any], seed: int) -> None:
        """Fail as configured for this episode, else reseed like the random agent."""
        episode_id = str(info["episode_id"])
        if episode_id in self.fail_ids:
            raise ValueError(f"agent refuses episode {episode_id}")
        if episode_id in self.raise_once_ids and self._first_attempt(episode_id):
            raise RuntimeError(f"transient failure on episode {episode_id}")
        if episode_id in self.crash_once_ids and self._first_attempt(episode_id):
            os._exit(3)
        super().reset(observation, info, seed)


class RefusingAgent(RandomAgent):
    """The random agent, refusing its inputs at ``reset`` as an agent does on a release it cannot read."""

    def reset(self, observation: dict[str, Any], info: dict[str, Any], seed: int) -> None:
        """Refuse, naming a missing input."""
        raise AgentInputError("agent=refusing needs observation 'panorama'; set task.panorama=features")


@register("refusing")
def _refusing(cfg: DictConfig, num_actions: int) -> RefusingAgent:
    return RefusingAgent(num_actions)


@register("slow")
def _slow(cfg: DictConfig, num_actions: int) -> SlowAgent:
    return SlowAgent(num_actions, delay_ms=float(cfg.get("delay_ms", 50)))


@register("faulty")
def _faulty(cfg: DictConfig, num_actions: int) -> FaultyAgent:
    return FaultyAgent(num_actions, cfg)
