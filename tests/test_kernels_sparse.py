"""Sparse softmax patterns on FlexAttention (LongGen, AnchorAttention, PARO) against dense masked references.

CPU runs FlexAttention eagerly, so sizes stay tiny; the GPU tests run the compiled kernels at 128-tiles.
"""

from __future__ import annotations

import math

import pytest
import torch

from vlnkit.perception.kernels._flex import dense_masked_attention, merge_attention
from vlnkit.perception.kernels.anchor import (
    AnchorConfig,
    anchor_attention,
    anchor_attention_reference,
    anchor_recall,
)
from vlnkit.perception.kernels.longgen import (
    block_density,
    longgen_attention,
    longgen_block_mask,
    longgen_layer_schedule,
    sink_window_dense_mask,
    strided_dense_mask,
)
from vlnkit.perception.kernels.paro import (
    AXIS_ORDERS,
    axis_order_permutation,
    calibrate_paro,
    fake_quant_int8,
    paro_attention,
    paro_attention_reference,
)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (compiled FlexAttention)")


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.double()
    return float((actual.double() - expected).norm() / expected.norm())


def qkv(b: int, h: int, n: int, d: int, device: str = "cpu", dtype: torch.dtype = torch.float32):
    return tuple(torch.randn(b, h, n, d, device=device).to(dtype) for _ in range(3))


def test_dense_reference_and_merge() -> None:
    q, k, v = qkv(1, 2, 24, 8, dtype=torch.float64)
    split = torch.rand(24, 24) < 0.5
    causal = torch.ones(24, 24, dtype=torch.bool).tril()
    o_all, lse_all = dense_masked_attention(q, k, v, causal)
    o1, lse1 = dense_masked_attention(q, k, v, causal & split)
    o2, lse2 = dense_masked_attention(q, k, v, causal & ~split)
    assert rel_err(merge_attention(o1, lse1, o2, lse2), o_all) < 1e-12
    assert torch.allclose(torch.logaddexp(lse1, lse2), lse_all)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert rel_err(o_all, sdpa) < 1e-12


def test_longgen_layer_schedule_puts_a_third_full_in_the_middle() -> None:
    assert longgen_layer_schedule(6) == ["sparse", "sparse", "full", "full", "sparse", "sparse"]
    schedule = longgen_layer_schedule(12)
    assert schedule.count("full") == 4 and schedule[4:8] == ["full"] * 4
    assert longgen_layer_schedule(3) == ["sparse", "full", "sparse"]


@pytest.mark.parametrize(
    "pattern,params,dense",
    [
        ("sink_window", {"sink": 4, "window": 10}, lambda n: sink_window_dense_mask(n, 4, 10)),
        ("strided", {"block": 8, "local_blocks": 2, "stride": 3}, lambda n: strided_dense_mask(n, 8, 2, 3)),
    ],
)
def test_longgen_patterns_match_dense_reference(pattern: str, params: dict, dense) -> None:
    n = 64
    q, k, v = qkv(2, 2, n, 16)
    mask = longgen_block_mask(pattern, n, "cpu", block_size=16, **params)
    out = longgen_attention(q, k, v, mask)
    ref, _ = dense_masked_attention(q.double(), k.double(), v.double(), dense(n))
    assert rel_err(out, ref) < 1e-4
    assert 0.0 < block_density(mask) <= 1.0


def test_longgen_gradients_match_dense_reference() -> None:
    n = 32
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, n, 8))
    mask = longgen_block_mask("sink_window", n, "cpu", block_size=16, sink=2, window=5)
    grads = torch.autograd.grad(longgen_attention(q, k, v, mask).square().sum(), (q, k, v))
    ref_in = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref, _ = dense_masked_attention(*ref_in, sink_window_dense_mask(n, 2, 5))
    ref_grads = torch.autograd.grad(ref.square().sum(), ref_in)
    for got, want in zip(grads, ref_grads):
        assert rel_err(got, want) < 1e-4


def structured_qkv(b: int, h: int, n: int, d: int, spread: float, device: str = "cpu"):
    """Inputs whose scores have a wide spread, so that stripe selection keeps only part of the keys."""
    q = torch.randn(b, h, n, d, device=device) + 0.5
    k = torch.randn(b, h, n, d, device=device) * (torch.rand(b, h, n, 1, device=device) * spread)
    return q, k, torch.randn(b, h, n, d, device=device)


def test_anchor_attention_matches_dense_reference() -> None:
    cfg = AnchorConfig(group_size=32, block_size=16, init_tokens=16, theta=2.0)
    q, k, v = structured_qkv(2, 2, 96, 16, spread=3.0)
    out, stats = anchor_attention(q, k, v, cfg, return_stats=True)
    ref, selected = anchor_attention_reference(q.double(), k.double(), v.double(), cfg)
    assert torch.equal(stats.selected, selected)
    assert 0 < selected.sum() < selected[:, :, 1:].numel()
    assert rel_err(out, ref) < 1e-4
    assert 0.0 < stats.density < 1.0 and 0.0 < stats.tile_density <= 1.0
    recall = anchor_recall(q, k, stats.selected, cfg, num_queries=32)
    assert 0.5 < recall <= 1.0 + 1e-6


def test_anchor_sparse_pass_in_slices_matches_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large selections run in (batch, head) slices; the result must not depend on the slicing."""
    from vlnkit.perception.kernels.anchor import attention

    cfg = AnchorConfig(group_size=32, block_size=16, init_tokens=16, theta=2.0)
    q, k, v = structured_qkv(2, 3, 96, 8, spread=3.0)
    whole = anchor_attention(q, k, v, cfg)
    for limit in (2000, 500):
        monkeypatch.setattr(attention, "MAX_GATHERED_ELEMENTS", limit)
        assert len(attention._slices(2, 3, 64 * 8)) > 1
        assert rel_err(anchor_attention(q, k, v, cfg), whole) < 1e-6


def test_anchor_gradients_match_dense_reference() -> None:
    cfg = AnchorConfig(group_size=32, block_size=16, init_tokens=16, theta=2.0)
    q, k, v = (t.requires_grad_() for t in structured_qkv(1, 2, 64, 8, spread=3.0))
    out, stats = anchor_attention(q, k, v, cfg, return_stats=True)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref_in = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref, _ = anchor_attention_reference(*ref_in, cfg, selected=stats.selected)
    for got, want in zip(grads, torch.autograd.grad(ref.square().sum(), ref_in)):
        assert rel_err(got, want) < 1e-4


def test_anchor_with_everything_selected_is_dense_causal_attention() -> None:
    cfg = AnchorConfig(group_size=32, block_size=16, init_tokens=16, theta=1e6)
    q, k, v = qkv(1, 2, 64, 8)
    out, stats = anchor_attention(q, k, v, cfg, return_stats=True)
    dense = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)
    assert rel_err(out, dense) < 1e-4 and math.isclose(stats.density, 1.0)
    assert anchor_recall(q, k, stats.selected, cfg, num_queries=16) == pytest.approx(1.0)


def test_axis_order_permutations_are_permutations() -> None:
    grid = (2, 3, 4)
    for order in AXIS_ORDERS:
        perm = axis_order_permutation(grid, order, n_text=5)
        assert torch.equal(perm[:5], torch.arange(5)) and torch.equal(perm.sort().values, torch.arange(29))
    wfh = axis_order_permutation(grid, (2, 0, 1))
    assert wfh[:3].tolist() == [0, 4, 8]


def test_fake_quant_int8_error_is_small() -> None:
    x = torch.randn(2, 3, 64, 16)
    xq = fake_quant_int8(x, 16)
    assert rel_err(xq, x) < 0.01
    step = x.view(2, 3, 4, -1).abs().amax(-1, keepdim=True) / 127
    assert torch.allclose(((xq.view(2, 3, 4, -1) / step).round() * step), xq.view(2, 3, 4, -1), atol=1e-6)


def local_axis_qkv(grid: tuple[int, int, int], heads: int, n_text: int, d: int = 16):
    """Queries/keys whose head h attends to tokens with a close coordinate along axis h % 3 (sinusoidal features)."""
    coords = torch.stack(torch.meshgrid(*(torch.arange(g) for g in grid), indexing="ij"), dim=-1).view(-1, 3)
    feats = []
    for h in range(heads):
        c = coords[:, h % 3].float()[:, None]
        freq = torch.arange(1, d // 2 + 1).float()[None, :] * 0.4
        emb = torch.cat([torch.sin(c * freq), torch.cos(c * freq)], dim=1) * 2.0
        feats.append(torch.cat([torch.randn(n_text, d), emb], dim=0))
    base = torch.stack(feats)[None]
    return base + 0.1 * torch.randn_like(base), base + 0.1 * torch.randn_like(base), torch.randn_like(base)


def test_paro_calibration_puts_the_attended_axis_outermost() -> None:
    """Head h attends to tokens with a similar coordinate along axis h: with that axis outermost, those
    tokens are contiguous and the map is block-diagonal."""
    grid, n_text = (4, 4, 4), 0
    q, k, _ = local_axis_qkv(grid, 3, n_text)
    plan = calibrate_paro(q, k, grid, n_text, block_size=16, density=0.3)
    outermost = [AXIS_ORDERS[int(o)][0] for o in plan.orders]
    assert outermost == [0, 1, 2]
    assert plan.keep.shape == (3, 4, 4) and 0.25 <= plan.density <= 0.4


@pytest.mark.parametrize("quantize", [False, True])
def test_paro_attention_matches_dense_reference(quantize: bool) -> None:
    grid, n_text = (2, 4, 6), 16
    q, k, v = local_axis_qkv(grid, 3, n_text)
    plan = calibrate_paro(q, k, grid, n_text, block_size=16, density=0.4)
    out, stats = paro_attention(q, k, v, plan, quantize=quantize, return_stats=True)
    ref = paro_attention_reference(q.double(), k.double(), v.double(), plan, quantize=quantize)
    assert rel_err(out, ref) < 1e-4
    assert (stats.quant_error > 0) == quantize and stats.quant_error < 0.02


def test_paro_full_density_unquantised_is_dense_attention() -> None:
    grid = (2, 2, 4)
    q, k, v = qkv(1, 2, 16, 8)
    plan = calibrate_paro(q, k, grid, 0, block_size=4, density=1.0)
    out = paro_attention(q, k, v, plan, quantize=False)
    dense = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double())
    assert rel_err(out, dense) < 1e-4


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("pattern,params", [("sink_window", {"sink": 128, "window": 512}),
                                            ("strided", {"block": 128, "local_blocks": 2, "stride": 4})])
def test_longgen_compiled_matches_reference(pattern: str, params: dict) -> None:
    n = 2048
    q, k, v = qkv(1, 2, n, 64, "cuda", torch.bfloat16)
    mask = longgen_block_mask(pattern, n, "cuda", **params)
    out = longgen_attention(q, k, v, mask)
    dense = (sink_window_dense_mask(n, 128, 512) if pattern == "sink_window"
             else strided_dense_mask(n, 128, 2, 4)).cuda()
    ref, _ = dense_masked_attention(q.float(), k.float(), v.float(), dense)
    assert rel_err(out, ref) < 1e-2
    leaves = [t.float().requires_grad_() for t in (q, k, v)]
    grads = torch.autograd.grad(longgen_attention(*leaves, mask).square().sum(), leaves)
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    ref, _ = dense_masked_attention(*ref_leaves, dense)
    for got, want in zip(grads, torch.autograd.grad(ref.square().sum(), ref_leaves)):
        assert rel_err(got, want) < 1e-4


@pytest.mark.gpu
@requires_cuda
def test_anchor_compiled_matches_reference() -> None:
    cfg = AnchorConfig(group_size=512, block_size=128, init_tokens=128, theta=3.0)
    q, k, v = structured_qkv(1, 2, 2048, 64, spread=3.0, device="cuda")
    out, stats = anchor_attention(q, k, v, cfg, return_stats=True)
    ref_selected = anchor_attention_reference(q, k, v, cfg)[1]
    agreement = (stats.selected == ref_selected).float().mean()
    ref, _ = anchor_attention_reference(q, k, v, cfg, selected=stats.selected)
    assert agreement > 0.999 and rel_err(out, ref) < 1e-4 and stats.density < 1.0
    out_bf16 = anchor_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), cfg)
    assert rel_err(out_bf16, ref) < 2e-2


@pytest.mark.gpu
@requires_cuda
def test_paro_compiled_matches_reference() -> None:
    grid, n_text = (4, 16, 16), 0
    q, k, v = (t.cuda() for t in local_axis_qkv(grid, 3, n_text, d=64))
    plan = calibrate_paro(q, k, grid, n_text, block_size=128, density=0.3)
    out = paro_attention(q, k, v, plan)
    ref = paro_attention_reference(q, k, v, plan)
    assert rel_err(out, ref) < 1e-4
