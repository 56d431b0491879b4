"""Attention kernel benchmark for a CUDA GPU: lightning attention and fla against SDPA, sparse patterns against
SDPA, all at the same shapes in the same run.

Default shape: B=4, H=32, D=128, bf16, causal, N from 1K to 64K. Prints one JSON line with every figure
(``dense`` and ``sparse``: one row per length); each row also goes to stderr as it is measured, and the
Markdown tables at the end. Times are medians of CUDA-event timings (L2 flushed between runs), in
milliseconds.

    vlnkit bench attention                              # everything
    vlnkit bench attention --parts lightning,sdpa       # a subset (lightning, fla, sdpa, sparse)
    vlnkit bench attention --tune 16384                 # time launch shapes of the lightning scan

Baseline: SDPA with the flash backend at the same length and shape. ``dense`` rows: ``sdpa_fwd`` and
``sdpa_fwdbwd`` (causal), with ``lightning_fwd_vs_sdpa``, ``lightning_fwdbwd_vs_sdpa``, ``fla_fwd_vs_sdpa``
and ``fla_fwdbwd_vs_sdpa`` (time over SDPA's time: below 1 is faster). ``sparse`` rows: LongGen and
AnchorAttention against ``sdpa_causal_fwd`` (``longgen_sink_window_fwd_vs_sdpa``,
``longgen_strided_fwd_vs_sdpa``, ``anchor_fwd_vs_sdpa``), PARO against non-causal ``sdpa_full_fwd``
(``paro_fwd_vs_sdpa``). ``--tune`` rows are against the default launch shape (``*_ms_vs_default``).
Without a CUDA GPU it prints ``{"name": "attention", "skipped": "needs a CUDA GPU", ...}`` and succeeds.

fla (flash-linear-attention) is optional: without it its keys are left out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import sys
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from vlnkit.perception.kernels import lightning_attn, transnormer_slopes
from vlnkit.perception.kernels.anchor import AnchorConfig, anchor_attention, anchor_recall
from vlnkit.perception.kernels.longgen import block_density, longgen_attention, longgen_block_mask
from vlnkit.perception.kernels.paro import calibrate_paro, paro_attention

DEFAULT_NS = [1024, 2048, 4096, 8192, 16384, 32768, 65536]
SPARSE_NS = [4096, 16384, 32768, 65536]
PARTS = ("lightning", "fla", "sdpa", "sparse")
SPARSE_PATTERNS = ("longgen", "anchor", "paro")
BASELINE = "sdpa: torch SDPA (flash backend) at the same shapes"
QUICK = {"ns": [1024, 4096, 16384], "sparse_ns": [4096, 16384], "recall_n": 16384}


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Shapes, parts and pattern parameters (``vlnkit bench attention --help``)."""
    parser.add_argument("--ns", type=_ints, default=DEFAULT_NS, help="sequence lengths of the dense rows")
    parser.add_argument("--sparse-ns", type=_ints, default=SPARSE_NS, help="sequence lengths of the sparse rows")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--skip-backward", action="store_true")
    parser.add_argument("--parts", type=lambda x: x.split(","), default=list(PARTS),
                        help="comma list of lightning, fla, sdpa, sparse")
    parser.add_argument("--sparse-patterns", type=lambda x: x.split(","), default=list(SPARSE_PATTERNS),
                        help="comma list of longgen, anchor, paro")
    parser.add_argument("--window", type=int, default=4096, help="LongGen sliding window")
    parser.add_argument("--local-blocks", type=int, default=8, help="LongGen strided: local 128-blocks")
    parser.add_argument("--stride", type=int, default=8, help="LongGen strided: every stride-th block")
    parser.add_argument("--theta", type=float, default=12.0, help="AnchorAttention margin")
    parser.add_argument("--anchor-logit-std", type=float, default=5.0, help="spread of synthetic logits")
    parser.add_argument("--recall-n", type=int, default=32768)
    parser.add_argument("--paro-density", type=float, default=0.3)
    parser.add_argument("--tune", type=int, default=0, help="time scan launch shapes at this length instead")


def _progress(line: str) -> None:
    """A progress line (a measured row, a table) on stderr, so stdout carries only the JSON line."""
    print(line, file=sys.stderr, flush=True)


def _ratio(row: dict, figure: str, baseline: str) -> None:
    """``row[figure + "_vs_sdpa"]``: ``figure`` over ``baseline`` when the row has both."""
    if figure in row and baseline in row:
        row[f"{figure}_vs_sdpa"] = round(row[figure] / row[baseline], 4)


def bench(fn: Callable[[], object], budget_ms: float = 400.0, max_reps: int = 100) -> float:
    """Median milliseconds of ``fn`` after a warm-up, with the L2 cache flushed before every timed run."""
    fn()
    torch.cuda.synchronize()
    flush = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device="cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    reps = int(min(max_reps, max(3, budget_ms / max(start.elapsed_time(end), 1e-3))))
    times = []
    for _ in range(reps):
        flush.zero_()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def fwd_bwd(run: Callable[[], torch.Tensor], leaves: list[torch.Tensor], grad: torch.Tensor) -> Callable[[], object]:
    """A closure running forward and backward (gradients returned, not accumulated)."""
    return lambda: torch.autograd.grad(run(), leaves, grad)


def load_fla() -> Callable[..., object] | None:
    """fla's chunk_simple_gla, or None when flash-linear-attention is not installed."""
    if importlib.util.find_spec("fla") is None:
        return None
    from fla.ops.simple_gla import chunk_simple_gla

    return chunk_simple_gla


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def dense_rows(ns: list[int], b: int, h: int, d: int, with_backward: bool, parts: set[str]) -> list[dict]:
    """Lightning (ours), fla chunk_simple_gla and SDPA flash, forward and forward+backward per length."""
    fla = load_fla() if "fla" in parts else None
    s = transnormer_slopes(h).cuda()
    rows = []
    for n in ns:
        q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16).requires_grad_() for _ in range(3))
        grad = torch.randn_like(v)
        row: dict = {"N": n}
        ours = lambda: lightning_attn(q, k, v, s)  # noqa: E731
        if "lightning" in parts:
            with torch.no_grad():
                row["lightning_fwd"] = bench(ours)
                row["lightning_Mtok_s"] = b * n / row["lightning_fwd"] / 1e3
            if with_backward:
                row["lightning_fwdbwd"] = bench(fwd_bwd(ours, [q, k, v], grad))
        if fla is not None:
            qt, kt, vt = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))
            gt = grad.transpose(1, 2).contiguous()
            theirs = lambda: fla(qt, kt, vt, g_gamma=-s, scale=1.0)[0]  # noqa: E731
            with torch.no_grad():
                if n == ns[0]:
                    row["fla_vs_ours_rel_err"] = rel_err(theirs().transpose(1, 2), ours())
                row["fla_fwd"] = bench(theirs)
                row["fla_Mtok_s"] = b * n / row["fla_fwd"] / 1e3
            if with_backward:
                row["fla_fwdbwd"] = bench(fwd_bwd(theirs, [qt, kt, vt], gt))
        sdpa = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
        if "sdpa" in parts:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                with torch.no_grad():
                    row["sdpa_fwd"] = bench(sdpa, budget_ms=300)
                if with_backward:
                    row["sdpa_fwdbwd"] = bench(fwd_bwd(sdpa, [q, k, v], grad), budget_ms=300)
        for ours_or_fla in ("lightning", "fla"):
            _ratio(row, f"{ours_or_fla}_fwd", "sdpa_fwd")
            _ratio(row, f"{ours_or_fla}_fwdbwd", "sdpa_fwdbwd")
        rows.append(row)
        _progress(json.dumps(row))
        torch.cuda.empty_cache()
    return rows


def anchor_inputs(b: int, h: int, n: int, d: int, logit_std: float) -> tuple[torch.Tensor, ...]:
    """Synthetic prefill inputs with peaked attention: every head's queries share a direction whose logits
    against random keys have standard deviation ``logit_std`` (natural-log units, after the 1/sqrt(d) scale)."""
    direction = torch.randn(1, h, 1, d, device="cuda")
    direction = direction / direction.norm(dim=-1, keepdim=True) * logit_std * math.sqrt(d)
    q = (direction + torch.randn(b, h, n, d, device="cuda")).bfloat16()
    k = torch.randn(b, h, n, d, device="cuda").bfloat16()
    v = torch.randn(b, h, n, d, device="cuda").bfloat16()
    return q, k, v


def paro_inputs(b: int, h: int, grid: tuple[int, int, int], d: int) -> tuple[torch.Tensor, ...]:
    """Synthetic visual tokens: head h's queries and keys encode the token's coordinate along axis h % 3
    (sinusoids), so each head attends to tokens near it along one axis, plus noise."""
    coords = torch.stack(torch.meshgrid(*(torch.arange(g, device="cuda") for g in grid), indexing="ij"), -1)
    coords = coords.view(-1, 3).float()
    freq = torch.arange(1, d // 2 + 1, device="cuda").float() * (0.5 / d)
    heads = []
    for head in range(h):
        c = coords[:, head % 3, None] * freq * 8.0
        heads.append(torch.cat([torch.sin(c), torch.cos(c)], dim=-1) * 3.0)
    base = torch.stack(heads)[None].expand(b, -1, -1, -1)
    q = (base + 0.3 * torch.randn_like(base)).bfloat16()
    k = (base + 0.3 * torch.randn_like(base)).bfloat16()
    return q, k, torch.randn_like(base).bfloat16()


def sparse_rows(
    ns: list[int], b: int, h: int, d: int, sdpa_causal: dict[int, float], args: argparse.Namespace
) -> list[dict]:
    """LongGen, AnchorAttention and PARO forward times against SDPA flash at the same length."""
    rows = []
    for n in ns:
        row: dict = {"N": n}
        q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        with torch.no_grad():
            if n not in sdpa_causal:
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    sdpa_causal[n] = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), 300)
            row["sdpa_causal_fwd"] = sdpa_causal[n]
            longgen = (
                ("longgen_sink_window", {"sink": 128, "window": args.window}),
                ("longgen_strided", {"block": 128, "local_blocks": args.local_blocks, "stride": args.stride}),
            )
            for name, params in longgen if "longgen" in args.sparse_patterns else ():
                mask = longgen_block_mask(name.removeprefix("longgen_"), n, "cuda", **params)
                row[f"{name}_fwd"] = bench(lambda: longgen_attention(q, k, v, mask))
                row[f"{name}_density"] = block_density(mask)
            if "anchor" in args.sparse_patterns:
                cfg = AnchorConfig(theta=args.theta)
                q, k, v = anchor_inputs(b, h, n, d, args.anchor_logit_std)
                row["anchor_fwd"] = bench(lambda: anchor_attention(q, k, v, cfg))
                _, stats = anchor_attention(q, k, v, cfg, return_stats=True)
                row["anchor_density"] = stats.density
                row["anchor_tile_density"] = stats.tile_density
                if n == args.recall_n:
                    row["anchor_recall"] = anchor_recall(q, k, stats.selected, cfg, num_queries=64)
        if "paro" in args.sparse_patterns:
            grid = (n // 1024, 32, 32)
            with torch.no_grad():
                q, k, v = paro_inputs(b, h, grid, d)
                plan = calibrate_paro(q[:1], k[:1], grid, 0, 128, args.paro_density, rows_per_block=4)
                row["paro_fwd"] = bench(lambda: paro_attention(q, k, v, plan))
                row["paro_density"] = plan.density
                row["paro_quant_error"] = paro_attention(q, k, v, plan, return_stats=True)[1].quant_error
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    row["sdpa_full_fwd"] = bench(lambda: F.scaled_dot_product_attention(q, k, v), 300)
        for name in ("longgen_sink_window", "longgen_strided", "anchor"):
            _ratio(row, f"{name}_fwd", "sdpa_causal_fwd")
        _ratio(row, "paro_fwd", "sdpa_full_fwd")
        row["compiled_graphs"] = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        rows.append(row)
        _progress(json.dumps(row))
        torch.cuda.empty_cache()
    return rows


def tune_scan(n: int, b: int, h: int, d: int) -> list[dict[str, Any]]:
    """Time launch shapes of the scan kernel (forward and reverse) at one length; one row per shape, the
    default first, each also against the default (a table of them goes to stderr)."""
    from vlnkit.perception.kernels.lightning.triton_kernels import ScanConfig, default_config, triton_chunk_scan

    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    s = transnormer_slopes(h).cuda()
    configs = [default_config(d, d, b * h)] + [
        ScanConfig(chunk, block_e, warps, stages)
        for chunk, block_e, warps, stages in (
            (64, 64, 4, 1), (64, 64, 4, 3), (64, 32, 4, 2), (64, 32, 2, 2), (64, 128, 8, 2), (64, 64, 8, 2),
            (128, 64, 8, 2), (128, 32, 4, 2), (128, 64, 4, 2), (32, 64, 4, 2), (32, 32, 2, 2), (64, 128, 4, 2),
        )
    ]
    _progress(f"| config (N={n}) | forward ms | reverse ms |\n|---|---|---|")
    rows: list[dict[str, Any]] = []
    for cfg in configs:
        try:
            fwd = bench(lambda: triton_chunk_scan(q, k, v, s, reverse=False, output_state=False, config=cfg))
            rev = bench(lambda: triton_chunk_scan(q, k, v, s, reverse=True, output_state=False, config=cfg))
            _progress(f"| {cfg} | {fwd:.3f} | {rev:.3f} |")
            row: dict[str, Any] = {"config": str(cfg), "forward_ms": fwd, "reverse_ms": rev}
            if rows and "forward_ms" in rows[0]:
                row["forward_ms_vs_default"] = round(fwd / rows[0]["forward_ms"], 4)
                row["reverse_ms_vs_default"] = round(rev / rows[0]["reverse_ms"], 4)
            rows.append(row)
        except Exception as exc:  # a shape may not compile (resources): report it and go on
            _progress(f"| {cfg} | failed: {type(exc).__name__}: {str(exc)[:80]} | |")
            rows.append({"config": str(cfg), "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
    return rows


def fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def print_tables(dense: list[dict], sparse: list[dict]) -> None:
    _progress("\n| N | lightning fwd | lightning fwd+bwd | fla fwd | fla fwd+bwd | SDPA flash fwd | SDPA fwd+bwd | "
              "lightning M tok/s | fla M tok/s |")
    _progress("|---|---|---|---|---|---|---|---|---|")
    for r in dense:
        _progress(f"| {r['N']} | {fmt(r.get('lightning_fwd'))} | {fmt(r.get('lightning_fwdbwd'))}"
                  f" | {fmt(r.get('fla_fwd'))} | {fmt(r.get('fla_fwdbwd'))}"
                  f" | {fmt(r.get('sdpa_fwd'))} | {fmt(r.get('sdpa_fwdbwd'))}"
                  f" | {fmt(r.get('lightning_Mtok_s'), 1)} | {fmt(r.get('fla_Mtok_s'), 1)} |")
    if not sparse:
        return
    _progress("\n| N | SDPA causal fwd | LongGen sink+window (density) | LongGen strided (density) | "
              "Anchor (density / tiles) | Anchor recall | SDPA full fwd | PARO (density, INT8 QK err) |")
    _progress("|---|---|---|---|---|---|---|---|")
    for r in sparse:
        cells = [str(r["N"]), fmt(r["sdpa_causal_fwd"])]
        for name in ("longgen_sink_window", "longgen_strided"):
            cells.append(f"{fmt(r[f'{name}_fwd'])} ({r[f'{name}_density']:.0%})" if f"{name}_fwd" in r else "")
        cells.append(f"{fmt(r['anchor_fwd'])} ({r['anchor_density']:.0%} / {r['anchor_tile_density']:.0%})"
                     if "anchor_fwd" in r else "")
        cells += [fmt(r.get("anchor_recall"), 4), fmt(r.get("sdpa_full_fwd"))]
        cells.append(f"{fmt(r['paro_fwd'])} ({r['paro_density']:.0%}, {r['paro_quant_error']:.2e})"
                     if "paro_fwd" in r else "")
        _progress("| " + " | ".join(cells) + " |")


def run(ns: list[int] = DEFAULT_NS, sparse_ns: list[int] = SPARSE_NS, batch: int = 4, heads: int = 32,
        dim: int = 128, skip_backward: bool = False, parts: Any = PARTS, sparse_patterns: Any = SPARSE_PATTERNS,
        window: int = 4096, local_blocks: int = 8, stride: int = 8, theta: float = 12.0,
        anchor_logit_std: float = 5.0, recall_n: int = 32768, paro_density: float = 0.3,
        tune: int = 0) -> dict[str, Any]:
    """Measure what the module docstring describes; ``skipped`` without a CUDA GPU."""
    if not torch.cuda.is_available():
        return {"skipped": "needs a CUDA GPU", "baseline": BASELINE}
    parts, sparse_patterns = set(parts), set(sparse_patterns)
    args = argparse.Namespace(window=window, local_blocks=local_blocks, stride=stride, theta=theta,
                              anchor_logit_std=anchor_logit_std, recall_n=recall_n, paro_density=paro_density,
                              sparse_patterns=sparse_patterns)
    torch.manual_seed(0)
    head = {"baseline": BASELINE, "device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "batch": batch, "heads": heads, "dim": dim}
    _progress(f"# {head['device']} torch {torch.__version__} B={batch} H={heads} D={dim} bf16")
    if tune:
        return {**head, "baseline": "default: the scan kernel's default launch shape", "tune_n": tune,
                "tune": tune_scan(tune, batch, heads, dim)}
    dense = []
    if parts & {"lightning", "fla", "sdpa"}:
        dense = dense_rows(ns, batch, heads, dim, not skip_backward, parts)
    sdpa_causal = {r["N"]: r["sdpa_fwd"] for r in dense if "sdpa_fwd" in r}
    sparse = []
    if "sparse" in parts:
        sparse = sparse_rows(sparse_ns, batch, heads, dim, sdpa_causal, args)
    print_tables(dense, sparse)
    return {**head, "dense": dense, "sparse": sparse}
