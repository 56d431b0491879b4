"""The semantic-label scorer: phrases per object, coverage per view, the best view for a phrase."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from vlnkit.perception.scorers import Views, create_scorer
from vlnkit.perception.scorers.semantic import SemanticLabelScorer, object_phrases, view_coverage
from vlnkit.perception.scorers.synthetic import Place, Query, selection_accuracy, selection_queries

LABELS = {1: ("living room",), 2: ("red couch",), 3: ("black couch",), 4: ("kitchen",), 5: ("cream wall",)}


class WordEncoder:
    """A stand-in text model: normalised bags of words over a fixed vocabulary (articles ignored)."""

    words = ("living", "room", "red", "black", "couch", "kitchen", "cream", "wall", "hallway")

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        rows = np.array([[float(w in t.lower().split()) for w in self.words] for t in texts])
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-9)


def views_with(objects: dict[int, dict[int, float]], n: int = 4, side: int = 20) -> Views:
    """``n`` views of ``side`` x ``side`` pixels; ``objects[v][id]`` is the fraction of view ``v`` id covers."""
    semantic = np.zeros((n, side * side), dtype=np.uint32)
    for v, cover in objects.items():
        start = 0
        for obj, fraction in cover.items():
            count = int(round(fraction * side * side))
            semantic[v, start:start + count] = obj
            start += count
    return Views(np.zeros((n, side, side, 3), np.uint8), semantic.reshape(n, side, side), LABELS)


def test_object_phrases_name_objects_by_colour_and_floors_by_room() -> None:
    assert object_phrases({"category": "couch", "colour": "red", "room": "living room"}) == ("red couch",)
    assert object_phrases({"category": "floor", "colour": "wood", "room": "kitchen"}) == ("kitchen",)
    assert object_phrases({"category": "plant", "colour": "brown"}) == ("potted plant",)
    assert object_phrases({"category": "chair"}) == ("chair",)
    assert object_phrases({"category": ""}) == ()


def test_view_coverage_counts_pixel_fractions_without_the_background() -> None:
    coverage = view_coverage(views_with({0: {2: 0.25, 5: 0.5}}, n=2).semantic)
    assert coverage[0] == {2: 0.25, 5: 0.5}
    assert coverage[1] == {}


def test_the_view_showing_the_named_object_wins_over_look_alikes() -> None:
    scorer = SemanticLabelScorer(encoder=WordEncoder())
    views = views_with({0: {1: 0.5, 3: 0.2}, 1: {2: 0.05}, 2: {4: 0.3}, 3: {5: 1.0}})
    scores = scorer.similarity(views, ["the red couch", "the kitchen"])
    assert scores.shape == (2, 4)
    assert int(np.argmax(scores[0])) == 1
    assert int(np.argmax(scores[1])) == 2
    assert scores[0, 3] == 0.0


def test_more_coverage_of_the_same_object_scores_higher_and_tiny_bits_not_at_all() -> None:
    scorer = SemanticLabelScorer(encoder=WordEncoder(), min_coverage=0.01)
    views = views_with({0: {2: 0.005}, 1: {2: 0.02}, 2: {2: 0.2}})
    scores = scorer.similarity(views, ["red couch"])[0]
    assert scores[0] == 0.0
    assert 0.0 < scores[1] < scores[2]


def test_phrase_embeddings_are_computed_once() -> None:
    encoder = WordEncoder()
    scorer = SemanticLabelScorer(encoder=encoder)
    views = views_with({0: {2: 0.3}})
    scorer.similarity(views, ["red couch"])
    calls = encoder.calls
    scorer.similarity(views, ["red couch"])
    assert encoder.calls == calls


def test_the_scorer_refuses_views_without_labels() -> None:
    with pytest.raises(ValueError, match="semantic ids"):
        SemanticLabelScorer(encoder=WordEncoder()).similarity(Views(np.zeros((2, 4, 4, 3), np.uint8)), ["sofa"])


def test_selection_queries_and_accuracy_on_a_hand_made_place() -> None:
    views = views_with({0: {2: 0.05}, 1: {2: 0.2, 4: 0.02}, 2: {4: 0.3}, 3: {5: 1.0}})
    place = Place(views.rgb, views.semantic, LABELS)
    queries = selection_queries([place])
    assert queries == [Query(0, "the kitchen", 2), Query(0, "the red couch", 1)]
    perfect = selection_accuracy(SemanticLabelScorer(encoder=WordEncoder()), [place], queries)
    assert perfect["exact"] == 1.0 and perfect["queries"] == 2.0


def test_the_packaged_minilm_model_matches_synonyms_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    scorer = create_scorer("semantic")
    views = views_with({0: {3: 0.2}, 1: {2: 0.2}, 2: {4: 0.2}, 3: {1: 0.2}})
    scores = scorer.similarity(views, ["a red sofa", "the cooking area", "the lounge"])
    assert [int(np.argmax(row)) for row in scores] == [1, 2, 3]
