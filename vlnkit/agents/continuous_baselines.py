"""Baselines for continuous navigation that the street baselines do not cover: VLN-CE's hand-crafted baseline
(``handcrafted``) and a bump-sensor walker (``forward_blocked``). VLN-CE's random baseline is ``random``
(:class:`vlnkit.agents.baselines.RandomAgent`), which also runs on street tasks."""

from __future__ import annotations

from typing import Any

import numpy as np
from omegaconf import DictConfig

from vlnkit.agents.base import AgentInputError, register

STOP, FORWARD, TURN_RIGHT = 0, 1, 3
"""The continuous environment's ids of STOP, MOVE_FORWARD and TURN_RIGHT (``vlnkit.envs.continuous.env``)."""

HANDCRAFTED_FORWARD_STEPS = 37
"""VLN-CE's hand-crafted agent's forward steps: R2R-CE's average oracle path length in train, 9.27 m, in
0.25 m steps."""


class HandcraftedAgent:
    """VLN-CE's "Hand-Crafted" baseline (Krantz et al. 2020; ``HandcraftedAgent`` of
    ``vlnce_baselines/nonlearning_agents.py``): faces a random heading, walks ``forward_steps`` (37)
    MOVE_FORWARD, then STOPs.

    At ``reset`` it draws ``k`` uniformly from ``0 .. 360 / turn_angle`` (both ends included, as VLN-CE's
    ``randint(0, 360 / 15 + 1)``; 0 and the last value both keep the start heading) and takes ``k``
    TURN_RIGHT first. ``turn_angle`` is the task's turn in degrees (15 on R2R-CE, 30 on RxR-CE). The draw is
    seeded by the episode's seed. It reads no observation; a blocked move still counts as a step.
    """

    uses_info = False

    def __init__(self, turn_angle: float = 15.0, forward_steps: int = HANDCRAFTED_FORWARD_STEPS) -> None:
        if not turn_angle > 0:
            raise ValueError(f"agent=handcrafted: turn_angle must be a positive number of degrees, got {turn_angle}")
        if forward_steps < 0:
            raise ValueError(f"agent=handcrafted: forward_steps must be >= 0, got {forward_steps}")
        self.turn_angle = float(turn_angle)
        self.max_turns = int(360 / self.turn_angle)
        self.forward_steps = int(forward_steps)
        self.turns_left = 0
        self.forward_left = self.forward_steps

    def reset(self, observation: dict[str, Any], info: dict[str, Any], seed: int) -> None:
        """Draw the episode's number of right turns."""
        self.turns_left = int(np.random.default_rng(seed).integers(0, self.max_turns + 1))
        self.forward_left = self.forward_steps

    def act(self, observation: dict[str, Any], info: dict[str, Any] | None = None) -> int:
        """TURN_RIGHT while turns are left, then MOVE_FORWARD while forward steps are left, then STOP."""
        if self.turns_left > 0:
            self.turns_left -= 1
            return TURN_RIGHT
        if self.forward_left > 0:
            self.forward_left -= 1
            return FORWARD
        return STOP


class ForwardUntilBlockedAgent:
    """Takes MOVE_FORWARD until a move is blocked, then STOPs; with ``max_forward`` it also STOPs after that
    many moves, and without it walks until a block or the task's step limit. A move is blocked when
    ``info["collided"]`` is true after it: the agent moved less than a full step (Habitat's criterion, so
    sliding along a wall counts). A project baseline, not one of VLN-CE's. It reads only that flag of
    ``info``, a bump sensor, which is not privileged."""

    uses_info = True

    def __init__(self, max_forward: int | None = None) -> None:
        self.max_forward = max_forward
        self.taken = 0

    def reset(self, observation: dict[str, Any], info: dict[str, Any], seed: int) -> None:
        """Start counting steps."""
        self.taken = 0

    def act(self, observation: dict[str, Any], info: dict[str, Any] | None = None) -> int:
        """MOVE_FORWARD, or STOP once the last move was blocked or ``max_forward`` moves are spent."""
        if info is None:
            raise ValueError("the forward-until-blocked agent needs the step's collision flag from info")
        if (self.taken and info.get("collided")) or (self.max_forward is not None and self.taken >= self.max_forward):
            return STOP
        self.taken += 1
        return FORWARD


@register("handcrafted")
def _handcrafted(cfg: DictConfig, num_actions: int) -> HandcraftedAgent:
    turn_angle = cfg.get("turn_angle", 15.0)
    if turn_angle is None:
        raise AgentInputError("agent=handcrafted needs the task's turn_angle (degrees), which continuous tasks "
                              "(synth_houses, vlnce, rxr_ce) give; VLN-CE's hand-crafted baseline is not defined "
                              "on street graphs")
    return HandcraftedAgent(float(turn_angle), int(cfg.get("forward_steps", HANDCRAFTED_FORWARD_STEPS)))


@register("forward_blocked")
def _forward_blocked(cfg: DictConfig, num_actions: int) -> ForwardUntilBlockedAgent:
    steps = cfg.get("max_forward", None)
    return ForwardUntilBlockedAgent(None if steps is None else int(steps))
