"""The policy agent's attention interventions (vlnkit.agents.policy.attention): off is the plain decision,
VHR keeps its per-episode heads, masking every cross-attention head cuts the latents off, PAINT and VAR act
only when they select something."""

from __future__ import annotations

import pytest
import torch

from vlnkit.agents.policy.attention import PolicyAttention
from vlnkit.agents.policy.features import EXTRA_MEMORY_FEATURES
from vlnkit.agents.policy.model import FlamePolicy, PolicyConfig


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    model = FlamePolicy(PolicyConfig(vocab_size=20, categories=5, memory_dim=48, d_model=16, heads=4, layers=2)).eval()
    c = model.config
    instruction = model.encode_instruction(torch.tensor([[2, 3, 4, 0]]))
    rows = torch.zeros(1, c.subgoals, 7, dtype=torch.long)
    rows[:, 0] = torch.tensor([4, 1, 1, 2, 0, 0, 0])
    subgoals = model.encode_subgoals(rows)
    memory = torch.zeros(1, c.memory_tokens, c.memory_dim + EXTRA_MEMORY_FEATURES)
    history, ages = torch.rand(1, 2, c.d_model), torch.tensor([1, 2])
    query, hidden = torch.randn(1, c.memory_dim), torch.zeros(1, c.d_model)

    def decide(panorama, links, other=None):
        return model.step(instruction if other is None else other, model.subgoal_tokens(subgoals, panorama, links), model.visual_tokens(panorama, links),
                          history, ages, torch.zeros(1, 2, dtype=torch.bool), memory, query, hidden)

    views = [(torch.rand(1, c.sectors, c.categories), (torch.rand(1, c.sectors) > 0.5).float()) for _ in range(2)]
    decide.encode = lambda text: model.encode_instruction(torch.tensor([[5, 6, 0, 0]]))
    return model, decide, views


def test_no_intervention_is_the_plain_decision(setup) -> None:
    model, decide, views = setup
    attention = PolicyAttention(model, {"var": None, "vhr": None})
    assert not attention.active
    assert torch.equal(attention.decide(decide, *views[0])[0], decide(*views[0])[0])


def test_unknown_interventions_and_bad_heads_are_refused(setup) -> None:
    model = setup[0]
    with pytest.raises(ValueError, match="unknown intervention 'attn_sink'"):
        PolicyAttention(model, {"attn_sink": {}})
    with pytest.raises(ValueError, match=r"mask: blocks.0.cross_attn: \[7\]"):
        PolicyAttention(model, {"mask": {0: [7]}})


def test_vhr_chooses_half_the_heads_once_per_episode(setup) -> None:
    model, decide, views = setup
    attention = PolicyAttention(model, {"vhr": {"alpha": 2.0}})
    first = attention.decide(decide, *views[0])[0]
    chosen = dict(attention.chosen)
    assert sorted(chosen) == ["blocks.0.cross_attn", "blocks.1.cross_attn"]
    assert all(len(heads) == 2 for heads in chosen.values())
    attention.decide(decide, *views[1])
    assert attention.chosen == chosen                  # fixed for the episode
    assert not torch.allclose(first, decide(*views[0])[0])
    attention.reset()
    assert attention.chosen == {} and attention.vhr is None


def test_masking_every_cross_attention_head_cuts_the_panorama_off(setup) -> None:
    model, decide, views = setup
    attention = PolicyAttention(model, {"mask": {0: [0, 1, 2, 3], "blocks.1.cross_attn": [0, 1, 2, 3]}})
    a, b = attention.decide(decide, *views[0])[0], attention.decide(decide, *views[1])[0]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(decide(*views[0])[0], decide(*views[1])[0])


def test_paint_moves_the_decision_and_is_the_identity_at_zero_margins(setup) -> None:
    model, decide, views = setup
    plain = decide(*views[0])[0]
    boosted = PolicyAttention(model, {"paint": {"alpha": 0.7, "beta": 0.3}}).decide(decide, *views[0])[0]
    assert not torch.allclose(boosted, plain)
    same = PolicyAttention(model, {"paint": {"alpha": 0.0, "beta": 0.0}}).decide(decide, *views[0])[0]
    torch.testing.assert_close(same, plain, atol=1e-5, rtol=1e-5)


def test_var_without_sink_dimensions_changes_nothing(setup) -> None:
    model, decide, views = setup
    plain = decide(*views[0])[0]
    torch.testing.assert_close(PolicyAttention(model, {"var": {"dims": []}}).decide(decide, *views[0])[0], plain,
                               atol=1e-5, rtol=1e-5)


def test_carve_blanks_the_views_outside_its_regions_and_decides_on_the_rest(setup) -> None:
    model, decide, views = setup
    attention = PolicyAttention(model, {"carve": {"p": 0.25, "k": 1}}, decide.encode)
    logits = attention.decide(decide, *views[0])[0]
    kept = attention.kept_views
    assert 1 <= int(kept.sum()) < model.config.sectors
    panorama, links = views[0]
    torch.testing.assert_close(logits, decide(panorama * kept[None, :, None], links)[0])
    with pytest.raises(ValueError, match="carve needs the agent's instruction encoder"):
        PolicyAttention(model, {"carve": {}})
