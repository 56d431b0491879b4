"""The model registry of :mod:`vlnkit.perception.backbones`: ``create_model(name, **kw)``.

Each model family lives in its own module and registers a factory under a name with
:func:`register_model`; code that needs a backbone asks for it by name (a config value) instead of
importing the class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

ModelFactory = Callable[..., nn.Module]
_MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator that registers a model factory (keyword arguments -> ``nn.Module``) under ``name``."""

    def wrap(factory: ModelFactory) -> ModelFactory:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = factory
        return factory

    return wrap


def available_models() -> list[str]:
    """Names of the registered models."""
    return sorted(_MODELS)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with ``kwargs``."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(available_models()) or 'none'}")
    return _MODELS[name](**kwargs)
