"""FloAt's flow-warped attention blend (vlnkit.perception.temporal): the sheet's CPU tests (lam = 1 and a
static scene are identities, a circular shift of a shift-equivariant attention warps onto the current one
exactly, rows stay stochastic, rows without warped mass are untouched) and a reprojection worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlnkit.perception.backbones import create_model
from vlnkit.perception.heads import CategoryReadout, ReadoutPredictor
from vlnkit.perception.temporal import (
    FloAtReadout,
    float_blend,
    reprojection_flow,
    shift_flow,
    warp_attention,
    warp_self_attention,
)


def _rows(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.softmax(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_lam_one_and_a_static_scene_are_identities() -> None:
    attn = _rows((2, 4, 5, 24), seed=0)
    assert float_blend(attn, _rows((2, 4, 5, 24), seed=1), 1.0) is attn
    index, valid = shift_flow(3, 8, 0)
    blended = float_blend(attn, warp_attention(attn, index, valid), 0.3)
    assert torch.allclose(blended, attn, atol=1e-6)


def test_a_turn_warps_a_content_attention_onto_the_current_one() -> None:
    """Cross-attention from fixed queries over keys that depend only on what a token shows: after the
    panorama turns by 3 columns the warped previous map is the current map, and the blend leaves it."""
    h, w, shift, dim = 2, 8, 3, 6
    g = torch.Generator().manual_seed(2)
    keys_prev = torch.randn(h, w, dim, generator=g)
    keys = torch.roll(keys_prev, -shift, dims=1)        # column c now shows what column c + 3 showed
    queries = torch.randn(5, dim, generator=g)
    attn_prev = torch.softmax(queries @ keys_prev.reshape(-1, dim).T, dim=-1)
    attn = torch.softmax(queries @ keys.reshape(-1, dim).T, dim=-1)
    index, valid = shift_flow(h, w, shift)
    assert torch.allclose(warp_attention(attn_prev, index, valid), attn, atol=1e-6)
    assert torch.allclose(float_blend(attn, warp_attention(attn_prev, index, valid), 0.5), attn, atol=1e-6)
    # self-attention over the same tokens warps along both axes
    self_prev = torch.softmax(keys_prev.reshape(-1, dim) @ keys_prev.reshape(-1, dim).T, dim=-1)
    self_now = torch.softmax(keys.reshape(-1, dim) @ keys.reshape(-1, dim).T, dim=-1)
    assert torch.allclose(warp_self_attention(self_prev, index, valid), self_now, atol=1e-6)


def test_blend_rows_are_stochastic_and_unwarped_rows_are_untouched() -> None:
    attn, prev = _rows((3, 6, 16), seed=3), _rows((3, 6, 16), seed=4)
    valid = np.ones(16, dtype=bool)
    valid[5:] = False
    warped = warp_attention(prev, np.arange(16), valid)
    assert torch.equal(warped[..., 5:], torch.zeros_like(warped[..., 5:]))
    blended = float_blend(attn, warped, 0.4)
    assert torch.allclose(blended.sum(-1), torch.ones(3, 6), atol=1e-6)
    expected = 0.4 * attn + 0.6 * warped
    assert torch.allclose(blended, expected / expected.sum(-1, keepdim=True), atol=1e-6)
    none_valid = float_blend(attn, torch.zeros_like(attn), 0.4)
    assert torch.equal(none_valid, attn)
    rows = torch.tensor([True, False, True, False, True, False])
    partial = float_blend(attn, warped, 0.4, row_valid=rows)
    assert torch.equal(partial[:, ~rows], attn[:, ~rows]) and torch.allclose(partial[:, rows], blended[:, rows])
    with pytest.raises(ValueError, match="lam"):
        float_blend(attn, warped, 1.5)


def test_reprojection_worked_by_hand() -> None:
    """A 4 x 8 grid (45-degree cells). The camera moved 10 m north. Cell (row 2, col 2) looks at bearing 112.5,
    latitude -22.5: at depth 4 the point is (3.414, -1.414, -1.531) m from the camera, (3.414, 8.586, -1.531)
    from the previous one: bearing 21.7 (col 0), latitude -9.4 (row 2), 9.366 m away."""
    depth = np.full((4, 8), 50.0)
    depth[2, 2] = 4.0
    depth[0, 3] = 0.0                      # sky
    prev = np.full((4, 8), 50.0)
    prev[2, 0] = 9.4                       # the same surface seen from before
    prev[0, 3] = 0.0
    index, valid = reprojection_flow(depth, prev, np.array([0.0, 10.0, 0.0]), 4, 8)
    assert index[2 * 8 + 2] == 2 * 8 + 0 and valid[2 * 8 + 2]
    assert index[3] == 3 and valid[3], "the sky is at infinity: same direction"
    prev[2, 0] = 5.0                       # something nearer hides the point from the previous camera
    prev[0, 3] = 30.0
    index, valid = reprojection_flow(depth, prev, np.array([0.0, 10.0, 0.0]), 4, 8)
    assert not valid[2 * 8 + 2] and not valid[3]
    same, ok = reprojection_flow(depth, depth, np.zeros(3), 4, 8)
    assert np.array_equal(same, np.arange(32)) and ok.all()


def _tiny_predictor() -> ReadoutPredictor:
    torch.manual_seed(0)
    backbone = create_model("cswin_nano")
    channels = backbone.feature_info[-1].channels
    readout = CategoryReadout(channels, 3, sectors=4, d_model=32, heads=4, ffn_dim=64, dropout=0.0, sectored=True)
    return ReadoutPredictor(backbone, readout).eval()


def test_floatreadout_is_the_model_when_static_or_off_and_moves_it_otherwise() -> None:
    model = _tiny_predictor()
    g = torch.Generator().manual_seed(5)
    first, second = torch.randn(1, 3, 64, 256, generator=g), torch.randn(1, 3, 64, 256, generator=g)
    depth = np.full((64, 256), 20.0)
    with torch.no_grad():
        plain_first, plain_second = model(first)[0].numpy(), model(second)[0].numpy()
    static = FloAtReadout(model, lam=0.5)
    static.predict(first, depth, np.zeros(3))
    assert np.allclose(static.predict(first, depth, np.zeros(3)), plain_first, atol=1e-5)
    off = FloAtReadout(model, lam=1.0)
    off.predict(first, depth, np.zeros(3))
    assert np.allclose(off.predict(second, depth, np.array([0.0, 3.0, 0.0])), plain_second, atol=1e-6)
    on = FloAtReadout(model, lam=0.5)
    on.predict(first, depth, np.zeros(3))
    moved = on.predict(second, depth, np.array([0.0, 3.0, 0.0]))
    assert not np.allclose(moved, plain_second, atol=1e-4)
    attention = model.readout.attention
    assert torch.allclose(attention.sum(-1), torch.ones_like(attention.sum(-1)), atol=1e-5)
    masks = model.readout.sector_masks(*model.readout.attention_size)[1]
    assert float(attention[..., ~masks].abs().max()) == 0.0, "each sector query stays on its own columns"
    on.reset()
    assert np.allclose(on.predict(second, depth, np.zeros(3)), plain_second, atol=1e-6)
