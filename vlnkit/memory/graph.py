"""Semantic topology graph: landmark/decision nodes with running-mean descriptors, weighted directed edges.

Each observation is matched to the node with the nearest descriptor (Euclidean distance). If that distance
exceeds ``delta`` a new node is created at the observation; otherwise the matched node's descriptor and
position become running means that include it. Moving from node ``a`` to a different node ``b`` adds or
updates the directed edge ``a -> b`` with weight ``alpha * |p_a - p_b| + beta * instruction_cost``;
repeated traversals average the weights. Planning is Dijkstra over those weights (networkx).

Matching is restricted to nodes within ``match_radius`` metres of the observation (a spatial hash of node
positions finds them), so a step costs the same on a 100 m route and a 100 km one and a look-alike
facade across the city is not taken for the same place; ``match_radius=None`` matches against every
node, as in the paper.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from pathlib import Path

import networkx as nx
import numpy as np
import torch

_INT_OBJECT_BYTES = 36
_NETWORKX_EDGE_BYTES = 400
_NETWORKX_NODE_BYTES = 300


class TopologyGraph:
    """Nodes with descriptors and positions in numpy arrays, edges in a ``networkx.DiGraph``.

    Node ids are consecutive integers from 0. ``current`` is the node of the latest observation (``None``
    before the first one or after :meth:`end_episode`).
    """

    def __init__(
        self,
        descriptor_dim: int,
        delta: float = 0.6,
        alpha: float = 1.0,
        beta: float = 0.5,
        match_radius: float | None = 30.0,
    ) -> None:
        if match_radius is not None and match_radius <= 0:
            raise ValueError(f"match_radius must be positive or None, got {match_radius}")
        self.descriptor_dim = int(descriptor_dim)
        self.delta = float(delta)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.match_radius = None if match_radius is None else float(match_radius)
        self.clear()

    def clear(self) -> None:
        """Remove every node and edge."""
        self.graph = nx.DiGraph()
        self._n = 0
        self._descriptors = np.zeros((0, self.descriptor_dim), dtype=np.float32)
        self._positions = np.zeros((0, 3), dtype=np.float64)
        self._counts = np.zeros(0, dtype=np.int64)
        self._buckets: dict[tuple[int, int, int], list[int]] = defaultdict(list)
        self._bucket_of: list[tuple[int, int, int]] = []
        self.current: int | None = None

    def __len__(self) -> int:
        return self._n

    @property
    def positions(self) -> np.ndarray:
        """Node positions ``(n, 3)`` (running means; read-only view)."""
        view = self._positions[: self._n].view()
        view.flags.writeable = False
        return view

    @property
    def descriptors(self) -> np.ndarray:
        """Node descriptors ``(n, descriptor_dim)`` (running means; read-only view)."""
        view = self._descriptors[: self._n].view()
        view.flags.writeable = False
        return view

    @property
    def counts(self) -> np.ndarray:
        """How many observations each node has absorbed (read-only view)."""
        view = self._counts[: self._n].view()
        view.flags.writeable = False
        return view

    def nearest(self, descriptor: np.ndarray, position: np.ndarray | None = None) -> tuple[int | None, float]:
        """Node with the nearest descriptor (among those within ``match_radius`` of ``position`` when both
        are set) and its descriptor distance; ``(None, inf)`` when there is no candidate."""
        descriptor = np.asarray(descriptor, dtype=np.float32).reshape(self.descriptor_dim)
        if self.match_radius is None or position is None:
            candidates = np.arange(self._n)
        else:
            candidates = self._nodes_near(np.asarray(position, dtype=np.float64).reshape(3))
        if len(candidates) == 0:
            return None, math.inf
        diff = self._descriptors[candidates] - descriptor
        distances = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        best = int(np.argmin(distances))
        return int(candidates[best]), float(distances[best])

    def observe(self, descriptor: np.ndarray, position: np.ndarray, instruction_cost: float = 0.0) -> int:
        """Match or create the node for one observation, link it from the previous node; returns its id."""
        descriptor = np.asarray(descriptor, dtype=np.float32).reshape(self.descriptor_dim)
        position = np.asarray(position, dtype=np.float64).reshape(3)
        node, distance = self.nearest(descriptor, position)
        if node is None or distance > self.delta:
            node = self._add_node(descriptor, position)
        else:
            self._absorb(node, descriptor, position)
        previous = self.current
        if previous is not None and previous != node:
            self._traverse(previous, node, instruction_cost)
        self.current = node
        return node

    def end_episode(self) -> None:
        """Forget the current node so the next observation starts no edge."""
        self.current = None

    def edge_weight(self, source: int, target: int) -> float:
        """Averaged weight of the edge ``source -> target`` (KeyError if absent)."""
        return float(self.graph.edges[source, target]["weight"])

    def plan(self, source: int, target: int, both_ways: bool = False) -> list[int]:
        """Cheapest node path from ``source`` to ``target`` (Dijkstra); ``networkx.NetworkXNoPath`` if none.
        ``both_ways`` lets edges be used against their direction (streets can be walked both ways)."""
        graph = self.graph.to_undirected(as_view=True) if both_ways else self.graph
        return nx.dijkstra_path(graph, source, target, weight="weight")

    def neighbours(self, node: int, hops: int = 1) -> set[int]:
        """Nodes within ``hops`` edges of ``node`` in either direction (``node`` itself included)."""
        if node not in self.graph:
            return set()
        found, frontier = {node}, {node}
        for _ in range(max(int(hops), 0)):
            frontier = {n for f in frontier for n in (*self.graph.successors(f), *self.graph.predecessors(f))} - found
            if not frontier:
                break
            found |= frontier
        return found

    def closest(self, position: np.ndarray) -> int | None:
        """The node whose position is nearest to ``position`` (``None`` without nodes)."""
        if self._n == 0:
            return None
        offsets = self._positions[: self._n] - np.asarray(position, dtype=np.float64).reshape(3)
        return int(np.argmin(np.einsum("ij,ij->i", offsets, offsets)))

    def path_cost(self, path: list[int]) -> float:
        """Sum of edge weights along ``path``."""
        return float(sum(self.edge_weight(a, b) for a, b in zip(path[:-1], path[1:])))

    def draw(self, path: str | Path, highlight: list[int] | None = None, title: str | None = None) -> Path:
        """Write a PNG of the graph seen from above (x, y), optionally with a highlighted node path."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        fig, ax = plt.subplots(figsize=(7, 7), dpi=120)
        xy = {node: (float(p[0]), float(p[1])) for node, p in enumerate(self._positions[: self._n])}
        nx.draw_networkx_edges(self.graph, xy, ax=ax, width=0.8, edge_color="#888888", arrowsize=8)
        sizes = 10 + 4 * np.sqrt(self._counts[: self._n])
        nx.draw_networkx_nodes(self.graph, xy, ax=ax, node_size=sizes, node_color="#1f77b4")
        if highlight:
            route = list(zip(highlight[:-1], highlight[1:]))
            nx.draw_networkx_nodes(self.graph, xy, nodelist=highlight, ax=ax, node_size=30, node_color="#d62728")
            nx.draw_networkx_edges(self.graph, xy, edgelist=route, ax=ax, width=2.0, edge_color="#d62728")
        ax.set_aspect("equal")
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
        ax.set_title(title or f"topology graph: {self._n} nodes, {self.graph.number_of_edges()} edges")
        ax.tick_params(left=True, bottom=True, labelleft=True, labelbottom=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return path

    def memory_bytes(self) -> int:
        """Approximate bytes held by the arrays, the spatial hash and the networkx graph."""
        arrays = self._descriptors.nbytes + self._positions.nbytes + self._counts.nbytes
        buckets = sys.getsizeof(self._buckets) + sum(sys.getsizeof(b) for b in self._buckets.values())
        buckets += sys.getsizeof(self._bucket_of) + self._n * _INT_OBJECT_BYTES
        graph = self._n * _NETWORKX_NODE_BYTES + self.graph.number_of_edges() * _NETWORKX_EDGE_BYTES
        return arrays + buckets + graph

    def state_dict(self) -> dict:
        """Nodes and edges as tensors plus the parameters."""
        n = self._n
        edges = list(self.graph.edges(data=True))
        return {
            "descriptor_dim": self.descriptor_dim,
            "delta": self.delta,
            "alpha": self.alpha,
            "beta": self.beta,
            "match_radius": self.match_radius,
            "descriptors": torch.from_numpy(self._descriptors[:n].copy()),
            "positions": torch.from_numpy(self._positions[:n].copy()),
            "counts": torch.from_numpy(self._counts[:n].copy()),
            "edge_index": torch.tensor([[a, b] for a, b, _ in edges], dtype=torch.int64).reshape(-1, 2),
            "edge_weight_sum": torch.tensor([e["weight_sum"] for _, _, e in edges], dtype=torch.float64),
            "edge_traversals": torch.tensor([e["traversals"] for _, _, e in edges], dtype=torch.int64),
            "current": -1 if self.current is None else self.current,
        }

    def load_state_dict(self, state: dict) -> None:
        """Replace the contents with a :meth:`state_dict`."""
        self.descriptor_dim = int(state["descriptor_dim"])
        self.delta = float(state["delta"])
        self.alpha = float(state["alpha"])
        self.beta = float(state["beta"])
        self.match_radius = None if state["match_radius"] is None else float(state["match_radius"])
        self.clear()
        for descriptor, position, count in zip(
            state["descriptors"].numpy(), state["positions"].numpy(), state["counts"].numpy()
        ):
            node = self._add_node(descriptor, position)
            self._counts[node] = count
        for (a, b), total, traversals in zip(
            state["edge_index"].tolist(), state["edge_weight_sum"].tolist(), state["edge_traversals"].tolist()
        ):
            self.graph.add_edge(a, b, weight_sum=total, traversals=traversals, weight=total / traversals)
        self.current = None if int(state["current"]) < 0 else int(state["current"])

    def _add_node(self, descriptor: np.ndarray, position: np.ndarray) -> int:
        node = self._n
        if node == len(self._counts):
            capacity = max(256, 2 * node)
            self._descriptors = _grown(self._descriptors, capacity)
            self._positions = _grown(self._positions, capacity)
            self._counts = _grown(self._counts, capacity)
        self._descriptors[node] = descriptor
        self._positions[node] = position
        self._counts[node] = 1
        self._n += 1
        self.graph.add_node(node)
        bucket = self._bucket(position)
        self._buckets[bucket].append(node)
        self._bucket_of.append(bucket)
        return node

    def _absorb(self, node: int, descriptor: np.ndarray, position: np.ndarray) -> None:
        """Fold one observation into the node's running means, moving it between hash buckets if needed."""
        self._counts[node] += 1
        rate = 1.0 / self._counts[node]
        self._descriptors[node] += (descriptor - self._descriptors[node]) * np.float32(rate)
        self._positions[node] += (position - self._positions[node]) * rate
        bucket = self._bucket(self._positions[node])
        if bucket != self._bucket_of[node]:
            self._buckets[self._bucket_of[node]].remove(node)
            self._buckets[bucket].append(node)
            self._bucket_of[node] = bucket

    def _traverse(self, source: int, target: int, instruction_cost: float) -> None:
        length = float(np.linalg.norm(self._positions[source] - self._positions[target]))
        weight = self.alpha * length + self.beta * float(instruction_cost)
        if self.graph.has_edge(source, target):
            edge = self.graph.edges[source, target]
            edge["weight_sum"] += weight
            edge["traversals"] += 1
            edge["weight"] = edge["weight_sum"] / edge["traversals"]
        else:
            self.graph.add_edge(source, target, weight_sum=weight, traversals=1, weight=weight)

    def _bucket(self, position: np.ndarray) -> tuple[int, int, int]:
        size = self.match_radius or 1.0
        return (math.floor(position[0] / size), math.floor(position[1] / size), math.floor(position[2] / size))

    def _nodes_near(self, position: np.ndarray) -> np.ndarray:
        """Nodes within ``match_radius`` of ``position`` (from the 27 surrounding hash buckets)."""
        bx, by, bz = self._bucket(position)
        found: list[int] = []
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for dz in (-1, 0, 1):
                    bucket = self._buckets.get((bx + dx, by + dy, bz + dz))
                    if bucket:
                        found.extend(bucket)
        if not found:
            return np.empty(0, dtype=np.int64)
        nodes = np.array(found, dtype=np.int64)
        offsets = self._positions[nodes] - position
        near = np.einsum("ij,ij->i", offsets, offsets) <= self.match_radius**2
        return nodes[near]


def _grown(array: np.ndarray, capacity: int) -> np.ndarray:
    grown = np.zeros((capacity,) + array.shape[1:], dtype=array.dtype)
    grown[: len(array)] = array
    return grown
