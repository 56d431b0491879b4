"""What both VLN-CM agents share: an episode's attention spots followed through the View Selector and the
Progress Monitor, with the move budgets and the per-episode counts.

The continuous agent (:mod:`.agent`) and the street agent (:mod:`.street`) differ only in how a chosen
view becomes a move; :class:`SpotFollower` holds the rest.
"""

from __future__ import annotations

from typing import Any

from vlnkit.agents.vlncm.asp import SpotPredictor
from vlnkit.agents.vlncm.progress import ProgressMonitor
from vlnkit.agents.vlncm.view_selector import Selection, ViewSelector
from vlnkit.perception.scorers import ImageTextScorer, Views


class SpotFollower:
    """The spots of an episode, the view selector over them and the progress monitor.

    Args:
        asp: the attention spot predictor.
        scorer: the image-text scorer of the view selector.
        pm_window, pm_min_drop: the progress monitor's rule.
        max_moves: the agent STOPs after this many moves.
        max_spot_moves: the agent goes on to the next spot after this many moves toward one.
    """

    def __init__(self, asp: SpotPredictor, scorer: ImageTextScorer, pm_window: int = 2, pm_min_drop: float = 0.0,
                 max_moves: int = 40, max_spot_moves: int = 6) -> None:
        self.asp = asp
        self.scorer = scorer
        self.selector = ViewSelector(scorer)
        self.monitor = ProgressMonitor(0, pm_window, pm_min_drop)
        self.max_moves = int(max_moves)
        self.max_spot_moves = int(max_spot_moves)
        self.spots: list[str] = []
        self.spot_fallbacks = 0
        self.moves = self.spot_moves = self.passed = self.reached = 0

    def start_spots(self, instruction: str) -> None:
        """Predict the instruction's spots and start at the first, with every count at zero."""
        before = getattr(self.asp, "fallbacks", 0)
        self.spots = self.asp.predict(instruction)
        self.spot_fallbacks = int(getattr(self.asp, "fallbacks", 0) > before)
        self.monitor.reset(len(self.spots))
        self.moves = self.spot_moves = self.passed = self.reached = 0

    @property
    def current_spot(self) -> str | None:
        """The spot the agent is heading for (``None`` once all are behind it)."""
        return None if self.monitor.done else self.spots[self.monitor.current]

    def next_spot(self) -> None:
        """Go on to the next spot (the current one is reached, or its move budget is spent)."""
        self.monitor.advance()
        self.spot_moves = 0

    def reach(self) -> None:
        """The current spot is reached: count it and go on to the next."""
        self.reached += 1
        self.next_spot()

    def moved(self) -> None:
        """Count a move toward the current spot."""
        self.moves += 1
        self.spot_moves += 1

    def select(self, views: Views) -> Selection | None:
        """The view for the current spot, moving past spots the progress monitor says are passed
        (``None`` once every spot is behind)."""
        while self.current_spot is not None:
            selection = self.selector.select(views, self.current_spot)
            if not self.monitor.update(selection.score):
                return selection
            self.passed += 1
            self.spot_moves = 0
        return None

    def at_best(self, selection: Selection) -> bool:
        """Whether the selection's score is the current spot's best so far (after :meth:`select`)."""
        return selection.score >= max(self.monitor.history)

    def episode_stats(self) -> dict[str, Any]:
        """This episode's spots, how many the progress monitor passed and how many were reached, moves, and
        ``spot_fallbacks``: 1 when the LLM gave no valid answer and the rule-based predictor's spots were used."""
        return {"spots": list(self.spots), "spots_passed": self.passed, "spots_reached": self.reached,
                "moves": self.moves, "spot_fallbacks": self.spot_fallbacks}
