"""Pre-training the long-term memory (mem4nav.md, training stage 2) on recorded trajectories.

A trajectory is the sequence of observation embeddings an agent saw and the positions it saw them at
(:class:`Trajectory`). :func:`train_ltm` optimises the :class:`~vlnkit.memory.ltm.LTMModel` with AdamW
(lr 1e-3, linear warm-up then cosine decay) on three terms, each with a weight in :class:`LTMTrainConfig`:

* cycle: ``|| d - descriptor_head(second half of R^-1(R([theta ; v]))) ||^2`` (mem4nav.md's cycle loss),
  with ``d`` the observation's graph descriptor: the embedding ``v`` itself unless the trajectory carries
  descriptors (the modular and policy agents describe a place by its view without their heading code);
* position: ``position_head`` of the same ``v_hat`` against the place's position (scaled by
  ``position_scale``);
* retrieval: an InfoNCE loss that pulls the query ``MLP([v_j ; p_j])`` of an observation ``j`` toward the
  token written for another observation ``i`` of the same place (same trajectory, positions within
  ``place_size``: a revisit, or the same spot seen at another heading) and away from the other tokens in
  the batch, with logits ``-||q - token||^2 / temperature``. A batch holds ``places_per_trajectory``
  places from each of a few trajectories, so the negatives include the other places of the same walk,
  the tokens a read at a revisit must tell apart. Without this loss the query network is never trained
  and LTM reads return arbitrary tokens; set its weight to 0 for the cycle loss alone.

The defaults are measured (``vlnkit bench ltm_recall``, recall@3 at the revisits of 100 dev gold routes
of the synthetic city, modular agent, 600 steps): mem4nav.md's lr 1e-4 with temperature 0.1 reaches 0.14
(chance 0.12, untrained 0.16); lr 1e-3 0.82; lr 1e-3 with temperature 10 0.97; the same with the
positives of a time window of ``max_offset`` steps instead of the same place 0.23.

Checkpoints (model, optimiser, schedule, step, dimensions and configs) are written atomically every
``checkpoint_every`` steps and at the end, and read back with ``torch.load(weights_only=True)``;
:meth:`Mem4NavMemory.load_ltm_weights` loads one into a memory after :func:`read_ltm_checkpoint` has checked
that its embedding size, descriptor size and LTM model settings are the memory's.

`vlnkit train ltm` (:func:`train_agent_ltm`) trains for the memory of a named agent (modular, policy, llm):
it builds the agent as `vlnkit eval` does, takes the sizes and LTM settings of the agent's memory, and
embeds the rollouts with the agent's own codec (:func:`agent_memory_layout`), so the checkpoint loads into
that agent (``agent.ltm_weights=PATH``).

Default observation encoder: :class:`RandomProjectionEncoder`, a fixed seeded Gaussian projection of the
observation's panorama (an image is first area-pooled to a small grid; a precomputed feature vector is
used as it is) followed by L2 normalisation. It is the default because nothing here may download weights
and none ship with the installed packages, because it accepts both kinds of panorama the street
environments produce, and because a random projection approximately preserves Euclidean distances
(Johnson-Lindenstrauss), so views that look alike stay close, which is the property memory matching and
retrieval rely on. Any callable from an observation to a vector can replace it (a backbone from
``vlnkit.perception``, a CLIP model where the user has weights).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from vlnkit.memory.checkpoint import load_torch, save_torch
from vlnkit.memory.ltm import LTMConfig, LTMModel

ObservationEncoder = Callable[[Any], np.ndarray]

MODEL_SETTINGS = ("depth", "heads", "seq_len", "head_dim", "mlp_ratio", "hidden", "position_scale", "history_decay")
"""The :class:`LTMConfig` fields that shape the LTM model's weights or what they mean (the others set
retrieval and indexing only); a checkpoint loads only into an LTM with the same values."""


@dataclass(frozen=True)
class Trajectory:
    """Observation embeddings ``(T, dim)``, the world positions ``(T, 3)`` they were seen at and, where the
    memory's graph descriptors are not the embeddings themselves, the descriptors ``(T, descriptor_dim)``."""

    embeddings: np.ndarray
    positions: np.ndarray
    descriptors: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.embeddings) != len(self.positions):
            raise ValueError("a trajectory needs one position per embedding")
        if self.descriptors is not None and len(self.descriptors) != len(self.embeddings):
            raise ValueError("a trajectory needs one descriptor per embedding")


class RandomProjectionEncoder:
    """Observation -> unit vector: area-pool the panorama, flatten, fixed Gaussian projection, normalise.

    ``key`` picks the panorama out of a dict observation (an array observation is used directly);
    ``grid`` is the pooled image size (rows, columns); the projection is drawn from ``seed`` the first time
    an input size is seen, so the same encoder maps the same observation to the same vector.
    """

    def __init__(self, dim: int = 128, key: str = "panorama", grid: tuple[int, int] = (8, 32), seed: int = 0) -> None:
        self.dim, self.key, self.grid, self.seed = dim, key, grid, seed
        self._projections: dict[int, np.ndarray] = {}

    def __call__(self, observation: Any) -> np.ndarray:
        data = observation[self.key] if isinstance(observation, dict) else observation
        array = np.asarray(data, dtype=np.float32)
        if array.ndim == 3:
            image = torch.from_numpy(array).permute(2, 0, 1)[None]
            array = F.adaptive_avg_pool2d(image, self.grid).numpy()
        flat = array.reshape(-1)
        projection = self._projections.get(flat.size)
        if projection is None:
            rng = np.random.default_rng(self.seed)
            projection = rng.standard_normal((flat.size, self.dim)).astype(np.float32) / math.sqrt(flat.size)
            self._projections[flat.size] = projection
        vector = (flat - flat.mean()) @ projection
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector


def encode_trajectory(
    observations: Iterable[Any],
    encoder: ObservationEncoder | None = None,
    position_key: str = "position",
    dim: int = 128,
    describe: ObservationEncoder | None = None,
) -> Trajectory:
    """Embed dict observations with ``encoder`` (default :class:`RandomProjectionEncoder`), describe them with
    ``describe`` when given (else the descriptors are the embeddings) and take their ``position_key``
    entries (2-D positions get z = 0)."""
    encoder = encoder or RandomProjectionEncoder(dim)
    embeddings, descriptors, positions = [], [], []
    for observation in observations:
        embeddings.append(np.asarray(encoder(observation), dtype=np.float32))
        if describe is not None:
            descriptors.append(np.asarray(describe(observation), dtype=np.float32))
        position = np.zeros(3)
        raw = np.asarray(observation[position_key], dtype=np.float64).reshape(-1)
        position[: len(raw)] = raw
        positions.append(position)
    return Trajectory(np.stack(embeddings), np.stack(positions), np.stack(descriptors) if descriptors else None)


@dataclass
class LTMTrainConfig:
    """Optimisation settings for :func:`train_ltm`."""

    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    max_offset: int = 2
    cycle_weight: float = 1.0
    position_weight: float = 0.1
    retrieval_weight: float = 1.0
    temperature: float = 10.0
    place_size: float = 1.0
    places_per_trajectory: int = 16
    checkpoint_every: int = 500
    seed: int = 0


def train_ltm(
    trajectories: Iterable[Trajectory],
    checkpoint: str | Path,
    dim: int | None = None,
    descriptor_dim: int | None = None,
    ltm_config: LTMConfig | None = None,
    config: LTMTrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, float]:
    """Train an LTM model on ``trajectories``, writing checkpoints to ``checkpoint``; returns final losses.

    ``dim`` defaults to the embedding size of the data, ``descriptor_dim`` to its descriptor size (the
    embedding size for trajectories without descriptors). With ``resume`` an existing checkpoint is
    continued; it must have been trained for the same sizes and LTM model settings.
    """
    config = config or LTMTrainConfig()
    ltm_config = ltm_config or LTMConfig()
    data = _Samples([t for t in trajectories if len(t.embeddings) >= 2], config.place_size)
    dim = dim or data.embeddings.shape[1]
    descriptor_dim = descriptor_dim or data.descriptors.shape[1]
    if data.embeddings.shape[1] != dim:
        raise ValueError(f"embeddings have size {data.embeddings.shape[1]}, expected {dim}")
    if data.descriptors.shape[1] != descriptor_dim:
        raise ValueError(f"descriptors have size {data.descriptors.shape[1]}, expected {descriptor_dim}")
    torch.manual_seed(config.seed)
    model = LTMModel(dim, descriptor_dim, ltm_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(config.warmup_steps, config.steps))
    start = 0
    checkpoint = Path(checkpoint)
    if resume and checkpoint.exists():
        state = read_ltm_checkpoint(checkpoint, dim, descriptor_dim, ltm_config, "this training run",
                                    "write to another out= or set resume=false to start it over")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start = int(state["step"])
    rng = np.random.default_rng(config.seed + start)
    losses: dict[str, float] = {}
    model.train()
    bar = tqdm(range(start, config.steps), desc="ltm", disable=not progress, initial=start, total=config.steps)
    for step in bar:
        batch = data.batch(rng, config.batch_size, config.max_offset, config.places_per_trajectory)
        terms = _losses(model, batch, config)
        total = sum(terms[name] * getattr(config, f"{name}_weight") for name in terms)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        schedule.step()
        losses = {name: value.item() for name, value in terms.items()} | {"total": total.item()}
        bar.set_postfix({name: f"{value:.4f}" for name, value in losses.items()})
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            _save(checkpoint, model, optimizer, schedule, step + 1, dim, descriptor_dim, ltm_config, config)
    return losses


def _losses(model: LTMModel, batch: dict[str, torch.Tensor], config: LTMTrainConfig) -> dict[str, torch.Tensor]:
    previous = model.write(None, batch["previous"])
    tokens = model.write(previous, batch["embeddings"])
    _, position, descriptor = model.decode(model.r.inverse(tokens))
    cycle = F.mse_loss(descriptor, batch["descriptors"])
    position_loss = F.smooth_l1_loss(position / model.position_scale, batch["positions"] / model.position_scale)
    queries = model.query(batch["query_embeddings"], batch["query_positions"])
    logits = -torch.cdist(queries, tokens).pow(2) / config.temperature
    retrieval = F.cross_entropy(logits, torch.arange(len(tokens)))
    return {"cycle": cycle, "position": position_loss, "retrieval": retrieval}


class _Samples:
    """All trajectories concatenated, with the bounds of each and each row's place, for sampling batches."""

    def __init__(self, trajectories: Sequence[Trajectory], place_size: float = 1.0) -> None:
        if not trajectories:
            raise ValueError("train_ltm needs at least one trajectory with two or more steps")
        self.embeddings = np.concatenate([np.asarray(t.embeddings, dtype=np.float32) for t in trajectories])
        self.descriptors = np.concatenate([
            np.asarray(t.embeddings if t.descriptors is None else t.descriptors, dtype=np.float32) for t in trajectories
        ])
        self.positions = np.concatenate([np.asarray(t.positions, dtype=np.float32) for t in trajectories])
        lengths = np.array([len(t.embeddings) for t in trajectories])
        ends = np.cumsum(lengths)
        self.start = np.repeat(ends - lengths, lengths)
        self.end = np.repeat(ends, lengths)
        # Rows of each (trajectory, place): places are cells of ``place_size`` metres within a trajectory.
        trajectory = np.repeat(np.arange(len(trajectories)), lengths)
        cells = np.floor(self.positions / max(place_size, 1e-9)).astype(np.int64)
        _, self.place = np.unique(np.column_stack([trajectory, cells]), axis=0, return_inverse=True)
        self.place = self.place.reshape(-1)
        order = np.argsort(self.place, kind="stable")
        self.place_rows = np.split(order, np.flatnonzero(np.diff(self.place[order])) + 1)
        self.trajectory_places = [np.unique(self.place[lo:hi]) for lo, hi in zip(ends - lengths, ends)]

    def batch(self, rng: np.random.Generator, size: int, max_offset: int,
              places_per_trajectory: int = 16) -> dict[str, torch.Tensor]:
        """For distinct places (``places_per_trajectory`` from each of a few trajectories): a write ``i``,
        a query ``j`` at the same place (another row where there is one) and an earlier write ``k`` near
        ``i``, whose view becomes ``i``'s state."""
        places: list[int] = []
        while len(places) < size:
            pool = self.trajectory_places[int(rng.integers(len(self.trajectory_places)))]
            take = min(len(pool), places_per_trajectory, size - len(places))
            places.extend(rng.choice(pool, take, replace=False).tolist())
        i = np.empty(len(places), dtype=np.int64)
        j = np.empty(len(places), dtype=np.int64)
        for n, place in enumerate(places):
            rows = self.place_rows[place]
            if len(rows) == 1:
                i[n] = j[n] = rows[0]
            else:
                i[n], j[n] = rng.choice(rows, 2, replace=False)
        k = self._neighbour(rng, i, max_offset)
        return {
            "embeddings": torch.from_numpy(self.embeddings[i]),
            "descriptors": torch.from_numpy(self.descriptors[i]),
            "positions": torch.from_numpy(self.positions[i]),
            "previous": torch.from_numpy(self.embeddings[k]),
            "query_embeddings": torch.from_numpy(self.embeddings[j]),
            "query_positions": torch.from_numpy(self.positions[j]),
        }

    def _neighbour(self, rng: np.random.Generator, i: np.ndarray, max_offset: int) -> np.ndarray:
        offsets = rng.integers(-max_offset, max_offset + 1, len(i))
        return np.clip(i + offsets, self.start[i], self.end[i] - 1)


def _warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _save(
    path: Path,
    model: LTMModel,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    dim: int,
    descriptor_dim: int,
    ltm_config: LTMConfig,
    config: LTMTrainConfig,
) -> None:
    save_torch(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "step": step,
            "dim": dim,
            "descriptor_dim": descriptor_dim,
            "ltm_config": asdict(ltm_config),
            "train_config": asdict(config),
        },
        path,
    )


def read_ltm_checkpoint(
    path: str | Path, dim: int, descriptor_dim: int, ltm_config: LTMConfig, loader: str, remedy: str
) -> dict[str, Any]:
    """A checkpoint written by :func:`train_ltm`, checked to be for embeddings of size ``dim``, descriptors
    of size ``descriptor_dim`` and the :data:`MODEL_SETTINGS` of ``ltm_config``.

    Anything else raises a one-line ``ValueError`` naming the file, each value it holds against the one
    ``loader`` (who reads it, e.g. "the modular agent's memory") expects, and ``remedy`` (how to get a
    matching one), instead of the size-mismatch dump of ``load_state_dict``.
    """
    state = load_torch(path)
    needed = ("model", "dim", "descriptor_dim", "ltm_config")
    if not isinstance(state, dict) or any(key not in state for key in needed):
        raise ValueError(f"{path} is not an LTM checkpoint of `vlnkit train ltm` (it needs the entries "
                         f"{', '.join(needed)}); {remedy}")
    saved = state["ltm_config"]
    found = {"dim": state["dim"], "descriptor_dim": state["descriptor_dim"],
             **{f"ltm.{name}": saved.get(name) for name in MODEL_SETTINGS}}
    expected = {"dim": dim, "descriptor_dim": descriptor_dim,
                **{f"ltm.{name}": getattr(ltm_config, name) for name in MODEL_SETTINGS}}
    wrong = [f"{key} is {found[key]} in the file, {loader} expects {value}"
             for key, value in expected.items() if found[key] != value]
    if wrong:
        raise ValueError(f"{path} holds LTM weights for a different memory: {'; '.join(wrong)}; {remedy}")
    return state


def collect_street_trajectories(
    data_dir: str | Path | None = None,
    split: str = "train",
    episodes: int | None = None,
    seed: int = 0,
    encoder: ObservationEncoder | None = None,
    dim: int = 128,
    progress: bool = True,
    describe: ObservationEncoder | None = None,
    teacher: str = "oracle",
) -> list[Trajectory]:
    """Trajectories for LTM pre-training: the rollouts of ``teacher`` on a street split, ``oracle`` (the
    shortest path to the goal) or ``gold`` (the episode's reference route, with its loops and returns).

    ``data_dir`` is a release folder (default: the built-in synthetic city, whose scene features give
    the observations content); every record kind of the split is used. The release needs a panorama
    source the environment finds by itself (a scene description), since the encoders read the panorama.
    Observations are embedded with ``encoder`` (default: :class:`RandomProjectionEncoder` of size ``dim``)
    and described with ``describe`` (default: no descriptors, the embeddings stand for them). Positions
    are the environment's metric (east, north) positions with z = 0.
    """
    import gymnasium

    import vlnkit  # noqa: F401  (registers the environments)

    if data_dir is None:
        from vlnkit.envs.synth import default_city

        data_dir = default_city()
    env = gymnasium.make("vlnkit/Touchdown-v0", data_dir=data_dir, split=split, episode_kinds="all").unwrapped
    encoder = encoder or RandomProjectionEncoder(dim)
    chosen = env.episodes if episodes is None else env.episodes[:episodes]
    trajectories = []
    for ep in tqdm(chosen, desc="collect", unit="ep", disable=not progress):
        obs, info = env.reset(seed=seed, options={"episode_id": ep.episode_id})
        seen = [obs]
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(info[f"{teacher}_action"])
            seen.append(obs)
            done = terminated or truncated
        trajectories.append(encode_trajectory(seen, encoder, dim=dim, describe=describe))
    return trajectories


@dataclass(frozen=True)
class MemoryLayout:
    """What an LTM is trained for: a memory's embedding and descriptor sizes and LTM settings, and the
    functions that turn an observation into the embedding and the descriptor that memory is written with."""

    dim: int
    descriptor_dim: int
    ltm: LTMConfig
    embed: ObservationEncoder
    describe: ObservationEncoder


def agent_memory_layout(agent_cfg: Mapping[str, Any]) -> MemoryLayout:
    """The layout of the memory of the agent ``agent_cfg`` describes (its ``name`` and settings, as the
    ``agent`` node of a composed config that `vlnkit eval` hands to :func:`vlnkit.agents.create`).

    The agent is built (without ``ltm_weights``) and its memory and codec are read, so the sizes are
    exactly those the agent derives (from the release's categories, its sectors and heading code, the
    policy checkpoint) and the LTM settings those of its ``memory_overrides``.
    """
    from vlnkit.agents import create
    from vlnkit.agents.memory_support import agent_memory

    settings = OmegaConf.to_container(agent_cfg, resolve=True) if isinstance(agent_cfg, DictConfig) else dict(agent_cfg)
    memory, codec = agent_memory(create(str(settings["name"]), {**settings, "ltm_weights": None}))

    def view(observation: Mapping[str, Any]) -> tuple[np.ndarray, float]:
        heading = float(np.asarray(observation["heading"]).reshape(-1)[0])
        return np.asarray(observation["panorama"], dtype=np.float32), heading

    return MemoryLayout(
        memory.config.dim,
        memory.descriptor_dim,
        memory.config.ltm,
        lambda observation: codec.embed(*view(observation)),
        lambda observation: codec.descriptor(*view(observation)),
    )


def train_agent_ltm(cfg: DictConfig) -> dict[str, Any]:
    """`vlnkit train ltm` (``configs/train_ltm.yaml``): train an LTM for the memory of the agent ``cfg.agent``
    on oracle rollouts embedded as that agent embeds them; returns the checkpoint path, the agent, the
    sizes, the number of trajectories and the final losses."""
    layout = agent_memory_layout(cfg.agent)
    trajectories = collect_street_trajectories(
        cfg.data_dir, str(cfg.split), cfg.episodes, int(cfg.seed), layout.embed, progress=bool(cfg.progress),
        describe=layout.describe, teacher=str(cfg.get("teacher", "gold")),
    )
    settings = LTMTrainConfig(**OmegaConf.to_container(cfg.train), seed=int(cfg.seed))
    losses = train_ltm(trajectories, cfg.out, layout.dim, layout.descriptor_dim, layout.ltm, settings,
                       resume=bool(cfg.resume), progress=bool(cfg.progress))
    return {"checkpoint": str(cfg.out), "agent": str(cfg.agent.name), "dim": layout.dim,
            "descriptor_dim": layout.descriptor_dim, "trajectories": len(trajectories), **losses}
