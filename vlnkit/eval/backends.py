"""Where an evaluation's episodes run: in the driver process, in a pool of worker processes, or on Ray.

The runner (:mod:`vlnkit.eval.runner`) hands episodes to a backend as ``(episode_id, seed)`` jobs and
takes back one :class:`EpisodeResult` per job, in completion order; it alone writes results, retries
and scores. Every backend runs the same :class:`EpisodeWorker` (one environment and one agent, built
from the run config), so the same config and seed give the same per-episode results on each of them.

Backends (the run config's ``runner`` key, with ``workers=N``):

``inprocess``
    One worker in the driver process, sharing the driver's environment and agent.
``vector``
    ``workers`` processes, each owning an environment and an agent, started with the ``forkserver``
    method (never a plain fork, so a renderer's EGL context is never inherited by a child). Gymnasium's
    ``AsyncVectorEnv`` is not used: it steps all environments in lockstep and keeps the agents in the
    driver, so a slow agent (an LLM call, a renderer) would still run one step at a time, and it resets
    finished environments on its own where evaluation must choose each next episode.
``ray``
    ``workers`` Ray actors, each owning an environment and an agent (one CPU each). A process already
    connected to Ray uses that instance; otherwise ``ray_address`` joins that cluster, or, when it is
    null, a local one starts with ``num_cpus=workers``. Ray is shut down at the end only when this
    backend connected to it.

A job whose agent raises comes back as an error (the worker lives on); a worker process or actor that
dies comes back as an error for the job it was running and is replaced by a fresh one.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import signal
import sys
import traceback
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Protocol

import gymnasium
import numpy as np
from omegaconf import OmegaConf

import vlnkit  # noqa: F401  (registers the environments)
from vlnkit.agents import Agent, create
from vlnkit.agents.base import AgentInputError
from vlnkit.eval.tasks import EvalTask, get_task

RUNNERS = ("inprocess", "vector", "ray")
"""Names accepted by the run config's ``runner`` key."""

TRACEBACK_FRAMES = 8
"""How many innermost frames of a failed episode's traceback are kept in its record."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to build its environment and agent, as plain picklable data."""

    config: dict[str, Any]
    """The resolved run config (``to_container`` of it)."""
    data_dir: str
    """The dataset folder the driver resolved."""
    imports: tuple[str, ...] = ()
    """Modules to import first (they register custom agents)."""
    sys_path: tuple[str, ...] = field(default_factory=lambda: tuple(sys.path))
    """The driver's ``sys.path``: entries that exist on the worker's machine and that it lacks are
    appended, so modules the driver can import (custom agents) import in local workers too."""


@dataclass
class EpisodeResult:
    """The outcome of one attempt at one episode: its record, or the error that ended it."""

    episode_id: str
    record: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None
    fatal: bool = False
    """The agent refused its inputs (:class:`~vlnkit.agents.base.AgentInputError`): every episode would
    fail the same way, so the run stops instead of recording failures."""


def rollout(task: EvalTask, env: gymnasium.Env, agent: Agent, episode: Any, seed: int) -> dict[str, Any]:
    """Run one episode of ``task`` with ``agent`` in ``env``; returns the task's record of it (trace,
    actions, metrics), whether the agent stopped (rather than running out of steps) and, for agents
    that report them through an ``episode_stats()`` method (the LLM agent's calls and fallbacks), the
    agent's own counts under ``agent_stats``."""
    obs, info = env.reset(seed=seed, options={"episode_id": episode.episode_id})
    agent.reset(obs, info, seed)
    trace = [task.trace(info)]
    actions: list[int] = []
    done = terminated = False
    while not done:
        action = agent.act(obs, info if agent.uses_info else None)
        obs, _, terminated, truncated, info = env.step(action)
        actions.append(action_id(action))
        trace.append(task.trace(info))
        done = terminated or truncated
    record = {**task.finish(env, episode, trace, actions), "stopped": bool(terminated),
              "privileged": privileged_inputs(agent, env)}
    stats = getattr(agent, "episode_stats", None)
    if callable(stats):
        record["agent_stats"] = stats()
    return record


def privileged_inputs(agent: Agent, env: gymnasium.Env) -> list[str]:
    """What privileged information an episode of ``agent`` in ``env`` used: the agent's own
    ``privileged`` inputs, and the labels the environment's panorama carries when the agent reads it."""
    used = set(getattr(agent, "privileged", ()))
    if getattr(agent, "reads_panorama", False):
        used.update(getattr(env, "privileged_observations", ()))
    return sorted(used)


def action_id(action: Any) -> int:
    """The id of an agent's action: a plain id, or the ``action`` entry of a parameterised one (VLN-CE's
    ``GO_TOWARD_POINT`` as ``{"action", "distance", "angle"}``)."""
    if isinstance(action, Mapping):
        return int(np.asarray(action["action"]).reshape(-1)[0])
    return int(action)


def num_actions(space: gymnasium.Space) -> int:
    """How many action ids an action space has (a ``Dict`` space's ``action`` entry)."""
    return int(space["action"].n if isinstance(space, gymnasium.spaces.Dict) else space.n)


def limit_torch_threads(threads: int | None) -> None:
    """Cap torch's intra-op threads of this worker at ``threads`` (when torch is loaded; ``None`` leaves it).
    The agents' models are small: on a machine whose cores are shared by workers, one thread per worker
    avoids the oversubscription spikes a thread pool per process causes."""
    if threads is not None and "torch" in sys.modules:
        import torch

        torch.set_num_threads(int(threads))


def import_modules(names: Sequence[str]) -> None:
    """Import each named module (custom agents register themselves on import)."""
    for name in names:
        importlib.import_module(name)


def error_summary(err: BaseException) -> tuple[str, str]:
    """``"Type: message"`` and the innermost :data:`TRACEBACK_FRAMES` frames of ``err``'s traceback."""
    text = "".join(traceback.format_exception(err, limit=-TRACEBACK_FRAMES))
    return f"{type(err).__name__}: {err}", text


class EpisodeWorker:
    """One environment and one agent that run episodes by id (the unit every backend replicates)."""

    def __init__(self, spec: WorkerSpec, env: gymnasium.Env | None = None, agent: Agent | None = None) -> None:
        """Build from ``spec``; ``env`` and ``agent``, when given, are used instead of new ones (the
        ``inprocess`` backend shares the driver's environment)."""
        for entry in spec.sys_path:
            if entry not in sys.path and Path(entry or ".").exists():
                sys.path.append(entry)
        import_modules(spec.imports)
        cfg = OmegaConf.create(spec.config)
        self.task = get_task(str(cfg.task.get("kind", "street")))
        self.env = env if env is not None else self.task.make_env(cfg, Path(spec.data_dir))
        self.agent = agent if agent is not None else create(
            str(cfg.agent.name), cfg.agent, num_actions=num_actions(self.env.action_space)
        )
        self.episodes = {str(ep.episode_id): ep for ep in self.task.episodes(self.env)}
        limit_torch_threads(cfg.get("torch_threads"))

    def ready(self) -> bool:
        """True once built (lets a driver wait for a remote worker's construction)."""
        return True

    def run(self, episode_id: str, seed: int) -> EpisodeResult:
        """Roll out one episode; an exception of the agent or environment becomes an error result."""
        try:
            record = rollout(self.task, self.env, self.agent, self.episodes[episode_id], seed)
        except AgentInputError as err:
            return EpisodeResult(episode_id, error=str(err), fatal=True)
        except Exception as err:  # noqa: BLE001  (any failure of user code is recorded, not fatal)
            message, trace = error_summary(err)
            return EpisodeResult(episode_id, error=message, traceback=trace)
        return EpisodeResult(episode_id, record={"episode_id": episode_id, **record})


class Backend(Protocol):
    """Runs episode jobs; at most ``capacity`` are in flight at once."""

    capacity: int

    def submit(self, episode_id: str, seed: int) -> None:
        """Start a job (the caller keeps fewer than ``capacity`` in flight)."""

    def next_result(self) -> EpisodeResult:
        """Block until one in-flight job ends and return its result."""

    def close(self) -> None:
        """Stop the workers and release what the backend started."""


class InProcessBackend:
    """Runs each job in the driver process when its result is asked for."""

    capacity = 1

    def __init__(self, worker: EpisodeWorker) -> None:
        self.worker = worker
        self._pending: deque[tuple[str, int]] = deque()

    def submit(self, episode_id: str, seed: int) -> None:
        """Queue the job."""
        self._pending.append((episode_id, seed))

    def next_result(self) -> EpisodeResult:
        """Run the oldest queued job."""
        return self.worker.run(*self._pending.popleft())

    def close(self) -> None:
        """Nothing to release."""


def _pool_worker_main(conn: Connection, spec: WorkerSpec) -> None:
    """Body of a ``vector`` worker process: build, say ready, then run jobs until told to stop.

    The process ignores Ctrl-C (the driver stops it) and exits when the driver's end of the pipe
    closes, so a killed driver leaves no worker behind.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        worker = EpisodeWorker(spec)
    except Exception as err:  # noqa: BLE001  (reported to the driver, which aborts the run)
        conn.send(("init_error", error_summary(err)))
        return
    conn.send(("ready", None))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        try:
            conn.send(("result", worker.run(*job)))
        except (BrokenPipeError, EOFError):
            return


class WorkerInitError(RuntimeError):
    """A worker could not build its environment or agent; the run cannot go on."""


class ProcessPoolBackend:
    """``workers`` forkserver processes, each owning an environment and an agent (``runner=vector``)."""

    def __init__(self, spec: WorkerSpec, workers: int, start_method: str = "forkserver") -> None:
        self.spec = spec
        self.capacity = max(1, int(workers))
        self._ctx = multiprocessing.get_context(start_method)
        self._procs: list[Any] = [None] * self.capacity
        self._conns: list[Connection | None] = [None] * self.capacity
        self._jobs: list[tuple[str, int] | None] = [None] * self.capacity
        try:
            for slot in range(self.capacity):
                self._start(slot)
            for slot in range(self.capacity):
                self._await_ready(slot)
        except BaseException:
            self.close()
            raise

    def _start(self, slot: int) -> None:
        """Start the worker process of ``slot`` with a fresh pipe."""
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_pool_worker_main, args=(child, self.spec), daemon=True,
                                 name=f"vlnkit-eval-worker-{slot}")
        proc.start()
        child.close()
        self._procs[slot], self._conns[slot] = proc, parent

    def _await_ready(self, slot: int) -> None:
        """Wait until the worker of ``slot`` has built its env and agent; raise if it could not."""
        conn = self._conns[slot]
        assert conn is not None
        try:
            kind, payload = conn.recv()
        except EOFError:
            exitcode = self._procs[slot].exitcode
            raise WorkerInitError(f"eval worker {slot} exited while starting (exit code {exitcode})") from None
        if kind == "init_error":
            message, trace = payload
            raise WorkerInitError(f"eval worker {slot} could not start: {message}\n{trace}")

    def submit(self, episode_id: str, seed: int) -> None:
        """Send the job to an idle worker."""
        slot = self._jobs.index(None)
        self._jobs[slot] = (episode_id, seed)
        conn = self._conns[slot]
        assert conn is not None
        with contextlib.suppress(BrokenPipeError, OSError):  # a dead worker is reported by next_result
            conn.send((episode_id, seed))

    def next_result(self) -> EpisodeResult:
        """Wait for a busy worker to answer or die; a dead worker is replaced."""
        busy = {slot for slot, job in enumerate(self._jobs) if job is not None}
        if not busy:
            raise RuntimeError("next_result called with no job in flight")
        waitables: dict[Any, int] = {}
        for slot in busy:
            waitables[self._conns[slot]] = slot
            waitables[self._procs[slot].sentinel] = slot
        ready = wait(list(waitables))
        slot = waitables[ready[0]]
        job = self._jobs[slot]
        assert job is not None
        self._jobs[slot] = None
        conn = self._conns[slot]
        assert conn is not None
        try:
            if conn.poll():
                kind, payload = conn.recv()
                if kind == "result":
                    return payload
        except (EOFError, OSError):
            pass
        proc = self._procs[slot]
        proc.join(timeout=5)
        exitcode = proc.exitcode
        conn.close()
        self._start(slot)
        self._await_ready(slot)
        return EpisodeResult(job[0], error=f"WorkerDied: eval worker process exited with code {exitcode}")

    def close(self) -> None:
        """Ask every worker to stop, then end any that does not."""
        for conn in self._conns:
            if conn is not None:
                with contextlib.suppress(BrokenPipeError, OSError):
                    conn.send(None)
        for proc in self._procs:
            if proc is not None:
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(timeout=5)
        for conn in self._conns:
            if conn is not None:
                conn.close()
        self._procs = [None] * self.capacity
        self._conns = [None] * self.capacity


class RayBackend:
    """``workers`` Ray actors, each owning an environment and an agent (``runner=ray``)."""

    def __init__(self, spec: WorkerSpec, workers: int, address: str | None = None) -> None:
        import ray

        self._ray = ray
        self.spec = spec
        self.capacity = max(1, int(workers))
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            if address:
                ray.init(address=address)
            else:
                ray.init(num_cpus=self.capacity, include_dashboard=False)
        self._actor_class = ray.remote(num_cpus=1, max_restarts=0)(EpisodeWorker)
        self._actors: list[Any] = [self._actor_class.remote(spec) for _ in range(self.capacity)]
        self._in_flight: dict[Any, tuple[int, str]] = {}
        try:
            ray.get([actor.ready.remote() for actor in self._actors])
        except ray.exceptions.RayError as err:
            self.close()
            raise WorkerInitError(f"a Ray eval worker could not start: {err}") from err

    def submit(self, episode_id: str, seed: int) -> None:
        """Call an idle actor."""
        busy = {slot for slot, _ in self._in_flight.values()}
        slot = next(s for s in range(self.capacity) if s not in busy)
        self._in_flight[self._actors[slot].run.remote(episode_id, seed)] = (slot, episode_id)

    def next_result(self) -> EpisodeResult:
        """Wait for any call to end; an actor that died is replaced by a new one."""
        ray = self._ray
        (ref,), _ = ray.wait(list(self._in_flight), num_returns=1)
        slot, episode_id = self._in_flight.pop(ref)
        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as err:
            ray.kill(self._actors[slot], no_restart=True)
            self._actors[slot] = self._actor_class.remote(self.spec)
            return EpisodeResult(episode_id, error=f"WorkerDied: Ray actor died ({type(err).__name__})",
                                 traceback=str(err)[-2000:])
        except ray.exceptions.RayError as err:
            message, trace = error_summary(err)
            return EpisodeResult(episode_id, error=message, traceback=trace)

    def close(self) -> None:
        """Kill the actors; shut Ray down when this backend started it."""
        for actor in self._actors:
            self._ray.kill(actor, no_restart=True)
        self._actors = []
        if self._owns_ray:
            self._ray.shutdown()


def make_backend(runner: str, spec: WorkerSpec, workers: int = 1, ray_address: str | None = None,
                 local_worker: EpisodeWorker | None = None) -> Backend:
    """The backend named ``runner`` (see :data:`RUNNERS`); ``inprocess`` uses ``local_worker`` when given."""
    if runner == "inprocess":
        return InProcessBackend(local_worker or EpisodeWorker(spec))
    if runner == "vector":
        return ProcessPoolBackend(spec, workers)
    if runner == "ray":
        return RayBackend(spec, workers, ray_address)
    raise ValueError(f"unknown runner {runner!r}; expected one of {', '.join(RUNNERS)}")
