"""A ranked table across evaluation runs (``vlnkit leaderboard RUN...``), as Markdown and CSV.

Each run folder's ``metrics.json`` gives one row. Runs are ranked, best first, by the headline metrics
of their task kind, whichever the runs report: success rate, then SPL, then navigation error (lower is
better) for continuous runs; task completion, then SPD (lower is better) for street runs. Runs of
different task kinds, or of one kind on different datasets (dataset hashes differ), are not comparable:
each kind gets its own table, and a table whose runs differ in dataset hash says so.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vlnkit.eval.report import privileged_cell

RANKING = (
    ("success", True), ("spl", True), ("navigation_error", False), ("task_completion", True),
    ("shortest_path_distance", False),
)
"""Metrics that order runs, most important first, with whether higher is better; a run lacking a
metric ranks after every run that has it."""

COLUMNS = (
    ("success", "SR (%)", 100.0), ("spl", "SPL (%)", 100.0), ("task_completion", "TC (%)", 100.0),
    ("shortest_path_distance", "SPD (hops)", 1.0), ("navigation_error", "NE (m)", 1.0),
    ("oracle_success", "OSR (%)", 100.0), ("sed", "SED (%)", 100.0), ("ndtw", "nDTW (%)", 100.0),
    ("sdtw", "sDTW (%)", 100.0), ("cls", "CLS (%)", 100.0), ("ndtw_street", "nDTW street (%)", 100.0),
    ("sdtw_street", "sDTW street (%)", 100.0), ("kpa", "KPA (%)", 100.0), ("path_length", "length (m)", 1.0),
    ("steps", "steps", 1.0), ("collisions", "collisions", 1.0),
)
"""Metric columns shown when some run has them: key, header with its unit, scale (fractions shown as
percentages)."""


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """A run's ``metrics.json`` with its folder under ``run``; a clear error when it has none."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished run folder (no metrics.json)")
    metrics = json.loads(path.read_text())
    metrics["run"] = str(run_dir)
    return metrics


def _kind(metrics: Mapping[str, Any]) -> str:
    """The run's task kind (``street`` for runs made before kinds were recorded)."""
    return str(metrics.get("config", {}).get("task", {}).get("kind", "street"))


def _rank_key(metrics: Mapping[str, Any]) -> tuple[tuple[int, float], ...]:
    """Sort key of a run: per :data:`RANKING` metric, (missing?, value oriented so that smaller is better)."""
    key = []
    for name, higher_better in RANKING:
        value = metrics.get(name)
        if isinstance(value, (int, float)) and value == value:
            key.append((0, -float(value) if higher_better else float(value)))
        else:
            key.append((1, 0.0))
    return tuple(key)


def rank_runs(runs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """``runs`` (``metrics.json`` contents) sorted best first by :data:`RANKING`, stable for ties."""
    return sorted(runs, key=_rank_key)


def _identity_cells(rank: int, metrics: Mapping[str, Any]) -> list[str]:
    """Rank, run folder, agent, task, split and privileged information used of a row."""
    cfg = metrics.get("config", {})
    return [str(rank), str(metrics["run"]), str(cfg.get("agent", {}).get("name", "")),
            str(cfg.get("task", {}).get("name", "")), str(cfg.get("split", "")), privileged_cell(metrics)]


def _provenance_cells(metrics: Mapping[str, Any], commit_chars: int | None = None) -> list[str]:
    """Episodes, failures, seed, hashes and git commit (cut to ``commit_chars``) of a row."""
    commit = metrics.get("git_commit") or ""
    return [str(metrics.get("num_episodes", "")), str(metrics.get("num_failed", 0)), str(metrics.get("seed", "")),
            str(metrics.get("config_hash", "")), str(metrics.get("dataset_hash", "")), commit[:commit_chars]]


def markdown_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """The ranked Markdown table of runs of one task kind; fractions shown as percentages."""
    columns = [(key, label, scale) for key, label, scale in COLUMNS if any(key in r for r in runs)]
    header = ["rank", "run", "agent", "task", "split", "privileged", *(label for _, label, _ in columns), "episodes", "failed",
              "seed", "config", "dataset", "commit"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, metrics in enumerate(rank_runs(runs), start=1):
        metric_cells = ["" if metrics.get(key) is None else f"{float(metrics[key]) * scale:.2f}"
                        for key, _, scale in columns]
        cells = [*_identity_cells(rank, metrics), *metric_cells, *_provenance_cells(metrics, commit_chars=10)]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def leaderboard(run_dirs: Sequence[str | Path], out: str | Path | None = None) -> str:
    """Rank the runs in ``run_dirs`` and return the Markdown text: one ranked table per task kind.

    When ``out`` (a folder) is given, also write ``leaderboard.md`` and ``leaderboard.csv`` there. The
    CSV has one row per run, ranked within its ``kind``, with every metric of :data:`COLUMNS` that some
    run reports, at full precision and unscaled (fractions stay in [0, 1]).
    """
    if not run_dirs:
        raise ValueError("leaderboard needs at least one run folder")
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for run_dir in run_dirs:
        metrics = load_run(run_dir)
        by_kind.setdefault(_kind(metrics), []).append(metrics)
    sections = []
    for kind, runs in sorted(by_kind.items()):
        section = [f"## {kind} runs", "", markdown_table(runs)]
        datasets = sorted({str(r.get("dataset_hash")) for r in runs})
        if len(datasets) > 1:
            section += ["", f"Note: these runs used different datasets ({', '.join(datasets)}); their scores are "
                            "not directly comparable."]
        sections.append("\n".join(section))
    markdown = "# Leaderboard\n\n" + "\n\n".join(sections) + "\n"
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "leaderboard.md").write_text(markdown, encoding="utf-8")
        (folder / "leaderboard.csv").write_text(_csv(by_kind), encoding="utf-8")
    return markdown


def _csv(by_kind: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """The CSV text of :func:`leaderboard`."""
    everyone = [r for runs in by_kind.values() for r in runs]
    keys = [key for key, _, _ in COLUMNS if any(key in r for r in everyone)]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["kind", "rank", "run", "agent", "task", "split", "privileged", *keys, "num_episodes", "num_failed", "seed",
                     "config_hash", "dataset_hash", "git_commit"])
    for kind, runs in sorted(by_kind.items()):
        for rank, metrics in enumerate(rank_runs(runs), start=1):
            values = ["" if metrics.get(key) is None else repr(float(metrics[key])) for key in keys]
            writer.writerow([kind, *_identity_cells(rank, metrics), *values, *_provenance_cells(metrics)])
    return buffer.getvalue()
