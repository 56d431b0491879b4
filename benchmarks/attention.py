"""Attention kernel benchmark for a CUDA GPU: lightning attention vs fla and SDPA, sparse patterns vs SDPA.

Default shape: B=4, H=32, D=128, bf16, causal, N from 1K to 64K. Prints Markdown tables, then one JSON line
with every figure. Times are medians of CUDA-event timings (L2 flushed between runs), in milliseconds.

    python benchmarks/attention.py                              # everything
    python benchmarks/attention.py --parts lightning,sdpa       # a subset (lightning, fla, sdpa, sparse)
    python benchmarks/attention.py --tune 16384                 # time launch shapes of the lightning scan

fla (flash-linear-attention) is optional: without it its columns are left empty.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vlnkit.perception.kernels import lightning_attn, transnormer_slopes  # noqa: E402
from vlnkit.perception.kernels.anchor import AnchorConfig, anchor_attention, anchor_recall  # noqa: E402
from vlnkit.perception.kernels.longgen import block_density, longgen_attention, longgen_block_mask  # noqa: E402
from vlnkit.perception.kernels.paro import calibrate_paro, paro_attention  # noqa: E402

DEFAULT_NS = [1024, 2048, 4096, 8192, 16384, 32768, 65536]
SPARSE_NS = [4096, 16384, 32768, 65536]


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
        rows.append(row)
        print(json.dumps(row), flush=True)
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
        row["compiled_graphs"] = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        torch.cuda.empty_cache()
    return rows


def tune(n: int, b: int, h: int, d: int) -> None:
    """Time launch shapes of the scan kernel (forward and reverse) at one length and print them."""
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
    print(f"| config (N={n}) | forward ms | reverse ms |\n|---|---|---|")
    for cfg in configs:
        try:
            fwd = bench(lambda: triton_chunk_scan(q, k, v, s, reverse=False, output_state=False, config=cfg))
            rev = bench(lambda: triton_chunk_scan(q, k, v, s, reverse=True, output_state=False, config=cfg))
            print(f"| {cfg} | {fwd:.3f} | {rev:.3f} |", flush=True)
        except Exception as exc:  # a shape may not compile (resources): report it and go on
            print(f"| {cfg} | failed: {type(exc).__name__}: {str(exc)[:80]} | |", flush=True)


def fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def print_tables(dense: list[dict], sparse: list[dict]) -> None:
    print("\n| N | lightning fwd | lightning fwd+bwd | fla fwd | fla fwd+bwd | SDPA flash fwd | SDPA fwd+bwd | "
          "lightning M tok/s | fla M tok/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in dense:
        print(f"| {r['N']} | {fmt(r.get('lightning_fwd'))} | {fmt(r.get('lightning_fwdbwd'))} | {fmt(r.get('fla_fwd'))}"
              f" | {fmt(r.get('fla_fwdbwd'))} | {fmt(r.get('sdpa_fwd'))} | {fmt(r.get('sdpa_fwdbwd'))}"
              f" | {fmt(r.get('lightning_Mtok_s'), 1)} | {fmt(r.get('fla_Mtok_s'), 1)} |")
    if not sparse:
        return
    print("\n| N | SDPA causal fwd | LongGen sink+window (density) | LongGen strided (density) | "
          "Anchor (density / tiles) | Anchor recall | SDPA full fwd | PARO (density, INT8 QK err) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sparse:
        cells = [str(r["N"]), fmt(r["sdpa_causal_fwd"])]
        for name in ("longgen_sink_window", "longgen_strided"):
            cells.append(f"{fmt(r[f'{name}_fwd'])} ({r[f'{name}_density']:.0%})" if f"{name}_fwd" in r else "")
        cells.append(f"{fmt(r['anchor_fwd'])} ({r['anchor_density']:.0%} / {r['anchor_tile_density']:.0%})"
                     if "anchor_fwd" in r else "")
        cells += [fmt(r.get("anchor_recall"), 4), fmt(r.get("sdpa_full_fwd"))]
        cells.append(f"{fmt(r['paro_fwd'])} ({r['paro_density']:.0%}, {r['paro_quant_error']:.2e})"
                     if "paro_fwd" in r else "")
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ns", type=lambda x: [int(v) for v in x.split(",")], default=DEFAULT_NS)
    parser.add_argument("--sparse-ns", type=lambda x: [int(v) for v in x.split(",")], default=SPARSE_NS)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--skip-backward", action="store_true")
    parser.add_argument("--parts", type=lambda x: set(x.split(",")), default={"lightning", "fla", "sdpa", "sparse"},
                        help="comma list of lightning, fla, sdpa, sparse")
    parser.add_argument("--sparse-patterns", type=lambda x: set(x.split(",")), default={"longgen", "anchor", "paro"},
                        help="comma list of longgen, anchor, paro")
    parser.add_argument("--window", type=int, default=4096, help="LongGen sliding window")
    parser.add_argument("--local-blocks", type=int, default=8, help="LongGen strided: local 128-blocks")
    parser.add_argument("--stride", type=int, default=8, help="LongGen strided: every stride-th block")
    parser.add_argument("--theta", type=float, default=12.0, help="AnchorAttention margin")
    parser.add_argument("--anchor-logit-std", type=float, default=5.0, help="spread of synthetic logits")
    parser.add_argument("--recall-n", type=int, default=32768)
    parser.add_argument("--paro-density", type=float, default=0.3)
    parser.add_argument("--tune", type=int, default=0, help="time scan launch shapes at this length and exit")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/attention.py needs a CUDA GPU")
    torch.manual_seed(0)
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__} B={args.batch} H={args.heads} "
          f"D={args.dim} bf16", flush=True)
    if args.tune:
        tune(args.tune, args.batch, args.heads, args.dim)
        return
    dense = []
    if args.parts & {"lightning", "fla", "sdpa"}:
        dense = dense_rows(args.ns, args.batch, args.heads, args.dim, not args.skip_backward, args.parts)
    sdpa_causal = {r["N"]: r["sdpa_fwd"] for r in dense if "sdpa_fwd" in r}
    sparse = []
    if "sparse" in args.parts:
        sparse = sparse_rows(args.sparse_ns, args.batch, args.heads, args.dim, sdpa_causal, args)
    print_tables(dense, sparse)
    print(json.dumps({"device": torch.cuda.get_device_name(), "batch": args.batch, "heads": args.heads,
                      "dim": args.dim, "dense": dense, "sparse": sparse}))


if __name__ == "__main__":
    main()
