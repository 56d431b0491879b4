"""Decision time of the FLAME policy per self-attention token mixer, and the cost of the attention hook.

    vlnkit bench policy_attention [--mixers softmax mlp taylor key_only] [--batch 1] [--history 16]
        [--repeats 200]

Builds :class:`~vlnkit.agents.policy.model.FlamePolicy` at the sizes of ``configs/train_policy.yaml``
(d_model 64, 4 heads, 2 blocks, 4 queries; 8 instruction slots, 12 sub-goals, 8 sectors, 3 memory tokens)
once per ``self_mixer`` and times one decision, :meth:`FlamePolicy.step` on a fixed set of latents with
``history`` summary tokens, at ``batch`` episodes: inference (``<mixer>_ms_per_decision``, under
``torch.inference_mode``, what the agent pays per step) and a training step
(``<mixer>_train_ms_per_decision``, forward and backward), both divided by the batch. For the softmax
policy it also times a copy that has had a :class:`~vlnkit.perception.attention.Capture` attached and
detached (``detached``: without probes the policy's attentions are torch's own modules, which
:func:`~vlnkit.perception.attention.attach` swaps for hooked ones only while probes sit on them, so this
must cost what a policy never probed costs) and the policy with a capture on every site (``capture``). Random weights and
inputs: the time does not depend on their values. One torch thread; the variants are timed in turn within
each of ``repeats`` rounds (so a busy machine slows them alike), and each figure is a median.

Baseline: the softmax self-attention policy in the same run. ``<mixer>_ms_vs_softmax`` is a mixer's
inference time over softmax's (below 1 is faster); ``detached_ms_vs_softmax`` is the hook's cost once
its probes are gone (1.0 is free), and ``capture_ms_vs_softmax`` the full capture's. Task completion of trained hybrids comes from ``vlnkit train policy model.self_mixer=NAME``
(its curves file), not from here.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch

from vlnkit.agents.policy.features import EXTRA_MEMORY_FEATURES
from vlnkit.agents.policy.model import FlamePolicy, PolicyConfig
from vlnkit.perception.attention import Capture, attach

BASELINE = "the softmax self-attention policy in the same run (never probed, for the hook figures)"
QUICK = {"repeats": 20}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The mixers, the batch, the history length and the number of timing rounds."""
    parser.add_argument("--mixers", nargs="+", default=["softmax", "mlp", "taylor", "key_only"])
    parser.add_argument("--batch", type=int, default=1, help="episodes per decision")
    parser.add_argument("--history", type=int, default=16, help="history summary tokens attended")
    parser.add_argument("--repeats", type=int, default=200, help="timing rounds")


def _interleaved_ms(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median wall time in milliseconds of each function, calling every one once per round (after 5 warm-up
    rounds) in an order rotated every round, so that load on a shared machine, and whatever the previous
    call left in the caches, fall on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for round_ in range(repeats + 5):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            fn = fns[name]
            start = time.perf_counter()
            fn()
            if round_ >= 5:
                times[name].append(time.perf_counter() - start)
    return {name: 1000.0 * statistics.median(t) for name, t in times.items()}


def _decision(model: torch.nn.Module, batch: int, history: int) -> Callable[[], torch.Tensor]:
    """One :meth:`FlamePolicy.step` of ``model`` on fixed random latents."""
    c: PolicyConfig = model.config
    d = c.d_model
    generator = torch.Generator().manual_seed(0)
    instruction = torch.randn(batch, c.instruction_slots, d, generator=generator)
    goals = (torch.randn(batch, c.subgoals, d, generator=generator), torch.zeros(batch, c.subgoals, dtype=torch.bool))
    visual = torch.randn(batch, c.sectors, d, generator=generator)
    summaries = torch.randn(batch, history, d, generator=generator)
    ages = torch.arange(1, history + 1)
    history_pad = torch.zeros(batch, history, dtype=torch.bool)
    memory = torch.rand(batch, c.memory_tokens, c.memory_dim + EXTRA_MEMORY_FEATURES, generator=generator)
    query, hidden = torch.randn(batch, c.memory_dim, generator=generator), torch.zeros(batch, d)
    return lambda: model.step(instruction, goals, visual, summaries, ages, history_pad, memory, query, hidden)[0]


def run(mixers: Sequence[str] = ("softmax", "mlp", "taylor", "key_only"), batch: int = 1, history: int = 16,
        repeats: int = 200) -> dict[str, Any]:
    """Inference and training ms per decision of each ``self_mixer`` and of the hook (module docstring)."""
    mixers = ["softmax", *(m for m in mixers if m != "softmax")]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models = {}
        for mixer in mixers:
            torch.manual_seed(0)
            models[mixer] = FlamePolicy(PolicyConfig(vocab_size=200, categories=12, memory_dim=64, self_mixer=mixer))
        capture = Capture()
        models["detached"] = copy.deepcopy(models["softmax"])
        with torch.inference_mode(), attach(models["detached"], "*", capture):
            _decision(models["detached"], batch, history)()

        def infer(name: str) -> Callable[[], None]:
            decide = _decision(models[name if name != "capture" else "softmax"], batch, history)
            probed = (lambda: attach(models["softmax"], "*", capture)) if name == "capture" else nullcontext

            def call() -> None:
                capture.calls.clear()
                with torch.inference_mode(), probed():
                    decide()
            return call

        def train(name: str) -> Callable[[], None]:
            model, decide = models[name], _decision(models[name], batch, history)

            def call() -> None:
                model.zero_grad(set_to_none=True)
                decide().sum().backward()
            return call

        inference = _interleaved_ms({name: infer(name) for name in [*mixers, "detached", "capture"]}, repeats)
        training = _interleaved_ms({name: train(name) for name in mixers}, max(1, repeats // 4))
        result: dict[str, Any] = {"baseline": BASELINE, "batch": batch, "history": history, "repeats": repeats}
        for mixer in mixers:
            result[f"{mixer}_ms_per_decision"] = round(inference[mixer] / batch, 4)
            result[f"{mixer}_train_ms_per_decision"] = round(training[mixer] / batch, 4)
            result[f"{mixer}_parameters"] = sum(p.numel() for p in models[mixer].parameters())
            result[f"{mixer}_ms_vs_softmax"] = round(inference[mixer] / inference["softmax"], 3)
        result["detached_ms_per_decision"] = round(inference["detached"] / batch, 4)
        result["capture_ms_per_decision"] = round(inference["capture"] / batch, 4)
        result["detached_ms_vs_softmax"] = round(inference["detached"] / inference["softmax"], 3)
        result["capture_ms_vs_softmax"] = round(inference["capture"] / inference["softmax"], 3)
        return result
    finally:
        torch.set_num_threads(threads)
