"""PP-MobileSeg (StrideFormer + AAM + VIM): the numbers and invariants of docs/perception-vision.md §3.

Parameter counts and GMACs are the doc's code-derived figures; the SEA, SE, AAM and VIM checks compare the
modules against naive re-derivations of the doc's formulas written here (per-head loops, explicit BN algebra).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlnkit.perception.backbones import pp_mobileseg
from vlnkit.perception.backbones.base import Backbone
from vlnkit.perception.backbones.layers import count_gmacs, count_parameters
from vlnkit.perception.backbones.pp_mobileseg import (
    AAM,
    SqueezeExcite,
    StridedSeaAttention,
    paddle_hardsigmoid,
    vim_predict,
)
from vlnkit.perception.backbones.registry import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bn_stats_count(model: nn.Module) -> int:
    return sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))


def _randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN affine parameters and running statistics (so that no branch is switched off)."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                c = mod.num_features
                mod.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                mod.bias.copy_(torch.randn(c, generator=gen) * 0.1)
                mod.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                mod.running_var.copy_(torch.rand(c, generator=gen) + 0.5)


# --- naive references ---------------------------------------------------------------------------------------


def _conv_bn(seq: nn.Sequential, x: Tensor) -> Tensor:
    """Conv + eval-mode BN written out: ``gamma (conv(x) - mean) / sqrt(var + eps) + beta``."""
    conv, bn = seq[0], seq[1]
    y = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, groups=conv.groups)
    shape = (1, -1, 1, 1)
    return (y - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps) * bn.weight.view(
        shape
    ) + bn.bias.view(shape)


def _naive_sea(sea: StridedSeaAttention, x: Tensor) -> Tensor:
    """The doc's strided SEA formulas, head by head, with linear PE interpolation done by hand."""
    n, dk, dv = sea.num_heads, sea.key_dim, sea.value_dim
    xs = _conv_bn(sea.stride_conv, x)
    b, _, h, w = xs.shape
    q, k, v = _conv_bn(sea.to_q, xs), _conv_bn(sea.to_k, xs), _conv_bn(sea.to_v, xs)
    d = _conv_bn(sea.detail[2], F.relu6(_conv_bn(sea.detail[0], torch.cat([q, k, v], 1))))

    def pe(table: Tensor, length: int) -> Tensor:
        src_len = table.shape[-1]
        out = torch.empty(table.shape[1], length)
        for i in range(length):
            s = min(max((i + 0.5) * src_len / length - 0.5, 0.0), src_len - 1)
            lo = int(math.floor(s))
            hi = min(lo + 1, src_len - 1)
            out[:, i] = table[0, :, lo] * (1 - (s - lo)) + table[0, :, hi] * (s - lo)
        return out

    def axial(qa: Tensor, ka: Tensor, va: Tensor) -> Tensor:
        heads = []
        for j in range(n):
            qj, kj, vj = qa[:, j * dk : (j + 1) * dk], ka[:, j * dk : (j + 1) * dk], va[:, j * dv : (j + 1) * dv]
            attn = torch.softmax(torch.einsum("bci,bcj->bij", qj, kj) / math.sqrt(dk), dim=-1)
            heads.append(torch.einsum("bij,bcj->bci", attn, vj))
        return torch.cat(heads, 1)

    row = axial(q.mean(3) + pe(sea.pe_row_q, h), k.mean(3) + pe(sea.pe_row_k, h), v.mean(3))
    col = axial(q.mean(2) + pe(sea.pe_col_q, w), k.mean(2) + pe(sea.pe_col_k, w), v.mean(2))
    o_r = _conv_bn(sea.proj_r[1], F.relu6(row[..., None]))
    o_c = _conv_bn(sea.proj_c[1], F.relu6(col[:, :, None, :]))
    o = o_r + o_c + v
    gate = torch.clamp(_conv_bn(sea.proj[1], F.relu6(o)) + 3, 0, 6) / 6
    return F.interpolate(gate * d, size=x.shape[-2:], mode="bilinear", align_corners=False)


# --- parameter counts and GMACs -----------------------------------------------------------------------------


def test_tiny_parameter_counts_match_doc() -> None:
    model = create_model("pp_mobileseg_tiny")
    assert count_parameters(model) == 1_492_298
    assert count_parameters(model) + _bn_stats_count(model) == 1_515_898
    bb = model.backbone
    stages = {
        "smb1": count_parameters(bb.stem) + count_parameters(bb.smb1),
        "smb2": count_parameters(bb.smb2),
        "smb3": count_parameters(bb.smb3),
        "smb4": count_parameters(bb.smb4),
        "trans1": count_parameters(bb.trans1),
        "trans2": count_parameters(bb.trans2),
        "aam": count_parameters(model.aam),
        "head": count_parameters(model.head),
    }
    assert stages == {
        "smb1": 8_692,
        "smb2": 26_672,
        "smb3": 71_376,
        "smb4": 330_944,
        "trans1": 201_472,
        "trans2": 696_064,
        "aam": 117_760,
        "head": 39_318,
    }
    assert count_parameters(create_model("pp_mobileseg_tiny", num_classes=19)) == 1_458_631


def test_base_parameter_count_matches_doc() -> None:
    model = create_model("pp_mobileseg_base")
    assert count_parameters(model) == 5_943_878
    assert count_parameters(model) + _bn_stats_count(model) == 5_996_422


@pytest.mark.parametrize(("size", "expected"), [(224, 0.137), (512, 0.707)])
def test_tiny_gmacs_within_5_percent(size: int, expected: float) -> None:
    model = create_model("pp_mobileseg_tiny").eval()
    gmacs = count_gmacs(model, torch.randn(1, 3, size, size))
    assert abs(gmacs - expected) <= 0.05 * expected, gmacs


def test_base_gmacs_within_5_percent() -> None:
    model = create_model("pp_mobileseg_base").eval()
    gmacs = count_gmacs(model, torch.randn(1, 3, 224, 224))
    assert abs(gmacs - 0.41) <= 0.05 * 0.41, gmacs


# --- shapes ---------------------------------------------------------------------------------------------------


def test_tiny_shapes_at_512() -> None:
    model = create_model("pp_mobileseg_tiny").eval()
    assert isinstance(model, Backbone)
    assert model.default_input_size == (512, 512)
    assert [(f.stride, f.channels) for f in model.feature_info] == [(8, 32), (16, 64), (32, 128)]
    x = torch.randn(1, 3, 512, 512)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert [tuple(f.shape[1:]) for f in feats] == [(32, 64, 64), (64, 32, 32), (128, 16, 16)]
        for f, info in zip(feats, model.feature_info):
            assert f.shape[1] == info.channels and f.shape[-1] * info.stride == 512
        assert tuple(model.aam(feats).shape) == (1, 256, 32, 32)
        lowres = model.forward_head(feats)
        assert tuple(lowres.shape) == (1, 150, 32, 32)
        full = model(x)
    assert tuple(full.shape) == (1, 150, 512, 512)
    expected = F.interpolate(lowres, scale_factor=16, mode="bilinear", align_corners=False)
    torch.testing.assert_close(full, expected, rtol=0, atol=1e-5)


def test_base_aam_shape_at_512() -> None:
    model = create_model("pp_mobileseg_base").eval()
    assert [(f.stride, f.channels) for f in model.feature_info] == [(8, 64), (16, 128), (32, 192)]
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 512, 512))
        assert [tuple(f.shape[1:]) for f in feats] == [(64, 64, 64), (128, 32, 32), (192, 16, 16)]
        assert tuple(model.aam(feats).shape) == (1, 256, 64, 64)
        assert tuple(model.forward_head(feats).shape) == (1, 150, 64, 64)


def test_tiny_odd_input_size_gives_input_sized_logits() -> None:
    model = create_model("pp_mobileseg_tiny", num_classes=7).eval()
    x = torch.randn(1, 3, 75, 101)
    with torch.no_grad():
        assert tuple(model(x).shape) == (1, 7, 75, 101)
        assert tuple(model.predict(x).shape) == (1, 75, 101)


def test_no_head_returns_feature_maps() -> None:
    model = create_model("pp_mobileseg_tiny", num_classes=0).eval()
    assert count_parameters(model) == 1_492_298 - 117_760 - 39_318
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(32, 8, 12), (64, 4, 6), (128, 2, 3)]


# --- SEA, SE, AAM ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h0", "w0"), [(7, 9), (13, 5), (1, 3), (17, 17)])
def test_sea_keeps_odd_input_shape(h0: int, w0: int) -> None:
    sea = StridedSeaAttention(dim=16, key_dim=8, num_heads=2).eval()
    x = torch.randn(2, 16, h0, w0)
    with torch.no_grad():
        out = sea(x)
    assert out.shape == x.shape
    xs = sea.stride_conv(x)
    assert xs.shape[-2:] == (math.ceil(h0 / 2), math.ceil(w0 / 2))


def test_sea_at_init_is_half_detail_exactly() -> None:
    gen = torch.Generator().manual_seed(1)
    sea = StridedSeaAttention(dim=24, key_dim=8, num_heads=3).eval()
    _randomise_bn(sea, gen)
    with torch.no_grad():
        for branch in (sea.proj, sea.proj_r, sea.proj_c):
            branch[1][1].reset_parameters()
            branch[1][1].weight.zero_()
        x = torch.randn(2, 24, 11, 14, generator=gen)
        out = sea(x)
        detail = sea.detail_features(sea.stride_conv(x))[3]
        half_d = F.interpolate(0.5 * detail, size=(11, 14), mode="bilinear", align_corners=False)
        assert torch.equal(out, half_d)
        naive_d = _conv_bn(
            sea.detail[2],
            F.relu6(
                _conv_bn(
                    sea.detail[0],
                    torch.cat([_conv_bn(m, _conv_bn(sea.stride_conv, x)) for m in (sea.to_q, sea.to_k, sea.to_v)], 1),
                )
            ),
        )
        naive = 0.5 * F.interpolate(naive_d, size=(11, 14), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out, naive, rtol=1e-5, atol=1e-6)
        sea.proj[1][1].weight.fill_(1.0)
        assert not torch.allclose(sea(x), out, atol=1e-3)


def test_sea_fresh_module_gamma_zero() -> None:
    sea = StridedSeaAttention(dim=8, key_dim=4, num_heads=2)
    for branch in (sea.proj, sea.proj_r, sea.proj_c):
        assert torch.count_nonzero(branch[1][1].weight) == 0
    assert torch.count_nonzero(sea.to_q[1].weight - 1) == 0
    assert tuple(sea.pe_row_q.shape) == (1, 8, 16)
    assert sea.detail[0][0].in_channels == 2 * 8 + 2 * 2 * 4


@pytest.mark.parametrize(("h0", "w0", "attn_ratio"), [(9, 12, 2.0), (21, 7, 2.0), (10, 10, 1.5)])
def test_sea_matches_naive_reference(h0: int, w0: int, attn_ratio: float) -> None:
    gen = torch.Generator().manual_seed(h0 * 100 + w0)
    sea = StridedSeaAttention(dim=16, key_dim=8, num_heads=2, attn_ratio=attn_ratio).eval()
    _randomise_bn(sea, gen)
    x = torch.randn(2, 16, h0, w0, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(sea(x), _naive_sea(sea, x), rtol=1e-4, atol=1e-5)
    assert sea.detail[0][0].in_channels == 2 * 16 + int(attn_ratio * 8) * 2


def test_se_uses_paddle_hardsigmoid() -> None:
    x = torch.tensor([-4.0, -2.5, 0.0, 1.0, 2.5, 4.0])
    assert torch.allclose(paddle_hardsigmoid(x), torch.tensor([0.0, 0.0, 0.5, 0.7, 1.0, 1.0]))
    assert not torch.allclose(paddle_hardsigmoid(x), F.hardsigmoid(x))
    gen = torch.Generator().manual_seed(2)
    se = SqueezeExcite(16)
    assert se.reduce.out_channels == 4
    x = torch.randn(2, 16, 5, 6, generator=gen)
    pooled = x.mean(dim=(2, 3))
    hidden = torch.relu(pooled @ se.reduce.weight[:, :, 0, 0].T + se.reduce.bias)
    gate = torch.clamp((hidden @ se.expand.weight[:, :, 0, 0].T + se.expand.bias) / 5 + 0.5, 0, 1)
    with torch.no_grad():
        torch.testing.assert_close(se(x), x * gate[:, :, None, None], rtol=1e-5, atol=1e-6)


def test_aam_matches_formula() -> None:
    gen = torch.Generator().manual_seed(3)
    aam = AAM([8, 16, 24], out_channels=12).eval()
    _randomise_bn(aam, gen)
    f8, f16, f32 = (torch.randn(2, c, s, s, generator=gen) for c, s in ((8, 16), (16, 8), (24, 4)))

    def up(t: Tensor, size: int) -> Tensor:
        return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)

    l1 = F.interpolate(f8, scale_factor=0.5, mode="bilinear", align_corners=False)
    e = [_conv_bn(aam.embed[i], f) for i, f in enumerate((l1, f16, f32))]
    a = [torch.sigmoid(_conv_bn(aam.gate[i], f)) for i, f in enumerate((l1, f16, f32))]
    expected = a[0] * a[1] * up(a[2], 8) * (e[0] + e[1]) + up(e[2], 8)
    with torch.no_grad():
        torch.testing.assert_close(aam([f8, f16, f32]), expected, rtol=1e-5, atol=1e-5)


# --- VIM ------------------------------------------------------------------------------------------------------


def _full_argmax(logits: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(logits, size=size, mode=mode, **kwargs).argmax(1)


def test_vim_labels_are_subset_of_lowres_labels() -> None:
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 150, 8, 8, generator=gen)
    labels = vim_predict(logits, (40, 56))
    assert labels.dtype == torch.int64 and tuple(labels.shape) == (3, 40, 56)
    for b in range(3):
        assert set(labels[b].unique().tolist()) <= set(logits[b].argmax(0).unique().tolist())


def test_vim_equals_full_argmax_when_every_class_present() -> None:
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 6, 5, 7, generator=gen)
    for c in range(6):
        logits[:, c, c % 5, c] += 50.0
    assert all(len(logits[b].argmax(0).unique()) == 6 for b in range(2))
    assert torch.equal(vim_predict(logits, (23, 31)), _full_argmax(logits, (23, 31)))


def test_vim_equals_full_argmax_with_nearest_upsampling() -> None:
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 150, 6, 6, generator=gen)
    assert torch.equal(vim_predict(logits, (30, 18), mode="nearest"), _full_argmax(logits, (30, 18), "nearest"))


def test_vim_counter_example_differs_from_full_argmax() -> None:
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.9]]).view(1, 3, 1, 2)
    upsampled = F.interpolate(logits, size=(1, 3), mode="bilinear", align_corners=False)
    torch.testing.assert_close(upsampled[0, :, 0, 1], torch.tensor([0.5, 0.5, 0.9]))
    full = _full_argmax(logits, (1, 3))
    vim = vim_predict(logits, (1, 3))
    assert full[0, 0, 1].item() == 2
    assert vim[0, 0, 1].item() in (0, 1)
    assert 2 not in vim.unique().tolist()


def test_vim_agrees_with_full_argmax_on_smooth_logits() -> None:
    gen = torch.Generator().manual_seed(7)
    seeds = torch.randn(2, 150, 4, 4, generator=gen)
    logits = F.interpolate(seeds, size=(32, 32), mode="bicubic", align_corners=False)
    agreement = (vim_predict(logits, (256, 256)) == _full_argmax(logits, (256, 256))).float().mean().item()
    assert agreement >= 0.99, agreement


@pytest.mark.parametrize(("num_classes", "uses_vim"), [(30, True), (29, False)])
def test_predict_uses_vim_only_from_30_classes(
    num_classes: int, uses_vim: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, ...]] = []
    real_vim = pp_mobileseg.vim_predict

    def spy(lowres: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
        calls.append(tuple(lowres.shape))
        return real_vim(lowres, size, mode)

    monkeypatch.setattr(pp_mobileseg, "vim_predict", spy)
    torch.manual_seed(8)
    model = create_model("pp_mobileseg_tiny", num_classes=num_classes).eval()
    x = torch.randn(1, 3, 64, 64)
    labels = model.predict(x)
    assert labels.dtype == torch.int64 and tuple(labels.shape) == (1, 64, 64)
    assert calls == ([(1, num_classes, 4, 4)] if uses_vim else [])
    if not uses_vim:
        with torch.no_grad():
            assert torch.equal(labels, model(x).argmax(1))


# --- gradients and errors -------------------------------------------------------------------------------------


def test_tiny_gradients_finite_and_reach_every_parameter() -> None:
    torch.manual_seed(9)
    model = create_model("pp_mobileseg_tiny", num_classes=5).train()
    x = torch.randn(2, 3, 96, 96)
    target = torch.randint(0, 5, (2, 96, 96))
    F.cross_entropy(model(x), target).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    gated = [n for n, _ in model.named_parameters() if ".proj_r." in n or ".proj_c." in n or ".pe_" in n]
    assert gated and all(torch.count_nonzero(dict(model.named_parameters())[n].grad) == 0 for n in gated)
    proj_gammas = [p for n, p in model.named_parameters() if n.endswith("attn.proj.1.1.weight")]
    assert len(proj_gammas) == 4 and all(torch.count_nonzero(p.grad) > 0 for p in proj_gammas)

    model.zero_grad()
    _randomise_bn(model, torch.Generator().manual_seed(10))
    F.cross_entropy(model(x), target).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert torch.count_nonzero(p.grad) > 0, name


def test_invalid_configs_raise() -> None:
    with pytest.raises(ValueError, match="inj_type 'AAMx4'"):
        create_model("pp_mobileseg_tiny", inj_type="AAMx4")
    with pytest.raises(ValueError, match="num_classes must be >= 0, got -1"):
        create_model("pp_mobileseg_tiny", num_classes=-1)
    with pytest.raises(ValueError, match="key_dim must be a positive integer, got 0"):
        StridedSeaAttention(dim=8, key_dim=0, num_heads=2)
    model = create_model("pp_mobileseg_tiny", num_classes=3)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\), got \(3, 32, 32\)"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="'bicubic'"):
        vim_predict(torch.randn(1, 3, 2, 2), (4, 4), mode="bicubic")
