"""Agents: the protocol, the registry (``create(name, cfg)``) and the built-in agents."""

from vlnkit.agents import baselines as _baselines  # noqa: F401  (registers the baseline agents)
from vlnkit.agents import continuous_baselines as _continuous_baselines  # noqa: F401  (forward_blocked)
from vlnkit.agents import llm as _llm  # noqa: F401  (registers the prompt-based LLM agent)
from vlnkit.agents import modular as _modular  # noqa: F401  (registers the modular Mem4Nav pipeline agent)
from vlnkit.agents import policy as _policy  # noqa: F401  (registers the multimodal policy agent)
from vlnkit.agents import vlncm as _vlncm  # noqa: F401  (registers the VLN-CM zero-shot agent)
from vlnkit.agents.base import Agent, available, create, register

__all__ = ["Agent", "available", "create", "register"]
