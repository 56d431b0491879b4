"""Evaluation of continuous navigation (R2R-CE, RxR-CE, the synthetic houses) for the runner.

Each step's ``info`` is traced as the agent's position, heading and collision flag. A finished episode is
scored with :func:`~vlnkit.eval.metrics.continuous_metrics`: geodesic distances come from the
environment's backend (the same floor the agent walked on), the reference path of nDTW and sDTW is the
episode's ground-truth locations (``{split}_gt.json.gz``, required, as in VLN-CE) or, only with
``task.ndtw_reference=sparse``, its sparse ``reference_path`` (the report then says so). Test splits have
no goals: their success-type metrics are ``nan``.

Outputs besides the runner's: the leaderboard submission (R2R-CE ``submission.json``
``{episode_id: [{"position", "heading", "stop"}, ...]}``, or RxR-CE ``submission.jsonl`` with
``instruction_id`` and ``path``, the positions that changed, as VLN-CE's writer keeps them),
``report.md`` with the metrics table, and top-down maps ``maps/<episode_id>.png`` of the first episodes
(navigable floor, reference path, predicted path).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from omegaconf import DictConfig

from vlnkit.envs.continuous import ENV_ID
from vlnkit.envs.continuous.env import MOVE_FORWARD, STOP, VLNCEEnv
from vlnkit.envs.datasets import DatasetFormatError, VLNCEEpisode, write_r2r_ce_submission, write_rxr_ce_submission
from vlnkit.eval.metrics import continuous_metrics
from vlnkit.eval.report import metrics_table

TABLE_COLUMNS = (
    ("path_length", "TL (m)", 1.0),
    ("navigation_error", "NE (m)", 1.0),
    ("oracle_success", "OSR (%)", 100.0),
    ("success", "SR (%)", 100.0),
    ("spl", "SPL (%)", 100.0),
    ("ndtw", "nDTW (%)", 100.0),
    ("sdtw", "sDTW (%)", 100.0),
    ("cls", "CLS (%)", 100.0),
    ("steps", "steps", 1.0),
    ("collisions", "collisions", 1.0),
)
"""Columns of the human-facing tables, in the order VLN-CE papers print them: ``(metric key, header with
its unit, scale)``. Rates are shown as percentages, as the papers and the street tables show them;
``metrics.json`` and ``episodes.jsonl`` keep the raw fractions and metres."""

TABLE_CAPTION = "TL and NE in metres; OSR, SR, SPL, nDTW and sDTW in % (metrics.json holds them as fractions)."
"""The line under the report's table that spells out its units."""

SPARSE_REFERENCE_NOTE = ("nDTW and sDTW are scored against the episodes' sparse reference_path "
                         "(task.ndtw_reference=sparse), not the ground-truth paths: "
                         "not comparable to published numbers.")
"""The report's line for a run scored against the sparse reference."""


def continuous_metrics_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table of continuous-task metrics, one row per named run, in the units of
    :data:`TABLE_COLUMNS` (each header names its unit)."""
    return metrics_table(rows, TABLE_COLUMNS)


def _json_row(path: Path, line: int | None, text: str) -> Any:
    """Parse one JSON document of a submission, or raise :class:`DatasetFormatError` naming it."""
    try:
        return json.loads(text)
    except ValueError as err:
        raise DatasetFormatError(path, line, None, f"not JSON ({err})") from None


def _scenes_dir(cfg: DictConfig) -> str | None:
    value = cfg.get("scenes_dir") or cfg.task.get("scenes_dir")
    return None if value is None else str(value)


class ContinuousTask:
    """VLN-CE: positions on a scene's floor, the continuous metrics, R2R-CE/RxR-CE submissions."""

    metric_keys = (
        "success", "spl", "navigation_error", "oracle_success", "ndtw", "sdtw", "cls", "path_length", "steps",
        "collisions",
    )

    def resolve_data_dir(self, cfg: DictConfig) -> Path:
        """``cfg.data_dir``, or the built-in synthetic houses (``task.houses_seed``, ``task.houses_count``);
        a task naming a ``release`` (RxR-CE) has no built-in data and needs ``data_dir``."""
        if cfg.data_dir is not None:
            return Path(str(cfg.data_dir)).expanduser()
        release = cfg.task.get("release")
        if release is not None:
            from vlnkit.eval.runner import ConfigError

            raise ConfigError(f"task={cfg.task.name} has no built-in data: set data_dir=PATH (the {release} folder) "
                              "and scenes_dir=PATH (the scenes root holding mp3d/<scan>/<scan>.glb)")
        from vlnkit.envs.synth.houses import default_houses

        return default_houses(seed=int(cfg.task.get("houses_seed", 0)), count=int(cfg.task.get("houses_count", 4)))

    def make_env(self, cfg: DictConfig, data_dir: Path) -> VLNCEEnv:
        """The VLN-CE environment the task config describes (scenes root: top-level ``scenes_dir``, else
        ``task.scenes_dir``, else the release's own ``scenes/`` folder)."""
        task = cfg.task
        if (cfg.get("perception") or {}).get("mode", "gt") != "gt":
            raise ValueError("perception=learned is for the street tasks so far; VLN-CE agents read the simulator's "
                             "observations (perception=gt)")
        env = gymnasium.make(
            ENV_ID,
            data_dir=data_dir,
            split=cfg.split,
            scenes_dir=_scenes_dir(cfg),
            split_suffix=str(task.get("split_suffix", "")),
            require_vocab=bool(task.get("require_vocab", True)),
            forward_step=float(task.forward_step),
            turn_angle=float(task.turn_angle),
            look_angle=float(task.get("look_angle", 0.0)),
            sliding=bool(task.sliding),
            rgb_size=tuple(task.rgb.size),
            rgb_hfov=float(task.rgb.hfov),
            depth_size=tuple(task.depth.size),
            depth_hfov=float(task.depth.hfov),
            depth_range=(float(task.depth.min), float(task.depth.max)),
            normalize_depth=bool(task.depth.normalize),
            sensor_height=float(task.get("sensor_height", 1.25)),
            semantic=bool(task.get("semantic", False)),
            panorama=bool(task.get("panorama", False)),
            success_distance=float(task.success_distance),
            max_steps=int(task.max_steps),
            go_toward_point=bool(task.get("go_toward_point", False)),
            max_point_distance=float(task.get("max_point_distance", 5.0)),
            agent_radius=float(task.get("agent_radius", 0.1)),
            agent_height=float(task.get("agent_height", 1.5)),
            ndtw_reference=str(task.get("ndtw_reference", "gt")),
            backend=str(task.get("backend", "mesh")),
        )
        return env.unwrapped

    def episodes(self, env: VLNCEEnv) -> Sequence[VLNCEEpisode]:
        """The environment's episodes."""
        return env.episodes

    unscored_keys = ("steps", "collisions")
    """Metrics a submission file cannot give (it holds positions, not actions or collisions)."""

    def submission_traces(self, path: Path, env: VLNCEEnv,
                          episodes: Sequence[VLNCEEpisode]) -> dict[str, tuple[list[dict[str, Any]], list[int]]]:
        """Read an R2R-CE submission (``{episode_id: [{"position", "heading", "stop"}, ...]}``) or an RxR-CE
        one (JSON lines ``{"instruction_id", "path"}``, the agent taken as stopped at the path's end) into
        each episode's trace and its STOP, by episode id. Unknown and missing episodes are errors."""
        rxr = path.suffix == ".jsonl"
        if rxr:
            rows = {}
            for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if text.strip():
                    row = _json_row(path, number, text)
                    if "instruction_id" not in row or "path" not in row:
                        raise DatasetFormatError(path, number, "instruction_id", "expected instruction_id and path")
                    if str(row["instruction_id"]) in rows:
                        raise DatasetFormatError(path, number, "instruction_id", f"{row['instruction_id']!r} again")
                    rows[str(row["instruction_id"])] = [{"position": p, "heading": 0.0, "stop": True} for p in row["path"]]
            by_key = {str(ep.instruction_id or ep.episode_id): ep.episode_id for ep in episodes}
        else:
            rows = _json_row(path, None, path.read_text(encoding="utf-8"))
            by_key = {ep.episode_id: ep.episode_id for ep in episodes}
        unknown = [key for key in rows if key not in by_key]
        if unknown:
            raise DatasetFormatError(path, None, None, f"{len(unknown)} entries are not episodes of the split, e.g. {unknown[:3]}")
        traces = {}
        for key, steps in rows.items():
            if not isinstance(steps, list) or not steps or not all(
                    isinstance(s, dict) and isinstance(s.get("position"), list) and len(s["position"]) == 3 for s in steps):
                raise DatasetFormatError(path, None, str(key), "expected a non-empty list of steps with 3-number positions")
            trace = [{"position": [float(x) for x in s["position"]], "heading": float(s.get("heading", 0.0)),
                      "collided": False} for s in steps]
            stopped = bool(steps[-1].get("stop"))
            actions = [MOVE_FORWARD] * (len(trace) - 1 - stopped) + [STOP] * stopped
            traces[by_key[key]] = (trace, actions)
        missing = [ep.episode_id for ep in episodes if ep.episode_id not in traces]
        if missing:
            raise DatasetFormatError(path, None, None, f"{len(missing)} of {len(episodes)} episodes of the split have "
                                     f"no entry, e.g. {missing[:3]}")
        return traces

    def trace(self, info: dict[str, Any]) -> dict[str, Any]:
        """The agent's position, heading and whether the step's motion was blocked."""
        return {"position": info["position"], "heading": info["heading"], "collided": info["collided"]}

    def finish(self, env: VLNCEEnv, episode: VLNCEEpisode, trace: list[dict[str, Any]], actions: list[int]) -> dict[str, Any]:
        """The trajectory, actions and metrics of a finished episode."""
        positions = np.array([t["position"] for t in trace], dtype=np.float64)
        stopped = bool(actions) and actions[-1] == STOP
        collisions = sum(bool(t["collided"]) for t in trace[1:])
        if episode.goals:
            goal_d = np.array([env.distance_to_goal(p) for p in positions])
            shortest = goal_d[0]
        else:
            goal_d = np.full(len(positions), math.nan)
            shortest = math.nan
        reference = env.reference_path(episode)
        per = continuous_metrics([positions], [goal_d], [reference], [shortest], [stopped], [len(actions)], [collisions],
                                 success_distance=env.success_distance)
        return {
            "scene_id": episode.scene_id,
            "trajectory": positions.round(4).tolist(),
            "headings": [round(float(t["heading"]), 4) for t in trace],
            "actions": actions,
            "metrics": {k: float(per[k][0]) for k in self.metric_keys},
        }

    def write_outputs(self, out: Path, env: VLNCEEnv, episodes: Sequence[VLNCEEpisode],
                      records: Sequence[dict[str, Any]], metrics: dict[str, Any]) -> None:
        """The leaderboard submission, ``report.md`` and the top-down maps."""
        cfg = metrics.get("config", {})
        if cfg.get("task", {}).get("dataset", "r2r") == "rxr":
            write_rxr_ce_submission([(ep.instruction_id or ep.episode_id, changed_positions(r["trajectory"]))
                                     for ep, r in zip(episodes, records)], out / "submission.jsonl")
        else:
            submission = {}
            for ep, r in zip(episodes, records):
                last = len(r["trajectory"]) - 1
                submission[ep.episode_id] = [
                    {"position": p, "heading": h, "stop": bool(r.get("stopped")) and i == last}
                    for i, (p, h) in enumerate(zip(r["trajectory"], r["headings"]))
                ]
            write_r2r_ce_submission(submission, out / "submission.json")
        write_continuous_report(out, env, episodes, records, metrics, num_plots=int(cfg.get("num_plots", 4)))


def changed_positions(trajectory: Sequence[Sequence[float]]) -> list[Sequence[float]]:
    """``trajectory`` without consecutive repeats of a position (turns, looks, blocked steps): the path
    VLN-CE's RxR-CE writer submits."""
    path = list(trajectory[:1])
    for position in trajectory[1:]:
        if list(position) != list(path[-1]):
            path.append(position)
    return path


def plot_topdown(path: Path, env: VLNCEEnv, episode: VLNCEEpisode, record: Mapping[str, Any]) -> None:
    """Draw one episode on its scene's navigable floor seen from above: the reference path (green),
    the predicted path (red), the start, the goal and its success radius."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env.backend.load_scene(env.scene_path(episode))
    occupancy, extent = env.backend.topdown_map(float(episode.start_position[1]))
    reference = env.reference_path(episode)
    if reference is None:
        reference = np.array([episode.start_position])
    pred = np.array(record["trajectory"])
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(np.where(occupancy, 0.93, 0.35), cmap="gray", vmin=0.0, vmax=1.0, origin="upper",
              extent=(extent[0], extent[2], extent[3], extent[1]), interpolation="nearest")
    ax.plot(reference[:, 0], reference[:, 2], "-", color="tab:green", lw=3, alpha=0.7, label="reference")
    ax.plot(pred[:, 0], pred[:, 2], "-", color="tab:red", lw=1.5, label="predicted")
    ax.plot(pred[0, 0], pred[0, 2], "o", color="black", label="start")
    for goal in episode.goal_positions:
        ax.plot(goal[0], goal[2], "*", color="tab:green", ms=14, label="goal")
        ax.add_patch(plt.Circle((goal[0], goal[2]), env.success_distance, color="tab:green", fill=False, ls="--"))
    lo = np.minimum(reference.min(0), pred.min(0)) - 3.5
    hi = np.maximum(reference.max(0), pred.max(0)) + 3.5
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(hi[2], lo[2])
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("z (m)")
    m = record["metrics"]
    ax.set_title(f"episode {episode.episode_id}: SR {100 * m['success']:.0f} %, NE {m['navigation_error']:.2f} m",
                 fontsize=10)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_continuous_report(out: Path, env: VLNCEEnv, episodes: Sequence[VLNCEEpisode],
                            records: Sequence[Mapping[str, Any]], metrics: Mapping[str, Any], num_plots: int = 4) -> None:
    """Write ``report.md`` (metrics table, top-down maps of the first ``num_plots`` episodes)."""
    cfg = metrics.get("config", {})
    name = f"{cfg.get('agent', {}).get('name', 'agent')} on {cfg.get('task', {}).get('name', 'task')}/{cfg.get('split', '')}"
    lines = [f"# Evaluation: {name}", "", continuous_metrics_table({name: metrics}), "", TABLE_CAPTION, ""]
    if env.ndtw_reference == "sparse":
        lines += [SPARSE_REFERENCE_NOTE, ""]
    shown = min(num_plots, len(records))
    if shown:
        (out / "maps").mkdir(exist_ok=True)
        lines += ["## Trajectories (top-down)", ""]
        for ep, record in zip(episodes[:shown], records[:shown]):
            plot_topdown(out / "maps" / f"{ep.episode_id}.png", env, ep, record)
            lines += [f"![episode {ep.episode_id}](maps/{ep.episode_id}.png)", ""]
    lines += [f"Seed {metrics.get('seed')}; data from `{cfg.get('data_dir')}`.", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
