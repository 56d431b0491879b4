"""Sparsifiner (doc §4): exact parameter counts, the mask invariants against naive references written here, the
gradient isolation of the mask predictor, the two-phase helpers and the ``sparsifiner`` token mixer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlnkit.perception.backbones import sparsifiner
from vlnkit.perception.backbones.layers import count_parameters
from vlnkit.perception.backbones.registry import create_model
from vlnkit.perception.kernels import available_token_mixers, create_token_mixer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_N = 17  # 64x64 input, patch 16: 16 patches + CLS


def tiny(**kwargs: object) -> sparsifiner.Sparsifiner:
    torch.manual_seed(0)
    return create_model("sparsifiner_tiny", **kwargs).double()


def naive_dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    attn = ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(dim=-1)
    return attn @ v, attn


def naive_approximation(pred: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, inference: bool) -> torch.Tensor:
    """Â = α B written out from the doc's formulas with the predictor's weights."""
    heads = q.shape[1]
    q_c = q[:, :, 1:] @ pred.proj_c_q.weight.T + pred.proj_c_q.bias
    k_c = k @ pred.proj_c_k.weight.T + pred.proj_c_k.bias
    k_hat = torch.einsum("bhnc,nm->bhcm", k_c, pred.proj_n)
    alpha = torch.softmax(torch.einsum("bhnc,bhcm->bhnm", q_c, k_hat) / math.sqrt(heads), dim=-1)
    back = pred.proj_back_n.T
    if not inference:
        return alpha @ back
    kth = alpha.sort(dim=-1, descending=True).values[..., pred.basis_topk - 1 : pred.basis_topk]
    alpha = torch.where(alpha >= kth, alpha, torch.zeros_like(alpha))
    basis = torch.where(back.abs() > 0.02, back.abs(), torch.zeros_like(back))
    return alpha @ basis


def naive_vit_block(block: torch.nn.Module, x: torch.Tensor, heads: int) -> torch.Tensor:
    """A plain pre-norm ViT block with the weights of ``block``."""
    b, n, c = x.shape
    h = F.layer_norm(x, (c,), block.norm1.weight, block.norm1.bias, 1e-6)
    qkv = (h @ block.attn.qkv.weight.T + block.attn.qkv.bias).reshape(b, n, 3, heads, c // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    out, _ = naive_dense_attention(q, k, v)
    x = x + out.transpose(1, 2).reshape(b, n, c) @ block.attn.proj.weight.T + block.attn.proj.bias
    h = F.layer_norm(x, (c,), block.norm2.weight, block.norm2.bias, 1e-6)
    fc1, fc2 = block.mlp[0], block.mlp[2]
    return x + F.gelu(h @ fc1.weight.T + fc1.bias) @ fc2.weight.T + fc2.bias


def test_sparsifiner_s_parameter_counts() -> None:
    model = create_model("sparsifiner_s")
    predictor = sum(p.numel() for n, p in model.named_parameters() if "mask_predictor" in n)
    assert count_parameters(model) == 22_251_880
    assert predictor == 12 * 16_768
    assert count_parameters(model) - predictor == 22_050_664
    assert model.feature_info[0].stride == 16 and model.feature_info[0].channels == 384
    assert model.blocks[0].attn.mask_predictor.n_down == 32
    mixer = create_token_mixer("sparsifiner", num_tokens=197, num_heads=6, head_dim=64)
    assert count_parameters(mixer) == 16_768


def test_keep_rate_one_is_exactly_dense_attention() -> None:
    torch.manual_seed(1)
    mixer = create_token_mixer("sparsifiner", num_tokens=TINY_N, num_heads=3, head_dim=16, keep_rate=1.0,
                               reduce_n_factor=2, basis_topk=4)
    q, k, v = (torch.randn(2, 3, TINY_N, 16) for _ in range(3))
    result = mixer.attend(q, k, v)
    expected_out, expected_attn = naive_dense_attention(q, k, v)
    assert bool(result.mask.all())
    assert torch.equal(result.out, expected_out)
    assert torch.equal(result.attn, expected_attn)
    model = tiny(keep_rate=1.0).eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    sparse_logits = model(x)
    model.set_mode("dense")
    assert torch.equal(sparse_logits, model(x))


def test_keep_quarter_mask_budget_cls_row_and_row_sums() -> None:
    model = tiny().eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    out = model.forward_maps(x)
    budget = math.ceil(0.25 * TINY_N)
    assert budget == 5
    for attn, mask in zip(out.attentions, out.masks):
        nonzero = (attn != 0).sum(dim=-1)
        assert bool((nonzero[:, :, 1:] == budget).all())
        assert bool((nonzero[:, :, 0] == TINY_N).all())
        assert bool(mask[:, :, 0].all()) and bool((mask.sum(-1)[:, :, 1:] == budget).all())
        assert bool(((attn != 0) == mask).all())
        assert torch.allclose(attn.sum(dim=-1), torch.ones_like(attn[..., 0]), atol=1e-12)
    assert math.ceil(0.25 * 197) == 50 == sparsifiner.attention_budget(0.25, 197)
    assert sparsifiner.attention_budget(0.7, 10) == 7


def test_mask_keeps_the_topk_of_the_naive_inference_approximation() -> None:
    model = tiny().eval()
    torch.manual_seed(2)
    attn = model.blocks[0].attn
    x = torch.randn(2, TINY_N, 32, dtype=torch.float64)
    q, k, v = attn.split_heads(x)
    _, record = attn(x, "sparse")
    expected = naive_approximation(attn.mask_predictor, q, k, inference=True)
    assert torch.allclose(record.approximation, expected, atol=1e-12)
    assert bool((expected >= 0).all())
    kth = expected.sort(dim=-1, descending=True).values[..., 4:5]
    assert torch.equal(record.mask[:, :, 1:], expected >= kth)
    _, dense_record = attn(x, "dense")
    signed = naive_approximation(attn.mask_predictor, q, k, inference=False)
    assert torch.allclose(dense_record.approximation, signed, atol=1e-12)
    assert bool((signed < 0).any())
    assert dense_record.mask is None


def test_dense_mode_block_equals_plain_vit_block() -> None:
    model = tiny(mode="dense").eval()
    torch.manual_seed(3)
    x = torch.randn(2, TINY_N, 32, dtype=torch.float64)
    for block in model.blocks:
        out, record = block(x, model.mode)
        assert torch.allclose(out, naive_vit_block(block, x, 2), atol=1e-12, rtol=0)
        q, k, v = block.attn.split_heads(block.norm1(x))
        assert torch.allclose(record.attn, naive_dense_attention(q, k, v)[1], atol=1e-12)
        x = out
    model.set_mode("sparse")
    sparse_out, _ = model.blocks[0](x, model.mode)
    assert not torch.allclose(sparse_out, naive_vit_block(model.blocks[0], x, 2), atol=1e-3)


def test_no_gradient_through_the_mask_but_recon_loss_reaches_the_predictor() -> None:
    model = tiny()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    out = model.forward_maps(x)
    out.logits.square().sum().backward(retain_graph=True)
    for name, param in model.named_parameters():
        if "mask_predictor" in name:
            assert param.grad is None, name
        else:
            assert param.grad is not None and bool(torch.isfinite(param.grad).all()), name
            assert param.grad.abs().sum() > 0, name
    teacher = [a.detach() for a in out.attentions]
    model.zero_grad(set_to_none=True)
    sparsifiner.attention_reconstruction_loss(out.approximations, teacher).backward()
    for name, param in model.named_parameters():
        if "mask_predictor" in name:
            assert param.grad is not None and bool(torch.isfinite(param.grad).all()), name
            assert param.grad.abs().sum() > 0, name


def test_attention_reconstruction_loss_formula() -> None:
    torch.manual_seed(4)
    approx = [torch.rand(2, 3, 9, 10, dtype=torch.float64) for _ in range(2)]
    teacher = [torch.rand(2, 3, 10, 10, dtype=torch.float64) for _ in range(2)]
    expected = 0.01 * sum(((a - t[:, :, 1:]) ** 2).sum() for a, t in zip(approx, teacher)) / 2
    assert torch.allclose(sparsifiner.attention_reconstruction_loss(approx, teacher), expected, atol=1e-12)
    with pytest.raises(ValueError, match="teacher map"):
        sparsifiner.attention_reconstruction_loss(approx, teacher[:1])
    with pytest.raises(ValueError, match="CLS row"):
        sparsifiner.attention_reconstruction_loss(approx, [a for a in approx])


def test_distillation_loss_formula() -> None:
    torch.manual_seed(5)
    s, t = torch.randn(4, 7, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)
    labels = torch.tensor([0, 3, 6, 2])
    s_tok, t_tok = torch.randn(4, 16, 8, dtype=torch.float64), torch.randn(4, 16, 8, dtype=torch.float64)
    log_ps, log_pt = s.log_softmax(-1), t.log_softmax(-1)
    ce = -log_ps[torch.arange(4), labels].mean()
    kl = (log_pt.exp() * (log_pt - log_ps)).sum() / 4
    mse = ((s_tok - t_tok) ** 2).mean()
    got = sparsifiner.distillation_loss(s, t, labels, s_tok, t_tok)
    assert torch.allclose(got, ce + 0.5 * kl + 0.5 * mse, atol=1e-12)


def test_training_phases_set_trainable_parameters_and_mode() -> None:
    model = create_model("sparsifiner_tiny")
    names = [n for n, _ in model.named_parameters()]
    predictor = [n for n in names if "mask_predictor" in n]
    assert len(predictor) == 2 * 6  # 2 layers x (proj_c_q w/b, proj_c_k w/b, proj_n, proj_back_n)
    recon = sparsifiner.set_training_phase(model, "attn_recon")
    assert recon == predictor and model.mode == "dense"
    assert [n for n, p in model.named_parameters() if p.requires_grad] == predictor
    distill = sparsifiner.set_training_phase(model, "cls_distill")
    assert distill == [n for n in names if n not in predictor] and model.mode == "sparse"
    assert not any(p.requires_grad for n, p in model.named_parameters() if "mask_predictor" in n)
    with pytest.raises(ValueError, match="phase"):
        sparsifiner.set_training_phase(model, "finetune")


def test_mixer_equals_the_model_attention() -> None:
    assert "sparsifiner" in available_token_mixers()
    model = tiny().eval()
    attn = model.blocks[1].attn
    mixer = create_token_mixer("sparsifiner", num_tokens=TINY_N, num_heads=2, head_dim=16, reduce_n_factor=2,
                               basis_topk=4).double()
    mixer.mask_predictor.load_state_dict(attn.mask_predictor.state_dict())
    torch.manual_seed(6)
    x = torch.randn(2, TINY_N, 32, dtype=torch.float64)
    q, k, v = attn.split_heads(x)
    for mode in ("sparse", "dense"):
        mixer.mode = mode
        mixed = mixer(q, k, v)
        assert mixed.shape == v.shape
        expected, _ = attn(x, mode)
        assert torch.equal(attn.proj(mixed.transpose(1, 2).reshape(2, TINY_N, 32)), expected)


def test_shapes_gradients_and_no_state_mutation() -> None:
    model = tiny(num_classes=0)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    feats = model.forward_features(x)
    assert len(feats) == len(model.feature_info) == 1
    assert feats[0].shape == (2, model.feature_info[0].channels, 64 // model.feature_info[0].stride, 4)
    assert torch.equal(model(x)[0], feats[0])
    model.set_mode("dense")
    model.forward_features(x)[0].square().mean().backward()
    for name, param in model.named_parameters():
        if "mask_predictor" not in name:
            assert param.grad is not None and bool(torch.isfinite(param.grad).all()), name
    classifier = tiny().eval()
    state = {k: v.clone() for k, v in classifier.state_dict().items()}
    first, second = classifier(x), classifier(x)
    assert first.shape == (2, 10) and torch.equal(first, second) and classifier.mode == "sparse"
    assert all(torch.equal(v, state[k]) for k, v in classifier.state_dict().items())
    out = classifier.forward_maps(x)
    assert torch.equal(classifier.forward_head(out.tokens), first)
    with pytest.raises(ValueError, match="CLS"):
        classifier.forward_head(classifier.forward_features(x))


def test_clear_errors_for_topk_input_size_mode_and_keep_rate() -> None:
    with pytest.raises(ValueError, match=r"basis_topk.*= 9.*n_down.*8"):
        create_model("sparsifiner_tiny", basis_topk=9)
    with pytest.raises(ValueError, match=r"basis_topk.*n_down"):
        create_model("sparsifiner_s", img_size=64)  # N = 17, n_down = 2 < TOPK 8 (pitfall 1)
    model = create_model("sparsifiner_tiny")
    with pytest.raises(ValueError, match=r"N = 17.*64x64.*48x48"):
        model(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match="mode"):
        model.set_mode("masked")
    with pytest.raises(ValueError, match="keep_rate"):
        create_model("sparsifiner_tiny", keep_rate=0.0)
    mixer = create_token_mixer("sparsifiner", num_tokens=TINY_N, num_heads=2, head_dim=16, reduce_n_factor=2,
                               basis_topk=4)
    q = torch.randn(1, 2, 10, 16)
    with pytest.raises(ValueError, match=r"N = 17.*10"):
        mixer(q, q, q)
