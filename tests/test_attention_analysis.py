"""Attention analyses (vlnkit.perception.attention.analysis) on the facts sheet's hand-computable cases."""

from __future__ import annotations

import math

import torch

from vlnkit.perception.attention import HookedMultiheadAttention, attach
from vlnkit.perception.attention.analysis import (
    attention_distance,
    fai,
    gradient_head_importance,
    head_importance,
    head_span,
    local_global_heads,
    spatial_strength,
    waad,
)
from vlnkit.perception.attention.interventions import HeadScale


def _right_neighbour(grid: tuple[int, int]) -> torch.Tensor:
    """A head whose every patch attends to its right neighbour (columns wrapping around)."""
    rows, cols = grid
    n = rows * cols
    probs = torch.zeros(1, 1, n, n)
    for q in range(n):
        r, c = divmod(q, cols)
        probs[0, 0, q, r * cols + (c + 1) % cols] = 1.0
    return probs


def test_a_right_neighbour_head_puts_all_strength_at_offset_0_plus_1() -> None:
    grid = (3, 4)
    strength = spatial_strength(_right_neighbour(grid), grid, wrap_columns=True)[0]
    centre = (grid[0] - 1, grid[1] // 2)
    assert strength[centre[0], centre[1] + 1] == 1.0
    assert strength.sum() == 1.0
    torch.testing.assert_close(attention_distance(_right_neighbour(grid), grid, wrap_columns=True), torch.tensor([1.0]))
    eye = torch.eye(12)[None, None]
    assert spatial_strength(eye, grid)[0, 2, 3] == 1.0 and attention_distance(eye, grid).item() == 0.0


def test_strength_is_normalised_by_the_pairs_at_each_offset() -> None:
    grid = (2, 3)
    uniform = torch.full((2, 1, 6, 6), 1 / 6)
    strength = spatial_strength(uniform, grid)
    torch.testing.assert_close(strength, torch.full_like(strength, 1 / 6))   # no edge effect


def test_waad_fai_and_span_by_hand() -> None:
    local = torch.zeros(4, 4)
    local[3] = torch.tensor([0.5, 0.0, 0.0, 0.5])
    assert waad(local, window=2)[3].item() == 1.0                      # 0.5 * min(3, 2)
    diagonal = torch.eye(5)
    assert head_span(diagonal).item() == 0.0 and waad(diagonal).abs().sum().item() == 0.0
    glob = torch.zeros(30, 30)
    glob[10:, 0] = 1.0
    scores = fai(glob, h_lo=10, h_hi=100)
    assert scores[0].item() == 1.0 and math.isnan(scores[25].item())   # no t in [35, 29]
    spans = torch.tensor([[0.0, 5.0, 1.0], [3.0, 9.0, 2.0]])
    local_mask, global_mask = local_global_heads(spans, share=1 / 3)
    assert local_mask.tolist() == [[True, False, True], [False, False, False]]
    assert global_mask.tolist() == [[False, True, False], [False, True, False]]   # spans 5 and 9


def test_a_head_with_a_zero_output_block_has_zero_importance() -> None:
    torch.manual_seed(0)
    attn = HookedMultiheadAttention(8, 2)
    with torch.no_grad():
        attn.out_proj.weight[:, 4:] = 0.0            # head 1's W_O block
    x, target = torch.randn(4, 5, 8), torch.randn(4, 5, 8)

    def evaluate(scales):
        with torch.no_grad(), attach(attn, "", HeadScale(scales)):
            out = attn(x, x, x, need_weights=False)[0]
        return {"loss": float(((out - target) ** 2).mean()), "norm": float(out.norm())}

    importance = head_importance(evaluate, [""], heads=2)
    assert importance["loss"][0, 1] == 0.0 and importance["norm"][0, 1] == 0.0
    assert importance["loss"][0, 0] != 0.0


def test_gradient_importance_equals_the_finite_difference_of_the_gate() -> None:
    torch.manual_seed(1)
    attn = HookedMultiheadAttention(8, 2)
    x, target = torch.randn(3, 4, 8), torch.randn(3, 4, 8)

    def loss(scales):
        with attach(attn, "", HeadScale(scales)):
            return ((attn(x, x, x, need_weights=False)[0] - target) ** 2).mean()

    grad = gradient_head_importance(loss, [""], heads=2)[0]
    eps = 1e-3
    for h in range(2):
        up, down = torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
        up[h], down[h] = 1 + eps, 1 - eps
        with torch.no_grad():
            numeric = (loss({"": up.float()}) - loss({"": down.float()})) / (2 * eps)
        assert abs(grad[h] - abs(float(numeric))) < 1e-3 * max(1.0, abs(float(numeric)))
    with torch.no_grad():
        attn.out_proj.weight[:, 4:] = 0.0       # head 1 can no longer reach the output
    assert gradient_head_importance(loss, [""], heads=2)[0, 1] == 0.0
