"""Rollouts and the results folder of an evaluation run.

``evaluate(cfg)`` runs one agent over the episodes of a split on the backend ``cfg.runner`` names
(``inprocess``, ``vector`` or ``ray`` with ``cfg.workers`` workers; see :mod:`vlnkit.eval.backends`)
and writes, under ``cfg.out``:

- ``episodes.jsonl``: one line per finished episode (id, predicted trajectory, actions, its metrics),
  written by the driver alone in completion order, each line flushed and fsynced as its episode ends;
- ``metrics.json``: the means over episodes in dataset order, ``num_episodes``, ``num_failed`` and
  ``failed_episodes``, ``privileged`` (the privileged information the agent used: ``info`` items such as
  the oracle's action, or simulator labels in its panorama; empty when it read observations only), the seed, the config and dataset hashes, package versions, the git commit and
  the resolved config;
- the task kind's leaderboard submission and report (for street tasks ``submission.jsonl`` with
  ``route_id``/``id`` and ``route_panoids``, ``report.md`` and ``trajectories.png``);
- ``run.json``: the config and dataset hashes, so that a folder is never resumed by a different run.

Each episode's randomness comes from a seed derived from the run seed and the episode id, so results
do not depend on the backend, the number of workers or the order in which episodes finish.

Faults:

- *Killed run*: starting the same command again skips the episodes already in ``episodes.jsonl`` and
  runs the rest; an episode is finished exactly when its line is complete on disk.
- *Torn last line* (a crash in the middle of a write): dropped and truncated away, and its episode run
  again. A complete last line that lost only its newline gets the newline back.
- *Corrupt line before the last* (not JSON, or no ``episode_id``): a crash cannot cause it, so the file
  was altered; the run stops with :class:`CorruptRunError` naming the line and changes nothing. Delete
  the line (its episode is then run again) or choose another ``out=``.
- *Agent refuses its inputs* (:class:`~vlnkit.agents.base.AgentInputError`, e.g. a real release without
  the files an agent needs): the run stops with that one line, before recording the episode, since every
  episode would fail the same way.
- *Agent raises, worker process or Ray actor dies*: the episode is tried again, up to
  ``cfg.max_retries`` more times (with the same seed), and the run goes on meanwhile. An episode that
  still fails is recorded with ``"failed": true``, its ``error``, a ``traceback`` summary and
  ``attempts``, and is scored as if the agent had stopped where it started (no actions): it counts in
  every mean like any other episode (on a street task that is a TC of 0 unless the start lies next to
  the goal), so failures never flatter a run. ``metrics.json`` lists them (``num_failed``,
  ``failed_episodes``). A failed episode counts as finished: resuming does not retry it (delete its
  line to retry it).
- *Different run, same folder*: a folder whose ``run.json`` has another config hash or dataset hash is
  refused, with the config keys that differ. Keys that change only how a run executes
  (:data:`EXECUTION_KEYS`) are not hashed, so a run may resume with another backend or worker count. A
  folder with no finished episode (a run that stopped at start-up, say on a bad config) is taken over by
  the next run, so the corrected command needs no other ``out=``.
- *Two runs, same folder at once*: the run holds a lock on ``run.lock`` in the folder while it works; a
  second run into the folder is refused at once instead of doing the same episodes again.
"""

from __future__ import annotations

import json
import os
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import filelock
import gymnasium
import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

import vlnkit  # noqa: F401  (registers the environments)
from vlnkit.agents.base import AgentInputError
from vlnkit.config import config_hash, to_container
from vlnkit.eval.backends import (
    Backend,
    EpisodeResult,
    EpisodeWorker,
    WorkerSpec,
    import_modules,
    make_backend,
    rollout,
)
from vlnkit.eval.metrics import aggregate
from vlnkit.eval.provenance import dataset_hash, git_commit, package_versions
from vlnkit.eval.tasks import EvalTask, get_task

__all__ = [
    "EXECUTION_KEYS", "ConfigError", "CorruptRunError", "RunFolderError", "config_differences", "episode_seed",
    "evaluate", "read_finished", "rollout", "run_episodes", "run_identity", "validate_config",
]

EXECUTION_KEYS = ("out", "progress", "runner", "workers", "ray_address", "max_retries", "num_plots", "allow_failed")
"""Config keys that change how a run executes or is reported but not its per-episode results; they are
left out of the config hash."""

HEADLINE_METRICS = (("task_completion", "TC"), ("success", "SR"), ("spl", "SPL"))
"""Metrics shown running on the progress bar, the first one a task has."""


class CorruptRunError(ValueError):
    """``episodes.jsonl`` has a damaged line that a crash cannot explain; the run folder needs a look."""


class RunFolderError(ValueError):
    """The run folder belongs to another run (other config or data), or another run is writing to it."""


class ConfigError(ValueError):
    """A run config value is out of its range; the message names the key, the value and what is expected."""


def validate_config(cfg: DictConfig) -> None:
    """Refuse config values that would silently run something other than what was asked for."""
    limit = cfg.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit={limit!r}: expected a whole number of episodes >= 1, or null for the whole split")
    for key in ("workers", "num_plots", "max_retries"):
        value = cfg.get(key)
        minimum = 1 if key == "workers" else 0
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
            raise ConfigError(f"{key}={value!r}: expected a whole number >= {minimum}")


def episode_seed(seed: int, episode_id: str) -> int:
    """A per-episode seed that depends only on the run seed and the episode id."""
    return zlib.crc32(f"{seed}:{episode_id}".encode()) & 0x7FFFFFFF


def read_finished(path: Path) -> dict[str, dict[str, Any]]:
    """Finished episodes of an interrupted run, by id (the module docstring says how damage is handled).

    Repairs the file in place so that appending goes on cleanly: a torn last line is truncated away, a
    missing final newline is added. Raises :class:`CorruptRunError` for a bad line before the last.
    """
    if not path.is_file():
        return {}
    data = path.read_bytes()
    lines = data.split(b"\n")
    finished: dict[str, dict[str, Any]] = {}
    good_bytes = 0
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                record = json.loads(line)
                episode_id = str(record["episode_id"])
            except (ValueError, KeyError, TypeError) as err:
                if any(rest.strip() for rest in lines[number:]):
                    raise CorruptRunError(
                        f"{path}:{number}: not an episode record ({type(err).__name__}: {err}), and finished "
                        "episodes follow it. A crash only ever tears the last line, so the file was altered; "
                        "nothing was changed. Delete that line to run its episode again, or use another out="
                    ) from err
                break
            finished[episode_id] = record
        good_bytes += len(line) + 1
    if good_bytes < len(data):
        with path.open("r+b") as f:
            f.truncate(good_bytes)
    elif data and not data.endswith(b"\n"):
        with path.open("ab") as f:
            f.write(b"\n")
    return finished


def run_identity(resolved: dict[str, Any], episodes: Sequence[Any]) -> dict[str, Any]:
    """What makes two runs the same run: the config hash (without :data:`EXECUTION_KEYS`), the dataset
    hash of the evaluated episodes, and the config itself."""
    hashed = {k: v for k, v in resolved.items() if k not in EXECUTION_KEYS}
    return {"config_hash": config_hash(hashed), "dataset_hash": dataset_hash(episodes), "config": resolved}


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The keys where two resolved configs differ, as ``key: old -> new`` lines (dotted keys, sorted),
    leaving out :data:`EXECUTION_KEYS` at the top level."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]
    lines = []
    for key in sorted(set(old) | set(new), key=str):
        if not prefix and key in EXECUTION_KEYS:
            continue
        name = f"{prefix}.{key}" if prefix else str(key)
        if key not in old:
            lines.append(f"{name}: (absent) -> {new[key]!r}")
        elif key not in new:
            lines.append(f"{name}: {old[key]!r} -> (absent)")
        else:
            lines += config_differences(old[key], new[key], name)
    return lines


def _has_finished_episodes(out: Path) -> bool:
    """Whether the folder's ``episodes.jsonl`` holds anything (a run that got past start-up)."""
    log = out / "episodes.jsonl"
    return log.is_file() and bool(log.read_bytes().strip())


def _check_run_folder(out: Path, identity: dict[str, Any]) -> None:
    """Refuse to resume into a folder made by a different config or on different data (results would
    mix), naming what differs; write ``run.json`` for a new run, or over that of a run that finished no
    episode."""
    marker = out / "run.json"
    if marker.is_file() and _has_finished_episodes(out):
        previous = json.loads(marker.read_text())
        if previous.get("config_hash") != identity["config_hash"]:
            changed = config_differences(previous.get("config", {}), identity["config"])
            raise RunFolderError(
                f"{out} holds a run with a different config (hash {previous.get('config_hash')} vs "
                f"{identity['config_hash']}; changed: {'; '.join(changed) or 'unknown'}); "
                "choose another out= or delete the folder"
            )
        if previous.get("dataset_hash", identity["dataset_hash"]) != identity["dataset_hash"]:
            raise RunFolderError(
                f"{out} holds a run on a different dataset (hash {previous['dataset_hash']} vs "
                f"{identity['dataset_hash']}: the split's episodes changed); choose another out= or delete the folder"
            )
    else:
        _write_json(marker, identity)


def _lock_run_folder(out: Path) -> filelock.BaseFileLock:
    """Take the run folder's lock (released when the run ends, or by the OS when its process dies)."""
    out.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(out / "run.lock"))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise RunFolderError(
            f"another run is writing to {out} (its lock {out / 'run.lock'} is held); wait for it to end "
            "or choose another out="
        ) from None
    return lock


def _append_line(f: IO[str], record: dict[str, Any]) -> None:
    """Append one JSON line and make it durable before going on (flush and fsync)."""
    f.write(json.dumps(record) + "\n")
    f.flush()
    os.fsync(f.fileno())


def run_episodes(
    backend: Backend, jobs: Sequence[tuple[str, int]], max_retries: int
) -> Iterator[tuple[EpisodeResult, int]]:
    """Run ``(episode_id, seed)`` jobs on ``backend``, keeping every worker busy; yield each episode's
    final result with its number of attempts, in completion order. A failed attempt is retried (first
    in the queue) until the episode has failed ``max_retries + 1`` times."""
    queue = deque(jobs)
    seeds = dict(jobs)
    attempts: dict[str, int] = {}
    in_flight = 0
    while queue or in_flight:
        while queue and in_flight < backend.capacity:
            episode_id, seed = queue.popleft()
            attempts[episode_id] = attempts.get(episode_id, 0) + 1
            backend.submit(episode_id, seed)
            in_flight += 1
        result = backend.next_result()
        in_flight -= 1
        if result.fatal:
            raise AgentInputError(str(result.error))
        if result.error is not None and attempts[result.episode_id] <= max_retries:
            queue.appendleft((result.episode_id, seeds[result.episode_id]))
            continue
        yield result, attempts[result.episode_id]


def _failed_record(task: EvalTask, env: gymnasium.Env, episode: Any, seed: int, result: EpisodeResult,
                   attempts: int) -> dict[str, Any]:
    """The record of an episode that kept failing: scored as stopped at its start, with the error."""
    _, info = env.reset(seed=seed, options={"episode_id": episode.episode_id})
    return {
        "episode_id": episode.episode_id,
        **task.finish(env, episode, [task.trace(info)], []),
        "stopped": False,
        "failed": True,
        "error": result.error,
        "traceback": result.traceback,
        "attempts": attempts,
    }


class _RunningMetric:
    """The running mean of a task's headline metric and the failure count, for the progress bar."""

    def __init__(self, task: EvalTask, records: Sequence[dict[str, Any]]) -> None:
        self.key, self.label = next(
            ((k, label) for k, label in HEADLINE_METRICS if k in task.metric_keys),
            (task.metric_keys[0], task.metric_keys[0]),
        )
        self.total = 0.0
        self.count = 0
        self.failed = 0
        for record in records:
            self.add(record)

    def add(self, record: dict[str, Any]) -> None:
        """Count one finished episode."""
        self.total += float(record["metrics"][self.key])
        self.count += 1
        self.failed += int(bool(record.get("failed")))

    def postfix(self) -> dict[str, str]:
        """The progress bar's postfix."""
        mean = f"{self.total / self.count:.3f}" if self.count else "-"
        return {self.label: mean, "failed": str(self.failed)}


def evaluate(cfg: DictConfig, agent: Any = None) -> dict[str, Any]:
    """Run the evaluation ``cfg`` describes (see ``configs/eval.yaml``) and write the results folder.
    ``agent``, when given, is used instead of building ``cfg.agent`` (the ``inprocess`` runner only).

    Returns the contents of ``metrics.json``.
    """
    validate_config(cfg)
    imports = [str(name) for name in cfg.get("imports") or []]
    import_modules(imports)
    task = get_task(str(cfg.task.get("kind", "street")))
    data_dir = task.resolve_data_dir(cfg)
    env = task.make_env(cfg, data_dir)
    todo = list(task.episodes(env))
    if cfg.limit is not None:
        todo = todo[: int(cfg.limit)]
    resolved = to_container(cfg)
    resolved["data_dir"] = str(data_dir)
    identity = run_identity(resolved, todo)
    out = Path(str(cfg.out))
    lock = _lock_run_folder(out)
    try:
        return _evaluate_locked(cfg, task, env, data_dir, resolved, imports, todo, identity, out, agent)
    finally:
        lock.release()


def _evaluate_locked(cfg: DictConfig, task: EvalTask, env: gymnasium.Env, data_dir: Path, resolved: dict[str, Any],
                     imports: list[str], todo: list[Any], identity: dict[str, Any], out: Path,
                     agent: Any = None) -> dict[str, Any]:
    """The part of :func:`evaluate` that runs while it holds the run folder's lock."""
    _check_run_folder(out, identity)
    log = out / "episodes.jsonl"
    finished = read_finished(log)
    remaining = [ep for ep in todo if ep.episode_id not in finished]
    if remaining:
        _run_remaining(cfg, task, env, data_dir, resolved, imports, remaining, finished, log, len(todo), agent)
    records = [finished[ep.episode_id] for ep in todo]
    per_episode = {k: np.array([r["metrics"][k] for r in records], dtype=np.float64) for k in task.metric_keys}
    metrics: dict[str, Any] = aggregate(per_episode) if records else {"num_episodes": 0}
    by_kind = _by_memory_kind(task, records)
    if by_kind:
        metrics["by_memory_kind"] = by_kind
    failed = [r["episode_id"] for r in records if r.get("failed")]
    metrics.update({
        "num_failed": len(failed),
        "failed_episodes": failed,
        "privileged": sorted({p for r in records for p in r.get("privileged", [])}),
        "agent_stats": _total_stats(records),
        "seed": int(cfg.seed),
        "config_hash": identity["config_hash"],
        "dataset_hash": identity["dataset_hash"],
        "versions": package_versions(),
        "git_commit": git_commit(),
        "config": resolved,
    })
    _write_json(out / "metrics.json", metrics)
    task.write_outputs(out, env, todo, records, metrics)
    return metrics


def _run_remaining(cfg: DictConfig, task: EvalTask, env: gymnasium.Env, data_dir: Path, resolved: dict[str, Any],
                   imports: list[str], remaining: list[Any], finished: dict[str, dict[str, Any]], log: Path,
                   total: int, agent: Any = None) -> None:
    """Run the unfinished episodes on the configured backend, appending each result to ``log`` (and to
    ``finished``) as it arrives."""
    runner = str(cfg.get("runner", "inprocess"))
    spec = WorkerSpec(resolved, str(data_dir), tuple(imports))
    local = EpisodeWorker(spec, env=env, agent=agent) if runner == "inprocess" else None
    backend = make_backend(runner, spec, workers=int(cfg.get("workers", 1)), ray_address=cfg.get("ray_address"),
                           local_worker=local)
    by_id = {ep.episode_id: ep for ep in remaining}
    jobs = [(ep.episode_id, episode_seed(int(cfg.seed), ep.episode_id)) for ep in remaining]
    running = _RunningMetric(task, list(finished.values()))
    desc = f"{cfg.agent.name} on {cfg.task.name}/{cfg.split} [{runner}]"
    try:
        with log.open("a", encoding="utf-8") as f, tqdm(
            total=total, initial=total - len(remaining), desc=desc, unit="ep", disable=not cfg.progress,
        ) as bar:
            bar.set_postfix(running.postfix())
            for result, attempts in run_episodes(backend, jobs, int(cfg.get("max_retries", 0))):
                if result.record is not None:
                    record = result.record if attempts == 1 else {**result.record, "attempts": attempts}
                else:
                    ep = by_id[result.episode_id]
                    record = _failed_record(task, env, ep, episode_seed(int(cfg.seed), ep.episode_id), result, attempts)
                _append_line(f, record)
                finished[result.episode_id] = record
                running.add(record)
                bar.set_postfix(running.postfix(), refresh=False)
                bar.update()
    finally:
        backend.close()


def _by_memory_kind(task: EvalTask, records: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The metrics over each ``memory_kind``'s episodes, for records that carry one (the synthetic city's
    memory split: what an episode needs remembered); empty when none does."""
    kinds = sorted({r["memory_kind"] for r in records if r.get("memory_kind")})
    out = {}
    for kind in kinds:
        mine = [r for r in records if r.get("memory_kind") == kind]
        out[kind] = aggregate({k: np.array([r["metrics"][k] for r in mine], dtype=np.float64) for k in task.metric_keys})
    return out


def _total_stats(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The sums over episodes of the agents' own counts (``agent_stats``: LLM calls, fallbacks, ...)."""
    totals: dict[str, float] = {}
    for record in records:
        for key, value in (record.get("agent_stats") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                totals[key] = totals.get(key, 0) + value
    return totals


def _write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (a temporary file renamed over ``path``)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
