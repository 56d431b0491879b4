"""Mem4Nav memory: sparse octree, topology graph, short-term cache and reversible-Transformer long-term memory.

Agents use :class:`Mem4NavMemory` (configured by :class:`Mem4NavConfig`); the parts are usable alone.
"""

from vlnkit.memory.graph import TopologyGraph
from vlnkit.memory.index import TokenIndex
from vlnkit.memory.ltm import LongTermMemory, LTMConfig, LTMModel, LTMReadout
from vlnkit.memory.mem4nav import (
    GraphConfig,
    Mem4NavConfig,
    Mem4NavMemory,
    MemoryWrite,
    OctreeConfig,
    Retrieval,
    STMConfig,
    key_node,
    node_key,
)
from vlnkit.memory.octree import Leaf, SparseOctree
from vlnkit.memory.reversible import ReversibleTransformer
from vlnkit.memory.stm import ShortTermMemory, STMHits

__all__ = [
    "GraphConfig",
    "LTMConfig",
    "LTMModel",
    "LTMReadout",
    "Leaf",
    "LongTermMemory",
    "Mem4NavConfig",
    "Mem4NavMemory",
    "MemoryWrite",
    "OctreeConfig",
    "ReversibleTransformer",
    "Retrieval",
    "STMConfig",
    "STMHits",
    "ShortTermMemory",
    "SparseOctree",
    "TokenIndex",
    "TopologyGraph",
    "key_node",
    "node_key",
]
