"""The llm_attention experiment on a tiny random Llama with SmolLM2's tokenizer: answers, landmark mentions
checked against what the observation shows, per-token T-VHD, FAI enrichment, and resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from vlnkit.eval.experiments.llm_attention import _mentions, _prompt
from vlnkit.eval.experiments.runner import run_experiment


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama (4 query heads, 2 key/value heads) with SmolLM2's tokenizer."""
    transformers = pytest.importorskip("transformers")
    from vlnkit.agents.llm.server import default_model_path

    source = default_model_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=512)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_llm")
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_mentions_match_whole_words_and_plurals(tiny_llm: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llm)
    ids = tokenizer("I see two bars and a barbershop, then a tree.", add_special_tokens=False).input_ids
    found = _mentions(tokenizer, ids, ["bar", "tree", "bank"])
    assert sorted(found) == ["bar", "tree"] and found["bar"] < found["tree"]


def test_tiny_llm_attention_run(tmp_path: Path, tiny_llm: Path) -> None:
    args = [f"out={tmp_path / 'run'}", f"model_path={tiny_llm}", "episodes=2", "max_new_tokens=6", "progress=false"]
    run_dir = run_experiment("llm_attention", args)
    results = json.loads((run_dir / "results.json").read_text())["results"]
    assert results["summary"]["episodes"] == 2 and len(results["episodes"]) == 2
    for episode in results["episodes"].values():
        assert isinstance(episode["answer"], str)
        assert all(m["t_vhd"] >= 0.0 for m in episode["mentions"].values())
        if "sampled_layers" in episode:
            assert episode["sampled_layers"] == [1, 2]          # the middle third of 4 layers
            assert math.isnan(episode["fai_enrichment"]) or episode["fai_enrichment"] >= 0.0
    assert sorted(results["conditions"]) == ["off", "paint", "vhr"]
    assert all(c["answers"] == 2 for c in results["conditions"].values())
    rate = results["summary"]["hallucination_rate"]
    assert math.isnan(rate) or 0.0 <= rate <= 1.0
    stamp = (run_dir / "checkpoints" / "episodes.pt").stat().st_mtime_ns
    assert run_experiment("llm_attention", args) == run_dir
    assert (run_dir / "checkpoints" / "episodes.pt").stat().st_mtime_ns == stamp


def test_the_prompt_marks_exactly_the_observation_tokens(tiny_llm: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llm)
    ids, span = _prompt(tokenizer, "Turn left at the bank.", "ahead: cafe, tree; left: bank")
    assert span.shape == (ids.shape[1],) and span.any()
    assert tokenizer.decode(ids[0][span]).strip() == "ahead: cafe, tree; left: bank"
    first = int(span.nonzero()[0])
    assert "What you see:" in tokenizer.decode(ids[0][:first])
