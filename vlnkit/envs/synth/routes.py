"""Route sampling on the synthetic street graph, shaped like Touchdown and Map2Seq routes.

A route is a walk along directed links: it starts mid-block (not at or next to an intersection),
goes straight through some intersections and turns at others, and stops mid-block. Every change of
direction along a route is unambiguous: straight is within :data:`STRAIGHT_MAX_DEG` of the incoming
heading, a left or right turn between :data:`TURN_MIN_DEG` and :data:`TURN_MAX_DEG`, and turning around
(only where a pattern asks for it) reverses it; turns are only taken at intersections whose exits all
fall in one of those classes, so "turn left" names exactly one exit.

Besides plain routes, two patterns come back to a landmark passed earlier, so that an agent has to
remember it:

* ``return``: pass a landmark, go on to the next intersection (or the end of the street), turn around,
  come back and either stop at the landmark or turn at the first intersection after it.
* ``loop``: pass a landmark at an intersection, go around the block and either stop when back at the
  landmark or go on from that intersection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlnkit.envs.synth.network import StreetNetwork
from vlnkit.envs.synth.scene import ALL_CATEGORIES, Scene

STRAIGHT_MAX_DEG = 30.0
TURN_MIN_DEG = 60.0
TURN_MAX_DEG = 120.0
MIN_ROUTE_NODES = 30
MAX_ROUTE_NODES = 60
ANCHOR_NEAR_M = 18.0
ANCHOR_OUT_OF_SIGHT_M = 30.0


def signed_turn(h_in: float, h_out: float) -> float:
    """Signed change of heading in degrees (-180, 180]; positive is clockwise (to the right)."""
    d = (h_out - h_in) % 360.0
    return d - 360.0 if d > 180.0 else d


def turn_class(delta: float) -> str | None:
    """``straight``, ``left``, ``right`` or ``around`` for a signed heading change, ``None`` if ambiguous."""
    a = abs(delta)
    if a <= STRAIGHT_MAX_DEG:
        return "straight"
    if TURN_MIN_DEG <= a <= TURN_MAX_DEG:
        return "right" if delta > 0 else "left"
    if a >= 180.0 - STRAIGHT_MAX_DEG:
        return "around"
    return None


@dataclass(frozen=True)
class Route:
    """A sampled route and, for memory patterns, the landmark it comes back to.

    Attributes:
        nodes: node indices, start first.
        pattern: ``plain``, ``return`` or ``loop``.
        anchor: landmark index the route comes back to (-1 for plain routes).
        first_pass: route index at which the anchor is passed the first time (-1 for plain routes).
        back_at: route index at which the route is back at the anchor (-1 for plain routes).
        u_turn: route index of the turn-around of a ``return`` route (-1 otherwise).
    """

    nodes: tuple[int, ...]
    pattern: str = "plain"
    anchor: int = -1
    first_pass: int = -1
    back_at: int = -1
    u_turn: int = -1


class _Failed(Exception):
    """A sampling attempt ran into a dead end, a region border or an ambiguous junction."""


class RouteSampler:
    """Samples routes of one pattern inside one region of the city."""

    def __init__(self, net: StreetNetwork, scene: Scene, rng: np.random.Generator) -> None:
        g = net.graph
        self.net = net
        self.scene = scene
        self.rng = rng
        self.degree = g.out_degree
        self.junction = self.degree >= 3
        near_junction = self.junction.copy()
        near_junction[g.link_src[self.junction[g.out_dst]]] = True
        self.start_ok = (self.degree == 2) & ~near_junction
        self.salience = np.array([ALL_CATEGORIES[c].salience for c in scene.category])
        self.out: list[list[tuple[int, float]]] = [[] for _ in range(g.num_nodes)]
        for src, dst, h in zip(g.link_src.tolist(), g.out_dst.tolist(), g.out_heading.tolist()):
            self.out[src].append((dst, h))
        self.headings = {(src, dst): h for src, links in enumerate(self.out) for dst, h in links}

    def link_heading(self, src: int, dst: int) -> float:
        """Heading of the link ``src -> dst`` (which must exist)."""
        return self.headings[(src, dst)]

    def exits(self, prev: int, cur: int) -> list[tuple[int, str | None]]:
        """Links out of ``cur`` other than back to ``prev``, with their turn class on arrival from ``prev``."""
        h_in = self.headings[(prev, cur)]
        return [(d, turn_class(signed_turn(h_in, h))) for d, h in self.out[cur] if d != prev]

    def sample(self, region: np.ndarray, pattern: str, length: tuple[int, int]) -> Route | None:
        """One route of ``pattern`` with all nodes in ``region`` and a node count in ``length``
        (inclusive), or ``None`` when this attempt failed."""
        starts = np.flatnonzero(self.start_ok & region)
        if not len(starts):
            return None
        target = int(self.rng.integers(length[0], length[1] + 1))
        start = int(starts[self.rng.integers(len(starts))])
        nxt = [d for d, _ in self.out[start] if region[d]]
        if not nxt:
            return None
        path = [start, nxt[int(self.rng.integers(len(nxt)))]]
        try:
            if pattern == "return":
                route = self._return_route(path, region, target)
            elif pattern == "loop":
                route = self._loop_route(path, region, target)
            else:
                self._walk(path, region, target)
                route = Route(tuple(path))
        except _Failed:
            return None
        return route if self._valid(route, length) else None

    def _moves(
        self, path: list[int], region: np.ndarray, allow: tuple[str, ...], revisit: int = -1
    ) -> list[tuple[str, int]]:
        """The allowed moves from the end of ``path`` as (class, next node).

        At an intersection a turn is only offered when every exit has a clear class; nodes outside
        ``region`` or already on the path are refused, except ``revisit``.
        """
        prev, cur = path[-2], path[-1]
        exits = self.exits(prev, cur)
        clean = all(k is not None for _, k in exits)
        moves = []
        for kind in allow:
            same = [d for d, k in exits if k == kind]
            if len(same) != 1 or (kind != "straight" and self.junction[cur] and not clean):
                continue
            d = same[0]
            if region[d] and (d == revisit or d not in path):
                moves.append((kind, d))
        return moves

    def _ordered(self, moves: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """``moves`` in a random order that favours going straight two to one."""
        if len(moves) == 1:
            return moves
        weights = np.array([2.0 if k == "straight" else 1.0 for k, _ in moves])
        keys = np.log(self.rng.random(len(moves))) / weights
        return [moves[i] for i in np.argsort(-keys, kind="stable").tolist()]

    def _step(self, path: list[int], region: np.ndarray, allow: tuple[str, ...], revisit: int = -1) -> str:
        """Append one node chosen among the allowed moves; returns the move's class."""
        moves = self._moves(path, region, allow, revisit)
        if not moves:
            raise _Failed
        kind, d = self._ordered(moves)[0]
        path.append(d)
        return kind

    def _walk(self, path: list[int], region: np.ndarray, target: int, final: bool = True) -> None:
        """Extend ``path`` to at least ``target`` nodes, going straight or turning at random and
        backtracking from dead ends and borders. A ``final`` walk ends mid-block, and the whole path
        crosses at least two intersections and turns at least once."""
        budget = [300]
        if not self._extend(path, region, target, final, budget):
            raise _Failed

    def _extend(self, path: list[int], region: np.ndarray, target: int, final: bool, budget: list[int]) -> bool:
        if len(path) >= target and (not final or (not self.junction[path[-1]] and self._varied(path))):
            return True
        budget[0] -= 1
        if len(path) >= MAX_ROUTE_NODES or budget[0] < 0:
            return False
        moves = self._moves(path, region, ("straight", "left", "right"))
        for _, d in self._ordered(moves) if moves else []:
            path.append(d)
            if self._extend(path, region, target, final, budget):
                return True
            path.pop()
        return False

    def _varied(self, path: list[int]) -> bool:
        """At least two distinct intersections and one change of direction along ``path``."""
        if np.count_nonzero(self.junction[list(set(path))]) < 2:
            return False
        return any(self._bends(path, i) for i in range(1, len(path) - 1))

    def _straight_to_junction(self, path: list[int], region: np.ndarray, limit: int) -> None:
        """Go straight until the path ends at an intersection or a dead end."""
        for _ in range(limit):
            cur = path[-1]
            if self.junction[cur] or self.degree[cur] == 1:
                return
            self._step(path, region, ("straight",))
        raise _Failed

    def _anchor_near(self, node: int, travel: float, max_dist: float) -> int:
        """A salient landmark beside ``node`` (left or right of ``travel``), chosen by salience, or -1."""
        lms, hs, ds = self.scene.visible(node)
        rel = (hs - travel) % 360.0
        side = ((rel > 30.0) & (rel < 150.0)) | ((rel > 210.0) & (rel < 330.0))
        ok = np.flatnonzero((ds <= max_dist) & side & (self.salience[lms] >= 1.5))
        if not len(ok):
            return -1
        w = self.salience[lms[ok]]
        return int(lms[ok[int(self.rng.choice(len(ok), p=w / w.sum()))]])

    def _bends(self, path: list[int], i: int) -> bool:
        """Whether the path changes direction at index ``i``."""
        h_in = self.link_heading(path[i - 1], path[i])
        return turn_class(signed_turn(h_in, self.link_heading(path[i], path[i + 1]))) != "straight"

    def _distance(self, node: int, landmark: int) -> float:
        return float(np.hypot(*(self.scene.xy[landmark] - self.net.xy[node])))

    def _return_route(self, path: list[int], region: np.ndarray, target: int) -> Route:
        self._walk(path, region, int(self.rng.integers(8, max(9, target // 2 - 4))), final=False)
        anchor, first = -1, -1
        for _ in range(15):
            cur = path[-1]
            if not self.junction[cur] and self.degree[cur] == 2:
                anchor = self._anchor_near(cur, self.link_heading(path[-2], cur), 12.0)
                if anchor >= 0:
                    first = len(path) - 1
                    break
            self._step(path, region, ("straight",))
        if anchor < 0:
            raise _Failed
        while True:
            self._step(path, region, ("straight",))
            self._straight_to_junction(path, region, 25)
            if self._distance(path[-1], anchor) > ANCHOR_OUT_OF_SIGHT_M:
                break
            if self.degree[path[-1]] == 1:
                raise _Failed
        u_turn = len(path) - 1
        back = path[first:u_turn][::-1]
        if len(path) + len(back) >= MIN_ROUTE_NODES and self.rng.random() < 0.5:
            path.extend(back)
            return Route(tuple(path), "return", anchor, first, len(path) - 1, u_turn)
        turn_at = next((i for i in range(first - 1, 0, -1) if self.junction[path[i]]), -1)
        if turn_at < 0 or any(self._bends(path, i) for i in range(turn_at + 1, first)):
            raise _Failed
        path.extend(path[turn_at:u_turn][::-1])
        back_at = u_turn + (u_turn - first)
        self._step(path, region, ("left", "right"))
        self._walk(path, region, target)
        return Route(tuple(path), "return", anchor, first, back_at, u_turn)

    def _loop_route(self, path: list[int], region: np.ndarray, target: int) -> Route:
        self._walk(path, region, int(self.rng.integers(3, 10)), final=False)
        anchor = -1
        for _ in range(3):
            self._straight_to_junction(path, region, 25)
            if self.degree[path[-1]] < 3:
                raise _Failed
            anchor = self._anchor_near(path[-1], self.link_heading(path[-2], path[-1]), ANCHOR_NEAR_M)
            if anchor >= 0:
                break
            self._step(path, region, ("straight",))
        if anchor < 0:
            raise _Failed
        corner = path[-1]
        first = len(path) - 1
        self._step(path, region, ("straight",))
        side = ("left", "right")[int(self.rng.integers(2))]
        turns = 0
        while path[-1] != corner:
            if len(path) >= MAX_ROUTE_NODES or turns > 4:
                raise _Failed
            if self.junction[path[-1]]:
                try:
                    self._step(path, region, (side,), revisit=corner)
                    turns += 1
                    continue
                except _Failed:
                    pass
            turns += self._step(path, region, ("straight", side), revisit=corner) != "straight"
        if turns < 2:
            raise _Failed
        back_at = len(path) - 1
        if self.rng.random() < 0.4:
            path.pop()
            return Route(tuple(path), "loop", anchor, first, len(path) - 1)
        self._step(path, region, ("straight", "left", "right"))
        self._walk(path, region, target)
        return Route(tuple(path), "loop", anchor, first, back_at)

    def _valid(self, route: Route, length: tuple[int, int]) -> bool:
        """Length, start, goal, intersections and turns fit a Touchdown-like route."""
        nodes = route.nodes
        if not (length[0] <= len(nodes) <= length[1]) or self.junction[nodes[-1]]:
            return False
        if np.count_nonzero(self.junction[list(set(nodes))]) < 2:
            return False
        headings = [self.link_heading(a, b) for a, b in zip(nodes[:-1], nodes[1:])]
        turns = 0
        for i in range(1, len(nodes) - 1):
            kind = turn_class(signed_turn(headings[i - 1], headings[i]))
            if kind is None or (kind == "around" and i != route.u_turn):
                return False
            turns += kind != "straight"
        return turns >= 1
