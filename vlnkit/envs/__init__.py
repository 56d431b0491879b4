"""Gymnasium environments and the data they stand on."""

from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np


def register_envs() -> None:
    """Register vlnkit's environment ids with Gymnasium (safe to call more than once)."""
    from vlnkit.envs.continuous import register_continuous_envs

    register_continuous_envs()
    for env_id, task in (("vlnkit/Touchdown-v0", "touchdown"), ("vlnkit/Map2Seq-v0", "map2seq")):
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point="vlnkit.envs.street.env:StreetEnv", kwargs={"task": task})


def episode_from_options(
    options: dict[str, Any] | None, lookup: Callable[[str], int], count: int, rng: np.random.Generator
) -> int:
    """The episode a ``reset`` asks for: ``options={"episode_id": ...}`` (found with ``lookup``),
    ``{"episode_index": i}``, or else one of ``count`` drawn from the env's ``rng``."""
    options = options or {}
    if "episode_id" in options:
        return lookup(str(options["episode_id"]))
    if "episode_index" in options:
        return int(options["episode_index"])
    return int(rng.integers(count))
