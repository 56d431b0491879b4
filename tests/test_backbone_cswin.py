"""CSWin Transformer (doc §1): exact parameter counts and GMACs of the published configurations, the stripe
attention and per-stripe LePE against naive references written here (masked global attention, explicit padding
arithmetic, per-stripe convolutions), the global last stage, padding for odd sizes and the circular panorama
mode."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlnkit.perception.backbones import cswin
from vlnkit.perception.backbones.layers import count_gmacs, count_parameters
from vlnkit.perception.backbones.registry import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

Tensor = torch.Tensor


def rand_maps(*shape: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(*shape, generator=gen, dtype=torch.float64) for _ in range(3))
    return q, k, v


def branch(mode: str, dim: int, heads: int, split: int = 7, seed: int = 0) -> cswin.LePEAttention:
    """A float64 branch with random LePE weights and bias."""
    torch.manual_seed(seed)
    attn = cswin.LePEAttention(dim, heads, mode, split).double()
    torch.nn.init.normal_(attn.lepe.weight)
    torch.nn.init.normal_(attn.lepe.bias)
    return attn


def split_heads(t: Tensor, heads: int) -> Tensor:
    """(B, H, W, C) -> (B, heads, H*W, C/heads), head h holding channels [h d, (h+1) d)."""
    b, h, w, c = t.shape
    return t.reshape(b, h * w, heads, c // heads).transpose(1, 2)


def merge_heads(t: Tensor, h: int, w: int) -> Tensor:
    b, heads, n, d = t.shape
    return t.transpose(1, 2).reshape(b, h, w, heads * d)


def naive_global(q: Tensor, k: Tensor, v: Tensor, weight: Tensor, bias: Tensor, heads: int) -> Tensor:
    """softmax(q kᵀ d^-½) v over every token of the map + a zero-padded depthwise 3x3 conv of v on the map."""
    b, h, w, c = q.shape
    qh, kh, vh = (split_heads(t, heads) for t in (q, k, v))
    attn = (qh @ kh.transpose(-2, -1) * (c // heads) ** -0.5).softmax(dim=-1)
    lepe = F.conv2d(v.permute(0, 3, 1, 2), weight, bias, padding=1, groups=c).permute(0, 2, 3, 1)
    return merge_heads(attn @ vh, h, w) + lepe


def naive_vertical(q: Tensor, k: Tensor, v: Tensor, weight: Tensor, bias: Tensor, heads: int, sw: int,
                   lepe_on_full_map: bool = False) -> Tensor:
    """Vertical-stripe branch written as global attention masked to same-stripe pairs, with the padding done by
    arithmetic: the map's width is padded symmetrically to a multiple of ``sw`` (narrowed to the width), every
    padded token of a query's stripe adds ``exp(0) = 1`` to its softmax denominator and nothing to the
    numerator; LePE is a zero-padded 3x3 conv of each stripe's real columns on their own (or, with
    ``lepe_on_full_map``, of the whole map)."""
    b, h, w, c = q.shape
    sw = min(sw, w)
    left = (-w % sw) // 2
    stripe_of_col = torch.tensor([(col + left) // sw for col in range(w)])
    real_cols = torch.bincount(stripe_of_col)
    stripe = stripe_of_col.repeat(h)  # row-major tokens
    same = stripe[:, None] == stripe[None, :]
    padded = (h * (sw - real_cols[stripe])).to(q.dtype)  # padded tokens in each query's stripe
    qh, kh, vh = (split_heads(t, heads) for t in (q, k, v))
    logits = qh @ kh.transpose(-2, -1) * (c // heads) ** -0.5
    num = torch.where(same, logits.exp(), torch.zeros_like(logits))
    attn = num / (num.sum(dim=-1, keepdim=True) + padded[:, None])
    out = merge_heads(attn @ vh, h, w)
    vmap = v.permute(0, 3, 1, 2)
    if lepe_on_full_map:
        lepe = F.conv2d(vmap, weight, bias, padding=1, groups=c)
    else:
        lepe = torch.cat([F.conv2d(vmap[..., stripe_of_col == s], weight, bias, padding=1, groups=c)
                          for s in range(len(real_cols))], dim=-1)
    return out + lepe.permute(0, 2, 3, 1)


def naive_horizontal(q: Tensor, k: Tensor, v: Tensor, weight: Tensor, bias: Tensor, heads: int,
                     sw: int) -> Tensor:
    """Horizontal stripes = vertical stripes of the transposed map with the transposed kernel."""
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    return naive_vertical(qt, kt, vt, weight.transpose(-2, -1), bias, heads, sw).transpose(1, 2)


def naive_block(block: cswin.CSWinBlock, x: Tensor, heads: int) -> Tensor:
    """A CSWin block with the weights of ``block``: the first half of channels and heads attend in vertical
    stripes, the second half in horizontal stripes, or all of them globally for a one-branch block."""
    c = x.shape[-1]
    y = F.layer_norm(x, (c,), block.norm1.weight, block.norm1.bias)
    q, k, v = (y @ block.qkv.weight.T + block.qkv.bias).split(c, dim=-1)
    lepes = [(a.lepe.weight, a.lepe.bias) for a in block.attns]
    if block.branch_num == 1:
        out = naive_global(q, k, v, *lepes[0], heads)
    else:
        sw, half = block.attns[0].split_size, c // 2
        first, second = slice(None, half), slice(half, None)
        out = torch.cat([
            naive_vertical(q[..., first], k[..., first], v[..., first], *lepes[0], heads // 2, sw),
            naive_horizontal(q[..., second], k[..., second], v[..., second], *lepes[1], heads // 2, sw),
        ], dim=-1)
    x = x + out @ block.proj.weight.T + block.proj.bias
    y = F.layer_norm(x, (c,), block.norm2.weight, block.norm2.bias)
    fc1, fc2 = block.mlp[0], block.mlp[3]
    return x + F.gelu(y @ fc1.weight.T + fc1.bias) @ fc2.weight.T + fc2.bias


def test_cswin_t_parameter_counts_match_sheet() -> None:
    model = create_model("cswin_t")
    assert count_parameters(model) == 22_320_552
    assert count_parameters(model.stem) == 9_600
    assert [count_parameters(s) for s in model.stages] == [50_624, 399_104, 16_638_720, 3_157_504]
    assert [count_parameters(m) for m in model.merges] == [74_112, 295_680, 1_181_184]
    assert count_parameters(model.norm) == 1_024 and count_parameters(model.head) == 513_000
    assert count_parameters(model) - count_parameters(model.head) == 21_807_552
    assert model.branch_nums() == [2, 2, 2, 1]
    assert [len(s) for s in model.stages] == [1, 2, 21, 1]
    assert [b.attns[0].head_dim for b in (s[0] for s in model.stages)] == [32, 32, 32, 32]
    assert [(i.stride, i.channels) for i in model.feature_info] == [(4, 64), (8, 128), (16, 256), (32, 512)]
    assert count_parameters(create_model("cswin_t", num_classes=0, feature_norms=True)) == 21_808_448
    assert count_parameters(create_model("cswin_t", num_classes=0)) == 21_807_552 - 1_024  # head norm dropped
    small = cswin.CSWinTransformer(depths=(2, 4, 32, 2))
    assert count_parameters(small) == 34_643_304  # CSWin-S, same code
    base = cswin.CSWinTransformer(embed_dim=96, depths=(2, 4, 32, 2), num_heads=(4, 8, 16, 32))
    assert count_parameters(base) == 77_382_184  # CSWin-B, heads as in the code (pitfall 4)


def test_cswin_t_gmacs_within_5_percent_at_224() -> None:
    model = create_model("cswin_t").eval()
    gmacs = count_gmacs(model, torch.randn(1, 3, 224, 224))
    assert abs(gmacs - 4.324) <= 0.05 * 4.324, gmacs


def test_segmentation_backbone_shapes_and_gmacs_at_256x512() -> None:
    torch.manual_seed(0)
    model = create_model("cswin_t", num_classes=0, feature_norms=True).eval()
    x = torch.randn(1, 3, 256, 512)
    with torch.no_grad():
        maps = model(x)
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 64, 128), (128, 32, 64), (256, 16, 32), (512, 8, 16)]
    gmacs = count_gmacs(model, x)  # 16 rows at stage 3 are padded to 21 in the horizontal branch
    assert abs(gmacs - 12.0) <= 0.05 * 12.0, gmacs


def test_stripe_as_wide_as_the_map_is_exactly_global_attention() -> None:
    q, k, v = rand_maps(2, 5, 6, 8, seed=1)
    glob = branch("global", 8, 2)
    expected = glob(q, k, v)
    weight, bias = glob.lepe.weight, glob.lepe.bias
    assert torch.allclose(expected, naive_global(q, k, v, weight, bias, 2), atol=1e-12, rtol=0)
    for mode, split in (("vertical", 6), ("vertical", 9), ("horizontal", 5), ("horizontal", 7)):
        stripe = branch(mode, 8, 2, split)
        stripe.lepe.load_state_dict(glob.lepe.state_dict())
        assert stripe.window_size(5, 6) == (5, 6)
        assert torch.equal(stripe(q, k, v), expected), (mode, split)
    narrow = branch("vertical", 8, 2, 3)
    narrow.lepe.load_state_dict(glob.lepe.state_dict())
    assert not torch.allclose(narrow(q, k, v), expected, atol=1e-3)


@pytest.mark.parametrize(("h", "w", "sw"), [(6, 8, 2), (5, 7, 1), (4, 6, 3), (3, 10, 4), (4, 9, 7), (2, 5, 2)])
def test_vertical_branch_equals_masked_global_attention_plus_per_stripe_lepe(h: int, w: int, sw: int) -> None:
    q, k, v = rand_maps(2, h, w, 8, seed=h * w + sw)
    attn = branch("vertical", 8, 2, sw)
    assert attn.window_size(h, w) == (h, min(sw, w))
    expected = naive_vertical(q, k, v, attn.lepe.weight, attn.lepe.bias, 2, sw)
    assert torch.allclose(attn(q, k, v), expected, atol=1e-12, rtol=0)


def test_padded_keys_are_unmasked_zeros_in_the_softmax() -> None:
    q, k, v = rand_maps(1, 3, 10, 4, seed=3)  # sw 4: width 10 -> 12, one zero column each side
    attn = branch("vertical", 4, 1, 4)
    weight, bias = attn.lepe.weight, attn.lepe.bias
    got = attn(q, k, v)
    padded = [F.pad(t, (0, 0, 1, 1)) for t in (q, k, v)]
    explicit = naive_vertical(*padded, weight, bias, 1, 4)[:, :, 1:-1]  # 12 divides by 4: no implicit padding
    assert torch.allclose(got, explicit, atol=1e-12, rtol=0)
    middle = naive_vertical(q[:, :, 3:7], k[:, :, 3:7], v[:, :, 3:7], weight, bias, 1, 4)
    assert torch.allclose(got[:, :, 3:7], middle, atol=1e-12, rtol=0)  # a stripe of real columns only
    masked_edge = naive_vertical(q[:, :, :3], k[:, :, :3], v[:, :, :3], weight, bias, 1, 3)
    assert (got[:, :, :3] - masked_edge).abs().max() > 1e-3  # masking the padded keys would change the edges


def test_lepe_is_per_stripe_so_width_one_stripes_use_a_3x1_kernel() -> None:
    q, k, v = rand_maps(2, 6, 5, 8, seed=4)
    attn = branch("vertical", 8, 2, 1)
    weight, bias = attn.lepe.weight, attn.lepe.bias
    got = attn(q, k, v)
    column_kernel = torch.zeros_like(weight)
    column_kernel[..., 1] = weight[..., 1]
    three_by_one = naive_vertical(q, k, v, column_kernel, bias, 2, 1, lepe_on_full_map=True)
    assert torch.allclose(got, three_by_one, atol=1e-12, rtol=0)
    full_image = naive_vertical(q, k, v, weight, bias, 2, 1, lepe_on_full_map=True)
    assert (got - full_image).abs().max() > 0.1
    assert torch.allclose(got, naive_vertical(q, k, v, weight, bias, 2, 1), atol=1e-12, rtol=0)


@pytest.mark.parametrize(("h", "w", "sw"), [(6, 4, 2), (7, 5, 3), (3, 3, 7)])
def test_horizontal_branch_is_the_transposed_vertical_branch(h: int, w: int, sw: int) -> None:
    q, k, v = rand_maps(2, h, w, 8, seed=5 + sw)
    horizontal = branch("horizontal", 8, 2, sw)
    vertical = branch("vertical", 8, 2, sw)
    vertical.lepe.weight.data.copy_(horizontal.lepe.weight.transpose(-2, -1))
    vertical.lepe.bias.data.copy_(horizontal.lepe.bias)
    got = horizontal(q, k, v)
    transposed = vertical(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(got, transposed, atol=1e-12, rtol=0)
    assert torch.allclose(got, naive_horizontal(q, k, v, horizontal.lepe.weight, horizontal.lepe.bias, 2, sw),
                          atol=1e-12, rtol=0)


@pytest.mark.parametrize(("h", "w"), [(4, 6), (5, 7)])
def test_stripe_block_equals_naive_cross_shaped_block(h: int, w: int) -> None:
    torch.manual_seed(6)
    block = cswin.CSWinBlock(16, 4, split_size=2).double().eval()
    for attn in block.attns:
        torch.nn.init.normal_(attn.lepe.bias)
    assert [a.mode for a in block.attns] == ["vertical", "horizontal"] and block.branch_num == 2
    x = torch.randn(2, h, w, 16, dtype=torch.float64)
    assert torch.allclose(block(x), naive_block(block, x, 4), atol=1e-12, rtol=0)


def test_last_stage_is_global_attention_at_any_size() -> None:
    torch.manual_seed(7)
    model = create_model("cswin_nano").double().eval()
    last = model.stages[3][0]
    assert model.branch_nums() == [2, 2, 2, 1] and [a.mode for a in last.attns] == ["global"]
    assert last.attns[0].num_heads == 8 and last.attns[0].dim == 256
    for h, w in ((7, 7), (3, 5), (9, 2)):
        x = torch.randn(1, h, w, 256, dtype=torch.float64)
        assert torch.allclose(last(x), naive_block(last, x, 8), atol=1e-10, rtol=0), (h, w)
    published = create_model("cswin_t", num_classes=0).eval()
    with torch.no_grad():
        maps = published(torch.randn(1, 3, 224, 224))
    assert maps[3].shape[-2:] == (7, 7) == (published.split_size[2],) * 2  # the stripe covers the whole map
    assert maps[2].shape[-2:] == (14, 14)


@pytest.mark.parametrize(("h", "w"), [(37, 61), (120, 88), (5, 3)])
def test_odd_input_sizes_give_ceil_shapes(h: int, w: int) -> None:
    torch.manual_seed(8)
    model = create_model("cswin_nano", num_classes=0).eval()
    x = torch.randn(1, 3, h, w)
    with torch.no_grad():
        maps = model(x)
        padded = model(F.pad(x, (0, -w % 4, 0, -h % 4)))
    for info, fmap, same in zip(model.feature_info, maps, padded):
        assert fmap.shape == (1, info.channels, math.ceil(h / info.stride), math.ceil(w / info.stride))
        assert torch.isfinite(fmap).all()
        assert torch.equal(fmap, same)  # the input is zero-padded at the bottom and right to a multiple of 4


def test_circular_model_rolls_with_the_panorama() -> None:
    torch.manual_seed(9)
    model = create_model("cswin_nano", num_classes=0, circular=True).double().eval()
    assert model.period == 224 == cswin.circular_period([1, 2, 7])
    x = torch.randn(1, 3, 32, 448, dtype=torch.float64)
    rolled = torch.roll(x, 224, dims=-1)
    with torch.no_grad():
        maps, rolled_maps = model(x), model(rolled)
        plain = create_model("cswin_nano", num_classes=0).double().eval()
        plain_maps, plain_rolled = plain(x), plain(rolled)
    for info, fmap, fmap_rolled in zip(model.feature_info, maps, rolled_maps):
        assert torch.allclose(torch.roll(fmap, 224 // info.stride, dims=-1), fmap_rolled, atol=1e-10, rtol=0)
    assert not torch.allclose(torch.roll(plain_maps[0], 56, dims=-1), plain_rolled[0], atol=1e-3)


def test_kwargs_pass_through_and_the_head() -> None:
    torch.manual_seed(10)
    model = create_model("cswin_nano", num_classes=10, drop_path_rate=0.2).eval()
    blocks = [b for s in model.stages for b in s]
    assert blocks[0].drop_path.p == 0.0 and blocks[-1].drop_path.p == pytest.approx(0.2)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        tokens = feats[-1].flatten(2).transpose(1, 2)
        expected = model.head(F.layer_norm(tokens, (256,), model.norm.weight, model.norm.bias).mean(dim=1))
    assert logits.shape == (2, 10) and torch.allclose(logits, expected, atol=1e-6)
    headless = create_model("cswin_nano", num_classes=0)
    assert not hasattr(headless, "head") and not hasattr(headless, "norm")
    assert isinstance(headless(x), list)
    with pytest.raises(NotImplementedError):
        headless.forward_head(feats)


def test_gradients_finite_and_reach_every_parameter() -> None:
    torch.manual_seed(11)
    model = create_model("cswin_nano", num_classes=5).double()
    model(torch.randn(2, 3, 52, 44, dtype=torch.float64)).square().sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_invalid_configs_raise() -> None:
    with pytest.raises(ValueError, match="even dim and num_heads"):
        create_model("cswin_nano", num_heads=(3, 2, 4, 8))
    with pytest.raises(ValueError, match="4 stages"):
        create_model("cswin_nano", depths=(1, 1, 1))
    with pytest.raises(ValueError, match="num_classes=0"):
        create_model("cswin_nano", feature_norms=True)
    with pytest.raises(ValueError, match="mode"):
        cswin.LePEAttention(8, 2, "diagonal")
    with pytest.raises(ValueError, match="split_size"):
        cswin.LePEAttention(8, 2, "vertical", 0)
