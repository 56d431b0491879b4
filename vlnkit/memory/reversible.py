"""Reversible Transformer R for long-term-memory tokens, with its exact inverse.

A token of size ``2 * dim`` is split into halves ``x1, x2``; each half is read as a sequence of ``seq_len``
sub-tokens of width ``dim / seq_len``. Every layer is an additive coupling

    y1 = x1 + Attn(x2)        y2 = x2 + MLP(y1)

so the inverse is exact by construction (``x2 = y2 - MLP(y1)``, ``x1 = y1 - Attn(x2)``), up to floating
point rounding. ``Attn`` is pre-norm multi-head self-attention over the sub-tokens (torch's
``scaled_dot_product_attention`` through :func:`vlnkit.perception.attention.attend`, so probes can see
it, with a learned per-position bias on the projections so sub-tokens are distinguishable); ``MLP`` is a pre-norm two-layer perceptron applied to every sub-token. Nothing random
sits in the coupling path (no dropout), so ``inverse(forward(x)) == x`` holds in training mode too.

R runs once per memory flush on a handful of tokens, where per-operator overhead dominates, so the layers
are written as plain tensor functions over cached parameter references rather than nested module calls
(about 1.7x faster at batch 2 on one CPU core). :class:`NumpyReversible` goes further for inference: the
same forward pass in float32 numpy over weights folded once, with fewer and cheaper operator calls.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlnkit.perception.attention.hook import AttentionSite, attend


class _Tensors(NamedTuple):
    """The parameters of one coupling layer, as plain references for the functional layer code."""

    attn_norm_weight: torch.Tensor
    attn_norm_bias: torch.Tensor
    qkv_weight: torch.Tensor
    qkv_bias: torch.Tensor
    position: torch.Tensor
    proj_weight: torch.Tensor
    proj_bias: torch.Tensor
    mlp_norm_weight: torch.Tensor
    mlp_norm_bias: torch.Tensor
    up_weight: torch.Tensor
    up_bias: torch.Tensor
    down_weight: torch.Tensor
    down_bias: torch.Tensor


class _Coupling(nn.Module, AttentionSite):
    """Parameters of one coupling layer: the attention block ``Attn`` and the perceptron ``MLP``. An
    attention site of :mod:`vlnkit.perception.attention` (probes see its sub-token attention, in the forward
    and in the inverse pass)."""

    def __init__(self, width: int, seq_len: int, heads: int, head_dim: int, hidden: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.attn_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * inner)
        self.position = nn.Parameter(torch.randn(seq_len, 3 * inner) * 0.02)
        self.proj = nn.Linear(inner, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, width)

    def tensors(self) -> _Tensors:
        """This layer's parameters in :class:`_Tensors` order."""
        return _Tensors(
            self.attn_norm.weight,
            self.attn_norm.bias,
            self.qkv.weight,
            self.qkv.bias,
            self.position,
            self.proj.weight,
            self.proj.bias,
            self.mlp_norm.weight,
            self.mlp_norm.bias,
            self.up.weight,
            self.up.bias,
            self.down.weight,
            self.down.bias,
        )


class ReversibleTransformer(nn.Module):
    """R: ``(..., 2 * dim) -> (..., 2 * dim)`` with :meth:`inverse` its exact inverse.

    ``depth`` coupling layers (6 in the paper's reference), ``heads`` attention heads (8), each half read
    as ``seq_len`` sub-tokens; ``head_dim`` defaults to ``max(4, width // heads)`` with
    ``width = dim // seq_len``; the perceptron's hidden width is ``mlp_ratio * width``.
    """

    def __init__(
        self,
        dim: int,
        depth: int = 6,
        heads: int = 8,
        seq_len: int = 4,
        head_dim: int | None = None,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if dim % seq_len:
            raise ValueError(f"dim ({dim}) must be divisible by seq_len ({seq_len})")
        self.dim, self.seq_len, self.heads = dim, seq_len, heads
        self.width = dim // seq_len
        self.head_dim = head_dim or max(4, self.width // heads)
        hidden = max(1, int(round(self.width * mlp_ratio)))
        self.layers = nn.ModuleList(
            _Coupling(self.width, seq_len, heads, self.head_dim, hidden) for _ in range(depth)
        )
        self._tensors: list[_Tensors] | None = None
        self.register_load_state_dict_post_hook(ReversibleTransformer._forget_tensors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``R(x)`` for tokens ``x`` of shape ``(..., 2 * dim)``."""
        batch, x1, x2 = self._halves(x)
        for module, layer in zip(self.layers, self._layer_tensors()):
            x1 = x1 + self._attention(module, layer, x2, batch)
            x2 = x2 + self._mlp(layer, x1)
        return self._join(x1, x2, x.shape)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``R^-1(y)``: undo the layers in reverse order."""
        batch, y1, y2 = self._halves(y)
        for module, layer in zip(reversed(self.layers), reversed(self._layer_tensors())):
            y2 = y2 - self._mlp(layer, y1)
            y1 = y1 - self._attention(module, layer, y2, batch)
        return self._join(y1, y2, y.shape)

    def _attention(self, site: _Coupling, t: _Tensors, x: torch.Tensor, batch: int) -> torch.Tensor:
        """``Attn`` on sub-tokens ``x`` of shape ``(batch * seq_len, width)`` of the layer ``site``."""
        normed = F.layer_norm(x, (self.width,), t.attn_norm_weight, t.attn_norm_bias)
        qkv = F.linear(normed, t.qkv_weight, t.qkv_bias).view(batch, self.seq_len, -1) + t.position
        q, k, v = qkv.view(batch, self.seq_len, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        mixed = attend(site, q, k, v, inputs=normed.view(batch, self.seq_len, -1))
        mixed = mixed.transpose(1, 2).reshape(batch * self.seq_len, -1)
        return F.linear(mixed, t.proj_weight, t.proj_bias)

    def _mlp(self, t: _Tensors, x: torch.Tensor) -> torch.Tensor:
        """``MLP`` on sub-tokens ``x`` of shape ``(batch * seq_len, width)``."""
        normed = F.layer_norm(x, (self.width,), t.mlp_norm_weight, t.mlp_norm_bias)
        hidden = F.gelu(F.linear(normed, t.up_weight, t.up_bias), approximate="tanh")
        return F.linear(hidden, t.down_weight, t.down_bias)

    def _layer_tensors(self) -> list[_Tensors]:
        if self._tensors is None:
            self._tensors = [layer.tensors() for layer in self.layers]
        return self._tensors

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 - nn.Module's signature
        """Drop the cached parameter references whenever parameters may be replaced (``.to``, ``.double``)."""
        self._tensors = None
        return super()._apply(fn, recurse)

    @staticmethod
    def _forget_tensors(module: ReversibleTransformer, incompatible_keys: object) -> None:
        """After ``load_state_dict`` (which may assign new parameters) rebuild the references lazily."""
        module._tensors = None

    def _halves(self, x: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
        if x.shape[-1] != 2 * self.dim:
            raise ValueError(f"expected tokens of size {2 * self.dim}, got {x.shape[-1]}")
        halves = x.reshape(-1, 2, self.seq_len * self.width)
        batch = halves.shape[0]
        return batch, halves[:, 0].reshape(-1, self.width), halves[:, 1].reshape(-1, self.width)

    def _join(self, a: torch.Tensor, b: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        batch = a.shape[0] // self.seq_len
        return torch.cat((a.reshape(batch, -1), b.reshape(batch, -1)), dim=1).reshape(shape)


# Constants as 0-d float32 arrays: the cheapest second operand for a numpy ufunc call.
_LAYER_NORM_EPS = np.array(1e-5, dtype=np.float32)  # F.layer_norm's default, used by ReversibleTransformer
_GELU_C1 = math.sqrt(2.0 / math.pi)
GELU_SCALE = (_GELU_C1 * 0.044715) ** (1.0 / 3.0)  # see scaled_gelu
_GELU_SHIFT = np.array(_GELU_C1 / GELU_SCALE, dtype=np.float32)
_ONE = np.array(1.0, dtype=np.float32)
_SAFE_LOGIT = 60.0  # |logit| <= 60: exp stays far inside float32's range, so softmax needs no max shift


class _FoldedLayer(NamedTuple):
    """One coupling layer as float32 matrices; ``qkv``, ``proj`` and ``up`` take inputs with ``seq_len``
    one-hot position columns appended, ``down`` has its bias apart; ``bounded`` says no attention logit
    can exceed :data:`_SAFE_LOGIT` in magnitude."""

    qkv: np.ndarray
    proj: np.ndarray
    up: np.ndarray
    down: np.ndarray
    down_bias: np.ndarray
    bounded: bool


class NumpyReversible:
    """``R``'s forward pass in float32 numpy: a snapshot of a :class:`ReversibleTransformer`'s weights.

    The same function as :meth:`ReversibleTransformer.forward` (equal to float32 rounding, about 1e-6; the
    tests hold it to the torch module), arranged so that a call on a few tokens makes as few numpy calls as
    possible, since on one token each call's fixed overhead, not arithmetic, is the cost:

    * the matrices are stored transposed with one extra row per sub-token position, and their inputs carry
      a one-hot position block, so one matmul also adds the bias (for ``qkv`` the learned position bias
      too); only the perceptron's hidden layer stays a plain contiguous array, because numpy's
      elementwise calls on strided views cost about twice as much and GELU makes six of them;
    * the LayerNorm scale and shift are folded into the matrix after the norm, and the attention scale
      ``1 / sqrt(head_dim)`` into the query columns;
    * each head's values get an extra column that is always 1, so the matmul with the unnormalised
      attention weights ``exp(logits)`` yields the softmax denominator beside the numerator;
    * the softmax skips subtracting the row maximum (it cancels out) in layers whose weights bound every
      logit by 60 in magnitude (LayerNorm outputs have norm at most ``sqrt(width)``, so
      ``|q| <= sqrt(width) * ||W_q|| + |b_q|`` and likewise for ``k``);
    * GELU runs on pre-scaled inputs, :func:`scaled_gelu`, with its scale folded into the perceptron.

    The snapshot does not follow later changes to the module's parameters; build a new one after training
    or loading (:meth:`~vlnkit.memory.ltm.LTMModel.inference` does this by itself).
    """

    def __init__(self, model: ReversibleTransformer) -> None:
        self.seq_len, self.width, self.heads, self.head_dim = model.seq_len, model.width, model.heads, model.head_dim
        self.inner = self.heads * self.head_dim
        with torch.no_grad():
            self.layers = [self._fold(layer.tensors()) for layer in model.layers]
        width = self.width
        self._centre = (np.eye(width) - 1.0 / width).astype(np.float32)
        self._mean = np.full((width, 1), 1.0 / width, dtype=np.float32)
        self._positions: dict[int, np.ndarray] = {}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``R(x)`` for float32 tokens ``x`` of shape ``(n, 2 * dim)``."""
        s, w, heads, d, inner = self.seq_len, self.width, self.heads, self.head_dim, self.inner
        x = np.asarray(x, dtype=np.float32)
        batch = len(x)
        rows = batch * s
        halves = x.reshape(batch, 2, s * w)
        x1 = halves[:, 0].reshape(rows, w).copy()
        x2 = halves[:, 1].reshape(rows, w).copy()
        positions = self._positions.get(batch)
        if positions is None:
            positions = self._positions[batch] = np.tile(np.eye(s, dtype=np.float32), (batch, 1))
        normed = np.empty((rows, w + s), dtype=np.float32)
        mixed = np.empty((rows, inner + s), dtype=np.float32)
        normed[:, w:] = mixed[:, inner:] = positions
        normed_out = normed[:, :w]
        heads_out = mixed[:, :inner].reshape(batch, s, heads, d).transpose(0, 2, 1, 3)
        for layer in self.layers:
            self._normalise(x2, normed_out)
            qkv = normed @ layer.qkv
            q = qkv[:, :inner].reshape(batch, s, heads, d).transpose(0, 2, 1, 3)
            k = qkv[:, inner : 2 * inner].reshape(batch, s, heads, d).transpose(0, 2, 3, 1)
            v = qkv[:, 2 * inner :].reshape(batch, s, heads, d + 1).transpose(0, 2, 1, 3)
            weights = q @ k
            if not layer.bounded:
                weights -= weights.max(axis=-1, keepdims=True)
            np.exp(weights, out=weights)
            attended = weights @ v
            np.divide(attended[..., :d], attended[..., d:], out=heads_out)
            x1 += mixed @ layer.proj
            self._normalise(x1, normed_out)
            hidden = normed @ layer.up
            scaled_gelu(hidden)
            x2 += hidden @ layer.down
            x2 += layer.down_bias
        return np.concatenate((x1.reshape(batch, -1), x2.reshape(batch, -1)), axis=1)

    def _normalise(self, x: np.ndarray, out: np.ndarray) -> None:
        """LayerNorm of ``x`` without its affine part (folded into the next matrix), written into ``out``."""
        centred = x @ self._centre
        deviation = (centred * centred) @ self._mean
        deviation += _LAYER_NORM_EPS
        np.sqrt(deviation, out=deviation)
        np.divide(centred, deviation, out=out)

    def _fold(self, t: _Tensors) -> _FoldedLayer:
        """Fold one layer's parameters (in float64, then rounded once to float32)."""
        s, w, heads, d, inner = self.seq_len, self.width, self.heads, self.head_dim, self.inner
        p = _Tensors(*(tensor.detach().to("cpu", torch.float64).numpy() for tensor in t))
        qkv_t = p.qkv_weight.T
        qkv = np.vstack([p.attn_norm_weight[:, None] * qkv_t, p.attn_norm_bias @ qkv_t + p.qkv_bias + p.position])
        qkv[:, :inner] /= math.sqrt(d)
        values = np.concatenate([qkv[:, 2 * inner :].reshape(w + s, heads, d), np.zeros((w + s, heads, 1))], axis=2)
        values[w:, :, d] = 1.0
        bounded = _logit_bound(qkv[:, :inner], qkv[:, inner : 2 * inner], w, heads, d) <= _SAFE_LOGIT
        qkv = np.hstack([qkv[:, : 2 * inner], values.reshape(w + s, -1)])
        proj = np.vstack([p.proj_weight.T, np.tile(p.proj_bias, (s, 1))])
        up_t = p.up_weight.T
        up = np.vstack([p.mlp_norm_weight[:, None] * up_t, np.tile(p.mlp_norm_bias @ up_t + p.up_bias, (s, 1))])
        up *= GELU_SCALE
        down = p.down_weight.T * (0.5 / GELU_SCALE)
        matrices = (np.ascontiguousarray(a, dtype=np.float32) for a in (qkv, proj, up, down, p.down_bias))
        return _FoldedLayer(*matrices, bounded=bool(bounded))


def _logit_bound(queries: np.ndarray, keys: np.ndarray, width: int, heads: int, head_dim: int) -> float:
    """Largest ``|q . k|`` any input can produce, from folded query and key matrices ``(width + seq_len,
    heads * head_dim)`` (LayerNorm rows first, then one bias row per position)."""
    radius = math.sqrt(width)
    bound = 0.0
    for h in range(heads):
        columns = slice(h * head_dim, (h + 1) * head_dim)
        largest = []
        for matrix in (queries[:, columns], keys[:, columns]):
            gain = np.linalg.norm(matrix[:width], 2)
            largest.append(radius * gain + np.linalg.norm(matrix[width:], axis=1).max())
        bound = max(bound, largest[0] * largest[1])
    return bound


def scaled_gelu(g: np.ndarray) -> None:
    """``g <- g * (1 + tanh(g * (g**2 + a)))`` in place, which is ``2 * s * gelu_tanh(g / s)``.

    With ``s = (0.044715 * sqrt(2 / pi)) ** (1 / 3)`` and ``a = sqrt(2 / pi) / s`` this is torch's tanh GELU,
    ``0.5 * h * (1 + tanh(sqrt(2 / pi) * (h + 0.044715 * h**3)))``, of ``h = g / s``, doubled and scaled:
    callers multiply the layer before by ``s`` and the layer after by ``0.5 / s`` (6 numpy calls instead of 8).
    """
    u = g * g
    u += _GELU_SHIFT
    u *= g
    np.tanh(u, out=u)
    u += _ONE
    g *= u
