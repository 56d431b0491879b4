"""Autograd wrapper and public entry point of lightning attention.

Backward pass, written with the scans of :mod:`.blockwise` (``S_0`` the initial state, ``dS_N`` the gradient
of the final state, ``^T`` a transpose of the last two dims)::

    dq        = forward scan (q=dO, k=V, v=K, state S_0^T)
    dk        = reverse scan (q=V, k=dO, v=Q, state dS_N^T)
    dv, dS_0  = reverse scan (q=K, k=Q, v=dO, state dS_N)

so one kernel (Triton on CUDA, PyTorch elsewhere) serves both passes, and nothing but the inputs is saved.
The decay rates ``s`` are fixed hyper-parameters (TransNormerLLM slopes) and get no gradient.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Callable, Literal

import torch
from torch import Tensor

from .blockwise import DEFAULT_CHUNK, chunk_scan

Backend = Literal["auto", "triton", "torch"]
ScanFn = Callable[..., tuple[Tensor, Tensor | None]]

_TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None


def _torch_scan(chunk_size: int) -> ScanFn:
    def scan(
        q: Tensor, k: Tensor, v: Tensor, s: Tensor, state: Tensor | None, reverse: bool, output_state: bool
    ) -> tuple[Tensor, Tensor | None]:
        return chunk_scan(q, k, v, s, state, reverse=reverse, chunk_size=chunk_size)

    return scan


def _triton_scan(chunk_size: int) -> ScanFn:
    from .triton_kernels import ScanConfig, default_config, triton_chunk_scan

    def scan(
        q: Tensor, k: Tensor, v: Tensor, s: Tensor, state: Tensor | None, reverse: bool, output_state: bool
    ) -> tuple[Tensor, Tensor | None]:
        base = default_config(q.shape[-1], v.shape[-1], q.shape[0] * q.shape[1])
        config = ScanConfig(chunk_size, base.block_e, base.num_warps, base.num_stages)
        return triton_chunk_scan(q, k, v, s, state, reverse=reverse, output_state=output_state, config=config)

    return scan


def resolve_backend(q: Tensor, backend: Backend = "auto") -> Literal["triton", "torch"]:
    """The implementation a call runs: Triton for CUDA tensors when triton imports, PyTorch otherwise."""
    if backend == "auto":
        return "triton" if q.is_cuda and _TRITON_AVAILABLE else "torch"
    if backend == "triton" and not (q.is_cuda and _TRITON_AVAILABLE):
        raise RuntimeError("the triton backend needs CUDA tensors and an importable triton")
    if backend not in ("triton", "torch"):
        raise ValueError(f"unknown backend {backend!r}")
    return backend


def _transpose(state: Tensor | None) -> Tensor | None:
    return None if state is None else state.transpose(-1, -2)


class LightningAttnFunction(torch.autograd.Function):
    """Lightning attention with the scan-based backward pass; ``apply(q, k, v, s, h0, want_final, scan)``."""

    @staticmethod
    def forward(
        ctx: Any,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        s: Tensor,
        initial_state: Tensor | None,
        output_final_state: bool,
        scan: ScanFn,
    ) -> tuple[Tensor, Tensor | None]:
        out, final = scan(q, k, v, s, initial_state, False, output_final_state)
        ctx.save_for_backward(q, k, v, s, initial_state)
        ctx.scan = scan
        ctx.set_materialize_grads(False)
        if not output_final_state:
            return out, None
        if initial_state is not None:
            final = final.to(initial_state.dtype)
        return out, final

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor | None, grad_final: Tensor | None) -> tuple[Tensor | None, ...]:
        q, k, v, s, initial_state = ctx.saved_tensors
        scan: ScanFn = ctx.scan
        if grad_out is None:
            grad_out = torch.zeros_like(v)
        grad_out = grad_out.to(v.dtype)
        want_h0 = initial_state is not None and ctx.needs_input_grad[4]
        dq, _ = scan(grad_out, v, k, s, _transpose(initial_state), False, False)
        dk, _ = scan(v, grad_out, q, s, _transpose(grad_final), True, False)
        dv, dh0 = scan(k, q, grad_out, s, grad_final, True, want_h0)
        if want_h0:
            dh0 = dh0.to(initial_state.dtype)
        else:
            dh0 = None
        return dq, dk, dv, None, dh0, None, None


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, s: Tensor, initial_state: Tensor | None) -> None:
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"q and k must both be [B, H, N, D], got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be [B, H, N, E] matching q {tuple(q.shape)}, got {tuple(v.shape)}")
    if s.shape != (q.shape[1],):
        raise ValueError(f"s must be [H] = [{q.shape[1]}], got {tuple(s.shape)}")
    expected = (q.shape[0], q.shape[1], q.shape[3], v.shape[3])
    if initial_state is not None and tuple(initial_state.shape) != expected:
        raise ValueError(f"initial_state must be [B, H, D, E] = {list(expected)}, got {tuple(initial_state.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        raise ValueError(f"q, k, v must share one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}")


def lightning_attn(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    s: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    backend: Backend = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Causal linear attention with per-head decay (Lightning Attention-2), differentiable.

    Args:
        q, k: [B, H, N, D] queries and keys (no scaling is applied).
        v: [B, H, N, E] values.
        s: [H] decay rates, ``lam_h = exp(-s_h)``; fixed (no gradient), see :func:`transnormer_slopes`.
        initial_state: optional [B, H, D, E] state entering the sequence (for chunked streaming).
        output_final_state: also return the state after the last token.
        chunk_size: rows per block of the blockwise algorithm (a power of two, 16 or more, for Triton).
        backend: ``"auto"`` (Triton on CUDA when triton imports, PyTorch otherwise), ``"triton"`` or ``"torch"``.

    Returns:
        ``o`` [B, H, N, E] in the dtype of ``q``, or ``(o, final_state)`` with the final state [B, H, D, E] in
        float32 (float64 for float64 inputs; the initial state's dtype when one is given).
    """
    _check_inputs(q, k, v, s, initial_state)
    chosen = resolve_backend(q, backend)
    scan = _triton_scan(chunk_size) if chosen == "triton" else _torch_scan(chunk_size)
    out, final = LightningAttnFunction.apply(
        q, k, v, s.detach().to(q.device), initial_state, output_final_state, scan
    )
    return (out, final) if output_final_state else out
