"""Sparse octree over an unbounded signed world: Morton-coded leaves in a hash map.

Only occupied leaves exist. A leaf is a cube of ``leaf_size`` metres addressed by the Morton code of its
signed integer cell (see :mod:`vlnkit.memory.morton`: +-2**20 cells per axis, i.e. +-1,048 km at a 1 m
leaf). Coarser levels are the same codes shifted right by ``3 * level`` bits; the tree keeps one hash set of
occupied cells per level up to ``depth`` so radius and nearest-leaf queries descend from a coarse level
and only ever visit occupied cells whose box reaches the query sphere.

Each leaf keeps its visit count, the step of its last visit and the last observation embedding written to
it; its long-term-memory token lives in the LTM index under the leaf's code (``Mem4NavMemory.leaf`` joins
the two).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
import torch

from vlnkit.memory import morton

_MAX_START_CELLS = 64
_CHILD_OFFSETS = np.array([[i & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=np.int64)
_CHILD_BITS = np.arange(8, dtype=np.int64)
_INT_OBJECT_BYTES = 36


@dataclass(frozen=True)
class Leaf:
    """A snapshot of one occupied leaf; ``token`` is filled in by :class:`Mem4NavMemory` when it has one."""

    code: int
    cell: tuple[int, int, int]
    center: np.ndarray
    visits: int
    last_step: int
    embedding: np.ndarray | None
    token: np.ndarray | None = None


class SparseOctree:
    """Hash map of occupied leaves keyed by Morton code, with occupancy sets for the coarser levels.

    ``leaf_size`` is the leaf edge in metres; ``depth`` (1-21) is how many coarser levels are indexed above
    the leaves (21 makes the top level a single cell covering the whole world); ``embedding_dim`` sizes the
    per-leaf last-observation embedding (0 stores none).
    """

    def __init__(self, leaf_size: float = 1.0, depth: int = morton.MAX_LEVEL, embedding_dim: int = 0) -> None:
        if leaf_size <= 0:
            raise ValueError(f"leaf_size must be positive, got {leaf_size}")
        if not 1 <= depth <= morton.MAX_LEVEL:
            raise ValueError(f"depth must be in [1, {morton.MAX_LEVEL}], got {depth}")
        self.leaf_size = float(leaf_size)
        self.depth = int(depth)
        self.embedding_dim = int(embedding_dim)
        self.clear()

    def clear(self) -> None:
        """Remove every leaf."""
        self._slot: dict[int, int] = {}
        self._levels: list[set[int]] = [set() for _ in range(self.depth)]
        self._n = 0
        self._codes = np.empty(0, dtype=np.int64)
        self._visits = np.empty(0, dtype=np.int64)
        self._last_step = np.empty(0, dtype=np.int64)
        self._embeddings = np.empty((0, self.embedding_dim), dtype=np.float32)
        self._top_cells: np.ndarray | None = None

    def __len__(self) -> int:
        return self._n

    @property
    def codes(self) -> np.ndarray:
        """Morton codes of the occupied leaves, in insertion order (read-only view)."""
        return _readonly(self._codes[: self._n])

    @property
    def visits(self) -> np.ndarray:
        """Visit counts aligned with :attr:`codes` (read-only view)."""
        return _readonly(self._visits[: self._n])

    @property
    def last_steps(self) -> np.ndarray:
        """Step of each leaf's last visit, aligned with :attr:`codes` (read-only view)."""
        return _readonly(self._last_step[: self._n])

    @property
    def embeddings(self) -> np.ndarray:
        """Last observation embeddings aligned with :attr:`codes` (read-only view)."""
        return _readonly(self._embeddings[: self._n])

    def cell_size(self, level: int = 0) -> float:
        """Edge length in metres of a cell ``level`` levels above the leaves."""
        return self.leaf_size * float(1 << level)

    def encode(self, positions: np.ndarray) -> np.ndarray:
        """Leaf Morton codes of metric ``positions`` ``(..., 3)``."""
        return morton.encode(morton.cells_of(positions, self.leaf_size))

    def encode_one(self, position: np.ndarray) -> int:
        """Leaf Morton code of one metric ``position`` (scalar fast path of :meth:`encode`)."""
        x, y, z = (math.floor(float(c) / self.leaf_size) for c in position)
        return morton.encode_cell(x, y, z)

    @staticmethod
    def parent(codes: np.ndarray | int, levels: int = 1) -> np.ndarray | int:
        """Code of the enclosing cell ``levels`` levels up."""
        return codes >> (3 * levels)

    def cell_centers(self, codes: np.ndarray, level: int = 0) -> np.ndarray:
        """Metric centres ``(n, 3)`` of cells given by their ``codes`` at ``level``."""
        return self._centers(morton.deinterleave(np.asarray(codes, dtype=np.int64)), level)

    def insert(
        self, positions: np.ndarray, embeddings: np.ndarray | None = None, steps: np.ndarray | int | None = None
    ) -> np.ndarray:
        """Record one visit per row of ``positions`` ``(n, 3)``; returns the leaf codes ``(n,)``.

        Missing leaves are created. When a leaf is hit several times in one call its visit count grows by
        that many and it keeps the embedding and step of the last such row.
        """
        positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        n = len(positions)
        codes = np.array([self.encode_one(positions[0])]) if n == 1 else self.encode(positions)
        if embeddings is not None:
            embeddings = np.asarray(embeddings, dtype=np.float32).reshape(n, self.embedding_dim)
        step_array = None if steps is None else np.broadcast_to(np.asarray(steps, dtype=np.int64), (n,))
        if n == 1:
            embedding = None if embeddings is None else embeddings[0]
            self.visit(int(codes[0]), embedding, None if step_array is None else int(step_array[0]))
            return codes
        unique, first_reversed, counts = np.unique(codes[::-1], return_index=True, return_counts=True)
        last = n - 1 - first_reversed
        slots = np.fromiter((self._slot.get(c, -1) for c in unique.tolist()), np.int64, len(unique))
        new = slots < 0
        if new.any():
            slots[new] = self._add_leaves(unique[new])
        self._visits[slots] += counts
        if embeddings is not None and self.embedding_dim:
            self._embeddings[slots] = embeddings[last]
        if step_array is not None:
            self._last_step[slots] = step_array[last]
        return codes

    def visit(self, code: int, embedding: np.ndarray | None = None, step: int | None = None) -> None:
        """Record one visit to the leaf with Morton ``code`` (created if missing): :meth:`insert` for one
        point whose code is already known."""
        slot = self._slot.get(code)
        if slot is None:
            slot = int(self._add_leaves(np.array([code], dtype=np.int64))[0])
        self._visits[slot] += 1
        if embedding is not None and self.embedding_dim:
            self._embeddings[slot] = embedding
        if step is not None:
            self._last_step[slot] = step

    def lookup(self, codes: np.ndarray) -> np.ndarray:
        """Storage slots of leaves by code (``-1`` where unoccupied)."""
        codes = np.asarray(codes, dtype=np.int64)
        found = [self._slot.get(c, -1) for c in codes.ravel().tolist()]
        return np.array(found, dtype=np.int64).reshape(codes.shape)

    def leaf(self, code: int) -> Leaf | None:
        """The leaf with Morton ``code``, or ``None`` when unoccupied."""
        slot = self._slot.get(int(code))
        if slot is None:
            return None
        cell = morton.decode(np.int64(code))
        return Leaf(
            code=int(code),
            cell=(int(cell[0]), int(cell[1]), int(cell[2])),
            center=(cell + 0.5) * self.leaf_size,
            visits=int(self._visits[slot]),
            last_step=int(self._last_step[slot]),
            embedding=self._embeddings[slot].copy() if self.embedding_dim else None,
        )

    def leaf_at(self, position: np.ndarray) -> Leaf | None:
        """The leaf holding metric ``position``, or ``None`` when unoccupied."""
        return self.leaf(self.encode_one(np.asarray(position, dtype=np.float64).reshape(3)))

    def cells(self, level: int = 0) -> np.ndarray:
        """Sorted codes of the occupied cells at ``level`` (0 = leaves)."""
        self._check_level(level)
        if level == 0:
            return np.sort(self._codes[: self._n])
        return np.sort(np.fromiter(self._levels[level - 1], np.int64, len(self._levels[level - 1])))

    def occupied(self, codes: np.ndarray, level: int = 0) -> np.ndarray:
        """Boolean mask: which of ``codes`` are occupied cells at ``level``."""
        codes = np.asarray(codes, dtype=np.int64)
        table = self._slot if level == 0 else self._levels[level - 1]
        flat = codes.ravel().tolist()
        return np.fromiter(map(table.__contains__, flat), bool, len(flat)).reshape(codes.shape)

    def radius(self, center: np.ndarray, radius: float, level: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Occupied cells at ``level`` whose centres lie within ``radius`` metres of ``center``.

        Returns ``(codes, distances)`` sorted by distance. The walk starts at the finest level whose bounding
        box around the sphere spans at most 64 cells and descends through occupied children only.
        """
        self._check_level(level)
        center = np.asarray(center, dtype=np.float64).reshape(3)
        if radius < 0:
            raise ValueError(f"radius must be non-negative, got {radius}")
        empty = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        if self._n == 0:
            return empty
        u = center / self.leaf_size + morton.BIAS
        ru = radius / self.leaf_size
        start = level
        while start < self.depth and _box_count(*self._bbox(u, ru, start)) > _MAX_START_CELLS:
            start += 1
        lo, hi = self._bbox(u, ru, start)
        if np.any(hi < lo):
            return empty
        if start == self.depth and _box_count(lo, hi) > len(self._levels[start - 1]):
            codes = self._top_level_cells()
            q = morton.deinterleave(codes)
        else:
            axes = np.meshgrid(*(np.arange(lo[a], hi[a] + 1) for a in range(3)), indexing="ij")
            q = np.stack([axis.ravel() for axis in axes], axis=1)
            codes = morton.interleave(q)
        keep = self.occupied(codes, start) & (_box_distance(q, start, u) <= ru * (1 + 1e-12) + 1e-9)
        codes, q = codes[keep], q[keep]
        for current in range(start - 1, level - 1, -1):
            codes = ((codes[:, None] << 3) | _CHILD_BITS).ravel()
            q = (q[:, None, :] * 2 + _CHILD_OFFSETS).reshape(-1, 3)
            keep = self.occupied(codes, current)
            codes, q = codes[keep], q[keep]
            keep = _box_distance(q, current, u) <= ru * (1 + 1e-12) + 1e-9
            codes, q = codes[keep], q[keep]
        distances = np.linalg.norm(self._centers(q, level) - center, axis=1)
        inside = distances <= radius
        order = np.argsort(distances[inside], kind="stable")
        return codes[inside][order], distances[inside][order]

    def knn(self, center: np.ndarray, k: int, level: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` occupied cells at ``level`` with the nearest centres: ``(codes, distances)``, nearest first.

        Runs radius queries of doubling radius until one returns at least ``k`` cells; every cell outside
        that radius is farther than all cells inside it, so the first ``k`` are exact.
        """
        self._check_level(level)
        center = np.asarray(center, dtype=np.float64).reshape(3)
        count = self._n if level == 0 else len(self._levels[level - 1])
        if k <= 0 or count == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        if count <= k:
            codes = self.cells(level)
            distances = np.linalg.norm(self.cell_centers(codes, level) - center, axis=1)
            order = np.argsort(distances, kind="stable")
            return codes[order], distances[order]
        r = self.cell_size(level)
        while True:
            codes, distances = self.radius(center, r, level)
            if len(codes) >= k:
                return codes[:k], distances[:k]
            r *= 2.0

    def memory_bytes(self) -> int:
        """Approximate bytes held: arrays at capacity plus the hash map and level sets with their keys."""
        arrays = self._codes.nbytes + self._visits.nbytes + self._last_step.nbytes + self._embeddings.nbytes
        tables = sys.getsizeof(self._slot) + self._n * _INT_OBJECT_BYTES
        for cells in self._levels:
            tables += sys.getsizeof(cells) + len(cells) * _INT_OBJECT_BYTES
        return arrays + tables

    def state_dict(self) -> dict:
        """Leaves as tensors plus the geometry; the level sets are rebuilt on load."""
        n = self._n
        return {
            "leaf_size": self.leaf_size,
            "depth": self.depth,
            "embedding_dim": self.embedding_dim,
            "codes": torch.from_numpy(self._codes[:n].copy()),
            "visits": torch.from_numpy(self._visits[:n].copy()),
            "last_step": torch.from_numpy(self._last_step[:n].copy()),
            "embeddings": torch.from_numpy(self._embeddings[:n].copy()),
        }

    def load_state_dict(self, state: dict) -> None:
        """Replace the contents with a :meth:`state_dict`."""
        self.leaf_size = float(state["leaf_size"])
        self.depth = int(state["depth"])
        self.embedding_dim = int(state["embedding_dim"])
        self.clear()
        codes = state["codes"].numpy().astype(np.int64)
        slots = self._add_leaves(codes)
        self._visits[slots] = state["visits"].numpy()
        self._last_step[slots] = state["last_step"].numpy()
        self._embeddings[slots] = state["embeddings"].numpy()

    def _add_leaves(self, codes: np.ndarray) -> np.ndarray:
        """Create empty leaves for new, distinct ``codes``; returns their slots."""
        m = len(codes)
        self._reserve(self._n + m)
        slots = np.arange(self._n, self._n + m, dtype=np.int64)
        self._codes[slots] = codes
        self._visits[slots] = 0
        self._last_step[slots] = -1
        self._embeddings[slots] = 0.0
        parents = codes.tolist()
        self._slot.update(zip(parents, slots.tolist()))
        for cells in self._levels:
            parents = {code >> 3 for code in parents}
            cells.update(parents)
        self._n += m
        self._top_cells = None
        return slots

    def _reserve(self, capacity: int) -> None:
        if capacity <= len(self._codes):
            return
        new = max(capacity, 2 * len(self._codes), 1024)
        self._codes = _grown(self._codes, new)
        self._visits = _grown(self._visits, new)
        self._last_step = _grown(self._last_step, new)
        self._embeddings = _grown(self._embeddings, new)

    def _top_level_cells(self) -> np.ndarray:
        if self._top_cells is None:
            top = self._levels[self.depth - 1]
            self._top_cells = np.fromiter(top, np.int64, len(top))
        return self._top_cells

    def _bbox(self, u: np.ndarray, ru: float, level: int) -> tuple[np.ndarray, np.ndarray]:
        """Inclusive range of biased level-``level`` cell indices covering the sphere's bounding box."""
        scale = float(1 << level)
        top = (1 << (morton.BITS - level)) - 1
        lo = np.clip(np.floor((u - ru) / scale), 0, top).astype(np.int64)
        hi = np.clip(np.floor((u + ru) / scale), 0, top).astype(np.int64)
        return lo, hi

    def _centers(self, q: np.ndarray, level: int) -> np.ndarray:
        """Metric centres of biased level-``level`` cell indices ``q``."""
        return ((q + 0.5) * float(1 << level) - morton.BIAS) * self.leaf_size

    def _check_level(self, level: int) -> None:
        if not 0 <= level <= self.depth:
            raise ValueError(f"level must be in [0, {self.depth}], got {level}")


def _box_count(lo: np.ndarray, hi: np.ndarray) -> int:
    return int(np.prod(np.maximum(hi - lo + 1, 0)))


def _box_distance(q: np.ndarray, level: int, u: np.ndarray) -> np.ndarray:
    """Distance (in leaf units) from biased point ``u`` to the boxes of biased level cells ``q``."""
    scale = float(1 << level)
    lo = q * scale
    gap = np.maximum(np.maximum(lo - u, u - (lo + scale)), 0.0)
    return np.sqrt((gap * gap).sum(axis=1))


def _grown(array: np.ndarray, capacity: int) -> np.ndarray:
    grown = np.zeros((capacity,) + array.shape[1:], dtype=array.dtype)
    grown[: len(array)] = array
    return grown


def _readonly(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view
