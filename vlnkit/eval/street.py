"""Evaluation of street-graph tasks (Touchdown, Map2Seq, the synthetic city) for the runner."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium
from omegaconf import DictConfig

from vlnkit.envs.datasets import StreetEpisode, write_submission
from vlnkit.envs.street.env import StreetEnv
from vlnkit.eval.metrics import street_metrics
from vlnkit.eval.report import write_report

ENV_IDS = {"touchdown": "vlnkit/Touchdown-v0", "map2seq": "vlnkit/Map2Seq-v0"}


class StreetTask:
    """Street navigation: routes of panoids, the street metrics, JSON-lines submissions."""

    metric_keys = (
        "task_completion", "shortest_path_distance", "sed", "ndtw", "ndtw_street", "sdtw", "sdtw_street", "kpa",
        "path_length", "steps",
    )

    def resolve_data_dir(self, cfg: DictConfig) -> Path:
        """``cfg.data_dir``, or the built-in synthetic city (``task.city_seed``, ``task.city_size``)."""
        if cfg.data_dir is not None:
            return Path(str(cfg.data_dir)).expanduser()
        from vlnkit.envs.synth import default_city

        return default_city(seed=int(cfg.task.get("city_seed", 0)), size=str(cfg.task.get("city_size", "small")))

    def make_env(self, cfg: DictConfig, data_dir: Path) -> StreetEnv:
        """The street environment the task config describes."""
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
            **dict(task.get("panorama_paths") or {}),
        )
        return env.unwrapped

    def episodes(self, env: StreetEnv) -> Sequence[StreetEpisode]:
        """The environment's episodes."""
        return env.episodes

    def trace(self, info: dict[str, Any]) -> str:
        """The panoid the agent stands on."""
        return info["panoid"]

    def finish(self, env: StreetEnv, episode: StreetEpisode, trace: list[str], actions: list[int]) -> dict[str, Any]:
        """The visited route (consecutive duplicates removed), the actions and the street metrics."""
        route = [p for i, p in enumerate(trace) if i == 0 or p != trace[i - 1]]
        index = env.graph.index
        per = street_metrics(env.graph, [[index[p] for p in route]], [[index[p] for p in episode.route]], [len(actions)])
        return {
            "kind": episode.kind,
            "route_panoids": route,
            "actions": actions,
            "metrics": {k: float(per[k][0]) for k in self.metric_keys},
        }

    def write_outputs(self, out: Path, env: StreetEnv, episodes: Sequence[StreetEpisode],
                      records: Sequence[dict[str, Any]], metrics: dict[str, Any]) -> None:
        """``submission.jsonl`` in the street leaderboard format, ``report.md`` with trajectories."""
        write_submission(episodes, [r["route_panoids"] for r in records], out / "submission.jsonl")
        num_plots = int(metrics.get("config", {}).get("num_plots", 4))
        write_report(out, metrics, env.graph, episodes, records, num_plots=num_plots)
