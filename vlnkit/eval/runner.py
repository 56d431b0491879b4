"""Rollouts and the results folder of an evaluation run.

``evaluate(cfg)`` runs one agent over the episodes of a split and writes, under ``cfg.out``:

- ``episodes.jsonl``: one line per finished episode (id, predicted trajectory, actions, its metrics),
  appended, flushed and fsynced as each episode ends, so an interrupted run resumes where it stopped
  without losing or duplicating an episode;
- ``metrics.json``: the means over episodes, ``num_episodes``, the resolved config and the seed;
- the task kind's leaderboard submission and report (for street tasks ``submission.jsonl`` with
  ``route_id``/``id`` and ``route_panoids``, ``report.md`` and ``trajectories.png``);
- ``run.json``: the config hash, so that resuming with a different config is refused.

Each episode's randomness comes from a seed derived from the run seed and the episode id, so results
do not depend on the order in which episodes run.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

import vlnkit  # noqa: F401  (registers the environments)
from vlnkit.agents import Agent, create
from vlnkit.config import config_hash, to_container
from vlnkit.eval.metrics import aggregate
from vlnkit.eval.tasks import EvalTask, get_task

def episode_seed(seed: int, episode_id: str) -> int:
    """A per-episode seed that depends only on the run seed and the episode id."""
    return zlib.crc32(f"{seed}:{episode_id}".encode()) & 0x7FFFFFFF


def rollout(task: EvalTask, env: gymnasium.Env, agent: Agent, episode: Any, seed: int) -> dict[str, Any]:
    """Run one episode with ``agent``; returns the task's record of it (trace, actions, metrics)."""
    obs, info = env.reset(seed=seed, options={"episode_id": episode.episode_id})
    agent.reset(obs, info, seed)
    trace = [task.trace(info)]
    actions: list[int] = []
    done = False
    while not done:
        action = int(agent.act(obs, info if agent.uses_info else None))
        obs, _, terminated, truncated, info = env.step(action)
        actions.append(action)
        trace.append(task.trace(info))
        done = terminated or truncated
    return {**task.finish(env, episode, trace, actions), "stopped": bool(terminated)}


def read_finished(path: Path) -> dict[str, dict[str, Any]]:
    """Finished episodes of an interrupted run, by id. A torn last line (a crash mid-write) is dropped
    and truncated away so that appending goes on cleanly; a bad line elsewhere is an error."""
    if not path.is_file():
        return {}
    lines = path.read_bytes().split(b"\n")
    finished: dict[str, dict[str, Any]] = {}
    good_bytes = 0
    for i, line in enumerate(lines):
        if not line.strip():
            good_bytes += len(line) + 1
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            if i == len(lines) - 1 or all(not rest.strip() for rest in lines[i + 1 :]):
                with path.open("r+b") as f:
                    f.truncate(good_bytes)
                break
            raise ValueError(f"{path}:{i + 1}: not a JSON line ({err}); the run folder is damaged") from err
        finished[str(rec["episode_id"])] = rec
        good_bytes += len(line) + 1
    return finished


def _check_run_folder(out: Path, identity: dict[str, Any]) -> None:
    """Refuse to resume into a folder made by a different config (results would mix)."""
    marker = out / "run.json"
    if marker.is_file():
        previous = json.loads(marker.read_text())
        if previous.get("config_hash") != identity["config_hash"]:
            raise ValueError(
                f"{out} holds a run with a different config (hash {previous.get('config_hash')} vs "
                f"{identity['config_hash']}); choose another out= or delete the folder"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(identity, indent=2))
        os.replace(tmp, marker)


def _append_line(f: Any, record: dict[str, Any]) -> None:
    f.write(json.dumps(record) + "\n")
    f.flush()
    os.fsync(f.fileno())


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run the evaluation ``cfg`` describes (see ``configs/eval.yaml``) and write the results folder.

    Returns the contents of ``metrics.json``.
    """
    task = get_task(str(cfg.task.get("kind", "street")))
    data_dir = task.resolve_data_dir(cfg)
    env = task.make_env(cfg, data_dir)
    agent = create(str(cfg.agent.name), cfg.agent, num_actions=int(env.action_space.n))
    todo = list(task.episodes(env))
    if cfg.limit is not None:
        todo = todo[: int(cfg.limit)]
    resolved = to_container(cfg)
    resolved["data_dir"] = str(data_dir)
    out = Path(str(cfg.out))
    _check_run_folder(out, {"config_hash": config_hash(resolved), "config": resolved})
    log = out / "episodes.jsonl"
    finished = read_finished(log)
    remaining = [ep for ep in todo if ep.episode_id not in finished]
    with log.open("a", encoding="utf-8") as f, tqdm(
        total=len(todo), initial=len(todo) - len(remaining), desc=f"{cfg.agent.name} on {cfg.task.name}/{cfg.split}",
        unit="ep", disable=not cfg.progress,
    ) as bar:
        for ep in remaining:
            record = {"episode_id": ep.episode_id, **rollout(task, env, agent, ep, episode_seed(int(cfg.seed), ep.episode_id))}
            _append_line(f, record)
            finished[ep.episode_id] = record
            bar.update()
    records = [finished[ep.episode_id] for ep in todo]
    per_episode = {k: np.array([r["metrics"][k] for r in records], dtype=np.float64) for k in task.metric_keys}
    metrics: dict[str, Any] = aggregate(per_episode) if records else {"num_episodes": 0}
    metrics.update({"seed": int(cfg.seed), "config": resolved})
    _write_json(out / "metrics.json", metrics)
    task.write_outputs(out, env, todo, records, metrics)
    return metrics


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
