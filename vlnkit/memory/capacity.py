"""Associative-memory capacity probes: how many key/value pairs a memory holds before retrieval degrades.

Background: Mu Qiao, "Understanding Transformers through the Lens of Pavlovian Conditioning" (arXiv
2508.08289; ``docs/perception-attention.md`` section 11). Linear attention is read as Pavlovian
conditioning: values are the unconditioned stimuli, keys the conditioned stimuli, queries the test stimuli.
A head builds a transient Hebbian memory ``M = sum_i v_i k_i^T`` and retrieves ``o = M q = sum_i v_i
(k_i^T q)``. The paper's capacity claim differs between versions: the v1 abstract says a head stores
**O(sqrt d_k)** associations "before interference degrades retrieval", a later abstract says **O(d_k)**. The
reading consistent with both: O(d_k) for average-case retrieval fidelity, O(sqrt d_k) for error-free
(worst-case) retrieval. No code of the paper is known; everything here is re-derived from that description.

Derivation (random unit keys in ``R^{d_k}``, random unit values, query ``q = k_j``): ``o_j = v_j + sum_{i !=
j} c_i v_i`` with ``c_i = k_i^T k_j ~ N(0, 1/d_k)``, so ``||o_j||^2 ~ 1 + (N - 1)/d_k`` and
``E[cos(o_j, v_j)] ~ 1/sqrt(1 + (N - 1)/d_k)``: a constant signal-to-noise ratio needs ``N ~ d_k``.

What is probed. Every memory here retrieves linearly in the stored values, ``o_j = sum_i W_ji v_i``, with a
*retrieval-weight matrix* ``W`` (N x N) that depends on the keys alone: ``W = K K^T`` for the Hebbian rule,
``softmax(beta K K^T)`` row-wise for softmax attention, and for the delta rule (Rescorla-Wagner-like,
``M += eta (v - M k) k^T``, applied once per pair in order) whatever the rule leaves (:func:`delta_memory`
run on one-hot values gives it). From ``W`` and the values, per stored-set size ``N`` (means over trials):

* ``mean_cos`` (sheet metric a): the mean ``cos(o_j, v_j)``;
* ``accuracy`` (b): nearest-value identification, the share of ``j`` with ``argmax_i cos(o_j, v_i) = j``;
* ``all_within`` (c): the share of trials in which *every* retrieval has ``||o_j - v_j|| < eps ||v_j||``;
* ``adversarial`` (c, worst case over the values): the share of trials in which every retrieval is within
  ``eps`` for *any* unit values, ``max_j |W_jj - 1| + sum_{i != j} |W_ji| < eps`` (the bound is attained by
  values all equal to plus or minus one unit vector). For the Hebbian rule this is the coherence condition
  of the sheet's worst-case derivation (``(N - 1) max |k_i^T k_j| < eps`` is sufficient): ``N ~ eps
  sqrt(d_k)``, the O(sqrt d_k) claim. Metric (c) on *random* values scales differently: ``||o_j - v_j||^2 ~
  (N - 1)/d_k`` concentrates around the same value for every ``j``, so (c) falls near ``N ~ eps^2 d_k``
  (linear in d_k, with a small log correction from the maximum over ``j``);
* ``mean_error``: the mean ``||o_j - v_j|| / ||v_j||`` (what the error-vs-N plot shows).

The capacity ``N*`` of a metric is where its curve over ``N`` first falls below the sheet's threshold
(:data:`THRESHOLDS`: ``1/sqrt 2``, i.e. SNR 1, for (a); 0.9 for (b); 0.5 for both (c)), interpolated in
``log N`` (:func:`capacity_at`); :func:`fit_power_law` fits ``log N* = a + b log d_k``. Keys are uniform on
the sphere (``random``), share a common direction so that pairwise cosines are about ``correlation``
(``correlated``, as landmark embeddings of one city do), or are orthonormal (the zero-crosstalk control).

The platform's own stores get the same question:

* :func:`ltm_recall_curve` and :func:`ltm_place_capacity`: the Mem4Nav long-term memory
  (:class:`~vlnkit.memory.ltm.LongTermMemory`) keeps one reversible-Transformer token per place in an HNSW
  index, so stored items do not superpose; what limits it is telling the places apart at a revisit. ``N``
  places (one view each, at grid positions ``spacing`` metres apart) are written; each place is then read
  back with a revisit of it (its view plus noise of norm about ``noise``, its position plus ``jitter``
  metres): recall@1 (the place's own token nearest), recall@top_m and the decode quality (the cosine of the
  view decoded from the top token through ``R^-1`` with the place's view). ``query="network"`` reads as the
  agents do (the query MLP ``MLP([v ; p / position_scale])``); ``query="token"`` queries with the token the
  revisit view would write, ``R([0 ; v'])``: an ideal query network, which isolates the store itself.
* :func:`lightning_state_curves`: the running state of lightning attention
  (:func:`~vlnkit.perception.kernels.lightning.lightning_attn`, ``S_t = lam S_{t-1} + k_t v_t^T``) is this
  Hebbian memory with a per-head forgetting factor ``lam = exp(-s)``; ``N`` pairs are streamed through the
  kernel and read back from its final state by their keys, with ``s = 0`` (the plain Hebbian memory) and the
  configured TransNormer slopes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vlnkit.memory.ltm import LongTermMemory

METRICS = ("mean_cos", "accuracy", "all_within", "adversarial")
"""The capacity metrics, in the sheet's order (a), (b), (c) and (c) over adversarial values."""

THRESHOLDS: dict[str, float] = {"mean_cos": 1.0 / math.sqrt(2.0), "accuracy": 0.9, "all_within": 0.5,
                                "adversarial": 0.5}
"""A metric's capacity ``N*`` is where it falls below this (the sheet's thresholds)."""

RULES = ("hebbian", "delta", "softmax")
"""Memories compared by :func:`capacity_curves`."""

KEY_KINDS = ("random", "correlated", "orthonormal")
"""Key distributions of :func:`sample_keys`."""


# ----------------------------------------------------------------------------------------------------------
# Keys, values and grids
# ----------------------------------------------------------------------------------------------------------

def _unit_rows(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-30)


def sample_keys(kind: str, n: int, dim: int, generator: torch.Generator, correlation: float = 0.0,
                dtype: torch.dtype = torch.float32) -> Tensor:
    """``n`` unit keys ``(n, dim)``: ``random`` (uniform on the sphere), ``correlated`` (``sqrt(rho) u +
    sqrt(1 - rho) g_i`` normalised, with ``u`` one shared unit direction and ``g_i`` random unit vectors, so
    that pairwise cosines are about ``rho = correlation``) or ``orthonormal`` (rows of a random orthogonal
    matrix; needs ``n <= dim``)."""
    if kind == "random":
        return _unit_rows(torch.randn(n, dim, generator=generator, dtype=dtype))
    if kind == "correlated":
        if not 0.0 <= correlation < 1.0:
            raise ValueError(f"correlation must lie in [0, 1), got {correlation}")
        shared = _unit_rows(torch.randn(dim, generator=generator, dtype=dtype))
        own = _unit_rows(torch.randn(n, dim, generator=generator, dtype=dtype))
        return _unit_rows(math.sqrt(correlation) * shared + math.sqrt(1.0 - correlation) * own)
    if kind == "orthonormal":
        if n > dim:
            raise ValueError(f"orthonormal keys need n <= dim, got n={n} > dim={dim}")
        q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=dtype))
        return (q * torch.sign(torch.diagonal(r))).T[:n].contiguous()
    raise ValueError(f"unknown key kind {kind!r}; expected one of {', '.join(KEY_KINDS)}")


def sample_values(kind: str, n: int, dim: int, generator: torch.Generator,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """``n`` unit values ``(n, dim)``: ``random`` (uniform on the sphere) or ``onehot`` (distinct one-hot
    codes in random order; needs ``n <= dim``)."""
    if kind == "random":
        return _unit_rows(torch.randn(n, dim, generator=generator, dtype=dtype))
    if kind == "onehot":
        if n > dim:
            raise ValueError(f"distinct one-hot values need n <= d_v, got n={n} > d_v={dim}")
        return torch.eye(dim, dtype=dtype)[torch.randperm(dim, generator=generator)[:n]]
    raise ValueError(f"unknown value kind {kind!r}; expected random or onehot")


def n_grid(n_max: int, per_octave: int = 4, dense_below: int = 8) -> list[int]:
    """Stored-set sizes from 1 to ``n_max``: every integer up to ``dense_below``, then about ``per_octave``
    sizes per doubling (geometric), ending at ``n_max``."""
    sizes = set(range(1, min(dense_below, n_max) + 1))
    steps = int(math.ceil(per_octave * math.log2(max(n_max, 1))))
    sizes.update(min(n_max, int(round(2.0 ** (i / per_octave)))) for i in range(steps + 1))
    sizes.add(n_max)
    return sorted(sizes)


# ----------------------------------------------------------------------------------------------------------
# Memories
# ----------------------------------------------------------------------------------------------------------

def hebbian_memory(keys: Tensor, values: Tensor) -> Tensor:
    """The Hebbian (linear-attention) memory ``M = sum_i v_i k_i^T`` ``(d_v, d_k)`` of keys ``(N, d_k)`` and
    values ``(N, d_v)``."""
    return values.T @ keys


def retrieve(memory: Tensor, queries: Tensor) -> Tensor:
    """Read a linear memory ``M`` ``(d_v, d_k)`` with queries ``(n, d_k)``: ``o = M q``, as rows ``(n, d_v)``."""
    return queries @ memory.T


def delta_memory(keys: Tensor, values: Tensor, eta: float = 1.0,
                 snapshots: Sequence[int] | None = None) -> Tensor | list[Tensor]:
    """The delta-rule memory: ``M += eta (v_t - M k_t) k_t^T`` for the pairs in order, from ``M = 0``.

    Returns the final ``M`` ``(d_v, d_k)``, or with ``snapshots`` (increasing pair counts) a copy of ``M``
    after each of those counts. With orthonormal keys and ``eta = 1`` every pair is stored exactly; for
    ``N > d_k`` later pairs overwrite the directions earlier ones used (a recency gradient, unlike the
    Hebbian memory's uniform crosstalk).
    """
    memory = keys.new_zeros(values.shape[1], keys.shape[1])
    wanted = sorted(set(snapshots)) if snapshots is not None else []
    taken: list[Tensor] = []
    for t in range(len(keys)):
        key = keys[t]
        memory.add_(torch.outer(values[t] - memory @ key, key), alpha=eta)
        if wanted and t + 1 == wanted[len(taken)]:
            taken.append(memory.clone())
            if len(taken) == len(wanted):
                break
    if snapshots is None:
        return memory
    if len(taken) != len(wanted):
        raise ValueError(f"snapshots {wanted} go beyond the {len(keys)} pairs given")
    return taken


def softmax_retrieve(keys: Tensor, values: Tensor, queries: Tensor, beta: float) -> Tensor:
    """Softmax attention over the stored pairs: ``o = sum_i softmax_i(beta k_i^T q) v_i`` ``(n, d_v)``."""
    return torch.softmax(beta * (queries @ keys.T), dim=-1) @ values


def retrieval_weights(rule: str, keys: Tensor, sizes: Sequence[int], eta: float = 1.0,
                      beta: float | None = None) -> list[Tensor]:
    """The retrieval-weight matrices ``W`` ``(N, N)`` (``o_j = sum_i W_ji v_i`` when the first ``N`` pairs
    are stored and ``k_j`` is the query) of ``rule`` for each ``N`` in ``sizes``.

    ``hebbian``: ``K K^T``; ``softmax``: :func:`softmax_retrieve` with ``beta`` (default ``sqrt(d_k)``, the
    scaled dot product of keys of norm ``sqrt(d_k)``); ``delta``: :func:`delta_memory` with learning rate
    ``eta`` run on one-hot values, which records how much of each value the rule leaves in the memory.
    """
    sizes = sorted({int(n) for n in sizes})
    if rule == "hebbian":
        gram = keys[: sizes[-1]] @ keys[: sizes[-1]].T
        return [gram[:n, :n] for n in sizes]
    if rule == "softmax":
        scale = math.sqrt(keys.shape[1]) if beta is None else float(beta)
        gram = keys[: sizes[-1]] @ keys[: sizes[-1]].T
        return [torch.softmax(scale * gram[:n, :n], dim=-1) for n in sizes]
    if rule == "delta":
        n_max = sizes[-1]
        onehot = torch.eye(n_max, dtype=keys.dtype, device=keys.device)
        memories = delta_memory(keys[:n_max], onehot, eta, snapshots=sizes)
        return [retrieve(memory[:n], keys[:n]) for n, memory in zip(sizes, memories)]
    raise ValueError(f"unknown rule {rule!r}; expected one of {', '.join(RULES)}")


# ----------------------------------------------------------------------------------------------------------
# Metrics, capacity and fits
# ----------------------------------------------------------------------------------------------------------

def retrieval_metrics(outputs: Tensor, values: Tensor, eps: float,
                      weights: Tensor | None = None) -> dict[str, float]:
    """The module docstring's metrics of one trial: retrievals ``outputs`` ``(N, d_v)`` of the stored
    ``values`` ``(N, d_v)`` (row ``j`` retrieved by key ``j``), with tolerance ``eps``; ``adversarial``
    (worst case over unit values) needs the retrieval weights ``W`` and is left out without them."""
    value_norms = values.norm(dim=1).clamp_min(1e-30)
    output_norms = outputs.norm(dim=1).clamp_min(1e-30)
    cos = (outputs * values).sum(dim=1) / (output_norms * value_norms)
    scores = outputs @ (values / value_norms[:, None]).T
    identified = scores.argmax(dim=1) == torch.arange(len(values), device=values.device)
    errors = (outputs - values).norm(dim=1) / value_norms
    metrics = {
        "mean_cos": float(cos.mean()),
        "accuracy": float(identified.double().mean()),
        "all_within": float(bool((errors < eps).all())),
        "mean_error": float(errors.mean()),
    }
    if weights is not None:
        diagonal = torch.diagonal(weights)
        worst = (diagonal - 1.0).abs() + weights.abs().sum(dim=1) - diagonal.abs()
        metrics["adversarial"] = float(bool((worst < eps).all()))
    return metrics


def capacity_at(sizes: Sequence[float], metric: Sequence[float], threshold: float) -> float | None:
    """Where ``metric`` (one value per stored-set size, sizes increasing) first falls below ``threshold``,
    interpolated linearly in ``log N`` between the last size at or above it and the first below; the first
    size when it is already below there; ``None`` when it never falls below (the capacity exceeds the grid)."""
    for i, value in enumerate(metric):
        if value < threshold:
            if i == 0:
                return float(sizes[0])
            before, after = float(metric[i - 1]), float(value)
            fraction = (before - threshold) / (before - after)
            low, high = math.log(sizes[i - 1]), math.log(sizes[i])
            return float(math.exp(low + fraction * (high - low)))
    return None


def fit_power_law(x: Sequence[float], y: Sequence[float | None]) -> dict[str, Any]:
    """Least-squares fit of ``log y = intercept + slope log x`` over the pairs whose ``y`` is known (not
    ``None``): ``slope``, ``intercept`` (natural log), ``r2`` and ``points``; ``slope`` and the rest are
    ``None`` with fewer than two points."""
    pairs = [(math.log(a), math.log(b)) for a, b in zip(x, y) if b is not None and b > 0]
    if len(pairs) < 2:
        return {"slope": None, "intercept": None, "r2": None, "points": len(pairs)}
    lx, ly = np.array(pairs).T
    slope, intercept = np.polyfit(lx, ly, 1)
    residual = ly - (intercept + slope * lx)
    spread = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float((residual ** 2).sum()) / spread if spread > 0 else 1.0
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2, "points": len(pairs)}


def expected_mean_cos(n: int, d_k: int) -> float:
    """The derivation's ``E[cos(o_j, v_j)] ~ 1/sqrt(1 + (N - 1)/d_k)`` (random unit keys and values)."""
    return 1.0 / math.sqrt(1.0 + (n - 1) / d_k)


def capacity_curves(d_k: int, d_v: int, sizes: Sequence[int], trials: int, generator: torch.Generator,
                    keys: str = "random", correlation: float = 0.0, values: str = "random", eps: float = 0.5,
                    rules: Sequence[str] = RULES, eta: float = 1.0, beta: float | None = None,
                    dtype: torch.dtype = torch.float32) -> dict[str, dict[str, list[float]]]:
    """``{rule: {metric: [mean over trials per size]}}`` for keys of size ``d_k`` and values of size ``d_v``
    (each trial draws ``max(sizes)`` pairs and stores their prefixes; see :func:`retrieval_weights` and
    :func:`retrieval_metrics`)."""
    sizes = sorted({int(n) for n in sizes})
    sums: dict[str, dict[str, list[float]]] = {rule: {} for rule in rules}
    for _ in range(trials):
        k = sample_keys(keys, sizes[-1], d_k, generator, correlation, dtype)
        v = sample_values(values, sizes[-1], d_v, generator, dtype)
        for rule in rules:
            for index, (n, weights) in enumerate(zip(sizes, retrieval_weights(rule, k, sizes, eta, beta))):
                _add(sums[rule], index, len(sizes), retrieval_metrics(weights @ v[:n], v[:n], eps, weights))
    return {rule: _means(metrics, trials) for rule, metrics in sums.items()}


def _add(sums: dict[str, list[float]], index: int, count: int, metrics: Mapping[str, float]) -> None:
    """Add one trial's ``metrics`` at size number ``index`` (of ``count``) to the running sums."""
    for name, value in metrics.items():
        sums.setdefault(name, [0.0] * count)[index] += value


def _means(sums: Mapping[str, list[float]], trials: int) -> dict[str, list[float]]:
    """Running sums over ``trials`` as means."""
    return {name: [total / trials for total in per_size] for name, per_size in sums.items()}


# ----------------------------------------------------------------------------------------------------------
# The lightning-attention state
# ----------------------------------------------------------------------------------------------------------

def lightning_state_curves(d_k: int, d_v: int, sizes: Sequence[int], slopes: Sequence[float], trials: int,
                           generator: torch.Generator, keys: str = "random", correlation: float = 0.0,
                           eps: float = 0.5) -> dict[float, dict[str, list[float]]]:
    """``{slope: {metric: [mean over trials per size]}}`` for the lightning-attention state: the first ``N``
    pairs are streamed through :func:`~vlnkit.perception.kernels.lightning.lightning_attn` (one head per
    decay rate in ``slopes``, ``lam = exp(-s)``; ``s = 0`` is the plain Hebbian memory), and each key reads
    the kernel's final state ``S`` (``o_j = k_j^T S``). The retrieval weights are known in closed form,
    ``W_ji = lam^(N-1-i) k_i^T k_j``, so ``adversarial`` is reported too."""
    from vlnkit.perception.kernels.lightning import lightning_attn

    sizes = sorted({int(n) for n in sizes})
    rates = torch.tensor([float(s) for s in slopes], dtype=torch.float32)
    heads = len(rates)
    sums: dict[float, dict[str, list[float]]] = {float(s): {} for s in slopes}
    for _ in range(trials):
        k_all = sample_keys(keys, sizes[-1], d_k, generator, correlation)
        v_all = sample_values("random", sizes[-1], d_v, generator)
        for index, n in enumerate(sizes):
            k, v = k_all[:n], v_all[:n]
            stream_k = k.expand(1, heads, n, d_k).contiguous()
            stream_v = v.expand(1, heads, n, d_v).contiguous()
            _, state = lightning_attn(stream_k, stream_k, stream_v, rates, output_final_state=True, backend="torch")
            age = torch.arange(n - 1, -1, -1, dtype=torch.float32)
            for h, slope in enumerate(rates.tolist()):
                weights = (k @ k.T) * torch.exp(-slope * age)[None, :]
                _add(sums[float(slopes[h])], index, len(sizes), retrieval_metrics(k @ state[0, h], v, eps, weights))
    return {slope: _means(metrics, trials) for slope, metrics in sums.items()}


# ----------------------------------------------------------------------------------------------------------
# The Mem4Nav long-term memory
# ----------------------------------------------------------------------------------------------------------

def agent_ltm(agent: str = "modular", settings: Mapping[str, Any] | None = None) -> LongTermMemory:
    """The long-term memory the agent ``agent`` builds (``configs/agent/<agent>.yaml`` with ``settings``
    merged over it): its embedding size, LTM settings, memory seed and ``ltm_weights``."""
    from omegaconf import OmegaConf

    from vlnkit.agents import create
    from vlnkit.agents.memory_support import agent_memory, load_agent_config

    cfg = OmegaConf.to_container(load_agent_config(agent, dict(settings or {})), resolve=True)
    memory, _ = agent_memory(create(agent, cfg))
    if memory.ltm is None:
        raise ValueError(f"the {agent} agent's memory ({memory.config.parts}) has no LTM")
    return memory.ltm


def _place_positions(n: int, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct positions ``(n, 3)`` on a square grid ``spacing`` metres apart, in random order."""
    side = int(math.ceil(math.sqrt(n)))
    cells = rng.permutation(side * side)[:n]
    return np.stack([cells % side, cells // side, np.zeros(n)], axis=1) * spacing


def ltm_recall_curve(memory: LongTermMemory, sizes: Sequence[int], trials: int, seed: int = 0,
                     keys: str = "random", correlation: float = 0.0, noise: float = 0.05, jitter: float = 1.0,
                     spacing: float = 10.0, query: str = "network") -> dict[str, list[float]]:
    """``{"recall_at_1", "recall_at_m", "decode_cos", "distinct_top1", "chance": [mean over trials per size]}``
    of the LTM ``memory`` (its model as it is; its contents are cleared) when ``N`` places are stored, for
    each ``N`` in ``sizes`` (see the module docstring; views come from :func:`sample_keys` with ``keys`` and
    ``correlation``; ``m`` is the memory's ``top_m``). ``distinct_top1`` is the number of distinct tokens the
    ``N`` reads put first, over ``N`` (1 when every place gets its own token back, ``1/N`` when all reads
    return one token); ``chance`` is ``min(1, m / N)``, recall@m of a read that ignores its query."""
    if query not in ("network", "token"):
        raise ValueError(f"query must be network or token, got {query!r}")
    sizes = sorted({int(n) for n in sizes})
    dim, m = memory.dim, memory.config.top_m
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    totals = {name: [0.0] * len(sizes) for name in ("recall_at_1", "recall_at_m", "decode_cos", "distinct_top1")}
    for _ in range(trials):
        memory.clear()
        views = sample_keys(keys, sizes[-1], dim, generator, correlation).numpy()
        positions = _place_positions(sizes[-1], spacing, rng)
        revisits = views + rng.standard_normal(views.shape).astype(np.float32) * (noise / math.sqrt(dim))
        revisits /= np.linalg.norm(revisits, axis=1, keepdims=True)
        seen = positions + np.concatenate([rng.standard_normal((sizes[-1], 2)) * jitter,
                                           np.zeros((sizes[-1], 1))], axis=1)
        written = 0
        for index, n in enumerate(sizes):
            memory.write(np.arange(written, n), views[written:n])
            written = n
            found, decoded = _read_places(memory, revisits[:n], seen[:n], query)
            truth = np.arange(n)
            totals["recall_at_1"][index] += float(np.mean(found[:, 0] == truth))
            totals["recall_at_m"][index] += float(np.mean((found == truth[:, None]).any(axis=1)))
            cos = (decoded * views[:n]).sum(axis=1) / np.maximum(np.linalg.norm(decoded, axis=1), 1e-30)
            totals["decode_cos"][index] += float(np.mean(cos))
            totals["distinct_top1"][index] += len(np.unique(found[:, 0])) / n
    curves = _means(totals, trials)
    curves["chance"] = [min(1.0, m / n) for n in sizes]
    return curves


def _read_places(memory: LongTermMemory, views: np.ndarray, positions: np.ndarray,
                 query: str) -> tuple[np.ndarray, np.ndarray]:
    """Per revisit (a row of ``views`` seen at ``positions``): the keys of the ``top_m`` tokens found, nearest
    first (``-1`` where fewer are stored), and the view decoded from the nearest token."""
    m = memory.config.top_m
    found = np.full((len(views), m), -1, dtype=np.int64)
    if query == "network":
        decoded = np.zeros_like(views)
        for j, (view, position) in enumerate(zip(views, positions)):
            readout = memory.read(view, position)
            found[j, : len(readout)] = readout.keys
            decoded[j] = readout.embeddings[0]
        return found, decoded
    memory.flush()
    tokens = memory.model.inference().r(np.concatenate([np.zeros_like(views), views], axis=1))
    for j, token in enumerate(tokens):
        keys, _ = memory.index.search(token, m)
        found[j, : len(keys)] = keys
    with torch.inference_mode():
        preimages = memory.model.r.inverse(torch.from_numpy(memory.index.get(found[:, 0]))).numpy()
    return found, preimages[:, memory.dim :]


def ltm_place_capacity(memory: LongTermMemory, max_places: int = 1024, threshold: float = 0.9, trials: int = 2,
                       query: str = "network", seed: int = 0, **probe: Any) -> float | None:
    """How many places ``memory`` (an LTM of a given size and weights, e.g. :func:`agent_ltm`) holds before
    recall@1 at revisits falls below ``threshold``: :func:`capacity_at` over :func:`ltm_recall_curve` on the
    sizes 1, 2, 4, ... ``max_places`` (``probe`` passes its view and revisit settings); ``None`` when recall
    stays above the threshold up to ``max_places``. Clears the memory's contents."""
    sizes = sorted({2 ** i for i in range(int(math.log2(max_places)) + 1)} | {int(max_places)})
    curve = ltm_recall_curve(memory, sizes, trials, seed, query=query, **probe)
    return capacity_at(sizes, curve["recall_at_1"], threshold)
