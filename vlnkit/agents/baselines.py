"""Baseline agents: random, forward-only, and two privileged upper bounds: the shortest-path oracle and the
gold-route follower."""

from __future__ import annotations

from typing import Any

import numpy as np
from omegaconf import DictConfig

from vlnkit.agents.base import register, require_input
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


class PrivilegedAgent:
    """Takes the action the environment's privileged ``info`` names under ``key`` at every step."""

    uses_info = True
    name = "privileged"
    key = ""
    supply = ""

    def reset(self, observation: dict[str, Any], info: dict[str, Any], seed: int) -> None:
        """Refuse an environment whose ``info`` lacks the action (:class:`~vlnkit.agents.base.AgentInputError`)."""
        require_input(self.key in info, self.name, f"the environment's privileged info[{self.key!r}]", self.supply)

    def act(self, observation: dict[str, Any], info: dict[str, Any] | None = None) -> int:
        """The action ``info`` names."""
        if info is None:
            raise ValueError(f"the {self.name} agent needs the environment's info")
        return int(info[self.key])


class OracleAgent(PrivilegedAgent):
    """Follows the environment's shortest-path oracle (``info["oracle_action"]``): an upper bound of task
    completion."""

    name = "oracle"
    key = "oracle_action"
    privileged = ("info.oracle_action",)
    supply = "the street and continuous environments give it unless they are made with guidance=False"


class GoldAgent(PrivilegedAgent):
    """Follows the episode's reference route node by node with the navigator's actions and stops at its end
    (``info["gold_action"]``): the upper bound of the path metrics (nDTW, SDTW, SED), which the
    shortest-path oracle is not."""

    name = "gold"
    key = "gold_action"
    privileged = ("info.gold_action",)
    supply = ("the street environments (task=touchdown, map2seq or synth_city) give it unless they are made with "
              "guidance=False")


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


@register("gold")
def _gold(cfg: DictConfig, num_actions: int) -> GoldAgent:
    return GoldAgent()
