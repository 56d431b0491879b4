"""The memory ablation study (``vlnkit ablate``): agents x Mem4Nav memory variants and one-parameter sweeps
of the memory's settings, each over several seeds, summarised in one table and one plot.

The study is configured by ``configs/ablate.yaml``. Its ``ablation`` section lists runs the way Hydra's
multirun does: each line of ``grid`` and each entry of ``sweeps`` is a set of command-line overrides in
which comma-separated values sweep (``agent=modular,policy memory=none,stm_only,full``), and every combination
is one row of the table; every row runs once per seed in ``seeds``, with each key of ``seed_keys`` set to
the seed (by default the run seed, the LTM initialisation and the synthetic city, so that the confidence
interval covers different cities' dev splits and not only the randomness of one). The lines are expanded
with Hydra's own override parser and basic sweeper, so the grammar (``range()``, ``choice()``, ``++key``)
is Hydra's. The runs themselves are launched in this process, one :func:`vlnkit.eval.runner.evaluate` call
each, rather than by Hydra's launcher: ``vlnkit`` commands are not ``@hydra.main`` applications, each run
is a resumable results folder that ``evaluate`` already manages (an interrupted study resumes where it
stopped), and the point of the study is the one table aggregated across all runs, which a launcher
scattering jobs into its own output folders would leave to be done afterwards.

Outputs under ``ablation.out``: ``runs/<row>/seed<k>/`` (every run's results folder), ``results.jsonl``
(one line per run, with the agent's own counts ``agent_stats``: for the modular agent which memory part
answered each question and whether it was right), ``ablation.md`` and ``ablation.csv`` (per row and
metric: the mean over seeds and the half-width of its confidence interval, Student's t with ``n - 1``
degrees of freedom; and the paired difference of the first metric to the same agent without memory) and
``ablation.png``. On episodes that say what they need remembered (``memory_kind`` in the run's
``episodes.jsonl``: the synthetic city's ``split=memory``), ``ablation_by_kind.md`` and ``.csv`` break the
first metric down by kind (plain, count, return, loop), each with its paired difference to no memory on
that kind's episodes, and ``ablation_by_kind_vs_full.md``/``.csv`` the same against full memory, so that
switching one part off shows which kind of episode it costs.
Agents whose checkpoints are missing (``agent=policy``) are trained first when ``ablation.policy.train``
is set, one checkpoint per seed.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict
from scipy import stats
from tqdm.auto import tqdm

from vlnkit.envs.synth.episodes import MEMORY_KINDS
from vlnkit.eval.report import privileged_cell

METRICS: dict[str, tuple[str, float]] = {
    "task_completion": ("TC", 100.0),
    "shortest_path_distance": ("SPD", 1.0),
    "ndtw": ("nDTW", 100.0),
    "sed": ("SED", 100.0),
    "sdtw": ("sDTW", 100.0),
    "kpa": ("KPA", 100.0),
    "success": ("SR", 100.0),
    "spl": ("SPL", 100.0),
}
"""Column label and scale of each metric (rates in %, SPD in hops)."""

UNBOUNDED = ("shortest_path_distance",)
"""Metrics with no upper bound (in table units); every other metric is a rate in [0, 100] %."""


def metric_range(metric: str, difference: bool = False) -> tuple[float, float]:
    """The values a metric (or, with ``difference``, a paired difference of it) can take, in table units;
    confidence intervals are clipped to it."""
    high = math.inf if metric in UNBOUNDED else 100.0
    return (-high, high) if difference else (0.0, high)


def clipped_bounds(mean: float, ci: float, bounds: tuple[float, float]) -> tuple[float, float]:
    """The interval ``mean ± ci`` clipped to ``bounds`` (``nan`` bounds when the half-width is unknown)."""
    if math.isnan(mean) or math.isnan(ci):
        return math.nan, math.nan
    return max(mean - ci, bounds[0]), min(mean + ci, bounds[1])


@dataclass(frozen=True)
class Row:
    """One row of the study: the overrides that define it (without the seed), its group (``grid`` or a
    sweep's name) and, for a sweep, the swept key and value."""

    group: str
    overrides: tuple[str, ...]
    swept_key: str | None = None
    swept_value: str | None = None

    @property
    def name(self) -> str:
        """A readable label: the overrides joined by spaces."""
        return " ".join(self.overrides)

    @property
    def slug(self) -> str:
        """A folder name for the row's runs."""
        text = "_".join(o.lstrip("+").replace("=", "-") for o in self.overrides)
        text = re.sub(r"[^A-Za-z0-9._-]+", "_", text)
        return text.strip("_") or "default"

    def value(self, key: str) -> str | None:
        """The value a plain ``key=value`` override of the row sets, or ``None``."""
        for override in self.overrides:
            k, _, v = override.lstrip("+").partition("=")
            if k == key:
                return v
        return None


def expand(line: str | Sequence[str]) -> list[tuple[list[str], dict[str, str]]]:
    """Every combination of a multirun override line (Hydra's grammar and expansion), each with the values
    the sweeping overrides took (``{key: value}``)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    items = line.split() if isinstance(line, str) else [str(x) for x in line]
    parsed = OverridesParser.create().parse_overrides(items)
    swept = {o.get_key_element() for o in parsed if o.is_sweep_override()}
    out = []
    for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None):
        for combination in batch:
            values = {}
            for override in combination:
                key, _, value = override.partition("=")
                if key in swept:
                    values[key.lstrip("+")] = value
            out.append((list(combination), values))
    return out


def plan_rows(ablation: DictConfig | Mapping[str, Any]) -> list[Row]:
    """The rows of the study: the grid's combinations, then each sweep's."""
    rows: list[Row] = []
    for line in ablation.get("grid") or []:
        rows += [Row("grid", tuple(combination)) for combination, _ in expand(str(line))]
    for name, line in (ablation.get("sweeps") or {}).items():
        for combination, values in expand(str(line)):
            key, value = next(iter(values.items()), (None, None))
            rows.append(Row(str(name), tuple(combination), key, value))
    seen: set[tuple[str, tuple[str, ...]]] = set()
    unique = []
    for row in rows:
        if (row.group, row.overrides) not in seen:
            seen.add((row.group, row.overrides))
            unique.append(row)
    return unique


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """The mean of ``values`` and the half-width of its ``confidence`` interval (Student's t, ``n - 1``
    degrees of freedom; ``nan`` for a single value, 0 when all values agree)."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan
    mean = float(x.mean())
    if len(x) == 1:
        return mean, math.nan
    sem = float(x.std(ddof=1)) / math.sqrt(len(x))
    return mean, float(stats.t.ppf(0.5 + confidence / 2.0, len(x) - 1)) * sem


BOOTSTRAP_RESAMPLES = 2000
"""Resamples of the paired bootstrap (its percentile bounds move by well under 0.5 pp between seeds of
the resampling at this count on 5 x 100 episodes)."""


def paired_bootstrap(differences: Sequence[Sequence[float]], confidence: float = 0.95,
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """The mean paired difference and its percentile ``confidence`` interval by a two-stage bootstrap.

    ``differences`` holds one array per seed (city): this variant minus no memory, episode by episode (the
    same episodes). The estimate is the mean over seeds of each seed's mean difference. Each resample draws
    the seeds with replacement and then, within each drawn seed, its episodes with replacement, so the
    interval covers both the variation between cities and between episodes; with one seed it is the plain
    episode bootstrap. Returns ``(mean, low, high)`` (all ``nan`` without data)."""
    groups = [np.asarray(d, dtype=np.float64) for d in differences if len(d)]
    if not groups:
        return math.nan, math.nan, math.nan
    mean = float(np.mean([g.mean() for g in groups]))
    rng = np.random.default_rng(seed)
    draws = np.empty(resamples)
    for b in range(resamples):
        chosen = rng.integers(0, len(groups), size=len(groups)) if len(groups) > 1 else [0]
        draws[b] = np.mean([groups[i][rng.integers(0, len(groups[i]), size=len(groups[i]))].mean() for i in chosen])
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return mean, float(low), float(high)


def _paired_differences(runs: Sequence[Mapping[str, Any]], base: Sequence[Mapping[str, Any]], metric: str,
                        scale: float) -> list[list[float]] | None:
    """Per seed, the episode-by-episode differences ``run - base`` of ``metric`` (in table units) over the
    episodes both have; ``None`` when a run lacks per-episode values (results written before they were)."""
    by_seed = {int(r["seed"]): r for r in base}
    out = []
    for run in runs:
        other = by_seed.get(int(run["seed"]))
        if other is None:
            continue
        mine, theirs = run.get("per_episode", {}).get(metric), other.get("per_episode", {}).get(metric)
        if mine is None or theirs is None:
            return None
        common = [e for e in mine if e in theirs]
        out.append([(mine[e] - theirs[e]) * scale for e in common])
    return out


def _runs(results: Sequence[Mapping[str, Any]], row: Row) -> list[Mapping[str, Any]]:
    return [r for r in results if r["group"] == row.group and tuple(r["overrides"]) == row.overrides]


def summarize(results: Sequence[Mapping[str, Any]], rows: Sequence[Row], metrics: Sequence[str],
              confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per row: its description, the number of seeds and, per metric, mean and CI half-width over seeds
    (in table units: rates in %, SPD in hops). ``results`` are :func:`run_ablation`'s per-run records.

    Rows of an agent that also has a grid row ``memory=none`` get the paired difference of the first metric
    to it, which tells a memory effect apart from differences between seeds (cities) that both rows share:
    with per-episode values (``per_episode`` in the records) a :func:`paired_bootstrap` over the same
    episodes and seeds (``delta_mean``, ``delta_lo``, ``delta_hi``, ``delta_method="bootstrap"``), else
    Student's t over the per-seed differences (``delta_ci``, ``delta_method="t"``); ``delta_excludes_zero``
    says whether the interval leaves out 0."""
    baselines = {row.value("agent"): row for row in rows
                 if row.group == "grid" and row.value("memory") == "none" and len(row.overrides) == 2}
    first = metrics[0] if metrics else None
    table = []
    for row in rows:
        runs = _runs(results, row)
        entry: dict[str, Any] = {
            **_describe(row),
            "swept_key": row.swept_key,
            "swept_value": row.swept_value,
            "seeds": len(runs),
            "privileged": privileged_cell({"privileged": sorted({p for r in runs for p in r.get("privileged", [])})})
            if all("privileged" in r for r in runs) else "?",
        }
        for metric in metrics:
            scale = METRICS.get(metric, (metric, 1.0))[1]
            mean, ci = mean_ci([r["metrics"].get(metric, math.nan) * scale for r in runs], confidence)
            entry[f"{metric}_mean"], entry[f"{metric}_ci"] = mean, ci
            entry[f"{metric}_lo"], entry[f"{metric}_hi"] = clipped_bounds(mean, ci, metric_range(metric))
        entry.update(_delta(runs, results, baselines.get(row.value("agent")), row, first, confidence))
        table.append(entry)
    return table


def summarize_by_kind(results: Sequence[Mapping[str, Any]], rows: Sequence[Row], metric: str,
                      confidence: float = 0.95, reference: str = "none") -> list[dict[str, Any]]:
    """Per row and episode kind (the runs' ``memory_kinds``, ``{episode_id: kind}``): the mean over seeds of
    each seed's mean ``metric`` on that kind's episodes with its CI half-width, and the paired bootstrap
    difference to the agent's ``memory=<reference>`` grid row on the same episodes (as :func:`summarize`'s
    ``delta_*``; ``reference="full"`` asks what removing parts costs). Empty when no run carries kinds."""
    kinds = sorted({k for r in results for k in (r.get("memory_kinds") or {}).values()}, key=_kind_order)
    baselines = {row.value("agent"): row for row in rows
                 if row.group == "grid" and row.value("memory") == reference and len(row.overrides) == 2}
    scale = METRICS.get(metric, (metric, 1.0))[1]
    table = []
    for row in rows:
        runs = _runs(results, row)
        base_runs = _runs(results, baselines[row.value("agent")]) if row.value("agent") in baselines else []
        for kind in kinds:
            mine = [_only_kind(r, kind, metric) for r in runs]
            per_seed = [list(r["per_episode"][metric].values()) for r in mine]
            mean, ci = mean_ci([float(np.mean(v)) * scale for v in per_seed if v], confidence)
            low, high = clipped_bounds(mean, ci, metric_range(metric))
            entry: dict[str, Any] = {
                **_describe(row), "kind": kind, "seeds": len(runs), "episodes": sum(len(v) for v in per_seed),
                f"{metric}_mean": mean, f"{metric}_ci": ci, f"{metric}_lo": low, f"{metric}_hi": high,
                "delta_mean": math.nan, "delta_lo": math.nan, "delta_hi": math.nan, "delta_excludes_zero": False,
            }
            if base_runs and baselines[row.value("agent")] != row:
                differences = _paired_differences(mine, [_only_kind(r, kind, metric) for r in base_runs], metric, scale)
                if differences is not None:
                    d_mean, d_low, d_high = paired_bootstrap(differences, confidence)
                    entry.update(delta_mean=d_mean, delta_lo=d_low, delta_hi=d_high,
                                 delta_excludes_zero=bool(d_low > 0 or d_high < 0))
            table.append(entry)
    return table


def _describe(row: Row) -> dict[str, Any]:
    """A table row's ``group``, ``agent``, ``memory`` and ``setting`` (its other overrides, joined)."""
    setting = " ".join(o for o in row.overrides if o.lstrip("+").split("=")[0] not in ("agent", "memory"))
    return {"group": row.group, "agent": row.value("agent"), "memory": row.value("memory"), "setting": setting}


def _kind_order(kind: str) -> tuple[int, str]:
    return (MEMORY_KINDS.index(kind) if kind in MEMORY_KINDS else len(MEMORY_KINDS), kind)


def _only_kind(run: Mapping[str, Any], kind: str, metric: str) -> dict[str, Any]:
    """``run`` with its per-episode values of ``metric`` restricted to the episodes of ``kind``."""
    kinds = run.get("memory_kinds") or {}
    values = run.get("per_episode", {}).get(metric) or {}
    return {**run, "per_episode": {metric: {e: v for e, v in values.items() if kinds.get(e) == kind}}}


def write_kind_table(table: Sequence[Mapping[str, Any]], metric: str, out: Path, title: str = "",
                     confidence: float = 0.95, reference: str = "none") -> tuple[Path, Path]:
    """``ablation_by_kind.md`` (one line per row, one column per kind: mean ± CI as in ``ablation.md``, the
    episode count, and the paired difference to the ``reference`` variant) and ``ablation_by_kind.csv`` (one
    line per row and kind); for a reference other than ``none`` the files are ``ablation_by_kind_vs_<reference>``."""
    label = METRICS.get(metric, (metric, 1.0))[0]
    kinds = list(dict.fromkeys(e["kind"] for e in table))
    lines = [title, ""] if title else []
    lines += [
        f"{label} per episode kind: mean ± half-width of the {confidence:.0%} interval over seeds, then in brackets "
        f"the paired difference to the same agent with memory={reference} on that kind's episodes ({confidence:.0%} "
        "two-stage bootstrap; * where it excludes 0).",
        "",
        "| group | agent | memory | setting | " + " | ".join(f"{k} (n)" for k in kinds) + " |",
        "|---|---|---|---|" + "---|" * len(kinds),
    ]
    keyed: dict[tuple[str, ...], dict[str, Mapping[str, Any]]] = {}
    for entry in table:
        key = (entry["group"], entry["agent"] or "-", entry["memory"] or "-", entry["setting"] or "-")
        keyed.setdefault(key, {})[entry["kind"]] = entry
    for key, by_kind in keyed.items():
        cells = []
        for kind in kinds:
            e = by_kind.get(kind)
            if e is None or math.isnan(e[f"{metric}_mean"]):
                cells.append("-")
                continue
            text = f"{_cell(e, metric)} ({e['episodes']})"
            if not math.isnan(e["delta_mean"]):
                text += (f" [{e['delta_mean']:+.1f}: {e['delta_lo']:+.1f}, {e['delta_hi']:+.1f}]"
                         + (" *" if e["delta_excludes_zero"] else ""))
            cells.append(text)
        lines.append("| " + " | ".join(key) + " | " + " | ".join(cells) + " |")
    stem = "ablation_by_kind" if reference == "none" else f"ablation_by_kind_vs_{reference}"
    fields = ["group", "agent", "memory", "setting", "kind", "seeds", "episodes",
              *(f"{metric}_{part}" for part in ("mean", "ci", "lo", "hi")), "delta_mean", "delta_lo", "delta_hi", "delta_excludes_zero"]
    return _write_md_csv(out, stem, lines, fields, table)


def _write_md_csv(out: Path, stem: str, lines: Sequence[str], fields: Sequence[str],
                  table: Sequence[Mapping[str, Any]]) -> tuple[Path, Path]:
    """``<stem>.md`` (the Markdown ``lines``) and ``<stem>.csv`` (``fields`` of every entry of ``table``) in
    ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{stem}.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    csv_path = out / f"{stem}.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        for entry in table:
            writer.writerow(entry)
    return md, csv_path


def _delta(runs: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any]], baseline: Row | None,
           row: Row, metric: str | None, confidence: float) -> dict[str, Any]:
    """The ``delta_*`` fields of :func:`summarize` for one row."""
    delta: dict[str, Any] = {"delta_mean": math.nan, "delta_ci": math.nan, "delta_lo": math.nan,
                             "delta_hi": math.nan, "delta_method": None, "delta_excludes_zero": False}
    if metric is None or baseline is None or baseline == row:
        return delta
    scale = METRICS.get(metric, (metric, 1.0))[1]
    base_runs = _runs(results, baseline)
    per_seed = _paired_differences(runs, base_runs, metric, scale)
    if per_seed is not None:
        mean, low, high = paired_bootstrap(per_seed, confidence)
        delta.update(delta_mean=mean, delta_lo=low, delta_hi=high, delta_method="bootstrap")
    else:
        base = {int(r["seed"]): r["metrics"].get(metric, math.nan) for r in base_runs}
        paired = [(r["metrics"].get(metric, math.nan) - base[int(r["seed"])]) * scale
                  for r in runs if int(r["seed"]) in base]
        mean, ci = mean_ci(paired, confidence)
        low, high = clipped_bounds(mean, ci, metric_range(metric, difference=True))
        delta.update(delta_mean=mean, delta_ci=ci, delta_lo=low, delta_hi=high, delta_method="t")
    delta["delta_excludes_zero"] = bool(delta["delta_lo"] > 0 or delta["delta_hi"] < 0)
    return delta


def _delta_cell(entry: Mapping[str, Any]) -> str:
    """The paired difference: a bootstrap's ``mean [low, high]``, Student's t as :func:`_cell` shows it,
    with ``*`` where the interval excludes 0."""
    if entry.get("delta_method") == "bootstrap":
        text = f"{entry['delta_mean']:.1f} [{entry['delta_lo']:.1f}, {entry['delta_hi']:.1f}]"
    else:
        text = _cell(entry, "delta")
    return text + (" *" if entry.get("delta_excludes_zero") else "")


def _cell(entry: Mapping[str, Any], prefix: str) -> str:
    """``mean ± half-width``, or ``mean [low, high]`` where the interval reaches past the metric's range
    and is clipped to it."""
    mean, ci = entry.get(f"{prefix}_mean", math.nan), entry.get(f"{prefix}_ci", math.nan)
    if math.isnan(mean):
        return "-"
    if math.isnan(ci):
        return f"{mean:.1f}"
    low, high = entry[f"{prefix}_lo"], entry[f"{prefix}_hi"]
    if low > mean - ci or high < mean + ci:
        return f"{mean:.1f} [{low:.1f}, {high:.1f}]"
    return f"{mean:.1f} ± {ci:.1f}"


def write_table(table: Sequence[Mapping[str, Any]], metrics: Sequence[str], out: Path, title: str = "",
                confidence: float = 0.95) -> tuple[Path, Path]:
    """``ablation.md`` (mean ± CI half-width per metric) and ``ablation.csv`` (mean and CI columns)."""
    labels = [METRICS.get(m, (m, 1.0))[0] for m in metrics]
    delta = f"Δ{labels[0]} vs none"
    lines = []
    if title:
        lines += [title, ""]
    lines += [
        f"Mean ± half-width of the {confidence:.0%} confidence interval over seeds (Student's t); "
        f"TC, nDTW, SED in %, SPD in hops; [low, high] where the interval is clipped to the metric's range. "
        f"{delta}: paired difference to the same agent without memory on the same episodes and seeds, with "
        f"the {confidence:.0%} interval of a two-stage bootstrap (seeds, then episodes; Student's t over "
        "seeds for results without per-episode values); * marks an interval that excludes 0.",
        "",
        "| group | agent | memory | setting | seeds | " + " | ".join(labels) + f" | {delta} | privileged |",
        "|---|---|---|---|---|" + "---|" * (len(labels) + 2),
    ]
    for entry in table:
        cells = [_cell(entry, m) for m in metrics] + [_delta_cell(entry)]
        lines.append(
            f"| {entry['group']} | {entry['agent'] or '-'} | {entry['memory'] or '-'} | {entry['setting'] or '-'} | "
            f"{entry['seeds']} | " + " | ".join(cells) + f" | {entry.get('privileged', '?')} |"
        )
    fields = ["group", "agent", "memory", "setting", "swept_key", "swept_value", "seeds", "privileged"]
    fields += [f"{m}_{part}" for m in [*metrics, "delta"] for part in ("mean", "ci", "lo", "hi")]
    fields += ["delta_method", "delta_excludes_zero"]
    return _write_md_csv(out, "ablation", lines, fields, table)


def _variant_label(entry: Mapping[str, Any]) -> str:
    """A grid row's memory variant and other settings, for the plot's x axis."""
    return (entry["memory"] or "-") + (f" {entry['setting']}" if entry["setting"] else "")


def _error_bars(entries: Sequence[Mapping[str, Any]], metric: str) -> np.ndarray:
    """Matplotlib's ``yerr`` (2 x N: below, above the mean) for the clipped intervals of ``entries``."""
    bars = [(e.get(f"{metric}_mean", math.nan) - e.get(f"{metric}_lo", math.nan),
             e.get(f"{metric}_hi", math.nan) - e.get(f"{metric}_mean", math.nan)) for e in entries]
    return np.nan_to_num(np.asarray(bars, dtype=np.float64).reshape(-1, 2).T)


def plot_ablation(table: Sequence[Mapping[str, Any]], path: Path, metric: str = "task_completion") -> Path:
    """A PNG: the grid's rows as bars per agent and memory variant, then one panel per sweep (metric
    against the swept value), with confidence intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label = METRICS.get(metric, (metric, 1.0))[0]
    grid = [e for e in table if e["group"] == "grid"]
    sweeps: dict[str, list[Mapping[str, Any]]] = {}
    for entry in table:
        if entry["group"] != "grid":
            sweeps.setdefault(entry["group"], []).append(entry)
    panels = (1 if grid else 0) + len(sweeps)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(5.0 * max(panels, 1) + 2.0, 4.0), dpi=110, squeeze=False)
    axes = axes[0]
    index = 0
    if grid:
        ax = axes[index]
        index += 1
        agents = list(dict.fromkeys(e["agent"] or "-" for e in grid))
        variants = list(dict.fromkeys(_variant_label(e) for e in grid))
        width = 0.8 / max(len(agents), 1)
        for a, agent in enumerate(agents):
            entries = []
            for variant in variants:
                found = [e for e in grid if (e["agent"] or "-") == agent and _variant_label(e) == variant]
                entries.append(found[0] if found else {})
            means = [e.get(f"{metric}_mean", math.nan) for e in entries]
            positions = np.arange(len(variants)) + (a - (len(agents) - 1) / 2) * width
            ax.bar(positions, means, width, yerr=_error_bars(entries, metric), capsize=3, label=agent)
        ax.set_xticks(np.arange(len(variants)))
        ax.set_xticklabels(variants, rotation=30, ha="right")
        ax.set_ylabel(label)
        ax.set_title(f"{label} by memory variant")
        ax.legend()
    for name, entries in sweeps.items():
        ax = axes[index]
        index += 1
        values = [e["swept_value"] for e in entries]
        try:
            xs = [float(v) for v in values]
        except (TypeError, ValueError):
            xs = list(range(len(values)))
            ax.set_xticks(xs)
            ax.set_xticklabels(values)
        means = [e[f"{metric}_mean"] for e in entries]
        ax.errorbar(xs, means, yerr=_error_bars(entries, metric), marker="o", capsize=3)
        ax.set_xlabel(entries[0]["swept_key"] or name)
        ax.set_ylabel(label)
        setting = entries[0]["memory"] or ""
        ax.set_title(f"sweep {name} ({entries[0]['agent']}, memory={setting})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _per_episode(run_dir: Path, metrics: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per metric, each episode's value in a finished run folder (for the paired bootstrap)."""
    records = [json.loads(line) for line in (run_dir / "episodes.jsonl").read_text(encoding="utf-8").splitlines()
               if line.strip()]
    return {m: {str(r["episode_id"]): float(r["metrics"][m]) for r in records if m in r["metrics"]} for m in metrics}


def _memory_kinds(run_dir: Path) -> dict[str, str]:
    """Each episode's ``memory_kind`` in a finished run folder (empty where the episodes carry none)."""
    records = [json.loads(line) for line in (run_dir / "episodes.jsonl").read_text(encoding="utf-8").splitlines()
               if line.strip()]
    return {str(r["episode_id"]): str(r["memory_kind"]) for r in records if r.get("memory_kind")}


def _read_results(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _policy_checkpoint(cfg: DictConfig, seed: int, progress: bool) -> str:
    """The policy checkpoint of ``seed``; with ``ablation.policy.train`` it is trained first, or its training
    resumed (a finished checkpoint returns at once)."""
    from vlnkit.config import load_config

    policy = cfg.ablation.policy
    path = Path(str(policy.checkpoint).replace("{seed}", str(seed))).expanduser()
    if bool(policy.train):
        from vlnkit.agents.policy.train import train_policy

        train_overrides = [*policy.get("train_overrides", []), *(f"{key}={seed}" for key in policy.seed_keys),
                           f"out={path}", f"progress={str(progress).lower()}"]
        if cfg.data_dir is not None:
            train_overrides.append(f"data_dir={cfg.data_dir}")
        train_policy(load_config("train_policy", train_overrides))
    elif not path.is_file():
        raise FileNotFoundError(f"no policy checkpoint at {path} and ablation.policy.train is false")
    return str(path)


REPLACED_KEYS = ("ablation.grid", "ablation.sweeps")
"""Study keys that a command-line override sets outright: Hydra merges a dict value into the default,
so ``ablation.sweeps={}`` would otherwise keep every default sweep."""


def _replace_study_lists(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Give the overrides of :data:`REPLACED_KEYS` their literal value (``ablation.sweeps={}``: no sweeps)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides([str(o) for o in overrides]):
        key = override.get_key_element().lstrip("+")
        if key in REPLACED_KEYS and not override.is_sweep_override() and not override.is_delete():
            OmegaConf.update(cfg, key, override.value(), merge=False)


def _validate_study(ablation: DictConfig) -> None:
    """Refuse a study that would run nothing, or report metrics it cannot compute, with one line."""
    from vlnkit.eval.runner import ConfigError

    if not (ablation.get("grid") or ablation.get("sweeps")):
        raise ConfigError("ablation.grid and ablation.sweeps are both empty: the study has no rows")
    if not ablation.get("seeds"):
        raise ConfigError("ablation.seeds is empty: expected a list of seeds, e.g. ablation.seeds=[0,1,2]")
    unknown = [str(m) for m in ablation.get("metrics") or [] if str(m) not in METRICS]
    if unknown or not ablation.get("metrics"):
        raise ConfigError(f"ablation.metrics={list(ablation.get('metrics') or [])}: expected some of {', '.join(METRICS)}"
                          + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    if not 0.0 < float(ablation.confidence) < 1.0:
        raise ConfigError(f"ablation.confidence={ablation.confidence}: expected a level in (0, 1), e.g. 0.95")


def run_ablation(cfg: DictConfig, overrides: Sequence[str] = ()) -> Path:
    """Run the study ``cfg`` describes (``configs/ablate.yaml``, composed with ``overrides``) and write its
    table and plot; returns the output folder. ``overrides`` (the command line's) are replayed under every
    run's own, so that ``vlnkit ablate split=test limit=20`` applies to each run."""
    from vlnkit.config import load_config
    from vlnkit.eval.runner import evaluate

    _replace_study_lists(cfg, overrides)
    ablation = cfg.ablation
    _validate_study(ablation)
    out = Path(str(ablation.out)).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    rows = plan_rows(ablation)
    seeds = [int(s) for s in ablation.seeds]
    metrics = [str(m) for m in ablation.metrics]
    log = out / "results.jsonl"
    done = {(r["group"], tuple(r["overrides"]), int(r["seed"])) for r in _read_results(log)}
    jobs = [(row, seed) for row in rows for seed in seeds if (row.group, row.overrides, seed) not in done]
    progress = bool(ablation.get("progress", True))
    with tqdm(total=len(rows) * len(seeds), initial=len(rows) * len(seeds) - len(jobs), desc="ablation",
              unit="run", disable=not progress) as bar:
        for row, seed in jobs:
            bar.set_postfix_str(f"{row.name} seed={seed}")
            job = [*overrides, *row.overrides, *(f"{key}={seed}" for key in ablation.seed_keys)]
            job.append(f"out={out / 'runs' / row.slug / f'seed{seed}'}")
            if row.value("agent") == "policy":
                job.append(f"agent.checkpoint={_policy_checkpoint(cfg, seed, progress)}")
            run_cfg = load_config("ablate", job)
            with open_dict(run_cfg):
                del run_cfg["ablation"]
            metrics_out = evaluate(run_cfg)
            record = {"group": row.group, "overrides": list(row.overrides), "seed": seed, "out": str(run_cfg.out),
                      "metrics": {k: metrics_out.get(k) for k in metrics},
                      "per_episode": _per_episode(Path(str(run_cfg.out)), metrics),
                      "memory_kinds": _memory_kinds(Path(str(run_cfg.out))),
                      "privileged": metrics_out.get("privileged", []),
                      "agent_stats": metrics_out.get("agent_stats", {}),
                      "num_episodes": metrics_out.get("num_episodes")}
            with log.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            bar.update()
    results = _read_results(log)
    confidence = float(ablation.confidence)
    table = summarize(results, rows, metrics, confidence)
    keys = ", ".join(ablation.seed_keys)
    title = f"Mem4Nav ablation on {cfg.task.name}/{cfg.split}, seeds {seeds} (seed keys: {keys})"
    write_table(table, metrics, out, title, confidence)
    for reference in ("none", "full"):
        by_kind = summarize_by_kind(results, rows, metrics[0], confidence, reference)
        if by_kind and any(row.group == "grid" and row.value("memory") == reference for row in rows):
            write_kind_table(by_kind, metrics[0], out, title, confidence, reference)
    plot_ablation(table, out / "ablation.png", metrics[0])
    OmegaConf.save(cfg, out / "ablate.yaml")
    return out
