"""Scoring a leaderboard submission made elsewhere (``vlnkit score``) with the metrics of ``vlnkit eval``.

A submission file holds each episode's predicted trajectory in the task's leaderboard format (street:
``submission.jsonl`` with ``route_id``/``id`` and ``route_panoids``; R2R-CE: ``submission.json``). It is
read against the split named by the same config keys as an evaluation (``task=``, ``data_dir=``,
``split=``, ``limit=``), and every episode is scored by the task's own ``finish``, so a run's submission
scores exactly as the run did. Metrics that a submission cannot give (the street action count) are left
out and named in ``unscored``. A submission must hold every episode of the split once, and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlnkit.config import load_config
from vlnkit.eval.metrics import aggregate
from vlnkit.eval.provenance import dataset_hash
from vlnkit.eval.runner import validate_config
from vlnkit.eval.tasks import get_task


def score_submission(submission: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Score ``submission`` on the split that ``overrides`` (of ``configs/eval.yaml``) name; returns the
    means over episodes, ``num_episodes``, ``unscored`` and what was scored (file, task, split, data)."""
    path = Path(submission).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such submission file")
    cfg = load_config("eval", list(overrides))
    validate_config(cfg)
    kind = str(cfg.task.get("kind", "street"))
    task = get_task(kind)
    data_dir = task.resolve_data_dir(cfg)
    env = task.make_env(cfg, data_dir)
    episodes = list(task.episodes(env))
    if cfg.limit is not None:
        episodes = episodes[: int(cfg.limit)]
    traces = task.submission_traces(path, env, episodes)
    records = []
    for ep in episodes:
        env.reset(seed=0, options={"episode_id": ep.episode_id})  # loads the episode's scene and goals
        records.append(task.finish(env, ep, *traces[ep.episode_id]))
    keys = [k for k in task.metric_keys if k not in task.unscored_keys]
    metrics: dict[str, Any] = aggregate({k: np.array([r["metrics"][k] for r in records], dtype=np.float64)
                                         for k in keys})
    metrics.update({
        "unscored": list(task.unscored_keys),
        "submission": str(path),
        "task": str(cfg.task.name),
        "task_kind": kind,
        "split": str(cfg.split),
        "data_dir": str(data_dir),
        "dataset_hash": dataset_hash(episodes),
    })
    return metrics
