"""PAROAttention online part: permute, INT8 fake-quantise QK, block-sparse attention, inverse permute."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._flex import dense_masked_attention, run_flex
from .plan import ParoPlan


@dataclass
class ParoStats:
    """``quant_error``: relative Frobenius error of the fake-quantised logits ``Q K^T`` against the exact
    ones, on a sample of query rows (0 when quantisation is off); ``density``: fraction of tiles computed."""

    quant_error: float
    density: float


def fake_quant_int8(x: Tensor, block_size: int) -> Tensor:
    """Symmetric INT8 quantise-dequantise of [..., N, D] with one scale per tile of ``block_size`` rows."""
    *lead, n, dim = x.shape
    tiles = x.float().reshape(*lead, n // block_size, block_size * dim)
    step = tiles.abs().amax(dim=-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny) / 127.0
    quantised = torch.clamp(torch.round(tiles / step), -127, 127) * step
    return quantised.reshape(x.shape).to(x.dtype)


def _gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    return x.gather(2, index.view(1, index.shape[0], index.shape[1], 1).expand(x.shape[0], -1, -1, x.shape[-1]))


def _logit_error(q: Tensor, k: Tensor, q_dq: Tensor, k_dq: Tensor, rows: int = 256) -> float:
    take = torch.linspace(0, q.shape[2] - 1, min(rows, q.shape[2]), device=q.device).round().long()
    exact = q[:, :, take].float() @ k.float().transpose(-1, -2)
    approx = q_dq[:, :, take].float() @ k_dq.float().transpose(-1, -2)
    return float((approx - exact).norm() / exact.norm().clamp(min=torch.finfo(torch.float32).tiny))


def paro_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    plan: ParoPlan,
    quantize: bool = True,
    scale: float | None = None,
    return_stats: bool = False,
) -> Tensor | tuple[Tensor, ParoStats]:
    """Bidirectional block-sparse attention of [B, H, N, D] inputs under a calibrated plan.

    Tokens are permuted per head, Q and K fake-quantised to INT8 per tile when ``quantize`` (a straight copy
    of the dequantised values: gradients see the quantised inputs), attended under the plan's static block
    mask and permuted back. Returns ``o``, or ``(o, ParoStats)`` with ``return_stats``.
    """
    perms = plan.perms.to(q.device)
    qp, kp, vp = (_gather_tokens(x, perms) for x in (q, k, v))
    q_in, k_in = qp, kp
    if quantize:
        q_in, k_in = fake_quant_int8(qp, plan.block_size), fake_quant_int8(kp, plan.block_size)
    out = run_flex(q_in, k_in, vp, plan.block_mask(q.device), scale=scale)
    out = _gather_tokens(out, plan.inverse.to(q.device))
    if not return_stats:
        return out
    with torch.no_grad():
        error = _logit_error(qp, kp, q_in, k_in) if quantize else 0.0
    return out, ParoStats(quant_error=error, density=plan.density)


def paro_attention_reference(
    q: Tensor, k: Tensor, v: Tensor, plan: ParoPlan, quantize: bool = True, scale: float | None = None
) -> Tensor:
    """Dense reference: the plan's tile mask expanded to tokens and mapped back to the original token order,
    softmax over full scores (with the same fake-quantised Q and K when ``quantize``)."""
    n = q.shape[2]
    bs = plan.block_size
    perms = plan.perms.to(q.device)
    tile_of = torch.arange(n, device=q.device) // bs
    permuted_mask = plan.keep.to(q.device)[:, tile_of][:, :, tile_of]
    inverse = plan.inverse.to(q.device)
    mask = torch.stack([permuted_mask[h][inverse[h]][:, inverse[h]] for h in range(q.shape[1])])
    if quantize:
        q = _gather_tokens(fake_quant_int8(_gather_tokens(q, perms), bs), inverse)
        k = _gather_tokens(fake_quant_int8(_gather_tokens(k, perms), bs), inverse)
    out, _ = dense_masked_attention(q, k, v, mask[None], scale=scale)
    return out
