"""DependencyViT (CVPR 2023): a ViT whose attention is reversed, so that each child token *sends* messages to its
parents, and a dependency tree over the tokens emerges from the attention.

**This is a re-implementation of an unreleased model.** The official repository (``dingmyu/DependencyViT``, MIT)
holds no code and no weights. This module follows the *port configuration* of ``docs/perception-vision.md``
section 5 (an independent, unmerged timm port, itself a hypothesis that trains about 2 % below the paper),
written from the formulas of that section; no third-party code was read or copied, and no accuracy is claimed.

Registered:

- ``dependencyvit_t``: the port's tiny model, **5,964,712** parameters with its 1000-class head (465,504 per
  block): patch 16, 224x224, dim 192, depth 12, 12 heads (head dim 16), MLP ratio 4, no CLS token, global
  average pooling, ``qkv_bias=False``, LayerScale (init 1e-6) on both branches, no ``fc_norm``. 1.296 GMACs at
  224x224 as counted by :func:`~vlnkit.perception.backbones.layers.count_gmacs` (0.992 with ``lite=True``); the
  sheet gives no FLOPs to compare with.
- ``dependencyvit_nano``: a small configuration for tests and CPU use (64x64, dim 32, depth 4, 4 heads,
  10 classes; with ``lite=True`` it prunes after blocks ``[1, 3]``), which keeps every code path.

The Lite form is the keyword ``lite=True`` of either factory (pruning after blocks ``[2, 5, 8, 11]``, ratio
0.16); the port's small model (dim 384, 12 heads, 22,987,624 parameters) is ``DependencyViT(embed_dim=384)``.

One block (input ``x``: ``N`` tokens, ``H`` heads of dim ``d``; ``m^(l-1)`` the previous block's controller)::

    z = LN(x);  Q, K, V = z W_qkv                      (no bias)
    A_F^h = softmax_rows(Q^h K^hT / sqrt(d))           row i = child i's distribution over parents j
    p_i = softmax_h(W_p z_i / tau)                     head selector, sum_h p_ih = 1
    m_i = m_i^(l-1) * sigmoid(MLP(z_i))                message controller, cumulative (m^(0) = 1)
    A_R^h[j, i] = A_F^h[i, j] * p_ih * m_i             reversed attention: child i sends to parent j
    o_j^h = sum_i A_R^h[j, i] v_i^h                    per head, then the output projection
    x <- x + gamma_1 * W_o [o^1 .. o^H]
    x <- x + gamma_2 * MLP(LN(x))
    A_M = sum_h A_R^h                                  soft dependency mask; sum_j A_M[j, i] = m_i

Both residuals are kept (the earlier port revision lost the input on the attention branch: the sheet's pitfall).
Reversed attention needs the transposed probabilities, so it cannot use fused SDPA; it is computed as
``A_F^T (w * V)`` with ``w_ih = p_ih m_i`` (:func:`reversed_attention`), without materialising ``A_R``, at the
MAC count of ordinary attention. ``A_M`` is only built when asked for (:meth:`DependencyViT.forward_with_dependencies`),
and :func:`dependency_tree` turns one ``A_M`` into parent indices.

Choices made where the sheet (and the port's FIXMEs) leave them open:

- **Controller inputs.** The head selector and the message controller read the block's normalised input
  ``z = LN_1(x)``, the tokens the attention sees. LayerNorms use ``eps=1e-6`` (the timm ViT default).
- **Temperature.** ``head_temperature`` (default 0.1, "appendix D.1"). The port's earlier revision fell back to
  1.0 after NaNs at 0.1; here the head-selector softmax runs in at least float32 (torch's softmax subtracts the
  maximum), so large logits saturate to a one-hot ``p`` instead of overflowing in half precision. Pass
  ``head_temperature=1.0`` for the fallback.
- **Where m multiplies.** Inside ``A_R`` and once on the output: the final LayerNorm's tokens are multiplied by
  the last ``m`` (as the port does), for the feature map and for the pooled logits. At initialisation
  ``sigmoid(MLP(z)) ~ 0.5``, so the output scale starts near ``2^-depth``.
- **Lite / dynamic pooling.** After each block whose 0-based index is in ``prune_layers`` (``[2, 5, 8, 11]``, so
  the last one prunes after the final block, before the final norm and pooling), each image keeps the
  ``n' = max(1, floor(keep * n))`` tokens with the largest outgoing message mass ``sum_{h,j} A_R^h[j, i]`` (the
  port's score; it equals ``m_i`` by the invariant) and drops the others, the leaves. ``keep = 1 - prune_ratio``
  (0.84) and ``n`` is the token count *entering that pruning layer*, so the ratios compound: 196 -> 164 -> 137
  -> 115 -> 96 at 224x224 (:meth:`DependencyViT.token_schedule`). Kept tokens stay in raster order.
- **Feature map.** DependencyViT is a plain single-scale ViT, and the sheet describes no multi-scale form, so
  there is one feature map, the stride-16 token grid ``(B, C, H/16, W/16)`` (``feature_info`` has one entry);
  a dense head that needs other strides resamples it. With Lite the surviving tokens are scattered back to
  their grid cells and pruned cells are zero; :meth:`DependencyViT.forward_head` averages over the surviving
  tokens only (the grid sum divided by the final count of the schedule, which depends only on the grid size).
- **Dependency tree.** Self-parenting is not allowed (the diagonal, a token's message to itself, is usually the
  largest entry and says nothing about grouping); the cycles of the arg-max graph are broken at their weakest
  edge, so the parents form a forest whose roots have parent ``-1`` (:func:`dependency_tree`).
- **Input sizes.** Inputs whose sides are not multiples of the patch are zero-padded at the bottom/right; a grid
  other than the configured one gets the position embedding resized bicubically.
- **Initialisation.** ViT-style truncated normal (std 0.02) for Linear weights and the position embedding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlnkit.perception.attention.hook import AttentionSite, probe_heads, probe_logits, probe_probs
from vlnkit.perception.backbones.base import Backbone, FeatureInfo
from vlnkit.perception.backbones.layers import DropPath, init_weights_trunc_normal
from vlnkit.perception.backbones.registry import register_model


def reversed_attention(q: Tensor, k: Tensor, v: Tensor, p: Tensor, m: Tensor, scale: float,
                       site: nn.Module | None = None) -> tuple[Tensor, Tensor]:
    """Reversed attention of one layer: ``o_j^h = sum_i A_R^h[j, i] v_i^h`` with
    ``A_R^h[j, i] = A_F^h[i, j] p_ih m_i`` and ``A_F^h = softmax_rows(Q^h K^hT * scale)``.

    ``q, k, v``: ``(B, H, N, d)``; ``p``: ``(B, N, H)`` head selector; ``m``: ``(B, N)`` message controller.
    Returns the per-head outputs ``(B, H, N, d)`` and ``A_F`` ``(B, H, N, N)`` (indexed ``[b, h, i, j]``).
    With ``site``, the probes attached to it (:mod:`vlnkit.perception.attention`) see and may edit the
    logits and ``A_F`` (the forward map, before it is transposed) and the head outputs.
    """
    weights = p.transpose(1, 2) * m.unsqueeze(1)
    attn = probe_probs(site, probe_logits(site, q @ k.transpose(-2, -1) * scale).softmax(dim=-1))
    return probe_heads(site, attn.transpose(-2, -1) @ (v * weights.unsqueeze(-1))), attn


def dependency_mask(attn: Tensor, p: Tensor, m: Tensor) -> Tensor:
    """Soft dependency mask ``A_M[j, i] = sum_h A_F^h[i, j] p_ih m_i`` ``(B, N, N)`` (parent ``j``, child ``i``)
    from ``A_F`` ``(B, H, N, N)``, the head selector ``p`` ``(B, N, H)`` and the controller ``m`` ``(B, N)``."""
    return torch.einsum("bhij,bih,bi->bji", attn, p, m)


def outgoing_message_mass(attn: Tensor, p: Tensor, m: Tensor) -> Tensor:
    """Message mass each token sends, ``sum_{h,j} A_R^h[j, i]`` ``(B, N)``: the Lite pruning score (``= m_i``)."""
    return torch.einsum("bhi,bih,bi->bi", attn.sum(dim=-1), p, m)


def dependency_tree(mask: Tensor) -> Tensor:
    """Parent indices ``(..., N)`` of the dependency tree of a soft dependency mask ``A_M`` ``(..., N, N)``.

    ``parent(i) = argmax_{j != i} A_M[j, i]`` (self-parenting is not allowed). Every node then has one parent, so
    the arg-max graph has one cycle per connected component; each cycle is broken at its weakest edge (the cycle
    node ``i`` with the smallest ``A_M[parent(i), i]``, ties to the lowest index), which becomes a root with
    parent ``-1``. The result is a forest: following parents from any node reaches a root in fewer than ``N``
    steps. Subtrees group tokens into parts / objects.
    """
    if mask.ndim < 2 or mask.shape[-1] != mask.shape[-2]:
        raise ValueError(f"dependency_tree expects a square mask (..., N, N), got shape {tuple(mask.shape)}")
    n = mask.shape[-1]
    if n < 2:
        raise ValueError(f"dependency_tree needs at least 2 tokens (no parent other than itself), got N={n}")
    eye = torch.eye(n, dtype=torch.bool, device=mask.device)
    scores = mask.masked_fill(eye, float("-inf"))
    parent = scores.argmax(dim=-2)
    strength = scores.gather(-2, parent.unsqueeze(-2)).squeeze(-2)
    # A unique rank per node by (edge strength, index): the weakest edge of a cycle has the smallest rank.
    order = torch.sort(strength, dim=-1, stable=True).indices
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(n, device=mask.device).expand_as(order))
    # Pointer doubling: once steps >= n, jump[i] = parent^steps(i) lies on a cycle and, for a node on a cycle,
    # low[i] is the smallest rank over its whole cycle.
    jump, low, steps = parent, rank, 1
    while steps < n:
        low = torch.minimum(low, low.gather(-1, jump))
        jump = jump.gather(-1, jump)
        steps *= 2
    on_cycle = torch.zeros_like(parent, dtype=torch.bool).scatter_(-1, jump, True)
    return parent.masked_fill(on_cycle & (rank == low), -1)


class LayerScale(nn.Module):
    """Per-channel scale ``gamma * x`` of a residual branch (CaiT LayerScale), ``gamma`` initialised small."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """Two-layer perceptron ``fc2(GELU(fc1(x)))``: the block MLP (with biases) and the message controller's
    ``MLP(dim -> dim/2 -> 1)`` (without)."""

    def __init__(self, in_features: int, hidden: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_features, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


@dataclass
class AttentionOutput:
    """What one reversed-attention layer computes: the branch output ``out`` ``(B, N, C)``, the updated controller
    ``m`` ``(B, N)``, ``A_F`` ``attn`` ``(B, H, N, N)`` and the head selector ``p`` ``(B, N, H)``."""

    out: Tensor
    m: Tensor
    attn: Tensor
    p: Tensor


class ReversedAttention(nn.Module, AttentionSite):
    """Multi-head reversed attention with its per-block head selector ``p`` and message controller ``m``; an
    attention site of :mod:`vlnkit.perception.attention`."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, head_temperature: float = 0.1) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"dim {dim} must be a positive multiple of num_heads {num_heads}")
        if not head_temperature > 0:
            raise ValueError(f"head_temperature must be > 0, got {head_temperature}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.head_temperature = head_temperature
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.head_selector = nn.Linear(dim, num_heads, bias=False)
        self.message_controller = Mlp(dim, dim // 2, 1, bias=False)

    def head_probabilities(self, z: Tensor) -> Tensor:
        """Head selector ``p_i = softmax_h(W_p z_i / tau)`` ``(B, N, H)``, computed in at least float32."""
        logits = self.head_selector(z)
        dtype = torch.promote_types(logits.dtype, torch.float32)
        return (logits.to(dtype) / self.head_temperature).softmax(dim=-1).to(z.dtype)

    def message_gate(self, z: Tensor) -> Tensor:
        """This block's factor ``sigmoid(MLP(z_i))`` ``(B, N)`` of the cumulative message controller."""
        return torch.sigmoid(self.message_controller(z)).squeeze(-1)

    def forward(self, z: Tensor, m_prev: Tensor) -> AttentionOutput:
        """Reversed attention of the normalised tokens ``z`` ``(B, N, C)`` given the previous controller
        ``m^(l-1)`` ``(B, N)``."""
        b, n, c = z.shape
        q, k, v = self.qkv(z).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        p = self.head_probabilities(z)
        m = m_prev * self.message_gate(z)
        heads, attn = reversed_attention(q, k, v, p, m, self.scale, site=self)
        return AttentionOutput(self.proj(heads.transpose(1, 2).reshape(b, n, c)), m, attn, p)


class DependencyBlock(nn.Module):
    """Pre-norm transformer block with reversed attention: ``x + gamma_1 * RevAttn(LN(x))`` then
    ``x + gamma_2 * MLP(LN(x))``, both residuals kept."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 head_temperature: float = 0.1, layer_scale_init: float = 1e-6, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ReversedAttention(dim, num_heads, qkv_bias, head_temperature)
        self.ls1 = LayerScale(dim, layer_scale_init)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim)
        self.ls2 = LayerScale(dim, layer_scale_init)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, m_prev: Tensor) -> tuple[Tensor, AttentionOutput]:
        """New tokens ``(B, N, C)`` and the attention layer's outputs (its ``m``, ``A_F`` and ``p``)."""
        att = self.attn(self.norm1(x), m_prev)
        x = x + self.drop_path(self.ls1(att.out))
        x = x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
        return x, att


@dataclass
class DependencyTrace:
    """A forward pass with its dependency structure, one list entry per block ``l``.

    ``features``: the :meth:`DependencyViT.forward_features` maps. ``masks[l]``: the soft dependency mask ``A_M``
    ``(B, N_l, N_l)`` of block ``l`` over the tokens it saw (``[b, j, i]``: parent ``j``, child ``i``).
    ``messages[l]``: that block's controller ``m`` ``(B, N_l)``. ``token_indices[l]``: the raster indices
    ``(B, N_l)`` on the token grid of those tokens (all of them without Lite). ``kept_indices``: the raster
    indices of the tokens that reach the final norm. ``grid``: the token grid ``(H/16, W/16)``.
    """

    features: list[Tensor]
    masks: list[Tensor]
    messages: list[Tensor]
    token_indices: list[Tensor]
    kept_indices: Tensor
    grid: tuple[int, int]


class DependencyViT(Backbone):
    """DependencyViT (port configuration): a plain ViT (no CLS token, global average pooling) with reversed
    attention blocks and, with ``lite=True``, dynamic pooling of the tokens that send the least message mass.

    Args:
        num_classes: classifier classes (0: no head, ``forward`` returns the feature map).
        img_size: side of the configured square input (sets the position-embedding grid).
        patch_size: patch side, the stride of the one feature map.
        in_chans, embed_dim, depth, num_heads, mlp_ratio, qkv_bias, drop_path_rate: the ViT configuration.
        layer_scale_init: initial LayerScale ``gamma`` of both branches.
        head_temperature: the head selector's softmax temperature ``tau``.
        lite: prune tokens after the blocks of ``prune_layers`` (0-based), keeping ``1 - prune_ratio`` of them.
    """

    def __init__(self, num_classes: int = 1000, img_size: int = 224, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 192, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = False, layer_scale_init: float = 1e-6, head_temperature: float = 0.1,
                 drop_path_rate: float = 0.0, lite: bool = False, prune_layers: Sequence[int] = (2, 5, 8, 11),
                 prune_ratio: float = 0.16) -> None:
        super().__init__()
        if patch_size < 1 or img_size < patch_size or img_size % patch_size:
            raise ValueError(f"img_size {img_size} must be a positive multiple of patch_size {patch_size}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if lite:
            if not 0.0 <= prune_ratio < 1.0:
                raise ValueError(f"prune_ratio must be in [0, 1), got {prune_ratio}")
            if any(not 0 <= i < depth for i in prune_layers) or len(set(prune_layers)) != len(prune_layers):
                raise ValueError(f"prune_layers {tuple(prune_layers)} must be distinct block indices in [0, {depth})")
        self.num_classes = num_classes
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.default_input_size = (img_size, img_size)
        self.pos_grid = (img_size // patch_size, img_size // patch_size)
        self.lite = lite
        self.prune_layers = tuple(sorted(prune_layers)) if lite else ()
        self.keep_ratio = 1.0 - prune_ratio if lite else 1.0
        self.feature_info = [FeatureInfo(stride=patch_size, channels=embed_dim)]

        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pos_grid[0] * self.pos_grid[1], embed_dim))
        rates = torch.linspace(0.0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            DependencyBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, head_temperature, layer_scale_init, rate)
            for rate in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else None
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_weights_trunc_normal)

    def kept_count(self, num_tokens: int) -> int:
        """Tokens one pruning layer keeps of ``num_tokens``: ``max(1, floor(keep * num_tokens))``."""
        return max(1, math.floor(self.keep_ratio * num_tokens + 1e-9))

    def token_schedule(self, num_tokens: int) -> list[int]:
        """Token counts after each pruning layer for ``num_tokens`` input tokens (empty without Lite)."""
        counts, n = [], num_tokens
        for _ in self.prune_layers:
            n = self.kept_count(n)
            counts.append(n)
        return counts

    def embed(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Patch embedding plus (resized where needed) position embedding: tokens ``(B, N, C)`` and the grid."""
        if x.ndim != 4:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}")
        pad_h, pad_w = -x.shape[-2] % self.patch_size, -x.shape[-1] % self.patch_size
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.patch_embed(x)
        grid = (x.shape[-2], x.shape[-1])
        pos = self.pos_embed
        if grid != self.pos_grid:
            pos = pos.transpose(1, 2).reshape(1, self.embed_dim, *self.pos_grid)
            pos = F.interpolate(pos, size=grid, mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
        return x.flatten(2).transpose(1, 2) + pos, grid

    def _run(self, x: Tensor, trace: bool) -> tuple[list[Tensor], DependencyTrace | None]:
        """The forward pass: the feature maps and, with ``trace``, the per-block masks, controllers and indices."""
        tokens, grid = self.embed(x)
        b, n, c = tokens.shape
        index = torch.arange(n, device=tokens.device).expand(b, n)
        m = tokens.new_ones(b, n)
        masks: list[Tensor] = []
        messages: list[Tensor] = []
        indices: list[Tensor] = []
        for layer, block in enumerate(self.blocks):
            tokens, att = block(tokens, m)
            m = att.m
            if trace:
                masks.append(dependency_mask(att.attn, att.p, m))
                messages.append(m)
                indices.append(index)
            if layer in self.prune_layers:
                score = outgoing_message_mass(att.attn, att.p, m)
                keep = score.topk(self.kept_count(tokens.shape[1]), dim=1).indices.sort(dim=1).values
                tokens = tokens.gather(1, keep.unsqueeze(-1).expand(-1, -1, c))
                m = m.gather(1, keep)
                index = index.gather(1, keep)
        tokens = self.norm(tokens) * m.unsqueeze(-1)
        if self.lite:
            tokens = tokens.new_zeros(b, n, c).scatter(1, index.unsqueeze(-1).expand(-1, -1, c), tokens)
        features = [tokens.transpose(1, 2).reshape(b, c, *grid)]
        if not trace:
            return features, None
        return features, DependencyTrace(features, masks, messages, indices, index, grid)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The stride-``patch_size`` token grid ``(B, C, H/p, W/p)``: final-norm tokens times the final ``m``;
        with Lite, pruned cells are zero."""
        return self._run(x, trace=False)[0]

    def forward_with_dependencies(self, x: Tensor) -> DependencyTrace:
        """A forward pass that also returns every block's soft dependency mask ``A_M`` and controller ``m``
        (feed a mask to :func:`dependency_tree` for the parent indices)."""
        _, trace = self._run(x, trace=True)
        if trace is None:
            raise RuntimeError("the traced forward pass returned no trace")
        return trace

    def forward_head(self, features: list[Tensor]) -> Tensor:
        """Logits: global average pool over the surviving tokens of the grid, then the linear classifier."""
        if self.head is None:
            raise NotImplementedError("DependencyViT was built with num_classes=0 and has no classifier")
        grid = features[-1]
        num_tokens = grid.shape[-2] * grid.shape[-1]
        kept = (self.token_schedule(num_tokens) or [num_tokens])[-1]
        return self.head(grid.sum(dim=(-2, -1)) / kept)


@register_model("dependencyvit_t")
def dependencyvit_t(**kwargs: Any) -> DependencyViT:
    """DependencyViT-T (port configuration): 224², patch 16, dim 192, depth 12, 12 heads, MLP 4, no CLS token,
    GAP, no qkv bias, LayerScale 1e-6, tau 0.1; 5,964,712 parameters with the 1000-class head. ``lite=True``
    prunes 16 % of the tokens after blocks 2, 5, 8 and 11."""
    cfg: dict[str, Any] = {"embed_dim": 192, "depth": 12, "num_heads": 12}
    cfg.update(kwargs)
    return DependencyViT(**cfg)


@register_model("dependencyvit_nano")
def dependencyvit_nano(**kwargs: Any) -> DependencyViT:
    """A small DependencyViT for tests and CPU use: 64² input (a 4x4 token grid), dim 32, depth 4, 4 heads
    (head dim 8), 10 classes; ``lite=True`` prunes after blocks 1 and 3 (16 -> 13 -> 10 tokens)."""
    cfg: dict[str, Any] = {"img_size": 64, "num_classes": 10, "embed_dim": 32, "depth": 4, "num_heads": 4,
                           "prune_layers": (1, 3)}
    cfg.update(kwargs)
    return DependencyViT(**cfg)
