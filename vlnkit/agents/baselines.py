"""Baseline agents: random, forward-only, and the shortest-path oracle."""

from __future__ import annotations

from typing import Any

import numpy as np
from omegaconf import DictConfig

from vlnkit.agents.base import register
from vlnkit.envs.street.actions import StreetAction


class RandomAgent:
    """Takes uniformly random movement actions and stops with probability ``stop_prob`` each step."""

    uses_info = False

    def __init__(self, num_actions: int, stop_prob: float = 0.05) -> None:
        self.moves = np.arange(1, num_actions)
        self.stop_prob = stop_prob
        self.rng = np.random.default_rng(0)

    def reset(self, observation: dict[str, Any], info: dict[str, Any], seed: int) -> None:
        """Reseed for the episode."""
        self.rng = np.random.default_rng(seed)

    def act(self, observation: dict[str, Any], info: dict[str, Any] | None = None) -> int:
        """A random action."""
        if self.rng.random() < self.stop_prob:
            return int(StreetAction.STOP)
        return int(self.rng.choice(self.moves))


class ForwardAgent:
    """Goes FORWARD ``steps`` times, then stops (``steps: null`` walks until the step limit)."""

    uses_info = False

    def __init__(self, steps: int | None = None) -> None:
        self.steps = steps
        self.taken = 0

    def reset(self, observation: dict[str, Any], info: dict[str, Any], seed: int) -> None:
        """Start counting steps."""
        self.taken = 0

    def act(self, observation: dict[str, Any], info: dict[str, Any] | None = None) -> int:
        """FORWARD, or STOP once the budget is spent."""
        if self.steps is not None and self.taken >= self.steps:
            return int(StreetAction.STOP)
        self.taken += 1
        return int(StreetAction.FORWARD)


class OracleAgent:
    """Follows the environment's shortest-path oracle (``info["oracle_action"]``): an upper bound."""

    uses_info = True

    def reset(self, observation: dict[str, Any], info: dict[str, Any], seed: int) -> None:
        """Nothing to reset."""

    def act(self, observation: dict[str, Any], info: dict[str, Any] | None = None) -> int:
        """The oracle's action."""
        if info is None:
            raise ValueError("the oracle agent needs the environment's info")
        return int(info["oracle_action"])


@register("random")
def _random(cfg: DictConfig, num_actions: int) -> RandomAgent:
    return RandomAgent(num_actions, stop_prob=float(cfg.get("stop_prob", 0.05)))


@register("forward")
def _forward(cfg: DictConfig, num_actions: int) -> ForwardAgent:
    steps = cfg.get("steps", None)
    return ForwardAgent(None if steps is None else int(steps))


@register("oracle")
def _oracle(cfg: DictConfig, num_actions: int) -> OracleAgent:
    return OracleAgent()
