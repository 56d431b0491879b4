"""Privileged guidance on the street graph: distances to a goal and the oracle's next action.

The oracle moves along a shortest navigable path. "Navigable" respects the action semantics: under
``touchdown`` a node with fewer than two outgoing links can never be entered (the navigator refuses the
move), not even the goal, so the oracle then stops next to it; under ``velma`` such a node is a trap
(every action but TURN_AROUND ends the episode there), so it is entered only when it is the goal. The
actions themselves are found by simulating the navigator, so the oracle is correct for either
semantics by construction.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path

from vlnkit.envs.street.actions import StreetAction
from vlnkit.envs.street.graph import StreetGraph
from vlnkit.envs.street.navigator import NavState, Semantics, StreetNavigator

STOP, FORWARD, LEFT, RIGHT, TURN_AROUND = (int(a) for a in StreetAction)
_INF = float("inf")


def navigable_distances(graph: StreetGraph, goal: int, semantics: Semantics) -> list[float]:
    """Number of FORWARD moves from every node to ``goal`` along links the navigator allows.

    Links into nodes with fewer than two outgoing links are dropped (under ``velma``, except links into
    the goal). Unreachable nodes get ``inf``. Returned as a plain list, indexed by node, for fast
    lookups inside an environment step.
    """
    src, dst = graph.link_src, graph.out_dst
    keep = graph.out_degree[dst] >= 2
    if semantics == "velma":
        keep |= dst == goal
    n = graph.num_nodes
    reverse = csr_matrix((np.ones(int(keep.sum())), (dst[keep], src[keep])), shape=(n, n))
    return shortest_path(reverse, directed=True, unweighted=True, indices=goal).tolist()


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


def oracle_action(nav: StreetNavigator, state: NavState, goal: int, distances: list[float]) -> int:
    """The shortest-path oracle's action: STOP at the goal or when no outgoing link gets closer to it
    (unreachable, or a goal the semantics cannot enter), else a step toward the outgoing link whose
    end is nearest the goal (first in ``links.txt`` order on ties)."""
    node = state.node
    if node == goal:
        return STOP
    best, best_d = -1, _INF
    for j, d in enumerate(nav.dsts[node]):
        if distances[d] < best_d:
            best, best_d = j, distances[d]
    if best < 0 or best_d >= distances[node]:
        return STOP
    return action_toward(nav, state, best)
