"""The street graph: panorama nodes joined by directed, heading-labelled links.

`StreetGraph` is the in-memory form of a Touchdown/Map2Seq ``graph/`` folder. It stores nodes and
links as flat numpy arrays (a CSR adjacency) so that the navigators, the metrics and the synthetic
generators share one fast representation. Node order is the order of ``nodes.txt``; the outgoing
links of a node keep the order of ``links.txt``, which decides ties exactly as the reference
navigators do. Reading and writing the text files lives in :mod:`vlnkit.envs.datasets`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import networkx as nx
import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order, shortest_path

EARTH_RADIUS_M = 6_371_008.8


def angle_diff(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray | float:
    """Absolute angular difference in degrees between headings, in [0, 180]."""
    return 180.0 - np.abs(np.abs(np.asarray(a) - np.asarray(b)) % 360.0 - 180.0)


def bfs_hops(csgraph: csr_matrix, source: int, directed: bool = True) -> np.ndarray:
    """Hop counts from ``source`` to every node (``inf`` where unreachable), one BFS.

    scipy's breadth-first order gives the BFS tree; depths along it are found by pointer doubling
    (each node adds its ancestor's count and jumps to the ancestor's ancestor), which takes
    ``log2(depth)`` vectorised rounds instead of a Python loop over nodes.
    """
    n = csgraph.shape[0]
    order, pred = breadth_first_order(csgraph, source, directed=directed, return_predecessors=True)
    has_parent = pred >= 0
    ancestor = np.where(has_parent, pred, np.arange(n))
    depth = has_parent.astype(np.int64)
    while True:
        jumped = ancestor[ancestor]
        if np.array_equal(jumped, ancestor):
            break
        depth += depth[ancestor]
        ancestor = jumped
    hops = np.full(n, np.inf)
    hops[order] = depth[order]
    return hops


@dataclass(frozen=True, eq=False)
class StreetGraph:
    """A street graph in compressed sparse row form.

    Attributes:
        panoids: node index -> panorama id.
        yaw: per-node panorama yaw angle in degrees (the heading at the panorama's centre column).
        lat, lng: per-node WGS84 coordinates in degrees.
        seen: per-node ``seen`` flag of the 5-column VELMA format, or ``None`` for 4-column graphs.
        out_ptr: ``out_ptr[i]:out_ptr[i+1]`` indexes the outgoing links of node ``i``.
        out_dst: destination node index of each link.
        out_heading: compass heading of each link in degrees (0 north, clockwise).
    """

    panoids: tuple[str, ...]
    yaw: np.ndarray
    lat: np.ndarray
    lng: np.ndarray
    seen: np.ndarray | None
    out_ptr: np.ndarray
    out_dst: np.ndarray
    out_heading: np.ndarray
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {p: i for i, p in enumerate(self.panoids)})
        if len(self.index) != len(self.panoids):
            raise ValueError("StreetGraph: duplicate panoid among nodes")
        n = len(self.panoids)
        if self.out_ptr.shape != (n + 1,) or self.out_ptr[-1] != len(self.out_dst):
            raise ValueError("StreetGraph: out_ptr does not match the number of nodes and links")

    @classmethod
    def from_lists(
        cls,
        nodes: Sequence[tuple[str, float, float, float]] | Sequence[tuple[str, float, float, float, bool]],
        links: Sequence[tuple[str, float, str]],
    ) -> StreetGraph:
        """Build a graph from ``(panoid, yaw, lat, lng[, seen])`` nodes and ``(src, heading, dst)`` links.

        Links keep their given order within each source node. Unknown panoids raise ``KeyError``.
        """
        panoids = tuple(n[0] for n in nodes)
        index = {p: i for i, p in enumerate(panoids)}
        src = np.fromiter((index[s] for s, _, _ in links), dtype=np.int64, count=len(links))
        dst = np.fromiter((index[d] for _, _, d in links), dtype=np.int32, count=len(links))
        heading = np.fromiter((h for _, h, _ in links), dtype=np.float64, count=len(links))
        has_seen = len(nodes) > 0 and all(len(n) == 5 for n in nodes)
        return cls.from_arrays(
            panoids,
            yaw=np.array([n[1] for n in nodes], dtype=np.float64),
            lat=np.array([n[2] for n in nodes], dtype=np.float64),
            lng=np.array([n[3] for n in nodes], dtype=np.float64),
            seen=np.array([bool(n[4]) for n in nodes], dtype=bool) if has_seen else None,
            link_src=src,
            link_dst=dst,
            link_heading=heading,
        )

    @classmethod
    def from_arrays(
        cls,
        panoids: Sequence[str],
        yaw: np.ndarray,
        lat: np.ndarray,
        lng: np.ndarray,
        seen: np.ndarray | None,
        link_src: np.ndarray,
        link_dst: np.ndarray,
        link_heading: np.ndarray,
    ) -> StreetGraph:
        """Build a graph from per-node arrays and per-link arrays given in file order."""
        n = len(panoids)
        order = np.argsort(link_src, kind="stable")
        counts = np.bincount(link_src, minlength=n)
        out_ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=out_ptr[1:])
        return cls(
            panoids=tuple(panoids),
            yaw=np.asarray(yaw, dtype=np.float64),
            lat=np.asarray(lat, dtype=np.float64),
            lng=np.asarray(lng, dtype=np.float64),
            seen=None if seen is None else np.asarray(seen, dtype=bool),
            out_ptr=out_ptr,
            out_dst=np.asarray(link_dst, dtype=np.int32)[order],
            out_heading=np.asarray(link_heading, dtype=np.float64)[order],
        )

    @property
    def num_nodes(self) -> int:
        """Number of panorama nodes."""
        return len(self.panoids)

    @property
    def num_links(self) -> int:
        """Number of directed links."""
        return len(self.out_dst)

    @cached_property
    def out_degree(self) -> np.ndarray:
        """Number of outgoing links per node."""
        return np.diff(self.out_ptr)

    @cached_property
    def link_src(self) -> np.ndarray:
        """Source node index of each link (CSR order)."""
        return np.repeat(np.arange(self.num_nodes, dtype=np.int32), self.out_degree)

    def out_links(self, node: int) -> tuple[np.ndarray, np.ndarray]:
        """Destinations and headings of the outgoing links of ``node``, in file order."""
        a, b = self.out_ptr[node], self.out_ptr[node + 1]
        return self.out_dst[a:b], self.out_heading[a:b]

    def link_heading(self, src: int, dst: int) -> float | None:
        """Heading of the link ``src -> dst``, or ``None`` when there is no such link."""
        dsts, headings = self.out_links(src)
        hit = np.flatnonzero(dsts == dst)
        return float(headings[hit[0]]) if len(hit) else None

    def has_link(self, src: int, dst: int) -> bool:
        """Whether the directed link ``src -> dst`` exists."""
        return self.link_heading(src, dst) is not None

    def nearest_out_heading(self, node: int, heading: float) -> float:
        """The outgoing link heading of ``node`` closest to ``heading`` (``heading`` if it has none)."""
        _, headings = self.out_links(node)
        if len(headings) == 0:
            return float(heading)
        return float(headings[int(np.argmin(angle_diff(headings, heading)))])

    @cached_property
    def adjacency(self) -> csr_matrix:
        """Directed adjacency matrix (1 where a link exists)."""
        n = self.num_nodes
        return csr_matrix(
            (np.ones(self.num_links, dtype=np.float64), self.out_dst, self.out_ptr), shape=(n, n)
        )

    @cached_property
    def undirected_adjacency(self) -> csr_matrix:
        """Symmetric adjacency matrix: 1 where a link exists in either direction."""
        sym = (self.adjacency + self.adjacency.T).tocsr()
        sym.data[:] = 1.0
        return sym

    def hops_to(self, goal: int) -> np.ndarray:
        """Undirected hop counts from every node to ``goal`` (``inf`` where unreachable); one fast BFS."""
        return bfs_hops(self.undirected_adjacency, goal, directed=True)

    @cached_property
    def undirected_neighbors(self) -> list[frozenset[int]]:
        """For each node, the set of nodes linked to it in either direction."""
        sym = (self.adjacency + self.adjacency.T).tocsr()
        return [frozenset(sym.indices[sym.indptr[i] : sym.indptr[i + 1]].tolist()) for i in range(self.num_nodes)]

    def hop_distances_to(self, goals: Sequence[int] | np.ndarray, directed: bool = False) -> np.ndarray:
        """Hop counts from every node to each goal, shape ``(len(goals), num_nodes)``.

        ``directed=False`` (the default, as the street metrics use) ignores link direction; with
        ``directed=True`` the entry ``[g, i]`` is the number of links on a path ``i -> goal``.
        Unreachable nodes get ``inf``.
        """
        goals = np.asarray(goals, dtype=np.int64)
        if directed:
            return shortest_path(self.adjacency.T.tocsr(), directed=True, unweighted=True, indices=goals)
        return shortest_path(self.adjacency, directed=False, unweighted=True, indices=goals)

    @cached_property
    def xy(self) -> np.ndarray:
        """Node positions in metres, ``(num_nodes, 2)`` as (east, north), from an equirectangular
        projection about the graph's mean latitude and longitude."""
        if self.num_nodes == 0:
            return np.zeros((0, 2))
        lat0 = np.deg2rad(self.lat.mean())
        east = np.deg2rad(self.lng - self.lng.mean()) * EARTH_RADIUS_M * np.cos(lat0)
        north = np.deg2rad(self.lat - self.lat.mean()) * EARTH_RADIUS_M
        return np.stack([east, north], axis=1)

    def to_networkx(self) -> nx.DiGraph:
        """The graph as a networkx ``DiGraph`` keyed by panoid, links carrying ``heading``."""
        g = nx.DiGraph()
        for i, p in enumerate(self.panoids):
            g.add_node(p, yaw=float(self.yaw[i]), lat=float(self.lat[i]), lng=float(self.lng[i]))
        for s, d, h in zip(self.link_src.tolist(), self.out_dst.tolist(), self.out_heading.tolist()):
            g.add_edge(self.panoids[s], self.panoids[d], heading=h)
        return g

    def shortest_path(self, src: int, dst: int) -> list[int]:
        """A shortest directed path ``src -> dst`` as node indices (raises ``nx.NetworkXNoPath``)."""
        path = nx.shortest_path(self._index_digraph, src, dst)
        return list(path)

    @cached_property
    def _index_digraph(self) -> nx.DiGraph:
        g = nx.DiGraph()
        g.add_nodes_from(range(self.num_nodes))
        g.add_edges_from(zip(self.link_src.tolist(), self.out_dst.tolist()))
        return g
