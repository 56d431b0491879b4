"""Baseline agents: VLN-CE's random baseline (``random``), a uniformly random walker (``uniform_random``),
forward-only, and two privileged upper bounds: the shortest-path oracle and the gold-route follower. VLN-CE's
hand-crafted baseline and the bump-sensor walker are in :mod:`vlnkit.agents.continuous_baselines`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from omegaconf import DictConfig

from vlnkit.agents.base import register, require_input
from vlnkit.envs.street.actions import StreetAction


VLNCE_ACTIONS = (int(StreetAction.STOP), int(StreetAction.FORWARD), int(StreetAction.LEFT), int(StreetAction.RIGHT))
"""The ids :class:`RandomAgent` samples: STOP, FORWARD, LEFT, RIGHT. The continuous environment's ids of
STOP, MOVE_FORWARD, TURN_LEFT and TURN_RIGHT are the same (VLN-CE's ordering, which the street actions follow)."""

VLNCE_RANDOM_PROBS = (0.02, 0.68, 0.15, 0.15)
"""VLN-CE's random baseline's probabilities of STOP, MOVE_FORWARD, TURN_LEFT and TURN_RIGHT: the oracle action
frequencies of R2R-CE's training set (Krantz et al. 2020; ``RandomAgent`` of VLN-CE's
``vlnce_baselines/nonlearning_agents.py``)."""


class RandomAgent:
    """VLN-CE's "Random" baseline: every step samples STOP, FORWARD, LEFT or RIGHT with ``probs``, by default
    R2R-CE's training action frequencies :data:`VLNCE_RANDOM_PROBS` (0.02, 0.68, 0.15, 0.15). It never takes
    other actions (LOOK_UP/LOOK_DOWN, TURN_AROUND, GO_TOWARD_POINT). On street tasks it samples the same
    distribution over the street's STOP, FORWARD, LEFT and RIGHT, which is not a street paper's baseline.
    Each episode's draws are seeded by the episode's seed."""

    uses_info = False

    def __init__(self, num_actions: int = 4, probs: Sequence[float] = VLNCE_RANDOM_PROBS) -> None:
        p = np.asarray([float(x) for x in probs], dtype=np.float64)
        if p.shape != (len(VLNCE_ACTIONS),) or (p < 0).any() or not np.isclose(p.sum(), 1.0):
            raise ValueError(f"agent=random: probs must be {len(VLNCE_ACTIONS)} non-negative numbers summing to 1 "
                             f"(STOP, FORWARD, LEFT, RIGHT), got {list(probs)}")
        if num_actions < len(VLNCE_ACTIONS):
            raise ValueError(f"agent=random needs the actions STOP, FORWARD, LEFT and RIGHT (ids 0-3); this "
                             f"environment has {num_actions}")
        self.actions = np.asarray(VLNCE_ACTIONS)
        self.probs = p / p.sum()
        self.rng = np.random.default_rng(0)

    def reset(self, observation: dict[str, Any], info: dict[str, Any], seed: int) -> None:
        """Reseed for the episode."""
        self.rng = np.random.default_rng(seed)

    def act(self, observation: dict[str, Any], info: dict[str, Any] | None = None) -> int:
        """An action drawn from ``probs``."""
        return int(self.rng.choice(self.actions, p=self.probs))


class UniformRandomAgent:
    """Stops with probability ``stop_prob`` each step, else takes one of the environment's other action ids
    uniformly at random: every id from 1 to ``num_actions - 1`` (street: FORWARD, LEFT, RIGHT and, with
    VELMA/FLAME semantics, TURN_AROUND; continuous: MOVE_FORWARD, TURN_LEFT, TURN_RIGHT and, where the task
    has them, LOOK_UP and LOOK_DOWN). No paper's baseline: a project baseline. Each episode's draws are
    seeded by the episode's seed."""

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
    if "stop_prob" in cfg:
        raise ValueError("agent=random is VLN-CE's random baseline (agent.probs); stop_prob belongs to the uniformly "
                         "random walker: agent=uniform_random agent.stop_prob=...")
    probs = cfg.get("probs", None)
    return RandomAgent(num_actions, VLNCE_RANDOM_PROBS if probs is None else list(probs))


@register("uniform_random")
def _uniform_random(cfg: DictConfig, num_actions: int) -> UniformRandomAgent:
    return UniformRandomAgent(num_actions, stop_prob=float(cfg.get("stop_prob", 0.05)))


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
