"""Privileged guidance on the street graph: distances to a goal and the oracle's next action.

The oracle moves along a shortest navigable path. "Navigable" respects the action semantics: under
``touchdown`` a node with fewer than two outgoing links can never be entered (the navigator refuses the
move), and under ``velma`` such a node is a trap (every action but TURN_AROUND ends the episode there),
so it is only entered when it is the goal. The actions themselves are found by simulating the
navigator, so the oracle is correct for either semantics by construction.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path

from vlnkit.envs.street.actions import StreetAction
from vlnkit.envs.street.graph import StreetGraph
from vlnkit.envs.street.navigator import NavState, StreetNavigator

_TURNS = (int(StreetAction.LEFT), int(StreetAction.RIGHT), int(StreetAction.TURN_AROUND))


def navigable_distances(graph: StreetGraph, goal: int) -> np.ndarray:
    """Number of FORWARD moves from every node to ``goal`` along links the navigators allow.

    Links into nodes with fewer than two outgoing links are dropped unless they lead to the goal.
    Unreachable nodes get ``inf``. The result is a float64 array of length ``num_nodes``.
    """
    src, dst = graph.link_src, graph.out_dst
    keep = (graph.out_degree[dst] >= 2) | (dst == goal)
    n = graph.num_nodes
    reverse = csr_matrix((np.ones(int(keep.sum())), (dst[keep], src[keep])), shape=(n, n))
    return shortest_path(reverse, directed=True, unweighted=True, indices=goal)


def action_toward(nav: StreetNavigator, state: NavState, target: int) -> int:
    """The action that brings the agent closest to moving along the link ``state.node -> target``.

    A move onto ``target`` is taken when some action makes it; otherwise a turn that faces the link,
    otherwise a rotation in the direction of the shorter angle to it (which converges, because
    repeated turns walk through the outgoing links in order).
    """
    target_heading = nav.graph.link_heading(state.node, target)
    if target_heading is None:
        raise ValueError(f"no link from node {state.node} to node {target}")
    for action in (int(StreetAction.FORWARD), *_TURNS[: nav.num_actions - 2]):
        nxt, done = nav.step(state, action)
        if not done and nxt.node == target:
            return action
    for action in _TURNS[: nav.num_actions - 2]:
        nxt, done = nav.step(state, action)
        if not done and nxt.node == state.node and nxt.heading == target_heading:
            return action
    delta = (target_heading - state.heading) % 360.0
    return int(StreetAction.LEFT) if delta > 180.0 else int(StreetAction.RIGHT)


def oracle_action(nav: StreetNavigator, state: NavState, goal: int, distances: np.ndarray) -> int:
    """The shortest-path oracle's action: STOP at the goal (or when it is unreachable), else a step
    toward the outgoing link whose end is nearest the goal (first in ``links.txt`` order on ties)."""
    if state.node == goal:
        return int(StreetAction.STOP)
    dsts, _ = nav.graph.out_links(state.node)
    if len(dsts) == 0:
        return int(StreetAction.STOP)
    d = distances[dsts]
    best = int(np.argmin(d))
    if not np.isfinite(d[best]):
        return int(StreetAction.STOP)
    return action_toward(nav, state, int(dsts[best]))
