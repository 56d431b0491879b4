"""Episodes of the synthetic city: geographic splits, routes with instructions, release records.

Each split samples routes inside its own area of the city (train: the western half of the grid frame;
dev and test: the northern and southern quarters of the rest), so dev and test are unseen areas as in
VELMA's ``*_unseen`` splits. Episodes alternate at random between the two record layouts, as in
VELMA's merged files:

* Touchdown: ``city`` ("synth"), ``route_id``, ``pre_pano``, ``main_pano``, ``post_pano``,
  ``main_heading`` and ``main_static_center`` (strings, as in the release), ``navigation_text``,
  ``td_location_text``, ``full_text`` (navigation text plus where Touchdown is hidden), ``elapsed``,
  ``failure_stats``, ``num_finished``, ``route_panoids``, ``start_heading`` (0.0) and ``end_heading``
  (bearing from the goal to the object hiding Touchdown, sometimes off by a full turn as in the release).
* Map2Seq: ``id``, ``instructions_id``, ``route_panoids``, ``navigation_text`` and ``start_heading`` (the
  integer heading of the route's first link).

Both carry four extra fields: ``landmarks`` (the landmark phrases of the navigation text, in order of
first mention), ``landmark_ids`` (the ``graph/landmarks.json`` id of each), ``memory`` (``return``,
``loop``, ``count`` or ``null``; see :mod:`vlnkit.envs.synth.routes`) and ``memory_gap`` (the moves between
seeing what must be remembered and needing it; ``null`` without a memory pattern).

Besides the mixed splits there is a ``memory`` split for memory ablations (:meth:`EpisodeMaker.memory_split`):
the same number of episodes of each kind in :data:`MEMORY_KINDS` (``plain``: no memory needed), sampled
in the unseen eastern half after the other splits, so that adding it left their bytes unchanged.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable

import numpy as np

from vlnkit.envs.datasets import StreetEpisode
from vlnkit.envs.synth.instructions import Instruction, describe_route
from vlnkit.envs.synth.network import StreetNetwork
from vlnkit.envs.synth.routes import MAX_ROUTE_NODES, MIN_ROUTE_NODES, Route, RouteSampler

SPLITS = ("train", "dev", "test")
MEMORY_SPLIT = "memory"
MEMORY_KINDS = ("plain", "count", "return", "loop")
"""Episode kinds of the memory split: what following the text needs to remember (``plain``: nothing)."""
MEMORY_SPLIT_ATTEMPTS = 200
"""Failed episodes in a row after which :meth:`EpisodeMaker.memory_split` gives up on a kind."""
PATTERNS = ("plain", "return", "loop")
PATTERN_SHARES = (0.6, 0.22, 0.18)
MAP2SEQ_PLAIN_NODES = (35, 45)
ATTEMPTS_PER_PATTERN = 40
HIDING_OBJECTS = ("fire hydrant", "mailbox", "bench", "trash can", "planter", "bike rack", "newsstand", "phone booth",
                  "bus stop", "parked car", "tree", "stop sign", "construction barrier", "food cart", "scaffolding")


def split_regions(net: StreetNetwork) -> dict[str, np.ndarray]:
    """Node masks of the three areas the splits sample routes in."""
    width, height = net.extent
    u, v = net.uv[:, 0], net.uv[:, 1]
    east = u >= 0.5 * width
    return {"train": ~east, "dev": east & (v >= 0.5 * height), "test": east & (v < 0.5 * height)}


class EpisodeMaker:
    """Samples routes, writes their instructions and turns them into release records."""

    def __init__(self, net: StreetNetwork, sampler: RouteSampler, rng: np.random.Generator) -> None:
        self.net = net
        self.sampler = sampler
        self.scene = sampler.scene
        self.rng = rng
        self.next_id = 1
        self.seen_routes: set[tuple[int, ...]] = set()

    def split(self, region: np.ndarray, count: int) -> list[StreetEpisode]:
        """``count`` episodes with routes inside ``region``, kinds and patterns mixed at random."""
        episodes = []
        while len(episodes) < count:
            style = "touchdown" if self.rng.random() < 0.5 else "map2seq"
            pattern = PATTERNS[int(self.rng.choice(len(PATTERNS), p=PATTERN_SHARES))]
            made = self._episode(region, style, pattern) or self._episode(region, style, "plain")
            if made is None:
                raise RuntimeError("synthetic city: no route fits this area; the city is too small")
            episodes.append(made)
        return episodes

    def memory_split(self, region: np.ndarray, per_kind: int) -> list[StreetEpisode]:
        """``per_kind`` episodes of each of :data:`MEMORY_KINDS` with routes inside ``region``, kinds
        interleaved, styles at random. ``count`` episodes are plain routes whose stop counts a category
        ("the second cafe"), ``plain`` ones plain routes whose text needs no memory. A kind the region runs
        out of (some street layouts hold no loop) keeps the episodes made so far, with a warning."""
        episodes: list[StreetEpisode] = []
        exhausted: dict[str, int] = {}
        for done in range(per_kind):
            for kind in MEMORY_KINDS:
                if kind in exhausted:
                    continue
                pattern = kind if kind in PATTERNS else "plain"
                for _ in range(MEMORY_SPLIT_ATTEMPTS):
                    style = "touchdown" if self.rng.random() < 0.5 else "map2seq"
                    made = self._episode(region, style, pattern, lambda i, kind=kind: (i.memory or "plain") == kind)
                    if made is not None:
                        episodes.append(made)
                        break
                else:
                    exhausted[kind] = done
        for kind, done in exhausted.items():
            warnings.warn(f"synthetic city: the memory split ran out of {kind} routes after {done} of {per_kind}; "
                          "this city's layout holds no more of them", stacklevel=2)
        return episodes

    def _episode(self, region: np.ndarray, style: str, pattern: str,
                 accept: Callable[[Instruction], bool] | None = None) -> StreetEpisode | None:
        if pattern == "plain" and style == "map2seq":
            length = MAP2SEQ_PLAIN_NODES
        else:
            length = (MIN_ROUTE_NODES, MAX_ROUTE_NODES)
        for _ in range(ATTEMPTS_PER_PATTERN):
            route = self.sampler.sample(region, pattern, length)
            if route is None or route.nodes in self.seen_routes:
                continue
            instruction = describe_route(route, self.sampler, self.rng, style)
            if instruction is None or (accept is not None and not accept(instruction)):
                continue
            self.seen_routes.add(route.nodes)
            ident = self.next_id
            self.next_id += 1
            if style == "touchdown":
                return self._touchdown(ident, route, instruction)
            return self._map2seq(ident, route, instruction)
        return None

    def _extras(self, instruction: Instruction) -> dict:
        return {
            "landmarks": list(instruction.landmarks),
            "landmark_ids": list(instruction.landmark_ids),
            "memory": instruction.memory,
            "memory_gap": instruction.memory_gap,
        }

    def _map2seq(self, ident: int, route: Route, instruction: Instruction) -> StreetEpisode:
        g = self.net.graph
        panoids = [g.panoids[i] for i in route.nodes]
        start_heading = int(self.sampler.link_heading(route.nodes[0], route.nodes[1]))
        record = {
            "id": ident,
            "instructions_id": 100_000 + ident,
            "route_panoids": panoids,
            "navigation_text": instruction.text,
            "start_heading": start_heading,
            **self._extras(instruction),
        }
        return StreetEpisode(str(ident), "map2seq", instruction.text, tuple(panoids), start_heading, record=record)

    def _touchdown(self, ident: int, route: Route, instruction: Instruction) -> StreetEpisode:
        g = self.net.graph
        nodes = route.nodes
        goal = nodes[-1]
        panoids = [g.panoids[i] for i in nodes]
        bearing, hiding_place = self._hiding_place(goal, self.sampler.link_heading(nodes[-2], goal))
        end_heading = round(bearing + float(self.rng.choice([0.0] * 8 + [360.0, -360.0])), 6)
        if not -65.0 <= end_heading <= 470.0:
            end_heading = round(bearing, 6)
        x = ((bearing - float(g.yaw[goal])) / 360.0 + 0.5) % 1.0
        centre = json.dumps({"x": round(x, 4), "y": round(0.5 + float(self.rng.uniform(0.0, 0.15)), 4)})
        others = [int(d) for d in g.out_links(goal)[0] if d != nodes[-2]]
        last_sentence = instruction.text[instruction.text.rfind(". ", 0, len(instruction.text) - 1) + 2 :]
        words = len(instruction.text.split())
        elapsed = json.dumps({"minute": words // 40, "second": int(words * 1.5) % 60})
        record = {
            "city": "synth",
            "route_id": ident,
            "pre_pano": panoids[-2],
            "main_pano": panoids[-1],
            "post_pano": g.panoids[others[0]] if others else panoids[-2],
            "main_heading": repr(round(bearing % 360.0, 6)),
            "main_static_center": centre,
            "navigation_text": instruction.text,
            "td_location_text": f"{last_sentence} {hiding_place}",
            "full_text": f"{instruction.text} {hiding_place}",
            "elapsed": elapsed,
            "failure_stats": 0,
            "num_finished": 1,
            "route_panoids": panoids,
            "start_heading": 0.0,
            "end_heading": end_heading,
            **self._extras(instruction),
        }
        return StreetEpisode(str(ident), "touchdown", instruction.text, tuple(panoids), 0.0, end_heading, record)

    def _hiding_place(self, goal: int, arrival: float) -> tuple[float, str]:
        """Bearing from the goal to the object Touchdown hides on, and the sentence saying where it is."""
        sc = self.scene
        lms, hs, ds = sc.visible(goal)
        near = [i for i, d in enumerate(ds.tolist()) if d <= 12.0]
        objects = [i for i in near if sc.category[lms[i]] in HIDING_OBJECTS]
        pool = objects or near
        if not pool:
            return arrival, "Touchdown is on the sidewalk right next to you."
        i = pool[int(self.rng.integers(len(pool)))]
        lm = int(lms[i])
        rel = (float(hs[i]) - arrival) % 360.0
        side = "right" if rel < 180.0 else "left"
        what = f"the {sc.colour[lm]} {sc.category[lm]}"
        if sc.category[lm] in ("tree", "scaffolding", "bus stop"):
            places = ("at the base of", "right next to")
        elif sc.kind[lm] == "object":
            places = ("on top of", "at the base of", "sitting on", "right next to")
        else:
            places = ("on the sign of", "in the window of", "by the door of")
        prep = places[int(self.rng.integers(len(places)))]
        return float(hs[i]), f"Touchdown is {prep} {what} on your {side}."

