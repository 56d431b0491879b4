"""Configuration of AnchorAttention (stripe-granular dynamic sparsity for long-context prefill)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class AnchorConfig:
    """Parameters of AnchorAttention.

    Attributes:
        group_size: queries per group; a group shares one stripe selection and sees its own keys exactly.
        block_size: rows per sub-block whose mean query and mean anchor drive the selection; also the tile
            size of the block masks.
        init_tokens: leading keys every query sees exactly (the attention sink region).
        theta: selection margin in natural-log units: key j is kept when ``mean_q . k_j * scale + theta``
            reaches the sub-block's mean anchor.
        scale: softmax scale, ``1/sqrt(D)`` when None.
    """

    group_size: int = 2048
    block_size: int = 128
    init_tokens: int = 128
    theta: float = 12.0
    scale: float | None = None

    def __post_init__(self) -> None:
        if self.group_size % self.block_size or self.init_tokens % self.block_size:
            raise ValueError(
                f"group_size ({self.group_size}) and init_tokens ({self.init_tokens}) must be multiples of "
                f"block_size ({self.block_size})"
            )

    def softmax_scale(self, head_dim: int) -> float:
        """The scale applied to q . k."""
        return 1.0 / math.sqrt(head_dim) if self.scale is None else self.scale
