"""Progress Monitor (PM): which attention spot the agent is heading for.

The paper's rule: when the similarity between the current spot and the observation falls on
consecutive steps, the agent has passed the spot and turns to the next one. Here a fall is a drop of more
than ``min_drop`` from the previous step's similarity, and ``window`` consecutive falls pass the spot
(the paper does not give the number; 2 by default, so one noisy step does not). The agent can also mark
a spot reached (:meth:`ProgressMonitor.advance`), and the monitor is ``done`` once every spot is behind.
"""

from __future__ import annotations


class ProgressMonitor:
    """Tracks the current spot among ``num_spots`` with the consecutive-decline rule.

    Args:
        num_spots: how many spots the instruction has.
        window: consecutive falls that pass the current spot (at least 1).
        min_drop: a step's similarity must be below the previous one by more than this to count as a fall.
    """

    def __init__(self, num_spots: int, window: int = 2, min_drop: float = 0.0) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window = int(window)
        self.min_drop = float(min_drop)
        self.reset(num_spots)

    def reset(self, num_spots: int) -> None:
        """Start over at the first of ``num_spots`` spots."""
        self.num_spots = int(num_spots)
        self.current = 0
        self.history: list[float] = []
        self.falls = 0

    @property
    def done(self) -> bool:
        """Whether every spot has been passed or reached."""
        return self.current >= self.num_spots

    def update(self, similarity: float) -> bool:
        """Record this step's similarity to the current spot; returns whether the spot is now passed
        (the monitor then points at the next one, with an empty history)."""
        if self.done:
            return False
        if self.history and similarity < self.history[-1] - self.min_drop:
            self.falls += 1
        else:
            self.falls = 0
        self.history.append(float(similarity))
        if self.falls >= self.window:
            self.advance()
            return True
        return False

    def advance(self) -> None:
        """Move on to the next spot (the current one is passed or reached)."""
        self.current += 1
        self.history = []
        self.falls = 0
