"""What the agents that own a Mem4Nav memory share: the memory built from an agent config, the release
whose panorama categories they perceive, and the encoding of a panorama view written into memory.

Agent configs name the memory the same way (``configs/agent/*.yaml`` and the ``memory`` config group):
``memory`` is the variant, named for what it holds (``none``, ``full``, ``octree_only``, ``graph_only``,
``stm_only``, ``ltm_only``, ``no_octree``, ``no_graph``, ``no_stm``, ``no_ltm``, ``oracle``; see
:meth:`vlnkit.memory.Mem4NavConfig.variant`; the old names ``stm``, ``ltm``, ``octree`` and ``graph`` are
refused with the names of their contents now), ``memory_overrides`` sets any other
:class:`~vlnkit.memory.Mem4NavConfig` key (``{stm: {capacity: 32}, ltm: {top_m: 5}, tau: 0.8, graph:
{delta: 0.5}}``), ``memory_seed`` seeds the LTM model's initialisation and ``ltm_weights`` loads trained
LTM weights. Those weights must be for the agent's embedding and descriptor sizes and LTM settings:
``vlnkit train ltm agent=NAME`` trains them for agent ``NAME`` (:func:`agent_memory` gives the memory and
codec it trains for), and weights of other sizes are refused with an error naming both.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from vlnkit.memory import Mem4NavConfig, Mem4NavMemory


def release_dir(cfg: DictConfig | Mapping[str, Any]) -> Path:
    """The street release an agent config points at: ``release_dir`` when set, else the built-in synthetic
    city ``(city_seed, city_size)``."""
    release = cfg.get("release_dir")
    if release:
        return Path(str(release)).expanduser()
    from vlnkit.envs.synth import default_city

    return default_city(int(cfg.get("city_seed", 0) or 0), str(cfg.get("city_size", "small") or "small"))


@lru_cache(maxsize=8)
def _scene_categories(scene: str) -> tuple[str, ...]:
    from vlnkit.envs.street.panorama import SceneFeatureSource

    return tuple(SceneFeatureSource(scene).categories)


def feature_categories(release: str | Path) -> list[str]:
    """Names of the panorama feature columns of a release (the categories of its ``graph/scene.jsonl``)."""
    scene = Path(release).expanduser() / "graph" / "scene.jsonl"
    if not scene.is_file():
        raise FileNotFoundError(f"{scene} does not exist: the agent needs the release's scene file for its categories")
    return list(_scene_categories(str(scene.resolve())))


def build_memory(variant: str, dim: int, overrides: Mapping[str, Any] | None = None, seed: int = 0,
                 ltm_weights: str | Path | None = None, descriptor_dim: int | None = None,
                 agent: str | None = None) -> Mem4NavMemory:
    """A Mem4Nav memory of the named variant for embeddings of size ``dim`` (graph descriptors of size
    ``descriptor_dim``, default ``dim``); ``overrides`` set other config keys; the LTM model is initialised
    from ``seed`` and loads ``ltm_weights`` when given (``agent`` names the owner in the error for weights
    of other sizes)."""
    settings = {**dict(overrides or {}), "dim": int(dim)}
    if descriptor_dim is not None:
        settings["descriptor_dim"] = int(descriptor_dim)
    config = Mem4NavConfig.variant(variant, **settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        memory = Mem4NavMemory(config)
    if ltm_weights and memory.ltm is not None:
        memory.load_ltm_weights(Path(str(ltm_weights)).expanduser(), agent)
    return memory


def memory_from_config(cfg: DictConfig | Mapping[str, Any], dim: int,
                       descriptor_dim: int | None = None) -> Mem4NavMemory:
    """The memory an agent config describes (keys ``memory``, ``memory_overrides``, ``memory_seed``,
    ``ltm_weights``; ``name`` is the agent's)."""
    overrides = cfg.get("memory_overrides") or {}
    if isinstance(overrides, DictConfig):
        overrides = OmegaConf.to_container(overrides, resolve=True)
    return build_memory(
        str(cfg.get("memory", "full")),
        dim,
        overrides,
        int(cfg.get("memory_seed", 0) or 0),
        cfg.get("ltm_weights"),
        descriptor_dim,
        cfg.get("name"),
    )


class MemoryCodec(Protocol):
    """Panorama features -> the vectors a memory agent writes: an embedding of size ``dim`` and a graph
    descriptor of size ``descriptor_dim`` (:class:`ViewCodec`, the LLM agent's flat codec)."""

    @property
    def dim(self) -> int:
        """Embedding size."""

    @property
    def descriptor_dim(self) -> int:
        """Descriptor size."""

    def embed(self, panorama: np.ndarray, heading: float) -> np.ndarray:
        """The memory embedding of a view seen at ``heading``."""

    def descriptor(self, panorama: np.ndarray, heading: float) -> np.ndarray:
        """The graph descriptor of a view seen at ``heading``."""


def agent_memory(agent: Any) -> tuple[Mem4NavMemory, MemoryCodec]:
    """The Mem4Nav memory an agent owns and the codec it writes its views with: its ``memory`` and
    ``codec`` (the modular agent keeps both in its ``map``). Raises ``ValueError`` for an agent without
    a memory (a baseline, or the LLM agent on a release without panorama categories)."""
    owner = getattr(agent, "map", agent)
    memory, codec = getattr(owner, "memory", None), getattr(owner, "codec", None)
    if not isinstance(memory, Mem4NavMemory) or codec is None:
        raise ValueError(f"the agent {type(agent).__name__} owns no Mem4Nav memory: name a memory agent "
                         "(modular, policy or llm, on a release with panorama categories)")
    return memory, codec


def heading_shift(heading: float, sectors: int) -> int:
    """How many sectors an egocentric sector array is rolled from the north-aligned one (the rounding of
    :class:`vlnkit.envs.street.panorama.SceneFeatureSource`)."""
    return int((float(heading) % 360.0) * sectors / 360.0 + 0.5) % sectors


class ViewCodec:
    """Panorama sector features <-> memory vectors.

    An observation's panorama is ``(sectors, categories)`` with sector 0 facing the agent's heading. The
    memory **embedding** is the north-aligned view (so a place looks the same from any heading, and a
    revisit from the other direction still matches by cosine) followed by ``heading_weight`` times a
    one-hot code of the heading's sector (so the egocentric view, and with it which side a landmark was
    on, can be decoded back). The graph **descriptor** is the north-aligned view alone.
    """

    def __init__(self, sectors: int, categories: int, heading_weight: float = 0.3) -> None:
        self.sectors = int(sectors)
        self.categories = int(categories)
        self.heading_weight = float(heading_weight)

    @property
    def dim(self) -> int:
        """Embedding size: the view plus the heading code."""
        return self.sectors * self.categories + self.sectors

    @property
    def descriptor_dim(self) -> int:
        """Descriptor size: the view."""
        return self.sectors * self.categories

    def absolute(self, panorama: np.ndarray, heading: float) -> np.ndarray:
        """The north-aligned ``(sectors, categories)`` view of an egocentric panorama."""
        view = np.asarray(panorama, dtype=np.float32).reshape(self.sectors, self.categories)
        return np.roll(view, heading_shift(heading, self.sectors), axis=0)

    def embed(self, panorama: np.ndarray, heading: float) -> np.ndarray:
        """The memory embedding of a view seen at ``heading``."""
        code = np.zeros(self.sectors, dtype=np.float32)
        code[heading_shift(heading, self.sectors)] = self.heading_weight
        return np.concatenate([self.absolute(panorama, heading).reshape(-1), code])

    def descriptor(self, panorama: np.ndarray, heading: float) -> np.ndarray:
        """The graph descriptor (north-aligned view, flattened)."""
        return self.absolute(panorama, heading).reshape(-1)

    def egocentric(self, embedding: np.ndarray) -> np.ndarray:
        """The egocentric ``(sectors, categories)`` view an embedding was made from (at its own scale)."""
        embedding = np.asarray(embedding, dtype=np.float32).reshape(-1)
        view = embedding[: self.descriptor_dim].reshape(self.sectors, self.categories)
        shift = int(np.argmax(embedding[self.descriptor_dim:]))
        return np.roll(view, -shift, axis=0)


def load_agent_config(name: str, cfg: DictConfig | Mapping[str, Any] | None = None) -> DictConfig:
    """``configs/agent/<name>.yaml`` with ``cfg`` merged over it (unknown keys raise, except inside
    ``memory_overrides``, which :class:`~vlnkit.memory.Mem4NavConfig` checks)."""
    from vlnkit.config import config_dir

    defaults = OmegaConf.load(Path(config_dir()) / "agent" / f"{name}.yaml")
    OmegaConf.set_struct(defaults, True)
    OmegaConf.set_struct(defaults.memory_overrides, False)
    given = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})
    merged = OmegaConf.merge(defaults, given)
    OmegaConf.resolve(merged)
    return merged
