"""Mapping for the modular agent: every step's view and pose go into its Mem4Nav memory, and the memory
answers the three questions the agent asks about the past.

- :meth:`EpisodicMap.trace`: what was seen where along the way (to count "the second cafe"). The octree
  keeps the last view of every place visited, the short-term memory (STM) the latest ``K`` writes.
- :meth:`EpisodicMap.recall_here`: was I here before, when, and what did I see ("when you are back at the
  bank")? The memory's retrieval policy answers (STM within ``eps`` when its best cosine reaches ``tau``,
  else the long-term memory's top ``m`` tokens, kept when their place lies within ``place_radius``), and
  the octree leaf at the position adds its last visit.
- :meth:`EpisodicMap.locate` and :meth:`EpisodicMap.plan`: where am I in the topology graph, and which
  graph nodes lead back to a remembered one (Dijkstra over the traversed edges, usable in both
  directions since streets can be walked both ways).

Positions are the observation's metres (east, north), written at height 0. The step a memory is stamped
with is the agent's count of places visited (moves), not of actions, so that turning on the spot does
not spread one visit over several steps. A part switched off by the memory variant simply answers
nothing, so the ablation changes what the agent can remember, never its code path.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from vlnkit.agents.memory_support import ViewCodec
from vlnkit.memory import Mem4NavMemory


@dataclass(frozen=True)
class Memory:
    """One remembered view: the step (``None`` when the memory part does not keep it), where it was seen,
    the egocentric ``(sectors, categories)`` view and which part of the memory answered."""

    step: int | None
    position: np.ndarray
    view: np.ndarray
    source: str


class EpisodicMap:
    """The agent's map: a :class:`Mem4NavMemory` fed with :class:`ViewCodec` embeddings.

    ``place_radius`` (metres) is how close a remembered place must be to count as "here".
    """

    def __init__(self, memory: Mem4NavMemory, codec: ViewCodec, place_radius: float = 4.0) -> None:
        self.memory = memory
        self.codec = codec
        self.place_radius = float(place_radius)

    @property
    def enabled(self) -> bool:
        """Whether any part of the memory is on (the ``none`` variant remembers nothing)."""
        c = self.memory.config
        return c.use_octree or c.use_graph or c.use_stm or c.use_ltm

    def reset(self) -> None:
        """Forget everything (a new episode)."""
        self.memory.reset()

    def write(self, panorama: np.ndarray, heading: float, position: np.ndarray, step: int) -> int | None:
        """Store the view seen at ``position`` facing ``heading``; returns its topology node (``None`` without
        a graph)."""
        written = self.memory.write(
            self.codec.embed(panorama, heading),
            _xyz(position),
            step,
            descriptor=self.codec.descriptor(panorama, heading),
        )
        return written.node

    def trace(self) -> list[Memory]:
        """Every remembered view with a known step, oldest first, one per step (a step is one place): the
        octree's leaves and the STM's entries."""
        found: dict[int, Memory] = {}
        octree = self.memory.octree
        if octree is not None:
            for code in octree.codes.tolist():
                leaf = octree.leaf(code)
                if leaf is not None and leaf.embedding is not None:
                    view = self.codec.egocentric(leaf.embedding)
                    memory = Memory(leaf.last_step, leaf.center[:2].copy(), view, "octree")
                    found[memory.step] = memory
        stm = self.memory.stm
        if stm is not None and len(stm):
            hits = stm.retrieve(np.zeros(self.codec.dim, dtype=np.float32) + 1.0, np.zeros(3), self._origins(),
                                k=stm.capacity, eps=np.inf, count_hits=False)
            for step, position, embedding in zip(hits.steps.tolist(), hits.positions, hits.embeddings):
                memory = Memory(int(step), position[:2].copy(), self.codec.egocentric(embedding), "stm")
                found.setdefault(memory.step, memory)
        return [found[step] for step in sorted(found)]

    def recall_here(self, panorama: np.ndarray, heading: float, position: np.ndarray, before: int) -> list[Memory]:
        """Views remembered at this place from before step ``before`` (call before writing the current view)."""
        p = _xyz(position)
        out: list[Memory] = []
        if self.enabled and self.memory.writes:
            found = self.memory.retrieve(self.codec.embed(panorama, heading), p)
            near = np.linalg.norm(found.anchors[:, :2] - p[:2], axis=1) <= self.place_radius if len(found) else []
            for i in np.flatnonzero(near).tolist():
                step = None if found.steps is None else int(found.steps[i])
                if step is None or step < before:
                    out.append(Memory(step, found.anchors[i, :2].copy(), self.codec.egocentric(found.embeddings[i]),
                                      found.source))
        leaf = None if self.memory.octree is None else self.memory.octree.leaf_at(p)
        if leaf is not None and leaf.embedding is not None and leaf.last_step < before:
            out.append(Memory(leaf.last_step, leaf.center[:2].copy(), self.codec.egocentric(leaf.embedding), "octree"))
        return out

    def locate(self, panorama: np.ndarray, heading: float, position: np.ndarray) -> int | None:
        """The topology node of this place: the node the descriptor matches (within ``delta``), else the
        nearest node by position; ``None`` without a graph or before the first write."""
        graph = self.memory.graph
        if graph is None or len(graph) == 0:
            return None
        p = _xyz(position)
        descriptor = self.codec.descriptor(panorama, heading)
        if self.memory.config.normalize_descriptors:
            norm = float(np.linalg.norm(descriptor))
            descriptor = descriptor / norm if norm > 0 else descriptor
        node, distance = graph.nearest(descriptor, p)
        if node is not None and distance <= graph.delta:
            return node
        return int(np.argmin(np.linalg.norm(graph.positions - p, axis=1)))

    def plan(self, source: int, target: int) -> list[np.ndarray]:
        """Positions (east, north) of the topology nodes on the cheapest path from ``source`` to ``target``
        (edge weights as the graph recorded them, edges usable both ways); empty when there is no path or no
        graph."""
        graph = self.memory.graph
        if graph is None or source >= len(graph) or target >= len(graph):
            return []
        try:
            path = nx.dijkstra_path(graph.graph.to_undirected(as_view=True), source, target, weight="weight")
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            return []
        return [graph.positions[node][:2].copy() for node in path]

    def node_position(self, node: int) -> np.ndarray | None:
        """Position (east, north) of a topology node, or ``None``."""
        graph = self.memory.graph
        if graph is None or node >= len(graph):
            return None
        return graph.positions[node][:2].copy()

    def _origins(self) -> np.ndarray | None:
        graph = self.memory.graph
        return graph.positions if graph is not None and len(graph) else None


def _xyz(position: np.ndarray) -> np.ndarray:
    p = np.asarray(position, dtype=np.float64).reshape(-1)
    return np.array([p[0], p[1], 0.0])
