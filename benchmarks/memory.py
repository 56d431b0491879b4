"""Mem4Nav memory benchmark: prints one JSON line (see vlnkit/memory/benchmark.py for the keys).

    python benchmarks/memory.py                                  # 1k, 10k, 100k, 1M stored observations
    python benchmarks/memory.py --sizes 1000,10000 --timed-steps 500
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's BLAS pool is sized when numpy loads: one core
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vlnkit.memory.benchmark import run_memory_benchmark  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000,1000000", help="stored observations, comma-separated")
    parser.add_argument("--timed-steps", type=int, default=1000, help="timed write+retrieve steps per size")
    parser.add_argument("--dim", type=int, default=128, help="observation embedding size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    result = run_memory_benchmark(sizes=sizes, timed_steps=args.timed_steps, dim=args.dim, seed=args.seed)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
