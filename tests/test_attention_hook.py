"""The attention hook (vlnkit.perception.attention): bitwise-unchanged outputs without probes, the eager
path against SDPA, captures and edits on the policy, the LTM's reversible Transformer and a tiny Llama."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlnkit.agents.policy.features import EXTRA_MEMORY_FEATURES
from vlnkit.agents.policy.model import FlamePolicy, PolicyConfig
from vlnkit.memory.ltm import LTMConfig, LTMModel, TorchInference
from vlnkit.perception.attention import (
    AttentionSite,
    Capture,
    HookedEncoderLayer,
    HookedMultiheadAttention,
    Probe,
    attach,
    attend,
    probes_of,
    sites,
)


class _Noop(Probe):
    """Attached but edits nothing: forces the eager path."""


class _Shift(Probe):
    """Adds a per-row constant to the logits (softmax is invariant to it)."""

    def on_logits(self, call, logits):
        return logits + torch.randn(*logits.shape[:-1], 1)


class _ZeroHeads(Probe):
    def on_heads(self, call, heads):
        return torch.zeros_like(heads)


def _policy_inputs(model: FlamePolicy, b: int = 2):
    c = model.config
    torch.manual_seed(1)
    words = torch.tensor([[2, 3, 4, 0], [5, 6, 0, 0]])[:b]
    rows = torch.zeros(b, c.subgoals, 7, dtype=torch.long)
    rows[:, 0] = torch.tensor([4, 1, 1, 2, 0, 0, 0])
    panorama, links = torch.rand(b, c.sectors, c.categories), (torch.rand(b, c.sectors) > 0.5).float()
    memory = torch.zeros(b, c.memory_tokens, c.memory_dim + EXTRA_MEMORY_FEATURES)
    memory[0, 0, : c.memory_dim] = torch.rand(c.memory_dim)
    memory[0, 0, -1] = 1.0
    history = torch.rand(b, 3, c.d_model)
    ages = torch.tensor([1, 2, 6])
    return words, rows, panorama, links, history, ages, memory


def _decide(model: FlamePolicy, inputs) -> torch.Tensor:
    words, rows, panorama, links, history, ages, memory = inputs
    b = words.shape[0]
    instruction = model.encode_instruction(words)
    goals = model.subgoal_tokens(model.encode_subgoals(rows), panorama, links)
    visual = model.visual_tokens(panorama, links)
    hidden = torch.zeros(b, model.config.d_model)
    query = model.memory_query(hidden, visual)
    pad = torch.zeros(b, history.shape[1], dtype=torch.bool)
    return model.step(instruction, goals, visual, history, ages, pad, memory, query, hidden)[0]


@pytest.fixture()
def policy() -> FlamePolicy:
    torch.manual_seed(0)
    return FlamePolicy(PolicyConfig(vocab_size=20, categories=5, memory_dim=48, d_model=16, heads=2, layers=2)).eval()


def _torch_classes(model: nn.Module) -> list[type]:
    return [type(m) for m in model.modules() if isinstance(m, (nn.MultiheadAttention, nn.TransformerEncoderLayer))]


def test_without_probes_the_policy_is_torch_own_modules_and_bitwise_unchanged(policy: FlamePolicy) -> None:
    inputs = _policy_inputs(policy)
    classes = _torch_classes(policy)
    assert classes.count(nn.MultiheadAttention) == 6 and classes.count(nn.TransformerEncoderLayer) == 1
    before = _decide(policy, inputs)
    with torch.inference_mode():                      # torch's fused fast paths
        fast_before = _decide(policy, inputs)
    with attach(policy, "*", _Noop()):
        hooked = _torch_classes(policy)
        assert hooked.count(HookedMultiheadAttention) == 6 and hooked.count(HookedEncoderLayer) == 1
    assert _torch_classes(policy) == classes          # detaching swaps torch's classes back
    assert not any(probes_of(m) for m in policy.modules())
    assert torch.equal(_decide(policy, inputs), before)
    with torch.inference_mode():
        assert torch.equal(_decide(policy, inputs), fast_before)


def test_the_eager_path_equals_sdpa_on_random_masked_inputs() -> None:
    site = nn.Module()
    torch.manual_seed(2)
    for n_q, n_k, causal in [(5, 5, True), (3, 7, True), (4, 6, False)]:
        q, k, v = torch.randn(2, 3, n_q, 8), torch.randn(2, 3, n_k, 8), torch.randn(2, 3, n_k, 5)
        pad = torch.zeros(2, n_k, dtype=torch.bool)
        pad[1, 0] = True
        allowed = torch.rand(n_q, n_k) > 0.3
        allowed[:, -1] = True                         # every row keeps a key
        for mask in (None, allowed, torch.randn(n_q, n_k)):
            fast = attend(site, q, k, v, attn_mask=mask, key_padding_mask=pad, is_causal=causal and mask is None)
            site._vlnkit_probes = [_Noop()]
            eager = attend(site, q, k, v, attn_mask=mask, key_padding_mask=pad, is_causal=causal and mask is None)
            del site._vlnkit_probes
            torch.testing.assert_close(eager, fast, atol=1e-5, rtol=1e-5)


def test_capture_on_the_policy_sees_every_site_with_its_segments(policy: FlamePolicy) -> None:
    inputs = _policy_inputs(policy)
    reference = _decide(policy, inputs)
    capture = Capture()
    with torch.inference_mode(), attach(policy, "*", capture) as names:
        probed = _decide(policy, inputs)
    assert names == sorted(sites(policy))
    assert {"slot_attn", "instruction.layers.0.self_attn", "blocks.0.self_attn", "blocks.1.cross_attn"} <= set(names)
    torch.testing.assert_close(probed, reference, atol=1e-5, rtol=1e-5)
    assert set(capture.calls) == set(names)           # the instruction encoder too, despite inference_mode
    record = capture.calls["blocks.1.cross_attn"][0]
    c = policy.config
    segments = record.call.key_segments
    assert [f"view{i}" for i in range(c.sectors)] == [n for n in segments if n.startswith("view")]
    latents = record.probs.shape[-1]
    assert record.probs.shape == (2, c.heads, c.queries, latents) and segments["memory"].stop == latents
    torch.testing.assert_close(record.probs.sum(-1), torch.ones(2, c.heads, c.queries))
    # Padded keys (episode 1 has no memory, and only 1 of 12 sub-goals) get exactly zero probability.
    assert (record.probs[1, :, :, segments["memory"]] == 0).all()
    assert (record.probs[:, :, :, segments["subgoals"]][..., 1:] == 0).all()
    assert torch.isinf(record.logits[1, :, :, segments["memory"]]).all()
    assert record.heads.shape == (2, c.heads, c.queries, c.d_model // c.heads)


def test_edits_act_only_where_attached(policy: FlamePolicy) -> None:
    inputs = _policy_inputs(policy)
    reference = _decide(policy, inputs)
    with attach(policy, "blocks.*", _Shift()):
        torch.testing.assert_close(_decide(policy, inputs), reference, atol=1e-5, rtol=1e-5)
    with attach(policy, "blocks.1.cross_attn", _ZeroHeads()):
        zeroed = _decide(policy, inputs)
    assert not torch.allclose(zeroed, reference, atol=1e-3)
    # With both cross-attentions' heads zeroed, the latents can no longer reach the decision.
    other = list(inputs)
    other[2] = torch.rand_like(inputs[2])             # another panorama
    with attach(policy, "blocks.*.cross_attn", _ZeroHeads()):
        torch.testing.assert_close(_decide(policy, inputs), _decide(policy, other))
    assert torch.equal(_decide(policy, inputs), reference)


def test_attach_nests_and_names_the_sites_when_nothing_matches(policy: FlamePolicy) -> None:
    first, second = Capture(), Capture()
    with attach(policy, "blocks.0.*", first):
        with attach(policy, "blocks.0.cross_attn", second):
            assert probes_of(policy.blocks[0].cross_attn) == [first, second]
        assert probes_of(policy.blocks[0].cross_attn) == [first]
    assert probes_of(policy.blocks[0].cross_attn) == []
    with pytest.raises(ValueError, match=r"no attention site .*'nope'.*blocks\.0\.cross_attn"):
        with attach(policy, "nope", first):
            pass


def test_need_weights_returns_the_probed_maps() -> None:
    torch.manual_seed(3)
    attn = HookedMultiheadAttention(8, 2)
    x = torch.randn(2, 5, 8)
    reference_out, reference_weights = nn.MultiheadAttention.forward(attn, x, x, x)
    with attach(attn, "", _Noop()):
        out, weights = attn(x, x, x, average_attn_weights=False)
    torch.testing.assert_close(out, reference_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights.mean(1), reference_weights, atol=1e-6, rtol=1e-5)
    assert probes_of(attn) == []


def test_the_ltm_reversible_transformer_is_a_site_and_its_numpy_path_steps_aside() -> None:
    torch.manual_seed(4)
    model = LTMModel(32, 16, LTMConfig(depth=2, heads=2))
    x = torch.randn(3, 64)
    reference = model.r(x)
    capture = Capture()
    with attach(model, "r.layers.*", capture) as names:
        assert isinstance(model.inference(), TorchInference)
        torch.testing.assert_close(model.r(x), reference, atol=1e-5, rtol=1e-5)
    assert names == ["r.layers.0", "r.layers.1"]
    probs = capture.calls["r.layers.0"][0].probs
    assert probs.shape == (3, 2, 4, 4)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 2, 4))
    assert not isinstance(model.inference(), TorchInference)
    assert torch.equal(model.r(x), reference)


def test_probes_on_a_tiny_llama_act_on_query_heads_after_repeat_kv() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(5)
    model = transformers.LlamaForCausalLM._from_config(config, attn_implementation="sdpa").eval()
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        reference = model(ids).logits
        capture = Capture()
        with attach(model, "model.layers.*.self_attn", capture) as names:
            probed = model(ids).logits
        assert names == ["model.layers.0.self_attn", "model.layers.1.self_attn"]
        torch.testing.assert_close(probed, reference, atol=1e-5, rtol=1e-5)
        probs = capture.calls["model.layers.1.self_attn"][0].probs
        assert probs.shape == (2, 4, 7, 7)              # 4 query heads, not the 2 key/value heads
        assert (probs.triu(1) == 0).all()               # causal
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, 7))
        with attach(model, "model.layers.0.self_attn", _ZeroHeads()):
            zeroed = model(ids).logits
        assert not torch.allclose(zeroed, reference, atol=1e-3)
        assert model.config._attn_implementation == "sdpa"
        assert torch.equal(model(ids).logits, reference)


SMALL_BACKBONES_WITH_SITES = {"cswin_nano": 7, "dependencyvit_nano": 4, "pp_mobileseg_tiny": 4, "sparsifiner_tiny": 2}


@pytest.mark.parametrize("name", sorted(SMALL_BACKBONES_WITH_SITES))
def test_backbone_attention_sites_capture_maps_and_edits_reach_the_features(name: str, one_torch_thread: None) -> None:
    from vlnkit.perception.backbones import create_model

    torch.manual_seed(6)
    model = create_model(name).eval()
    assert len(sites(model)) == SMALL_BACKBONES_WITH_SITES[name]
    x = torch.randn(1, 3, *model.default_input_size)
    with torch.no_grad():
        for p in model.parameters():   # as if trained: the zero- and 1e-6-initialised branches open
            p.add_(0.1 * torch.randn_like(p))
        reference = model(x)
        capture = Capture()
        with attach(model, "*", capture) as names:
            captured = model(x)
        assert torch.equal(captured, reference)        # reading changes nothing
        assert set(capture.calls) == set(names)
        for records in capture.calls.values():
            for record in records:
                torch.testing.assert_close(record.probs.sum(-1), torch.ones(record.probs.shape[:-1]))
                assert record.heads is not None and record.heads.shape[:3] == record.probs.shape[:3]
        with attach(model, "*", _ZeroHeads()):
            edited = model(x)
    assert (edited - reference).abs().max() > 1e-6   # the edit is in the data path (zero if it were not)


def test_torch_encoder_and_decoder_attention_are_sites_while_probed() -> None:
    torch.manual_seed(7)
    model = nn.ModuleDict({
        "encoder": nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, 0.0, batch_first=True), 2,
                                         enable_nested_tensor=False),
        "decoder": nn.TransformerDecoder(nn.TransformerDecoderLayer(16, 2, 32, 0.0, batch_first=True), 1),
    }).eval()
    assert sorted(sites(model)) == ["decoder.layers.0.multihead_attn", "decoder.layers.0.self_attn",
                                    "encoder.layers.0.self_attn", "encoder.layers.1.self_attn"]
    src, tgt = torch.randn(2, 5, 16), torch.randn(2, 3, 16)
    pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])

    def run() -> torch.Tensor:
        memory = model["encoder"](src, src_key_padding_mask=pad)
        return model["decoder"](tgt, memory, tgt_mask=nn.Transformer.generate_square_subsequent_mask(3),
                                memory_key_padding_mask=pad)

    with torch.inference_mode():
        reference = run()
        capture = Capture()
        with attach(model, "*attn", capture):
            torch.testing.assert_close(run(), reference, atol=1e-5, rtol=1e-5)
        assert torch.equal(run(), reference)
    assert len(capture.calls) == 4                    # the encoder's fused fast path did not bypass the probes
    assert (capture.calls["decoder.layers.0.self_attn"][0].probs.triu(1) == 0).all()       # the causal tgt_mask
    assert (capture.calls["decoder.layers.0.multihead_attn"][0].probs[1, :, :, 3:] == 0).all()   # padded memory
    assert all(type(m) in (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
               for m in model.modules() if isinstance(m, (nn.MultiheadAttention, nn.TransformerEncoderLayer)))
