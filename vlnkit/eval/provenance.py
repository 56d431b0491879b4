"""What a leaderboard entry must say about how it was made: dataset hash, package versions, git commit."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

VERSIONED_PACKAGES = ("vlnkit", "torch", "numpy", "gymnasium")
"""Packages whose installed versions ``metrics.json`` records."""


def _episode_payload(episode: Any) -> Any:
    """An episode as JSON-able data: a dataclass's fields, else its attributes, else its ``repr``."""
    if dataclasses.is_dataclass(episode) and not isinstance(episode, type):
        return dataclasses.asdict(episode)
    if hasattr(episode, "__dict__"):
        return vars(episode)
    return repr(episode)


def dataset_hash(episodes: Iterable[Any]) -> str:
    """A short hash of the evaluated episodes in dataset order: ids, routes, instructions, headings and
    the original records, so an edited or regenerated split gets a new hash. Files the episodes
    refer to (graphs, scenes) are not read: hashing them would cost time proportional to their size."""
    digest = hashlib.sha256()
    for episode in episodes:
        digest.update(json.dumps(_episode_payload(episode), sort_keys=True, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def package_versions(names: Iterable[str] = VERSIONED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (``None`` when it is not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit checked out at ``path`` (default: the vlnkit package's folder), or ``None`` when it is
    not inside a git work tree or git is unavailable; never raises."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        done = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None
