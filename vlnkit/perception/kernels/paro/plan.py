"""PAROAttention offline part: token permutations by axis order, calibration, static block-sparse plans.

Image tokens of a (frames, height, width) grid follow the text tokens, flattened frame-major. Each head may
re-flatten them in any of the 6 orders of the three axes; in the order that matches the head's locality the
attention map becomes block-structured, so a static block mask of 20-30% density keeps nearly all the mass.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask

from .._flex import MaskMod, block_mask_from_tables

AXIS_ORDERS: tuple[tuple[int, int, int], ...] = tuple(itertools.permutations(range(3)))
"""The 6 orders of the (frame, height, width) axes, outermost first; ``(0, 1, 2)`` is the identity."""


def axis_order_permutation(grid: tuple[int, int, int], order: tuple[int, int, int], n_text: int = 0) -> Tensor:
    """``perm`` [n_text + F*H*W] with ``permuted[i] = original[perm[i]]``: text tokens stay in front, image
    tokens are re-flattened with the axes in ``order`` (outermost first)."""
    index = torch.arange(math.prod(grid)).view(grid).permute(order).reshape(-1)
    return torch.cat([torch.arange(n_text), index + n_text])


@dataclass
class ParoPlan:
    """A calibrated PARO plan for one attention layer (at one timestep).

    Attributes:
        grid: (frames, height, width) of the image tokens; ``n_text`` text tokens precede them.
        block_size: tile size of the block mask (the sequence length must be a multiple of it).
        orders: [H] index into :data:`AXIS_ORDERS` chosen per head.
        perms / inverse: [H, N] token permutation per head and its inverse.
        keep: [H, N/bs, N/bs] bool, the static block mask in each head's permuted order.
    """

    grid: tuple[int, int, int]
    n_text: int
    block_size: int
    orders: Tensor
    perms: Tensor
    inverse: Tensor
    keep: Tensor
    _block_masks: dict[str, BlockMask] = field(default_factory=dict, repr=False, compare=False)

    @property
    def density(self) -> float:
        """Fraction of tiles computed."""
        return float(self.keep.float().mean())

    def block_mask(self, device: torch.device | str) -> BlockMask:
        """The static BlockMask on ``device`` (built once per device): kept tiles are computed whole."""
        key = str(torch.device(device))
        if key not in self._block_masks:
            keep = self.keep.to(device)
            n = keep.shape[-1] * self.block_size
            self._block_masks[key] = block_mask_from_tables(
                None, keep[None], _keep_mask_mod(keep, self.block_size), self.block_size, n, n
            )
        return self._block_masks[key]

    def to(self, device: torch.device | str) -> "ParoPlan":
        """The same plan with its tensors on ``device``."""
        return ParoPlan(self.grid, self.n_text, self.block_size, self.orders.to(device), self.perms.to(device),
                        self.inverse.to(device), self.keep.to(device))


def _keep_mask_mod(keep: Tensor, block_size: int) -> MaskMod:
    def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return keep[h, q_idx // block_size, kv_idx // block_size]

    return mask_mod


def block_attention_mass(
    q: Tensor, k: Tensor, perm: Tensor, block_size: int, scale: float, rows_per_block: int | None = None
) -> Tensor:
    """Softmax attention mass per (query tile, key tile) after permuting tokens by ``perm``: [H, nb, nb].

    q, k are [B, H, N, D] (the mass is summed over the batch). With ``rows_per_block`` only that many evenly
    spaced query rows of each tile are evaluated (a cheaper estimate for long sequences).
    """
    batch, heads, n, dim = q.shape
    nb = n // block_size
    if rows_per_block is None or rows_per_block >= block_size:
        offsets = torch.arange(block_size, device=q.device)
    else:
        offsets = torch.linspace(0, block_size - 1, rows_per_block, device=q.device).round().long()
    sample_pos = (torch.arange(nb, device=q.device)[:, None] * block_size + offsets[None, :]).reshape(-1)
    perm = perm.to(q.device)
    mass = torch.zeros(heads, nb, nb, dtype=torch.float32, device=q.device)
    k_perm = k[:, :, perm].float()
    for h in range(heads):
        for b in range(batch):
            scores = (q[b, h, perm[sample_pos]].float() @ k_perm[b, h].transpose(-1, -2)) * scale
            probs = torch.softmax(scores, dim=-1)
            tiles = probs.view(nb, len(offsets), nb, block_size).sum(dim=(1, 3))
            mass[h] += tiles
    return mass


def _top_blocks(mass: Tensor, density: float) -> Tensor:
    """Keep the heaviest tiles of each head up to ``density`` of all tiles, plus the diagonal tiles."""
    heads, nb, _ = mass.shape
    count = max(1, math.ceil(density * nb * nb))
    flat = mass.reshape(heads, -1)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep.scatter_(1, flat.topk(count, dim=1).indices, True)
    keep = keep.view(heads, nb, nb)
    keep |= torch.eye(nb, dtype=torch.bool, device=mass.device)
    return keep


def calibrate_paro(
    q: Tensor,
    k: Tensor,
    grid: tuple[int, int, int],
    n_text: int = 0,
    block_size: int = 128,
    density: float = 0.3,
    scale: float | None = None,
    rows_per_block: int | None = None,
) -> ParoPlan:
    """Choose each head's axis order and static block mask from calibration queries and keys [B, H, N, D].

    For every head and order the block mass map is computed; the order whose top ``density`` tiles hold the
    largest share of the mass wins, and those tiles (plus the diagonal) become the head's block mask.
    """
    batch, heads, n, dim = q.shape
    if n != n_text + math.prod(grid):
        raise ValueError(f"sequence length {n} != n_text {n_text} + prod(grid) {math.prod(grid)}")
    if n % block_size:
        raise ValueError(f"sequence length {n} must be a multiple of block_size {block_size}")
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    count = max(1, math.ceil(density * (n // block_size) ** 2))
    perms = [axis_order_permutation(grid, order, n_text) for order in AXIS_ORDERS]
    masses = []
    captured = []
    for perm in perms:
        mass = block_attention_mass(q, k, perm, block_size, scale, rows_per_block)
        masses.append(mass)
        captured.append(mass.reshape(heads, -1).topk(count, dim=1).values.sum(dim=1) / mass.sum(dim=(1, 2)))
    orders = torch.stack(captured, dim=1).argmax(dim=1).cpu()
    best_mass = torch.stack([masses[int(o)][h] for h, o in enumerate(orders)])
    perm_table = torch.stack([perms[int(o)] for o in orders])
    return ParoPlan(
        grid=grid,
        n_text=n_text,
        block_size=block_size,
        orders=orders,
        perms=perm_table,
        inverse=torch.argsort(perm_table, dim=1),
        keep=_top_blocks(best_mass, density).cpu(),
    )
