"""A self-contained HTML page for one run folder (``vlnkit report RUN``).

The page needs nothing but itself: styles are inline and every image is embedded as a base64 PNG, so
it can be mailed or attached to a leaderboard submission. It shows

- the run's identity: agent, task, split, seed, config and dataset hashes, git commit, package versions;
- the metrics table (means over episodes) and the failed episodes with their errors;
- histograms of every per-episode metric (from ``episodes.jsonl``);
- every figure the run wrote into its folder: the trajectories drawn on the street map by
  :func:`vlnkit.eval.report.plot_trajectories` (``trajectories.png``), a task kind's own maps (the
  continuous task's top-down house maps under ``maps/``) and, for memory agents, whatever they saved
  under ``memory/`` (the topology graph and the like);
- the resolved config.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vlnkit.eval.leaderboard import COLUMNS
from vlnkit.eval.report import privileged_cell
from vlnkit.eval.report import plot_distributions

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f0f0f0; }
td.text, th.text { text-align: left; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
"""


def _png_data_uri(data: bytes) -> str:
    """PNG bytes as a ``data:`` URI that an ``<img>`` shows without any other file."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure(data: bytes, caption: str) -> str:
    """An embedded PNG with its caption."""
    alt = html.escape(caption, quote=True)
    return (f'<figure><img src="{_png_data_uri(data)}" alt="{alt}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(header: Sequence[str] | None, rows: Sequence[Sequence[Any]], text_columns: int = 1) -> str:
    """An HTML table (escaped); the first ``text_columns`` columns are left-aligned text."""
    def cell(tag: str, i: int, value: Any) -> str:
        cls = ' class="text"' if i < text_columns else ""
        return f"<{tag}{cls}>{html.escape(str(value))}</{tag}>"

    head = ""
    if header is not None:
        head = "<thead><tr>" + "".join(cell("th", i, h) for i, h in enumerate(header)) + "</tr></thead>"
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """The episode records of ``episodes.jsonl`` (a torn last line is skipped, the file left as it is)."""
    path = run_dir / "episodes.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _metrics_rows(metrics: Mapping[str, Any], keys: Sequence[str]) -> list[tuple[str, str]]:
    """(label with its unit, value) of each mean metric, percentages for fractions as in the papers' tables."""
    known = {key: (label, scale) for key, label, scale in COLUMNS}
    rows = []
    for key in keys:
        if key not in metrics:
            continue
        label, scale = known.get(key, (key, 1.0))
        rows.append((label, f"{float(metrics[key]) * scale:.2f}"))
    rows.append(("privileged information", privileged_cell(metrics)))
    return rows


def _figure_files(run_dir: Path) -> list[Path]:
    """Every PNG in the run folder: those at its top level first, then those in subfolders, each sorted."""
    found = [p for p in run_dir.rglob("*.png") if p.is_file()]
    return sorted(found, key=lambda p: (len(p.relative_to(run_dir).parts) > 1, str(p.relative_to(run_dir))))


def write_html_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's HTML report (default ``RUN/report.html``) and return its path."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file() and (run_dir / "results.json").is_file():
        return write_experiment_report(run_dir, out)
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished run folder (no metrics.json, nor an experiment's "
                                "results.json)")
    metrics = json.loads(metrics_path.read_text())
    records = read_records(run_dir)
    cfg = metrics.get("config", {})
    title = (f"{cfg.get('agent', {}).get('name', 'agent')} on {cfg.get('task', {}).get('name', 'task')}"
             f"/{cfg.get('split', '')}")
    metric_keys = list(records[0]["metrics"]) if records else [k for k, _, _ in COLUMNS if k in metrics]

    versions = metrics.get("versions") or {}
    identity = [
        ("run folder", str(run_dir)), ("episodes", metrics.get("num_episodes")),
        ("failed", metrics.get("num_failed", 0)),
        ("seed", metrics.get("seed")), ("runner", f"{cfg.get('runner', 'inprocess')} x {cfg.get('workers', 1)}"),
        ("config hash", metrics.get("config_hash")), ("dataset hash", metrics.get("dataset_hash")),
        ("git commit", metrics.get("git_commit")), ("data", cfg.get("data_dir")),
        *((f"{name} version", version) for name, version in versions.items()),
    ]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Evaluation: {html.escape(title)}</h1>",
        _table(None, [(k, "" if v is None else v) for k, v in identity], text_columns=2),
        "<h2>Metrics</h2>",
        _table(["metric", "mean over episodes"], _metrics_rows(metrics, metric_keys)),
    ]
    failed = [r for r in records if r.get("failed")]
    if failed:
        parts += ["<h2>Failed episodes</h2>",
                  "<p>Each is scored as if the agent had stopped at its start, without acting.</p>",
                  _table(["episode", "attempts", "error"],
                         [(r["episode_id"], r.get("attempts", ""), r.get("error", "")) for r in failed],
                         text_columns=3)]
    if records:
        buffer = io.BytesIO()
        plot_distributions(buffer, {k: [r["metrics"][k] for r in records] for k in metric_keys})
        parts += ["<h2>Per-episode distributions</h2>", _figure(buffer.getvalue(), f"{len(records)} episodes")]
    figures = _figure_files(run_dir)
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [_figure(path.read_bytes(), str(path.relative_to(run_dir))) for path in figures]
    parts += ["<h2>Config</h2>", f"<pre>{html.escape(json.dumps(cfg, indent=2))}</pre>", "</body></html>"]
    target = Path(out) if out is not None else run_dir / "report.html"
    target.write_text("\n".join(parts), encoding="utf-8")
    return target


def write_experiment_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """The HTML page of a finished ``vlnkit experiment`` run folder (``results.json``): its identity, every
    result table with its note, every plot and the config; written to ``out`` (default ``RUN/report.html``)."""
    from vlnkit.eval.experiments.runner import format_cell

    run_dir = Path(run_dir)
    done = json.loads((run_dir / "results.json").read_text())
    name = done.get("experiment", "experiment")
    identity = [("run folder", str(run_dir)), ("seed", done.get("seed")), ("device", done.get("device")),
                ("config hash", done.get("config_hash")), ("git commit", done.get("git_commit")),
                *((f"{package} version", version) for package, version in (done.get("versions") or {}).items())]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(name)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Experiment: {html.escape(name)}</h1>",
        _table(None, [(k, "" if v is None else v) for k, v in identity], text_columns=2),
    ]
    for table in done.get("tables", []):
        parts.append(f"<h2>{html.escape(str(table['title']))}</h2>")
        if table.get("note"):
            parts.append(f"<p>{html.escape(str(table['note']))}</p>")
        parts.append(_table(table["header"], [[format_cell(c) for c in row] for row in table["rows"]]))
    figures = _figure_files(run_dir)
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [_figure(path.read_bytes(), str(path.relative_to(run_dir))) for path in figures]
    parts += ["<h2>Config</h2>", f"<pre>{html.escape(json.dumps(done.get('config', {}), indent=2))}</pre>",
              "</body></html>"]
    target = Path(out) if out is not None else run_dir / "report.html"
    target.write_text("\n".join(parts), encoding="utf-8")
    return target
