"""OverLoCK: the numbers and invariants of docs/perception-vision.md §2.

Parameter counts and GMACs are the sheet's code-derived figures for OverLoCK-XT. The re-parameterisation is checked
in eval mode with every BatchNorm randomised (so a wrong fold, dilation or padding shows); ContMix is checked
against a per-pixel loop that builds each clamped window, its relative position bias and its softmax explicitly.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlnkit.perception.backbones import overlock
from vlnkit.perception.backbones.layers import count_gmacs, count_parameters
from vlnkit.perception.backbones.overlock import (
    ContMix,
    DilatedReparamConv,
    clamped_rpb_index,
    clamped_windows,
    neighbourhood_aggregate,
    subnet_parameters,
)
from vlnkit.perception.backbones.registry import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randomise(model: nn.Module, seed: int) -> None:
    """Non-trivial BN affine parameters and running statistics, GRN gains and relative position biases."""
    gen = torch.Generator().manual_seed(seed)

    def rand(shape: torch.Size, scale: float, offset: float = 0.0) -> Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float64) * scale + offset

    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.copy_(rand(mod.weight.shape, 0.3, 1.0))
                mod.bias.copy_(rand(mod.bias.shape, 0.2))
                mod.running_mean.copy_(rand(mod.running_mean.shape, 0.2))
                mod.running_var.copy_(rand(mod.running_var.shape, 0.3).abs() + 0.5)
            elif isinstance(mod, overlock.GRN):
                mod.gamma.copy_(rand(mod.gamma.shape, 0.5))
                mod.beta.copy_(rand(mod.beta.shape, 0.1))
            elif isinstance(mod, ContMix):
                mod.rpb_small.copy_(rand(mod.rpb_small.shape, 0.5))
                mod.rpb_large.copy_(rand(mod.rpb_large.shape, 0.5))


def _assert_close_to_scale(actual: Tensor, expected: Tensor, tol: float) -> None:
    """``|actual − expected| ≤ tol · (|expected| + max |expected|)`` elementwise (relative and scaled-absolute)."""
    scale = expected.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale)


# --- parameter counts and GMACs -----------------------------------------------------------------------------


def test_xt_deploy_parameter_counts_match_sheet() -> None:
    model = create_model("overlock_xt")
    assert model.deploy
    assert count_parameters(model) == 16_453_712
    assert subnet_parameters(model) == {"base_net": 2_539_796, "overview_net": 2_718_324, "focus_net": 9_738_464,
                                        "head": 1_457_128, "aux_head": 0}
    stage3 = model.focus_net.stages[0]
    assert count_parameters(stage3[1]) == 974_380  # a stage-3 ContMix block (it re-injects the prior)
    assert count_parameters(stage3[0]) == 974_380 - 4 * 84  # the first block has no LS_a / LS_b on the context
    mixer = stage3[1].mixer
    assert (mixer.weight_proj.in_features, mixer.weight_proj.out_features) == (49, 13**2 + 5**2)
    assert tuple(mixer.rpb_small.shape) == (8, 9, 9) and tuple(mixer.rpb_large.shape) == (8, 25, 25)
    assert tuple(model.focus_net.stages[1][0].mixer.rpb_large.shape) == (12, 13, 13)
    assert [(f.stride, f.channels) for f in model.feature_info] == [(4, 56), (8, 112), (16, 340), (32, 420)]
    assert count_parameters(create_model("overlock_xt", num_classes=0)) == 16_453_712 - 1_457_128


def test_xt_training_form_counts_and_in_place_reparameterisation() -> None:
    model = create_model("overlock_xt", deploy=False)
    assert not model.deploy
    assert count_parameters(model) == 17_307_272
    parts = subnet_parameters(model)
    assert parts["aux_head"] == 337_672 and parts["head"] == 1_457_128
    assert count_parameters(model.focus_net.stages[0][1]) == 1_016_108
    assert model.reparameterize() is model and model.deploy
    assert count_parameters(model) == 16_453_712
    assert not any(isinstance(m, nn.BatchNorm2d) for d in model.modules() if isinstance(d, DilatedReparamConv)
                   for m in d.modules())
    deploy_shapes = {k: v.shape for k, v in create_model("overlock_xt").state_dict().items()}
    assert {k: v.shape for k, v in model.state_dict().items()} == deploy_shapes  # deploy checkpoints load


@pytest.mark.parametrize(("size", "expected"), [((224, 224), 2.70), ((128, 128), 0.97), ((256, 512), 6.99)])
def test_xt_gmacs_within_5_percent(size: tuple[int, int], expected: float) -> None:
    model = create_model("overlock_xt").eval()
    gmacs = count_gmacs(model, torch.randn(1, 3, *size))
    assert abs(gmacs - expected) <= 0.05 * expected, gmacs


# --- re-parameterisation -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_size", [17, 15, 13, 7])
def test_dilated_reparam_merge_equals_branches(kernel_size: int) -> None:
    torch.manual_seed(kernel_size)
    conv = DilatedReparamConv(6, kernel_size, deploy=False).double()
    _randomise(conv, kernel_size)
    conv.eval()
    x = torch.randn(2, 6, 19, 23, dtype=torch.float64)
    with torch.no_grad():
        expected = conv(x)
        large_only = conv.large(x)
        conv.reparameterize()
        merged = conv(x)
    assert conv.deploy and conv.branches is None
    assert tuple(conv.merged.weight.shape) == (6, 1, kernel_size, kernel_size)
    _assert_close_to_scale(merged, expected, 1e-10)
    assert (expected - large_only).abs().max() > 0.1  # the dilated branches contribute


def test_nano_reparameterised_model_equals_training_form() -> None:
    torch.manual_seed(0)
    model = create_model("overlock_nano", deploy=False).double()
    _randomise(model, 1)
    model.eval()
    x = torch.randn(2, 3, 112, 112, dtype=torch.float64)
    with torch.no_grad():
        maps = model.forward_maps(x)
        logits = model.forward_head(maps.features)
        model.reparameterize()
        merged = model.forward_maps(x)
        merged_logits = model(x)
    for got, want in zip(merged.features + [merged.context, merged_logits], maps.features + [maps.context, logits]):
        _assert_close_to_scale(got, want, 1e-6)
    assert (logits - merged_logits).abs().max() < 1e-12  # float64: the merge is exact up to rounding


def test_xt_reparameterised_model_equals_training_form() -> None:
    torch.manual_seed(0)
    model = create_model("overlock_xt", deploy=False).double()
    _randomise(model, 2)
    model.eval()
    x = torch.randn(1, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        maps = model.forward_maps(x)
        model.reparameterize()
        merged = model.forward_maps(x)
    for got, want in zip(merged.features + [merged.context], maps.features + [maps.context]):
        _assert_close_to_scale(got, want, 1e-6)


# --- ContMix against a per-pixel reference --------------------------------------------------------------------


def _conv_bn(seq: nn.Sequential, x: Tensor) -> Tensor:
    """A bias-free 1x1 conv + eval BN written out."""
    conv, bn = seq[0], seq[1]
    y = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x)
    shape = (1, -1, 1, 1)
    return (y - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps) * bn.weight.view(
        shape) + bn.bias.view(shape)


def _naive_mixing(mixer: ContMix, f_hat: Tensor, values: Tensor) -> Tensor:
    """The dynamic kernels and their aggregation, one pixel and one group at a time, with NATTEN windows:
    the window of row i starts at clamp(i − win//2, 0, H − win); the bias of key (ki, kj) for query (i, j) is
    RPB_g[ki − i + win − 1, kj − j + win − 1]."""
    b_size, _, h, w = f_hat.shape
    c, groups = mixer.dim, mixer.num_groups
    cg = c // (2 * groups)
    q = _conv_bn(mixer.query, f_hat[:, :c]) * (c / groups) ** -0.5
    keys = _conv_bn(mixer.key, F.adaptive_avg_pool2d(f_hat[:, c:], 7)).flatten(2)
    out = torch.zeros(b_size, c, h, w, dtype=f_hat.dtype)
    k_small = mixer.smk_size
    for b in range(b_size):
        for g in range(groups):
            chans = slice(g * cg, (g + 1) * cg)
            for i in range(h):
                for j in range(w):
                    affinity = q[b, chans, i, j] @ keys[b, chans]
                    kernel = mixer.weight_proj.weight @ affinity + mixer.weight_proj.bias
                    windows = ((k_small, mixer.rpb_small, kernel[: k_small**2], 0),
                               (mixer.kernel_size, mixer.rpb_large, kernel[k_small**2 :], c // 2))
                    for win, table, logits, first in windows:
                        si, sj = min(max(i - win // 2, 0), h - win), min(max(j - win // 2, 0), w - win)
                        di, dj = si - i + win - 1, sj - j + win - 1  # key − query + win − 1 at offset 0
                        bias = table[g, di : di + win, dj : dj + win]
                        attn = torch.softmax(logits + bias.flatten(), dim=0)
                        ch = slice(first + g * cg, first + (g + 1) * cg)
                        patch = values[b, ch, si : si + win, sj : sj + win].flatten(1)
                        out[b, ch, i, j] = patch @ attn
    return out


def _naive_contmix(mixer: ContMix, f_hat: Tensor) -> Tensor:
    """ContMix as the sheet writes it, with :func:`_naive_mixing` for the dynamic part and the resize path."""
    values = mixer.fusion(f_hat)
    gate = mixer.gate(values)
    lepe = mixer.lepe(values)
    h, w = values.shape[-2:]
    if min(h, w) < mixer.kernel_size:
        size = (round(h * mixer.kernel_size / min(h, w)), round(w * mixer.kernel_size / min(h, w)))
        assert min(size) == mixer.kernel_size
        out = _naive_mixing(mixer, F.interpolate(f_hat, size=size, mode="bilinear"),
                            F.interpolate(values, size=size, mode="bilinear"))
        out = F.adaptive_avg_pool2d(out, (h, w))
    else:
        out = _naive_mixing(mixer, f_hat, values)
    y = _conv_bn(mixer.proj, out) + lepe
    y = mixer.se(y) * gate
    return mixer.out(y)


def _tiny_mixer(seed: int) -> ContMix:
    torch.manual_seed(seed)
    mixer = ContMix(dim=8, ctx_dim=4, kernel_size=7, smk_size=3, num_groups=2, deploy=False).double()
    _randomise(mixer, seed)
    with torch.no_grad():
        mixer.weight_proj.weight.mul_(20)  # peaked kernels, so that a wrong window or bias shows
    return mixer.eval()


def test_contmix_mixing_equals_per_pixel_clamped_window_loop() -> None:
    mixer = _tiny_mixer(3)
    f_hat = torch.randn(2, 12, 8, 11, dtype=torch.float64)
    values = torch.randn(2, 8, 8, 11, dtype=torch.float64)
    with torch.no_grad():
        got = mixer.context_mixing(f_hat, values)
    expected = _naive_mixing(mixer, f_hat, values)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    # Zero-padded (centred) windows would differ at the border: the clamping is what is being checked.
    small, _ = mixer.dynamic_kernels(f_hat)
    v_small = values[:, :4]
    padded = F.unfold(v_small, 3, padding=1).view(2, 2, 2, 9, 88)
    zero_pad = torch.einsum("bgcop,bgpo->bgcp", padded, small).reshape(2, 4, 8, 11)
    assert (zero_pad[..., 0, :] - got[:, :4, 0, :]).abs().max() > 1e-3
    torch.testing.assert_close(zero_pad[..., 1:-1, 1:-1], got[:, :4, 1:-1, 1:-1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("size", [(8, 11), (4, 6)])
def test_contmix_forward_equals_reference(size: tuple[int, int]) -> None:
    mixer = _tiny_mixer(4)
    f_hat = torch.randn(1, 12, *size, dtype=torch.float64)
    with torch.no_grad():
        got = mixer(f_hat)
        expected = _naive_contmix(mixer, f_hat)
    assert got.shape == (1, 12, *size)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_clamped_windows_and_rpb_index_follow_natten() -> None:
    h, w, k = 6, 9, 5
    v = torch.arange(h * w, dtype=torch.float64).view(1, 1, h, w)
    windows = clamped_windows(v, k).view(k, k, h, w)
    index = clamped_rpb_index(h, w, k).view(h, w, k, k)
    for i in range(h):
        for j in range(w):
            si, sj = min(max(i - k // 2, 0), h - k), min(max(j - k // 2, 0), w - k)
            assert torch.equal(windows[:, :, i, j], v[0, 0, si : si + k, sj : sj + k])
            rows = torch.arange(si, si + k) - i + k - 1
            cols = torch.arange(sj, sj + k) - j + k - 1
            assert torch.equal(index[i, j], rows[:, None] * (2 * k - 1) + cols[None, :])
    assert int(index.min()) >= 0 and int(index.max()) < (2 * k - 1) ** 2
    weights = torch.zeros(1, 1, h * w, k * k, dtype=torch.float64)
    weights[..., 0] = 1.0  # every pixel takes the top-left of its clamped window
    top_left = neighbourhood_aggregate(weights, v, k)
    assert top_left[0, 0, 0, 0] == 0 and top_left[0, 0, 5, 8] == v[0, 0, 1, 4]
    with pytest.raises(ValueError, match="window"):
        clamped_windows(v, 7)


# --- model behaviour -------------------------------------------------------------------------------------------


def test_xt_shapes_at_224() -> None:
    model = create_model("overlock_xt").eval()
    with torch.no_grad():
        maps = model.forward_maps(torch.randn(1, 3, 224, 224))
        logits = model.forward_head(maps.features)
    assert [tuple(f.shape[1:]) for f in maps.features] == [(56, 56, 56), (112, 28, 28), (340, 14, 14), (420, 7, 7)]
    assert tuple(maps.context.shape[1:]) == (336, 7, 7)
    assert tuple(logits.shape) == (1, 1000)


def test_training_form_trains_with_the_auxiliary_loss() -> None:
    torch.manual_seed(5)
    model = create_model("overlock_nano", deploy=False, drop_path_rate=0.1)
    x, labels = torch.randn(2, 3, 64, 80), torch.tensor([1, 7])
    logits, aux = model.forward_train(x)
    assert logits.shape == aux.shape == (2, 10)
    loss = overlock.overlock_loss(logits, aux, labels)
    expected = F.cross_entropy(logits, labels) + 0.4 * F.cross_entropy(aux, labels)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and bool(torch.isfinite(param.grad).all()), name
    deploy = create_model("overlock_nano")
    with pytest.raises(NotImplementedError, match="auxiliary"):
        deploy.forward_train(x)


def test_nano_contract_and_errors() -> None:
    model = create_model("overlock_nano", num_classes=0).eval()
    assert model.default_input_size == (112, 112)
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 112, 112))
    assert [tuple(f.shape[1:]) for f in maps] == [(16, 28, 28), (32, 14, 14), (64, 7, 7), (80, 4, 4)]
    with pytest.raises(NotImplementedError, match="num_classes=0"):
        model.forward_head(maps)
    with pytest.raises(ValueError, match="recipe"):
        DilatedReparamConv(4, 9)
    with pytest.raises(ValueError, match="divisible"):
        ContMix(dim=12, ctx_dim=4, kernel_size=7, smk_size=3, num_groups=4)
