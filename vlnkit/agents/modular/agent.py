"""The modular pipeline agent with Mem4Nav memory, registered as ``modular``.

Each step runs perception -> mapping -> instruction grounding -> planning -> control:

1. **Perception** (:mod:`~vlnkit.agents.modular.perception`): landmarks per direction from the panorama
   features; intersections and dead ends from the outgoing links.
2. **Mapping** (:mod:`~vlnkit.agents.modular.mapping`): the view and pose go into the agent's Mem4Nav
   memory (octree, topology graph, STM, LTM) every step.
3. **Grounding** (:mod:`~vlnkit.agents.modular.language`): the instruction, parsed once into sub-goals, is
   carried out in order. Landmarks said to be passed are grounded when they go by on their side (the step
   where they were closest and the graph node there are kept with the sub-goal); turns fire at the
   intersection, traffic light, corner landmark, end of the street or bend the text names; stops fire when
   the named landmark is on the named side.
4. **Planning**: "go back to X" plans over the topology graph to the node where X was passed and follows
   the path; the other references to the past ask the memory.
5. **Control** (:mod:`~vlnkit.agents.street_control`): rotate to the chosen link, then FORWARD.

What memory is for. Without memory (``memory=none``) the agent keeps only what carrying out the current
sub-goal needs: which sub-goal it is on and its counters since that sub-goal began (intersections and
landmarks counted so far, steps). Everything about earlier parts of the episode comes from the memory, asked
only through its retrieval API (:class:`~vlnkit.agents.modular.mapping.EpisodicMap`), never by reading its
parts:

- "Stop at the second cafe on your left" (a *count* question): cafes passed before the last sub-goal began
  are counted from the memory's trace (the parts that keep steps: STM entries, octree leaves, the oracle
  log); without such a part only those passed during the sub-goal count.
- "Go back to X", "when you are back at X", "go back past X and turn ..." (a *place* question): the place is
  recognised when the memory recalls having been here at the step X was passed (STM, octree or oracle
  entries with their step; LTM tokens whose remembered view shows X as close on the same side; the graph
  node X was passed at, one within ``place_radius`` of it, or, where the question allows a neighbouring
  place, a node one traversed edge from it; asked only when no exact record of that step is left). When no
  part recognises the place, a part that still holds the step X was passed at answers "not here";
  otherwise (no memory, or only the graph and the LTM, which cannot rule a place out) the agent judges
  from what is in view, stopping or turning at the first landmark of X's category it sees, which a
  look-alike can fool.
- "Go back to X and stop" follows a path planned over the topology graph when there is one, and stops
  where the graph says X was passed.

Which part answered each question, and whether the answer was right, is counted per episode
(:meth:`ModularAgent.episode_stats`, summed into ``metrics.json``'s ``agent_stats``): ``mem_questions``
(``mem_questions_count``, ``mem_questions_place``), ``mem_answers_<part>`` and ``mem_correct_<part>`` for
``<part>`` in ``oracle``, ``octree``, ``stm``, ``graph``, ``ltm`` and ``fallback`` (the agent's view, no
memory). "Right" means what perfect recall of the episode's own observations answers: an exact log of
every view and position, kept beside the memory, written every step and read only after the decision to
score it (never to make it).

Observations only: ``uses_info`` is false and ``info`` is never read. What it reads: the observations
``instruction``, ``heading``, ``position``, ``links`` and ``panorama`` as ``(sectors, categories)`` landmark
features; the categories' names from the release's ``graph/scene.jsonl`` (or ``categories`` in its config);
to fit its lexicon, the release's ``graph/landmarks.json`` and ``data/<lexicon_split>.json`` when they exist
(category names alone otherwise). It refuses to start without the features or the categories
(:class:`~vlnkit.agents.base.AgentInputError`): only the synthetic city has them unless they are supplied.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vlnkit.agents.base import register, require_feature_panorama, require_input
from vlnkit.agents.memory_support import (
    ViewCodec,
    feature_categories,
    load_agent_config,
    memory_from_config,
    release_dir,
)
from vlnkit.agents.street_control import (
    FORWARD,
    STOP,
    aligned,
    bearing,
    closest_link,
    exit_for,
    is_junction,
    link_headings,
    relative,
    rotate_towards,
)
from vlnkit.agents.modular.language import LandmarkLexicon, SubGoal, parse_instruction
from vlnkit.agents.modular.mapping import EpisodicMap
from vlnkit.agents.modular.perception import Perception
from vlnkit.memory import Mem4NavConfig, Mem4NavMemory

MAX_ROTATIONS = 6
"""Rotations tried for one turn before the agent moves on regardless."""

ABEAM = {"right": 90.0, "left": 270.0}
ABEAM_TOLERANCE = 45.0
"""A landmark "on your right/left" to stop at is abeam: within this many degrees of square to the heading."""

FALLBACK = "fallback"
ANSWERING_PARTS = ("oracle", "octree", "stm", "graph", "ltm", FALLBACK)
"""What can answer a memory question: a memory part, or the agent's own view (``fallback``)."""
QUESTION_KINDS = ("count", "place")


@dataclass
class Thresholds:
    """Closeness (1 at the agent, 0 at the panorama radius) needed for each kind of landmark decision,
    and step counts for stops named without a landmark."""

    passed: float = 0.45
    stop: float = 0.5
    corner: float = 0.45
    light: float = 0.5
    back: float = 0.55
    dip: float = 0.1
    few_steps: int = 3
    halfway_steps: int = 4
    arrive_m: float = 6.0


@dataclass
class _Pass:
    """A "pass" sub-goal and its grounding: when and where the landmark went by closest."""

    goal: SubGoal
    category: int | None
    best: float = 0.0
    best_step: int = -1
    node: int | None = None
    side: str | None = None
    done: bool = False

    @property
    def grounded(self) -> bool:
        """Whether the landmark has been seen going by."""
        return self.best_step >= 0


@dataclass
class _Leg:
    """An action sub-goal (cross, turn, stop) with the landmarks said to be passed before it, and the
    counters of carrying it out since it began (at move ``start``)."""

    goal: SubGoal
    passes: list[_Pass]
    category: int | None
    start: int = 0
    count: int = 0
    armed: bool = False
    instances: int = 0
    run_peak: float = 0.0
    run_last: float = 0.0


@dataclass(frozen=True)
class _Move:
    """What a leg decided at a place: face ``heading`` (then go on), ``stop``, or go on; ``finished`` moves
    to the next leg, which with ``here`` is evaluated at the same place at once."""

    heading: float | None = None
    stop: bool = False
    finished: bool = False
    here: bool = False


_GO_ON = _Move()
_STOP = _Move(stop=True)
_DONE = _Move(finished=True)
_DONE_HERE = _Move(finished=True, here=True)


class ModularAgent:
    """Perception -> Mem4Nav mapping -> instruction grounding -> graph planning -> control.

    Args:
        perception: landmarks from the panorama features.
        lexicon: landmark phrases -> perception categories.
        memory_map: the agent's Mem4Nav memory behind :class:`EpisodicMap`.
        num_actions: size of the action space (4 under touchdown semantics, 5 under velma).
        semantics: the navigator's action semantics, for rotations.
        thresholds: decision thresholds.
    """

    uses_info = False
    reads_panorama = True

    def __init__(self, perception: Perception, lexicon: LandmarkLexicon, memory_map: EpisodicMap,
                 num_actions: int = 4, semantics: str = "touchdown", thresholds: Thresholds | None = None) -> None:
        self.perception = perception
        self.lexicon = lexicon
        self.map = memory_map
        self.num_actions = int(num_actions)
        self.semantics = semantics
        self.th = thresholds or Thresholds()
        codec = memory_map.codec
        truth = Mem4NavMemory(Mem4NavConfig.variant("oracle", dim=codec.dim, descriptor_dim=codec.descriptor_dim))
        self._truth = EpisodicMap(truth, codec, memory_map.place_radius)
        self._start_episode("")

    # -- episode state -----------------------------------------------------------------------------

    def _start_episode(self, instruction: str) -> None:
        self.goals = parse_instruction(instruction)
        self.orient = [g for g in self.goals if g.action == "orient"]
        self.legs: list[_Leg] = []
        pending: list[_Pass] = []
        for goal in self.goals:
            if goal.action == "pass":
                pending.append(_Pass(goal, self.lexicon.category(goal.landmark)))
            elif goal.action != "orient":
                self.legs.append(_Leg(goal, pending, self.lexicon.category(goal.landmark or goal.gate)))
                pending = []
        if not self.legs or self.legs[-1].goal.action != "stop":
            self.legs.append(_Leg(SubGoal("stop", None, "steps"), pending, None))
        self.leg_index = 0
        self.anchors: dict[str, _Pass] = {}
        self.steps = 0
        self.moves = 0
        self.travel: float | None = None
        self.pending: float | None = None
        self.rotations = 0
        self.last_position: np.ndarray | None = None
        self.last_action: int | None = None
        self._fresh: list[_Pass] = []
        self._questions = {kind: 0 for kind in QUESTION_KINDS}
        self._answers = {part: 0 for part in ANSWERING_PARTS}
        self._correct = {part: 0 for part in ANSWERING_PARTS}

    def episode_stats(self) -> dict[str, int]:
        """This episode's memory questions: how many of each kind, which part answered them and how many
        of those answers were right (see the module docstring)."""
        stats = {"mem_questions": sum(self._questions.values())}
        stats.update({f"mem_questions_{kind}": n for kind, n in self._questions.items()})
        stats.update({f"mem_answers_{part}": n for part, n in self._answers.items()})
        stats.update({f"mem_correct_{part}": n for part, n in self._correct.items()})
        return stats

    def _asked(self, kind: str, part: str, right: bool) -> None:
        self._questions[kind] += 1
        self._answers[part] += 1
        self._correct[part] += int(right)

    def reset(self, observation: dict[str, Any], info: dict[str, Any] | None, seed: int) -> None:
        """Parse the instruction and empty the memory (``info`` is not read); refuses observations without
        the panorama features it perceives (:class:`~vlnkit.agents.base.AgentInputError`)."""
        require_feature_panorama("modular", observation, (self.perception.sectors, len(self.perception.categories)))
        self.map.reset()
        self._truth.reset()
        self._start_episode(str(observation["instruction"]))

    # -- the step ----------------------------------------------------------------------------------

    def act(self, observation: dict[str, Any], info: dict[str, Any] | None = None) -> int:
        """The next action, from the observation alone."""
        heading = float(np.asarray(observation["heading"]).reshape(-1)[0])
        position = np.asarray(observation["position"], dtype=np.float64).reshape(-1)[:2]
        links = link_headings(observation["links"])
        panorama = self.perception.view(observation["panorama"])
        arrived = self.last_position is not None and float(np.linalg.norm(position - self.last_position)) > 0.5
        blocked = not arrived and self.last_action == FORWARD
        if arrived:
            self.moves += 1
        if self.travel is None:
            self.travel = heading
        action = self._decide(panorama, heading, position, links, arrived or self.steps == 0, blocked)
        if self.map.enabled:
            node = self.map.write(panorama, heading, position, self.moves)
            for grounded in self._fresh:
                grounded.node = node
        self._truth.write(panorama, heading, position, self.moves)
        self._fresh = []
        if action == FORWARD:
            self.travel = heading
        self.last_action = action
        self.last_position = position
        self.steps += 1
        return action

    def _decide(self, panorama: np.ndarray, heading: float, position: np.ndarray, links: list[float],
                at_new_place: bool, blocked: bool) -> int:
        if self.pending is not None:
            if aligned(heading, self.pending) or self.rotations >= MAX_ROTATIONS:
                self.pending = None
                return FORWARD
            self.rotations += 1
            return rotate_towards(heading, self.pending, links, self.semantics, self.num_actions)
        if self.steps == 0:
            target = self._orientation(panorama, heading, links)
            if target is not None and not aligned(heading, target):
                return self._face(target, heading, links)
        if not (at_new_place or blocked):
            return FORWARD
        while self.leg_index < len(self.legs):
            leg = self.legs[self.leg_index]
            if self.moves > leg.start:
                for watched in self._legs_watched():
                    self._watch_passes(watched, panorama, heading)
            move = self._carry_out(leg, panorama, heading, position, links, blocked)
            if move.finished:
                self.leg_index += 1
                if self.leg_index < len(self.legs):
                    self.legs[self.leg_index].start = self.moves
            if move.stop:
                return STOP
            if move.heading is not None:
                return self._face(move.heading, heading, links)
            if move.finished and move.here:
                continue
            if blocked:
                back = exit_for(links, self.travel if self.travel is not None else heading, "around")
                return FORWARD if back is None else self._face(back, heading, links)
            return FORWARD
        return STOP

    def _face(self, target: float, heading: float, links: list[float]) -> int:
        if aligned(heading, target):
            return FORWARD
        self.pending = target
        self.rotations = 1
        return rotate_towards(heading, target, links, self.semantics, self.num_actions)

    # -- orientation -------------------------------------------------------------------------------

    def _orientation(self, panorama: np.ndarray, heading: float, links: list[float]) -> float | None:
        """The start link that best fits the orientation sentence (and, less, the first landmarks to pass);
        ``None`` when nothing in view tells the directions apart."""
        if len(links) < 2:
            return None
        evidence: list[tuple[int, str, float]] = []
        for goal in self.orient:
            category = self.lexicon.category(goal.landmark)
            if category is not None and goal.direction:
                evidence.append((category, goal.direction, 1.0))
        for p in self.legs[0].passes:
            if p.category is not None:
                evidence.append((p.category, p.goal.direction or "ahead", 0.25))
        if not evidence:
            return None
        scores = []
        for h in links:
            view = self.perception.facing(panorama, heading, h)
            score = 0.0
            for category, side, weight in evidence:
                near = self.perception.closeness(view, category, side, h)
                if side in ("left", "right"):
                    near = max(near, 0.5 * self.perception.closeness(view, category, "ahead", h))
                score += weight * near
            scores.append(score)
        ranked = sorted(scores)
        if ranked[-1] <= 0.0 or ranked[-1] == ranked[-2]:
            return None
        return links[int(np.argmax(scores))]

    # -- passes ------------------------------------------------------------------------------------

    def _legs_watched(self) -> list[_Leg]:
        """The current leg and, while it only crosses intersections, the legs after it up to the next turn
        or stop: the landmarks said to be passed on a stretch can go by before its crossings are done."""
        out = []
        for leg in self.legs[self.leg_index:]:
            out.append(leg)
            if leg.goal.action != "cross":
                break
        return out

    def _watch_passes(self, leg: _Leg, panorama: np.ndarray, heading: float) -> None:
        """Ground the landmarks the leg passes, in the order they are said: the closest sighting on their
        side, done when it recedes."""
        for p in leg.passes:
            if p.done:
                continue
            earlier = leg.passes[: leg.passes.index(p)]
            if any(not q.grounded for q in earlier if q.category is not None):
                break
            if p.category is None:
                p.done = True
                continue
            if p.goal.direction in ("left", "right"):
                side = p.goal.direction
                near = self.perception.closeness(panorama, p.category, side, heading)
            else:
                side, near = self.perception.beside(panorama, p.category, heading)
            if near >= self.th.passed and near >= p.best:
                p.best, p.best_step, p.side = near, self.moves, side
                self._fresh.append(p)
                if p.goal.landmark:
                    self.anchors[p.goal.landmark] = p
            elif p.grounded and near < p.best:
                p.done = True

    # -- sub-goals ---------------------------------------------------------------------------------

    def _carry_out(self, leg: _Leg, panorama: np.ndarray, heading: float, position: np.ndarray,
                   links: list[float], blocked: bool) -> _Move:
        """What the current leg does at this place."""
        goal = leg.goal
        first = self.moves == leg.start
        junction = is_junction(links) and not first
        travel = self.travel if self.travel is not None else heading
        if goal.action == "cross":
            if goal.count <= 0:
                return _DONE_HERE
            if junction:
                leg.count += 1
            return _DONE if leg.count >= goal.count else _GO_ON
        if goal.action == "turn":
            if not self._gate_open(leg, panorama, heading, position, first):
                return _GO_ON
            if self._turn_fires(leg, panorama, heading, position, links, travel, junction, blocked):
                if goal.direction == "straight":
                    return _DONE
                return _Move(heading=self._turn_target(links, travel, goal.direction, heading), finished=True)
            return _GO_ON
        return self._stop_step(leg, panorama, heading, position, links, first)

    def _gate_open(self, leg: _Leg, panorama: np.ndarray, heading: float, position: np.ndarray, first: bool) -> bool:
        """Whether intersections may be counted yet: only after the gate landmark has been passed."""
        goal = leg.goal
        if goal.gate is None or leg.armed:
            return True
        if goal.back:
            if not first and self._back_at(goal.gate, leg.category, panorama, heading, position):
                leg.armed = True
            return False
        gate = next((p for p in reversed(leg.passes) if p.goal.landmark == goal.gate), None)
        if gate is None or gate.done:
            leg.armed = True
        return leg.armed

    def _turn_fires(self, leg: _Leg, panorama: np.ndarray, heading: float, position: np.ndarray,
                    links: list[float], travel: float, junction: bool, blocked: bool) -> bool:
        """Whether the turn happens here."""
        goal = leg.goal
        at = goal.at
        if at == "intersection":
            if junction:
                leg.count += 1
            return leg.count >= goal.count
        if at == "traffic_light":
            light = self.lexicon.index.get("traffic light")
            if junction and (light is None or self.perception.closeness(panorama, light) >= self.th.light):
                leg.count += 1
            return leg.count >= goal.count
        if at == "corner_landmark":
            if not junction:
                return False
            return leg.category is None or self.perception.closeness(panorama, leg.category) >= self.th.corner
        if at == "street_end":
            return blocked or (junction and exit_for(links, travel, "straight") is None)
        if at == "corner":
            bend = not is_junction(links) and exit_for(links, travel, "straight") is None
            return blocked or (bend and exit_for(links, travel, goal.direction or "left") is not None)
        if at == "back_at":
            if not leg.armed and self.moves > leg.start:
                leg.armed = self._back_at(goal.landmark, leg.category, panorama, heading, position, window=1)
            return leg.armed and (goal.direction == "straight" or is_junction(links))
        return junction

    def _turn_target(self, links: list[float], travel: float, direction: str, heading: float) -> float:
        """The link of a turn, or the link nearest to its ideal angle when none is in its class."""
        target = exit_for(links, travel, direction)
        if target is None:
            ideal = {"left": -90.0, "right": 90.0, "around": 180.0}.get(direction, 0.0)
            target = closest_link(links, travel + ideal)
        return heading if target is None else target

    def _stop_step(self, leg: _Leg, panorama: np.ndarray, heading: float, position: np.ndarray,
                   links: list[float], first: bool) -> _Move:
        goal = leg.goal
        ready = self._passes_ready(leg)
        if ready is None:
            return _GO_ON
        if goal.at in ("steps", "halfway") or (goal.at == "landmark" and leg.category is None):
            needed = self.th.halfway_steps if goal.at == "halfway" else self.th.few_steps
            return _STOP if self.moves - ready >= needed else _GO_ON
        if goal.at == "landmark":
            side = goal.direction if goal.direction in ("left", "right", "ahead", "behind") else None
            near = self.perception.closeness(panorama, leg.category, side, heading)
            if goal.count > 1:
                return self._count_stop(leg, near, side)
            if side in ("left", "right"):
                abeam = self.perception.closeness_around(panorama, leg.category, ABEAM[side], ABEAM_TOLERANCE, heading)
                receding = leg.run_last >= self.th.stop and near < leg.run_last
                leg.run_last = near
                return _STOP if not first and (abeam >= self.th.stop or receding) else _GO_ON
            ahead_or_behind = self.perception.closeness_around(
                panorama, leg.category, 0.0 if side == "ahead" else 180.0, ABEAM_TOLERANCE, heading
            ) if side in ("ahead", "behind") else near
            return _STOP if ahead_or_behind >= self.th.stop and not first else _GO_ON
        if goal.at == "back_at":
            if not first and self._back_at(goal.landmark, leg.category, panorama, heading, position, window=1):
                return _STOP
            return _GO_ON
        if goal.at == "return_to":
            return self._return_to(leg, panorama, heading, position, links, first)
        return _STOP

    @staticmethod
    def _passes_ready(leg: _Leg) -> int | None:
        """The place (move) from which a stop may happen: after the landmarks said to be passed before it
        have been seen (the leg's start without any); ``None`` while one is still awaited."""
        ready = leg.start
        for p in leg.passes:
            if p.category is None:
                continue
            if not p.grounded:
                return None
            ready = max(ready, p.best_step)
        return ready

    def _count_stop(self, leg: _Leg, near: float, side: str | None) -> _Move:
        """"Stop at the n-th X on your side": instances are runs of sightings split at dips, counted since
        the sub-goal began and, over what the memory's trace still holds, since the episode began."""
        goal = leg.goal
        leg.instances, leg.run_peak, leg.run_last = _count_runs(
            [near], self.th.passed, self.th.dip, leg.instances, leg.run_peak, leg.run_last
        )
        instances, part = self._count_passed(self.map, leg, near, side)
        truth, _ = self._count_passed(self._truth, leg, near, side)
        self._asked("count", part, instances == truth)
        return _STOP if instances >= goal.count and near >= self.th.stop else _GO_ON

    def _count_passed(self, memory_map: EpisodicMap, leg: _Leg, near: float, side: str | None) -> tuple[int, str]:
        """How many of the leg's landmark have gone by, counting over what ``memory_map``'s trace holds of
        the episode before this place, and the part that answered most of the trace (``fallback``: the
        count since the sub-goal began alone)."""
        trace = memory_map.trace(before=self.moves) if memory_map.enabled else []
        if not trace:
            return leg.instances, FALLBACK
        series = [self.perception.closeness(m.view, leg.category, side) for m in trace]
        counted = _count_runs(series + [near], self.th.passed, self.th.dip)[0]
        part = Counter(m.source for m in trace).most_common(1)[0][0]
        return max(leg.instances, counted), part

    def _return_to(self, leg: _Leg, panorama: np.ndarray, heading: float, position: np.ndarray,
                   links: list[float], first: bool) -> _Move:
        """"Go back to X and stop": follow the path planned over the topology graph to the node where X
        was passed (or walk on without a graph), and stop where X was passed."""
        goal = leg.goal
        if not first and self._back_at(goal.landmark, leg.category, panorama, heading, position):
            return _STOP
        anchor = self.anchors.get(goal.landmark or "")
        if anchor is None or anchor.node is None or not self.map.has_graph:
            return _GO_ON
        target = self.map.node_position(anchor.node)
        if not first and target is not None and float(np.linalg.norm(target - position)) <= self.th.arrive_m:
            return _STOP
        here = self.map.locate(panorama, heading, position)
        path = [] if here is None else self.map.plan(here, anchor.node)
        waypoint = next((p for p in path if float(np.linalg.norm(p - position)) > self.th.arrive_m), None)
        if waypoint is None:
            return _GO_ON
        towards = bearing(position, waypoint)
        link = closest_link(links, towards)
        if link is None or aligned(link, heading) or abs(relative(towards, link)) > 60.0:
            return _GO_ON
        return _Move(heading=link)

    # -- recognising a place passed earlier ----------------------------------------------------------

    def _back_at(self, landmark: str | None, category: int | None, panorama: np.ndarray, heading: float,
                 position: np.ndarray, window: int = 0) -> bool:
        """Whether the agent is back where ``landmark`` was passed (a *place* question, once the landmark was
        grounded): asked of the memory (a remembered visit within ``window`` places of the one where it went
        by closest; or the graph node there, one within ``place_radius`` of it or within ``window`` traversed
        edges), else judged from what is in view."""
        anchor = self.anchors.get(landmark or "")
        if anchor is None:
            return self._looks_back(category, panorama, heading)  # nothing to recall: not a memory question
        answer, part = self._recalls(self.map, anchor, panorama, heading, position, window)
        if answer is None:
            answer, part = self._looks_back(category, panorama, heading), FALLBACK
        truth, _ = self._recalls(self._truth, anchor, panorama, heading, position, window)
        self._asked("place", part, answer == truth)
        return answer

    def _looks_back(self, category: int | None, panorama: np.ndarray, heading: float) -> bool:
        """Without an answer from memory: a landmark of the category is beside the agent."""
        if category is None:
            return False
        _, near = self.perception.beside(panorama, category, heading)
        return near >= self.th.back

    def _recalls(self, memory_map: EpisodicMap, anchor: _Pass, panorama: np.ndarray, heading: float,
                 position: np.ndarray, window: int) -> tuple[bool | None, str]:
        """``memory_map``'s answer to "is this where ``anchor`` was passed?" and the part that gave it:
        ``True`` when a remembered view recognises the place; ``False`` when none does and a part still
        holds the view of the step it was passed at (an exact record, so it would have: the approximate
        graph does not overrule it); else ``True`` when the graph places the agent at (or, with ``window``,
        next to) the node it was passed at; ``None`` (no answer: the agent's view decides) otherwise."""
        if not memory_map.enabled:
            return None, FALLBACK
        for memory in memory_map.recall_here(panorama, heading, position, before=self.moves):
            if memory.step is not None:
                if abs(memory.step - anchor.best_step) <= window:
                    return True, memory.source
            elif anchor.category is not None and anchor.side is not None:
                seen = self.perception.closeness(memory.view, anchor.category, anchor.side)
                if seen >= anchor.best - 0.05:
                    return True, memory.source
        holder = memory_map.holds(anchor.best_step)
        if holder is not None:   # an exact record of that visit exists and is not here
            return False, holder
        if anchor.node is not None and memory_map.has_graph:
            if memory_map.near_node(memory_map.locate(panorama, heading, position), anchor.node, hops=window):
                return True, "graph"
        return None, FALLBACK


def _count_runs(series: list[float], threshold: float, dip: float, count: int = 0, peak: float = 0.0,
                last: float = 0.0) -> tuple[int, float, float]:
    """Instances in a closeness series: a run starts when it reaches ``threshold`` and a new one starts
    when it rises again after falling ``dip`` below the run's peak. Returns ``(count, peak, last)`` so a
    series can be continued one value at a time."""
    for value in series:
        if value < threshold:
            peak, last = 0.0, value
            continue
        if peak == 0.0 or (value > last and last <= peak - dip):
            count += 1
            peak = value
        peak = max(peak, value)
        last = value
    return count, peak, last


def agent_config(cfg: DictConfig | dict[str, Any] | None = None) -> DictConfig:
    """``configs/agent/modular.yaml`` with ``cfg`` merged over it (see :func:`load_agent_config`)."""
    return load_agent_config("modular", cfg)


def build_modular_agent(cfg: DictConfig | dict[str, Any] | None = None, num_actions: int = 4) -> ModularAgent:
    """A :class:`ModularAgent` from an agent config (see ``configs/agent/modular.yaml``)."""
    cfg = agent_config(cfg)
    release = release_dir(cfg)
    scene = release / "graph" / "scene.jsonl"
    require_input(bool(cfg.categories) or scene.is_file(), "modular",
                  f"the names of its landmark categories from {scene}, which does not exist",
                  "only the synthetic city has this scene description: run on it (no data_dir), or set "
                  "agent.categories=[...] to the names of the columns of panorama features you supply with "
                  "task.panorama=features +task.panorama_paths.features_path=FEATURES.npy "
                  "+task.panorama_paths.features_index=PANOIDS.txt")
    categories = [str(c) for c in cfg.categories] if cfg.categories else feature_categories(release)
    sectors = int(cfg.sectors)
    perception = Perception(categories, sectors, float(cfg.radius), float(cfg.visible))
    lexicon = LandmarkLexicon.from_release(release, categories, str(cfg.lexicon_split))
    codec = ViewCodec(sectors, len(categories), float(cfg.heading_weight))
    memory = memory_from_config(cfg, codec.dim, codec.descriptor_dim)
    thresholds = Thresholds(**OmegaConf.to_container(cfg.thresholds, resolve=True))
    return ModularAgent(perception, lexicon, EpisodicMap(memory, codec, float(cfg.place_radius)),
                        num_actions, str(cfg.semantics), thresholds)


@register("modular")
def _modular(cfg: DictConfig, num_actions: int) -> ModularAgent:
    return build_modular_agent(cfg, num_actions)
