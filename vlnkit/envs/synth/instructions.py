"""Navigation instructions written from what is actually along a synthetic route.

Two styles follow the two street datasets:

* ``touchdown``: long free-form text. It starts by orienting the reader against a landmark beside the
  start ("Turn so that the red bank is on your right."), then describes every stretch of the route:
  landmarks passed on either side, how many intersections to cross and where to turn (counted
  intersections or traffic lights, the intersection with a landmark on the corner, the end of the
  street), and where to stop.
* ``map2seq``: shorter imperative clauses ("Head toward the cafe and turn left at the second traffic
  light. ...").

Every landmark named is visible from the route where it is named and its phrase (category, colour
and category, or sign text) is unique among the landmarks seen along that stretch. Turns are always
written "turn/take a/make a left|right" or "turn around", one per turn of the route, in route order,
and no other wording uses those verbs before "left", "right" or "around". Routes of the memory
patterns (:mod:`vlnkit.envs.synth.routes`) refer back to the landmark they come back to ("Go back
past the Harbor Savings Bank and turn right at the first intersection after it."), and plain routes
sometimes end counting a category along the route ("Stop at the second cafe on your left.").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlnkit.envs.synth.routes import Route, RouteSampler, signed_turn, turn_class

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
PASS_MAX_M = 16.0
STOP_MAX_M = 14.0
CORNER_MAX_M = 15.0


@dataclass(frozen=True)
class Instruction:
    """A generated instruction and its ground truth.

    Attributes:
        text: the navigation text.
        landmarks: the landmark phrases the text mentions, in order of first mention (each as written).
        landmark_ids: the landmark id each phrase refers to.
        memory: ``return``, ``loop`` or ``count`` when following the text needs memory of something
            passed earlier, else ``None``.
        memory_gap: for a memory pattern, the moves between first seeing what must be remembered and
            needing it (``return`` and ``loop``: from passing the anchor to being back at it; ``count``: from
            the first landmark counted to the goal), else ``None``. A memory whose capacity covers fewer
            moves than this has to keep it in a long-term store.
    """

    text: str
    landmarks: tuple[str, ...]
    landmark_ids: tuple[str, ...]
    memory: str | None
    memory_gap: int | None = None


def _side(rel: float) -> str | None:
    """``left``/``right`` for a bearing relative to the travel direction, ``None`` ahead or behind."""
    if 30.0 < rel < 150.0:
        return "right"
    if 210.0 < rel < 330.0:
        return "left"
    return None


def _ordinal(k: int) -> str:
    return ORDINALS[k - 1] if k <= len(ORDINALS) else f"{k}th"


def _next_or_ordinal(k: int) -> str:
    return "next" if k == 1 else _ordinal(k)


def _count(k: int, noun: str) -> str:
    word = NUMBERS[k] if k < len(NUMBERS) else str(k)
    return f"{word} {noun}" + ("" if k == 1 else "s")


def _sentence(text: str) -> str:
    text = text.strip()
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


@dataclass
class _Leg:
    """A stretch of route from one boundary (start, turn, come-back point) to the next."""

    a: int
    b: int
    crossings: list[int]
    context: list[int]
    closest: dict[int, tuple[int, float, float]]


class _Describer:
    """Writes the instruction of one route in one style."""

    def __init__(self, route: Route, sampler: RouteSampler, rng: np.random.Generator, style: str) -> None:
        self.route = route
        self.sampler = sampler
        self.scene = sampler.scene
        self.rng = rng
        self.style = style
        nodes = route.nodes
        self.n = len(nodes)
        self.headings = [sampler.link_heading(a, b) for a, b in zip(nodes[:-1], nodes[1:])]
        self.travel = [self.headings[0], *self.headings]
        self.events = ["start"]
        for k in range(1, self.n - 1):
            self.events.append(turn_class(signed_turn(self.headings[k - 1], self.headings[k])) or "straight")
        self.events.append("stop")
        self.junction = [bool(sampler.junction[v]) for v in nodes]
        self.light = [int(self.scene.light_at[v]) for v in nodes]
        self.sight = [self.scene.visible(v) for v in nodes]
        self.salience = sampler.salience
        self.mentions: list[tuple[str, int]] = []
        self.memory: str | None = route.pattern if route.pattern != "plain" else None
        self.memory_gap: int | None = route.back_at - route.first_pass if route.pattern != "plain" else None

    # -- what is where ---------------------------------------------------------------------------

    def closest(self, lo: int, hi: int) -> dict[int, tuple[int, float, float]]:
        """Per landmark seen from route indices ``lo..hi``: (index, distance, relative bearing) of
        its closest sighting."""
        best: dict[int, tuple[int, float, float]] = {}
        for k in range(lo, hi + 1):
            lms, hs, ds = self.sight[k]
            for lm, h, d in zip(lms.tolist(), hs.tolist(), ds.tolist()):
                if lm not in best or d < best[lm][1]:
                    best[lm] = (k, d, (h - self.travel[k]) % 360.0)
        return best

    def leg(self, a: int, b: int) -> _Leg:
        """The facts of the stretch between route indices ``a`` and ``b``."""
        closest = self.closest(a, b)
        crossings = [k for k in range(a + 1, b) if self.junction[k]]
        return _Leg(a, b, crossings, list(closest), closest)

    def phrase(self, lm: int, context: list[int]) -> tuple[str, str] | None:
        """A referring phrase for ``lm`` unique among ``context``, and its noun phrase with article."""
        sc = self.scene
        cat, col, txt = sc.category[lm], sc.colour[lm], sc.text[lm]
        forms: list[tuple[str, str]] = []
        if txt and sc.kind[lm] != "object" and sum(sc.text[c] == txt for c in context) == 1:
            forms.append((txt, txt))
        if sum(sc.category[c] == cat and sc.colour[c] == col for c in context) == 1:
            forms.append((f"{col} {cat}", f"the {col} {cat}"))
        if sum(sc.category[c] == cat for c in context) == 1:
            forms.append((cat, f"the {cat}"))
        if not forms:
            return None
        return forms[int(self.rng.integers(len(forms)))]

    def mention(self, lm: int, phrase: str) -> None:
        """Record that the text names ``lm`` with ``phrase`` (once per pair)."""
        if (phrase, lm) not in self.mentions:
            self.mentions.append((phrase, lm))

    def pick(self, candidates: list[int]) -> int:
        """One of ``candidates`` drawn by salience (-1 if there is none)."""
        if not candidates:
            return -1
        w = self.salience[candidates]
        return int(candidates[int(self.rng.choice(len(candidates), p=w / w.sum()))])

    def choose(self, options: list[str]) -> str:
        """One of ``options`` at random."""
        return options[int(self.rng.integers(len(options)))]

    def passes(self, leg: _Leg, most: int, exclude: set[int]) -> list[tuple[str, str]]:
        """Up to ``most`` landmarks passed beside the leg before its end, in route order:
        (noun phrase, side)."""
        side_of = {
            lm: _side(rel)
            for lm, (k, d, rel) in leg.closest.items()
            if leg.a < k < leg.b - 1 and d <= PASS_MAX_M and _side(rel)
            and self.salience[lm] >= 1.0 and lm not in exclude
        }
        cands = list(side_of)
        chosen: list[tuple[int, tuple[str, str]]] = []
        for _ in range(int(self.rng.integers(0, most + 1))):
            lm = self.pick(cands)
            if lm < 0:
                break
            cands.remove(lm)
            ref = self.phrase(lm, leg.context)
            if ref is not None:
                chosen.append((lm, ref))
        chosen.sort(key=lambda c: leg.closest[c[0]][0])
        for lm, ref in chosen:
            self.mention(lm, ref[0])
        return [(ref[1], side_of[lm]) for lm, ref in chosen]

    def where(self, leg: _Leg, exclude: set[int]) -> list[tuple[str, int, str]]:
        """Ways to name the end of a leg: (phrase, landmark index or -1, landmark phrase)."""
        b = leg.b
        node = self.route.nodes[b]
        if not self.junction[b]:
            return [("at the corner", -1, "")]
        out: list[tuple[str, int, str]] = []
        exits = self.sampler.exits(self.route.nodes[b - 1], node)
        if all(kind != "straight" for _, kind in exits):
            out.append(("at the end of the street", -1, ""))
        out.append((f"at the {_next_or_ordinal(len(leg.crossings) + 1)} intersection", -1, ""))
        if self.light[b] >= 0:
            q = sum(self.light[k] >= 0 for k in leg.crossings) + 1
            out.append((f"at the {_next_or_ordinal(q)} traffic light", self.light[b], "traffic light"))
        seen_before = {int(lm) for k in leg.crossings for lm in self.sight[k][0].tolist()}
        lms, _, ds = self.sight[b]
        corner = [
            int(lm)
            for lm, d in zip(lms.tolist(), ds.tolist())
            if d <= CORNER_MAX_M and self.salience[lm] >= 1.5 and lm not in seen_before and lm not in exclude
        ]
        lm = self.pick(corner)
        if lm >= 0:
            ref = self.phrase(lm, leg.context)
            if ref is not None:
                out.append((f"at the intersection with {ref[1]} on the corner", lm, ref[0]))
        return out

    def turn_words(self, turn: str) -> str:
        """The verb phrase of a turn: "turn/take a/make a left|right" or "turn around"."""
        if turn == "around":
            return "turn around"
        return self.choose([f"turn {turn}", f"take a {turn}", f"make a {turn}"])

    # -- the pieces of an instruction ------------------------------------------------------------

    def orientation(self) -> str:
        """Touchdown's opening sentence, orienting the reader at the start."""
        lms, hs, ds = self.sight[0]
        context = lms.tolist()
        cands = [int(lm) for lm, d in zip(lms.tolist(), ds.tolist()) if d <= 20.0 and self.salience[lm] >= 1.0]
        lm = self.pick(cands)
        if lm >= 0:
            ref = self.phrase(lm, context)
            rel = (float(hs[context.index(lm)]) - self.travel[0]) % 360.0
            side = _side(rel)
            if ref is not None:
                self.mention(lm, ref[0])
                if side:
                    return self.choose([
                        f"Turn so that {ref[1]} is on your {side}.",
                        f"Orient yourself so that {ref[1]} is on your {side}.",
                        f"Face the direction that puts {ref[1]} on your {side}.",
                    ])
                if rel < 30.0 or rel > 330.0:
                    return self.choose([f"Turn so that you are facing {ref[1]}.", f"Orient yourself toward {ref[1]}."])
                return self.choose([f"Turn so that {ref[1]} is behind you.", f"Put {ref[1]} at your back."])
        return self.choose(["Orient yourself along the street.", "Start by facing down the block."])

    def start_clause(self) -> str:
        """Map2Seq's opening clause."""
        lms, hs, ds = self.sight[0]
        context = lms.tolist()
        ahead = [
            int(lm)
            for lm, h, d in zip(lms.tolist(), hs.tolist(), ds.tolist())
            if d >= 8.0 and ((h - self.travel[0]) % 360.0 < 25.0 or (h - self.travel[0]) % 360.0 > 335.0)
            and self.salience[lm] >= 1.0
        ]
        lm = self.pick(ahead)
        if lm >= 0:
            ref = self.phrase(lm, context)
            if ref is not None:
                self.mention(lm, ref[0])
                return self.choose([f"head toward {ref[1]}", f"walk toward {ref[1]}"])
        beside = [int(lm) for lm, d in zip(lms.tolist(), ds.tolist()) if d <= 15.0 and self.salience[lm] >= 1.5]
        lm = self.pick(beside)
        if lm >= 0:
            ref = self.phrase(lm, context)
            side = _side((float(hs[context.index(lm)]) - self.travel[0]) % 360.0)
            if ref is not None and side:
                self.mention(lm, ref[0])
                return f"go straight with {ref[1]} on your {side}"
        return self.choose(["go straight", "walk down the street", "head down the block"])

    def turn_leg(self, leg: _Leg, exclude: set[int]) -> list[str]:
        """Sentences (Touchdown) or one sentence (Map2Seq) for a leg that ends in a turn."""
        turn = self.events[leg.b]
        passes = self.passes(leg, 2 if self.style == "touchdown" else 1, exclude)
        options = self.where(leg, exclude)
        phrase, lm, lm_phrase = options[int(self.rng.integers(len(options)))]
        if lm >= 0:
            self.mention(lm, lm_phrase)
        verb = self.turn_words(turn)
        m = len(leg.crossings)
        if self.style == "touchdown":
            out = [f"{self.choose(['Pass', 'You will pass', 'Continue past'])} {p} on your {s}." for p, s in passes]
            if phrase.startswith("at the ") and phrase.endswith(" intersection") and m >= 1 and self.rng.random() < 0.5:
                out.append(f"Go straight through {_count(m, 'intersection')} and {verb} at the next one.")
            elif phrase == "at the corner":
                out.append(f"Follow the street and {verb} at the corner.")
            else:
                out.append(self.choose([_sentence(f"{phrase}, {verb}"), _sentence(f"{verb} {phrase}")]))
            return out
        lead = f"go past {passes[0][0]} and " if passes else ""
        return [_sentence(f"{lead}{verb} {phrase}")]

    def stop_leg(self, leg: _Leg, exclude: set[int]) -> list[str]:
        """Sentences for the last leg: crossings, passes and where to stop."""
        m = len(leg.crossings)
        passes = self.passes(leg, 1, exclude)
        stop = self.stop_phrase(leg, exclude)
        if self.style == "touchdown":
            out = []
            if m:
                crossings = _count(m, "intersection")
                out.append(self.choose([f"Go straight through {crossings}.", f"Cross {crossings}."]))
            out += [f"Pass {p} on your {s}." for p, s in passes]
            return out + [_sentence(stop)]
        lead = f"go through {_count(m, 'intersection')} and " if m else ""
        if passes:
            lead += f"pass {passes[0][0]}, then "
        return [_sentence(f"{lead}{stop}")]

    def stop_phrase(self, leg: _Leg, exclude: set[int]) -> str:
        """Where to stop, named by a landmark beside the goal where there is one."""
        goal = self.n - 1
        lms, hs, ds = self.sight[goal]
        near = [int(lm) for lm, d in zip(lms.tolist(), ds.tolist()) if d <= STOP_MAX_M and lm not in exclude]
        cands = [lm for lm in near if self.salience[lm] >= 1.0]
        counted = self.counted_stop(cands)
        if counted:
            return counted
        lm = self.pick(cands or [lm for lm in near if self.salience[lm] > 0.0])
        if lm >= 0:
            ref = self.phrase(lm, leg.context)
            if ref is not None:
                self.mention(lm, ref[0])
                rel = (float(hs[lms.tolist().index(lm)]) - self.travel[goal]) % 360.0
                side = _side(rel)
                if side:
                    return self.choose([
                        f"stop when {ref[1]} is on your {side}",
                        f"stop when you see {ref[1]} on your {side}",
                        f"stop next to {ref[1]} on your {side}",
                    ])
                if rel < 30.0 or rel > 330.0:
                    return self.choose([f"stop just before {ref[1]}", f"stop in front of {ref[1]}"])
                return self.choose([f"stop just past {ref[1]}", f"stop right after you pass {ref[1]}"])
        return self.choose(["stop a few steps later", "stop halfway down the block", "stop after a few steps"])

    def counted_stop(self, cands: list[int]) -> str | None:
        """"Stop at the second cafe on your left" when the stop landmark's category was passed before
        on the same side (plain routes only, half of the time)."""
        if self.route.pattern != "plain" or self.rng.random() < 0.5:
            return None
        whole = self.closest(0, self.n - 1)
        sc = self.scene
        for lm in cands:
            k, d, rel = whole[lm]
            side = _side(rel)
            if side is None or d > PASS_MAX_M or sc.kind[lm] == "object":
                continue
            same = sorted(
                (kk, c)
                for c, (kk, dd, rr) in whole.items()
                if sc.category[c] == sc.category[lm] and dd <= PASS_MAX_M and _side(rr) == side
            )
            rank = [c for _, c in same].index(lm) + 1
            if 2 <= rank <= 3 and rank == len(same):
                self.mention(lm, sc.category[lm])
                self.memory = "count"
                self.memory_gap = self.n - 1 - same[0][0]
                return f"stop at the {_ordinal(rank)} {sc.category[lm]} on your {side}"
        return None

    # -- memory patterns -------------------------------------------------------------------------

    def anchor_phrase(self) -> tuple[str, str] | None:
        """A phrase for the landmark a memory pattern comes back to, unique along the whole route."""
        return self.phrase(self.route.anchor, list(self.closest(0, self.n - 1)))

    def anchor_pass(self, anchor: tuple[str, str]) -> str:
        """The first mention of the landmark the route comes back to."""
        r = self.route
        self.mention(r.anchor, anchor[0])
        side = _side(self.closest(r.first_pass, r.first_pass)[r.anchor][2]) or "right"
        if self.style == "touchdown":
            return self.choose([f"Pass {anchor[1]} on your {side}.", f"You will pass {anchor[1]} on your {side}."])
        return f"pass {anchor[1]} on your {side}"

    def return_out_leg(self, leg: _Leg, anchor: tuple[str, str], exclude: set[int]) -> list[str]:
        """The stretch that passes the anchor and turns around after it."""
        r = self.route
        most = 1 if self.style == "touchdown" else 0
        before = self.passes(_Leg(leg.a, r.first_pass, [], leg.context, leg.closest), most, exclude)
        first = self.anchor_pass(anchor)
        if self.sampler.degree[r.nodes[r.u_turn]] == 1:
            where = "at the end of the street"
        else:
            c = sum(self.junction[k] for k in range(r.first_pass + 1, r.u_turn)) + 1
            where = "at the next intersection" if c == 1 else f"at the {_ordinal(c)} intersection after it"
        if self.style == "touchdown":
            out = [f"Pass {p} on your {s}." for p, s in before]
            turn = self.choose([f"Keep going and turn around {where}.", f"Continue, then turn around {where}."])
            return [*out, first, turn]
        return [_sentence(f"{first} and turn around {where}")]

    def return_back_leg(self, leg: _Leg, anchor: tuple[str, str]) -> list[str]:
        """The stretch back to the anchor: stop there or turn at the first intersection after it."""
        self.mention(self.route.anchor, anchor[0])
        if leg.b == self.n - 1:
            if self.style == "touchdown":
                back = [f"Go back to {anchor[1]} and stop.", f"Walk back to {anchor[1]} you passed and stop there."]
                return [self.choose(back)]
            return [_sentence(f"go back to {anchor[1]} and stop")]
        verb = self.turn_words(self.events[leg.b])
        if self.style == "touchdown":
            return [f"Go back past {anchor[1]} and {verb} at the first intersection after it."]
        return [_sentence(f"head back past {anchor[1]} and {verb} at the first intersection after it")]

    def loop_back_leg(self, leg: _Leg, anchor: tuple[str, str]) -> list[str]:
        """The stretch that closes a loop at the anchor: stop there or go on."""
        self.mention(self.route.anchor, anchor[0])
        back = self.choose([f"when you are back at {anchor[1]}", f"when you get back to {anchor[1]} you passed"])
        if leg.b == self.n - 1:
            return [_sentence(f"stop {back}")]
        event = self.events[leg.b]
        action = "go straight through the intersection" if event == "straight" else self.turn_words(event)
        return [_sentence(f"{back}, {action}")]

    # -- the whole text --------------------------------------------------------------------------

    def legs(self) -> list[_Leg]:
        """The route cut at every turn, at the point a loop closes, and at the goal."""
        r = self.route
        bounds = {k for k in range(1, self.n - 1) if self.events[k] != "straight"}
        if r.pattern == "loop":
            bounds.add(r.back_at)
        bounds.add(self.n - 1)
        out, a = [], 0
        for b in sorted(bounds):
            out.append(self.leg(a, b))
            a = b
        return out

    def write(self) -> Instruction | None:
        """The whole instruction, or ``None`` when the anchor of a memory pattern has no unique phrase."""
        r = self.route
        anchor = self.anchor_phrase() if r.anchor >= 0 else None
        if r.anchor >= 0 and anchor is None:
            return None
        exclude = {r.anchor} if r.anchor >= 0 else set()
        parts: list[str] = []
        opening = ""
        if self.style == "touchdown":
            parts.append(self.orientation())
        else:
            opening = self.start_clause()
        for i, leg in enumerate(self.legs()):
            passes_anchor = r.pattern == "loop" and leg.a < r.first_pass < leg.b
            pieces = [_sentence(self.anchor_pass(anchor))] if passes_anchor else []
            if r.pattern == "return" and leg.b == r.u_turn:
                pieces += self.return_out_leg(leg, anchor, exclude)
            elif r.pattern == "return" and leg.a == r.u_turn:
                pieces += self.return_back_leg(leg, anchor)
            elif r.pattern == "loop" and leg.b == r.back_at:
                pieces += self.loop_back_leg(leg, anchor)
            elif leg.b == self.n - 1:
                pieces += self.stop_leg(leg, exclude)
            else:
                pieces += self.turn_leg(leg, exclude)
            if i == 0 and opening:
                pieces[0] = _sentence(f"{opening}, then {pieces[0][0].lower()}{pieces[0][1:]}")
            parts.extend(pieces)
        return Instruction(
            text=" ".join(parts),
            landmarks=tuple(p for p, _ in self.mentions),
            landmark_ids=tuple(self.scene.ids[lm] for _, lm in self.mentions),
            memory=self.memory,
            memory_gap=self.memory_gap,
        )


def describe_route(route: Route, sampler: RouteSampler, rng: np.random.Generator, style: str) -> Instruction | None:
    """The ``style`` (``touchdown`` or ``map2seq``) instruction for ``route``, or ``None`` when the
    landmark a memory pattern comes back to cannot be named unambiguously."""
    return _Describer(route, sampler, rng, style).write()

