"""What the multimodal policy reads: instruction words, per-step panorama and link features, and the
memory entries retrieved for a step, as arrays (shared by data collection, training and the agent).

- :class:`Vocabulary`: lower-case words of the training instructions (``<pad>`` 0, ``<unk>`` 1).
- :func:`link_bins`: the outgoing links as an ``(S,)`` occupancy of egocentric sectors.
- :func:`subgoal_rows`: the instruction parsed into sub-goals (the modular agent's rule-based parser and
  landmark lexicon, :mod:`vlnkit.agents.modular.language`) as ``(G, 7)`` integer rows, one per sub-goal:
  action, direction, trigger, count, landmark category, gate category and the going-back flag, each
  shifted by one so that 0 means "not said" (an all-zero row is padding). A parse says what to look for
  in terms of the panorama's categories, which carries to unseen areas where the words do not.
- :func:`memory_features`: the entries of a :class:`~vlnkit.memory.Retrieval` as ``(k, F)`` rows: the
  entry's embedding, its position relative to the agent in the agent's frame (metres / 50: x right,
  y ahead), its age in steps / 55 (-1 when the memory part keeps no step), whether it came from the
  long-term memory, and 1 (a valid row; padding rows are all zero).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from vlnkit.agents.modular.language import ACTIONS, TRIGGERS, LandmarkLexicon, parse_instruction
from vlnkit.memory import Retrieval

UNK = 1
POSITION_SCALE_M = 50.0
AGE_SCALE_STEPS = 55.0
EXTRA_MEMORY_FEATURES = 5
"""Columns after the embedding in a memory row: x, y, age, from-LTM, valid."""
DIRECTIONS = ("left", "right", "ahead", "behind", "around", "straight")
"""Directions and sides a sub-goal can name (see :class:`~vlnkit.agents.modular.language.SubGoal`)."""
MAX_COUNT = 10
SUBGOAL_FIELDS = ("action", "direction", "at", "count", "category", "gate", "back")
"""Columns of a :func:`subgoal_rows` row."""


def subgoal_sizes(categories: int) -> tuple[int, ...]:
    """How many ids each :data:`SUBGOAL_FIELDS` column takes (0, "not said", included)."""
    return (len(ACTIONS) + 1, len(DIRECTIONS) + 1, len(TRIGGERS) + 1, MAX_COUNT + 2, categories + 1,
            categories + 1, 2)


def words(text: str) -> list[str]:
    """Lower-case word tokens of an instruction."""
    return re.findall(r"[a-z0-9&']+", text.lower())


class Vocabulary:
    """Word <-> id for instructions; ``<pad>`` is 0 and unknown words map to ``<unk>`` (1)."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = list(tokens)
        if self.tokens[:2] != ["<pad>", "<unk>"]:
            raise ValueError("a vocabulary starts with <pad> and <unk>")
        self.ids = {w: i for i, w in enumerate(self.tokens)}

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> Vocabulary:
        """The words of ``texts`` seen at least ``min_count`` times, most frequent first."""
        counts = Counter(w for text in texts for w in words(text))
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(["<pad>", "<unk>", *kept])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, max_words: int) -> np.ndarray:
        """Word ids of ``text``, truncated to ``max_words`` (at least one id: an empty text is ``<unk>``)."""
        ids = [self.ids.get(w, UNK) for w in words(text)][:max_words]
        return np.array(ids or [UNK], dtype=np.int64)


def link_bins(links: np.ndarray, heading: float, sectors: int = 8) -> np.ndarray:
    """``(sectors,)``: 1 where an outgoing link points into the egocentric sector (centred on its bearing)."""
    out = np.zeros(sectors, dtype=np.float32)
    width = 360.0 / sectors
    for h in np.asarray(links, dtype=np.float64).reshape(-1):
        if h >= 0.0:
            out[int(((h - heading) % 360.0 + width / 2.0) // width) % sectors] = 1.0
    return out


def subgoal_rows(instruction: str, lexicon: LandmarkLexicon, max_goals: int) -> np.ndarray:
    """``(max_goals, 7)`` int64 rows of the instruction's first ``max_goals`` parsed sub-goals (zeros after)."""
    rows = np.zeros((max_goals, len(SUBGOAL_FIELDS)), dtype=np.int64)
    for i, goal in enumerate(parse_instruction(instruction)[:max_goals]):
        category = lexicon.category(goal.landmark)
        gate = lexicon.category(goal.gate)
        rows[i] = (
            ACTIONS.index(goal.action) + 1,
            DIRECTIONS.index(goal.direction) + 1 if goal.direction in DIRECTIONS else 0,
            TRIGGERS.index(goal.at) + 1 if goal.at in TRIGGERS else 0,
            min(max(goal.count, 0), MAX_COUNT) + 1,
            category + 1 if category is not None else 0,
            gate + 1 if gate is not None else 0,
            int(goal.back),
        )
    return rows


def memory_features(found: Retrieval, position: np.ndarray, heading: float, step: int, k: int,
                    dim: int) -> np.ndarray:
    """``(k, dim + 5)`` rows for the first ``k`` entries of a retrieval (zeros where there are fewer)."""
    rows = np.zeros((k, dim + EXTRA_MEMORY_FEATURES), dtype=np.float32)
    n = min(k, len(found))
    if n == 0:
        return rows
    theta = np.radians(heading)
    right = np.array([np.cos(theta), -np.sin(theta)])
    ahead = np.array([np.sin(theta), np.cos(theta)])
    offsets = found.positions[:n, :2] - np.asarray(position, dtype=np.float64)[:2]
    rows[:n, :dim] = found.embeddings[:n]
    rows[:n, dim] = offsets @ right / POSITION_SCALE_M
    rows[:n, dim + 1] = offsets @ ahead / POSITION_SCALE_M
    if found.steps is not None:
        rows[:n, dim + 2] = (step - found.steps[:n]) / AGE_SCALE_STEPS
    else:
        rows[:n, dim + 2] = -1.0
    rows[:n, dim + 3] = float(found.source == "ltm")
    rows[:n, dim + 4] = 1.0
    return rows


def strided_history(t: int, recent: int, stride: int) -> list[int]:
    """Which earlier steps step ``t`` attends to: the ``recent`` latest, and every ``stride``-th before
    them counting back from the oldest recent one (FLAME's strided history)."""
    latest = list(range(max(0, t - recent), t))
    start = latest[0] if latest else t
    older = list(range(start - stride, -1, -stride))[::-1]
    return older + latest
