"""Episode metrics for the street-graph tasks (Touchdown, Map2Seq).

Every metric is computed per episode and returned as one numpy array per metric, so that callers
can slice, bootstrap or aggregate them (:func:`aggregate` takes the means). Routes are sequences of
node indices of a :class:`~vlnkit.envs.street.graph.StreetGraph`: the nodes the agent visited, in
order, with consecutive duplicates already removed (turning in place does not add a node). The gold
route's last node is the goal.

Definitions (``R`` the gold route, ``P`` the predicted route, hops counted on the undirected graph):

``task_completion`` (TC)
    1 when ``P[-1]`` is the goal or one of its 1-hop neighbours in either link direction, else 0.
    As in VLN-Transformer, map2seq_vln and VELMA (``nx.all_neighbors`` of the goal plus the goal).
``shortest_path_distance`` (SPD)
    Hops from ``P[-1]`` to the goal. Undirected by default, as in the Touchdown code lineage
    (VLN-Transformer ``touchdown/utils.py`` and map2seq_vln ``vln/utils.py`` load the graph as an
    ``nx.Graph``); with this choice ``TC == (SPD <= 1)``. VELMA instead searches an ``nx.DiGraph``
    from ``P[-1]`` to the goal; ``spd_directed=True`` reproduces that. On the full Touchdown graph
    only 3 of 61,319 links lack a reverse link, so the two agree almost everywhere.
``sed``
    ``TC * (1 - OSA(P, R) / max(|P|, |R|))``. The reference code calls
    ``pyxdameraulevenshtein.damerau_levenshtein_distance``, which implements the *restricted*
    Damerau-Levenshtein (optimal string alignment) distance, so this uses
    :class:`rapidfuzz.distance.OSA` on the node-index sequences. The unrestricted distance can be
    smaller (``"CA"`` to ``"ABC"``: OSA 3, unrestricted 2).
``ndtw_street``, ``sdtw_street``
    ``exp(-DTW / (2 * sqrt(|R|)))`` with DTW over undirected hop distances, as VLN-Transformer and
    map2seq_vln compute it (their ``_SUCCESS_THRESHOLD = 2``) and FLAME reports it;
    ``sdtw_street = TC * ndtw_street`` is their SDTW.
``ndtw``, ``sdtw``
    The standard nDTW of Ilharco et al. (2019), ``exp(-DTW / (|R| * d_th))``, with Euclidean
    distances in metres between node positions (:attr:`StreetGraph.xy`); ``sdtw = TC * ndtw``.
    ``d_th`` defaults to :data:`DEFAULT_NDTW_THRESHOLD_M` = 10 m: one node spacing (the median link
    of the real Touchdown graph is 9.95 m), the same tolerance TC grants with its one hop.
``cls``
    Coverage weighted by length score (Jain et al., 2019), as map2seq_vln computes it on street
    graphs: path coverage ``PC = mean over r in R of exp(-hops(r, P))``, ``hops(r, P)`` the
    undirected hops from gold node ``r`` to the nearest node of ``P``; expected length
    ``EPL = PC * |R|``; length score ``LS = EPL / (EPL + |EPL - |P||)``; ``cls = PC * LS``. Lengths
    are node counts and there is no distance threshold (map2seq_vln's ``cal_cls``). A gold node that
    cannot be reached counts ``exp(-inf) = 0``. See :func:`coverage_weighted_by_length`; the
    continuous tasks' CLS, in metres, is defined with the other VLN-CE metrics further down.
``kpa``
    VELMA's key-point accuracy (VELMA stores it in an output field named ``sed``; it is not SED).
    See :func:`key_points` and :func:`key_point_accuracy`.
``path_length``
    Metres travelled along ``P`` (sum of the straight segments between consecutive nodes).
``steps``
    Number of actions the agent took; only known to the caller, so present only when given.

Hop distances come from one shortest-path search per distinct gold node of the batch (the goal is
one of them), run in chunks to bound memory. Each search stops at a radius that bounds the hops
needed when both routes are walks from the same start, so it covers a ball around the source rather
than the whole city; pairs beyond that radius (routes that are not such walks) are searched again
without a bound, so the values are always exact. DTW runs as one dynamic programme over all
episodes at once (:func:`dtw_distances`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from rapidfuzz.distance import OSA
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from vlnkit.envs.street.graph import StreetGraph

DEFAULT_NDTW_THRESHOLD_M = 10.0
"""Default ``d_th`` of the standard nDTW on street graphs, in metres (one node spacing)."""

STREET_NDTW_SCALE = 2.0
"""The constant in the street literature's ``exp(-DTW / (2 * sqrt(|R|)))``."""

INTERSECTION_MIN_DEGREE = 3
"""Out-degree from which a node counts as an intersection for key points (VELMA: more than 2)."""

Route = Sequence[int] | np.ndarray


def edit_distance(pred_route: Route, gold_route: Route) -> int:
    """Restricted Damerau-Levenshtein (optimal string alignment) distance between two routes.

    This is the distance pyxDamerauLevenshtein computes, which the Touchdown/VLN-Transformer code
    uses for SED.
    """
    return int(OSA.distance(np.asarray(pred_route).tolist(), np.asarray(gold_route).tolist()))


def key_points(route: Route, out_degree: np.ndarray) -> list[tuple[int, ...]]:
    """VELMA's key points of a route, for key-point accuracy.

    VELMA lists, for a route of at least two nodes: the start node and the second node, as two
    separate entries (``(node,)`` here), then every move ``(node, next_node)`` that leaves an
    intersection (out-degree >= :data:`INTERSECTION_MIN_DEGREE`). Its code writes the start as
    ``list((route[0], route[1]))``, which spreads the first move into two node entries; this is kept
    so that scores match published VELMA numbers. A one-node route has no key points.
    """
    nodes = np.asarray(route).tolist()
    if len(nodes) <= 1:
        return []
    points: list[tuple[int, ...]] = [(nodes[0],), (nodes[1],)]
    points += [(a, b) for a, b in zip(nodes[:-1], nodes[1:]) if out_degree[a] >= INTERSECTION_MIN_DEGREE]
    return points


def key_point_accuracy(
    pred_route: Route, gold_route: Route, out_degree: np.ndarray, task_completed: bool
) -> float:
    """VELMA's key-point accuracy of one episode.

    The gold key points (:func:`key_points` of the gold route) plus the goal form the denominator.
    A gold key point is hit when it is among the predicted route's key points, wherever it occurs
    (VELMA intersects the two sets, so the order of moves and a detour before the right move do not
    matter); the goal is hit when the task is completed (the TC criterion).
    """
    gold = key_points(gold_route, out_degree)
    hits = len(set(gold) & set(key_points(pred_route, out_degree))) + int(bool(task_completed))
    return hits / (len(gold) + 1)


def coverage_weighted_by_length(
    coverage: np.ndarray, reference_length: np.ndarray, predicted_length: np.ndarray
) -> np.ndarray:
    """CLS of each episode from its path coverage ``PC`` and the two path lengths (Jain et al., 2019).

    ``EPL = PC * reference_length``, ``LS = EPL / (EPL + |EPL - predicted_length|)``, ``CLS = PC * LS``.
    Where ``EPL`` and ``predicted_length`` are both 0 (a one-point reference and an agent that never
    moved) the lengths agree and ``LS`` is 1, the value ``LS`` has wherever ``EPL == predicted_length``.
    """
    expected = coverage * reference_length
    denominator = expected + np.abs(expected - predicted_length)
    score = np.divide(expected, denominator, out=np.ones_like(expected), where=denominator > 0)
    return coverage * score


def dtw_distances(costs: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
    """Dynamic time warping distance of each cost matrix, ``costs[e][i, j]`` the cost of pairing
    reference point ``i`` with query point ``j``.

    DTW is the cheapest monotone alignment from ``(0, 0)`` to ``(n-1, m-1)`` moving by ``(1, 0)``,
    ``(0, 1)`` or ``(1, 1)``, summing the cost of every visited cell. Episodes are sorted by size and
    processed ``batch_size`` at a time, the recurrence running once per cell over the whole batch.
    Empty matrices are not allowed.
    """
    out = np.empty(len(costs))
    if len(costs) == 0:
        return out
    shapes = np.array([c.shape for c in costs], dtype=np.int64).reshape(len(costs), 2)
    if (shapes == 0).any():
        raise ValueError("dtw_distances: empty cost matrix")
    order = np.argsort(shapes[:, 0] * shapes[:, 1], kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        rows, cols = shapes[idx, 0], shapes[idx, 1]
        batch = np.full((len(idx), rows.max(), cols.max()), np.inf)
        for k, e in enumerate(idx):
            batch[k, : rows[k], : cols[k]] = costs[e]
        # prev[:, j + 1] is the best cost of an alignment ending at cell (i - 1, j); column 0 is the
        # virtual start, 0 before the first row and unreachable after it.
        prev = np.full((len(idx), cols.max() + 1), np.inf)
        prev[:, 0] = 0.0
        result = np.empty(len(idx))
        for i in range(rows.max()):
            from_above = np.minimum(prev[:, 1:], prev[:, :-1])
            cur = np.full_like(prev, np.inf)
            for j in range(cols.max()):
                cur[:, j + 1] = batch[:, i, j] + np.minimum(from_above[:, j], cur[:, j])
            done = rows == i + 1
            result[done] = cur[done, cols[done]]
            prev = cur
        out[idx] = result
    return out


def _as_routes(routes: Sequence[Route], num_nodes: int, name: str) -> list[np.ndarray]:
    """Routes as 1-D int64 arrays, checked to be non-empty and to hold valid node indices."""
    arrays = [np.asarray(r, dtype=np.int64) for r in routes]
    for e, r in enumerate(arrays):
        if r.ndim != 1 or len(r) == 0:
            raise ValueError(f"{name}[{e}]: a route must be a non-empty 1-D sequence of node indices")
        if r.min() < 0 or r.max() >= num_nodes:
            raise ValueError(f"{name}[{e}]: node index out of range [0, {num_nodes})")
    return arrays


def _pair_hops(
    graph_matrix: csr_matrix, sources: np.ndarray, targets: np.ndarray, limits: np.ndarray, chunk: int
) -> np.ndarray:
    """Hop counts ``out[k]`` of a shortest path ``sources[k] -> targets[k]`` in ``graph_matrix``.

    One search per distinct source, ``chunk`` sources at a time. ``limits[k]`` is a guess of an upper
    bound on the pair's distance: each search stops at the largest guess of its chunk (sources are
    grouped by guess), which keeps it to a ball around the source on large graphs; pairs left
    unresolved by a too small guess get a second, unbounded search, so the result is exact whatever
    the guesses. Unreachable pairs get ``inf``.
    """
    out = np.full(len(sources), np.inf)
    unique, inverse = np.unique(sources, return_inverse=True)
    source_limit = np.zeros(len(unique))
    np.maximum.at(source_limit, inverse, limits)
    by_limit = np.argsort(source_limit, kind="stable")
    rank = np.empty_like(by_limit)
    rank[by_limit] = np.arange(len(unique))
    pair_rank = rank[inverse]
    pair_order = np.argsort(pair_rank, kind="stable")
    sorted_rank = pair_rank[pair_order]
    for start in range(0, len(unique), chunk):
        stop = min(start + chunk, len(unique))
        lo, hi = np.searchsorted(sorted_rank, [start, stop])
        pairs = pair_order[lo:hi]
        rows = dijkstra(
            graph_matrix,
            directed=True,
            unweighted=True,
            indices=unique[by_limit[start:stop]],
            limit=source_limit[by_limit[stop - 1]],
        )
        out[pairs] = rows[pair_rank[pairs] - start, targets[pairs]]
    unresolved = np.flatnonzero(np.isinf(out) & np.isfinite(limits))
    if len(unresolved):
        out[unresolved] = _pair_hops(
            graph_matrix, sources[unresolved], targets[unresolved], np.full(len(unresolved), np.inf), chunk
        )
    return out


def street_metrics(
    graph: StreetGraph,
    pred_routes: Sequence[Route],
    gold_routes: Sequence[Route],
    pred_steps: Sequence[int] | np.ndarray | None = None,
    *,
    ndtw_threshold_m: float = DEFAULT_NDTW_THRESHOLD_M,
    spd_directed: bool = False,
    search_chunk: int = 256,
) -> dict[str, np.ndarray]:
    """Per-episode street metrics of predicted routes against gold routes.

    Args:
        graph: the street graph the routes live on.
        pred_routes: per episode, the node indices the agent visited (consecutive duplicates removed).
        gold_routes: per episode, the gold route's node indices; its last node is the goal.
        pred_steps: per episode, the number of actions the agent took; adds the ``steps`` key.
        ndtw_threshold_m: ``d_th`` of the standard nDTW, in metres.
        spd_directed: measure SPD along link directions from the final node to the goal (VELMA)
            instead of on the undirected graph (Touchdown, VLN-Transformer, map2seq_vln).
        search_chunk: number of shortest-path sources searched at once (memory: ``search_chunk *
            num_nodes`` floats).

    Returns:
        ``task_completion``, ``shortest_path_distance``, ``sed``, ``ndtw_street``, ``sdtw_street``,
        ``ndtw``, ``sdtw``, ``cls``, ``kpa``, ``path_length`` (and ``steps`` when given), each a float
        array of one value per episode; fractions lie in [0, 1] (papers print them times 100). SPD is
        ``inf`` when the goal cannot be reached from the final node. The definitions are in the
        module docstring.
    """
    preds = _as_routes(pred_routes, graph.num_nodes, "pred_routes")
    golds = _as_routes(gold_routes, graph.num_nodes, "gold_routes")
    if len(preds) != len(golds):
        raise ValueError(f"street_metrics: {len(preds)} predicted routes for {len(golds)} gold routes")
    num = len(golds)
    gold_len = np.array([len(r) for r in golds], dtype=np.int64)
    pred_len = np.array([len(r) for r in preds], dtype=np.int64)

    # Every (gold node, predicted node) pair of every episode, row-major per episode, with a guess
    # of its hop distance: walks that share their start are at most i + j hops apart at steps i, j.
    empty = [np.empty(0, dtype=np.int64)]
    src = np.concatenate([np.repeat(g, len(p)) for g, p in zip(golds, preds)] or empty)
    dst = np.concatenate([np.tile(p, len(g)) for g, p in zip(golds, preds)] or empty)
    guess = np.concatenate(
        [np.add.outer(np.arange(n), np.arange(m)).ravel() for n, m in zip(gold_len, pred_len)] or empty
    )
    undirected = (graph.adjacency + graph.adjacency.T).tocsr()
    hops = _pair_hops(undirected, src, dst, guess.astype(np.float64), chunk=search_chunk)
    metres = np.linalg.norm(graph.xy[src] - graph.xy[dst], axis=1)
    bounds = np.concatenate([[0], np.cumsum(gold_len * pred_len)])
    spans = [(bounds[e], bounds[e + 1], gold_len[e], pred_len[e]) for e in range(num)]
    dtw_hops = dtw_distances([hops[a:b].reshape(n, m) for a, b, n, m in spans])
    dtw_metres = dtw_distances([metres[a:b].reshape(n, m) for a, b, n, m in spans])

    final_hops = hops[bounds[1:] - 1]  # (goal, final node): the last pair of each episode
    tc = (final_hops <= 1).astype(np.float64)
    goals = np.array([g[-1] for g in golds], dtype=np.int64)
    finals = np.array([p[-1] for p in preds], dtype=np.int64)
    spd = final_hops
    if spd_directed:  # search from the goal against link direction; the undirected SPD is the guess
        spd = _pair_hops(graph.adjacency.T.tocsr(), goals, finals, final_hops, chunk=search_chunk)

    osa = np.array([edit_distance(p, g) for p, g in zip(preds, golds)], dtype=np.float64)
    sed = tc * (1.0 - osa / np.maximum(pred_len, gold_len))
    ndtw_street = np.exp(-dtw_hops / (STREET_NDTW_SCALE * np.sqrt(gold_len)))
    ndtw = np.exp(-dtw_metres / (gold_len * ndtw_threshold_m))
    # CLS: the pairs of one gold node are a run of |P| entries; its minimum is the hops to the nearest
    # predicted node.
    row_len = np.repeat(pred_len, gold_len)
    nearest = np.minimum.reduceat(hops, np.cumsum(row_len) - row_len)
    coverage = np.bincount(np.repeat(np.arange(num), gold_len), weights=np.exp(-nearest), minlength=num) / gold_len
    cls = coverage_weighted_by_length(coverage, gold_len.astype(np.float64), pred_len.astype(np.float64))
    kpa = np.array(
        [key_point_accuracy(p, g, graph.out_degree, bool(t)) for p, g, t in zip(preds, golds, tc)],
        dtype=np.float64,
    )

    visited = np.concatenate(preds or empty)
    episode = np.repeat(np.arange(num), pred_len)
    segment = np.linalg.norm(np.diff(graph.xy[visited], axis=0), axis=1)
    within = episode[1:] == episode[:-1]
    path_length = np.bincount(episode[1:][within], weights=segment[within], minlength=num).astype(np.float64)

    result = {
        "task_completion": tc,
        "shortest_path_distance": spd,
        "sed": sed,
        "ndtw_street": ndtw_street,
        "sdtw_street": tc * ndtw_street,
        "ndtw": ndtw,
        "sdtw": tc * ndtw,
        "cls": cls,
        "kpa": kpa,
        "path_length": path_length,
    }
    if pred_steps is not None:
        steps = np.asarray(pred_steps, dtype=np.float64)
        if steps.shape != (num,):
            raise ValueError(f"street_metrics: pred_steps has shape {steps.shape}, expected ({num},)")
        result["steps"] = steps
    return result


def aggregate(per_episode: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Mean of every per-episode metric, plus ``num_episodes``.

    Means of zero episodes are ``nan``. Arrays of different lengths raise ``ValueError``.
    """
    lengths = {len(v) for v in per_episode.values()}
    if len(lengths) > 1:
        raise ValueError(f"aggregate: per-episode arrays have different lengths {sorted(lengths)}")
    num = lengths.pop() if lengths else 0
    means: dict[str, float] = {k: float(np.mean(v)) if num else float("nan") for k, v in per_episode.items()}
    means["num_episodes"] = num
    return means


# --------------------------------------------------------------------------------------------------
# Continuous tasks (VLN-CE)
# --------------------------------------------------------------------------------------------------
#
# Definitions (shared/docs/metrics.md; VLN-CE's measures in habitat-lab), per episode, with ``P`` the
# agent's positions (start first, one per step), ``g_i`` the geodesic distance from ``P[i]`` to the
# goal, ``R`` the reference path (the ground-truth locations) and ``d = 3.0`` m:
#
# ``navigation_error`` (NE)   ``g_last``, the geodesic distance from the final position to the goal.
# ``success`` (SR)            1 when the agent called STOP and ``NE < d``.
# ``oracle_success`` (OSR)    1 when some ``g_i < d``.
# ``path_length`` (TL)        the summed Euclidean length of the steps between consecutive positions.
# ``spl``                     ``SR * l / max(TL, l)``, ``l`` the geodesic start-to-goal distance.
# ``ndtw``                    ``exp(-DTW(P', R) / (|R| * d))`` with Euclidean point distances, ``P'`` the
#                             positions with consecutive repeats removed (VLN-CE's NDTW only records a
#                             position when it changed); exact DTW, where VLN-CE uses fastdtw.
# ``sdtw``                    ``SR * ndtw``.
# ``cls``                     Coverage weighted by length score (Jain et al., 2019): ``PC = mean over r in R
#                             of exp(-d(r, P) / d)``, ``d(r, P)`` the Euclidean distance (the one nDTW uses)
#                             from ``r`` to the nearest position of ``P``; ``EPL = PC * PL(R)``,
#                             ``LS = EPL / (EPL + |EPL - TL|)``, ``cls = PC * LS``, ``PL(R)`` the summed
#                             Euclidean length of ``R`` (:func:`coverage_weighted_by_length`).
# ``steps``, ``collisions``   actions taken; actions whose motion was blocked.
#
# Episodes without a goal (test splits: goal distances are ``nan``) get ``nan`` for every metric but
# ``path_length``, ``steps`` and ``collisions`` (and ``ndtw`` and ``cls``, which need only the reference);
# episodes without a reference get ``nan`` for ``ndtw``, ``sdtw`` and ``cls``.

CONTINUOUS_SUCCESS_DISTANCE_M = 3.0
"""R2R-CE's success distance (habitat-lab's stock VLN config leaves 0.2 m)."""


def drop_repeats(points: np.ndarray) -> np.ndarray:
    """``points`` ``(T, 3)`` without consecutive duplicates (the first of each run is kept)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(points) < 2:
        return points
    keep = np.ones(len(points), dtype=bool)
    keep[1:] = np.any(points[1:] != points[:-1], axis=1)
    return points[keep]


def trajectory_length(points: np.ndarray) -> float:
    """Summed Euclidean length of the segments between consecutive ``points`` ``(T, 3)``."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())


def continuous_metrics(
    paths: Sequence[np.ndarray],
    goal_distances: Sequence[np.ndarray],
    references: Sequence[np.ndarray | None],
    shortest: Sequence[float] | np.ndarray,
    stopped: Sequence[bool] | np.ndarray,
    steps: Sequence[int] | np.ndarray | None = None,
    collisions: Sequence[int] | np.ndarray | None = None,
    *,
    success_distance: float = CONTINUOUS_SUCCESS_DISTANCE_M,
) -> dict[str, np.ndarray]:
    """Per-episode VLN-CE metrics (definitions above).

    Args:
        paths: per episode, the agent's positions ``(T, 3)``, start first.
        goal_distances: per episode, the geodesic distance to the goal at each position ``(T,)``.
        references: per episode, the reference path ``(R, 3)`` (ground-truth locations), or ``None``
            when there is none (``ndtw``, ``sdtw`` and ``cls`` are then ``nan``).
        shortest: per episode, the geodesic distance from start to goal (``l`` of SPL).
        stopped: per episode, whether the agent ended with STOP.
        steps, collisions: per episode counts, copied to the ``steps`` and ``collisions`` keys.
        success_distance: ``d`` in metres (also the ``d_th`` of nDTW and CLS).

    Returns:
        ``navigation_error``, ``success``, ``oracle_success``, ``spl``, ``ndtw``, ``sdtw``, ``cls``,
        ``path_length`` (plus ``steps`` and ``collisions`` when given), one float per episode. ``cls``
        measures, like ``ndtw``, Euclidean (straight-line, 3-D) distances between path points, not
        geodesic ones, and the path lengths ``PL(R)`` and ``TL`` in metres.
    """
    num = len(paths)
    if not (len(goal_distances) == len(references) == len(shortest) == len(stopped) == num):
        raise ValueError("continuous_metrics: paths, goal_distances, references, shortest and stopped must have the same length")
    ne = np.empty(num)
    osr = np.empty(num)
    tl = np.empty(num)
    for e, (path, dist) in enumerate(zip(paths, goal_distances)):
        dist = np.asarray(dist, dtype=np.float64).reshape(-1)
        if len(dist) != len(np.asarray(path).reshape(-1, 3)) or len(dist) == 0:
            raise ValueError(f"continuous_metrics: episode {e} needs one goal distance per position")
        ne[e] = dist[-1]
        osr[e] = float((dist < success_distance).any())
        tl[e] = trajectory_length(path)
    sr = (np.asarray(stopped, dtype=bool) & (ne < success_distance)).astype(np.float64)
    no_goal = np.isnan(ne)
    sr[no_goal] = np.nan
    osr[no_goal] = np.nan
    length = np.asarray(shortest, dtype=np.float64)
    denominator = np.maximum(tl, length)
    spl = np.where(denominator > 0, sr * length / np.where(denominator > 0, denominator, 1.0), sr)
    ndtw = np.full(num, np.nan)
    cls = np.full(num, np.nan)
    with_ref = [e for e, r in enumerate(references) if r is not None and len(r)]
    if with_ref:
        costs = []
        for e in with_ref:
            ref = np.asarray(references[e], dtype=np.float64).reshape(-1, 3)
            query = drop_repeats(paths[e])
            costs.append(np.linalg.norm(ref[:, None, :] - query[None, :, :], axis=2))
        dtw = dtw_distances(costs)
        ref_len = np.array([len(np.asarray(references[e]).reshape(-1, 3)) for e in with_ref], dtype=np.float64)
        ndtw[with_ref] = np.exp(-dtw / (ref_len * success_distance))
        coverage = np.array([np.exp(-c.min(axis=1) / success_distance).mean() for c in costs])
        ref_metres = np.array([trajectory_length(references[e]) for e in with_ref])
        cls[with_ref] = coverage_weighted_by_length(coverage, ref_metres, tl[with_ref])
    result = {
        "navigation_error": ne,
        "success": sr,
        "oracle_success": osr,
        "spl": spl,
        "ndtw": ndtw,
        "sdtw": sr * ndtw,
        "cls": cls,
        "path_length": tl,
    }
    for key, values in (("steps", steps), ("collisions", collisions)):
        if values is not None:
            arr = np.asarray(values, dtype=np.float64)
            if arr.shape != (num,):
                raise ValueError(f"continuous_metrics: {key} has shape {arr.shape}, expected ({num},)")
            result[key] = arr
    return result
