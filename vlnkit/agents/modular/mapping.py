"""Mapping for the modular agent: every step's view and pose go into its Mem4Nav memory, and the agent asks
the memory about the past only through the memory's retrieval API (:class:`~vlnkit.memory.Mem4NavMemory`),
never by reading its parts. The questions:

- :meth:`EpisodicMap.trace`: what was seen where along the way (to count "the second cafe"):
  :meth:`Mem4NavMemory.trace`, the views of the parts that keep steps (oracle log, STM entries, octree
  leaves' last visits).
- :meth:`EpisodicMap.recall_here`: was I here before, when, and what did I see ("when you are back at the
  bank")? :meth:`Mem4NavMemory.recall`: the retrieval policy's answer (STM within ``eps`` when its best
  cosine reaches ``tau``, else the long-term memory's top ``m`` tokens, kept when their place lies within
  ``place_radius``), the oracle-log entries and octree leaves within ``place_radius``.
- :meth:`EpisodicMap.holds`: does a part still hold the view of a given step (a small STM evicts)?
- :meth:`EpisodicMap.locate`, :meth:`EpisodicMap.near_node` and :meth:`EpisodicMap.plan`: where am I in the
  topology graph, is that the node (or a neighbour of the node) where something was passed, and which
  graph nodes lead back to it (Dijkstra over the traversed edges, usable in both directions since streets
  can be walked both ways).

Every answer says which part gave it (``Memory.source``). Positions are the observation's metres (east,
north), written at height 0. The step a memory is stamped with is the agent's count of places visited
(moves), not of actions, so that turning on the spot does not spread one visit over several steps. A part
switched off by the memory variant simply answers nothing, so the ablation changes what the agent can
remember, never its code path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlnkit.agents.memory_support import ViewCodec
from vlnkit.memory import Mem4NavMemory
from vlnkit.memory.mem4nav import NO_STEP, Recollection


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
        return bool(self.memory.parts)

    @property
    def has_graph(self) -> bool:
        """Whether the memory holds a topology graph (place recognition and planning by nodes)."""
        return "graph" in self.memory.parts

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

    def trace(self, before: int | None = None) -> list[Memory]:
        """Every remembered view with a known step, oldest first, one per step (a step is one place)."""
        return self._memories(self.memory.trace(before))

    def recall_here(self, panorama: np.ndarray, heading: float, position: np.ndarray, before: int) -> list[Memory]:
        """Views remembered at this place from before step ``before`` (call before writing the current view),
        in the order the memory gives them (see :meth:`Mem4NavMemory.recall`)."""
        if not self.enabled or not self.memory.writes:
            return []
        found = self.memory.recall(self.codec.embed(panorama, heading), _xyz(position), self.place_radius, before)
        return self._memories(found)

    def holds(self, step: int) -> str | None:
        """The part that still holds the view of ``step``, or ``None``."""
        return self.memory.holds(step) if self.enabled else None

    def locate(self, panorama: np.ndarray, heading: float, position: np.ndarray) -> int | None:
        """The topology node of this place (see :meth:`Mem4NavMemory.locate`); ``None`` without a graph or
        before the first write."""
        return self.memory.locate(self.codec.descriptor(panorama, heading), _xyz(position))

    def near_node(self, node: int | None, target: int | None, hops: int = 0) -> bool:
        """Whether ``node`` is ``target``'s place: the node itself, one within ``hops`` traversed edges (a
        neighbouring place), or one whose position lies within ``place_radius`` of the target's."""
        return self.memory.near_node(node, target, hops, self.place_radius)

    def plan(self, source: int, target: int) -> list[np.ndarray]:
        """Positions (east, north) of the topology nodes on the cheapest path from ``source`` to ``target``
        (edge weights as the graph recorded them, edges usable both ways); empty when there is no path or no
        graph."""
        return [p[:2].copy() for p in self.memory.plan(source, target)]

    def node_position(self, node: int) -> np.ndarray | None:
        """Position (east, north) of a topology node, or ``None``."""
        found = self.memory.node_position(node)
        return None if found is None else found[:2].copy()

    def _memories(self, found: Recollection) -> list[Memory]:
        return [
            Memory(None if int(step) == NO_STEP else int(step), position[:2].copy(), self.codec.egocentric(embedding),
                   source)
            for source, step, position, embedding in zip(found.sources, found.steps.tolist(), found.positions,
                                                         found.embeddings)
        ]


def _xyz(position: np.ndarray) -> np.ndarray:
    p = np.asarray(position, dtype=np.float64).reshape(-1)
    return np.array([p[0], p[1], 0.0])
