"""Evaluation of street-graph tasks (Touchdown, Map2Seq, the synthetic city) for the runner."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium
from omegaconf import DictConfig

from vlnkit.envs.datasets import DatasetFormatError, StreetEpisode, write_submission
from vlnkit.envs.street.env import StreetEnv
from vlnkit.eval.metrics import street_metrics
from vlnkit.eval.report import write_report

ENV_IDS = {"touchdown": "vlnkit/Touchdown-v0", "map2seq": "vlnkit/Map2Seq-v0"}


class StreetTask:
    """Street navigation: routes of panoids, the street metrics, JSON-lines submissions."""

    metric_keys = (
        "task_completion", "shortest_path_distance", "sed", "ndtw", "ndtw_street", "sdtw", "sdtw_street", "cls",
        "kpa", "path_length", "steps",
    )

    def resolve_data_dir(self, cfg: DictConfig) -> Path:
        """``cfg.data_dir``, or the built-in synthetic city (``task.city_seed``, ``task.city_size``)."""
        if cfg.data_dir is not None:
            return Path(str(cfg.data_dir)).expanduser()
        from vlnkit.envs.synth import default_city

        return default_city(seed=int(cfg.task.get("city_seed", 0)), size=str(cfg.task.get("city_size", "small")))

    def make_env(self, cfg: DictConfig, data_dir: Path) -> StreetEnv:
        """The street environment the task config describes; with ``perception=learned`` its panorama is the
        trained readout on pixels (:func:`vlnkit.perception.sources.street_perception_source`)."""
        task = cfg.task
        paths = dict(task.get("panorama_paths") or {})
        perception = cfg.get("perception") or {"mode": "gt"}
        panorama: Any = task.panorama
        if perception.get("mode") == "learned":
            from vlnkit.perception.sources import street_perception_source

            panorama, paths = street_perception_source(perception, data_dir, paths), {}
        elif perception.get("mode") != "gt":
            raise ValueError(f"perception.mode must be gt or learned, got {perception.get('mode')!r}")
        env = gymnasium.make(
            ENV_IDS[task.env_task],
            data_dir=data_dir,
            split=cfg.split,
            semantics=task.semantics,
            max_steps=int(task.max_steps),
            steps_per_node=task.get("steps_per_node"),
            panorama=panorama,
            episode_kinds=task.episode_kinds,
            on_invalid_route=task.on_invalid_route,
            pose_noise=float(task.get("pose_noise", 0.0)),
            odometry_drift=float(task.get("odometry_drift", 0.0)),
            **paths,
        )
        return env.unwrapped

    def episodes(self, env: StreetEnv) -> Sequence[StreetEpisode]:
        """The environment's episodes."""
        return env.episodes

    unscored_keys = ("steps",)
    """Metrics a submission file cannot give (it holds the route, not the actions)."""

    def submission_traces(self, path: Path, env: StreetEnv,
                          episodes: Sequence[StreetEpisode]) -> dict[str, tuple[list[str], list[int]]]:
        """Read a street submission (JSON lines with ``route_id`` or ``id`` and ``route_panoids``, as
        :func:`~vlnkit.envs.datasets.write_submission` writes it) into each episode's trace, by episode id.
        Duplicate, unknown and missing episodes and panoids outside the graph are errors."""
        by_key = {("route_id" if ep.kind == "touchdown" else "id", str(ep.to_record()[
            "route_id" if ep.kind == "touchdown" else "id"])): ep for ep in episodes}
        traces: dict[str, tuple[list[str], list[int]]] = {}
        first_line: dict[str, int] = {}
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except ValueError as err:
                raise DatasetFormatError(path, number, None, f"not a JSON line ({err})") from None
            key = next((k for k in ("route_id", "id") if isinstance(row, dict) and k in row), None)
            if key is None:
                raise DatasetFormatError(path, number, "route_id", "missing: expected route_id (Touchdown) or id (Map2Seq)")
            episode = by_key.get((key, str(row[key])))
            if episode is None:
                raise DatasetFormatError(path, number, key, f"{row[key]!r} is not an episode of the split")
            route = row.get("route_panoids")
            if not isinstance(route, list) or not route or not all(isinstance(p, str) for p in route):
                raise DatasetFormatError(path, number, "route_panoids", "expected a non-empty list of panoid strings")
            outside = [p for p in route if p not in env.graph.index]
            if outside:
                raise DatasetFormatError(path, number, "route_panoids", f"panoids not in the graph: {outside[:3]}")
            if episode.episode_id in traces:
                raise DatasetFormatError(path, number, key, f"{row[key]!r} again (first on line "
                                         f"{first_line[episode.episode_id]})")
            first_line[episode.episode_id] = number
            traces[episode.episode_id] = (route, [])
        missing = [ep.episode_id for ep in episodes if ep.episode_id not in traces]
        if missing:
            raise DatasetFormatError(path, None, None, f"{len(missing)} of {len(episodes)} episodes of the split have "
                                     f"no row, e.g. {missing[:3]}")
        return traces

    def trace(self, info: dict[str, Any]) -> str:
        """The panoid the agent stands on."""
        return info["panoid"]

    def finish(self, env: StreetEnv, episode: StreetEpisode, trace: list[str], actions: list[int]) -> dict[str, Any]:
        """The visited route (consecutive duplicates removed), the actions and the street metrics; for records
        that say what the episode needs remembered (the synthetic city's ``memory`` field), ``memory_kind``
        (``plain``, ``count``, ``return`` or ``loop``) and ``memory_gap``, which the results break down by."""
        route = [p for i, p in enumerate(trace) if i == 0 or p != trace[i - 1]]
        index = env.graph.index
        per = street_metrics(env.graph, [[index[p] for p in route]], [[index[p] for p in episode.route]], [len(actions)])
        out: dict[str, Any] = {"kind": episode.kind}
        if "memory" in episode.record:
            out["memory_kind"] = episode.record["memory"] or "plain"
            out["memory_gap"] = episode.record.get("memory_gap")
        return {
            **out,
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
