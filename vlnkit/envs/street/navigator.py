"""Action semantics on the street graph: a single-agent navigator and a batched one on arrays.

Two published semantics are implemented and selected by name:

``touchdown`` (the lil-lab Touchdown navigator)
    FORWARD follows the outgoing link whose heading equals the agent's heading (staying put when there
    is none) and the heading then snaps to the outgoing link at the new node closest to the old heading.
    LEFT/RIGHT rotate in place to the next outgoing heading counter-clockwise/clockwise (not the
    current one). A move whose target node has fewer than two outgoing links is refused: the state does
    not change. TURN_AROUND does not exist.

``velma`` (VELMA/FLAME)
    Actions are first validated: at a node with at most one outgoing link anything but STOP or
    TURN_AROUND becomes STOP; on a two-link street segment LEFT/RIGHT become FORWARD. FORWARD along an
    exactly matching heading moves and keeps the heading. TURN_AROUND faces the outgoing link closest to
    the opposite heading. On a segment FORWARD takes the link closest to the heading. At an intersection
    reached on the previous step, the link back is excluded, the remaining links are ordered by relative
    angle and FORWARD takes the middle one (of two middles, the one closer to the heading); at a
    three-way intersection LEFT/RIGHT take the leftmost/rightmost; otherwise LEFT/RIGHT rotate from the
    forward heading to the nearest other link counter-clockwise/clockwise.

Ties are broken by the order of ``links.txt``, as in the reference code. Both navigators implement
exactly the same rules (``BatchedNavigator`` is tested against ``StreetNavigator`` on random action
sequences).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from vlnkit.envs.street.actions import StreetAction
from vlnkit.envs.street.graph import StreetGraph

Semantics = Literal["touchdown", "velma"]
SEMANTICS: tuple[str, ...] = ("touchdown", "velma")

STOP, FORWARD, LEFT, RIGHT, TURN_AROUND = (int(a) for a in StreetAction)


def _angle_diff(a: float, b: float) -> float:
    return 180.0 - abs(abs(a - b) - 180.0)


def _relative_angle(heading: float, target: float) -> float:
    """Signed angle from ``heading`` to ``target`` in (-180, 180]; negative is to the left."""
    angle = target - heading
    if angle > 180.0:
        angle -= 360.0
    if angle <= -180.0:
        angle += 360.0
    return angle


def _closest(headings: list[float], heading: float) -> float:
    best = headings[0]
    best_diff = _angle_diff(best, heading)
    for h in headings[1:]:
        d = _angle_diff(h, heading)
        if d < best_diff:
            best, best_diff = h, d
    return best


@dataclass(frozen=True, slots=True)
class NavState:
    """A navigator state: current node, heading in degrees, and the node of the previous state
    (``-1`` before the first step and always under ``touchdown`` semantics; VELMA's intersection rule
    needs it)."""

    node: int
    heading: float
    prev_node: int = -1


class StreetNavigator:
    """Steps one agent on a :class:`StreetGraph` under the chosen action semantics.

    The navigator is pure: :meth:`step` maps a state and an action to the next state and a flag that
    says whether the episode ended (STOP, or a VELMA action validated into STOP). Step limits belong to
    the environment.
    """

    def __init__(self, graph: StreetGraph, semantics: Semantics = "touchdown") -> None:
        self.num_actions = self.action_count(semantics)
        self.graph = graph
        self.semantics = semantics
        ptr = graph.out_ptr.tolist()
        dst = graph.out_dst.tolist()
        head = graph.out_heading.tolist()
        self.heads: list[list[float]] = [head[ptr[i] : ptr[i + 1]] for i in range(graph.num_nodes)]
        """Per node, the headings of its outgoing links in file order (plain lists: fast in a step)."""
        self.dsts: list[list[int]] = [dst[ptr[i] : ptr[i + 1]] for i in range(graph.num_nodes)]
        """Per node, the destinations of its outgoing links in file order."""
        self._by_heading: list[dict[float, int]] = []
        for hs, ds in zip(self.heads, self.dsts):
            table: dict[float, int] = {}
            for h, d in zip(hs, ds):
                table.setdefault(h, d)
            self._by_heading.append(table)
        self._memo: dict[tuple[int, float, int, int], tuple[NavState, bool]] = {}

    @staticmethod
    def action_count(semantics: str) -> int:
        """Number of actions under ``semantics``: 4 for touchdown, 5 (with TURN_AROUND) for velma."""
        if semantics not in SEMANTICS:
            raise ValueError(f"unknown action semantics {semantics!r}; expected one of {SEMANTICS}")
        return 4 if semantics == "touchdown" else 5

    def start(self, node: int, heading: float) -> NavState:
        """The initial state at ``node``, the heading snapped to the nearest outgoing link."""
        heading = float(heading) % 360.0
        hs = self.heads[node]
        return NavState(node, _closest(hs, heading) if hs else heading, -1)

    def forward_moves(self, node: int, heading: float) -> int | None:
        """Where FORWARD leads from ``node`` when facing exactly the link ``heading``, or ``None`` when
        the semantics refuse the move there (a dead end under either semantics)."""
        nxt = self._by_heading[node].get(heading)
        if nxt is None:
            return None
        if self.semantics == "touchdown":
            return nxt if len(self.heads[nxt]) >= 2 else None
        return nxt if len(self.heads[node]) >= 2 else None

    def step(self, state: NavState, action: int) -> tuple[NavState, bool]:
        """Apply ``action``; returns the next state and whether the episode ended."""
        if not 0 <= action < self.num_actions:
            raise ValueError(f"action {action} is not valid under {self.semantics} semantics (0..{self.num_actions - 1})")
        prev = state.prev_node if self.semantics == "velma" else -1
        key = (state.node, state.heading, prev, action)
        hit = self._memo.get(key)
        if hit is None:
            if self.semantics == "touchdown":
                hit = self._step_touchdown(state, action)
            else:
                hit = self._step_velma(state, action)
            self._memo[key] = hit
        return hit

    def _step_touchdown(self, state: NavState, action: int) -> tuple[NavState, bool]:
        node, heading = state.node, state.heading
        if action == STOP:
            return state, True
        if action == FORWARD:
            nxt = self._by_heading[node].get(heading, node)
            candidates = self.heads[nxt]
            new_heading = _closest(candidates, heading) if candidates else heading
        else:
            nxt = node
            new_heading = heading
            best = float("inf")
            for h in self.heads[node]:
                if h == heading:
                    continue
                d = (heading - h) % 360.0 if action == LEFT else (h - heading) % 360.0
                if d < best:
                    best, new_heading = d, h
        if len(self.heads[nxt]) < 2:
            return state, False
        return NavState(nxt, new_heading), False

    def _step_velma(self, state: NavState, action: int) -> tuple[NavState, bool]:
        node, heading = state.node, state.heading
        heads = self.heads[node]
        n = len(heads)
        if n == 0:
            return state, True
        if n <= 1 and action not in (STOP, TURN_AROUND):
            action = STOP
        elif n == 2 and action in (LEFT, RIGHT):
            action = FORWARD
        if action == STOP:
            return state, True
        table = self._by_heading[node]
        if action == FORWARD and heading in table:
            return NavState(table[heading], heading, node), False
        if action == TURN_AROUND:
            return NavState(node, _closest(heads, (heading - 180.0) % 360.0), node), False
        if n == 2:
            new_heading = _closest(heads, heading)
        else:
            new_heading = self._intersection_heading(state, action)
        if action == FORWARD:
            return NavState(table[new_heading], new_heading, node), False
        return NavState(node, new_heading, node), False

    def _intersection_heading(self, state: NavState, action: int) -> float:
        node, heading, prev = state.node, state.heading, state.prev_node
        out = list(self.heads[node])
        forward_heading = heading
        if prev not in (-1, node):
            dsts = self.dsts[node]
            if prev in dsts:
                del out[dsts.index(prev)]
            ordered = sorted(out, key=lambda h: _relative_angle(heading, h))
            m = len(ordered)
            if m % 2 == 0:
                forward_heading = _closest([ordered[m // 2 - 1], ordered[m // 2]], heading)
            else:
                forward_heading = ordered[m // 2]
            if len(self.heads[node]) == 3 and action in (LEFT, RIGHT):
                return ordered[0] if action == LEFT else ordered[-1]
        if action == FORWARD:
            return forward_heading
        best, best_h = float("inf"), forward_heading
        for h in out:
            if h == forward_heading:
                continue
            d = (forward_heading - h) % 360.0 if action == LEFT else (h - forward_heading) % 360.0
            if d < best:
                best, best_h = d, h
        return best_h


class BatchedNavigator:
    """Steps many agents at once with numpy, with exactly the semantics of :class:`StreetNavigator`.

    The rules are written once, on arrays (:meth:`transition`). At construction they are applied to
    every reachable state (node, heading, previous node) to compile a transition table, so that a step
    of the whole batch is a single table lookup. A batch that starts in a state outside the table (a
    node without outgoing links keeps an arbitrary heading) is stepped with :meth:`transition` directly.
    ``node``, ``heading``, ``prev_node`` and ``done`` give the batch's state as arrays.
    """

    def __init__(self, graph: StreetGraph, semantics: Semantics = "touchdown") -> None:
        self.num_actions = StreetNavigator.action_count(semantics)
        self.graph = graph
        self.semantics = semantics
        deg = graph.out_degree
        width = max(int(deg.max(initial=0)), 1)
        slot = np.arange(width)
        valid = slot[None, :] < deg[:, None]
        flat = np.minimum(graph.out_ptr[:-1, None] + slot[None, :], max(graph.num_links - 1, 0))
        self.degree = deg.astype(np.int64)
        self.valid = valid
        self.heads = np.where(valid, graph.out_heading[flat] if graph.num_links else 0.0, np.nan)
        self.dsts = np.where(valid, graph.out_dst[flat] if graph.num_links else 0, -1).astype(np.int64)
        self.width = width
        self._compile()
        self.reset(np.zeros(0, dtype=np.int64), np.zeros(0))

    def _key(self, node: np.ndarray, heading: np.ndarray, prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """An int64 key per state and whether the state's heading is a link heading (keyable)."""
        h = np.searchsorted(self._head_values, heading)
        h = np.minimum(h, len(self._head_values) - 1)
        ok = self._head_values[h] == heading
        n1 = self.graph.num_nodes + 1
        return (node * len(self._head_values) + h) * n1 + (prev + 1), ok

    def _compile(self) -> None:
        """Enumerate the states reachable from every start state and tabulate each action's result."""
        g = self.graph
        self._head_values = np.unique(g.out_heading) if g.num_links else np.zeros(1)
        node = g.link_src.astype(np.int64)
        heading = g.out_heading.astype(np.float64)
        prev = np.full(len(node), -1, dtype=np.int64)
        actions = np.arange(self.num_actions)
        while True:
            keys, _ = self._key(node, heading, prev)
            keys, first = np.unique(keys, return_index=True)
            node, heading, prev = node[first], heading[first], prev[first]
            k = len(node)
            rep = np.repeat(actions, k)
            nn, nh, npv, stop = self.transition(np.tile(node, self.num_actions), np.tile(heading, self.num_actions),
                                                np.tile(prev, self.num_actions), rep)
            new_keys, _ = self._key(nn, nh, npv)
            missing = ~np.isin(new_keys, keys)
            if not missing.any():
                break
            node = np.concatenate([node, nn[missing]])
            heading = np.concatenate([heading, nh[missing]])
            prev = np.concatenate([prev, npv[missing]])
        self._keys = keys
        self._state_node, self._state_heading, self._state_prev = node, heading, prev
        self._table = np.searchsorted(keys, new_keys).reshape(self.num_actions, k).T.copy()
        self._stops = stop.reshape(self.num_actions, k).T.copy()

    def reset(self, nodes: np.ndarray, headings: np.ndarray) -> None:
        """Start one agent per entry of ``nodes``, headings snapped to the nearest outgoing link."""
        node = np.asarray(nodes, dtype=np.int64).copy()
        heading = np.asarray(headings, dtype=np.float64) % 360.0
        has = self.degree[node] > 0
        heading = np.where(has, self._closest(self.heads[node], heading), heading)
        prev = np.full(len(node), -1, dtype=np.int64)
        self.done = np.zeros(len(node), dtype=bool)
        keys, ok = self._key(node, heading, prev)
        ids = np.searchsorted(self._keys, keys)
        ids = np.minimum(ids, len(self._keys) - 1)
        if np.all(ok) and np.all(self._keys[ids] == keys):
            self._ids: np.ndarray | None = ids
        else:
            self._ids = None
            self._arrays = (node, heading, prev)

    @property
    def uses_table(self) -> bool:
        """Whether the batch steps through the compiled transition table (the fast path)."""
        return self._ids is not None

    @property
    def node(self) -> np.ndarray:
        """Current node of each agent."""
        return self._state_node[self._ids] if self._ids is not None else self._arrays[0]

    @property
    def heading(self) -> np.ndarray:
        """Current heading of each agent, degrees."""
        return self._state_heading[self._ids] if self._ids is not None else self._arrays[1]

    @property
    def prev_node(self) -> np.ndarray:
        """Node of each agent's previous state (-1 before the first step and under ``touchdown``)."""
        return self._state_prev[self._ids] if self._ids is not None else self._arrays[2]

    def step(self, actions: np.ndarray) -> np.ndarray:
        """Apply one action per agent; returns the ``done`` flags after the step."""
        actions = np.asarray(actions, dtype=np.int64)
        if actions.shape != self.done.shape:
            raise ValueError(f"expected {self.done.shape[0]} actions, got shape {actions.shape}")
        if np.any((actions < 0) | (actions >= self.num_actions)):
            raise ValueError(f"actions must be in 0..{self.num_actions - 1} under {self.semantics} semantics")
        active = ~self.done
        if self._ids is not None:
            ids = self._ids
            self._ids = np.where(active, self._table[ids, actions], ids)
            self.done = self.done | (active & self._stops[ids, actions])
            return self.done
        node, heading, prev = self._arrays
        nn, nh, npv, stop = self.transition(node, heading, prev, actions)
        moving = active & ~stop
        self._arrays = (np.where(moving, nn, node), np.where(moving, nh, heading), np.where(moving, npv, prev))
        self.done = self.done | (active & stop)
        return self.done

    def transition(
        self, node: np.ndarray, heading: np.ndarray, prev: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The semantics on arrays: next (node, heading, prev) per state and whether the action stops."""
        if self.semantics == "touchdown":
            return self._touchdown(node, heading, prev, actions)
        return self._velma(node, heading, prev, actions)

    @staticmethod
    def _closest(heads: np.ndarray, heading: np.ndarray) -> np.ndarray:
        diff = 180.0 - np.abs(np.abs(heads - heading[:, None]) - 180.0)
        diff = np.where(np.isnan(diff), np.inf, diff)
        return np.take_along_axis(heads, diff.argmin(axis=1)[:, None], axis=1)[:, 0]

    @staticmethod
    def _rotate(heads: np.ndarray, heading: np.ndarray, left: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest allowed heading counter-clockwise (``left``) or clockwise; also whether one exists."""
        ccw = (heading[:, None] - heads) % 360.0
        cw = (heads - heading[:, None]) % 360.0
        d = np.where(left[:, None], ccw, cw)
        d = np.where(allowed & (heads != heading[:, None]), d, np.inf)
        j = d.argmin(axis=1)
        found = np.isfinite(d[np.arange(len(j)), j])
        return np.take_along_axis(heads, j[:, None], axis=1)[:, 0], found

    def _touchdown(self, node: np.ndarray, heading: np.ndarray, prev: np.ndarray, actions: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        heads = self.heads[node]
        match = heads == heading[:, None]
        has_match = match.any(axis=1)
        j = match.argmax(axis=1)
        forward = actions == FORWARD
        nxt = np.where(forward & has_match, self.dsts[node, j], node)
        has_out = self.degree[nxt] > 0
        fwd_heading = np.where(has_out, self._closest(self.heads[nxt], heading), heading)
        turn_heading, found = self._rotate(heads, heading, actions == LEFT, self.valid[node])
        turn_heading = np.where(found, turn_heading, heading)
        new_heading = np.where(forward, fwd_heading, turn_heading)
        stop = actions == STOP
        moving = ~stop & (self.degree[nxt] >= 2)
        return np.where(moving, nxt, node), np.where(moving, new_heading, heading), prev, stop

    def _velma(self, node: np.ndarray, heading: np.ndarray, prev: np.ndarray, actions: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        batch = np.arange(len(node))
        deg = self.degree[node]
        heads = self.heads[node]
        dsts = self.dsts[node]
        valid = self.valid[node]
        a = np.where(deg == 0, STOP, actions)
        a = np.where((deg <= 1) & (a != STOP) & (a != TURN_AROUND), STOP, a)
        a = np.where((deg == 2) & ((a == LEFT) | (a == RIGHT)), FORWARD, a)
        stop = a == STOP

        match = heads == heading[:, None]
        has_match = match.any(axis=1)
        exact = (a == FORWARD) & has_match

        around = self._closest(heads, (heading - 180.0) % 360.0)
        segment = self._closest(heads, heading)

        arrived = (prev != -1) & (prev != node)
        back = arrived[:, None] & (dsts == prev[:, None])
        first_back = back & (np.cumsum(back, axis=1) == 1)
        allowed = valid & ~first_back
        rel = heads - heading[:, None]
        rel = np.where(rel > 180.0, rel - 360.0, rel)
        rel = np.where(rel <= -180.0, rel + 360.0, rel)
        rel = np.where(allowed, rel, np.inf)
        order = np.argsort(rel, axis=1, kind="stable")
        ordered = np.take_along_axis(heads, order, axis=1)
        m = allowed.sum(axis=1)
        mid = np.maximum(m // 2, 0)
        lower = ordered[batch, np.maximum(mid - 1, 0)]
        upper = ordered[batch, np.minimum(mid, self.width - 1)]
        even_pick = np.where(_np_angle_diff(upper, heading) < _np_angle_diff(lower, heading), upper, lower)
        middle = np.where(m % 2 == 0, even_pick, upper)
        forward_heading = np.where(arrived, middle, heading)
        leftmost = ordered[batch, 0]
        rightmost = ordered[batch, np.maximum(m - 1, 0)]
        three_way = arrived & (deg == 3)
        rot_allowed = np.where(arrived[:, None], allowed, valid)
        rotated, found = self._rotate(heads, forward_heading, a == LEFT, rot_allowed)
        rotated = np.where(found, rotated, forward_heading)
        turn = np.where(three_way, np.where(a == LEFT, leftmost, rightmost), rotated)
        inter = np.where(a == FORWARD, forward_heading, turn)

        new_heading = np.where(deg == 2, segment, inter)
        new_heading = np.where(a == TURN_AROUND, around, new_heading)
        new_heading = np.where(exact | stop, heading, new_heading)
        target = heads == new_heading[:, None]
        jt = target.argmax(axis=1)
        moves = (a == FORWARD) & ~stop
        nxt = np.where(moves, dsts[batch, jt], node)

        return np.where(stop, node, nxt), new_heading, np.where(stop, prev, node), stop




def _np_angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 180.0 - np.abs(np.abs(a - b) - 180.0)
