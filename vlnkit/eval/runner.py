"""Rollouts and the results folder of an evaluation run.

``evaluate(cfg)`` runs one agent over the episodes of a split and writes, under ``cfg.out``:

- ``episodes.jsonl``: one line per finished episode (id, predicted route, actions, its metrics),
  appended, flushed and fsynced as each episode ends, so an interrupted run resumes where it stopped
  without losing or duplicating an episode;
- ``metrics.json``: the means over episodes, ``num_episodes``, the resolved config and the seed;
- ``submission.jsonl``: the predicted routes in the street leaderboard format (``route_id`` or ``id``
  with ``route_panoids``);
- ``report.md`` and ``trajectories.png``: the table and a few trajectories drawn on the map.

Each episode's randomness comes from a seed derived from the run seed and the episode id, so results
do not depend on the order in which episodes run.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

import vlnkit  # noqa: F401  (registers the environments)
from vlnkit.agents import Agent, create
from vlnkit.config import config_hash, to_container
from vlnkit.envs.datasets import StreetEpisode, write_submission
from vlnkit.envs.street.env import StreetEnv
from vlnkit.envs.street.navigator import StreetNavigator
from vlnkit.eval.metrics import aggregate, street_metrics
from vlnkit.eval.report import write_report

ENV_IDS = {"touchdown": "vlnkit/Touchdown-v0", "map2seq": "vlnkit/Map2Seq-v0"}
METRIC_KEYS = (
    "task_completion", "shortest_path_distance", "sed", "ndtw", "ndtw_street", "sdtw", "kpa", "path_length", "steps",
)


def episode_seed(seed: int, episode_id: str) -> int:
    """A per-episode seed that depends only on the run seed and the episode id."""
    return zlib.crc32(f"{seed}:{episode_id}".encode()) & 0x7FFFFFFF


def resolve_data_dir(cfg: DictConfig) -> Path:
    """The release folder of a run: ``cfg.data_dir``, or the built-in synthetic city when it is null."""
    if cfg.data_dir is not None:
        return Path(str(cfg.data_dir)).expanduser()
    from vlnkit.envs.synth import default_city

    return default_city(seed=int(cfg.task.get("city_seed", 0)), size=str(cfg.task.get("city_size", "small")))


def make_env(cfg: DictConfig, data_dir: Path, guidance: bool = True) -> StreetEnv:
    """The street environment a run config describes (unwrapped, so the runner can read the route);
    ``guidance`` adds the oracle's privileged hints to ``info``."""
    task = cfg.task
    env = gymnasium.make(
        ENV_IDS[task.env_task],
        data_dir=data_dir,
        split=cfg.split,
        semantics=task.semantics,
        max_steps=int(task.max_steps),
        panorama=task.panorama,
        episode_kinds=task.episode_kinds,
        on_invalid_route=task.on_invalid_route,
        guidance=guidance,
        **dict(task.get("panorama_paths") or {}),
    )
    return env.unwrapped


def rollout(env: StreetEnv, agent: Agent, episode: StreetEpisode, seed: int) -> dict[str, Any]:
    """Run one episode; returns the visited route (panoids, consecutive duplicates removed) and actions."""
    obs, info = env.reset(seed=seed, options={"episode_id": episode.episode_id})
    agent.reset(obs, info, seed)
    route = [info["panoid"]]
    actions: list[int] = []
    done = False
    while not done:
        action = int(agent.act(obs, info if agent.uses_info else None))
        obs, _, terminated, truncated, info = env.step(action)
        actions.append(action)
        if info["panoid"] != route[-1]:
            route.append(info["panoid"])
        done = terminated or truncated
    return {"route_panoids": route, "actions": actions, "stopped": bool(terminated)}


def episode_metrics(env: StreetEnv, episode: StreetEpisode, result: dict[str, Any]) -> dict[str, float]:
    """The street metrics of one finished episode."""
    index = env.graph.index
    per = street_metrics(
        env.graph,
        [[index[p] for p in result["route_panoids"]]],
        [[index[p] for p in episode.route]],
        [len(result["actions"])],
    )
    return {k: float(per[k][0]) for k in METRIC_KEYS}


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


def evaluate(cfg: DictConfig, episodes: Iterable[StreetEpisode] | None = None) -> dict[str, Any]:
    """Run the evaluation ``cfg`` describes (see ``configs/eval.yaml``) and write the results folder.

    Returns the contents of ``metrics.json``.
    """
    data_dir = resolve_data_dir(cfg)
    agent = create(str(cfg.agent.name), cfg.agent, num_actions=StreetNavigator.action_count(cfg.task.semantics))
    env = make_env(cfg, data_dir, guidance=agent.uses_info)
    todo = list(episodes) if episodes is not None else env.episodes
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
            result = rollout(env, agent, ep, episode_seed(int(cfg.seed), ep.episode_id))
            record = {"episode_id": ep.episode_id, "kind": ep.kind, **result, "metrics": episode_metrics(env, ep, result)}
            _append_line(f, record)
            finished[ep.episode_id] = record
            bar.update()
    records = [finished[ep.episode_id] for ep in todo]
    per_episode = {k: np.array([r["metrics"][k] for r in records], dtype=np.float64) for k in METRIC_KEYS}
    metrics: dict[str, Any] = aggregate(per_episode) if records else {"num_episodes": 0}
    metrics.update({"seed": int(cfg.seed), "config": resolved})
    _write_json(out / "metrics.json", metrics)
    write_submission(todo, [r["route_panoids"] for r in records], out / "submission.jsonl")
    write_report(out, metrics, env.graph, todo, records, num_plots=int(cfg.num_plots))
    return metrics


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
