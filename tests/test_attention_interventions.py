"""VAR, VHR, PAINT and head scaling (vlnkit.perception.attention.interventions) on the facts sheet's
hand-computed cases and their invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vlnkit.perception.attention import Capture, HookedMultiheadAttention, attach
from vlnkit.perception.attention.interventions import (
    PAINT,
    VAR,
    HeadScale,
    calibrate_sink_dimensions,
    carve_contrast,
    carve_regions,
    colour_complexity,
    crop_box,
    crop_scale,
    default_sink_tau,
    head_divergence,
    iqr_outliers,
    paint_logits,
    paint_tokens,
    rms_unit,
    sink_tokens,
    texture_complexity,
    time_weights,
    var_redistribute,
    vhr_heads,
)


def test_sink_detection_by_hand_and_the_sqrt_d_bound() -> None:
    spike, flat = torch.zeros(16), torch.ones(16)
    spike[0] = 10.0
    torch.testing.assert_close(rms_unit(spike)[0], torch.tensor(4.0), rtol=1e-5, atol=1e-5)   # 10 / sqrt(100/16)
    assert sink_tokens(torch.stack([spike, flat]), [0], tau=2.0).tolist() == [True, False]
    x = torch.randn(100, 16) * torch.rand(100, 1) * 10
    assert (rms_unit(x).abs() <= math.sqrt(16) + 1e-5).all()
    assert default_sink_tau(4096) == 20.0 and default_sink_tau(64) == pytest.approx(2.5)


def test_calibration_finds_the_massive_activation_dimension() -> None:
    torch.manual_seed(0)
    x = torch.randn(1000, 256)
    x[::200, 7] = 100.0     # 5 sink-like tokens with a massive activation in dimension 7
    assert calibrate_sink_dimensions(x, count=2) == [7]     # the runner-up (a random dim, ratio ~5) is below 10


def test_var_redistribution_by_hand() -> None:
    row = torch.tensor([[0.2, 0.4, 0.2, 0.1, 0.1]])     # [BOS, v0 (sink), v1, v2, v3]
    sink = torch.tensor([True, True, False, False, False])
    visual = torch.tensor([False, True, True, True, True])
    out = var_redistribute(row, sink, visual, p=0.6)
    torch.testing.assert_close(out, torch.tensor([[0.12, 0.24, 0.32, 0.16, 0.16]]))
    assert float(out.sum()) == pytest.approx(1.0)


def test_var_invariants_on_random_rows() -> None:
    torch.manual_seed(1)
    probs = (3 * torch.randn(3, 4, 6, 9)).softmax(-1)
    sink = torch.zeros(3, 1, 9, dtype=torch.bool)
    sink[:, :, [0, 3]] = True
    visual = torch.zeros(9, dtype=torch.bool)
    visual[2:8] = True
    out = var_redistribute(probs, sink, visual)
    torch.testing.assert_close(out.sum(-1), probs.sum(-1))
    s = (probs * visual).sum(-1)
    r = (probs * (visual & sink[:, :, None, :])).sum(-1) / ((probs + 1e-6) * visual).sum(-1)
    selected = (s >= 0.2) & (r <= 0.5)
    assert selected.any() and (~selected).any()
    assert torch.equal(out[~selected], probs[~selected])               # unselected rows bit for bit
    free = [2, 4, 5, 6, 7]
    ratio = out[..., free] / out[..., free].sum(-1, keepdim=True)
    torch.testing.assert_close(ratio, probs[..., free] / probs[..., free].sum(-1, keepdim=True))
    assert torch.equal(var_redistribute(probs, torch.zeros(9, dtype=torch.bool), visual), probs)   # no sinks


def test_var_probe_uses_the_key_inputs_and_view_segments() -> None:
    torch.manual_seed(2)
    attn = HookedMultiheadAttention(16, 2)
    query, keys = torch.randn(1, 2, 16), torch.randn(1, 5, 16)
    keys[0, 1] = 0.0
    keys[0, 1, 3] = 10.0          # a sink in dimension 3 among the views
    segments = {"instruction": slice(0, 1), "view0": slice(1, 2), "view1": slice(2, 3), "view2": slice(3, 5)}
    attn.segment_map = lambda: (segments, {})
    probe, capture = VAR(dims=[3], tau=2.0), Capture()
    with attach(attn, "", capture):
        attn(query, keys, keys, need_weights=False)
    with attach(attn, "", probe, capture):
        attn(query, keys, keys, need_weights=False)
    before, after = capture.calls[""][0].probs, capture.calls[""][1].probs
    assert probe.sinks_seen == 1
    expected = var_redistribute(before, torch.tensor([False, True, False, False, False]),
                                torch.tensor([False, True, True, True, True]))
    torch.testing.assert_close(after, expected)


def _toy_heads() -> tuple[HookedMultiheadAttention, torch.Tensor, torch.Tensor]:
    """A 4-head attention over 8-d tokens whose dims 0-3 are visual features and 4-7 text features: heads 0
    and 1 read values from the visual dims only, heads 2 and 3 from the text dims only; uniform attention."""
    attn = HookedMultiheadAttention(8, 4)
    with torch.no_grad():
        attn.in_proj_weight.zero_()
        attn.in_proj_bias.zero_()
        w_v = attn.in_proj_weight[16:]
        w_v[0, 0], w_v[1, 1], w_v[2, 2], w_v[3, 3] = 1.0, 1.0, 1.0, 1.0      # heads 0, 1 <- visual dims
        w_v[4, 4], w_v[5, 5], w_v[6, 6], w_v[7, 7] = 1.0, 1.0, 1.0, 1.0      # heads 2, 3 <- text dims
    tokens = torch.zeros(1, 6, 8)
    tokens[0, :3, 4:] = torch.randn(3, 4)       # text tokens
    tokens[0, 3:, :4] = torch.randn(3, 4) + 2   # visual tokens
    blank = tokens.clone()
    blank[0, 3:] = 0.0                          # the same prompt with a null panorama
    return attn, tokens, blank


def test_vhd_finds_the_vision_heads_of_a_toy_attention() -> None:
    torch.manual_seed(3)
    attn, tokens, blank = _toy_heads()
    capture = Capture()
    with attach(attn, "", capture):
        attn(tokens, tokens, tokens, need_weights=False)
        attn(blank, blank, blank, need_weights=False)
    with_vision, without = capture.calls[""][0].heads, capture.calls[""][1].heads
    vhd = head_divergence(with_vision, without)[0]
    assert (vhd[:2] > 0).all() and torch.equal(vhd[2:], torch.zeros(2))
    ta = without[0, :, -1].pow(2).sum(-1)
    assert vhr_heads(vhd, ta).tolist() == [True, True, False, False]


def test_vhr_outlier_rule_by_hand() -> None:
    vhd, ta = torch.tensor([1.0, 2.0, 3.0, 10.0]), torch.tensor([0.0, 0.0, 0.0, 10.0])
    assert vhr_heads(vhd, ta).tolist() == [False, True, True, False]     # head 3 surges without vision: out
    assert vhr_heads(vhd, torch.zeros(4)).tolist() == [False, False, True, True]


def test_scaling_a_head_changes_the_output_by_its_projected_contribution() -> None:
    torch.manual_seed(4)
    attn = HookedMultiheadAttention(8, 4)
    x = torch.randn(2, 5, 8)
    capture = Capture()
    with attach(attn, "", capture):
        base = attn(x, x, x, need_weights=False)[0]
    heads = capture.calls[""][0].heads                       # (B, H, N, 2)
    alpha, head = 2.0, 1
    with attach(attn, "", HeadScale({"": torch.tensor([1.0, alpha, 1.0, 1.0])})):
        scaled = attn(x, x, x, need_weights=False)[0]
    w_o = attn.out_proj.weight[:, 2 * head: 2 * head + 2]    # W_O^i: the columns of head i
    torch.testing.assert_close(scaled - base, (alpha - 1) * heads[:, head] @ w_o.T, atol=1e-5, rtol=1e-5)


def test_paint_logits_by_hand_and_last_row_only() -> None:
    z = torch.tensor([[0.0, 0.0, 0.0], [2.0, -1.0, 0.5]])
    local, summary = torch.tensor([True, True, False]), torch.zeros(3, dtype=torch.bool)
    out = paint_logits(z, local, summary, alpha=0.7)
    torch.testing.assert_close(out[1], torch.tensor([3.4, -0.3, 0.5]))
    assert torch.equal(out[0], z[0])                         # not the last row: bit for bit
    assert out[1].softmax(-1)[:2].sum() > z[1].softmax(-1)[:2].sum()
    masked = torch.tensor([[2.0, float("-inf"), 0.5]])
    assert torch.isinf(paint_logits(masked, local, summary)[0, 1])


def test_paint_token_selection_by_hand() -> None:
    assert iqr_outliers([1, 1, 1, 1, 10]).tolist() == [4]
    local, summary = paint_tokens(np.array([1, 1, 1, 1, 10]), np.array([1, 1, 1, 1, 10]))
    assert summary.tolist() == [4] and local.tolist() == [0]   # top ceil(0.25 * 5) = 2: {4, 0}, minus {4}


def test_paint_probe_boosts_the_chosen_keys_in_the_decision_row() -> None:
    torch.manual_seed(5)
    attn = HookedMultiheadAttention(8, 2)
    query, keys = torch.randn(1, 3, 8), torch.randn(1, 6, 8)
    probe, capture = PAINT(alpha=0.7, beta=0.3, row=0), Capture()
    local = torch.tensor([False, False, True, False, False, False])
    probe.masks[""] = (local, torch.zeros(6, dtype=torch.bool))
    with attach(attn, "", capture):
        attn(query, keys, keys, need_weights=False)
    with attach(attn, "", probe, capture):
        attn(query, keys, keys, need_weights=False)
    before, after = capture.calls[""][0].logits, capture.calls[""][1].logits
    torch.testing.assert_close(after[:, :, 0, 2], before[:, :, 0, 2] + 0.7 * before[:, :, 0, 2].abs())
    assert torch.equal(after[:, :, 1:], before[:, :, 1:])


def test_carve_contrast_ranks_the_task_specific_token_first() -> None:
    contrast = carve_contrast([0.5, 0.3, 0.1, 0.1], [0.5, 0.1, 0.2, 0.2])
    np.testing.assert_allclose(contrast, [1.0, 3.0, 0.5, 0.5], rtol=1e-6)
    assert int(np.argmax(contrast)) == 1
    assert time_weights(3).tolist() == [1.0, 2.0, 3.0]


def test_carve_mask_keeps_the_heaviest_regions_and_a_crop_no_smaller_than_the_image() -> None:
    s = np.zeros((8, 8))
    s[0:2, 0:2] = 5.0     # blob A, sum 20
    s[5:7, 5:8] = 4.0     # blob B, sum 24
    s[0, 6] = 3.0         # blob C, sum 3
    s[7, 0] = 0.5         # below the threshold
    mask = carve_regions(s, p=0.17, k=2)     # threshold ~1.2: blobs A, B and C; keep the 2 heaviest
    assert mask[0:2, 0:2].all() and mask[5:7, 5:8].all() and not mask[0, 6] and mask.sum() == 10
    box = crop_box(mask)
    assert box == (0, 0, 7, 8)
    assert crop_scale(box, (8, 8)) * (box[2] - box[0]) >= 8 or crop_scale(box, (8, 8)) * (box[3] - box[1]) >= 8
    views = np.array([0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.8])   # the two ends of a panorama touch
    assert carve_regions(views, p=0.25, k=1, wrap=True).tolist() == [True] + [False] * 6 + [True]


def test_scene_complexities_by_hand() -> None:
    one_hue = np.zeros((16, 16, 3))
    one_hue[..., 0] = 1.0                                  # all red
    assert colour_complexity(one_hue) == 0.0
    hues = (np.arange(180) + 0.5) / 180
    rainbow = np.stack(np.broadcast_arrays(*[np.asarray(c)[None] for c in _hsv_to_rgb(hues)]), -1)
    assert colour_complexity(rainbow) == pytest.approx(1.0, abs=1e-9)
    flat = np.full((32, 32), 0.5)
    assert texture_complexity(flat) == 0.0
    edge = flat.copy()
    edge[:, 16:] = 1.0
    assert 0.0 < texture_complexity(edge) < 0.1


def _hsv_to_rgb(hues: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from skimage.color import hsv2rgb

    rgb = hsv2rgb(np.stack([hues, np.ones_like(hues), np.ones_like(hues)], -1)[None])[0]
    return rgb[:, 0], rgb[:, 1], rgb[:, 2]


def test_attention_entropy_of_uniform_and_one_hot_maps() -> None:
    from vlnkit.perception.kernels.deconstructed import attention_entropy

    uniform = torch.full((1, 1, 3, 7), 1 / 7)
    torch.testing.assert_close(attention_entropy(uniform), torch.tensor([math.log(7)]))
    assert attention_entropy(torch.eye(3)[None, None]).item() == 0.0
