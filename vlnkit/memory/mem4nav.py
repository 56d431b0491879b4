"""Mem4NavMemory: the memory an agent owns (octree + topology graph + short- and long-term memory).

Per step an agent calls :meth:`Mem4NavMemory.write` with its observation embedding and pose and
:meth:`Mem4NavMemory.retrieve` to read memory for the current observation. A write

1. records the visit in the octree leaf holding the position (visit count, last embedding);
2. matches or creates the topology node for the descriptor and links it from the previous node;
3. caches the entry in the STM, relative to the current node;
4. writes the embedding into the LTM tokens of the leaf (key: its Morton code, >= 0) and of the node
   (key: ``-(node + 1)``).

A retrieval asks the STM first and uses it when it has hits whose best cosine is at least ``tau``;
otherwise it reads the LTM's ``top_m`` tokens (mem4nav.md). Each part has a switch in
:class:`Mem4NavConfig`, and :meth:`Mem4NavConfig.variant` names the ablations (``full``, ``none``,
``stm``, ``ltm``, ``octree``, ``graph``), so an ablation is a configuration, never a code change.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from vlnkit.memory import morton
from vlnkit.memory.checkpoint import load_torch, save_text, save_torch
from vlnkit.memory.graph import TopologyGraph
from vlnkit.memory.ltm import LongTermMemory, LTMConfig, LTMReadout
from vlnkit.memory.octree import Leaf, SparseOctree
from vlnkit.memory.stm import ShortTermMemory, STMHits
from vlnkit.memory.train import read_ltm_checkpoint

STATE_FILE = "memory.pt"
CONFIG_FILE = "config.json"
_FORMAT = 1


@dataclass
class OctreeConfig:
    """Leaf edge in metres and number of indexed coarser levels (see :class:`SparseOctree`)."""

    leaf_size: float = 1.0
    depth: int = morton.MAX_LEVEL


@dataclass
class GraphConfig:
    """Node-creation threshold ``delta``, edge-weight coefficients and matching radius (metres)."""

    delta: float = 0.6
    alpha: float = 1.0
    beta: float = 0.5
    match_radius: float | None = 30.0


@dataclass
class STMConfig:
    """Capacity ``K``, retrieval radius ``eps`` (metres), ``top_k`` and eviction weight ``lam``."""

    capacity: int = 128
    eps: float = 3.0
    top_k: int = 3
    lam: float = 0.5


_VARIANTS: dict[str, dict[str, bool]] = {
    "full": dict(use_octree=True, use_graph=True, use_stm=True, use_ltm=True),
    "none": dict(use_octree=False, use_graph=False, use_stm=False, use_ltm=False),
    "stm": dict(use_octree=False, use_graph=False, use_stm=True, use_ltm=False),
    "ltm": dict(use_octree=True, use_graph=True, use_stm=False, use_ltm=True),
    "octree": dict(use_octree=True, use_graph=False, use_stm=True, use_ltm=True),
    "graph": dict(use_octree=False, use_graph=True, use_stm=True, use_ltm=True),
}


@dataclass
class Mem4NavConfig:
    """Everything that shapes a :class:`Mem4NavMemory`; ``use_*`` switch the parts on and off.

    ``dim`` is the observation-embedding size; ``descriptor_dim`` the graph-descriptor size (defaults to
    ``dim``: the embedding is the descriptor unless :meth:`Mem4NavMemory.write` is given one);
    ``normalize_descriptors`` L2-normalises descriptors before matching (``delta`` is then a chord
    distance on the unit sphere); ``tau`` is the STM cosine needed to skip the LTM.
    """

    dim: int = 128
    descriptor_dim: int | None = None
    use_octree: bool = True
    use_graph: bool = True
    use_stm: bool = True
    use_ltm: bool = True
    tau: float = 0.7
    normalize_descriptors: bool = True
    octree: OctreeConfig = field(default_factory=OctreeConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    stm: STMConfig = field(default_factory=STMConfig)
    ltm: LTMConfig = field(default_factory=LTMConfig)

    def __post_init__(self) -> None:
        if self.use_ltm and not (self.use_octree or self.use_graph):
            raise ValueError("the LTM keys its tokens by octree leaves and graph nodes: enable one of them")

    @staticmethod
    def variants() -> list[str]:
        """Names accepted by :meth:`variant`."""
        return list(_VARIANTS)

    @classmethod
    def variant(cls, name: str, **overrides: Any) -> Mem4NavConfig:
        """The config of a named ablation (``full``, ``none``, ``stm``, ``ltm``, ``octree``, ``graph``)."""
        if name not in _VARIANTS:
            raise ValueError(f"unknown memory variant {name!r}; choose from {', '.join(_VARIANTS)}")
        return cls.from_dict({**_VARIANTS[name], **overrides})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Mem4NavConfig:
        """Build from plain (e.g. YAML/OmegaConf) data; nested sections may be dicts or dataclasses."""
        sections = {"octree": OctreeConfig, "graph": GraphConfig, "stm": STMConfig, "ltm": LTMConfig}
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown memory config keys: {sorted(unknown)}")
        values = dict(data)
        for name, section in sections.items():
            if isinstance(values.get(name), dict):
                values[name] = section(**values[name])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested data (round-trips through :meth:`from_dict`)."""
        return asdict(self)


@dataclass(frozen=True)
class MemoryWrite:
    """What one :meth:`Mem4NavMemory.write` touched: the leaf code and node id (``None`` for parts off)."""

    leaf: int | None
    node: int | None


@dataclass(frozen=True)
class Retrieval:
    """Memory returned for a query, best first.

    ``source`` is ``"stm"``, ``"ltm"`` or ``"none"``. ``scores`` are cosine similarities with the query
    embedding. ``positions`` are world positions: for STM entries their stored pose, for LTM tokens the
    position decoded from the token; ``anchors`` are where the keys themselves are (the leaf centre or the
    node's running-mean position). ``keys`` are leaf codes (>= 0) or node keys (< 0). ``tokens``,
    ``descriptors`` and ``distances`` (token-space L2) come with LTM results; ``object_ids`` and ``steps``
    with STM results; the others are ``None``.
    """

    source: str
    keys: np.ndarray
    embeddings: np.ndarray
    positions: np.ndarray
    anchors: np.ndarray
    scores: np.ndarray
    tokens: np.ndarray | None = None
    descriptors: np.ndarray | None = None
    distances: np.ndarray | None = None
    object_ids: np.ndarray | None = None
    steps: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.keys)


def node_key(node: int) -> int:
    """LTM key of topology node ``node`` (negative, disjoint from the leaf codes)."""
    return -(int(node) + 1)


def key_node(key: int) -> int | None:
    """Topology node of an LTM key, or ``None`` for a leaf key."""
    return -int(key) - 1 if key < 0 else None


class Mem4NavMemory:
    """Octree, topology graph, STM and LTM behind one write/retrieve interface (parts switched by config)."""

    def __init__(self, config: Mem4NavConfig | None = None) -> None:
        self.config = config or Mem4NavConfig()
        c = self.config
        self.descriptor_dim = c.descriptor_dim or c.dim
        self.octree = SparseOctree(c.octree.leaf_size, c.octree.depth, embedding_dim=c.dim) if c.use_octree else None
        self.graph = (
            TopologyGraph(self.descriptor_dim, c.graph.delta, c.graph.alpha, c.graph.beta, c.graph.match_radius)
            if c.use_graph
            else None
        )
        self.stm = ShortTermMemory(c.dim, c.stm.capacity, c.stm.eps, c.stm.top_k, c.stm.lam) if c.use_stm else None
        self.ltm = LongTermMemory(c.dim, self.descriptor_dim, c.ltm) if c.use_ltm else None
        self.writes = 0

    def reset(self) -> None:
        """Empty every part for a new episode (the LTM model's weights stay)."""
        for part in (self.octree, self.graph, self.stm, self.ltm):
            if part is not None:
                part.clear()
        self.writes = 0

    def write(
        self,
        embedding: np.ndarray,
        position: np.ndarray,
        step: int,
        descriptor: np.ndarray | None = None,
        instruction_cost: float = 0.0,
        object_id: int = -1,
    ) -> MemoryWrite:
        """Store one observation: ``embedding`` ``(dim,)`` seen at world ``position`` ``(3,)`` at ``step``.

        ``descriptor`` (default: the embedding) drives the topology graph; ``instruction_cost`` enters the
        weight of the edge this step may create; ``object_id`` tells apart STM entries at the same leaf.
        """
        c = self.config
        v = np.asarray(embedding, dtype=np.float32).reshape(c.dim)
        p = np.asarray(position, dtype=np.float64).reshape(3)
        self.writes += 1
        leaf = self._leaf_code(p)
        if self.octree is not None:
            self.octree.visit(leaf, v, step)
        node = None
        if self.graph is not None:
            d = v if descriptor is None else np.asarray(descriptor, dtype=np.float32).reshape(self.descriptor_dim)
            if c.normalize_descriptors:
                norm = float(np.sqrt(d @ d))
                d = d / norm if norm > 0 else d
            node = self.graph.observe(d, p, instruction_cost)
        if self.stm is not None:
            origin = self.graph.positions[node] if node is not None else np.zeros(3)
            self.stm.write(leaf, v, p - origin, step, frame=0 if node is None else node, object_id=object_id)
        if self.ltm is not None:
            keys = ([leaf] if self.octree is not None else []) + ([node_key(node)] if node is not None else [])
            self.ltm.write(keys, v)
        return MemoryWrite(leaf=leaf if self.octree is not None else None, node=node)

    def retrieve(self, embedding: np.ndarray, position: np.ndarray, k: int | None = None) -> Retrieval:
        """Memory for the observation ``embedding`` at ``position``: STM if it answers with cosine >= tau,
        else the LTM's top ``k`` (default: STM ``top_k`` / LTM ``top_m``)."""
        v = np.asarray(embedding, dtype=np.float32).reshape(self.config.dim)
        p = np.asarray(position, dtype=np.float64).reshape(3)
        hits = None
        if self.stm is not None:
            origins = self.graph.positions if self.graph is not None and len(self.graph) else None
            hits = self.stm.retrieve(v, p, origins, k=k, count_hits=False)
            if len(hits) and (hits.cosines[0] >= self.config.tau or self.ltm is None):
                self.stm.touch(hits.slots)
                return self._from_stm(hits)
        if self.ltm is not None:
            readout = self.ltm.read(v, p, m=k)
            if len(readout):
                return self._from_ltm(readout, v)
        if hits is not None and len(hits):
            self.stm.touch(hits.slots)
            return self._from_stm(hits)
        return self._empty()

    def flush(self) -> None:
        """Compute pending LTM tokens now (reads and saves do it themselves)."""
        if self.ltm is not None:
            self.ltm.flush()

    def leaf(self, position: np.ndarray) -> Leaf | None:
        """The octree leaf holding ``position`` with its LTM token, or ``None`` (also when the octree is off)."""
        if self.octree is None:
            return None
        found = self.octree.leaf_at(position)
        if found is None or self.ltm is None:
            return found
        return replace(found, token=self.ltm.token(found.code))

    def node_token(self, node: int) -> np.ndarray | None:
        """The LTM token of topology node ``node`` (``None`` without an LTM or before its first write)."""
        return None if self.ltm is None else self.ltm.token(node_key(node))

    def memory_bytes(self) -> int:
        """Approximate bytes held by all enabled parts (model weights excluded)."""
        parts = (self.octree, self.graph, self.stm, self.ltm)
        return sum(part.memory_bytes() for part in parts if part is not None)

    def state_dict(self) -> dict[str, Any]:
        """Config plus every enabled part's state (tensors and plain data; loadable with weights_only)."""
        return {
            "format": _FORMAT,
            "config": self.config.to_dict(),
            "writes": self.writes,
            "octree": None if self.octree is None else self.octree.state_dict(),
            "graph": None if self.graph is None else self.graph.state_dict(),
            "stm": None if self.stm is None else self.stm.state_dict(),
            "ltm": None if self.ltm is None else self.ltm.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` taken from a memory with the same config."""
        if int(state["format"]) != _FORMAT:
            raise ValueError(f"unsupported memory state format {state['format']}")
        if Mem4NavConfig.from_dict(state["config"]) != self.config:
            raise ValueError("state was saved with a different memory config; use Mem4NavMemory.load")
        for name in ("octree", "graph", "stm", "ltm"):
            part = getattr(self, name)
            if part is not None:
                part.load_state_dict(state[name])
        self.writes = int(state["writes"])

    def save(self, folder: str | Path) -> Path:
        """Write ``memory.pt`` (the state) and ``config.json`` into ``folder``, each atomically."""
        folder = Path(folder)
        save_torch(self.state_dict(), folder / STATE_FILE)
        save_text(json.dumps(self.config.to_dict(), indent=2) + "\n", folder / CONFIG_FILE)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Mem4NavMemory:
        """A memory restored from a folder written by :meth:`save`."""
        state = load_torch(Path(folder) / STATE_FILE)
        memory = cls(Mem4NavConfig.from_dict(state["config"]))
        memory.load_state_dict(state)
        return memory

    def load_ltm_weights(self, path: str | Path, agent: str | None = None) -> None:
        """Load trained LTM model weights from a checkpoint written by :func:`vlnkit.memory.train.train_ltm`.

        A checkpoint trained for other embedding or descriptor sizes or LTM model settings raises a one-line
        ``ValueError`` naming the file, what it holds and what this memory expects, and how to train matching
        weights: ``vlnkit train ltm agent=AGENT``, with ``agent`` the agent this memory belongs to, if any.
        """
        if self.ltm is None:
            raise ValueError("this memory has no LTM")
        owner = f"the {agent} agent's memory" if agent else "this memory"
        remedy = (f"train matching ones with `vlnkit train ltm agent={agent or 'NAME'} out={path}` and the agent "
                  "settings used here (agent.KEY=VALUE)")
        checkpoint = read_ltm_checkpoint(path, self.config.dim, self.descriptor_dim, self.config.ltm, owner, remedy)
        self.ltm.model.load_state_dict(checkpoint["model"])

    def _leaf_code(self, position: np.ndarray) -> int:
        size = self.config.octree.leaf_size
        return morton.encode_cell(*(math.floor(float(c) / size) for c in position))

    def _anchors(self, keys: np.ndarray) -> np.ndarray:
        """World location of each LTM key: leaf centre for leaf codes, node position for node keys."""
        size = self.config.octree.leaf_size
        anchors = np.zeros((len(keys), 3))
        for i, key in enumerate(keys.tolist()):
            node = key_node(key)
            if node is None:
                anchors[i] = [(c + 0.5) * size for c in morton.decode_code(key)]
            else:
                anchors[i] = self.graph.positions[node]
        return anchors

    def _from_stm(self, hits: STMHits) -> Retrieval:
        return Retrieval(
            source="stm",
            keys=hits.keys,
            embeddings=hits.embeddings,
            positions=hits.positions,
            anchors=hits.positions,
            scores=hits.cosines,
            object_ids=hits.object_ids,
            steps=hits.steps,
        )

    def _from_ltm(self, readout: LTMReadout, query: np.ndarray) -> Retrieval:
        embeddings = readout.embeddings
        norms = np.sqrt((embeddings * embeddings).sum(axis=1)) * max(float(np.sqrt(query @ query)), 1e-12)
        scores = (embeddings @ query) / np.maximum(norms, 1e-12)
        return Retrieval(
            source="ltm",
            keys=readout.keys,
            embeddings=readout.embeddings,
            positions=readout.positions,
            anchors=self._anchors(readout.keys),
            scores=scores.astype(np.float32),
            tokens=readout.tokens,
            descriptors=readout.descriptors,
            distances=readout.distances,
        )

    def _empty(self) -> Retrieval:
        d = self.config.dim
        return Retrieval(
            source="none",
            keys=np.empty(0, dtype=np.int64),
            embeddings=np.empty((0, d), dtype=np.float32),
            positions=np.empty((0, 3)),
            anchors=np.empty((0, 3)),
            scores=np.empty(0, dtype=np.float32),
        )

