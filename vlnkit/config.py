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


def load_config(name: str, overrides: Sequence[str] = (), folder: str | None = None) -> DictConfig:
    """Compose the config ``<name>.yaml`` with command-line style ``overrides``. ``agent=pkg.module:Class``
    (a user's own agent) selects the ``custom`` agent config with that ``agent.name``. ``folder`` is a
    subfolder of the configs whose files are composed as top-level configs (``experiment``)."""
    expanded: list[str] = []
    for override in overrides:
        key, sep, value = str(override).partition("=")
        if sep and key == "agent" and ":" in value:
            expanded += ["agent=custom", f"agent.name={value}"]
        else:
            expanded.append(str(override))
    GlobalHydra.instance().clear()
    root = str(Path(config_dir()) / folder) if folder else config_dir()
    with initialize_config_dir(config_dir=root, version_base=None):
        return compose(config_name=name, overrides=expanded)


def group_choices(name: str) -> dict[str, list[str]]:
    """The config groups ``<name>.yaml`` composes (its ``defaults``), each with the choices its folder has."""
    groups: dict[str, list[str]] = {}
    root = Path(config_dir())
    for entry in OmegaConf.load(root / f"{name}.yaml").get("defaults", []):
        if isinstance(entry, str) or not entry:
            continue
        group = str(next(iter(entry)))
        groups[group] = sorted(path.stem for path in (root / group).glob("*.yaml"))
    return groups


def describe_config(name: str) -> str:
    """A help text for ``<name>.yaml``: its config groups with their choices and defaults, then its
    top-level keys with their defaults and the comment the file gives each."""
    root = Path(config_dir())
    cfg = OmegaConf.load(root / f"{name}.yaml")
    defaults = {str(k): str(v) for entry in cfg.get("defaults", []) if not isinstance(entry, str)
                for k, v in entry.items()}
    lines = ["config groups (choose with GROUP=CHOICE):"]
    for group, choices in group_choices(name).items():
        lines.append(f"  {group}={'|'.join(choices)}   (default {defaults.get(group)})")
    lines.append("keys (set with KEY=VALUE; nested keys with dots, e.g. task.max_steps=80):")
    comments = _key_comments(root / f"{name}.yaml")
    for key in cfg:
        if key == "defaults":
            continue
        value = OmegaConf.to_container(cfg, resolve=False)[key]
        shown = "{...}" if isinstance(value, dict) else json.dumps(value) if not isinstance(value, str) else value
        lines.append(f"  {key}={shown}" + (f"   {comments[key]}" if key in comments else ""))
    return "\n".join(lines)


def _key_comments(path: Path) -> dict[str, str]:
    """The trailing comment of each top-level key of a YAML file, with its continuation comment lines."""
    comments: dict[str, str] = {}
    last: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, rest = line.partition(":")
        if sep and key and not key[0].isspace() and not key.startswith("#"):
            last = key
            _, hash_, comment = rest.partition("#")
            if hash_:
                comments[key] = comment.strip()
        elif line.startswith(" ") and line.strip().startswith("#") and last in comments:
            comments[last] += " " + line.strip().lstrip("#").strip()
        else:
            last = None
    return comments


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python data (for JSON files)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def config_hash(data: Any) -> str:
    """A stable short hash of JSON-able data (sorted keys)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
