"""The agent protocol every vlnkit agent follows, a registry to build agents by name, and the error an
agent raises when the task's data lacks an input it reads."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
from omegaconf import DictConfig, OmegaConf


@runtime_checkable
class Agent(Protocol):
    """An agent acts from observations only.

    ``reset`` starts an episode (agents keep no state across episodes); ``act`` returns an action id.
    ``uses_info`` says whether the agent reads the environment's privileged ``info`` (only the oracle
    and imitation learners should): runners pass ``info`` to ``act`` only when it is true. An agent whose
    inputs the task's data lacks raises :class:`AgentInputError` when it is built or at ``reset``.

    Two optional attributes say what privileged information a result used (the runner records it in
    every episode record and in ``metrics.json``, and tables show it): ``privileged``, the privileged
    inputs the agent reads itself (``("info.oracle_action",)``; default none), and ``reads_panorama``,
    true for agents that read ``observation["panorama"]``, whose source may be the simulator's labels
    (the environment's ``privileged_observations`` say so).
    """

    uses_info: bool

    def reset(self, observation: dict[str, Any], info: dict[str, Any], seed: int) -> None:
        """Start an episode; ``seed`` makes any randomness of the episode reproducible."""

    def act(self, observation: dict[str, Any], info: dict[str, Any] | None = None) -> int | Mapping[str, Any]:
        """The next action for ``observation``: an action id, or for a parameterised action (VLN-CE's
        ``GO_TOWARD_POINT``) a mapping with ``action`` and its parameters."""


class AgentInputError(ValueError):
    """An agent cannot run on this task's data: an input it reads (an observation key, an ``info`` item, a
    release file) is missing or not in the form it reads.

    Agents raise it when they are built or at ``reset``, before their first action, so that a runner can
    stop the run with its one-line message instead of recording every episode as failed.
    """


def require_input(present: bool, agent: str, missing: str, supply: str) -> None:
    """Refuse to run ``agent`` unless ``present``: raise :class:`AgentInputError` with one line naming the
    ``missing`` input and how to ``supply`` it (the file to add or the config keys to set)."""
    if not present:
        raise AgentInputError(f"agent={agent} needs {missing}; {supply}")


FEATURES_SUPPLY = (
    "only the synthetic city has panorama features (its graph/scene.jsonl, read with task.panorama=auto or scene); "
    "for another release give features of that shape per panoid with task.panorama=features "
    "+task.panorama_paths.features_path=FEATURES.npy +task.panorama_paths.features_index=PANOIDS.txt "
    "(or +task.panorama_paths.features_dir=DIR)"
)
"""How to supply the sector-by-category panorama features the memory agents read."""


def require_feature_panorama(agent: str, observation: Mapping[str, Any], shape: tuple[int, int]) -> None:
    """Refuse to run ``agent`` unless ``observation["panorama"]`` holds ``shape`` = (sectors, categories)
    landmark features, as the synthetic city's scene description gives them."""
    panorama = observation.get("panorama")
    got = "no panorama in the observations" if panorama is None else f"a panorama of shape {np.shape(panorama)}"
    require_input(panorama is not None and np.shape(panorama) == tuple(shape), agent,
                  f"observation 'panorama' as {tuple(shape)} features (sectors x landmark categories), got {got}",
                  FEATURES_SUPPLY)


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


def resolve_factory(name: str) -> AgentFactory:
    """The factory of the agent ``name``: a registered name, or ``package.module:Attribute`` naming a class
    or function of an importable module that is called as ``(cfg, num_actions)`` (a user's own agent,
    ``vlnkit eval agent=my.module:MyAgent``)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    module_name, sep, attribute = name.partition(":")
    if not sep:
        raise ValueError(f"unknown agent {name!r}; available: {', '.join(available())}, or "
                         "package.module:ClassName for an agent of your own")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"agent {name!r}: cannot load {attribute!r} from module {module_name!r} ({err}); "
                         "expected package.module:ClassName of an importable module") from None
    if not callable(factory):
        raise ValueError(f"agent {name!r}: {attribute!r} is not a class or function")
    return factory


def create(name: str, cfg: DictConfig | dict[str, Any] | None = None, num_actions: int = 4) -> Agent:
    """Build the agent ``name`` (see :func:`resolve_factory`) from its config (the agent's section of
    the run config)."""
    factory = resolve_factory(name)
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg or {})
    return factory(cfg, num_actions)
