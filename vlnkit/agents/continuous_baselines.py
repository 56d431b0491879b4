"""Baselines for continuous navigation that the street baselines do not cover."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from vlnkit.agents.base import register

STOP, FORWARD = 0, 1


class ForwardUntilBlockedAgent:
    """Moves forward until a step is blocked, then stops (VLN-CE's "forward only" baseline). It reads
    only the collision flag of ``info``, which is not privileged."""

    uses_info = True

    def __init__(self, max_forward: int | None = None) -> None:
        self.max_forward = max_forward
        self.taken = 0

    def reset(self, observation: dict[str, Any], info: dict[str, Any], seed: int) -> None:
        """Start counting steps."""
        self.taken = 0

    def act(self, observation: dict[str, Any], info: dict[str, Any] | None = None) -> int:
        """FORWARD, or STOP once the last step collided or the step budget is spent."""
        if info is None:
            raise ValueError("the forward-until-blocked agent needs the step's collision flag from info")
        if (self.taken and info.get("collided")) or (self.max_forward is not None and self.taken >= self.max_forward):
            return STOP
        self.taken += 1
        return FORWARD


@register("forward_blocked")
def _forward_blocked(cfg: DictConfig, num_actions: int) -> ForwardUntilBlockedAgent:
    steps = cfg.get("max_forward", None)
    return ForwardUntilBlockedAgent(None if steps is None else int(steps))
