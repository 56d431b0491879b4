"""Privileged guidance on the street graph: distances to a goal and the oracle's next action.

The oracle moves along a shortest navigable path to where it should stop. "Navigable" respects the
action semantics. Under ``touchdown`` a node with fewer than two outgoing links can never be entered
(the navigator refuses the move), not even the goal: the oracle then stops at the goal's nearest
enterable neighbour, which still completes the task. Under ``velma`` every action but TURN_AROUND at a
node with at most one outgoing link ends the episode, so such a node is entered only when it is the
goal and never left. The actions themselves are found by simulating the navigator, so the oracle is
correct for either semantics by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.sparse import csr_matrix

from vlnkit.envs.street.actions import StreetAction
from vlnkit.envs.street.graph import StreetGraph, bfs_hops
from vlnkit.envs.street.navigator import NavState, Semantics, StreetNavigator

STOP, FORWARD, LEFT, RIGHT, TURN_AROUND = (int(a) for a in StreetAction)
_INF = float("inf")


class NavigableDistances:
    """Distances, in FORWARD moves along links the navigator allows, to where the oracle stops.

    The reversed link matrix is built once; each goal then costs one BFS (two for the rare goal that
    needs a matrix of its own).
    """

    def __init__(self, graph: StreetGraph, semantics: Semantics) -> None:
        self.graph = graph
        self.semantics = semantics
        deg = graph.out_degree
        self._enterable = deg[graph.out_dst] >= 2
        if semantics == "velma":
            self._enterable &= deg[graph.link_src] >= 2
        self._reverse = self._reverse_matrix(self._enterable)

    def _reverse_matrix(self, keep: np.ndarray, extra: np.ndarray | None = None) -> csr_matrix:
        """Reversed kept links; ``extra`` adds a virtual node (the last) with links to those nodes."""
        g = self.graph
        n = g.num_nodes + (extra is not None)
        rows, cols = g.out_dst[keep], g.link_src[keep]
        if extra is not None:
            rows = np.concatenate([rows, np.full(len(extra), n - 1)])
            cols = np.concatenate([cols, extra])
        return csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))

    def stop_nodes(self, goal: int) -> np.ndarray:
        """Where the oracle stops: the goal, or (``touchdown``, a goal it cannot enter) the goal's
        neighbours it can enter."""
        if self.semantics == "velma" or self.graph.out_degree[goal] >= 2:
            return np.array([goal])
        return np.array(sorted(n for n in self.graph.undirected_neighbors[goal] if self.graph.out_degree[n] >= 2))

    def to(self, goal: int) -> list[float]:
        """Moves from every node to the nearest stop node of ``goal`` (0 at stop nodes, ``inf`` where
        none can be reached), as a plain list indexed by node for fast lookups in a step."""
        g = self.graph
        stops = self.stop_nodes(goal)
        if self.semantics == "velma" and g.out_degree[goal] < 2:
            return bfs_hops(self._reverse_matrix(self._enterable | (g.out_dst == goal)), goal).tolist()
        if len(stops) == 1 and stops[0] == goal:
            return bfs_hops(self._reverse, goal).tolist()
        hops = bfs_hops(self._reverse_matrix(self._enterable, extra=stops), g.num_nodes)[:-1] - 1.0
        return hops.tolist()


def action_toward(nav: StreetNavigator, state: NavState, link: int) -> int:
    """The action that brings the agent closest to moving along its node's ``link``-th outgoing link.

    A move onto the link's end is taken when some action makes it; otherwise a turn that faces the
    link; otherwise a rotation in the direction of the shorter angle to it (repeated turns walk
    through the outgoing links in order, so this converges).
    """
    node = state.node
    target = nav.dsts[node][link]
    target_heading = nav.heads[node][link]
    if state.heading == target_heading and nav.forward_moves(node, target_heading) == target:
        return FORWARD
    turns = (LEFT, RIGHT, TURN_AROUND) if nav.num_actions == 5 else (LEFT, RIGHT)
    for action in (FORWARD, *turns):
        nxt, done = nav.step(state, action)
        if not done and nxt.node == target:
            return action
    for action in turns:
        nxt, done = nav.step(state, action)
        if not done and nxt.node == node and nxt.heading == target_heading:
            return action
    return LEFT if (target_heading - state.heading) % 360.0 > 180.0 else RIGHT


def oracle_action(nav: StreetNavigator, state: NavState, distances: list[float]) -> int:
    """The shortest-path oracle's action: STOP at a stop node (distance 0) or where none can be
    reached, else a step toward the outgoing link whose end is nearest (first
    in ``links.txt`` order on ties). ``distances`` come from :meth:`NavigableDistances.to`."""
    node = state.node
    here = distances[node]
    if here == 0 or here == _INF:
        return STOP
    best, best_d = -1, _INF
    for j, d in enumerate(nav.dsts[node]):
        if distances[d] < best_d:
            best, best_d = j, distances[d]
    if best < 0 or best_d >= here:
        return STOP
    return action_toward(nav, state, best)


def gold_action(nav: StreetNavigator, state: NavState, route: Sequence[int], reached: int, fallback: int) -> int:
    """The action that follows the reference ``route`` (node indices) from its ``reached``-th node, where
    the agent stands: STOP at the route's last node, else the navigator's action toward the route's next
    node. Where the route cannot be followed (the agent is off it, or the navigator refuses the move to
    the next node) it is ``fallback`` (the shortest-path oracle's action)."""
    node = state.node
    if node != route[reached]:
        return fallback
    if reached == len(route) - 1:
        return int(StreetAction.STOP)
    target = route[reached + 1]
    link = nav.dsts[node].index(target)
    if nav.forward_moves(node, nav.heads[node][link]) != target:
        return fallback
    return action_toward(nav, state, link)
