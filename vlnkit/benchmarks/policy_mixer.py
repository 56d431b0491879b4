"""Decision time of the FLAME policy per self-attention token mixer (the hybrid schedules of #15).

    vlnkit bench policy_mixer [--mixers softmax mlp taylor key_only] [--batch 1] [--history 16] [--repeats 200]

Builds :class:`~vlnkit.agents.policy.model.FlamePolicy` at the sizes of ``configs/train_policy.yaml``
(d_model 64, 4 heads, 2 blocks, 4 queries; 8 instruction slots, 12 sub-goals, 8 sectors, 3 memory tokens)
once per ``self_mixer`` and times one decision, :meth:`FlamePolicy.step` on a fixed set of latents with
``history`` summary tokens, at ``batch`` episodes: inference (``ms_per_decision``, under
``torch.inference_mode``, what the agent pays per step) and a training step (``train_ms_per_decision``,
forward and backward, divided by the batch). Random weights and inputs: the time does not depend on their
values. One torch thread, the median of ``repeats`` timings after a warm-up.

Baseline: the ``softmax`` mixer (standard self-attention) in the same run; ``<mixer>_ms_vs_softmax`` is the
mixer's inference time over softmax's (below 1 is faster). Task completion of trained hybrids comes from
``vlnkit train policy model.self_mixer=NAME`` (its curves file), not from here.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from vlnkit.agents.policy.features import EXTRA_MEMORY_FEATURES
from vlnkit.agents.policy.model import FlamePolicy, PolicyConfig

BASELINE = "the softmax self-attention policy in the same run"
QUICK = {"repeats": 20}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The mixers, the batch, the history length and the number of timings."""
    parser.add_argument("--mixers", nargs="+", default=["softmax", "mlp", "taylor", "key_only"])
    parser.add_argument("--batch", type=int, default=1, help="episodes per decision")
    parser.add_argument("--history", type=int, default=16, help="history summary tokens attended")
    parser.add_argument("--repeats", type=int, default=200)


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn`` in milliseconds over ``repeats`` calls, after 5 warm-up calls."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def run(mixers: Sequence[str] = ("softmax", "mlp", "taylor", "key_only"), batch: int = 1, history: int = 16,
        repeats: int = 200) -> dict[str, Any]:
    """Inference and training ms per decision of each ``self_mixer`` (see the module docstring)."""
    if "softmax" not in mixers:
        mixers = ["softmax", *mixers]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result: dict[str, Any] = {"baseline": BASELINE, "batch": batch, "history": history}
        for mixer in mixers:
            torch.manual_seed(0)
            config = PolicyConfig(vocab_size=200, categories=12, memory_dim=64, self_mixer=mixer)
            model = FlamePolicy(config)
            d, b = config.d_model, batch
            instruction = torch.randn(b, config.instruction_slots, d)
            goals = (torch.randn(b, config.subgoals, d), torch.zeros(b, config.subgoals, dtype=torch.bool))
            visual = torch.randn(b, config.sectors, d)
            summaries = torch.randn(b, history, d)
            ages = torch.arange(1, history + 1)
            history_pad = torch.zeros(b, history, dtype=torch.bool)
            memory = torch.rand(b, config.memory_tokens, config.memory_dim + EXTRA_MEMORY_FEATURES)
            query, hidden = torch.randn(b, config.memory_dim), torch.zeros(b, d)

            def decide() -> torch.Tensor:
                return model.step(instruction, goals, visual, summaries, ages, history_pad, memory, query, hidden)[0]

            def infer() -> None:
                with torch.inference_mode():
                    decide()

            def train() -> None:
                model.zero_grad(set_to_none=True)
                decide().sum().backward()

            result[f"{mixer}_ms_per_decision"] = round(_median_ms(infer, repeats) / b, 4)
            result[f"{mixer}_train_ms_per_decision"] = round(_median_ms(train, repeats) / b, 4)
            result[f"{mixer}_parameters"] = sum(p.numel() for p in model.parameters())
        softmax_ms = result["softmax_ms_per_decision"]
        for mixer in mixers:
            result[f"{mixer}_ms_vs_softmax"] = round(result[f"{mixer}_ms_per_decision"] / softmax_ms, 3)
        return result
    finally:
        torch.set_num_threads(threads)
