"""Mem4NavMemory: the memory an agent owns (octree + topology graph + short- and long-term memory).

Per step an agent calls :meth:`Mem4NavMemory.write` with its observation embedding and pose, and reads
memory only through the retrieval API:

- :meth:`Mem4NavMemory.retrieve`: memory for the current observation (the paper's policy: the STM when it
  has hits whose best cosine is at least ``tau``, else the LTM's ``top_m`` tokens; a memory without either
  answers from its octree leaves or its oracle log near the position);
- :meth:`Mem4NavMemory.recall`: was I here before, when, and what did I see (each part's answer, labelled);
- :meth:`Mem4NavMemory.trace`: what was seen where, step by step (the parts that keep steps);
- :meth:`Mem4NavMemory.holds`: which part still holds the view of a given step;
- :meth:`Mem4NavMemory.locate`, :meth:`Mem4NavMemory.near_node`, :meth:`Mem4NavMemory.plan`,
  :meth:`Mem4NavMemory.node_position`: place recognition and planning over the topology graph.

A write

1. records the visit in the octree leaf holding the position (visit count, last embedding);
2. matches or creates the topology node for the descriptor and links it from the previous node;
3. caches the entry in the STM, relative to the current node;
4. writes the embedding into the LTM tokens of the leaf (key: its Morton code, >= 0; written when the octree
   is on or there is no graph, so an LTM alone keys its tokens by leaf cells) and of the node (key:
   ``-(node + 1)``);
5. appends it to the oracle log (the ``oracle`` variant's only part: every write of the episode, exact and
   never forgotten, an upper bound on what a memory can recall).

Each part has a switch in :class:`Mem4NavConfig`, and :meth:`Mem4NavConfig.variant` names the ablations by
what they hold (``none``, ``full``, ``octree_only``, ``graph_only``, ``stm_only``, ``ltm_only``,
``no_octree``, ``no_graph``, ``no_stm``, ``no_ltm``, ``oracle``), so an ablation is a configuration, never a
code change. The parts themselves are reachable as read-only properties (``octree``, ``graph``, ``stm``,
``ltm``, ``oracle``) for tests and tools; agents use the retrieval API.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch

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


PARTS = ("octree", "graph", "stm", "ltm", "oracle")
"""The memory's parts, each switched by ``use_<part>`` in :class:`Mem4NavConfig`."""

_MEM4NAV = ("octree", "graph", "stm", "ltm")


def _holding(*parts: str) -> dict[str, bool]:
    return {f"use_{part}": part in parts for part in PARTS}


_VARIANTS: dict[str, dict[str, bool]] = {
    "none": _holding(),
    "full": _holding(*_MEM4NAV),
    **{f"{part}_only": _holding(part) for part in _MEM4NAV},
    **{f"no_{part}": _holding(*(p for p in _MEM4NAV if p != part)) for part in _MEM4NAV},
    "oracle": _holding("oracle"),
}

RENAMED_VARIANTS: dict[str, str] = {
    "stm": "stm_only",
    "ltm": "no_stm (octree, graph and LTM; the LTM alone is ltm_only)",
    "octree": "no_graph (octree, STM and LTM; the octree alone is octree_only)",
    "graph": "no_octree (graph, STM and LTM; the graph alone is graph_only)",
}
"""Variant names that said less than they held, and what holds those contents now."""


def variant_error(name: str) -> str:
    """The one-line refusal of an unknown (or renamed) memory variant, naming the valid ones."""
    valid = ", ".join(_VARIANTS)
    if name in RENAMED_VARIANTS:
        return (f"memory variant {name!r} was renamed: its contents are now {RENAMED_VARIANTS[name]}; "
                f"variants are named for what they hold: {valid}")
    return f"unknown memory variant {name!r}; choose from {valid}"


@dataclass
class Mem4NavConfig:
    """Everything that shapes a :class:`Mem4NavMemory`; ``use_*`` switch the parts on and off.

    ``dim`` is the observation-embedding size; ``descriptor_dim`` the graph-descriptor size (defaults to
    ``dim``: the embedding is the descriptor unless :meth:`Mem4NavMemory.write` is given one);
    ``normalize_descriptors`` L2-normalises descriptors before matching (``delta`` is then a chord
    distance on the unit sphere); ``tau`` is the STM cosine needed to skip the LTM. ``use_oracle`` adds the
    oracle log (every write, exact, unbounded: the ``oracle`` variant).
    """

    dim: int = 128
    descriptor_dim: int | None = None
    use_octree: bool = True
    use_graph: bool = True
    use_stm: bool = True
    use_ltm: bool = True
    use_oracle: bool = False
    tau: float = 0.7
    normalize_descriptors: bool = True
    octree: OctreeConfig = field(default_factory=OctreeConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    stm: STMConfig = field(default_factory=STMConfig)
    ltm: LTMConfig = field(default_factory=LTMConfig)

    @staticmethod
    def variants() -> list[str]:
        """Names accepted by :meth:`variant`."""
        return list(_VARIANTS)

    @classmethod
    def variant(cls, name: str, **overrides: Any) -> Mem4NavConfig:
        """The config of a named ablation (see :meth:`variants`); an unknown or renamed name (``stm``, ``ltm``,
        ``octree``, ``graph``) raises a one-line ``ValueError`` naming the valid ones."""
        if name not in _VARIANTS:
            raise ValueError(variant_error(name))
        return cls.from_dict({**_VARIANTS[name], **overrides})

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts switched on, in :data:`PARTS` order."""
        return tuple(part for part in PARTS if getattr(self, f"use_{part}"))

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

    ``source`` is ``"stm"``, ``"ltm"``, ``"octree"``, ``"oracle"`` or ``"none"``. ``scores`` are cosine
    similarities with the query embedding. ``positions`` are world positions: for STM and oracle entries
    their stored pose, for LTM tokens the position decoded from the token, for octree leaves the leaf
    centre; ``anchors`` are where the keys themselves are (the leaf centre or the node's running-mean
    position; the stored pose for STM and oracle entries). ``keys`` are leaf codes (>= 0) or node keys
    (< 0). ``tokens``, ``descriptors`` and ``distances`` (token-space L2) come with LTM results;
    ``object_ids`` with STM results; ``steps`` with STM, octree (last visit) and oracle results; the others
    are ``None``.
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


NO_STEP = -1
"""The step of a :class:`Recollection` entry whose part keeps none (an LTM token)."""


@dataclass(frozen=True)
class Recollection:
    """Remembered views, each labelled with the part that answered with it.

    ``sources[i]`` is ``"oracle"``, ``"stm"``, ``"octree"`` or ``"ltm"``; ``steps[i]`` the step the view was
    written at (:data:`NO_STEP` for LTM tokens, which keep none); ``positions[i]`` where it was seen (the
    stored pose; the leaf centre for octree leaves; the key's anchor for LTM tokens); ``embeddings[i]`` the
    view's embedding (for LTM tokens the decoded ``v_hat``).
    """

    sources: tuple[str, ...]
    steps: np.ndarray
    positions: np.ndarray
    embeddings: np.ndarray

    def __len__(self) -> int:
        return len(self.sources)

    @staticmethod
    def join(parts: list[Recollection], dim: int) -> Recollection:
        """The entries of ``parts`` one after the other."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return Recollection((), np.empty(0, dtype=np.int64), np.empty((0, 3)), np.empty((0, dim), np.float32))
        return Recollection(
            tuple(source for p in parts for source in p.sources),
            np.concatenate([p.steps for p in parts]).astype(np.int64),
            np.concatenate([p.positions for p in parts]),
            np.concatenate([p.embeddings for p in parts]).astype(np.float32),
        )


def _recollection(source: str, steps: np.ndarray, positions: np.ndarray, embeddings: np.ndarray) -> Recollection:
    return Recollection((source,) * len(steps), np.asarray(steps, dtype=np.int64),
                        np.asarray(positions, dtype=np.float64).reshape(-1, 3),
                        np.asarray(embeddings, dtype=np.float32).reshape(len(steps), np.shape(embeddings)[-1]))


class EpisodeLog:
    """The oracle part: every write of the episode, exact and never forgotten. One entry per step (the
    latest write stamped with it), with its position and embedding."""

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)
        self.clear()

    def clear(self) -> None:
        """Forget every entry."""
        self._row: dict[int, int] = {}
        self._steps = np.zeros(0, dtype=np.int64)
        self._positions = np.zeros((0, 3), dtype=np.float64)
        self._embeddings = np.zeros((0, self.dim), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._row)

    def write(self, step: int, embedding: np.ndarray, position: np.ndarray) -> None:
        """Log the view written at ``step`` (a later write at the same step replaces it)."""
        row = self._row.get(int(step))
        if row is None:
            row = len(self._row)
            if row == len(self._steps):
                capacity = max(64, 2 * row)
                self._steps = np.resize(self._steps, capacity)
                self._positions = np.resize(self._positions, (capacity, 3))
                self._embeddings = np.resize(self._embeddings, (capacity, self.dim))
            self._row[int(step)] = row
        self._steps[row] = step
        self._positions[row] = position
        self._embeddings[row] = embedding

    def holds(self, step: int) -> bool:
        """Whether a view was written at ``step``."""
        return int(step) in self._row

    def entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(steps, positions, embeddings)`` of every entry, oldest step first."""
        n = len(self._row)
        order = np.argsort(self._steps[:n], kind="stable")
        return self._steps[:n][order], self._positions[:n][order], self._embeddings[:n][order]

    def memory_bytes(self) -> int:
        """Bytes of the arrays."""
        return self._steps.nbytes + self._positions.nbytes + self._embeddings.nbytes + 2 * 36 * len(self._row)

    def state_dict(self) -> dict:
        """The entries as tensors."""
        steps, positions, embeddings = self.entries()
        return {"dim": self.dim, "steps": torch.from_numpy(steps.copy()),
                "positions": torch.from_numpy(positions.copy()), "embeddings": torch.from_numpy(embeddings.copy())}

    def load_state_dict(self, state: dict) -> None:
        """Replace the entries with a :meth:`state_dict`'s."""
        self.dim = int(state["dim"])
        self.clear()
        for step, position, embedding in zip(state["steps"].tolist(), state["positions"].numpy(),
                                             state["embeddings"].numpy()):
            self.write(step, embedding, position)


def node_key(node: int) -> int:
    """LTM key of topology node ``node`` (negative, disjoint from the leaf codes)."""
    return -(int(node) + 1)


def key_node(key: int) -> int | None:
    """Topology node of an LTM key, or ``None`` for a leaf key."""
    return -int(key) - 1 if key < 0 else None


class Mem4NavMemory:
    """Octree, topology graph, STM, LTM (and the oracle log) behind one write/retrieval interface (parts
    switched by config). The parts are read-only properties; the retrieval API is how agents read."""

    def __init__(self, config: Mem4NavConfig | None = None) -> None:
        self.config = config or Mem4NavConfig()
        c = self.config
        self.descriptor_dim = c.descriptor_dim or c.dim
        self._octree = SparseOctree(c.octree.leaf_size, c.octree.depth, embedding_dim=c.dim) if c.use_octree else None
        self._graph = (
            TopologyGraph(self.descriptor_dim, c.graph.delta, c.graph.alpha, c.graph.beta, c.graph.match_radius)
            if c.use_graph
            else None
        )
        self._stm = ShortTermMemory(c.dim, c.stm.capacity, c.stm.eps, c.stm.top_k, c.stm.lam) if c.use_stm else None
        self._ltm = LongTermMemory(c.dim, self.descriptor_dim, c.ltm) if c.use_ltm else None
        self._oracle = EpisodeLog(c.dim) if c.use_oracle else None
        self.writes = 0

    # -- the parts (read-only; for tests and tools) ---------------------------------------------------

    @property
    def octree(self) -> SparseOctree | None:
        """The sparse octree (``None`` when off)."""
        return self._octree

    @property
    def graph(self) -> TopologyGraph | None:
        """The topology graph (``None`` when off)."""
        return self._graph

    @property
    def stm(self) -> ShortTermMemory | None:
        """The short-term memory (``None`` when off)."""
        return self._stm

    @property
    def ltm(self) -> LongTermMemory | None:
        """The long-term memory (``None`` when off)."""
        return self._ltm

    @property
    def oracle(self) -> EpisodeLog | None:
        """The oracle log (``None`` when off)."""
        return self._oracle

    @property
    def parts(self) -> tuple[str, ...]:
        """Names of the parts this memory holds, in :data:`PARTS` order (empty for ``none``)."""
        return tuple(name for name in PARTS if self._part(name) is not None)

    @property
    def retrieves(self) -> bool:
        """Whether :meth:`retrieve` can answer: the memory holds an STM, an LTM, an octree or the oracle log
        (a graph alone answers place questions, :meth:`locate`, but holds no views to retrieve)."""
        return any(self._part(name) is not None for name in ("stm", "ltm", "octree", "oracle"))

    def _part(self, name: str) -> Any:
        return {"octree": self._octree, "graph": self._graph, "stm": self._stm, "ltm": self._ltm,
                "oracle": self._oracle}[name]

    def reset(self) -> None:
        """Empty every part for a new episode (the LTM model's weights stay)."""
        for name in PARTS:
            part = self._part(name)
            if part is not None:
                part.clear()
        self.writes = 0

    # -- writing -----------------------------------------------------------------------------------

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
        if self._octree is not None:
            self._octree.visit(leaf, v, step)
        node = None
        if self._graph is not None:
            node = self._graph.observe(self._descriptor(v if descriptor is None else descriptor), p, instruction_cost)
        if self._stm is not None:
            origin = self._graph.positions[node] if node is not None else np.zeros(3)
            self._stm.write(leaf, v, p - origin, step, frame=0 if node is None else node, object_id=object_id)
        if self._ltm is not None:
            leaf_keyed = self._octree is not None or self._graph is None
            keys = ([leaf] if leaf_keyed else []) + ([node_key(node)] if node is not None else [])
            self._ltm.write(keys, v)
        if self._oracle is not None:
            self._oracle.write(step, v, p)
        return MemoryWrite(leaf=leaf if self._octree is not None else None, node=node)

    # -- retrieval ---------------------------------------------------------------------------------

    def retrieve(self, embedding: np.ndarray, position: np.ndarray, k: int | None = None) -> Retrieval:
        """Memory for the observation ``embedding`` at ``position``: STM if it answers with cosine >= tau,
        else the LTM's top ``k`` (default: STM ``top_k`` / LTM ``top_m``). A memory with neither answers
        from its oracle log, else its octree leaves, within the STM radius ``eps`` (top ``k`` by cosine,
        default the STM's ``top_k``)."""
        v = np.asarray(embedding, dtype=np.float32).reshape(self.config.dim)
        p = np.asarray(position, dtype=np.float64).reshape(3)
        found = self._policy(v, p, k)
        if found is not None:
            return found
        k = self.config.stm.top_k if k is None else k
        for exact in (self._from_oracle, self._from_octree):
            found = exact(v, p, self.config.stm.eps, k)
            if found is not None and len(found):
                return found
        return self._empty()

    def recall(self, embedding: np.ndarray, position: np.ndarray, radius: float,
               before: int | None = None) -> Recollection:
        """What the memory remembers of the place at ``position`` (within ``radius`` metres) from steps
        before ``before``, each entry labelled with its part, in this order: the oracle log's views there;
        the retrieval policy's answer (:meth:`retrieve`'s STM-or-LTM choice; LTM tokens kept where their
        anchor lies within ``radius``); the octree leaves within ``radius`` with their last visit. The
        topology graph answers place questions through :meth:`locate` and :meth:`near_node`."""
        v = np.asarray(embedding, dtype=np.float32).reshape(self.config.dim)
        p = np.asarray(position, dtype=np.float64).reshape(3)
        out: list[Recollection] = []
        if self._oracle is not None:
            found = self._from_oracle(v, p, radius, None)
            if found is not None:
                out.append(_recollection("oracle", found.steps, found.positions, found.embeddings))
        if self.writes and (self._stm is not None or self._ltm is not None):
            found = self._policy(v, p, None)
            if found is not None and len(found):
                near = np.linalg.norm(found.anchors - p, axis=1) <= radius
                steps = found.steps if found.steps is not None else np.full(len(found), NO_STEP)
                out.append(_recollection(found.source, steps[near], found.anchors[near], found.embeddings[near]))
        if self._octree is not None:
            found = self._from_octree(v, p, radius, None)
            if found is not None:
                out.append(_recollection("octree", found.steps, found.positions, found.embeddings))
        recalled = Recollection.join(out, self.config.dim)
        if before is None or not len(recalled):
            return recalled
        keep = (recalled.steps == NO_STEP) | ((recalled.steps >= 0) & (recalled.steps < before))
        return Recollection(tuple(s for s, k in zip(recalled.sources, keep) if k), recalled.steps[keep],
                            recalled.positions[keep], recalled.embeddings[keep])

    def trace(self, before: int | None = None) -> Recollection:
        """Every remembered view that carries its step, oldest first, one per step (before step ``before``
        when given): from the oracle log, the STM's entries and the octree leaves (each one's last visit);
        the first of these parts to hold a step answers for it (the STM before the octree, as retrieval asks it
        first). The graph and the LTM keep no steps."""
        found: dict[int, tuple[str, np.ndarray, np.ndarray]] = {}
        if self._oracle is not None:
            for step, position, embedding in zip(*self._oracle.entries()):
                found.setdefault(int(step), ("oracle", position, embedding))
        if self._stm is not None and len(self._stm):
            hits = self._stm.entries(self._origins())
            for step, position, embedding in zip(hits.steps.tolist(), hits.positions, hits.embeddings):
                found.setdefault(int(step), ("stm", position, embedding))
        if self._octree is not None and len(self._octree):
            octree = self._octree
            centers = octree.cell_centers(octree.codes)
            for step, center, embedding in zip(octree.last_steps.tolist(), centers, octree.embeddings):
                found.setdefault(int(step), ("octree", center, embedding))
        steps = sorted(s for s in found if before is None or s < before)
        if not steps:
            return Recollection.join([], self.config.dim)
        return Recollection(tuple(found[s][0] for s in steps), np.array(steps, dtype=np.int64),
                            np.stack([found[s][1] for s in steps]).astype(np.float64),
                            np.stack([found[s][2] for s in steps]).astype(np.float32))

    def holds(self, step: int) -> str | None:
        """The first part (oracle log, STM, octree) that still holds a view stamped ``step``, or ``None``
        (a small STM may have evicted it; a revisit overwrites a leaf's last visit)."""
        if self._oracle is not None and self._oracle.holds(step):
            return "oracle"
        if self._stm is not None and self._stm.holds_step(step):
            return "stm"
        if self._octree is not None and bool(np.any(self._octree.last_steps == step)):
            return "octree"
        return None

    # -- the topology graph ------------------------------------------------------------------------

    def locate(self, descriptor: np.ndarray, position: np.ndarray) -> int | None:
        """The topology node of a place: the node the descriptor matches (within ``delta``, among the nodes
        within ``match_radius``), else the node nearest by position; ``None`` without a graph or nodes."""
        if self._graph is None or len(self._graph) == 0:
            return None
        p = np.asarray(position, dtype=np.float64).reshape(3)
        node, distance = self._graph.nearest(self._descriptor(descriptor), p)
        if node is not None and distance <= self._graph.delta:
            return node
        return self._graph.closest(p)

    def near_node(self, node: int | None, target: int | None, hops: int = 1, radius: float | None = None) -> bool:
        """Whether node ``node`` is ``target`` or a neighbour of it: within ``hops`` traversed edges (either
        direction), or with its position within ``radius`` metres of the target's."""
        graph = self._graph
        if graph is None or node is None or target is None or max(node, target) >= len(graph) or min(node, target) < 0:
            return False
        if node == target or target in graph.neighbours(node, hops):
            return True
        return radius is not None and float(np.linalg.norm(graph.positions[node] - graph.positions[target])) <= radius

    def plan(self, source: int, target: int) -> list[np.ndarray]:
        """World positions of the nodes on the cheapest path from ``source`` to ``target`` (edge weights as
        recorded, usable both ways: streets can be walked both ways); empty without a path or a graph."""
        graph = self._graph
        if graph is None or not (0 <= source < len(graph) and 0 <= target < len(graph)):
            return []
        try:
            path = graph.plan(source, target, both_ways=True)
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            return []
        return [graph.positions[node].copy() for node in path]

    def node_position(self, node: int | None) -> np.ndarray | None:
        """World position of a topology node (``None`` without a graph or such a node)."""
        graph = self._graph
        if graph is None or node is None or not 0 <= node < len(graph):
            return None
        return graph.positions[node].copy()

    # -- the rest ----------------------------------------------------------------------------------

    def flush(self) -> None:
        """Compute pending LTM tokens now (reads and saves do it themselves)."""
        if self._ltm is not None:
            self._ltm.flush()

    def leaf(self, position: np.ndarray) -> Leaf | None:
        """The octree leaf holding ``position`` with its LTM token, or ``None`` (also when the octree is off)."""
        if self._octree is None:
            return None
        found = self._octree.leaf_at(position)
        if found is None or self._ltm is None:
            return found
        return replace(found, token=self._ltm.token(found.code))

    def node_token(self, node: int) -> np.ndarray | None:
        """The LTM token of topology node ``node`` (``None`` without an LTM or before its first write)."""
        return None if self._ltm is None else self._ltm.token(node_key(node))

    def memory_bytes(self) -> int:
        """Approximate bytes held by all enabled parts (model weights excluded)."""
        return sum(self._part(name).memory_bytes() for name in self.parts)

    def state_dict(self) -> dict[str, Any]:
        """Config plus every enabled part's state (tensors and plain data; loadable with weights_only)."""
        state: dict[str, Any] = {"format": _FORMAT, "config": self.config.to_dict(), "writes": self.writes}
        for name in PARTS:
            part = self._part(name)
            state[name] = None if part is None else part.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` taken from a memory with the same config."""
        if int(state["format"]) != _FORMAT:
            raise ValueError(f"unsupported memory state format {state['format']}")
        if Mem4NavConfig.from_dict(state["config"]) != self.config:
            raise ValueError("state was saved with a different memory config; use Mem4NavMemory.load")
        for name in PARTS:
            part = self._part(name)
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
        if self._ltm is None:
            raise ValueError("this memory has no LTM")
        owner = f"the {agent} agent's memory" if agent else "this memory"
        remedy = (f"train matching ones with `vlnkit train ltm agent={agent or 'NAME'} out={path}` and the agent "
                  "settings used here (agent.KEY=VALUE)")
        checkpoint = read_ltm_checkpoint(path, self.config.dim, self.descriptor_dim, self.config.ltm, owner, remedy)
        self._ltm.model.load_state_dict(checkpoint["model"])

    # -- internals ---------------------------------------------------------------------------------

    def _descriptor(self, descriptor: np.ndarray) -> np.ndarray:
        d = np.asarray(descriptor, dtype=np.float32).reshape(self.descriptor_dim)
        if self.config.normalize_descriptors:
            norm = float(np.sqrt(d @ d))
            d = d / norm if norm > 0 else d
        return d

    def _origins(self) -> np.ndarray | None:
        return self._graph.positions if self._graph is not None and len(self._graph) else None

    def _policy(self, v: np.ndarray, p: np.ndarray, k: int | None) -> Retrieval | None:
        """The paper's retrieval policy over the STM and the LTM (``None`` when the memory has neither)."""
        if self._stm is None and self._ltm is None:
            return None
        hits = None
        if self._stm is not None:
            hits = self._stm.retrieve(v, p, self._origins(), k=k, count_hits=False)
            if len(hits) and (hits.cosines[0] >= self.config.tau or self._ltm is None):
                self._stm.touch(hits.slots)
                return self._from_stm(hits)
        if self._ltm is not None:
            readout = self._ltm.read(v, p, m=k)
            if len(readout):
                return self._from_ltm(readout, v)
        if hits is not None and len(hits):
            self._stm.touch(hits.slots)
            return self._from_stm(hits)
        return self._empty()

    def _from_octree(self, v: np.ndarray, p: np.ndarray, radius: float, k: int | None) -> Retrieval | None:
        """The octree leaves within ``radius`` of ``p`` (their last visit), best cosine first, top ``k``."""
        if self._octree is None or len(self._octree) == 0:
            return None
        codes, _ = self._octree.radius(p, radius)
        slots = self._octree.lookup(codes)
        centers = self._octree.cell_centers(codes) if len(codes) else np.empty((0, 3))
        return self._ranked("octree", codes, self._octree.embeddings[slots], centers,
                            self._octree.last_steps[slots], v, k)

    def _from_oracle(self, v: np.ndarray, p: np.ndarray, radius: float, k: int | None) -> Retrieval | None:
        """The oracle log's entries within ``radius`` of ``p``, best cosine first, top ``k``."""
        if self._oracle is None or len(self._oracle) == 0:
            return None
        steps, positions, embeddings = self._oracle.entries()
        near = np.linalg.norm(positions - p, axis=1) <= radius
        keys = np.array([self._leaf_code(q) for q in positions[near]], dtype=np.int64)
        return self._ranked("oracle", keys, embeddings[near], positions[near], steps[near], v, k)

    def _ranked(self, source: str, keys: np.ndarray, embeddings: np.ndarray, positions: np.ndarray,
                steps: np.ndarray, query: np.ndarray, k: int | None) -> Retrieval:
        embeddings = np.asarray(embeddings, dtype=np.float32).reshape(len(keys), self.config.dim)
        norms = np.sqrt((embeddings * embeddings).sum(axis=1)) * max(float(np.sqrt(query @ query)), 1e-12)
        scores = ((embeddings @ query) / np.maximum(norms, 1e-12)).astype(np.float32)
        order = np.argsort(-scores, kind="stable")[: (len(keys) if k is None else k)]
        positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)[order]
        return Retrieval(source=source, keys=np.asarray(keys, dtype=np.int64)[order], embeddings=embeddings[order],
                         positions=positions, anchors=positions.copy(), scores=scores[order],
                         steps=np.asarray(steps, dtype=np.int64)[order])

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
                anchors[i] = self._graph.positions[node]
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
