"""DependencyViT (doc §5): the port's exact parameter counts, the MAC count against its closed form, and the
reversed-attention invariants, the head selector, the message controller, the dependency tree and Lite token
pruning against naive re-derivations of the doc's formulas written here (explicit A_R matrices, per-head loops).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from vlnkit.perception.backbones import dependencyvit
from vlnkit.perception.backbones.dependencyvit import (
    DependencyViT,
    dependency_mask,
    dependency_tree,
    outgoing_message_mass,
    reversed_attention,
)
from vlnkit.perception.backbones.layers import count_gmacs, count_parameters
from vlnkit.perception.backbones.registry import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def nano(**kwargs: object) -> DependencyViT:
    """The nano model in float64 with LayerScale gammas of order 1, so both branches matter in the references."""
    torch.manual_seed(0)
    model = create_model("dependencyvit_nano", **kwargs).double().eval()
    with torch.no_grad():
        for block in model.blocks:
            block.ls1.gamma.normal_(0.0, 0.5)
            block.ls2.gamma.normal_(0.0, 0.5)
    return model


# --- naive references -----------------------------------------------------------------------------------------


def naive_softmax(x: Tensor, dim: int) -> Tensor:
    e = (x - x.amax(dim=dim, keepdim=True)).exp()
    return e / e.sum(dim=dim, keepdim=True)


def naive_reversed_matrices(q: Tensor, k: Tensor, p: Tensor, m: Tensor) -> Tensor:
    """A_R[b, h, j, i] = A_F[b, h, i, j] p[b, i, h] m[b, i], built per batch element and head by loops."""
    b, heads, n, d = q.shape
    out = torch.empty(b, heads, n, n, dtype=q.dtype)
    for bi in range(b):
        for h in range(heads):
            a_f = naive_softmax(q[bi, h] @ k[bi, h].T / math.sqrt(d), dim=1)  # [i, j]
            out[bi, h] = a_f.T * (p[bi, :, h] * m[bi])[None, :]  # column i scaled by p_ih m_i
    return out


def naive_block(block: dependencyvit.DependencyBlock, x: Tensor, m_prev: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One DependencyViT block from its weights: new tokens, m and the explicit A_R [B, H, N, N]."""
    b, n, c = x.shape
    attn = block.attn
    heads, d = attn.num_heads, attn.head_dim
    z = F.layer_norm(x, (c,), block.norm1.weight, block.norm1.bias, 1e-6)
    q, k, v = (z @ attn.qkv.weight.T).reshape(b, n, 3, heads, d).permute(2, 0, 3, 1, 4)
    p = naive_softmax(z @ attn.head_selector.weight.T / attn.head_temperature, dim=-1)
    mc = attn.message_controller
    m = m_prev / (1 + torch.exp(-(F.gelu(z @ mc.fc1.weight.T) @ mc.fc2.weight.T).squeeze(-1)))
    a_r = naive_reversed_matrices(q, k, p, m)
    o = torch.einsum("bhji,bhid->bhjd", a_r, v).transpose(1, 2).reshape(b, n, c)
    x = x + block.ls1.gamma * (o @ attn.proj.weight.T + attn.proj.bias)
    h = F.layer_norm(x, (c,), block.norm2.weight, block.norm2.bias, 1e-6)
    mlp = block.mlp
    x = x + block.ls2.gamma * (F.gelu(h @ mlp.fc1.weight.T + mlp.fc1.bias) @ mlp.fc2.weight.T + mlp.fc2.bias)
    return x, m, a_r


def naive_forward(model: DependencyViT, images: Tensor) -> tuple[Tensor, list[int], Tensor]:
    """Feature map, per-block token counts and final kept raster indices, Lite pruning by sum_{h,j} |A_R|."""
    tokens = F.conv2d(images, model.patch_embed.weight, model.patch_embed.bias, stride=model.patch_size)
    b, c, gh, gw = tokens.shape
    tokens = tokens.flatten(2).transpose(1, 2) + model.pos_embed
    index = torch.arange(gh * gw).expand(b, -1)
    m = torch.ones(b, gh * gw, dtype=tokens.dtype)
    counts = []
    for layer, block in enumerate(model.blocks):
        counts.append(tokens.shape[1])
        tokens, m, a_r = naive_block(block, tokens, m)
        if layer in model.prune_layers:
            n_keep = math.floor(model.keep_ratio * tokens.shape[1] + 1e-9)
            score = a_r.abs().sum(dim=(1, 2))  # sum over heads and parents j: what child i sends
            keep = score.argsort(dim=1, descending=True)[:, :n_keep].sort(dim=1).values
            tokens = torch.stack([tokens[bi, keep[bi]] for bi in range(b)])
            m = torch.stack([m[bi, keep[bi]] for bi in range(b)])
            index = torch.stack([index[bi, keep[bi]] for bi in range(b)])
    tokens = F.layer_norm(tokens, (c,), model.norm.weight, model.norm.bias, 1e-6) * m[..., None]
    grid = torch.zeros(b, gh * gw, c, dtype=tokens.dtype)
    for bi in range(b):
        grid[bi, index[bi]] = tokens[bi]
    return grid.transpose(1, 2).reshape(b, c, gh, gw), counts, index


def functional_graph_cycles(parent: list[int]) -> list[set[int]]:
    """The cycles of the graph i -> parent[i] (every node has one out-edge), found by walking from each node."""
    cycles: list[set[int]] = []
    seen: set[int] = set()
    for start in range(len(parent)):
        path: list[int] = []
        node = start
        while node not in seen and node not in path:
            path.append(node)
            node = parent[node]
        if node in path:
            cycles.append(set(path[path.index(node):]))
        seen.update(path)
    return cycles


# --- parameter counts and MACs ---------------------------------------------------------------------------------


def test_dependencyvit_t_parameter_counts_match_doc() -> None:
    model = create_model("dependencyvit_t")
    assert count_parameters(model) == 5_964_712
    assert count_parameters(model) - count_parameters(model.head) == 5_771_712
    assert {count_parameters(block) for block in model.blocks} == {465_504}
    attn = model.blocks[0].attn
    assert count_parameters(attn.head_selector) == 192 * 12  # Linear(dim -> heads), no bias
    assert count_parameters(attn.message_controller) == 192 * 96 + 96  # MLP(dim -> dim/2 -> 1), no bias
    assert attn.qkv.bias is None and attn.num_heads == 12 and attn.head_dim == 16
    assert model.pos_embed.shape == (1, 196, 192)  # no CLS token
    assert [(f.stride, f.channels) for f in model.feature_info] == [(16, 192)]
    assert count_parameters(create_model("dependencyvit_t", lite=True)) == 5_964_712
    assert count_parameters(DependencyViT(embed_dim=384)) == 22_987_624  # the port's small model


def closed_form_macs(tokens: list[int], dim: int = 192, heads: int = 12, classes: int = 1000) -> int:
    """MACs of the matmuls of one forward pass, per block with the token count it sees."""
    per_token = 3 * dim * dim + dim * dim + dim * heads + dim * dim // 2 + dim // 2 + 2 * 4 * dim * dim
    blocks = sum(n * per_token + 2 * n * n * dim for n in tokens)
    return 196 * 3 * 16 * 16 * dim + blocks + dim * classes


def test_gmacs_equal_the_closed_form() -> None:
    """The sheet gives no FLOPs for DependencyViT (unverified): check the count against the closed form, so that
    reversed attention costs exactly what ordinary attention does and Lite saves what its schedule says."""
    model = create_model("dependencyvit_t").eval()
    x = torch.randn(1, 3, 224, 224)
    gmacs = count_gmacs(model, x)
    assert gmacs == pytest.approx(closed_form_macs([196] * 12) / 1e9, rel=1e-9)
    assert gmacs == pytest.approx(1.2956, abs=1e-4)
    lite = create_model("dependencyvit_t", lite=True).eval()
    lite_tokens = [196] * 3 + [164] * 3 + [137] * 3 + [115] * 3
    lite_gmacs = count_gmacs(lite, x)
    score = 12 * (196 + 164 + 137 + 115)  # the pruning score sum_h p_ih m_i (sum_j A_F) at each pruning layer
    assert lite_gmacs == pytest.approx((closed_form_macs(lite_tokens) + score) / 1e9, rel=1e-9)
    assert lite_gmacs == pytest.approx(0.9916, abs=1e-4)


# --- reversed attention ----------------------------------------------------------------------------------------


def random_inputs(b: int = 2, heads: int = 3, n: int = 7, d: int = 5) -> tuple[Tensor, ...]:
    torch.manual_seed(1)
    q, k, v = (torch.randn(b, heads, n, d, dtype=torch.float64) for _ in range(3))
    p = torch.randn(b, n, heads, dtype=torch.float64).mul(3).softmax(dim=-1)
    m = torch.rand(b, n, dtype=torch.float64) * 0.9 + 0.05
    return q, k, v, p, m


def test_reversed_attention_matches_explicit_a_r_and_the_mass_invariant() -> None:
    q, k, v, p, m = random_inputs()
    out, attn = reversed_attention(q, k, v, p, m, q.shape[-1] ** -0.5)
    a_r = naive_reversed_matrices(q, k, p, m)
    assert torch.allclose(out, a_r @ v, atol=1e-12, rtol=0)
    # A_F^T = column-softmax(K Q^T)
    col = naive_softmax(k @ q.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-2)
    assert torch.allclose(attn.transpose(-2, -1), col, atol=1e-12, rtol=0)
    mask = dependency_mask(attn, p, m)
    assert torch.allclose(mask, a_r.sum(dim=1), atol=1e-12, rtol=0)
    # sum_j A_M[j, i] = m_i: each token sends exactly its controller value; the rows (received mass) do not
    assert torch.allclose(mask.sum(dim=-2), m, atol=1e-12, rtol=0)
    assert not torch.allclose(mask.sum(dim=-1), m, atol=1e-3)
    assert torch.allclose(outgoing_message_mass(attn, p, m), a_r.abs().sum(dim=(1, 2)), atol=1e-12, rtol=0)


def test_uniform_selector_and_unit_controller_give_transposed_attention_over_h() -> None:
    q, k, v, _, _ = random_inputs()
    heads, n = q.shape[1], q.shape[2]
    p = torch.full((2, n, heads), 1.0 / heads, dtype=torch.float64)
    m = torch.ones(2, n, dtype=torch.float64)
    out, _ = reversed_attention(q, k, v, p, m, q.shape[-1] ** -0.5)
    a_f = naive_softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    assert torch.allclose(out, a_f.transpose(-2, -1) @ v / heads, atol=1e-12, rtol=0)
    assert not torch.allclose(out, a_f @ v / heads, atol=1e-3)  # the reversal matters


def test_block_matches_naive_reference_and_keeps_the_residual() -> None:
    model = nano()
    torch.manual_seed(2)
    x = torch.randn(2, 16, 32, dtype=torch.float64)
    m = torch.rand(2, 16, dtype=torch.float64) + 0.1
    for block in model.blocks:
        out, att = block(x, m)
        expected, expected_m, a_r = naive_block(block, x, m)
        assert torch.allclose(out, expected, atol=1e-12, rtol=0)
        assert torch.allclose(att.m, expected_m, atol=1e-12, rtol=0)
        assert torch.allclose(dependency_mask(att.attn, att.p, att.m), a_r.sum(dim=1), atol=1e-12, rtol=0)
        x, m = out, att.m
    block = model.blocks[0]
    with torch.no_grad():
        block.ls1.gamma.zero_()
        block.ls2.gamma.zero_()
    assert torch.equal(block(x, m)[0], x)  # the earlier port revision lost the input x here


# --- head selector and message controller --------------------------------------------------------------------


def test_head_selector_and_message_controller_shapes_and_ranges() -> None:
    model = nano()
    torch.manual_seed(3)
    tokens, _ = model.embed(torch.randn(2, 3, 64, 64, dtype=torch.float64))
    m = torch.ones(2, 16, dtype=torch.float64)
    for block in model.blocks:
        z = block.norm1(tokens)
        gate = 1 / (1 + torch.exp(-block.attn.message_controller(z).squeeze(-1)))
        tokens, att = block(tokens, m)
        assert att.p.shape == (2, 16, 4) and att.m.shape == (2, 16) and att.attn.shape == (2, 4, 16, 16)
        assert bool((att.p >= 0).all()) and bool((att.p <= 1).all())
        assert torch.allclose(att.p.sum(dim=-1), torch.ones(2, 16, dtype=torch.float64), atol=1e-12)
        logits = z @ block.attn.head_selector.weight.T
        assert torch.allclose(att.p, naive_softmax(logits / 0.1, dim=-1), atol=1e-12, rtol=0)
        assert bool((gate > 0).all()) and bool((gate < 1).all())
        assert torch.allclose(att.m, m * gate, atol=1e-12, rtol=0)  # cumulative: m^(l) = m^(l-1) sigmoid(.)
        assert bool((att.m > 0).all()) and bool((att.m < m).all())
        m = att.m
    sharp = model.blocks[0].attn
    z = torch.randn(2, 16, 32, dtype=torch.float64)
    sharp.head_temperature = 1e-4
    assert torch.allclose(sharp.head_probabilities(z).amax(dim=-1), torch.ones(2, 16, dtype=torch.float64))
    sharp.head_temperature = 1e6
    assert torch.allclose(sharp.head_probabilities(z), torch.full((2, 16, 4), 0.25, dtype=torch.float64))
    half = sharp.to(torch.bfloat16)
    half.head_temperature = 0.1
    probs = half.head_probabilities(z.to(torch.bfloat16) * 1e4)
    assert probs.dtype == torch.bfloat16 and bool(torch.isfinite(probs).all())


def test_model_masks_send_exactly_the_controller_mass() -> None:
    model = nano()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    trace = model.forward_with_dependencies(x)
    assert len(trace.masks) == len(trace.messages) == 4
    for mask, m in zip(trace.masks, trace.messages):
        assert mask.shape == (2, 16, 16) and bool((mask >= 0).all())
        assert torch.allclose(mask.sum(dim=-2), m, atol=1e-12, rtol=0)
    assert trace.grid == (4, 4) and torch.equal(trace.features[0], model.forward_features(x)[0])


# --- dependency tree -------------------------------------------------------------------------------------------


def assert_forest(parent: list[int], mask: Tensor) -> None:
    n = len(parent)
    raw = [max((j for j in range(n) if j != i), key=lambda j: (mask[j, i].item(), -j)) for i in range(n)]
    cycles = functional_graph_cycles(raw)
    roots = [i for i in range(n) if parent[i] == -1]
    assert len(roots) == len(cycles) >= 1  # one root per cycle of the arg-max graph
    for cycle in cycles:
        weakest = min(cycle, key=lambda i: (mask[raw[i], i].item(), i))
        assert [r for r in roots if r in cycle] == [weakest]
    for i in range(n):
        assert parent[i] != i
        assert parent[i] in (raw[i], -1)
        node, steps = i, 0
        while parent[node] != -1:
            node, steps = parent[node], steps + 1
            assert steps < n, "cycle left in the parent graph"


def test_dependency_tree_is_a_forest_without_self_parents() -> None:
    torch.manual_seed(4)
    masks = torch.rand(3, 2, 11, 11, dtype=torch.float64)
    masks.diagonal(dim1=-2, dim2=-1).add_(10.0)  # a large diagonal, as reversed attention tends to give
    parents = dependency_tree(masks)
    assert parents.shape == (3, 2, 11)
    for a in range(3):
        for b in range(2):
            assert_forest(parents[a, b].tolist(), masks[a, b])
    # columns are children: 0 -> 1 (0.7), 1 -> 0 (0.6), 2 -> 1 (0.2); the 0 <-> 1 cycle is cut at child 1 (0.6)
    pair = torch.tensor([[0.9, 0.6, 0.1], [0.7, 0.9, 0.2], [0.1, 0.3, 0.9]])
    assert dependency_tree(pair).tolist() == [1, -1, 1]
    model = nano()
    trace = model.forward_with_dependencies(torch.randn(2, 3, 64, 64, dtype=torch.float64))
    tree = dependency_tree(trace.masks[-1])
    for b in range(2):
        assert_forest(tree[b].tolist(), trace.masks[-1][b])
    with pytest.raises(ValueError, match="square"):
        dependency_tree(torch.rand(3, 4))
    with pytest.raises(ValueError, match="at least 2"):
        dependency_tree(torch.rand(1, 1))


# --- Lite: dynamic pooling -------------------------------------------------------------------------------------


def test_lite_keeps_floor_keep_n_tokens_at_each_pruning_layer() -> None:
    tiny = create_model("dependencyvit_t", lite=True).eval()
    assert tiny.prune_layers == (2, 5, 8, 11) and tiny.keep_ratio == pytest.approx(0.84)
    expected, n = [], 196
    for _ in range(4):
        n = math.floor(0.84 * n)
        expected.append(n)
    assert tiny.token_schedule(196) == expected == [164, 137, 115, 96]
    with torch.no_grad():
        trace = tiny.forward_with_dependencies(torch.randn(1, 3, 224, 224))
    assert [idx.shape[1] for idx in trace.token_indices] == [196] * 3 + [164] * 3 + [137] * 3 + [115] * 3
    assert trace.kept_indices.shape == (1, 96)
    assert int((trace.features[0].abs().sum(dim=1) != 0).sum()) == 96
    assert create_model("dependencyvit_t").token_schedule(196) == []


def test_lite_pruning_matches_naive_reference() -> None:
    model = nano(lite=True)
    torch.manual_seed(5)
    x = torch.randn(3, 3, 64, 64, dtype=torch.float64)
    trace = model.forward_with_dependencies(x)
    expected, counts, kept = naive_forward(model, x)
    assert counts == [16, 16, 13, 13] and kept.shape == (3, 10)
    assert torch.equal(trace.kept_indices, kept)
    assert torch.allclose(trace.features[0], expected, atol=1e-12, rtol=0)
    # the kept tokens are the ones sending the most mass, i.e. the largest controllers m
    m1 = trace.messages[1]
    assert torch.equal(trace.token_indices[2], m1.topk(13, dim=1).indices.sort(dim=1).values)
    dropped = torch.ones(3, 16, dtype=torch.bool).scatter(1, trace.token_indices[2], False)
    for b in range(3):
        assert m1[b, trace.token_indices[2][b]].min() > m1[b, dropped[b]].max()
    pruned = torch.ones(3, 16, dtype=torch.bool).scatter(1, kept, False)
    flat = trace.features[0].flatten(2)
    assert bool((flat.transpose(1, 2)[pruned] == 0).all()) and bool((flat.transpose(1, 2)[~pruned] != 0).all())
    # before the first pruning layer acts, the Lite model is the full model
    full = nano()
    full_trace = full.forward_with_dependencies(x)
    for layer in range(2):
        assert torch.equal(trace.masks[layer], full_trace.masks[layer])
    assert not torch.allclose(trace.features[0], full_trace.features[0], atol=1e-6)
    logits = model.forward_head(trace.features)
    mean_kept = torch.stack([flat[b][:, kept[b]].mean(dim=1) for b in range(3)])
    assert torch.allclose(logits, model.head(mean_kept), atol=1e-12, rtol=0)
    assert torch.allclose(model(x), logits, atol=1e-12, rtol=0)


def test_lite_with_zero_ratio_is_the_full_model() -> None:
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    full = nano()
    lite = nano(lite=True, prune_ratio=0.0)
    assert lite.token_schedule(16) == [16, 16]
    assert torch.allclose(lite(x), full(x), atol=1e-12, rtol=0)
    features = full.forward_features(x)
    expected, counts, _ = naive_forward(full, x)
    assert counts == [16] * 4 and torch.allclose(features[0], expected, atol=1e-12, rtol=0)
    assert torch.allclose(full.forward_head(features), full.head(features[0].mean(dim=(-2, -1))), atol=1e-12)


# --- contract, gradients, errors -------------------------------------------------------------------------------


def test_shapes_odd_inputs_gradients_and_no_head() -> None:
    torch.manual_seed(6)
    model = create_model("dependencyvit_nano", lite=True, drop_path_rate=0.1)
    assert model.default_input_size == (64, 64) and model.num_classes == 10
    x = torch.randn(2, 3, 50, 70)
    feats = model.forward_features(x)
    assert len(feats) == 1 and feats[0].shape == (2, 32, 4, 5)
    logits = model(x)
    assert logits.shape == (2, 10) and bool(torch.isfinite(logits).all())
    logits.square().sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and bool(torch.isfinite(param.grad).all()), name
    for block in model.blocks:
        assert block.attn.head_selector.weight.grad.abs().sum() > 0
        assert block.attn.message_controller.fc1.weight.grad.abs().sum() > 0
    headless = create_model("dependencyvit_nano", num_classes=0).eval()
    assert headless.head is None
    out = headless(torch.randn(1, 3, 64, 64))
    assert isinstance(out, list) and out[0].shape == (1, 32, 4, 4)
    with pytest.raises(NotImplementedError, match="num_classes=0"):
        headless.forward_head(out)
    assert create_model("dependencyvit_t", num_classes=7).head.out_features == 7


def test_invalid_configs_raise() -> None:
    with pytest.raises(ValueError, match="multiple of num_heads"):
        create_model("dependencyvit_nano", num_heads=3)
    with pytest.raises(ValueError, match="head_temperature"):
        create_model("dependencyvit_nano", head_temperature=0.0)
    with pytest.raises(ValueError, match="prune_layers"):
        create_model("dependencyvit_nano", lite=True, prune_layers=(1, 4))
    with pytest.raises(ValueError, match="prune_ratio"):
        create_model("dependencyvit_nano", lite=True, prune_ratio=1.0)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        create_model("dependencyvit_nano", img_size=60)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        create_model("dependencyvit_nano")(torch.randn(3, 64, 64))
