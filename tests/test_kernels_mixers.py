"""Token-mixer registry: every registered name builds from config and mixes [B, H, N, D] like its op."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from vlnkit.perception.kernels import (
    AnchorConfig,
    anchor_attention,
    available_token_mixers,
    create_token_mixer,
    lightning_attn,
    register_token_mixer,
    transnormer_slopes,
)


def test_registry_lists_all_mixers_and_rejects_unknown() -> None:
    assert available_token_mixers() == ["anchor", "key_only", "lightning", "longgen", "mlp", "paro", "softmax", "sparsifiner", "taylor"]
    with pytest.raises(KeyError):
        create_token_mixer("nope")
    with pytest.raises(ValueError):
        register_token_mixer("softmax")(torch.nn.Identity)


def test_softmax_and_lightning_mixers() -> None:
    q, k, v = (torch.randn(2, 4, 32, 16) for _ in range(3))
    out = create_token_mixer("softmax")(q, k, v)
    assert torch.allclose(out, torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))
    cfg = OmegaConf.create({"name": "lightning", "params": {"num_heads": 4, "layer_idx": 1, "num_layers": 4}})
    mixer = create_token_mixer(cfg.name, **cfg.params)
    expected = lightning_attn(q, k, v, transnormer_slopes(4, 1, 4))
    assert torch.allclose(mixer(q, k, v), expected)
    o, state = mixer(q, k, v, output_final_state=True)
    assert state.shape == (2, 4, 16, 16)


def test_longgen_mixer_follows_the_layer_schedule() -> None:
    q, k, v = (torch.randn(1, 2, 64, 8) for _ in range(3))
    full = create_token_mixer("longgen", layer_idx=1, num_layers=3, block_size=16, window=8, sink=4)
    sparse = create_token_mixer("longgen", layer_idx=0, num_layers=3, block_size=16, window=8, sink=4)
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert full.full and not sparse.full
    assert torch.allclose(full(q, k, v), dense)
    assert not torch.allclose(sparse(q, k, v), dense, atol=1e-3)


def test_anchor_and_paro_mixers() -> None:
    q, k, v = (torch.randn(1, 2, 64, 8) for _ in range(3))
    params = {"group_size": 32, "block_size": 16, "init_tokens": 16, "theta": 1.0}
    expected = anchor_attention(q, k, v, AnchorConfig(**params))
    assert torch.allclose(create_token_mixer("anchor", **params)(q, k, v), expected)
    paro = create_token_mixer("paro", grid=(2, 4, 8), block_size=16, density=0.5)
    with pytest.raises(RuntimeError):
        paro(q, k, v)
    plan = paro.calibrate(q, k)
    assert paro(q, k, v).shape == v.shape and plan.orders.shape == (2,)
