"""Long-term memory: reversible-Transformer tokens per place, searched through an HNSW index.

Every key (an octree leaf or a topology node) owns a token of size ``2 * dim`` (mem4nav.md):

* write: ``token_new = R([theta_new ; v_t])``, where ``[theta_old ; v_old] = R^-1(token_old)`` (zeros for
  a new key) and ``theta_new = lambda * theta_old + (1 - lambda) * v_old`` (``lambda`` is
  ``history_decay``, 0.5): the first half is the place's running state, an exponential average of its
  earlier views, newest weighted most; the second half is the latest view;
* read: ``q = MLP([v_t ; p_t / position_scale])``; the ``top_m`` tokens nearest to ``q`` in the index;
  ``R^-1`` of each gives ``v_hat`` (the latest view, exactly) and ``history`` (the state); small heads
  decode a position and a descriptor from ``v_hat``.

Why the fold: mem4nav.md writes ``theta_prev`` as "the first half of ``R^-1(token_old)``". Taken
literally that state never changes (``R^-1(R([theta ; v]))`` returns ``theta``, so it stays at its initial
zeros) and a token holds only the latest view. Folding the previous view into the state keeps the exact
decode of the latest view and gives the state a history; ``history_decay=1`` is the literal rule.

``R^-1(token)`` is by construction its input ``[theta ; v]``, so with ``cache_inverse`` (the default) the
memory keeps that preimage of each key beside its token and reads it back instead of running ``R^-1``
(they agree to float rounding, about 1e-6; the tests check both paths give the same retrievals).
The cache costs ``2 * dim`` floats per key and turns a write into bookkeeping: the tokens of the keys
written since the last flush are computed in one batched ``R`` call when a read needs them or when
``flush_every`` keys are pending. With ``cache_inverse=False`` every write runs ``R^-1`` then ``R`` at
once, literally as specified.

Reads and writes run the model through :meth:`LTMModel.inference`: :class:`NumpyInference`, a float32 numpy
copy of R, the query MLP and the decoders (the same functions, equal to float32 rounding; the tests hold it
to the torch modules), because on one query and one or two fresh tokens per step a torch call's fixed
overhead, not arithmetic, is the cost; larger inputs go to the torch modules. A flush computes each
distinct pending preimage once (a leaf and a node written the same views in the same order have equal
tokens). Training uses the torch modules.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from operator import attrgetter

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlnkit.memory.index import TokenIndex
from vlnkit.memory.reversible import GELU_SCALE, NumpyReversible, ReversibleTransformer, scaled_gelu
from vlnkit.perception.attention.hook import probes_of

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
    history_decay: float = 0.5
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
        self.history_decay = float(config.history_decay)
        self.r = ReversibleTransformer(
            dim, config.depth, config.heads, config.seq_len, config.head_dim, config.mlp_ratio
        )
        self.query_net = _MLP(dim + 3, config.hidden, 2 * dim)
        self.position_head = _MLP(dim, config.hidden, 3)
        self.descriptor_head = _MLP(dim, config.hidden, descriptor_dim)
        self._inference: NumpyInference | TorchInference | None = None
        self._watched: list[nn.Parameter] = []
        self._versions = 0
        self.register_load_state_dict_post_hook(LTMModel._forget_inference)

    def query(self, embeddings: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Token-space queries ``MLP([v ; p / position_scale])`` for ``(n, dim)`` and ``(n, 3)`` inputs."""
        return self.query_net(torch.cat([embeddings, positions / self.position_scale], dim=-1))

    def write(self, previous: torch.Tensor | None, embeddings: torch.Tensor) -> torch.Tensor:
        """New tokens ``R([theta_new ; v])``: ``theta_new`` folds the previous token's view into its state
        (module docstring; zeros without a previous token)."""
        if previous is None:
            theta = torch.zeros_like(embeddings)
        else:
            theta = fold_history(self.r.inverse(previous), self.dim, self.history_decay)
        return self.r(torch.cat([theta, embeddings], dim=-1))

    def decode(self, preimages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(v_hat, position, descriptor)`` from ``R^-1(token)`` values ``(n, 2 * dim)``."""
        v_hat = preimages[..., self.dim :]
        return v_hat, self.position_head(v_hat) * self.position_scale, self.descriptor_head(v_hat)

    def inference(self) -> NumpyInference | TorchInference:
        """What reads and writes run: :class:`NumpyInference` when every parameter is a float32 CPU tensor,
        else :class:`TorchInference`; also :class:`TorchInference` while an attention probe
        (:mod:`vlnkit.perception.attention`) sits on a layer of ``r``, which the numpy path would bypass.

        The numpy snapshot is rebuilt whenever a parameter may have changed: an in-place update (an
        optimiser step, ``copy_``; seen through the tensors' version counters), ``load_state_dict`` or a
        conversion of this module (``.to``, ``.double``). Rebinding a parameter's ``.data`` by hand or
        converting a submodule alone is not seen; call :meth:`load_state_dict` or ``.to`` on the model.
        """
        if any(probes_of(layer) for layer in self.r.layers):
            return TorchInference(self)
        versions = sum(map(_VERSION, self._watched))
        if self._inference is None or versions != self._versions:
            self._watched = list(self.parameters())
            self._versions = sum(map(_VERSION, self._watched))
            fast = all(p.dtype == torch.float32 and p.device.type == "cpu" for p in self._watched)
            self._inference = NumpyInference(self) if fast else TorchInference(self)
        return self._inference

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 - nn.Module's signature
        """Drop the inference snapshot whenever parameters may be replaced (``.to``, ``.double``)."""
        self._inference = None
        return super()._apply(fn, recurse)

    @staticmethod
    def _forget_inference(module: LTMModel, incompatible_keys: object) -> None:
        """After ``load_state_dict`` (which may assign new parameters) rebuild the snapshot lazily."""
        module._inference = None


_VERSION = attrgetter("_version")


class TorchInference:
    """The reference inference path: :class:`LTMModel`'s torch modules under ``inference_mode``, numpy in
    and out (used when the model is not float32 on the CPU, for inputs too large for :class:`NumpyInference`
    to pay off, and by the tests as the reference)."""

    def __init__(self, model: LTMModel) -> None:
        self.model = model

    def r(self, x: np.ndarray) -> np.ndarray:
        """``R(x)`` for tokens ``(n, 2 * dim)``."""
        with torch.inference_mode():
            return self._out(self.model.r(self._in(x)))

    def query(self, embeddings: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Token-space queries for embeddings ``(n, dim)`` seen at positions ``(n, 3)``."""
        with torch.inference_mode():
            return self._out(self.model.query(self._in(embeddings), self._in(positions)))

    def decode(self, v_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(positions, descriptors)`` decoded from the second halves ``v_hat`` ``(n, dim)`` of preimages."""
        with torch.inference_mode():
            v = self._in(v_hat)
            model = self.model
            return self._out(model.position_head(v) * model.position_scale), self._out(model.descriptor_head(v))

    def _in(self, array: np.ndarray) -> torch.Tensor:
        parameter = next(self.model.parameters())
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        return tensor.to(parameter.device, parameter.dtype)

    @staticmethod
    def _out(tensor: torch.Tensor) -> np.ndarray:
        return tensor.to("cpu", torch.float32).numpy()


class NumpyInference:
    """:class:`TorchInference`'s functions in float32 numpy over a snapshot of an :class:`LTMModel`'s weights,
    for the inputs a memory step has: one query, one or two fresh tokens, ``top_m`` tokens to decode.

    ``r`` runs :class:`~vlnkit.memory.reversible.NumpyReversible`; the query MLP and the two decoder heads are
    stored transposed with the scales of :func:`~vlnkit.memory.reversible.scaled_gelu` folded in, the heads
    share their first layer, and each row is one matrix-vector product (OpenBLAS's matrix-matrix kernel
    packs the whole weight matrix first, which costs several times more at a few rows). Numpy pays off only
    where a call's fixed overhead dominates, so larger inputs (more than :data:`_FEW_ROWS` rows, or an R
    batch whose products would reach OpenBLAS's threading threshold and start BLAS threads that compete
    with torch's) go to the torch modules. Get it from :meth:`LTMModel.inference`, which rebuilds it when
    the weights change.
    """

    def __init__(self, model: LTMModel) -> None:
        self.reference = TorchInference(model)
        self.position_scale = np.float32(model.position_scale)
        self.reversible = NumpyReversible(model.r)
        largest = max((matrix.size for layer in self.reversible.layers for matrix in layer[:4]), default=1)
        self.max_tokens = _SINGLE_THREAD_PRODUCT // (model.r.seq_len * largest)
        with torch.no_grad():
            self._query = [_array(a) for a in _folded_mlp(model.query_net)]
            position, descriptor = _folded_mlp(model.position_head), _folded_mlp(model.descriptor_head)
        self._hidden = position[0].shape[1]
        self._heads_first = _array(torch.cat([position[0], descriptor[0]], dim=1))
        self._heads_first_bias = _array(torch.cat([position[1], descriptor[1]]))
        self._position_second, self._position_bias = _array(position[2]), _array(position[3])
        self._descriptor_second, self._descriptor_bias = _array(descriptor[2]), _array(descriptor[3])

    def r(self, x: np.ndarray) -> np.ndarray:
        """``R(x)`` for tokens ``(n, 2 * dim)``."""
        return self.reversible(x) if len(x) <= self.max_tokens else self.reference.r(x)

    def query(self, embeddings: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Token-space queries for embeddings ``(n, dim)`` seen at positions ``(n, 3)``."""
        if len(embeddings) > _FEW_ROWS:
            return self.reference.query(embeddings, positions)
        first, first_bias, second, second_bias = self._query
        scaled = np.asarray(positions, dtype=np.float32) / self.position_scale
        hidden = _rows_matmul(np.concatenate((np.asarray(embeddings, dtype=np.float32), scaled), axis=1), first)
        hidden += first_bias
        scaled_gelu(hidden)
        out = _rows_matmul(hidden, second)
        out += second_bias
        return out

    def decode(self, v_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(positions, descriptors)`` decoded from the second halves ``v_hat`` ``(n, dim)`` of preimages."""
        if len(v_hat) > _FEW_ROWS:
            return self.reference.decode(v_hat)
        hidden = _rows_matmul(np.asarray(v_hat, dtype=np.float32), self._heads_first)
        hidden += self._heads_first_bias
        scaled_gelu(hidden)
        positions = _rows_matmul(hidden[:, : self._hidden], self._position_second)
        positions += self._position_bias
        positions *= self.position_scale
        descriptors = _rows_matmul(hidden[:, self._hidden :], self._descriptor_second)
        descriptors += self._descriptor_bias
        return positions, descriptors


_FEW_ROWS = 4
_SINGLE_THREAD_PRODUCT = 1 << 17  # m * n * k of a matmul; by default OpenBLAS starts threads from 2**18


def _rows_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for a few rows of ``a``, as one matrix-vector product per row."""
    return (a[:, None, :] @ b)[:, 0]


def _folded_mlp(mlp: _MLP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(s W1^T, s b1, W2^T / (2 s), b2)`` of an :class:`_MLP`, for :func:`scaled_gelu` activations."""
    scale = GELU_SCALE
    first, second = mlp.first, mlp.second
    return first.weight.T * scale, first.bias * scale, second.weight.T * (0.5 / scale), second.bias


def _array(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=np.float32)


def fold_history(preimage: torch.Tensor | np.ndarray, dim: int, decay: float) -> torch.Tensor | np.ndarray:
    """The next state from a token's preimage ``[theta ; v]`` (last axis ``2 * dim``):
    ``decay * theta + (1 - decay) * v``."""
    return decay * preimage[..., :dim] + (1.0 - decay) * preimage[..., dim:]


@dataclass(frozen=True)
class LTMReadout:
    """The ``top_m`` tokens a read found, nearest first, with what was decoded from them."""

    keys: np.ndarray
    distances: np.ndarray
    tokens: np.ndarray
    embeddings: np.ndarray
    positions: np.ndarray
    descriptors: np.ndarray
    history: np.ndarray
    """``(n, dim)`` each token's state: the exponential average of its place's earlier views."""

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class _EmbeddingTable:
    """``key -> [theta ; v]`` rows: the exact-inverse cache (``R^-1(token)``)."""

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
        self._latest = _EmbeddingTable(2 * self.dim)
        self._pending: dict[int, np.ndarray | None] = {}

    def __len__(self) -> int:
        return len(self.index) + sum(1 for key in self._pending if key not in self.index)

    def write(self, keys: np.ndarray, embeddings: np.ndarray) -> None:
        """Write one embedding per key (rows of ``embeddings`` ``(n, dim)``; one ``(dim,)`` vector is written
        to every key), in order."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1).tolist()
        embeddings = np.asarray(embeddings, dtype=np.float32)
        rows = [embeddings] * len(keys) if embeddings.ndim == 1 else embeddings.reshape(len(keys), self.dim)
        if self.config.cache_inverse:
            table = self._latest
            decay = self.config.history_decay
            for key, embedding in zip(keys, rows):
                seen = key in table.rows
                row = table.row(key)  # may grow ``table.values``: index it afterwards
                if seen:
                    table.values[row, : self.dim] = fold_history(table.values[row], self.dim, decay)
                table.values[row, self.dim :] = embedding
                self._pending[key] = None
        else:
            for key, embedding in zip(keys, rows):
                previous = self._current_token(key)
                with torch.inference_mode():
                    prev = None if previous is None else torch.from_numpy(previous[None])
                    token = self.model.write(prev, torch.from_numpy(embedding.reshape(1, self.dim).copy()))
                self._pending[key] = token[0].numpy()
        if len(self._pending) >= self.config.flush_every:
            self.flush()

    def flush(self) -> None:
        """Compute and index the tokens of every key written since the last flush."""
        if self._pending:
            self._flush(self.model.inference())

    def _flush(self, inference: NumpyInference | TorchInference) -> None:
        """:meth:`flush` with the model's inference path in hand (there are pending keys)."""
        keys = np.fromiter(self._pending, np.int64, len(self._pending))
        if self.config.cache_inverse:
            tokens = self._fresh_tokens(keys, inference)
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
        inference = self.model.inference()
        if self._pending:
            self._flush(inference)
        m = self.config.top_m if m is None else m
        if len(self.index) == 0 or m <= 0:
            return self._empty()
        v = np.asarray(embedding, dtype=np.float32).reshape(1, self.dim)
        p = np.asarray(position, dtype=np.float32).reshape(1, 3)
        keys, distances = self.index.search(inference.query(v, p)[0], m)
        tokens = self.index.get(keys)
        if self.config.cache_inverse:
            preimages = self._preimages_of(keys)
        else:
            with torch.inference_mode():
                preimages = self.model.r.inverse(torch.from_numpy(tokens)).numpy()
        history, v_hat = preimages[:, : self.dim].copy(), preimages[:, self.dim :].copy()
        positions, descriptors = inference.decode(v_hat)
        return LTMReadout(
            keys=keys,
            distances=distances,
            tokens=tokens,
            embeddings=v_hat,
            positions=positions.astype(np.float64),
            descriptors=descriptors,
            history=history,
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
            "preimages": torch.from_numpy(table.values[rows].copy()),
        }

    def load_state_dict(self, state: dict) -> None:
        """Replace weights and contents with a :meth:`state_dict` (same ``dim`` and config)."""
        if int(state["dim"]) != self.dim or int(state["descriptor_dim"]) != self.descriptor_dim:
            raise ValueError("state was saved for different dimensions")
        self.model.load_state_dict(state["model"])
        self.clear()
        self.index.load_state_dict(state["index"])
        if "preimages" in state:
            preimages = state["preimages"].numpy()
        else:  # saved before the running state: every token was R([0 ; v])
            latest = state["latest"].numpy()
            preimages = np.concatenate([np.zeros_like(latest), latest], axis=1)
        for key, values in zip(state["latest_keys"].tolist(), preimages):
            row = self._latest.row(key)
            self._latest.values[row] = values

    def _preimages_of(self, keys: np.ndarray) -> np.ndarray:
        """``R^-1`` of each key's token, ``(n, 2 * dim)``: its state, then its latest ``v``."""
        rows = self._latest.rows
        return self._latest.values[[rows[key] for key in keys.tolist()]]

    def _fresh_tokens(self, keys: np.ndarray, inference: NumpyInference | TorchInference) -> np.ndarray:
        """``R([theta ; v])`` of ``keys``' cached preimages, with R run once per distinct preimage."""
        preimages = self._preimages_of(keys)
        distinct: dict[bytes, int] = {}
        inverse = [distinct.setdefault(row.tobytes(), len(distinct)) for row in preimages]
        unique = np.zeros((len(distinct), 2 * self.dim), dtype=np.float32)
        unique[inverse] = preimages
        return inference.r(unique)[inverse]

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
            history=np.empty((0, d), dtype=np.float32),
            positions=np.empty((0, 3), dtype=np.float64),
            descriptors=np.empty((0, self.descriptor_dim), dtype=np.float32),
        )
