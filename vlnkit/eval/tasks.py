"""What the evaluation runner needs from each kind of task, and the registry of task kinds.

The runner (:mod:`vlnkit.eval.runner`) owns what is common to every evaluation: seeding, the rollout
loop, the resumable ``episodes.jsonl``, ``metrics.json``. A task kind (street graphs, continuous
scenes) plugs in through :class:`EvalTask`: how to build its environment, what to record of each step,
how to score a finished episode and which leaderboard and report files to write. A run config picks
its kind with ``task.kind``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import gymnasium
from omegaconf import DictConfig


class EvalTask(Protocol):
    """One kind of navigation task, as seen by the evaluation runner."""

    metric_keys: tuple[str, ...]
    """Per-episode metrics written to ``episodes.jsonl`` and averaged into ``metrics.json``."""

    def resolve_data_dir(self, cfg: DictConfig) -> Path:
        """The dataset folder of the run (the built-in synthetic data when ``cfg.data_dir`` is null)."""

    def make_env(self, cfg: DictConfig, data_dir: Path) -> gymnasium.Env:
        """The unwrapped environment, with its privileged hints in ``info`` (the runner hands them only
        to agents that declare ``uses_info``)."""

    def episodes(self, env: gymnasium.Env) -> Sequence[Any]:
        """The split's episodes, in dataset order, each with an ``episode_id`` (str)."""

    def trace(self, info: dict[str, Any]) -> Any:
        """What to record of a step from its ``info`` (a node id, a position, ...)."""

    def finish(self, env: gymnasium.Env, episode: Any, trace: list[Any], actions: list[int]) -> dict[str, Any]:
        """The ``episodes.jsonl`` record fields of a finished episode, including ``metrics``."""

    def write_outputs(self, out: Path, env: gymnasium.Env, episodes: Sequence[Any],
                      records: Sequence[dict[str, Any]], metrics: dict[str, Any]) -> None:
        """Write the leaderboard submission and the report for the finished run."""


def get_task(kind: str) -> EvalTask:
    """The task kind registered under ``kind`` (``street``, ``continuous``)."""
    from vlnkit.eval.continuous import ContinuousTask
    from vlnkit.eval.street import StreetTask

    kinds: dict[str, EvalTask] = {"street": StreetTask(), "continuous": ContinuousTask()}
    if kind not in kinds:
        raise KeyError(f"unknown task kind {kind!r}; available: {', '.join(sorted(kinds))}")
    return kinds[kind]
