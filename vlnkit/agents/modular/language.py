"""Instruction grounding for the modular agent: a rule-based parser into ordered sub-goals, and a lexicon
from landmark phrases to the perception's landmark categories.

:func:`parse_instruction` turns Touchdown- and Map2Seq-style text into a list of :class:`SubGoal`, in the
order they are to be carried out. It understands the phrasing of the street datasets as the synthetic
city writes it: orientation ("Turn so that the bank is on your right.", "Head toward the cafe"), landmarks
passed ("Pass Oak Cuts on your left."), turns with where they happen ("at the second intersection", "at
the next traffic light", "at the intersection with the mailbox on the corner", "at the end of the
street", "at the corner"; "Go straight through two intersections and turn left at the next one"),
crossings ("Cross two intersections."), turning around, stops (next to, before or past a landmark, "the
second cafe on your left", "after a few steps", "halfway down the block") and the phrases that refer
back to a landmark passed earlier ("Go back to X and stop.", "Go back past X and turn right at the first
intersection after it.", "When you are back at X, turn left.", "Stop when you get back to X you
passed."). A sentence it does not understand is skipped (``parse_instruction(..., strict=True)`` raises
instead), so unfamiliar text degrades the plan rather than the agent.

:class:`LandmarkLexicon` maps a landmark phrase to a category: a phrase that ends with a category name
("the black shoe store") is that category; a sign text ("Oak Cuts", "The Daily Page") is classified by
a naive-Bayes word model fitted on the training split's landmark phrases and the release's landmark
labels (``landmarks``/``landmark_ids`` of the records and ``graph/landmarks.json``), so words like
"Cuts" or "Page" carry the category they name in the training area to unseen areas.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ORDINALS = {
    "next": 1, "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10,
}
NUMBERS = {
    "no": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10,
}

ACTIONS = ("orient", "pass", "cross", "turn", "stop")
"""Kinds of sub-goal, see :class:`SubGoal`."""

TRIGGERS = ("intersection", "traffic_light", "corner_landmark", "street_end", "corner", "back_at", "return_to",
            "landmark", "steps", "halfway")
"""Where a turn or stop happens, see :class:`SubGoal`."""


@dataclass(frozen=True)
class SubGoal:
    """One step of an instruction's plan.

    Attributes:
        action: ``orient`` (face so that ``landmark`` is on side ``direction``), ``pass`` (``landmark`` goes
            by on side ``direction``, ``None`` when not said), ``cross`` (go straight through ``count``
            intersections), ``turn`` (``direction`` ``left``/``right``/``around``/``straight`` where ``at``
            says) or ``stop``.
        direction: the turn direction, or the side (``left``, ``right``, ``ahead``, ``behind``) a landmark
            is on.
        at: what triggers a turn or stop: ``intersection``, ``traffic_light`` (the ``count``-th one),
            ``corner_landmark`` (the intersection with ``landmark`` on the corner), ``street_end``,
            ``corner`` (a bend of the street), ``back_at`` (on arriving back at ``landmark`` passed earlier:
            "when you are back at X"), ``return_to`` (go back to ``landmark`` passed earlier: "go back to X
            and stop"), ``landmark`` (``landmark`` on side ``direction``, the ``count``-th of its category for "the
            second cafe"), ``steps`` (a few steps on) or ``halfway`` (halfway down the block).
        count: which occurrence of the trigger (1 for "next"/"first").
        landmark: the landmark phrase, lower case without a leading "the".
        gate: a landmark that has to be passed before intersections are counted ("turn around at the next
            intersection" after passing it; "the first intersection after it").
        back: the landmark was passed earlier and the text goes back to it.
    """

    action: str
    direction: str | None = None
    at: str | None = None
    count: int = 1
    landmark: str | None = None
    gate: str | None = None
    back: bool = False

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown sub-goal action {self.action!r}; expected one of {ACTIONS}")
        if self.at is not None and self.at not in TRIGGERS:
            raise ValueError(f"unknown sub-goal trigger {self.at!r}; expected one of {TRIGGERS}")


class InstructionParseError(ValueError):
    """A sentence the parser does not understand (raised only by ``parse_instruction(strict=True)``)."""


_PHRASE = r"(?:(?! and |, ).)+?"
_LM = rf"(?P<lm>{_PHRASE})"
_LM2 = rf"(?P<lm2>{_PHRASE})"
_LM3 = rf"(?P<lm3>{_PHRASE})"
_SIDE = r"(?P<side>left|right)"
_DIR = r"(?:turn|take a|make a) (?P<dir>left|right)"
_ORD = r"(?P<ord>next|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|\d+(?:st|nd|rd|th))"
_NUM = r"(?P<num>no|one|two|three|four|five|six|seven|eight|nine|ten|\d+)"
_WHERE = (
    r"at the (?:corner|end of the street|intersection with .+? on the corner"
    r"|(?:next|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|\d+(?:st|nd|rd|th))"
    r" (?:intersection(?: after it)?|traffic light))"
)
_BACK = r"(?:are back at|get back to)"


def normalize_landmark(phrase: str) -> str:
    """A landmark phrase as sub-goals hold it: lower case, single spaces, no leading article."""
    text = " ".join(phrase.strip().lower().split())
    return re.sub(r"^(?:the|a|an) ", "", text)


def _ordinal(word: str) -> int:
    word = word.lower()
    return ORDINALS[word] if word in ORDINALS else int(re.sub(r"\D", "", word))


def _number(word: str) -> int:
    word = word.lower()
    return NUMBERS[word] if word in NUMBERS else int(word)


def _where(text: str) -> tuple[str, int, str | None, bool]:
    """``(at, count, landmark, after_it)`` of a location phrase matched by ``_WHERE``."""
    text = text.strip()
    if text == "at the corner":
        return "corner", 1, None, False
    if text == "at the end of the street":
        return "street_end", 1, None, False
    m = re.fullmatch(r"at the intersection with (?P<lm>.+?) on the corner", text)
    if m:
        return "corner_landmark", 1, normalize_landmark(m["lm"]), False
    m = re.fullmatch(rf"at the {_ORD} (?P<kind>intersection|traffic light)(?P<after> after it)?", text)
    if m is None:
        raise InstructionParseError(f"not a location: {text!r}")
    at = "intersection" if m["kind"] == "intersection" else "traffic_light"
    return at, _ordinal(m["ord"]), None, bool(m["after"])


def _turn(direction: str, where: str, gate: str | None = None, back: bool = False) -> SubGoal:
    at, count, landmark, _ = _where(where)
    return SubGoal("turn", direction, at, count, landmark, gate, back)


def _sentences(text: str) -> list[str]:
    """Sentences of ``text`` (periods inside names such as "Elm Bread Co." do not split)."""
    protected = re.sub(r"\b(Co|St|Dr|Mr|Mrs|Ms|Ave)\.(?=\s+[a-z&(]|\s*,)", r"\1<dot>", text)
    parts = re.split(r"(?<=[.!?])\s+", protected.strip())
    return [p.replace("<dot>", ".").strip().rstrip(".!?").strip() for p in parts if p.strip().rstrip(".!?").strip()]


def _stop(clause: str) -> SubGoal | None:
    """The stop sub-goal of a "stop ..." clause, or ``None`` if it is not one."""
    c = clause
    m = re.fullmatch(rf"stop when you {_BACK} {_LM}(?: you passed)?", c)
    if m:
        return SubGoal("stop", None, "back_at", 1, normalize_landmark(m["lm"]), back=True)
    m = re.fullmatch(rf"stop at the {_ORD} {_LM} on your {_SIDE}", c)
    if m:
        return SubGoal("stop", m["side"], "landmark", _ordinal(m["ord"]), normalize_landmark(m["lm"]))
    m = re.fullmatch(rf"stop (?:when {_LM} is|when you see {_LM2}|next to {_LM3}) on your {_SIDE}", c)
    if m:
        lm = m["lm"] or m["lm2"] or m["lm3"]
        return SubGoal("stop", m["side"], "landmark", 1, normalize_landmark(lm))
    m = re.fullmatch(rf"stop (?:just before|in front of) {_LM}", c)
    if m:
        return SubGoal("stop", "ahead", "landmark", 1, normalize_landmark(m["lm"]))
    m = re.fullmatch(rf"stop (?:just past|right after you pass) {_LM}", c)
    if m:
        return SubGoal("stop", "behind", "landmark", 1, normalize_landmark(m["lm"]))
    if c in ("stop a few steps later", "stop after a few steps"):
        return SubGoal("stop", None, "steps")
    if c == "stop halfway down the block":
        return SubGoal("stop", None, "halfway")
    return None


def _clause(clause: str, goals: list[SubGoal]) -> list[SubGoal] | None:
    """Sub-goals of one clause (already lower case, no final period); ``None`` if not understood."""
    c = clause.strip()
    stop = _stop(c)
    if stop is not None:
        return [stop]
    # Orientation (Touchdown openings, Map2Seq opening clauses).
    m = re.fullmatch(rf"(?:turn|orient yourself) so that {_LM} is on your {_SIDE}", c) or re.fullmatch(
        rf"face the direction that puts {_LM} on your {_SIDE}", c
    ) or re.fullmatch(rf"go straight with {_LM} on your {_SIDE}", c)
    if m:
        return [SubGoal("orient", m["side"], landmark=normalize_landmark(m["lm"]))]
    m = re.fullmatch(rf"(?:turn so that you are facing|orient yourself toward|head toward|walk toward) {_LM}", c)
    if m:
        return [SubGoal("orient", "ahead", landmark=normalize_landmark(m["lm"]))]
    m = re.fullmatch(rf"turn so that {_LM} is behind you", c) or re.fullmatch(rf"put {_LM} at your back", c)
    if m:
        return [SubGoal("orient", "behind", landmark=normalize_landmark(m["lm"]))]
    if c in ("orient yourself along the street", "start by facing down the block", "go straight",
             "walk down the street", "head down the block"):
        return []
    # Landmarks passed.
    m = re.fullmatch(rf"(?:pass|you will pass|continue past) {_LM} on your {_SIDE}", c)
    if m:
        return [SubGoal("pass", m["side"], landmark=normalize_landmark(m["lm"]))]
    m = re.fullmatch(rf"(?:go past|pass) {_LM}", c)
    if m:
        return [SubGoal("pass", None, landmark=normalize_landmark(m["lm"]))]
    # Crossings.
    m = re.fullmatch(rf"(?:go straight through|go through|cross) {_NUM} intersections?", c)
    if m:
        return [SubGoal("cross", "straight", "intersection", _number(m["num"]))]
    # Turning around (after the landmark just passed: intersections are counted from there).
    m = re.fullmatch(rf"(?:keep going and |continue, then )?turn around (?P<where>{_WHERE})", c)
    if m:
        previous = goals[-1] if goals else None
        gate = previous.landmark if previous is not None and previous.action == "pass" else None
        return [_turn("around", m["where"], gate=gate)]
    # Turns.
    m = re.fullmatch(rf"{_DIR} (?P<where>{_WHERE})", c) or re.fullmatch(rf"(?P<where>{_WHERE}), {_DIR}", c)
    if m:
        return [_turn(m["dir"], m["where"])]
    m = re.fullmatch(rf"at the end of the street, {_DIR}", c)
    if m:
        return [SubGoal("turn", m["dir"], "street_end")]
    m = re.fullmatch(rf"follow the street and {_DIR} at the corner", c)
    if m:
        return [SubGoal("turn", m["dir"], "corner")]
    return None


def _sentence(sentence: str, goals: list[SubGoal]) -> list[SubGoal] | None:
    """Sub-goals of one sentence; ``None`` if some part of it is not understood."""
    s = " ".join(sentence.lower().split())
    m = re.fullmatch(rf"go straight through {_NUM} intersections? and {_DIR} at the next one", s)
    if m:
        return [SubGoal("turn", m["dir"], "intersection", _number(m["num"]) + 1)]
    m = re.fullmatch(rf"(?:go|head) back past {_LM} and {_DIR} at the first intersection after it", s)
    if m:
        return [SubGoal("turn", m["dir"], "intersection", 1, gate=normalize_landmark(m["lm"]), back=True)]
    m = re.fullmatch(rf"(?:go|walk) back to {_LM}(?: you passed)? and stop(?: there)?", s)
    if m:
        return [SubGoal("stop", None, "return_to", 1, normalize_landmark(m["lm"]), back=True)]
    m = re.fullmatch(rf"when you {_BACK} {_LM}(?: you passed)?, (?P<rest>.+)", s)
    if m:
        landmark = normalize_landmark(m["lm"])
        rest = m["rest"]
        if rest == "go straight through the intersection":
            return [SubGoal("turn", "straight", "back_at", 1, landmark, back=True)]
        turn = re.fullmatch(_DIR, rest)
        if turn is None:
            return None
        return [SubGoal("turn", turn["dir"], "back_at", 1, landmark, back=True)]
    whole = _clause(s, goals)
    if whole is not None:
        return whole
    out: list[SubGoal] = []
    for part in re.split(r", then ", s):
        pieces = [part] if _clause(part, goals + out) is not None else re.split(r" and ", part)
        for piece in pieces:
            parsed = _clause(piece, goals + out)
            if parsed is None:
                return None
            out.extend(parsed)
    return out


def parse_instruction(text: str, strict: bool = False) -> list[SubGoal]:
    """The ordered sub-goals of a navigation instruction (see the module docstring for the phrasing).

    Sentences that are not understood are skipped, or raise :class:`InstructionParseError` with ``strict``.
    """
    goals: list[SubGoal] = []
    for sentence in _sentences(text):
        parsed = _sentence(sentence, goals)
        if parsed is None:
            if strict:
                raise InstructionParseError(f"cannot parse {sentence!r}")
            continue
        goals.extend(parsed)
    return goals


_GENERIC_NAME_WORDS = frozenset({"shop", "store", "building", "office"})
"""Words of category names that do not tell categories apart."""


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9&]+", text.lower())


class LandmarkLexicon:
    """Landmark phrase -> category index of the perception's categories.

    ``categories`` are the perception's category names (the panorama feature columns). ``examples`` are
    ``(phrase, category)`` pairs to learn sign-text words from (see :meth:`from_release`); ``smoothing`` is
    the naive-Bayes additive smoothing; ``name_bonus`` the score a word sharing its stem with the category's
    name adds (see :meth:`category`).
    """

    def __init__(self, categories: Sequence[str], examples: Iterable[tuple[str, str]] = (), smoothing: float = 0.1,
                 name_bonus: float = 10.0) -> None:
        self.categories = list(categories)
        self.name_bonus = name_bonus
        self._name_stems = {
            c: {w[:4] for w in _words(c) if w not in _GENERIC_NAME_WORDS} for c in self.categories
        }
        self.index = {c: i for i, c in enumerate(self.categories)}
        self._by_length = sorted(self.categories, key=len, reverse=True)
        self.smoothing = smoothing
        self.word_counts: dict[str, Counter[str]] = defaultdict(Counter)
        for phrase, category in examples:
            if category in self.index and self.named_category(phrase) is None:
                for word in set(_words(phrase)):
                    self.word_counts[word][category] += 1

    def named_category(self, phrase: str) -> str | None:
        """The category a phrase ends with ("the red bank" -> "bank"), or ``None``."""
        text = " ".join(_words(phrase))
        for category in self._by_length:
            if text == category or text.endswith(" " + category):
                return category
        return None

    def category(self, phrase: str | None) -> int | None:
        """Category index of a landmark phrase, or ``None`` when nothing in it is known.

        A phrase ending with a category name is that category. Otherwise each category scores the
        naive-Bayes log-likelihood of the phrase's words seen in training, plus ``name_bonus`` for every
        word never seen in training that shares its first four letters with a distinctive word of the
        category's name ("Zoe's Ice Cream" -> ice cream shop, "Marco's Barbers" -> barber shop).
        """
        if not phrase:
            return None
        named = self.named_category(phrase)
        if named is not None:
            return self.index[named]
        words = set(_words(phrase))
        known = [w for w in words if w in self.word_counts]
        scores: dict[str, float] = defaultdict(float)
        k = len(self.categories)
        for category in {c for w in known for c in self.word_counts[w]}:
            scores[category] = sum(
                math.log((self.word_counts[w][category] + self.smoothing)
                         / (sum(self.word_counts[w].values()) + self.smoothing * k))
                for w in known
            )
        stems = {w[:4] for w in words if len(w) >= 3 and w not in self.word_counts}
        for category, name_stems in self._name_stems.items():
            hits = len(stems & name_stems)
            if hits:
                scores[category] += self.name_bonus * hits
        if not scores:
            return None
        return self.index[max(sorted(scores), key=scores.__getitem__)]

    @classmethod
    def from_release(cls, release: str | Path, categories: Sequence[str], split: str = "train") -> LandmarkLexicon:
        """A lexicon fitted on ``split`` of a release folder (category names only when the release has no
        landmark labels)."""
        return cls(categories, release_examples(release, split))


def release_examples(release: str | Path, split: str = "train") -> tuple[tuple[str, str], ...]:
    """``(landmark phrase, category name)`` pairs of a release split's labelled records (what a
    :class:`LandmarkLexicon` is fitted on); empty when the release has no landmark labels."""
    return _release_examples(str(Path(release).expanduser().resolve()), split)


@lru_cache(maxsize=8)
def _release_examples(release: str, split: str) -> tuple[tuple[str, str], ...]:
    """``(phrase, category)`` pairs of a release split's records that carry landmark labels."""
    root = Path(release)
    labels_path = root / "graph" / "landmarks.json"
    split_path = root / "data" / f"{split}.json"
    if not labels_path.is_file() or not split_path.is_file():
        return ()
    labels = {lm["id"]: lm["category"] for lm in json.loads(labels_path.read_text(encoding="utf-8"))}
    pairs: list[tuple[str, str]] = []
    with split_path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            for phrase, lm_id in zip(record.get("landmarks") or (), record.get("landmark_ids") or ()):
                if lm_id in labels:
                    pairs.append((phrase, labels[lm_id]))
    return tuple(pairs)
