"""Human-readable outputs of a run: a Markdown report with the metrics table and trajectory plots, and
the figures the HTML report (:mod:`vlnkit.eval.html_report`) embeds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from vlnkit.envs.datasets import StreetEpisode  # noqa: E402
from vlnkit.envs.street.graph import StreetGraph  # noqa: E402

TABLE_COLUMNS = (
    ("task_completion", "TC", 100.0),
    ("shortest_path_distance", "SPD", 1.0),
    ("sed", "SED", 100.0),
    ("ndtw_street", "nDTW (street)", 100.0),
    ("ndtw", "nDTW", 100.0),
    ("sdtw", "sDTW", 100.0),
    ("cls", "CLS", 100.0),
    ("kpa", "KPA", 100.0),
    ("path_length", "length (m)", 1.0),
    ("steps", "steps", 1.0),
)


def _cell(value: Any, scale: float) -> str:
    """A table cell: the value times ``scale`` to two decimals, ``-`` where there is none."""
    return "-" if value is None or np.isnan(float(value)) else f"{float(value) * scale:.2f}"


def privileged_cell(metrics: Mapping[str, Any]) -> str:
    """What a run's ``privileged`` entry says, for a table: ``no``, ``yes: ...``, or ``?`` for runs made
    before it was recorded."""
    if "privileged" not in metrics:
        return "?"
    used = list(metrics["privileged"])
    return "yes: " + ", ".join(used) if used else "no"


def metrics_table(
    rows: Mapping[str, Mapping[str, Any]], columns: Sequence[tuple[str, str, float]] = TABLE_COLUMNS
) -> str:
    """A Markdown table, one row per named run; ``columns`` are ``(metric key, label, scale)`` (the street
    columns by default, where fractions are shown as percentages like the papers). The last columns count
    the episodes and those that failed (scored as stopped at their start), and say whether the run used
    privileged information (:func:`privileged_cell`)."""
    header = "| run | " + " | ".join(label for _, label, _ in columns) + " | episodes | failed | privileged |"
    lines = [header, "|" + "---|" * (len(columns) + 4)]
    for name, m in rows.items():
        cells = [_cell(m.get(key), scale) for key, _, scale in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {int(m['num_episodes'])} | {int(m.get('num_failed', 0))} "
                     f"| {privileged_cell(m)} |")
    return "\n".join(lines)


def plot_trajectories(
    path: Path | BinaryIO, graph: StreetGraph, episodes: Sequence[StreetEpisode], predicted: Sequence[Sequence[str]]
) -> None:
    """Draw each episode's gold (green) and predicted (red) route over the street map, one panel each,
    as a PNG written to ``path`` (a file name or a binary file object)."""
    n = len(episodes)
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 6 * rows), squeeze=False)
    xy = graph.xy
    segments = np.stack([xy[graph.link_src], xy[graph.out_dst]], axis=1)
    for ax, ep, pred in zip(axes.flat, episodes, predicted):
        gold = xy[[graph.index[p] for p in ep.route]]
        route = xy[[graph.index[p] for p in pred]]
        pad = 60.0
        lo = np.minimum(gold.min(0), route.min(0)) - pad
        hi = np.maximum(gold.max(0), route.max(0)) + pad
        ax.add_collection(LineCollection(segments, colors="0.8", linewidths=0.6))
        ax.plot(gold[:, 0], gold[:, 1], "-", color="tab:green", lw=3, alpha=0.7, label="gold")
        ax.plot(route[:, 0], route[:, 1], "-", color="tab:red", lw=1.5, label="predicted")
        ax.plot(*gold[0], "o", color="black", label="start")
        ax.plot(*gold[-1], "*", color="tab:green", ms=14, label="goal")
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
        ax.set_title(f"episode {ep.episode_id}")
        ax.set_xlabel("east (m)")
        ax.set_ylabel("north (m)")
        ax.legend(loc="best", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80, format="png")
    plt.close(fig)


def plot_distributions(path: Path | BinaryIO, per_episode: Mapping[str, Sequence[float]], bins: int = 20) -> None:
    """Histogram of each per-episode metric, one panel each, as a PNG written to ``path`` (a file name or a
    binary file object). Non-finite values (an unreachable goal's infinite SPD) are left out and counted
    in the panel's title."""
    names = list(per_episode)
    cols = min(max(len(names), 1), 3)
    rows = max((len(names) + cols - 1) // cols, 1)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        values = np.asarray(per_episode[name], dtype=np.float64)
        finite = values[np.isfinite(values)]
        ax.hist(finite, bins=bins, color="tab:blue", alpha=0.8)
        dropped = len(values) - len(finite)
        ax.set_title(name + (f" ({dropped} non-finite left out)" if dropped else ""), fontsize=9)
        ax.set_ylabel("episodes")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80, format="png")
    plt.close(fig)


def write_report(
    out: Path,
    metrics: Mapping[str, Any],
    graph: StreetGraph,
    episodes: Sequence[StreetEpisode],
    records: Sequence[Mapping[str, Any]],
    num_plots: int = 4,
) -> None:
    """Write ``report.md`` (metrics table, config) and ``trajectories.png`` into ``out``."""
    cfg = metrics.get("config", {})
    name = f"{cfg.get('agent', {}).get('name', 'agent')} on {cfg.get('task', {}).get('name', 'task')}/{cfg.get('split', '')}"
    lines = [f"# Evaluation: {name}", "", metrics_table({name: metrics}), ""]
    if records and num_plots > 0:
        k = min(num_plots, len(records))
        plot_trajectories(out / "trajectories.png", graph, episodes[:k], [r["route_panoids"] for r in records[:k]])
        lines += ["## Trajectories", "", "![trajectories](trajectories.png)", ""]
    lines += [f"Seed {metrics.get('seed')}; data from `{cfg.get('data_dir')}`.", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
