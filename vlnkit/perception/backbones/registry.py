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
_BACKBONES: set[str] = set()


def register_model(name: str, backbone: bool = True) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator that registers a model factory (keyword arguments -> ``nn.Module``) under ``name``.
    ``backbone``: the factory builds a vision :class:`~vlnkit.perception.backbones.base.Backbone` (feature maps
    and optional logits), so dense heads and the registry-wide tests apply to it."""

    def wrap(factory: ModelFactory) -> ModelFactory:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = factory
        if backbone:
            _BACKBONES.add(name)
        return factory

    return wrap


def available_models() -> list[str]:
    """Names of the registered models."""
    return sorted(_MODELS)


def available_backbones() -> list[str]:
    """Names of the registered vision backbones (the models registered with ``backbone=True``)."""
    return sorted(_BACKBONES)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with ``kwargs``."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(available_models()) or 'none'}")
    return _MODELS[name](**kwargs)
