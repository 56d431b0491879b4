"""Lightning attention: references agree, blockwise/Triton paths match them, streaming and gradients."""

from __future__ import annotations

import pytest
import torch

from vlnkit.perception.kernels import lightning_attn, transnormer_slopes
from vlnkit.perception.kernels.lightning import chunk_scan, lightning_attn_quadratic, lightning_attn_recurrent

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (Triton kernels)")


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.double()
    return float((actual.double() - expected).norm() / expected.norm())


def inputs(b: int, h: int, n: int, d: int, e: int, dtype=torch.float32, device="cpu", state=True):
    """Fresh random q, k, v, decay rates (spread over fast and slow heads) and initial state."""
    q = torch.randn(b, h, n, d, device=device).to(dtype)
    k = torch.randn(b, h, n, d, device=device).to(dtype)
    v = torch.randn(b, h, n, e, device=device).to(dtype)
    s = torch.rand(h, device=device) * 0.5 + 1e-3
    h0 = torch.randn(b, h, d, e, device=device, dtype=torch.promote_types(dtype, torch.float32)) if state else None
    return q, k, v, s, h0


def test_transnormer_slopes_schedule() -> None:
    assert torch.allclose(transnormer_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    first, last = transnormer_slopes(8, 0, 4), transnormer_slopes(8, 3, 4)
    assert torch.allclose(first, transnormer_slopes(8) * (1 + 1e-5))
    assert torch.allclose(last, transnormer_slopes(8) * 1e-5)
    odd = [2.0 ** -(i + 1) for i in range(8)] + [2.0 ** -(0.5 * (2 * i + 1)) for i in range(4)]
    assert torch.allclose(transnormer_slopes(12), torch.tensor(odd))
    with pytest.raises(ValueError):
        transnormer_slopes(8, layer_idx=4, num_layers=4)


@pytest.mark.parametrize("n,chunk", [(37, 16), (64, 16), (50, 64)])
def test_recurrent_quadratic_blockwise_agree_in_float64(n: int, chunk: int) -> None:
    q, k, v, s, h0 = inputs(2, 3, n, 8, 5, torch.float64)
    o_rec, f_rec = lightning_attn_recurrent(q, k, v, s, h0)
    o_quad, f_quad = lightning_attn_quadratic(q, k, v, s, h0)
    o_blk, f_blk = chunk_scan(q, k, v, s, h0, chunk_size=chunk)
    for o, f in ((o_quad, f_quad), (o_blk, f_blk)):
        assert rel_err(o, o_rec) < 1e-12 and rel_err(f, f_rec) < 1e-12


@pytest.mark.parametrize("dim", [16, 64, 256])
def test_fp32_matches_reference(dim: int) -> None:
    q, k, v, s, h0 = inputs(1, 2, 70, dim, 32)
    o, final = lightning_attn(q, k, v, s, h0, output_final_state=True)
    o_ref, f_ref = lightning_attn_quadratic(q.double(), k.double(), v.double(), s.double(), h0.double())
    assert o.dtype == torch.float32 and final.shape == (1, 2, dim, 32)
    assert rel_err(o, o_ref) < 1e-4 and rel_err(final, f_ref) < 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_matches_reference(dtype: torch.dtype) -> None:
    q, k, v, s, h0 = inputs(2, 2, 96, 32, 48, dtype)
    o = lightning_attn(q, k, v, s, h0)
    o_ref, _ = lightning_attn_quadratic(q.double(), k.double(), v.double(), s.double(), h0.double())
    assert o.dtype == dtype and rel_err(o, o_ref) < 1e-2


def test_chunked_streaming_equals_one_shot() -> None:
    q, k, v, s, _ = inputs(2, 2, 100, 16, 24, torch.float64, state=False)
    o_full, f_full = lightning_attn(q, k, v, s, output_final_state=True)
    state, pieces = None, []
    for start, stop in ((0, 33), (33, 64), (64, 100)):
        o, state = lightning_attn(q[:, :, start:stop], k[:, :, start:stop], v[:, :, start:stop], s, state, True)
        pieces.append(o)
    assert rel_err(torch.cat(pieces, dim=2), o_full) < 1e-12 and rel_err(state, f_full) < 1e-12


def test_gradcheck_float64() -> None:
    q, k, v, s, h0 = inputs(1, 2, 19, 4, 3, torch.float64)
    tensors = [t.requires_grad_() for t in (q, k, v, h0)]

    def fn(q, k, v, h0):
        return lightning_attn(q, k, v, s, h0, output_final_state=True, chunk_size=8)

    assert torch.autograd.gradcheck(fn, tensors)


def test_fp32_gradients_match_autograd_through_reference() -> None:
    q, k, v, s, h0 = inputs(2, 2, 45, 16, 8)
    grad_o, grad_f = torch.randn(2, 2, 45, 8), torch.randn(2, 2, 16, 8)
    leaves = [t.requires_grad_() for t in (q, k, v, h0)]
    o, f = lightning_attn(q, k, v, s, h0, True, chunk_size=16)
    grads = torch.autograd.grad([o, f], leaves, [grad_o, grad_f])
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    o_ref, f_ref = lightning_attn_quadratic(*ref_leaves[:3], s.double(), ref_leaves[3])
    ref_grads = torch.autograd.grad([o_ref, f_ref], ref_leaves, [grad_o.double(), grad_f.double()])
    for got, want in zip(grads, ref_grads):
        assert rel_err(got, want) < 1e-4


def test_rejects_bad_shapes_and_backend() -> None:
    q, k, v, s, _ = inputs(1, 2, 8, 4, 4, state=False)
    with pytest.raises(ValueError):
        lightning_attn(q, k, v, s[:1])
    with pytest.raises(ValueError):
        lightning_attn(q, k[..., :2], v, s)
    with pytest.raises(ValueError):
        lightning_attn(q, k, v, s, torch.zeros(1, 2, 3, 4))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError):
            lightning_attn(q, k, v, s, backend="triton")


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dims", [(16, 16), (64, 128), (128, 128), (96, 80), (256, 64)])
def test_triton_forward_matches_reference(dtype: torch.dtype, dims: tuple[int, int]) -> None:
    d, e = dims
    q, k, v, s, h0 = inputs(2, 3, 333, d, e, dtype, device="cuda")
    o, final = lightning_attn(q, k, v, s, h0, output_final_state=True, backend="triton")
    o_ref, f_ref = lightning_attn_quadratic(q.double(), k.double(), v.double(), s.double(), h0.double())
    bound = 1e-4 if dtype == torch.float32 else 1e-2
    assert rel_err(o, o_ref) < bound and rel_err(final, f_ref) < bound


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dims", [(64, 64), (128, 128), (256, 128)])
def test_triton_gradients_match_reference(dtype: torch.dtype, dims: tuple[int, int]) -> None:
    d, e = dims
    q, k, v, s, h0 = inputs(2, 2, 300, d, e, dtype, device="cuda")
    grad_o = torch.randn(2, 2, 300, e, device="cuda").to(dtype)
    grad_f = torch.randn(2, 2, d, e, device="cuda")
    leaves = [t.requires_grad_() for t in (q, k, v, h0)]
    o, f = lightning_attn(q, k, v, s, h0, True, backend="triton")
    grads = torch.autograd.grad([o, f], leaves, [grad_o, grad_f])
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    o_ref, f_ref = lightning_attn_quadratic(*ref_leaves[:3], s.double(), ref_leaves[3])
    ref_grads = torch.autograd.grad([o_ref, f_ref], ref_leaves, [grad_o.double(), grad_f.double()])
    bound = 1e-4 if dtype == torch.float32 else 1e-2
    for got, want in zip(grads, ref_grads):
        assert rel_err(got, want) < bound


@pytest.mark.gpu
@requires_cuda
def test_triton_long_sequence_matches_blockwise_and_streams() -> None:
    q, k, v, s, _ = inputs(1, 4, 8192, 128, 128, torch.bfloat16, device="cuda", state=False)
    s = transnormer_slopes(4).cuda()
    o, f = lightning_attn(q, k, v, s, output_final_state=True, backend="triton")
    o_ref, f_ref = chunk_scan(q.float(), k.float(), v.float(), s)
    assert rel_err(o, o_ref) < 1e-2 and rel_err(f, f_ref) < 1e-2
    o1, state = lightning_attn(q[:, :, :5000], k[:, :, :5000], v[:, :, :5000], s, None, True, backend="triton")
    o2, state = lightning_attn(q[:, :, 5000:], k[:, :, 5000:], v[:, :, 5000:], s, state, True, backend="triton")
    assert rel_err(torch.cat([o1, o2], dim=2), o_ref) < 1e-2 and rel_err(state, f_ref) < 1e-2
