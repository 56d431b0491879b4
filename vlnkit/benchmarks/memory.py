"""Memory benchmark: per-step write+retrieve latency as the memory grows against a brute-force top-3 search
over the same LTM tokens, LTM recall, bytes per observation, and the sparse octree against open3d's octree
on the same points.

``vlnkit bench memory [--sizes 1000,10000,...] [--timed-steps N] [--dim D] [--seed S]`` prints one JSON
line (``--octree-points``, ``--octree-queries`` and ``--no-open3d`` size the octree comparison).

The workload is an agent walking a street grid (``block`` metre blocks, a turn choice at every
intersection, ``step`` metres per step) whose observation embeddings come from a smooth random appearance
field over the plane (random Fourier features, length scale ``length_scale`` metres) plus noise, so
nearby views look alike and the topology graph makes a node every few metres. Each timed step is what an
agent does: ``retrieve`` for the new observation, then ``write`` it (to the octree leaf, the topology
graph, the STM and the LTM tokens of the leaf and the node). A size counts the observations written
before that size's timed steps start; the memory keeps growing through the timed steps, by
``2 * timed_steps`` per size. Latencies are wall-clock ``perf_counter_ns`` per step, in milliseconds.

Progress goes to stderr, one line as each size starts filling and one when it has been timed (and the
same for the octree comparison), so stdout carries nothing but what the caller prints (the CLI's one JSON
line); ``progress=False`` silences it.

Everything timed runs on one thread: torch and faiss are set to one thread here, and the numpy products on
the timed path (one query, one or two fresh tokens, three tokens to decode, the STM and the index's write
buffer) stay below the size at which OpenBLAS starts threads; larger LTM batches go to torch. numpy's
OpenBLAS pool is sized when numpy loads, so ``OPENBLAS_NUM_THREADS=1 vlnkit bench memory`` pins the
untimed parts (generating observations, the recall reference) too.

Baselines, measured in the same run: ``bruteforce``, an exact top-3 L2 search over every live LTM token
(one matrix-vector product and a top-k in torch, one thread) for the same queries as the recall figure;
``open3d``, open3d's octree on the same points. Ratios divide the figure by the baseline's figure in the
same unit.

Keys (``{n}`` is ``1k``, ``10k``, ``100k``, ``1m`` or the size itself):

* ``median_ms_{n}``, ``p99_ms_{n}``, ``mean_ms_{n}``: the headline, an LTM step. ``tau`` is set above 1 so
  every retrieval takes the long-term-memory path: the STM is queried and passed over, the tokens written
  by the previous step are computed (one reversible-Transformer pass), the query MLP runs, the HNSW index
  and its write buffer are searched for the top 3, and the 3 tokens are decoded; then the write. The mean
  and p99 include what the median does not show: merging the 256-token write buffer into HNSW (one step
  in every hundred or so pays for it) and the occasional rebuild that drops tombstones.
* ``default_policy_median_ms_{n}``, ``default_policy_p99_ms_{n}``, ``default_policy_mean_ms_{n}``: the
  same steps under the configured retrieval policy (STM first, LTM when the best STM cosine is below
  ``tau``), and ``default_policy_stm_hit_rate_{n}``, the share of those retrievals the STM answered. On
  this walk the STM answers nearly every step, so these mostly time the STM path plus the write (pending
  tokens are then computed in batches of ``flush_every`` keys).
* ``ltm_recall_at_3_{n}``: over up to 100 of the headline steps' LTM queries, the share of the exact top 3
  tokens (brute force over every live token) that the index search returned, measured after those steps.
* ``ltm_search_ms_{n}`` and ``bruteforce_search_ms_{n}``: for those queries, the median time of one index
  search (:meth:`TokenIndex.search`, top 3) and of one brute-force top-3 search over the same tokens;
  ``ltm_search_ms_{n}_vs_bruteforce`` is their ratio and ``median_ms_{n}_vs_bruteforce`` the headline step's
  median over one brute-force search (the step's cost in units of this machine's brute-force search).
* ``bytes_per_obs``: :meth:`Mem4NavMemory.memory_bytes` after the last size over observations stored
  (model weights excluded); ``stored_observations``, ``octree_leaves``, ``graph_nodes`` and ``ltm_tokens``
  describe that final memory.
* ``octree_inserts_per_s`` and ``open3d_inserts_per_s``: points per second building each octree from the
  same numpy array of ``octree_points`` points (uniform over a 1000 x 1000 x 20 m slab) in one call
  (:meth:`SparseOctree.insert`; open3d's ``PointCloud`` conversion plus ``convert_from_point_cloud`` at
  depth 10). Like for like: both get the same leaf edge, the slab's extent / 2**10 (what open3d's depth-10
  tree over the slab's bounding cube gets; the cube is expanded by 1e-6 so no point lies on its far
  faces), and both times include converting the input. ``octree_inserts_per_s_vs_open3d`` is their ratio.
* ``octree_queries_per_s`` and ``open3d_queries_per_s``: leaf look-ups per second for ``octree_queries``
  of those points, one Python call per point on both sides (:meth:`SparseOctree.encode_one` plus
  :meth:`SparseOctree.lookup`; open3d's ``locate_leaf_node``, which has no batch form). Every probe must
  find its leaf on both sides. ``octree_queries_per_s_vs_open3d`` is their ratio.
* ``octree_batch_queries_per_s``: the same look-ups in one vectorised call, which open3d has no
  counterpart for.
* Associative capacity (:mod:`vlnkit.memory.capacity`; absent when the memory has no LTM): how many
  places an LTM of the benchmark's size and settings, freshly seeded with ``seed`` (as an agent without
  ``ltm_weights`` has it), holds before recall@1 at revisits falls below 0.9, on the sizes 1, 2, 4, ...
  ``ltm_capacity_max_places`` (each place one view, revisited with view noise 0.05 and 1 m of position
  jitter; one trial): ``ltm_capacity_places`` reads through the LTM's query network, as agents do,
  ``ltm_capacity_places_ideal_query`` with the token the revisit view would write (``R([0 ; v'])``), which
  measures the token store alone; ``null`` means recall stayed above 0.9 up to ``ltm_capacity_max_places``.
  ``hebbian_capacity_at_dim`` is the reference of the same width: the stored pairs a linear-attention
  (Hebbian) memory with keys of size ``dim`` holds before the mean retrieval cosine falls below
  ``1/sqrt 2`` (random unit keys and values, 2 trials; theory ``dim + 1``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import faiss
import numpy as np
import torch

from vlnkit.memory import capacity
from vlnkit.memory.ltm import LongTermMemory
from vlnkit.memory.mem4nav import Mem4NavConfig, Mem4NavMemory
from vlnkit.memory.octree import SparseOctree

_SIZE_NAMES = {1_000: "1k", 10_000: "10k", 100_000: "100k", 1_000_000: "1m"}
_CHUNK = 8192
BRUTEFORCE = "bruteforce: exact top-3 over the same LTM tokens (one matrix-vector product, 1 thread)"
OPEN3D = "open3d: its octree on the same points"
QUICK = {"sizes": (1_000, 10_000), "timed_steps": 200, "octree_points": 200_000, "octree_queries": 5_000}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--sizes``, ``--timed-steps``, ``--dim``, ``--seed`` and the octree comparison's size."""
    parser.add_argument("--sizes", type=lambda text: [int(size) for size in text.split(",")],
                        default=[1_000, 10_000, 100_000, 1_000_000], help="stored observations, comma-separated")
    parser.add_argument("--timed-steps", type=int, default=1000, help="timed write+retrieve steps per size")
    parser.add_argument("--dim", type=int, default=128, help="observation embedding size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--octree-points", type=int, default=1_000_000, help="points of the octree comparison")
    parser.add_argument("--octree-queries", type=int, default=20_000, help="leaf look-ups of the octree comparison")
    parser.add_argument("--no-open3d", dest="include_open3d", action="store_false",
                        help="skip open3d's side of the octree comparison")


def size_name(size: int) -> str:
    """``1k``/``10k``/``100k``/``1m`` for the standard sizes, else the number itself."""
    return _SIZE_NAMES.get(size, str(size))


def street_walk(n: int, seed: int = 0, step: float = 2.0, block: float = 60.0) -> np.ndarray:
    """Positions ``(n, 3)`` of a walk on a square street grid: straight along blocks, turning (left,
    right or straight on, never back) at each intersection."""
    rng = np.random.default_rng(seed)
    per_block = max(1, int(round(block / step)))
    blocks = n // per_block + 1
    turns = rng.choice([-1, 0, 1], size=blocks)
    headings = (np.cumsum(turns) % 4).repeat(per_block)[:n]
    angles = headings * (math.pi / 2)
    moves = np.stack([np.cos(angles), np.sin(angles), np.zeros(n)], axis=1) * step
    return np.cumsum(moves, axis=0).round(6)


class AppearanceField:
    """Unit embeddings ``(n, dim)`` that vary smoothly with position: random Fourier features of the
    ground-plane position mixed to ``dim`` dimensions, plus Gaussian noise of norm about ``noise``."""

    def __init__(
        self, dim: int, seed: int = 0, length_scale: float = 15.0, features: int = 64, noise: float = 0.05
    ) -> None:
        rng = np.random.default_rng(seed)
        self.frequencies = rng.standard_normal((features, 3)) / length_scale
        self.frequencies[:, 2] = 0.0
        self.phases = rng.uniform(0.0, 2 * math.pi, features)
        self.mixing = rng.standard_normal((features, dim)) / math.sqrt(features)
        self.noise = noise
        self.dim = dim
        self._rng = np.random.default_rng(seed + 1)

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        clean = np.cos(positions @ self.frequencies.T + self.phases) @ self.mixing
        clean /= np.linalg.norm(clean, axis=1, keepdims=True)
        noisy = clean + self._rng.standard_normal(clean.shape) * (self.noise / math.sqrt(self.dim))
        return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


def run(
    sizes: Sequence[int] = (1_000, 10_000, 100_000, 1_000_000),
    timed_steps: int = 1000,
    dim: int = 128,
    seed: int = 0,
    octree_points: int = 1_000_000,
    octree_queries: int = 20_000,
    config: Mem4NavConfig | None = None,
    include_open3d: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the benchmark single-threaded and return its figures (see the module docstring for keys);
    ``progress`` prints a line to stderr as each size starts and ends and around the octree comparison."""
    threads = torch.get_num_threads()
    faiss_threads = faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    try:
        baseline = "; ".join([BRUTEFORCE, OPEN3D] if include_open3d else [BRUTEFORCE])
        result: dict[str, Any] = {"baseline": baseline, "dim": dim, "timed_steps": timed_steps}
        say = _progress if progress else _quiet
        result.update(_latencies(sorted(sizes), timed_steps, dim, seed, config, say))
        result.update(capacity_figures(config or Mem4NavConfig(dim=dim), seed, say))
        against = " against open3d" if include_open3d else ""
        say(f"octree: {octree_points} points, {octree_queries} look-ups{against} ...")
        started = time.perf_counter()
        result.update(_octree_rates(octree_points, octree_queries, seed, include_open3d))
        say(f"octree: done in {time.perf_counter() - started:.1f} s")
        return result
    finally:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(faiss_threads)


_RECALL_QUERIES = 100


def _progress(message: str) -> None:
    """One progress line on stderr (flushed at once, so a long size shows while it runs)."""
    print(f"bench memory: {message}", file=sys.stderr, flush=True)


def _quiet(message: str) -> None:
    """No progress output."""


def _latencies(
    sizes: list[int], timed_steps: int, dim: int, seed: int, config: Mem4NavConfig | None,
    say: Callable[[str], None],
) -> dict[str, Any]:
    memory = Mem4NavMemory(config or Mem4NavConfig(dim=dim))
    total = sizes[-1] + 2 * timed_steps * len(sizes)
    stream = _observations(total, dim, seed)
    tau = memory.config.tau
    out: dict[str, Any] = {}
    for size in sizes:
        name = size_name(size)
        started = time.perf_counter()
        say(f"{name}: writing observations {memory.writes} -> {max(size, memory.writes)}, then timing "
            f"2 x {timed_steps} steps ...")
        while memory.writes < size:
            step, embedding, position = next(stream)
            memory.write(embedding, position, step)
        memory.config.tau = math.inf
        forced, _, asked = _timed(memory, stream, timed_steps)
        memory.config.tau = tau
        policy, sources, _ = _timed(memory, stream, timed_steps)
        out.update(_summary(forced, name))
        out.update(_summary(policy, name, "default_policy_"))
        out[f"default_policy_stm_hit_rate_{name}"] = round(sources.get("stm", 0) / timed_steps, 4)
        if memory.ltm is not None and asked:
            out.update(_ltm_search(memory, asked, name))
            out[f"median_ms_{name}_vs_bruteforce"] = round(
                out[f"median_ms_{name}"] / out[f"bruteforce_search_ms_{name}"], 2)
        say(f"{name}: done in {time.perf_counter() - started:.1f} s, median LTM step {out[f'median_ms_{name}']} ms")
    memory.flush()
    out["bytes_per_obs"] = int(memory.memory_bytes() / memory.writes)
    out["stored_observations"] = memory.writes
    out["octree_leaves"] = len(memory.octree) if memory.octree is not None else 0
    out["graph_nodes"] = len(memory.graph) if memory.graph is not None else 0
    out["ltm_tokens"] = len(memory.ltm) if memory.ltm is not None else 0
    return out


CAPACITY_MAX_PLACES = 256
"""The largest number of places the capacity figures store."""


def capacity_figures(config: Mem4NavConfig, seed: int = 0,
                     say: Callable[[str], None] = _quiet) -> dict[str, Any]:
    """The associative-capacity keys (see the module docstring) for a memory of ``config``; none without an
    LTM."""
    if not config.use_ltm:
        return {}
    started = time.perf_counter()
    say(f"capacity: places an LTM of dim {config.dim} holds, up to {CAPACITY_MAX_PLACES} ...")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ltm = LongTermMemory(config.dim, config.descriptor_dim, config.ltm)
    out: dict[str, Any] = {}
    for key, query in (("ltm_capacity_places", "network"), ("ltm_capacity_places_ideal_query", "token")):
        places = capacity.ltm_place_capacity(ltm, CAPACITY_MAX_PLACES, trials=1, query=query, seed=seed)
        out[key] = None if places is None else round(places, 2)
    out["ltm_capacity_max_places"] = CAPACITY_MAX_PLACES
    generator = torch.Generator().manual_seed(seed)
    sizes = capacity.n_grid(2 * config.dim)
    curves = capacity.capacity_curves(config.dim, config.dim, sizes, 2, generator, rules=["hebbian"])
    hebbian = capacity.capacity_at(sizes, curves["hebbian"]["mean_cos"], capacity.THRESHOLDS["mean_cos"])
    out["hebbian_capacity_at_dim"] = None if hebbian is None else round(hebbian, 2)
    say(f"capacity: done in {time.perf_counter() - started:.1f} s")
    return out


def _summary(latencies: np.ndarray, name: str, prefix: str = "") -> dict[str, float]:
    return {
        f"{prefix}median_ms_{name}": _ms(np.median(latencies)),
        f"{prefix}p99_ms_{name}": _ms(np.percentile(latencies, 99)),
        f"{prefix}mean_ms_{name}": _ms(np.mean(latencies)),
    }


def _timed(
    memory: Mem4NavMemory, stream: Iterator[tuple[int, np.ndarray, np.ndarray]], steps: int
) -> tuple[np.ndarray, dict[str, int], list[tuple[np.ndarray, np.ndarray]]]:
    """Latencies (ns) of ``steps`` retrieve+write steps, how often each source answered, and the
    ``(embedding, position)`` of up to :data:`_RECALL_QUERIES` retrievals the LTM answered."""
    latencies = np.empty(steps, dtype=np.int64)
    sources: dict[str, int] = {}
    asked: list[tuple[np.ndarray, np.ndarray]] = []
    every = max(1, steps // _RECALL_QUERIES)
    for i in range(steps):
        step, embedding, position = next(stream)
        start = time.perf_counter_ns()
        found = memory.retrieve(embedding, position)
        memory.write(embedding, position, step)
        latencies[i] = time.perf_counter_ns() - start
        sources[found.source] = sources.get(found.source, 0) + 1
        if found.source == "ltm" and i % every == 0 and len(asked) < _RECALL_QUERIES:
            asked.append((embedding, position))
    return latencies, sources, asked


def _ltm_search(memory: Mem4NavMemory, asked: list[tuple[np.ndarray, np.ndarray]], name: str) -> dict[str, float]:
    """For the LTM queries of ``asked``: recall@3 of the LTM's index search against brute force, and the
    median time of one index search and of one brute-force top-3 search over the same tokens."""
    ltm = memory.ltm
    ltm.flush()
    embeddings = np.stack([embedding for embedding, _ in asked])
    positions = np.stack([position for _, position in asked]).astype(np.float32)
    queries = ltm.model.inference().query(embeddings, positions)
    exact = ltm.index.exact_search(queries, 3)
    found, search_ns = [], []
    for q in queries:
        start = time.perf_counter_ns()
        keys, _ = ltm.index.search(q, 3)
        search_ns.append(time.perf_counter_ns() - start)
        found.append(keys)
    hits = [len(set(f.tolist()) & set(e.tolist())) for f, e in zip(found, exact)]
    tokens = torch.from_numpy(ltm.index.get(ltm.index.keys()))
    norms = (tokens * tokens).sum(dim=1)
    k = min(3, len(tokens))
    brute_ns = []
    for q in torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)):
        start = time.perf_counter_ns()
        torch.topk(norms - 2.0 * (tokens @ q), k, largest=False)
        brute_ns.append(time.perf_counter_ns() - start)
    search, brute = float(np.median(search_ns)), float(np.median(brute_ns))
    return {
        f"ltm_recall_at_3_{name}": round(sum(hits) / exact.size, 4),
        f"ltm_search_ms_{name}": _ms(search),
        f"bruteforce_search_ms_{name}": _ms(brute),
        f"ltm_search_ms_{name}_vs_bruteforce": round(search / brute, 4),
    }


def _observations(total: int, dim: int, seed: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(step, embedding, position)`` along the street walk, embeddings computed a chunk at a time."""
    positions = street_walk(total, seed)
    field = AppearanceField(dim, seed)
    for begin in range(0, total, _CHUNK):
        chunk = positions[begin : begin + _CHUNK]
        embeddings = field(chunk)
        for offset, (embedding, position) in enumerate(zip(embeddings, chunk)):
            yield begin + offset, embedding, position


def _octree_rates(points: int, queries: int, seed: int, include_open3d: bool) -> dict[str, Any]:
    """Inserts and leaf look-ups per second for this octree and open3d's on the same points (like for like:
    see the module docstring)."""
    rng = np.random.default_rng(seed)
    cloud = rng.uniform(0.0, 1000.0, (points, 3)) * np.array([1.0, 1.0, 0.02])
    probes = cloud[rng.integers(0, points, queries)]
    octree = SparseOctree(leaf_size=_open3d_leaf_size(cloud))
    start = time.perf_counter()
    octree.insert(cloud)
    out: dict[str, Any] = {"octree_inserts_per_s": round(points / (time.perf_counter() - start))}
    start = time.perf_counter()
    for probe in probes:
        if octree.lookup(octree.encode_one(probe)) < 0:
            raise AssertionError("octree lookup missed an inserted point")
    out["octree_queries_per_s"] = round(queries / (time.perf_counter() - start))
    start = time.perf_counter()
    found = octree.lookup(octree.encode(probes))
    out["octree_batch_queries_per_s"] = round(queries / (time.perf_counter() - start))
    if (found < 0).any():
        raise AssertionError("octree lookup missed an inserted point")
    if include_open3d:
        out.update(_open3d_rates(cloud, probes))
        out["octree_inserts_per_s_vs_open3d"] = round(out["octree_inserts_per_s"] / out["open3d_inserts_per_s"], 3)
        out["octree_queries_per_s_vs_open3d"] = round(out["octree_queries_per_s"] / out["open3d_queries_per_s"], 3)
    return out


_OPEN3D_DEPTH = 10
_OPEN3D_EXPAND = 1e-6  # open3d's cube must exceed the cloud a little, or the farthest point falls outside it


def _open3d_leaf_size(cloud: np.ndarray) -> float:
    """Leaf edge of open3d's depth-10 octree over ``cloud``: its (slightly expanded) bounding cube / 2**10."""
    extent = float((cloud.max(axis=0) - cloud.min(axis=0)).max())
    return extent * (1.0 + _OPEN3D_EXPAND) / (1 << _OPEN3D_DEPTH)


def _open3d_rates(cloud: np.ndarray, probes: np.ndarray) -> dict[str, Any]:
    """open3d ``Octree`` (depth 10 over the cloud's bounding cube): one-call build, one call per look-up."""
    import open3d as o3d

    start = time.perf_counter()
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cloud))
    octree = o3d.geometry.Octree(max_depth=_OPEN3D_DEPTH)
    octree.convert_from_point_cloud(pcd, size_expand=_OPEN3D_EXPAND)
    inserts = len(cloud) / (time.perf_counter() - start)
    start = time.perf_counter()
    for probe in probes:
        if octree.locate_leaf_node(probe)[0] is None:
            raise AssertionError("open3d lookup missed an inserted point")
    queries = len(probes) / (time.perf_counter() - start)
    return {"open3d_inserts_per_s": round(inserts), "open3d_queries_per_s": round(queries)}


def _ms(nanoseconds: float) -> float:
    return round(float(nanoseconds) / 1e6, 4)
