"""Associative capacity of linear attention and of the platform's memories (``vlnkit experiment
associative_capacity``).

Reproduces the capacity result of Mu Qiao, "Understanding Transformers through the Lens of Pavlovian
Conditioning" (arXiv 2508.08289), as ``docs/perception-attention.md`` section 11 designs it: linear attention
is a Hebbian memory ``M = sum_i v_i k_i^T`` read by ``o = M q``; store ``N`` random key/value pairs, read
every pair back by its key and find the ``N*`` at which retrieval degrades, for several key sizes ``d_k``.
The paper's versions differ: O(sqrt d_k) associations in the v1 abstract, O(d_k) in a later one; the sheet
reads them as the worst-case (error-free) and the average-case statements. The probe and its metrics are
in :mod:`vlnkit.memory.capacity`; this module sweeps them, fits ``log N*`` against ``log d_k`` and reports:

* retrieval against ``N`` per ``d_k`` for random keys and for correlated keys (a shared direction, pairwise
  cosine ``correlation``, as landmark embeddings of one city have), with the derivation's
  ``E[cos] ~ 1/sqrt(1 + (N - 1)/d_k)`` beside the measured mean cosine;
* ``N*`` per metric (a: mean cosine below ``1/sqrt 2``; b: identification below 0.9; c: all ``N`` retrievals
  within ``eps`` below half the trials, for the drawn values and over adversarial values) and the fitted
  slopes (the sheet expects about 1 for the average-case metrics and 0.5 for the worst case);
* controls: orthonormal keys (no crosstalk while ``N <= d_k``), the delta rule against the Hebbian rule, and
  softmax attention over the same pairs;
* the same question for the Mem4Nav LTM token store at the sizes of an agent (``ltm.agent``): how many
  places it holds before recall@1 at revisits falls below ``ltm.recall_threshold``, read through the agent's
  query network and through an ideal query; and for the lightning-attention state with decay 0 and the
  configured TransNormer slopes.

Each ``(key distribution, d_k)`` sweep, each LTM probe and the lightning probe is a checkpointed unit
(``ctx.save_state``), so an interrupted run recomputes only the unfinished ones; every unit draws from its
own generator seeded by the run's seed and the unit, so a resumed run equals an uninterrupted one. Everything
runs on the CPU (the LTM's read path is numpy; the sweeps are small matrix products), whatever ``device`` says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from vlnkit.eval.experiments.runner import ExperimentContext, ExperimentResult, Table
from vlnkit.memory import capacity as cap

_RATIOS = (0.25, 0.5, 1.0, 2.0, 4.0)
"""``N / d_k`` at which the tables show the curves (always on the grid)."""

_EXPECTED = {"mean_cos": "1 (average case)", "accuracy": "1 (average case)",
             "all_within": "sheet: 0.5; random values: about 1 (see note)", "adversarial": "0.5 (worst case)"}


def _seed(ctx: ExperimentContext, *parts: int) -> torch.Generator:
    """A generator for one unit of work, seeded by the run's seed and the unit's identity."""
    value = ctx.seed
    for part in parts:
        value = value * 1_000_003 + int(part)
    return torch.Generator().manual_seed(value % (2 ** 63))


def _ratio_size(ratio: float, d_k: int) -> int:
    """The stored-set size ``N = ratio * d_k`` (rounded, at least 1)."""
    return max(1, int(round(ratio * d_k)))


def _sizes(n_max: int, d_k: int, per_octave: int) -> list[int]:
    """The stored-set sizes of one sweep: :func:`~vlnkit.memory.capacity.n_grid` plus the table's ratios."""
    extra = {_ratio_size(r, d_k) for r in _RATIOS}
    return sorted(set(cap.n_grid(n_max, per_octave)) | {n for n in extra if n <= n_max})


def _pairs_unit(cfg: DictConfig, ctx: ExperimentContext, kind: str, d_k: int) -> dict[str, Any]:
    """One sweep over ``N`` for key distribution ``kind`` at ``d_k`` (resumed from its state when done)."""
    name = f"pairs_{kind}_dk{d_k}"
    state = ctx.load_state(name)
    if state is not None:
        return state
    orthonormal = kind == "orthonormal"
    n_max = d_k if orthonormal else int(cfg.n_max_factor) * d_k
    sizes = _sizes(n_max, d_k, int(cfg.points_per_octave))
    curves = cap.capacity_curves(
        d_k, int(cfg.d_v), sizes, int(cfg.trials), _seed(ctx, 1, cap.KEY_KINDS.index(kind), d_k), keys=kind,
        correlation=float(cfg.correlation), values=str(cfg.value_kind), eps=float(cfg.eps),
        rules=[str(r) for r in cfg.rules], eta=float(cfg.delta_eta),
        beta=None if cfg.softmax_beta is None else float(cfg.softmax_beta), dtype=torch.float64 if orthonormal
        else torch.float32)
    state = {"sizes": sizes, "curves": curves}
    ctx.save_state(name, state)
    return state


def _ltm_unit(cfg: DictConfig, ctx: ExperimentContext, memory: Any, query: str, kind: str) -> dict[str, Any]:
    """The LTM probe for one query mode and view distribution (resumed from its state when done)."""
    name = f"ltm_{query}_{kind}"
    state = ctx.load_state(name)
    if state is not None:
        return state
    places = sorted({int(n) for n in cfg.ltm.places})
    curve = cap.ltm_recall_curve(
        memory, places, int(cfg.ltm.trials), seed=ctx.seed * 1_000_003 + 10 + cap.KEY_KINDS.index(kind), keys=kind,
        correlation=float(cfg.correlation), noise=float(cfg.ltm.noise), jitter=float(cfg.ltm.jitter),
        spacing=float(cfg.ltm.spacing), query=query)
    state = {"places": places, "curves": curve}
    ctx.save_state(name, state)
    return state


def _lightning_unit(cfg: DictConfig, ctx: ExperimentContext) -> dict[str, Any]:
    """The lightning-state probe at decay 0 and the configured slopes (resumed from its state when done)."""
    from vlnkit.perception.kernels.lightning import transnormer_slopes

    state = ctx.load_state("lightning")
    if state is not None:
        return state
    c = cfg.lightning
    slopes = [0.0, *transnormer_slopes(int(c.heads), int(c.layer_idx), int(c.num_layers)).tolist()]
    sizes = _sizes(int(c.n_max_factor) * int(c.d_k), int(c.d_k), int(cfg.points_per_octave))
    curves = cap.lightning_state_curves(int(c.d_k), int(c.d_v), sizes, slopes, int(c.trials), _seed(ctx, 3),
                                        eps=float(cfg.eps))
    state = {"sizes": sizes, "slopes": slopes, "curves": [curves[float(s)] for s in slopes]}
    ctx.save_state("lightning", state)
    return state


def _at(sizes: Sequence[int], curve: Sequence[float], n: int) -> float:
    """The curve's value at stored-set size ``n`` (on the grid), NaN when ``n`` is not there."""
    return float(curve[list(sizes).index(n)]) if n in sizes else math.nan


def _shown(value: float | None, n_max: int) -> float | str:
    """A capacity as a table cell: the number, or ``> n_max`` when it lies beyond the grid."""
    return f"> {n_max}" if value is None else value


def run(cfg: DictConfig, ctx: ExperimentContext) -> ExperimentResult:
    """Sweep the pair memories over ``d_k`` and ``N``, probe the LTM and the lightning state, fit the slopes
    and return the tables and plots (see the module docstring)."""
    dims = sorted({int(d) for d in cfg.d_k})
    kinds = [str(k) for k in cfg.key_kinds]
    rules = [str(r) for r in cfg.rules]
    if "hebbian" not in rules:
        raise ValueError(f"rules={rules}: the Hebbian memory is the probe itself; keep hebbian among the rules")
    ltm_kinds = [str(k) for k in cfg.ltm.views]
    queries = [str(q) for q in cfg.ltm.queries]

    units = len(dims) * (len(kinds) + 1) + len(ltm_kinds) * len(queries) + 1
    pairs: dict[str, dict[int, dict[str, Any]]] = {kind: {} for kind in [*kinds, "orthonormal"]}
    ltm: dict[str, dict[str, Any]] = {}
    with ctx.bar(units, desc="associative_capacity") as bar:
        for kind in [*kinds, "orthonormal"]:
            for d_k in dims:
                pairs[kind][d_k] = _pairs_unit(cfg, ctx, kind, d_k)
                bar.update(1)
        memory = cap.agent_ltm(str(cfg.ltm.agent), OmegaConf.to_container(cfg.ltm.agent_settings, resolve=True))
        for query in queries:
            for kind in ltm_kinds:
                ltm[f"{query}/{kind}"] = _ltm_unit(cfg, ctx, memory, query, kind)
                bar.update(1)
        lightning = _lightning_unit(cfg, ctx)
        bar.update(1)

    capacities: dict[str, dict[str, dict[str, dict[str, float | None]]]] = {}
    slopes: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for rule in rules:
        for kind in kinds:
            per_metric = {}
            for metric in cap.METRICS:
                per_metric[metric] = {str(d): cap.capacity_at(pairs[kind][d]["sizes"],
                                                              pairs[kind][d]["curves"][rule][metric],
                                                              cap.THRESHOLDS[metric]) for d in dims}
            capacities.setdefault(rule, {})[kind] = per_metric
            slopes.setdefault(rule, {})[kind] = {
                metric: cap.fit_power_law(dims, [per_metric[metric][str(d)] for d in dims]) for metric in cap.METRICS}

    ltm_capacity = {key: {"recall_at_1": cap.capacity_at(u["places"], u["curves"]["recall_at_1"],
                                                         float(cfg.ltm.recall_threshold)),
                          "decode_cos": cap.capacity_at(u["places"], u["curves"]["decode_cos"],
                                                        cap.THRESHOLDS["mean_cos"])}
                    for key, u in ltm.items()}
    lightning_capacity = [{metric: cap.capacity_at(lightning["sizes"], curves[metric], cap.THRESHOLDS[metric])
                           for metric in cap.METRICS} for curves in lightning["curves"]]

    tables = _tables(cfg, dims, kinds, rules, pairs, capacities, slopes, memory, ltm, ltm_capacity, lightning,
                     lightning_capacity)
    plots = _plots(ctx, cfg, dims, kinds, pairs, capacities, slopes, ltm, lightning)
    results = {
        "pairs": {kind: {str(d): u for d, u in per.items()} for kind, per in pairs.items()},
        "capacity": capacities,
        "slopes": slopes,
        "ltm": {"agent": str(cfg.ltm.agent), "dim": memory.dim, "descriptor_dim": memory.descriptor_dim,
                "top_m": memory.config.top_m, "probes": ltm, "capacity": ltm_capacity},
        "lightning": {**lightning, "capacity": lightning_capacity},
    }
    return ExperimentResult(results=results, tables=tables, plots=plots)


def _tables(cfg: DictConfig, dims: list[int], kinds: list[str], rules: list[str], pairs: dict, capacities: dict,
            slopes: dict, memory: Any, ltm: dict, ltm_capacity: dict, lightning: dict,
            lightning_capacity: list) -> list[Table]:
    """The result tables (see :func:`run`)."""
    n_factor, eps = int(cfg.n_max_factor), float(cfg.eps)
    curve_rows = []
    for kind in kinds:
        for d_k in dims:
            unit = pairs[kind][d_k]
            h = unit["curves"]["hebbian"]
            for ratio in _RATIOS:
                n = _ratio_size(ratio, d_k)
                curve_rows.append([kind, d_k, n, _at(unit["sizes"], h["mean_cos"], n), cap.expected_mean_cos(n, d_k),
                                   _at(unit["sizes"], h["mean_error"], n), _at(unit["sizes"], h["accuracy"], n),
                                   _at(unit["sizes"], h["all_within"], n), _at(unit["sizes"], h["adversarial"], n)])
    capacity_rows = []
    for rule in rules:
        for kind in kinds:
            for d_k in dims:
                values = [capacities[rule][kind][metric][str(d_k)] for metric in cap.METRICS]
                a = values[0]
                capacity_rows.append([rule, kind, d_k, *(_shown(v, n_factor * d_k) for v in values),
                                      math.nan if a is None else a / d_k])
    slope_rows = []
    for rule in rules:
        for kind in kinds:
            for metric in cap.METRICS:
                fit = slopes[rule][kind][metric]
                slope_rows.append([rule, kind, metric, math.nan if fit["slope"] is None else fit["slope"],
                                   math.nan if fit["r2"] is None else fit["r2"], f"{fit['points']}/{len(dims)}",
                                   _EXPECTED[metric] if rule == "hebbian" else "-"])
    control_rows = []
    for d_k in dims:
        for kind in ["orthonormal", *kinds]:
            unit = pairs[kind][d_k]
            for rule in rules:
                curves = unit["curves"][rule]
                control_rows.append([d_k, kind, rule, *(_at(unit["sizes"], curves["mean_cos"], _ratio_size(r, d_k))
                                                        for r in (0.5, 1.0, 2.0, 4.0)),
                                     _at(unit["sizes"], curves["mean_error"], d_k)])
    ltm_rows = []
    for key, unit in ltm.items():
        query, kind = key.split("/")
        c = unit["curves"]
        for i, n in enumerate(unit["places"]):
            ltm_rows.append([query, kind, n, c["recall_at_1"][i], c["recall_at_m"][i], c["chance"][i],
                             c["decode_cos"][i], c["distinct_top1"][i]])
    max_places = max(int(n) for n in cfg.ltm.places)
    ltm_capacity_rows = [[key.split("/")[0], key.split("/")[1], _shown(v["recall_at_1"], max_places),
                          _shown(v["decode_cos"], max_places)] for key, v in ltm_capacity.items()]
    n_light = int(cfg.lightning.n_max_factor) * int(cfg.lightning.d_k)
    light_rows = []
    for slope, curves, capacity in zip(lightning["slopes"], lightning["curves"], lightning_capacity):
        lam = math.exp(-slope)
        light_rows.append([slope, lam, math.inf if slope == 0 else 1.0 / (1.0 - lam),
                           *(_shown(capacity[m], n_light) for m in cap.METRICS),
                           _at(lightning["sizes"], curves["mean_cos"], int(cfg.lightning.d_k))])
    agent = str(cfg.ltm.agent)
    return [
        Table("Hebbian retrieval against stored pairs",
              ["keys", "d_k", "N", "mean cos (a)", "1/sqrt(1+(N-1)/d_k)", "mean ||o-v||", "identification (b)",
               f"all within eps={eps} (c)", "adversarial values (c)"], curve_rows,
              note=(f"M = sum v k^T, read by every stored key; means over {cfg.trials} trials, d_v={cfg.d_v}. "
                    f"Correlated keys share a direction (pairwise cosine about {cfg.correlation}). (c) is the share "
                    "of trials in which all N retrievals are within eps, for the drawn values and for the worst "
                    "unit values (max_j |W_jj - 1| + sum_i |W_ji| < eps).")),
        Table("Capacity N* per metric",
              ["rule", "keys", "d_k", "N* (a) cos < 0.707", "N* (b) ident. < 0.9", "N* (c) all within < 0.5",
               "N* (c) adversarial < 0.5", "N*(a) / d_k"], capacity_rows,
              note=(f"Where each metric first falls below its threshold, interpolated in log N; '> n' when it "
                    f"does not within N <= {n_factor} d_k. The derivation gives N*(a) = d_k + 1 for random keys.")),
        Table("Fitted slopes of log N* against log d_k", ["rule", "keys", "metric", "slope", "R^2", "points",
                                                          "expected (Hebbian)"], slope_rows,
              note=("Least squares over the d_k whose N* lies on the grid. (c) on random values concentrates "
                    "(||o_j - v_j||^2 ~ (N-1)/d_k for every j), so it scales like d_k with a log correction; "
                    "the O(sqrt d_k) worst case is the adversarial-values row.")),
        Table("Controls: mean cos at N = d_k/2, d_k, 2 d_k, 4 d_k",
              ["d_k", "keys", "rule", "N=d_k/2", "N=d_k", "N=2d_k", "N=4d_k", "mean ||o-v|| at N=d_k"], control_rows,
              note=(f"Orthonormal keys exist only for N <= d_k (computed in float64). Delta rule: eta={cfg.delta_eta}, "
                    "one pass in order; softmax: beta = "
                    + ("sqrt(d_k)" if cfg.softmax_beta is None else str(cfg.softmax_beta)) + " on unit keys.")),
        Table(f"Mem4Nav LTM token store ({agent} agent's LTM: dim {memory.dim}, top_m {memory.config.top_m})",
              ["query", "views", "places N", "recall@1", f"recall@{memory.config.top_m}", "chance", "decode cos",
               "distinct top-1 / N"], ltm_rows,
              note=(f"N places written (one token each, {cfg.ltm.spacing} m apart), each read back at a revisit "
                    f"(view noise {cfg.ltm.noise}, position jitter {cfg.ltm.jitter} m); means over "
                    f"{cfg.ltm.trials} trials. network: the agent's query MLP (its weights as the agent loads "
                    "them); token: the token of the revisit view, R([0 ; v']) (an ideal query network). decode "
                    "cos: the view decoded from the top token through R^-1 against the place's view.")),
        Table("LTM capacity: places held before recall degrades",
              ["query", "views", f"N* recall@1 < {cfg.ltm.recall_threshold}", "N* decode cos < 0.707"],
              ltm_capacity_rows, note=f"'> {max_places}' when recall stays above the threshold on every size."),
        Table(f"Lightning-attention state (d_k={cfg.lightning.d_k}, d_v={cfg.lightning.d_v})",
              ["slope s", "lambda = exp(-s)", "1/(1-lambda) (steps)", "N* (a)", "N* (b)", "N* (c) within",
               "N* (c) adversarial", "mean cos at N=d_k"], light_rows,
              note=(f"N pairs streamed through lightning_attn (torch backend), read from its final state by their "
                    f"keys; s = 0 and transnormer_slopes({cfg.lightning.heads}, {cfg.lightning.layer_idx}, "
                    f"{cfg.lightning.num_layers}); means over {cfg.lightning.trials} trials.")),
    ]


def _plots(ctx: ExperimentContext, cfg: DictConfig, dims: list[int], kinds: list[str], pairs: dict,
           capacities: dict, slopes: dict, ltm: dict, lightning: dict) -> list[str]:
    """Error against N per d_k; N* against d_k with the fitted lines; the LTM and lightning curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for d_k in dims:
            unit = pairs[kind][d_k]
            sizes, error = unit["sizes"], unit["curves"]["hebbian"]["mean_error"]
            shown = [(n, e) for n, e in zip(sizes, error) if n > 1]
            line, = ax.plot([n for n, _ in shown], [e for _, e in shown], marker=".", label=f"d_k={d_k}")
            if kind == "random":
                ax.plot([n for n, _ in shown], [math.sqrt((n - 1) / d_k) for n, _ in shown], linestyle=":",
                        color=line.get_color())
        ax.axhline(float(cfg.eps), color="grey", linewidth=0.8, linestyle="--")
        ax.set(xscale="log", yscale="log", xlabel="stored pairs N", ylabel="mean ||o_j - v_j|| / ||v_j||",
               title=f"Hebbian memory, {kind} keys" + (" (dotted: sqrt((N-1)/d_k))" if kind == "random" else ""))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(ctx.figure_path("error_vs_n.png"), dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for metric in cap.METRICS:
            found = [(d, capacities["hebbian"][kind][metric][str(d)]) for d in dims]
            found = [(d, n) for d, n in found if n is not None]
            if not found:
                continue
            fit = slopes["hebbian"][kind][metric]
            label = metric if fit["slope"] is None else f"{metric}: slope {fit['slope']:.2f}"
            points, = ax.plot([d for d, _ in found], [n for _, n in found], marker="o", linestyle="none", label=label)
            if fit["slope"] is not None:
                ax.plot(dims, [math.exp(fit["intercept"]) * d ** fit["slope"] for d in dims],
                        color=points.get_color(), linewidth=1)
        ax.set(xscale="log", yscale="log", xlabel="d_k", ylabel="capacity N*",
               title=f"Hebbian capacity N*(d_k), {kind} keys")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(ctx.figure_path("capacity_vs_dk.png"), dpi=120)
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, unit in ltm.items():
        left.plot(unit["places"], unit["curves"]["recall_at_1"], marker="o", label=key)
    if ltm:
        first = next(iter(ltm.values()))
        left.plot(first["places"], [1.0 / n for n in first["places"]], color="grey", linestyle=":", label="1/N")
    left.axhline(float(cfg.ltm.recall_threshold), color="grey", linewidth=0.8, linestyle="--")
    left.set(xscale="log", xlabel="places stored N", ylabel="recall@1 at revisits",
             title=f"Mem4Nav LTM ({cfg.ltm.agent} agent): query/views")
    left.legend(fontsize=7)
    for slope, curves in zip(lightning["slopes"], lightning["curves"]):
        right.plot(lightning["sizes"], curves["mean_cos"], label=f"s={slope:.3g}")
    right.axhline(cap.THRESHOLDS["mean_cos"], color="grey", linewidth=0.8, linestyle="--")
    right.set(xscale="log", xlabel="stored pairs N", ylabel="mean cos(o_j, v_j)",
              title=f"Lightning-attention state, d_k={cfg.lightning.d_k}")
    right.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(ctx.figure_path("platform_stores.png"), dpi=120)
    plt.close(fig)
    return ["error_vs_n.png", "capacity_vs_dk.png", "platform_stores.png"]
