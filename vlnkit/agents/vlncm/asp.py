"""Attention Spot Predictor (ASP): an instruction -> the ordered list of its attention spots.

An attention spot is an object or a place the agent moves to or past ("the black coffee table", "the
kitchen"), in the order the instruction meets them. Two backends:

- :class:`LLMSpotPredictor` asks an LLM through the project's OpenAI-compatible client
  (:class:`~vlnkit.agents.llm.client.OpenAIClient`: retries, cache, schema-constrained JSON) for
  ``{"spots": [...]}``; an answer is valid when every spot's words occur in the instruction in that order
  (the LLM copies phrases, it does not invent them). When no valid answer comes (server down, invalid
  output after the retries) it falls back to the rule-based splitter, and counts it.
- :class:`RuleSpotPredictor` is a deterministic splitter: noun phrases opened by an article (and runs of
  capitalised words, the names on signs), minus directions and street structure ("your left", "the
  next intersection") and the places the text says to leave ("exit the bedroom").

:func:`spot_scores` measures a predictor against ground-truth landmark lists (micro precision and recall
of normalised phrases, matched as multisets).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from vlnkit.agents.llm.client import LLMClient, LLMError

log = logging.getLogger(__name__)


class SpotPredictor(Protocol):
    """Splits an instruction into its ordered attention spots."""

    def predict(self, instruction: str) -> list[str]:
        """The attention spots of ``instruction``, in order."""


# ------------------------------------------------------------------------------------------ normalising

ARTICLES = frozenset({"the", "a", "an"})
ORDINAL_WORDS = frozenset({"next", "first", "second", "third", "fourth", "fifth", "last", "other", "same"})
_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")


def normalise_spot(phrase: str) -> str:
    """A phrase for comparison: lower case, words only, without leading articles and ordinals
    (``"The second Pet Shop."`` -> ``"pet shop"``)."""
    words = [w.lower() for w in _WORD.findall(phrase)]
    while words and (words[0] in ARTICLES or words[0] in ORDINAL_WORDS):
        words.pop(0)
    return " ".join(words)


def first_mentions(spots: Sequence[str]) -> list[str]:
    """``spots`` without the repeats of a phrase (normalised) already listed."""
    seen: set[str] = set()
    out = []
    for spot in spots:
        if normalise_spot(spot) not in seen:
            seen.add(normalise_spot(spot))
            out.append(spot)
    return out


def spot_scores(predicted: Sequence[Sequence[str]], truth: Sequence[Sequence[str]],
                first_mention: bool = False) -> dict[str, float]:
    """Micro-averaged precision, recall and F1 of predicted spot lists against ground-truth landmark
    lists (normalised phrases matched as multisets, per instruction), with the counts. ``first_mention``
    drops repeated predictions first, for ground truth that lists each landmark once (the synthetic
    city's ``landmarks``)."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} ground-truth lists")
    hits = n_pred = n_true = 0
    for pred, true in zip(predicted, truth):
        p = Counter(normalise_spot(s) for s in (first_mentions(pred) if first_mention else pred) if normalise_spot(s))
        t = Counter(normalise_spot(s) for s in true if normalise_spot(s))
        hits += sum((p & t).values())
        n_pred += sum(p.values())
        n_true += sum(t.values())
    precision = hits / n_pred if n_pred else 0.0
    recall = hits / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "predicted": float(n_pred), "truth": float(n_true),
            "instructions": float(len(truth))}


# ------------------------------------------------------------------------------------------ rules

PHRASE_BREAKS = frozenset({
    "on", "in", "at", "to", "and", "then", "until", "with", "you", "that", "which", "is", "are", "so", "after",
    "before", "into", "past", "toward", "towards", "from", "of", "by", "near", "through", "when", "where",
    "while", "as", "it", "there", "here", "again", "straight", "ahead", "forward", "once", "but", "or",
})
"""Words that end a noun phrase."""

NOT_SPOTS = frozenset({
    "left", "right", "end", "intersection", "intersections", "street", "streets", "block", "blocks", "corner",
    "way", "turn", "turns", "step", "steps", "side", "direction", "one", "back", "front", "middle", "top",
    "bottom", "distance", "path", "route", "place", "spot", "area", "it", "them",
})
"""Heads of phrases that are directions or street structure, not things to move to."""

LEAVE_WORDS = ("exit", "leave", "out of", "exiting", "leaving")
"""A phrase right after one of these is a place the agent leaves, not a spot."""

VERBS = frozenset({
    "turn", "walk", "go", "head", "pass", "continue", "stop", "wait", "enter", "exit", "leave", "make", "take",
    "follow", "keep", "orient", "face", "put", "cross", "you", "move", "proceed", "when", "at", "once",
    "after", "then", "from", "with", "in", "on", "stand", "look",
})
"""Capitalised words that start no name (the verbs and connectives instructions open sentences with)."""

_TOKEN = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?|[.,;:!?]")


def _is_name_word(word: str) -> bool:
    return word[0].isupper() or word[0].isdigit()


class RuleSpotPredictor:
    """The deterministic splitter (see the module docstring)."""

    def predict(self, instruction: str) -> list[str]:
        """The spots of ``instruction`` in order of mention (repeats kept: the agent revisits them)."""
        spots: list[str] = []
        tokens = _TOKEN.findall(instruction)
        i = 0
        while i < len(tokens):
            word = tokens[i]
            lower = word.lower()
            names_follow = i + 1 < len(tokens) and _is_name_word(tokens[i + 1])
            if lower in ARTICLES and not (word == "The" and names_follow):
                end, phrase = self._noun_phrase(tokens, i + 1)
                if phrase and not self._left_behind(tokens, i):
                    spots.append(phrase)
                i = max(end, i + 1)
            elif _is_name_word(word) and lower not in PHRASE_BREAKS | VERBS:
                end = self._name_run(tokens, i)
                name = " ".join(tokens[i:end])
                if normalise_spot(name) and normalise_spot(name).split()[-1] not in NOT_SPOTS:
                    spots.append(name)
                i = end
            else:
                i += 1
        return spots

    @staticmethod
    def _name_run(tokens: Sequence[str], i: int) -> int:
        """End of the run of capitalised words starting at ``i``."""
        while i < len(tokens) and tokens[i] not in ".,;:!?" and _is_name_word(tokens[i]):
            i += 1
        return i

    @staticmethod
    def _noun_phrase(tokens: Sequence[str], i: int) -> tuple[int, str]:
        """The phrase after an article: words up to a phrase break or punctuation, without ordinals,
        refused when its head is a direction or structure word."""
        start = i
        while i < len(tokens) and tokens[i] not in ".,;:!?" and tokens[i].lower() not in PHRASE_BREAKS:
            i += 1
        words = list(tokens[start:i])
        while words and words[0].lower() in ORDINAL_WORDS:
            words.pop(0)
        if not words or words[-1].lower() in NOT_SPOTS or words[0].lower() in ("few", "couple"):
            return i, ""
        return i, " ".join(words)

    @staticmethod
    def _left_behind(tokens: Sequence[str], article: int) -> bool:
        """Whether the phrase whose article is at ``article`` follows a verb of leaving."""
        before = " ".join(t.lower() for t in tokens[max(0, article - 2):article])
        return any(before.endswith(w) for w in LEAVE_WORDS)


# ------------------------------------------------------------------------------------------ LLM

SPOT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"spots": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 12}},
    "required": ["spots"],
    "additionalProperties": False,
}
"""The JSON schema of an ASP answer (sent as the request's ``response_format``)."""

SYSTEM_PROMPT = (
    "You help a robot follow navigation instructions. Split the instruction into attention spots: the "
    "objects or places the robot must move to or pass, in the order it will meet them. Copy each spot's "
    "words from the instruction, with its colour or name (\"the yellow door\", \"the kitchen\"). Leave out "
    "directions (left, right), turns, intersections, and places the robot leaves. "
    'Answer only with JSON: {"spots": ["...", "..."]}.'
)
"""The system prompt (the paper gives the role, not its wording; this one is the project's)."""

EXAMPLE_INSTRUCTION = ("Walk out of the bedroom and go past the blue sofa. Turn right into the kitchen. "
                       "Stop next to the white fridge.")
EXAMPLE_ANSWER = '{"spots": ["the blue sofa", "the kitchen", "the white fridge"]}'


def asp_messages(instruction: str) -> list[dict[str, str]]:
    """The chat messages of an ASP request: the system prompt, one worked example, the instruction."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Instruction: {EXAMPLE_INSTRUCTION}"},
        {"role": "assistant", "content": EXAMPLE_ANSWER},
        {"role": "user", "content": f"Instruction: {instruction.strip()}"},
    ]


def parse_spots(answer: str, instruction: str) -> list[str]:
    """The spots of an LLM answer; raises ``ValueError`` unless it is ``{"spots": [...]}`` with at least
    one spot and every spot's words occur, in order, in ``instruction``."""
    try:
        data = json.loads(answer)
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON: {answer[:80]!r}") from err
    spots = data.get("spots") if isinstance(data, Mapping) else None
    if not isinstance(spots, list) or not spots or not all(isinstance(s, str) for s in spots):
        raise ValueError(f'expected {{"spots": [strings]}}, got {answer[:80]!r}')
    words = f" {' '.join(w.lower() for w in _WORD.findall(instruction))} "
    out = []
    for spot in spots:
        norm = normalise_spot(spot)
        if not norm:
            continue
        if f" {norm} " not in words:
            raise ValueError(f"spot {spot!r} is not in the instruction")
        out.append(spot.strip())
    if not out:
        raise ValueError("no spot with words")
    return out


class LLMSpotPredictor:
    """Attention spots from an LLM, with a fallback predictor (see the module docstring).

    Args:
        client: the LLM client (its ``max_tokens`` should leave room for a list, e.g. 128).
        fallback: used when the LLM gives no valid answer (``None``: raise the client's error).
        server: a local LLM server this predictor started and keeps running, if any.

    ``fallbacks`` counts the instructions the fallback answered.
    """

    def __init__(self, client: LLMClient, fallback: SpotPredictor | None = None, server: Any = None) -> None:
        self.client = client
        self.fallback = fallback
        self.server = server
        self.fallbacks = 0

    def predict(self, instruction: str) -> list[str]:
        """The LLM's spots for ``instruction``, or the fallback's."""
        try:
            answer = self.client.complete(asp_messages(instruction), SPOT_SCHEMA,
                                          validate=lambda a: parse_spots(a, instruction))
            return parse_spots(answer, instruction)
        except LLMError as err:
            if self.fallback is None:
                raise
            self.fallbacks += 1
            if self.fallbacks == 1:
                log.warning("attention spot predictor falls back to rules: %s (further fallbacks are counted "
                            "in agent_stats, not logged)", err)
            else:
                log.debug("attention spot predictor falls back to rules: %s", err)
            return self.fallback.predict(instruction)
