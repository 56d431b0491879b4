"""Approximate nearest-neighbour index of int64-keyed vectors with updates, on faiss HNSW.

faiss's ``IndexHNSWFlat`` can only append. Updates are made from three pieces:

* the HNSW index holds vectors under sequential internal ids; ``id -> key`` is a numpy array and
  ``key -> id`` a dict;
* updating (or adding) a key never touches the graph: the key's old id, if any, is tombstoned in an alive
  bitmap that every HNSW search filters with (``IDSelectorBitmap``, so a search still returns ``k`` live
  results), and the new vector goes to a small write buffer that is searched exactly;
* when the buffer fills it is merged into HNSW in one batch (a key rewritten many times while buffered is
  added once); when tombstones outnumber ``rebuild_ratio`` times the live entries the HNSW index is rebuilt
  from the live vectors, so memory and search cost stay proportional to the live keys.

Searches merge the HNSW hits with the buffer's exact hits (squared distances from cached squared norms
and one matrix-vector product). Results are reproducible: :meth:`state_dict` stores the serialised graph
itself, not a recipe to rebuild it, and every batch added to the graph draws its HNSW levels from a
generator seeded by the graph's size, so a restored index grows exactly like the original (with faiss
running single-threaded; parallel HNSW insertion is not deterministic).
"""

from __future__ import annotations

import sys

import faiss
import numpy as np
import torch

_INT_OBJECT_BYTES = 36
_SEED = 12345


class TokenIndex:
    """HNSW (``m`` links per node, ``ef_construction``, ``ef_search``) plus an exact write buffer."""

    def __init__(
        self,
        dim: int,
        m: int = 32,
        ef_construction: int = 100,
        ef_search: int = 128,
        buffer_size: int = 256,
        rebuild_ratio: float = 1.0,
    ) -> None:
        self.dim = int(dim)
        self.m = int(m)
        self.ef_construction = int(ef_construction)
        self.ef_search = int(ef_search)
        self.buffer_size = int(buffer_size)
        self.rebuild_ratio = float(rebuild_ratio)
        self.clear()

    def clear(self) -> None:
        """Remove every key."""
        self._hnsw = self._new_hnsw()
        self._id_key = np.zeros(0, dtype=np.int64)
        self._alive = np.zeros(0, dtype=np.uint8)
        self._selector: faiss.IDSelectorBitmap | None = None
        self._dead = 0
        self._key_id: dict[int, int] = {}
        self._buffer_row: dict[int, int] = {}
        self._buffer_keys = np.zeros(self.buffer_size, dtype=np.int64)
        self._buffer_vectors = np.zeros((self.buffer_size, self.dim), dtype=np.float32)
        self._buffer_norms = np.zeros(self.buffer_size, dtype=np.float32)
        self._params: faiss.SearchParametersHNSW | None = None
        self._params_for: tuple[int, faiss.IDSelectorBitmap | None] | None = None

    def __len__(self) -> int:
        return len(self._key_id) + len(self._buffer_row)

    def __contains__(self, key: int) -> bool:
        return key in self._buffer_row or key in self._key_id

    @property
    def tombstones(self) -> int:
        """Dead entries still inside the HNSW graph."""
        return self._dead

    def keys(self) -> np.ndarray:
        """All live keys (HNSW ones first, then buffered ones)."""
        return np.array(list(self._key_id) + list(self._buffer_row), dtype=np.int64)

    def upsert(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Set the vectors of ``keys`` (adding the new ones); a key repeated in ``keys`` keeps its last row."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(keys), self.dim)
        for key, vector in zip(keys.tolist(), vectors):
            row = self._buffer_row.get(key)
            if row is None:
                old = self._key_id.pop(key, None)
                if old is not None:
                    self._kill(old)
                if len(self._buffer_row) == self.buffer_size:
                    self.merge()
                row = len(self._buffer_row)
                self._buffer_row[key] = row
                self._buffer_keys[row] = key
            self._buffer_vectors[row] = vector
            self._buffer_norms[row] = vector @ vector

    def get(self, keys: np.ndarray) -> np.ndarray:
        """Vectors ``(n, dim)`` of ``keys`` (KeyError for an unknown key)."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        out = np.empty((len(keys), self.dim), dtype=np.float32)
        hnsw_rows, hnsw_ids = [], []
        for i, key in enumerate(keys.tolist()):
            row = self._buffer_row.get(key)
            if row is not None:
                out[i] = self._buffer_vectors[row]
            elif key in self._key_id:
                hnsw_rows.append(i)
                hnsw_ids.append(self._key_id[key])
            else:
                raise KeyError(key)
        if hnsw_ids:
            out[hnsw_rows] = self._hnsw.reconstruct_batch(np.array(hnsw_ids, dtype=np.int64))
        return out

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` live keys nearest to ``query`` (L2): ``(keys, distances)``, nearest first."""
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        keys = np.empty(0, dtype=np.int64)
        distances = np.empty(0, dtype=np.float32)
        if self._key_id and k > 0:
            found_d, found_i = self._hnsw.search(query, k, params=self._search_params(max(self.ef_search, k)))
            hit = found_i[0] >= 0
            keys, distances = self._id_key[found_i[0][hit]], found_d[0][hit]
        buffered = len(self._buffer_row)
        if buffered and k > 0:
            products = self._buffer_vectors[:buffered] @ query[0]
            squared = self._buffer_norms[:buffered] - 2.0 * products + float(query[0] @ query[0])
            keys = np.concatenate([keys, self._buffer_keys[:buffered]])
            distances = np.concatenate([distances, squared])
        order = np.argsort(distances, kind="stable")[:k]
        return keys[order], np.sqrt(np.maximum(distances[order], 0.0))

    def exact_search(self, queries: np.ndarray, k: int, chunk: int = 65_536) -> np.ndarray:
        """Keys ``(n_queries, k)`` of the ``k`` live vectors nearest to each query (L2) by brute force, nearest
        first: the reference that :meth:`search`'s recall is measured against. Works through the keys
        ``chunk`` at a time, so memory stays bounded for any index size."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        keys = self.keys()
        k = min(k, len(keys))
        if k <= 0:
            return np.empty((len(queries), 0), dtype=np.int64)
        found_keys, found_distances = [], []
        for start in range(0, len(keys), chunk):
            part = keys[start : start + chunk]
            distances, rows = faiss.knn(queries, self.get(part), min(k, len(part)))
            found_keys.append(part[rows])
            found_distances.append(distances)
        distances = np.concatenate(found_distances, axis=1)
        order = np.argsort(distances, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(np.concatenate(found_keys, axis=1), order, axis=1)

    def merge(self) -> None:
        """Move the write buffer into the HNSW graph; rebuild it when tombstones dominate."""
        buffered = len(self._buffer_row)
        if buffered == 0:
            return
        first = self._hnsw.ntotal
        self._hnsw.hnsw.rng = faiss.RandomGenerator(_SEED + first)
        self._hnsw.add(self._buffer_vectors[:buffered])
        total = first + buffered
        if total > len(self._id_key):
            capacity = max(total, 2 * len(self._id_key), 1024)
            self._id_key = np.concatenate([self._id_key, np.zeros(capacity - len(self._id_key), dtype=np.int64)])
            alive = np.zeros((capacity + 7) // 8, dtype=np.uint8)
            alive[: len(self._alive)] = self._alive
            self._alive = alive
            self._selector = None
        ids = np.arange(first, total, dtype=np.int64)
        self._id_key[ids] = self._buffer_keys[:buffered]
        for i in ids.tolist():
            self._alive[i >> 3] |= np.uint8(1 << (i & 7))
        self._key_id.update(zip(self._buffer_keys[:buffered].tolist(), ids.tolist()))
        self._buffer_row.clear()
        if self._dead > max(self.rebuild_ratio * len(self._key_id), self.buffer_size):
            self.rebuild()

    def rebuild(self) -> None:
        """Rebuild the HNSW graph from the live vectors only (drops every tombstone)."""
        keys = np.array(list(self._key_id), dtype=np.int64)
        ids = np.array(list(self._key_id.values()), dtype=np.int64)
        vectors = self._hnsw.reconstruct_batch(ids) if len(ids) else np.zeros((0, self.dim), np.float32)
        self._hnsw = self._new_hnsw()
        self._hnsw.hnsw.rng = faiss.RandomGenerator(_SEED)
        self._hnsw.add(vectors)
        self._id_key = keys.copy()
        self._alive = np.packbits(np.ones(len(keys), dtype=np.uint8), bitorder="little")
        self._selector = None
        self._dead = 0
        self._key_id = dict(zip(keys.tolist(), range(len(keys))))

    def memory_bytes(self) -> int:
        """Approximate bytes: HNSW vectors and links, id maps, bitmap and write buffer."""
        hnsw = self._hnsw.hnsw
        graph = hnsw.neighbors.size() * 4 + hnsw.levels.size() * 4 + hnsw.offsets.size() * 8
        vectors = self._hnsw.ntotal * self.dim * 4
        maps = self._id_key.nbytes + self._alive.nbytes + sys.getsizeof(self._key_id)
        maps += 2 * len(self._key_id) * _INT_OBJECT_BYTES
        buffer = self._buffer_keys.nbytes + self._buffer_vectors.nbytes + self._buffer_norms.nbytes
        buffer += sys.getsizeof(self._buffer_row)
        return graph + vectors + maps + buffer

    def state_dict(self) -> dict:
        """The serialised HNSW graph, the id maps, the bitmap and the buffer as tensors."""
        buffered = len(self._buffer_row)
        total = self._hnsw.ntotal
        return {
            "dim": self.dim,
            "m": self.m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "buffer_size": self.buffer_size,
            "rebuild_ratio": self.rebuild_ratio,
            "hnsw": torch.from_numpy(faiss.serialize_index(self._hnsw).copy()),
            "id_key": torch.from_numpy(self._id_key[:total].copy()),
            "alive": torch.from_numpy(self._alive[: (total + 7) // 8].copy()),
            "dead": self._dead,
            "buffer_keys": torch.from_numpy(self._buffer_keys[:buffered].copy()),
            "buffer_vectors": torch.from_numpy(self._buffer_vectors[:buffered].copy()),
        }

    def load_state_dict(self, state: dict) -> None:
        """Replace the contents with a :meth:`state_dict`."""
        self.dim = int(state["dim"])
        self.m = int(state["m"])
        self.ef_construction = int(state["ef_construction"])
        self.ef_search = int(state["ef_search"])
        self.buffer_size = int(state["buffer_size"])
        self.rebuild_ratio = float(state["rebuild_ratio"])
        self.clear()
        self._hnsw = faiss.deserialize_index(state["hnsw"].numpy())
        self._id_key = state["id_key"].numpy().copy()
        self._alive = state["alive"].numpy().copy()
        self._dead = int(state["dead"])
        alive = np.unpackbits(self._alive, bitorder="little")[: len(self._id_key)].astype(bool)
        live_ids = np.flatnonzero(alive)
        self._key_id = dict(zip(self._id_key[live_ids].tolist(), live_ids.tolist()))
        buffer_keys = state["buffer_keys"].numpy()
        self._buffer_keys[: len(buffer_keys)] = buffer_keys
        self._buffer_vectors[: len(buffer_keys)] = state["buffer_vectors"].numpy()
        for row, vector in enumerate(self._buffer_vectors[: len(buffer_keys)]):
            self._buffer_norms[row] = vector @ vector  # as upsert computes it, so searches match exactly
        self._buffer_row = {key: row for row, key in enumerate(buffer_keys.tolist())}

    def _new_hnsw(self) -> faiss.IndexHNSWFlat:
        index = faiss.IndexHNSWFlat(self.dim, self.m)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        return index

    def _kill(self, internal_id: int) -> None:
        self._alive[internal_id >> 3] &= np.uint8(~(1 << (internal_id & 7)) & 0xFF)
        self._dead += 1

    def _search_params(self, ef: int) -> faiss.SearchParametersHNSW:
        """HNSW search parameters (``efSearch`` and, once there are tombstones, the alive filter), reused
        across searches until either changes."""
        selector = self._alive_selector() if self._dead else None
        if self._params is None or self._params_for != (ef, selector):
            self._params = faiss.SearchParametersHNSW(efSearch=ef)
            if selector is not None:
                self._params.sel = selector
            self._params_for = (ef, selector)
        return self._params

    def _alive_selector(self) -> faiss.IDSelectorBitmap:
        if self._selector is None:
            self._selector = faiss.IDSelectorBitmap(self._alive)
        return self._selector
