"""The experiment runner behind ``vlnkit experiment NAME [key=value ...]``.

An experiment is a module of this package with a function ``run(cfg, ctx) -> ExperimentResult``, listed in
:data:`EXPERIMENTS`, and a config ``vlnkit/configs/experiment/NAME.yaml`` whose defaults start with ``_base``
(``out``, ``seed``, ``device``, ``progress``, ``resume``). The runner composes the config with the
command line's overrides, hands the experiment an :class:`ExperimentContext` (run folder, seed, device,
progress bars, atomic checkpoint states), and writes what it returns into the run folder:

- ``config.json``: the resolved config and its hash (``out``, ``device``, ``progress`` and ``resume`` are
  left out of the hash: they do not change what is computed);
- ``checkpoints/NAME.pt``: the states the experiment saved, so an interrupted run continues where it was
  (``resume=true``, the default) and a finished run returns at once;
- ``results.json``: the experiment's numbers, its tables, plots, config, seed, git commit and package
  versions; ``results.md``: the tables in Markdown; and the plots (PNG) the experiment wrote.
  ``vlnkit report RUN`` turns the folder into an HTML page.

A run folder made with another config is refused while ``resume=true`` (the error names the keys that
differ); ``resume=false`` deletes its checkpoints and results and starts over.
"""

from __future__ import annotations

import importlib
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from vlnkit.config import config_hash, load_config
from vlnkit.eval.provenance import git_commit, package_versions
from vlnkit.memory.checkpoint import load_torch, save_text, save_torch

EXPERIMENTS: dict[str, tuple[str, str]] = {
    "icl_regression": ("vlnkit.eval.experiments.icl_regression",
                       "multi-head softmax attention on in-context linear regression vs debiased GD and ridge"),
    "deconstructed_attention": ("vlnkit.eval.experiments.deconstructed_attention",
                                "small language models with relaxed attention variants and hybrid schedules"),
    "associative_capacity": ("vlnkit.eval.experiments.associative_capacity",
                             "linear attention as a Hebbian memory: retrieval error vs stored pairs, LTM capacity"),
    "attention_analysis": ("vlnkit.eval.experiments.attention_analysis",
                           "per-head segment shares, entropy and VHD of a trained policy's cross-attention"),
    "llm_attention": ("vlnkit.eval.experiments.llm_attention",
                      "SmolLM2 via transformers: landmark hallucination vs T-VHD, FAI anchors on instruction landmarks"),
    "policy_attention": ("vlnkit.eval.experiments.policy_attention",
                         "attention interventions (VAR, VHR, PAINT) and head pruning on a trained policy's TC and nDTW"),
}
"""Experiment name -> (module defining ``run(cfg, ctx)``, one-line description)."""

UNHASHED_KEYS = ("out", "device", "progress", "resume")
"""Config keys that do not change what an experiment computes."""


@dataclass
class Table:
    """A result table: ``rows`` of cells under ``header``, with a ``title`` and a ``note`` saying how to read it."""

    title: str
    header: list[str]
    rows: list[list[Any]]
    note: str = ""

    def markdown(self) -> str:
        """The table as Markdown (a ``###`` title, the note, then the table)."""
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "---|" * len(self.header))
        lines += ["| " + " | ".join(format_cell(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class ExperimentResult:
    """What an experiment returns: JSON-able ``results``, its ``tables`` and the ``plots`` (file names in the
    run folder) it wrote."""

    results: dict[str, Any]
    tables: list[Table] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)


@dataclass
class ExperimentContext:
    """What the runner gives an experiment: where to write, its seed and device, progress bars and resumable
    states (:meth:`save_state` / :meth:`load_state`, written atomically under ``run_dir/checkpoints``)."""

    run_dir: Path
    seed: int
    device: torch.device
    progress: bool = True

    def _state_path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"a state name is a plain file name, got {name!r}")
        return self.run_dir / "checkpoints" / f"{name}.pt"

    def load_state(self, name: str) -> Any | None:
        """The object last saved as ``name`` (read with ``weights_only=True``), or ``None`` when there is none."""
        path = self._state_path(name)
        return load_torch(path) if path.is_file() else None

    def save_state(self, name: str, obj: Any) -> Path:
        """Save ``obj`` (tensors, numbers, strings, lists, dicts) as ``name``, atomically."""
        return save_torch(obj, self._state_path(name))

    def bar(self, total: int, desc: str, initial: int = 0) -> tqdm:
        """A tqdm progress bar, silent when ``progress`` is off."""
        return tqdm(total=total, initial=initial, desc=desc, disable=not self.progress, leave=False)

    def figure_path(self, filename: str) -> Path:
        """Where a plot named ``filename`` goes: inside the run folder."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return self.run_dir / filename


def format_cell(value: Any) -> str:
    """A table cell as text: floats to 4 significant digits, NaN as a dash."""
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}"
    return str(value)


def _jsonable(value: Any) -> Any:
    """numpy and torch scalars and arrays as plain Python (for ``json.dumps``)."""
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else the CPU; anything else as torch names it (a missing CUDA device
    is an error naming the key)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name}: no CUDA device is present; use device=cpu or device=auto")
    return device


def experiment_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The composed config of experiment ``name`` with command-line ``overrides``."""
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; expected one of: {', '.join(EXPERIMENTS)}")
    return load_config(name, overrides, folder="experiment")


def _hashed(cfg: DictConfig) -> dict[str, Any]:
    data = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in data.items() if k not in UNHASHED_KEYS}


def _check_config(run_dir: Path, name: str, config: dict[str, Any], key: str, resume: bool) -> None:
    """Refuse a run folder made with another config while resuming; clear it when not resuming."""
    path = run_dir / "config.json"
    if not path.is_file():
        return
    stored = json.loads(path.read_text())
    if not resume:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        for done in ("results.json", "results.md"):
            (run_dir / done).unlink(missing_ok=True)
        return
    if stored.get("experiment") != name or stored.get("config_hash") != key:
        old = stored.get("config", {})
        differ = sorted(k for k in {*old, *config} if old.get(k) != config.get(k))
        raise ValueError(f"{path}: this run folder holds experiment {stored.get('experiment')!r} with another "
                         f"config (keys that differ: {', '.join(differ) or 'none'}); use another out= or resume=false")


def run_experiment(name: str, overrides: Sequence[str] = ()) -> Path:
    """Run experiment ``name`` with ``overrides`` (see the module docstring) and return its run folder."""
    cfg = experiment_config(name, overrides)
    run_dir = Path(str(cfg.out) if cfg.get("out") is not None else f"runs/experiment/{name}").expanduser()
    config = _hashed(cfg)
    key = config_hash({"experiment": name, **config})
    resume = bool(cfg.resume)
    _check_config(run_dir, name, config, key, resume)
    results_path = run_dir / "results.json"
    if resume and results_path.is_file():
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    save_text(json.dumps({"experiment": name, "config_hash": key, "config": config}, indent=1), run_dir / "config.json")
    ctx = ExperimentContext(run_dir=run_dir, seed=int(cfg.seed), device=resolve_device(str(cfg.device)),
                            progress=bool(cfg.progress))
    torch.manual_seed(ctx.seed)
    module = importlib.import_module(EXPERIMENTS[name][0])
    result: ExperimentResult = module.run(cfg, ctx)
    missing = [p for p in result.plots if not (run_dir / p).is_file()]
    if missing:
        raise RuntimeError(f"experiment {name} listed plots it did not write: {missing}")
    markdown = "\n\n".join([f"## Experiment `{name}` (seed {ctx.seed})", *(t.markdown() for t in result.tables)])
    save_text(markdown + "\n", run_dir / "results.md")
    save_text(json.dumps({
        "experiment": name, "config_hash": key, "config": config, "seed": ctx.seed, "device": str(ctx.device),
        "git_commit": git_commit(), "versions": package_versions(), "results": result.results,
        "tables": [asdict(t) for t in result.tables], "plots": list(result.plots),
    }, indent=1, default=_jsonable), results_path)
    return run_dir
