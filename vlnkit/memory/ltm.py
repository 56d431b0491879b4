"""Long-term memory: reversible-Transformer tokens per place, searched through an HNSW index.

Every key (an octree leaf or a topology node) owns a token of size ``2 * dim`` (mem4nav.md):

* write: ``token_new = R([theta_prev ; v_t])`` with ``theta_prev`` the first half of ``R^-1(token_old)``
  (zeros for a new key);
* read: ``q = MLP([v_t ; p_t / position_scale])``; the ``top_m`` tokens nearest to ``q`` in the index;
  ``R^-1`` of each; its second half is ``v_hat``; small heads decode a position and a descriptor from
  ``v_hat``.

Note on the specified rule: since ``R^-1(R([theta ; v]))`` returns ``theta`` unchanged, ``theta_prev``
stays at its initial zeros across writes, and a token is ``R([0 ; v])`` of the latest ``v`` of its key.

``R^-1(token)`` is by construction that input ``[0 ; v]``, so with ``cache_inverse`` (the default) the
memory keeps the latest ``v`` of each key beside its token and reads ``[0 ; v]`` back instead of running
``R^-1`` (they agree to float rounding, about 1e-6; the tests check both paths give the same retrievals).
The cache costs ``dim`` floats per key and turns a write into bookkeeping: the tokens of the keys written
since the last flush are computed in one batched ``R`` call when a read needs them or when ``flush_every``
keys are pending. With ``cache_inverse=False`` every write runs ``R^-1`` then ``R`` at once, literally as
specified.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlnkit.memory.index import TokenIndex
from vlnkit.memory.reversible import ReversibleTransformer

_INT_OBJECT_BYTES = 36


@dataclass
class LTMConfig:
    """Long-term-memory settings (R geometry, heads, retrieval, index)."""

    depth: int = 6
    heads: int = 8
    seq_len: int = 4
    head_dim: int | None = None
    mlp_ratio: float = 4.0
    hidden: int = 256
    top_m: int = 3
    position_scale: float = 100.0
    cache_inverse: bool = True
    flush_every: int = 64
    hnsw_m: int = 32
    ef_construction: int = 100
    ef_search: int = 128
    buffer_size: int = 256
    rebuild_ratio: float = 1.0


class _MLP(nn.Module):
    """Two-layer perceptron (tanh-GELU), called as one module: these run per retrieval on one row."""

    def __init__(self, inputs: int, hidden: int, outputs: int) -> None:
        super().__init__()
        self.first = nn.Linear(inputs, hidden)
        self.second = nn.Linear(hidden, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.gelu(F.linear(x, self.first.weight, self.first.bias), approximate="tanh")
        return F.linear(hidden, self.second.weight, self.second.bias)


class LTMModel(nn.Module):
    """The learnable parts: R, the query MLP and the position/descriptor decoders (all differentiable)."""

    def __init__(self, dim: int, descriptor_dim: int, config: LTMConfig) -> None:
        super().__init__()
        self.dim = dim
        self.position_scale = float(config.position_scale)
        self.r = ReversibleTransformer(
            dim, config.depth, config.heads, config.seq_len, config.head_dim, config.mlp_ratio
        )
        self.query_net = _MLP(dim + 3, config.hidden, 2 * dim)
        self.position_head = _MLP(dim, config.hidden, 3)
        self.descriptor_head = _MLP(dim, config.hidden, descriptor_dim)

    def query(self, embeddings: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Token-space queries ``MLP([v ; p / position_scale])`` for ``(n, dim)`` and ``(n, 3)`` inputs."""
        return self.query_net(torch.cat([embeddings, positions / self.position_scale], dim=-1))

    def write(self, previous: torch.Tensor | None, embeddings: torch.Tensor) -> torch.Tensor:
        """New tokens ``R([theta_prev ; v])`` with ``theta_prev`` the first half of ``R^-1(previous)``."""
        if previous is None:
            theta = torch.zeros_like(embeddings)
        else:
            theta = self.r.inverse(previous)[..., : self.dim]
        return self.r(torch.cat([theta, embeddings], dim=-1))

    def decode(self, preimages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(v_hat, position, descriptor)`` from ``R^-1(token)`` values ``(n, 2 * dim)``."""
        v_hat = preimages[..., self.dim :]
        return v_hat, self.position_head(v_hat) * self.position_scale, self.descriptor_head(v_hat)


@dataclass(frozen=True)
class LTMReadout:
    """The ``top_m`` tokens a read found, nearest first, with what was decoded from them."""

    keys: np.ndarray
    distances: np.ndarray
    tokens: np.ndarray
    embeddings: np.ndarray
    positions: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class _EmbeddingTable:
    """``key -> latest v`` rows: the exact-inverse cache (``R^-1(token) == [0 ; v]``)."""

    width: int
    rows: dict[int, int] = field(default_factory=dict)
    values: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.values = np.zeros((0, self.width), dtype=np.float32)

    def row(self, key: int) -> int:
        found = self.rows.get(key)
        if found is None:
            found = len(self.rows)
            if found == len(self.values):
                grown = np.zeros((max(1024, 2 * found), self.width), dtype=np.float32)
                grown[:found] = self.values
                self.values = grown
            self.rows[key] = found
        return found


class LongTermMemory:
    """Tokens keyed by int64 keys: the model, the token index and the pending-write bookkeeping."""

    def __init__(self, dim: int, descriptor_dim: int | None = None, config: LTMConfig | None = None) -> None:
        self.dim = int(dim)
        self.descriptor_dim = int(descriptor_dim or dim)
        self.config = config or LTMConfig()
        self.model = LTMModel(self.dim, self.descriptor_dim, self.config)
        self.clear()

    def clear(self) -> None:
        """Forget every token (the model's weights stay)."""
        c = self.config
        self.index = TokenIndex(2 * self.dim, c.hnsw_m, c.ef_construction, c.ef_search, c.buffer_size, c.rebuild_ratio)
        self._latest = _EmbeddingTable(self.dim)
        self._pending: dict[int, np.ndarray | None] = {}

    def __len__(self) -> int:
        return len(self.index) + sum(1 for key in self._pending if key not in self.index)

    def write(self, keys: np.ndarray, embeddings: np.ndarray) -> None:
        """Write one embedding per key (rows of ``embeddings`` ``(n, dim)``), in order."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        embeddings = np.asarray(embeddings, dtype=np.float32).reshape(len(keys), self.dim)
        if self.config.cache_inverse:
            table = self._latest
            for key, embedding in zip(keys.tolist(), embeddings):
                row = table.row(key)
                table.values[row] = embedding
                self._pending[key] = None
        else:
            for key, embedding in zip(keys.tolist(), embeddings):
                previous = self._current_token(key)
                with torch.inference_mode():
                    prev = None if previous is None else torch.from_numpy(previous[None])
                    token = self.model.write(prev, torch.from_numpy(embedding[None].copy()))
                self._pending[key] = token[0].numpy()
        if len(self._pending) >= self.config.flush_every:
            self.flush()

    def flush(self) -> None:
        """Compute and index the tokens of every key written since the last flush."""
        if not self._pending:
            return
        keys = np.fromiter(self._pending, np.int64, len(self._pending))
        if self.config.cache_inverse:
            with torch.inference_mode():
                tokens = self.model.r(self._cached_preimages(keys)).numpy()
        else:
            tokens = np.stack([token for token in self._pending.values()])
        self.index.upsert(keys, tokens)
        self._pending.clear()

    def token(self, key: int) -> np.ndarray | None:
        """Current token of ``key`` (``None`` if it was never written)."""
        self.flush()
        return self.index.get(np.array([key]))[0] if key in self.index else None

    def read(self, embedding: np.ndarray, position: np.ndarray, m: int | None = None) -> LTMReadout:
        """The ``m`` (default ``top_m``) tokens nearest to the query for ``(embedding, position)``, decoded."""
        self.flush()
        m = self.config.top_m if m is None else m
        if len(self.index) == 0 or m <= 0:
            return self._empty()
        v = torch.from_numpy(np.asarray(embedding, dtype=np.float32).reshape(1, self.dim))
        p = torch.from_numpy(np.asarray(position, dtype=np.float32).reshape(1, 3))
        with torch.inference_mode():
            query = self.model.query(v, p)[0].numpy()
            keys, distances = self.index.search(query, m)
            tokens = self.index.get(keys)
            if self.config.cache_inverse:
                preimages = self._cached_preimages(keys)
            else:
                preimages = self.model.r.inverse(torch.from_numpy(tokens))
            v_hat, positions, descriptors = self.model.decode(preimages)
        return LTMReadout(
            keys=keys,
            distances=distances,
            tokens=tokens,
            embeddings=v_hat.numpy().copy(),
            positions=positions.numpy().astype(np.float64),
            descriptors=descriptors.numpy(),
        )

    def memory_bytes(self) -> int:
        """Approximate bytes: index plus the exact-inverse cache."""
        table = self._latest
        cache = table.values.nbytes + sys.getsizeof(table.rows) + 2 * len(table.rows) * _INT_OBJECT_BYTES
        return self.index.memory_bytes() + cache

    def state_dict(self) -> dict:
        """Weights, index and cache (pending writes are flushed first)."""
        self.flush()
        table = self._latest
        keys = np.fromiter(table.rows, np.int64, len(table.rows))
        rows = np.fromiter(table.rows.values(), np.int64, len(table.rows))
        return {
            "dim": self.dim,
            "descriptor_dim": self.descriptor_dim,
            "config": asdict(self.config),
            "model": self.model.state_dict(),
            "index": self.index.state_dict(),
            "latest_keys": torch.from_numpy(keys),
            "latest": torch.from_numpy(table.values[rows].copy()),
        }

    def load_state_dict(self, state: dict) -> None:
        """Replace weights and contents with a :meth:`state_dict` (same ``dim`` and config)."""
        if int(state["dim"]) != self.dim or int(state["descriptor_dim"]) != self.descriptor_dim:
            raise ValueError("state was saved for different dimensions")
        self.model.load_state_dict(state["model"])
        self.clear()
        self.index.load_state_dict(state["index"])
        for key, values in zip(state["latest_keys"].tolist(), state["latest"].numpy()):
            row = self._latest.row(key)
            self._latest.values[row] = values

    def _cached_preimages(self, keys: np.ndarray) -> torch.Tensor:
        """``[0 ; v]`` for ``keys`` from the cache: what ``R^-1`` returns for their tokens."""
        latest = self._latest.values[[self._latest.rows[key] for key in keys.tolist()]]
        return torch.from_numpy(np.concatenate([np.zeros_like(latest), latest], axis=1))

    def _current_token(self, key: int) -> np.ndarray | None:
        pending = self._pending.get(key)
        if pending is not None:
            return pending
        return self.index.get(np.array([key]))[0] if key in self.index else None

    def _empty(self) -> LTMReadout:
        d = self.dim
        return LTMReadout(
            keys=np.empty(0, dtype=np.int64),
            distances=np.empty(0, dtype=np.float32),
            tokens=np.empty((0, 2 * d), dtype=np.float32),
            embeddings=np.empty((0, d), dtype=np.float32),
            positions=np.empty((0, 3), dtype=np.float64),
            descriptors=np.empty((0, self.descriptor_dim), dtype=np.float32),
        )
