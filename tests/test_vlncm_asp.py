"""The Attention Spot Predictor: the rule-based splitter, the LLM backend with its fallback, the metric."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from vlnkit.agents.llm.client import ClientStats, LLMInvalidOutput, LLMUnavailable
from vlnkit.agents.vlncm.asp import (
    SPOT_SCHEMA,
    LLMSpotPredictor,
    RuleSpotPredictor,
    first_mentions,
    normalise_spot,
    parse_spots,
    spot_scores,
)

HOUSE = ("Turn left and leave the living room, passing the black coffee table on your right. Turn left into the "
         "hallway and head past the potted plant. Turn left into the bedroom. Stop next to the white wardrobe.")
CITY = ("Go straight with Rossi Jewelers on your left, then go past the grey shoe store and take a right at the "
        "next intersection. Pass The Daily Page, then stop at the second pet shop on your left.")


def test_rules_split_a_house_instruction_into_the_places_to_move_to() -> None:
    assert RuleSpotPredictor().predict(HOUSE) == [
        "black coffee table", "hallway", "potted plant", "bedroom", "white wardrobe"]


def test_rules_keep_sign_names_and_drop_directions_structure_and_ordinals() -> None:
    assert RuleSpotPredictor().predict(CITY) == ["Rossi Jewelers", "grey shoe store", "The Daily Page", "pet shop"]


def test_rules_skip_every_place_the_text_leaves() -> None:
    spots = RuleSpotPredictor().predict("Exit the kitchen. Walk out of the office and enter the dining room.")
    assert spots == ["dining room"]


def test_normalise_spot_drops_case_punctuation_articles_and_ordinals() -> None:
    assert normalise_spot("The second Pet Shop.") == "pet shop"
    assert normalise_spot("the next traffic light") == "traffic light"
    assert normalise_spot("Rosa's Pizza") == "rosa's pizza"


def test_spot_scores_match_normalised_phrases_as_multisets() -> None:
    predicted = [["the red couch", "kitchen", "the lamp"], ["hallway"]]
    truth = [["red couch", "the kitchen"], ["hallway", "bedroom"]]
    scores = spot_scores(predicted, truth)
    assert scores["precision"] == pytest.approx(3 / 4)
    assert scores["recall"] == pytest.approx(3 / 4)
    assert scores["f1"] == pytest.approx(3 / 4)
    repeated = spot_scores([["deli", "bench", "deli"]], [["deli", "bench"]])
    assert repeated["precision"] == pytest.approx(2 / 3)
    assert spot_scores([["deli", "bench", "deli"]], [["deli", "bench"]], first_mention=True)["precision"] == 1.0
    assert first_mentions(["The deli", "bench", "deli"]) == ["The deli", "bench"]


def test_parse_spots_accepts_phrases_of_the_instruction_only() -> None:
    assert parse_spots('{"spots": ["the hallway", "white wardrobe"]}', HOUSE) == ["the hallway", "white wardrobe"]
    with pytest.raises(ValueError, match="not in the instruction"):
        parse_spots('{"spots": ["the garage"]}', HOUSE)
    with pytest.raises(ValueError, match="not JSON"):
        parse_spots("hallway, bedroom", HOUSE)
    with pytest.raises(ValueError):
        parse_spots('{"spots": []}', HOUSE)


class ScriptedClient:
    """An LLM client that answers from a list (or raises), validating like the real one."""

    def __init__(self, answers: Sequence[str | Exception]) -> None:
        self.answers = list(answers)
        self.stats = ClientStats()
        self.requests: list[tuple[list[Mapping[str, str]], Mapping[str, Any] | None]] = []

    def complete(self, messages: Sequence[Mapping[str, str]], schema: Mapping[str, Any] | None = None,
                 validate: Callable[[str], Any] | None = None) -> str:
        self.requests.append((list(messages), schema))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if validate is not None:
            try:
                validate(answer)
            except ValueError as err:
                raise LLMInvalidOutput(str(err)) from err
        return answer


def test_llm_spots_come_from_a_schema_constrained_request() -> None:
    client = ScriptedClient([json.dumps({"spots": ["the hallway", "the white wardrobe"]})])
    predictor = LLMSpotPredictor(client, fallback=RuleSpotPredictor())
    assert predictor.predict(HOUSE) == ["the hallway", "the white wardrobe"]
    messages, schema = client.requests[0]
    assert schema == SPOT_SCHEMA
    assert HOUSE in messages[-1]["content"]
    assert predictor.fallbacks == 0


@pytest.mark.parametrize("failure", [LLMUnavailable("refused"), '{"spots": ["the moon"]}'])
def test_llm_failures_fall_back_to_the_rules(failure: str | Exception) -> None:
    predictor = LLMSpotPredictor(ScriptedClient([failure]), fallback=RuleSpotPredictor())
    assert predictor.predict(HOUSE) == RuleSpotPredictor().predict(HOUSE)
    assert predictor.fallbacks == 1


def test_fallbacks_are_logged_once_and_counted_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    from vlnkit.agents.vlncm.spots import SpotFollower

    predictor = LLMSpotPredictor(ScriptedClient([LLMUnavailable("down")] * 3 + ['{"spots": ["the hallway"]}']),
                                 fallback=RuleSpotPredictor())
    follower = SpotFollower(predictor, scorer=None)
    counts = []
    with caplog.at_level(logging.WARNING, logger=predictor_logger_name()):
        for _ in range(4):
            follower.start_spots(HOUSE)
            counts.append(follower.episode_stats()["spot_fallbacks"])
    assert counts == [1, 1, 1, 0] and predictor.fallbacks == 3
    assert [r.getMessage().count("falls back to rules") for r in caplog.records] == [1]


def predictor_logger_name() -> str:
    from vlnkit.agents.vlncm import asp

    return asp.log.name


def test_llm_without_fallback_raises() -> None:
    with pytest.raises(LLMUnavailable):
        LLMSpotPredictor(ScriptedClient([LLMUnavailable("down")])).predict(HOUSE)


def test_house_ground_truth_replays_the_generator_and_the_rules_match_it() -> None:
    from vlnkit.agents.vlncm.landmarks import release_spots

    records = release_spots(seed=0, count=1, split="test")
    assert len(records) == 6
    scores = spot_scores([RuleSpotPredictor().predict(text) for text, _ in records], [spots for _, spots in records])
    assert scores["precision"] == 1.0 and scores["recall"] == 1.0


def test_the_local_llm_answers_with_spots_from_the_instruction() -> None:
    pytest.importorskip("xllamacpp")
    from vlnkit.agents.llm.client import OpenAIClient
    from vlnkit.agents.llm.server import default_model_path, local_llm_server

    try:
        model = default_model_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    with local_llm_server(model, threads=1) as server:
        client = OpenAIClient(server.base_url, server.alias, max_tokens=128, cache_size=0)
        predictor = LLMSpotPredictor(client, fallback=None)
        spots = predictor.predict(HOUSE)
    assert spots and all(normalise_spot(s) in normalise_spot(HOUSE) for s in spots)
