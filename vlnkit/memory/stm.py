"""Short-term memory: a fixed-capacity cache of recent observations, in coordinates relative to graph nodes.

An entry is ``{key, object_id, p_rel, frame, embedding, step, frequency}``: ``p_rel`` is the observation's
position minus the origin of ``frame`` (the current topology node when it was written; frame 0 at the world
origin when there is no graph). Writing a ``(key, object_id)`` already cached refreshes that entry (new
position, embedding and step; frequency + 1); returning an entry from :meth:`retrieve` also adds 1 to its
frequency. When a new entry arrives at a full cache the entry with the lowest
``lam * frequency - (1 - lam) * (t_now - step)`` is evicted (ties: the oldest step, then the lowest slot).

Retrieval keeps the entries within ``eps`` metres of the query, measured in each entry's own frame (the
query is moved into the frame with the frame origins passed in, so node running-mean corrections carry
over), and ranks them by cosine similarity, top ``k``. Everything is vectorised over the ``capacity`` slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class STMHits:
    """Entries returned by :meth:`ShortTermMemory.retrieve`, best cosine first (``positions`` in world
    coordinates: ``p_rel`` plus the current origin of each entry's frame)."""

    slots: np.ndarray
    keys: np.ndarray
    object_ids: np.ndarray
    cosines: np.ndarray
    embeddings: np.ndarray
    p_rel: np.ndarray
    frames: np.ndarray
    positions: np.ndarray
    steps: np.ndarray

    def __len__(self) -> int:
        return len(self.slots)


class ShortTermMemory:
    """The cache itself: ``capacity`` slots of ``dim``-dimensional embeddings."""

    def __init__(self, dim: int, capacity: int = 128, eps: float = 3.0, top_k: int = 3, lam: float = 0.5) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.dim = int(dim)
        self.capacity = int(capacity)
        self.eps = float(eps)
        self.top_k = int(top_k)
        self.lam = float(lam)
        self.clear()

    def clear(self) -> None:
        """Empty the cache."""
        k = self.capacity
        self._valid = np.zeros(k, dtype=bool)
        self._keys = np.zeros(k, dtype=np.int64)
        self._object_ids = np.zeros(k, dtype=np.int64)
        self._p_rel = np.zeros((k, 3), dtype=np.float64)
        self._frames = np.zeros(k, dtype=np.int64)
        self._embeddings = np.zeros((k, self.dim), dtype=np.float32)
        self._unit = np.zeros((k, self.dim), dtype=np.float32)
        self._steps = np.zeros(k, dtype=np.int64)
        self._freq = np.zeros(k, dtype=np.int64)
        self._index: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return len(self._index)

    def eviction_scores(self, t_now: int) -> np.ndarray:
        """``lam * frequency - (1 - lam) * (t_now - step)`` per slot (``inf`` for empty slots)."""
        scores = self.lam * self._freq - (1.0 - self.lam) * (t_now - self._steps)
        return np.where(self._valid, scores, np.inf)

    def write(
        self,
        key: int,
        embedding: np.ndarray,
        p_rel: np.ndarray,
        step: int,
        frame: int = 0,
        object_id: int = -1,
    ) -> tuple[int, int] | None:
        """Insert or refresh the entry ``(key, object_id)``; returns the evicted ``(key, object_id)`` if any."""
        embedding = np.asarray(embedding, dtype=np.float32).reshape(self.dim)
        identity = (int(key), int(object_id))
        evicted = None
        slot = self._index.get(identity)
        if slot is not None:
            self._freq[slot] += 1
        else:
            if len(self._index) < self.capacity:
                slot = int(np.argmin(self._valid))
            else:
                slot = self._victim(step)
                evicted = (int(self._keys[slot]), int(self._object_ids[slot]))
                del self._index[evicted]
            self._index[identity] = slot
            self._valid[slot] = True
            self._keys[slot], self._object_ids[slot] = identity
            self._freq[slot] = 1
        self._p_rel[slot] = p_rel
        self._frames[slot] = frame
        self._embeddings[slot] = embedding
        norm = float(np.sqrt(embedding @ embedding))
        self._unit[slot] = embedding / norm if norm > 0 else 0.0
        self._steps[slot] = step
        return evicted

    def retrieve(
        self,
        embedding: np.ndarray,
        position: np.ndarray,
        frame_origins: np.ndarray | None = None,
        k: int | None = None,
        eps: float | None = None,
        count_hits: bool = True,
    ) -> STMHits:
        """Entries within ``eps`` of ``position`` ranked by cosine with ``embedding``, top ``k``.

        ``position`` is in world coordinates; ``frame_origins[f]`` is the current world position of frame
        ``f`` (omit when every entry was written in frame 0 at the origin).
        """
        k = self.top_k if k is None else k
        eps = self.eps if eps is None else eps
        position = np.asarray(position, dtype=np.float64).reshape(3)
        origins = self._slot_origins(frame_origins)
        offsets = self._p_rel - (position - origins)
        near = self._valid & (np.einsum("ij,ij->i", offsets, offsets) <= eps * eps)
        slots = np.flatnonzero(near)
        if len(slots) == 0 or k <= 0:
            return self._hits(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32), origins)
        query = np.asarray(embedding, dtype=np.float32).reshape(self.dim)
        norm = float(np.sqrt(query @ query))
        cosines = self._unit[slots] @ (query / norm if norm > 0 else query)
        order = np.argsort(-cosines, kind="stable")[:k]
        slots, cosines = slots[order], cosines[order]
        if count_hits:
            self.touch(slots)
        return self._hits(slots, cosines, origins)

    def entries(self, frame_origins: np.ndarray | None = None) -> STMHits:
        """Every cached entry, oldest step first, with world positions as in :meth:`retrieve` (``cosines`` are
        zeros; no frequency is counted)."""
        slots = np.flatnonzero(self._valid)
        slots = slots[np.argsort(self._steps[slots], kind="stable")]
        return self._hits(slots, np.zeros(len(slots), dtype=np.float32), self._slot_origins(frame_origins))

    def holds_step(self, step: int) -> bool:
        """Whether an entry written at ``step`` is still cached (not evicted)."""
        return bool(np.any(self._valid & (self._steps == step)))

    def touch(self, slots: np.ndarray) -> None:
        """Count one more use of the entries in ``slots`` (what :meth:`retrieve` does with ``count_hits``)."""
        self._freq[slots] += 1

    def memory_bytes(self) -> int:
        """Bytes of the slot arrays (the cache is fixed-size)."""
        arrays = (self._valid, self._keys, self._object_ids, self._p_rel, self._frames, self._embeddings)
        return sum(a.nbytes for a in arrays) + self._unit.nbytes + self._steps.nbytes + self._freq.nbytes

    def state_dict(self) -> dict:
        """All slots as tensors plus the parameters."""
        return {
            "dim": self.dim,
            "capacity": self.capacity,
            "eps": self.eps,
            "top_k": self.top_k,
            "lam": self.lam,
            "valid": torch.from_numpy(self._valid.copy()),
            "keys": torch.from_numpy(self._keys.copy()),
            "object_ids": torch.from_numpy(self._object_ids.copy()),
            "p_rel": torch.from_numpy(self._p_rel.copy()),
            "frames": torch.from_numpy(self._frames.copy()),
            "embeddings": torch.from_numpy(self._embeddings.copy()),
            "steps": torch.from_numpy(self._steps.copy()),
            "freq": torch.from_numpy(self._freq.copy()),
        }

    def load_state_dict(self, state: dict) -> None:
        """Replace the contents with a :meth:`state_dict`."""
        self.dim = int(state["dim"])
        self.capacity = int(state["capacity"])
        self.eps = float(state["eps"])
        self.top_k = int(state["top_k"])
        self.lam = float(state["lam"])
        self.clear()
        self._valid[:] = state["valid"].numpy()
        self._keys[:] = state["keys"].numpy()
        self._object_ids[:] = state["object_ids"].numpy()
        self._p_rel[:] = state["p_rel"].numpy()
        self._frames[:] = state["frames"].numpy()
        self._embeddings[:] = state["embeddings"].numpy()
        self._steps[:] = state["steps"].numpy()
        self._freq[:] = state["freq"].numpy()
        norms = np.linalg.norm(self._embeddings, axis=1, keepdims=True)
        self._unit[:] = np.divide(self._embeddings, norms, out=np.zeros_like(self._embeddings), where=norms > 0)
        for slot in np.flatnonzero(self._valid).tolist():
            self._index[(int(self._keys[slot]), int(self._object_ids[slot]))] = slot

    def _slot_origins(self, frame_origins: np.ndarray | None) -> np.ndarray:
        """World position of every slot's frame origin (zeros without ``frame_origins`` or for empty slots)."""
        if frame_origins is None or len(self) == 0:
            return np.zeros((self.capacity, 3))
        if len(self) == self.capacity:  # every slot holds an entry: no mask needed
            return np.asarray(frame_origins, dtype=np.float64)[self._frames]
        origins = np.zeros((self.capacity, 3))
        origins[self._valid] = np.asarray(frame_origins, dtype=np.float64)[self._frames[self._valid]]
        return origins

    def _victim(self, t_now: int) -> int:
        """Slot to evict: lowest score, then oldest step, then lowest slot."""
        scores = self.eviction_scores(t_now)
        order = np.lexsort((np.arange(self.capacity), self._steps, scores))
        return int(order[0])

    def _hits(self, slots: np.ndarray, cosines: np.ndarray, origins: np.ndarray) -> STMHits:
        return STMHits(
            slots=slots,
            keys=self._keys[slots].copy(),
            object_ids=self._object_ids[slots].copy(),
            cosines=np.asarray(cosines, dtype=np.float32),
            embeddings=self._embeddings[slots].copy(),
            p_rel=self._p_rel[slots].copy(),
            frames=self._frames[slots].copy(),
            positions=self._p_rel[slots] + origins[slots],
            steps=self._steps[slots].copy(),
        )
