"""Memory benchmark: per-step write+retrieve latency as the memory grows, bytes per observation, and the
sparse octree against open3d's octree on the same points.

The workload is an agent walking a street grid (``block`` metre blocks, a turn choice at every
intersection, ``step`` metres per step) whose observation embeddings come from a smooth random appearance
field over the plane (random Fourier features, length scale ``length_scale`` metres) plus noise, so
nearby views look alike and the topology graph makes a node every few metres. Each timed step is what an
agent does: ``retrieve`` for the new observation, then ``write`` it.

Two latencies are reported per size: ``median_ms_*``/``p99_ms_*`` with the default retrieval policy (on
this walk the STM usually answers; ``stm_hit_rate`` says how often), and ``ltm_median_ms_*``/
``ltm_p99_ms_*`` with ``tau`` above 1 so every retrieval reads the LTM (the worst case: pending tokens
are computed, then an HNSW search and decoding). Everything runs on one thread (torch and faiss).
Sizes count observations written before the timed steps start.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import faiss
import numpy as np
import torch

from vlnkit.memory.mem4nav import Mem4NavConfig, Mem4NavMemory
from vlnkit.memory.octree import SparseOctree

_SIZE_NAMES = {1_000: "1k", 10_000: "10k", 100_000: "100k", 1_000_000: "1m"}
_CHUNK = 8192


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


def run_memory_benchmark(
    sizes: Sequence[int] = (1_000, 10_000, 100_000, 1_000_000),
    timed_steps: int = 1000,
    dim: int = 128,
    seed: int = 0,
    octree_points: int = 1_000_000,
    octree_queries: int = 20_000,
    config: Mem4NavConfig | None = None,
    include_open3d: bool = True,
) -> dict[str, Any]:
    """Run the benchmark single-threaded and return its figures (see the module docstring for keys)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    try:
        result: dict[str, Any] = {"dim": dim, "timed_steps": timed_steps}
        result.update(_latencies(sorted(sizes), timed_steps, dim, seed, config))
        result.update(_octree_rates(octree_points, octree_queries, seed, include_open3d))
        return result
    finally:
        torch.set_num_threads(threads)


def _latencies(
    sizes: list[int], timed_steps: int, dim: int, seed: int, config: Mem4NavConfig | None
) -> dict[str, Any]:
    memory = Mem4NavMemory(config or Mem4NavConfig(dim=dim))
    total = sizes[-1] + 2 * timed_steps * len(sizes)
    stream = _observations(total, dim, seed)
    tau = memory.config.tau
    out: dict[str, Any] = {}
    for size in sizes:
        while memory.writes < size:
            step, embedding, position = next(stream)
            memory.write(embedding, position, step)
        name = size_name(size)
        policy, sources = _timed(memory, stream, timed_steps)
        memory.config.tau = math.inf
        forced, _ = _timed(memory, stream, timed_steps)
        memory.config.tau = tau
        out[f"median_ms_{name}"] = _ms(np.median(policy))
        out[f"p99_ms_{name}"] = _ms(np.percentile(policy, 99))
        out[f"ltm_median_ms_{name}"] = _ms(np.median(forced))
        out[f"ltm_p99_ms_{name}"] = _ms(np.percentile(forced, 99))
        out[f"stm_hit_rate_{name}"] = round(sources.get("stm", 0) / timed_steps, 4)
    memory.flush()
    out["bytes_per_obs"] = int(memory.memory_bytes() / memory.writes)
    out["stored_observations"] = memory.writes
    out["octree_leaves"] = len(memory.octree) if memory.octree is not None else 0
    out["graph_nodes"] = len(memory.graph) if memory.graph is not None else 0
    return out


def _timed(
    memory: Mem4NavMemory, stream: Iterator[tuple[int, np.ndarray, np.ndarray]], steps: int
) -> tuple[np.ndarray, dict[str, int]]:
    """Latencies (ns) of ``steps`` retrieve+write steps and how often each source answered."""
    latencies = np.empty(steps, dtype=np.int64)
    sources: dict[str, int] = {}
    for i in range(steps):
        step, embedding, position = next(stream)
        start = time.perf_counter_ns()
        found = memory.retrieve(embedding, position)
        memory.write(embedding, position, step)
        latencies[i] = time.perf_counter_ns() - start
        sources[found.source] = sources.get(found.source, 0) + 1
    return latencies, sources


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
    """Inserts and leaf lookups per second: this octree (batched and one point per call) and open3d's."""
    rng = np.random.default_rng(seed)
    cloud = rng.uniform(0.0, 1000.0, (points, 3)) * np.array([1.0, 1.0, 0.02])
    probes = cloud[rng.integers(0, points, queries)]
    octree = SparseOctree(leaf_size=1000.0 / 1024)
    start = time.perf_counter()
    octree.insert(cloud)
    out: dict[str, Any] = {"octree_inserts_per_s": round(points / (time.perf_counter() - start))}
    start = time.perf_counter()
    found = octree.lookup(octree.encode(probes))
    out["octree_queries_per_s"] = round(queries / (time.perf_counter() - start))
    start = time.perf_counter()
    for probe in probes:
        octree.lookup(octree.encode_one(probe))
    out["octree_point_queries_per_s"] = round(queries / (time.perf_counter() - start))
    if (found < 0).any():
        raise AssertionError("octree lookup missed an inserted point")
    if include_open3d:
        out.update(_open3d_rates(cloud, probes))
    return out


def _open3d_rates(cloud: np.ndarray, probes: np.ndarray) -> dict[str, Any]:
    """open3d ``Octree`` (depth 10 over the 1 km square, ~1 m leaves): batch build, per-point lookup."""
    import open3d as o3d

    start = time.perf_counter()
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cloud))
    octree = o3d.geometry.Octree(max_depth=10)
    octree.convert_from_point_cloud(pcd, size_expand=0.0)
    inserts = len(cloud) / (time.perf_counter() - start)
    start = time.perf_counter()
    for probe in probes:
        octree.locate_leaf_node(probe)
    queries = len(probes) / (time.perf_counter() - start)
    return {"open3d_inserts_per_s": round(inserts), "open3d_queries_per_s": round(queries)}


def _ms(nanoseconds: float) -> float:
    return round(float(nanoseconds) / 1e6, 4)
