"""The agent protocol every vlnkit agent follows, and a registry to build agents by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from omegaconf import DictConfig, OmegaConf


@runtime_checkable
class Agent(Protocol):
    """An agent acts from observations only.

    ``reset`` starts an episode (agents keep no state across episodes); ``act`` returns an action id.
    ``uses_info`` says whether the agent reads the environment's privileged ``info`` (only the oracle
    and imitation learners should): runners pass ``info`` to ``act`` only when it is true.
    """

    uses_info: bool

    def reset(self, observation: dict[str, Any], info: dict[str, Any], seed: int) -> None:
        """Start an episode; ``seed`` makes any randomness of the episode reproducible."""

    def act(self, observation: dict[str, Any], info: dict[str, Any] | None = None) -> int | Mapping[str, Any]:
        """The next action for ``observation``: an action id, or for a parameterised action (VLN-CE's
        ``GO_TOWARD_POINT``) a mapping with ``action`` and its parameters."""


AgentFactory = Callable[[DictConfig, int], Agent]
_REGISTRY: dict[str, AgentFactory] = {}


def register(name: str) -> Callable[[AgentFactory], AgentFactory]:
    """Decorator that registers an agent factory ``(cfg, num_actions) -> Agent`` under ``name``."""

    def wrap(factory: AgentFactory) -> AgentFactory:
        if name in _REGISTRY:
            raise ValueError(f"agent {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return wrap


def available() -> list[str]:
    """Names of the registered agents."""
    return sorted(_REGISTRY)


def create(name: str, cfg: DictConfig | dict[str, Any] | None = None, num_actions: int = 4) -> Agent:
    """Build the agent registered as ``name`` from its config (the agent's section of the run config)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown agent {name!r}; available: {', '.join(available())}")
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg or {})
    return _REGISTRY[name](cfg, num_actions)
