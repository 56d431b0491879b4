"""Loading run configurations: Hydra's compose API over the YAML files in ``vlnkit/configs``.

Commands take Hydra-style overrides (``task=touchdown data_dir=/data/touchdown seed=3``): config-group
choices (``task=``, ``agent=``) pick a file from the group's folder, everything else sets a key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf


def config_dir() -> str:
    """Absolute path of the packaged ``configs`` folder."""
    return str(Path(__file__).resolve().parent / "configs")


def load_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose the config ``<name>.yaml`` with command-line style ``overrides``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return compose(config_name=name, overrides=list(overrides))


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python data (for JSON files)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def config_hash(data: Any) -> str:
    """A stable short hash of JSON-able data (sorted keys)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
