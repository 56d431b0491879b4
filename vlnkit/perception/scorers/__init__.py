"""Image-text scorers: the protocol (:class:`ImageTextScorer`, :class:`Views`), :func:`create_scorer`
and the three backends (``clip``, ``synth_clip``, ``semantic``); ``train_clip`` trains the model the
``synth_clip`` backend reads. Backends import their heavy dependencies only when built."""

from vlnkit.perception.scorers.base import SCORERS, ImageTextScorer, Views, create_scorer

__all__ = ["SCORERS", "ImageTextScorer", "Views", "create_scorer"]
