"""The Python entry point of evaluation, next to ``vlnkit eval``: ``vlnkit.evaluate(agent, task=...)``.

>>> import vlnkit
>>> result = vlnkit.evaluate("oracle", task="synth_city", limit=5)           # doctest: +SKIP
>>> result.metrics["task_completion"], result.run_dir                        # doctest: +SKIP

``agent`` is a registered agent name, ``package.module:ClassName`` of an agent of one's own, or an agent
object (anything with ``reset`` and ``act``, see :class:`vlnkit.agents.Agent`), which runs in this process.
Keyword arguments are keys of ``configs/eval.yaml`` (``split="dev"``, ``limit=10``, ``seed=1``,
``data_dir=...``), dotted keys go through ``overrides`` (``overrides=["task.max_steps=80"]``). The run
is the same as the command line's: same folder layout, resumable, same metrics for the same config.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlnkit.agents.base import Agent


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` returns: the contents of ``metrics.json`` and the run folder."""

    metrics: dict[str, Any]
    run_dir: Path


def _override_value(value: Any) -> str:
    """A Python value as a Hydra override value (``None`` -> ``null``, lists and dicts as JSON)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def evaluate(agent: str | Agent, task: str = "synth_city", overrides: Sequence[str] = (),
             **keys: Any) -> Evaluation:
    """Evaluate ``agent`` on ``task`` (a ``configs/task`` name) and return its metrics and run folder."""
    from vlnkit.config import load_config
    from vlnkit.eval.runner import evaluate as run

    instance = None if isinstance(agent, str) else agent
    if instance is not None and not (callable(getattr(instance, "act", None)) and callable(getattr(instance, "reset", None))):
        raise TypeError(f"agent must be a name or an object with reset() and act(), got {type(agent).__name__}")
    name = agent if isinstance(agent, str) else f"{type(agent).__module__}:{type(agent).__qualname__}"
    args = [f"task={task}", f"agent={name}" if isinstance(agent, str) else "agent=custom"]
    if instance is not None:
        args.append(f"agent.name={name}")
    args += [f"{key}={_override_value(value)}" for key, value in keys.items()]
    cfg = load_config("eval", [*args, *overrides])
    if instance is not None and str(cfg.get("runner", "inprocess")) != "inprocess":
        raise ValueError("an agent object runs in this process only (runner=inprocess); pass its name, or "
                         "package.module:ClassName, to run it on other workers")
    metrics = run(cfg, agent=instance)
    return Evaluation(metrics, Path(str(cfg.out)))
