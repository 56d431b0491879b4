"""VELMA-style prompts for street navigation, and the JSON action schema the LLM answers in.

A prompt tells the LLM, in words, what a street agent knows at a step (VELMA, Schumann et al. 2024):

- the navigation instruction;
- where the streets lead from the current node (from the observation's ``links``) and which landmarks are
  visible ahead, left, right and behind (from the panorama features: the categories whose closeness passes
  a threshold in the sectors of each direction);
- the actions taken so far, numbered;
- Mem4Nav memory cues, one line ``Past memory: at relative_pos (x, y) recently saw <obj> | ...`` with
  positions in metres in the agent's frame (x to the right, y ahead).

The answer is a JSON object ``{"action": "<word>"}`` whose word is one of the actions available under the
environment's semantics; :func:`action_schema` is its JSON schema (sent to servers that constrain decoding
with it) and :func:`parse_action` validates an answer on the client; :func:`action_in_text` reads the
action out of an answer that is not such an object, where it names exactly one.

Directions: panorama sector ``k`` of ``S`` covers clockwise angles ``[k, k + 1) * 360 / S`` from the
agent's heading (sector 0 faces the heading, as the street environment rolls it); a sector belongs to the
quadrant its centre falls in: ahead ``[-45, 45)``, right ``[45, 135)``, behind ``[135, 225)``, left
``[225, 315)`` degrees. With 8 sectors that is two sectors per direction.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlnkit.envs.street.actions import StreetAction

ACTION_WORDS: dict[StreetAction, str] = {
    StreetAction.STOP: "stop",
    StreetAction.FORWARD: "forward",
    StreetAction.LEFT: "left",
    StreetAction.RIGHT: "right",
    StreetAction.TURN_AROUND: "turn_around",
}
ACTION_HELP: dict[StreetAction, str] = {
    StreetAction.FORWARD: "move to the next place along the street you face",
    StreetAction.LEFT: "turn towards the next street on your left",
    StreetAction.RIGHT: "turn towards the next street on your right",
    StreetAction.TURN_AROUND: "face the opposite direction",
    StreetAction.STOP: "you have reached the goal",
}
DIRECTIONS: tuple[str, ...] = ("ahead", "right", "behind", "left")
"""The four directions in clockwise order, starting at the heading."""
READING_ORDER: tuple[str, ...] = ("ahead", "left", "right", "behind")
"""The order in which prompts list directions."""


class InvalidAction(ValueError):
    """An LLM answer that is not a JSON object naming one of the allowed actions."""


def available_actions(num_actions: int) -> list[StreetAction]:
    """The actions of an environment with ``num_actions`` discrete actions (ids ``0..num_actions-1``)."""
    if not 1 <= num_actions <= len(StreetAction):
        raise ValueError(f"num_actions must be in 1..{len(StreetAction)}, got {num_actions}")
    return [StreetAction(i) for i in range(num_actions)]


def direction_of(relative_deg: float) -> str:
    """``ahead``, ``right``, ``behind`` or ``left`` for a clockwise angle from the heading, in degrees."""
    return DIRECTIONS[int(((relative_deg + 45.0) % 360.0) // 90.0)]


def sector_directions(sectors: int) -> list[str]:
    """The direction of each panorama sector (by the quadrant of its centre angle)."""
    return [direction_of((k + 0.5) * 360.0 / sectors) for k in range(sectors)]


def visible_landmarks(panorama: np.ndarray, categories: Sequence[str], threshold: float) -> dict[str, list[str]]:
    """Landmark categories seen in each direction: those whose closeness is at least ``threshold`` in a
    sector of that direction, nearest (highest closeness) first, each named once per direction.

    ``panorama`` is an ``(sectors, len(categories))`` closeness array with sector 0 facing the heading.
    """
    features = np.asarray(panorama, dtype=np.float32)
    if features.ndim != 2 or features.shape[1] != len(categories):
        raise ValueError(f"expected panorama features of shape (sectors, {len(categories)}), got {features.shape}")
    best: dict[str, dict[int, float]] = {d: {} for d in DIRECTIONS}
    for sector, direction in enumerate(sector_directions(features.shape[0])):
        seen = best[direction]
        for column in np.flatnonzero(features[sector] >= threshold).tolist():
            seen[column] = max(seen.get(column, 0.0), float(features[sector, column]))
    return {
        d: [categories[c] for c, _ in sorted(best[d].items(), key=lambda item: (-item[1], item[0]))]
        for d in READING_ORDER
    }


def join_words(words: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} and {words[-1]}"


def describe_streets(links: np.ndarray, heading: float) -> str:
    """One sentence on the streets at the node: an intersection (three or more links), a street, or a
    dead end, and the directions the streets lead in (``links`` holds link headings, padded with -1)."""
    headings = [float(h) for h in np.asarray(links).reshape(-1) if h >= 0]
    found = {direction_of(h - heading) for h in headings}
    where = join_words([d for d in READING_ORDER if d in found])
    if len(headings) >= 3:
        return f"You are at a {len(headings)}-way intersection; streets lead {where}."
    if len(headings) == 2:
        return f"You are on a street that leads {where}; this is not an intersection."
    if len(headings) == 1:
        return f"You are at a dead end; the street leads {where}."
    return "No street leads on from here."


def describe_landmarks(visible: Mapping[str, Sequence[str]]) -> str:
    """``Visible landmarks: ahead: cafe, tree; left: none; right: bank; behind: none.``"""
    parts = [f"{d}: {', '.join(visible.get(d, ())) or 'none'}" for d in READING_ORDER]
    return f"Visible landmarks: {'; '.join(parts)}."


@dataclass(frozen=True)
class MemoryCue:
    """A remembered place: ``x`` metres to the right and ``y`` metres ahead of the agent, where it saw
    ``objects`` (nearest first)."""

    x: float
    y: float
    objects: tuple[str, ...]

    def text(self) -> str:
        """``at relative_pos (3, -12) recently saw cafe and tree`` (whole metres)."""
        seen = join_words(list(self.objects)) or "nothing notable"
        return f"at relative_pos ({_metres(self.x)}, {_metres(self.y)}) recently saw {seen}"


def _metres(value: float) -> int:
    """Whole metres, rounded."""
    return int(round(value))


def egocentric(offset_east_north: np.ndarray, heading: float) -> tuple[float, float]:
    """An (east, north) world offset in the agent's frame: (metres to the right, metres ahead) for an
    agent facing compass ``heading`` degrees (clockwise from north)."""
    east, north = (float(v) for v in np.asarray(offset_east_north, dtype=np.float64).reshape(2))
    h = math.radians(heading)
    return east * math.cos(h) - north * math.sin(h), east * math.sin(h) + north * math.cos(h)


def format_memory(cues: Sequence[MemoryCue]) -> str | None:
    """The memory line of the prompt, or ``None`` without cues (the line is left out)."""
    texts = list(dict.fromkeys(cue.text() for cue in cues))
    return f"Past memory: {' | '.join(texts)}" if texts else None


def system_prompt(actions: Sequence[StreetAction], memory: bool = True) -> str:
    """The task description: what each available action does, how to read memory cues (when the agent
    has a memory) and the JSON answer format."""
    lines = [
        "You are a navigation agent walking through a city. Follow the navigation instructions step by step.",
        "At each step choose exactly one action:",
        *(f"- {ACTION_WORDS[a]}: {ACTION_HELP[a]}" for a in sorted(actions, key=_reading_key)),
    ]
    if memory:
        lines.append("Past memory lists places you passed, with relative_pos (x, y) in metres: x to your right, "
                     "y ahead of you.")
    lines.append('Answer only with a JSON object such as {"action": "forward"}.')
    return "\n".join(lines)


def in_reading_order(actions: Sequence[StreetAction]) -> list[StreetAction]:
    """``actions`` in the order prompts list them: forward, left, right, turn_around, stop."""
    return sorted(actions, key=_reading_key)


def _reading_key(action: StreetAction) -> int:
    """Forward, left, right, turn_around, stop: the order actions are listed in."""
    order = (StreetAction.FORWARD, StreetAction.LEFT, StreetAction.RIGHT, StreetAction.TURN_AROUND, StreetAction.STOP)
    return order.index(action)


def user_prompt(
    instruction: str,
    streets: str,
    landmarks: str | None,
    history: Sequence[StreetAction],
    memory: str | None,
    actions: Sequence[StreetAction],
    history_limit: int | None = None,
) -> str:
    """The step's prompt: instruction, numbered action history (the last ``history_limit`` actions,
    numbered by step), memory line, the current place and the question. What changes from step to step
    comes last, so a server's prompt cache reuses the rest."""
    words = ", ".join(ACTION_WORDS[a] for a in sorted(actions, key=_reading_key))
    lines = ["Navigate to the described target location!", f"Action space: {words}",
             f'Navigation instructions: "{instruction.strip()}"', "Action sequence so far:"]
    start = 0 if history_limit is None else max(0, len(history) - history_limit)
    if start:
        lines.append(f"(actions before step {start + 1} are not shown)")
    lines.extend(f"{i + 1}. {ACTION_WORDS[a]}" for i, a in enumerate(history) if i >= start)
    if not history:
        lines.append("(none yet)")
    if memory:
        lines.append(memory)
    lines.append(f"Step {len(history) + 1}: {streets}")
    if landmarks:
        lines.append(landmarks)
    lines.append("Which action do you take next?")
    return "\n".join(lines)


def action_schema(actions: Sequence[StreetAction]) -> dict[str, Any]:
    """JSON schema of an answer: ``{"action": <one of the available action words>}``, nothing else."""
    return {
        "type": "object",
        "properties": {"action": {"type": "string", "enum": [ACTION_WORDS[a] for a in sorted(actions, key=_reading_key)]}},
        "required": ["action"],
        "additionalProperties": False,
    }


_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


def parse_action(text: str | None, actions: Sequence[StreetAction]) -> StreetAction:
    """The action named by an LLM answer, validated against ``actions``.

    The answer must contain a JSON object with an ``action`` string (surrounding text, such as a Markdown
    code fence, is ignored; the first parseable object counts); case, surrounding blanks and a blank or
    hyphen in ``turn around`` are tolerated. Anything else raises :class:`InvalidAction`.
    """
    if not text:
        raise InvalidAction("empty answer")
    answer = None
    for match in _OBJECT.finditer(text):
        try:
            answer = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        break
    if not isinstance(answer, dict):
        raise InvalidAction(f"no JSON object in the answer {text[:200]!r}")
    word = answer.get("action")
    if not isinstance(word, str):
        raise InvalidAction(f"the answer has no 'action' string: {text[:200]!r}")
    word = re.sub(r"[\s-]+", "_", word.strip().lower())
    by_word = {ACTION_WORDS[a]: a for a in actions}
    if word not in by_word:
        raise InvalidAction(f"action {word!r} is not one of {', '.join(by_word)}")
    return by_word[word]


_WORDS = re.compile(r"turn_around|[a-z]+")


def action_in_text(text: str | None, actions: Sequence[StreetAction]) -> StreetAction | None:
    """The action a free-text answer names, for answers :func:`parse_action` refuses: the one available
    action whose word appears in ``text`` as a whole word (case ignored; ``turn around`` may be written
    with a blank, hyphen or underscore), or ``None`` when the text names none or several different ones
    (``"go left, not right"`` is ambiguous, so it is not read as either)."""
    normalised = re.sub(r"turn[\s_-]*around", "turn_around", (text or "").lower())
    by_word = {ACTION_WORDS[a]: a for a in actions}
    named = {by_word[word] for word in _WORDS.findall(normalised) if word in by_word}
    return named.pop() if len(named) == 1 else None
