"""Every registered vision backbone keeps the contract of :mod:`vlnkit.perception.backbones.base` (a sweep in the
style of timm's model tests): built by name with no arguments, it returns one NCHW map per ``feature_info``
entry with that entry's channels at that stride of its default input, logits of its class count, and, for the
small models, finite gradients on every parameter the forward pass uses."""

import math

import pytest
import torch

from vlnkit.perception.backbones import available_backbones, create_model
from vlnkit.perception.backbones.base import Backbone
from vlnkit.perception.backbones.layers import count_parameters

BACKWARD_MAX_PARAMS = 7_000_000
"""Models up to this size also get a backward pass (the big published variants are checked forward only)."""


def test_the_papers_families_are_registered() -> None:
    names = set(available_backbones())
    for family in ("pp_mobileseg_tiny", "pp_mobileseg_base", "sparsifiner_s", "sparsifiner_tiny", "overlock_xt",
                   "overlock_nano", "dependencyvit_t", "dependencyvit_nano", "cswin_t", "cswin_nano"):
        assert family in names
    assert "tiny_clip" not in names


@pytest.mark.parametrize("name", available_backbones())
def test_backbone_contract(name: str, one_torch_thread: None) -> None:
    torch.manual_seed(0)
    model = create_model(name)
    assert isinstance(model, Backbone), f"{name} is registered as a backbone but builds a {type(model).__name__}"
    model.eval()
    height, width = model.default_input_size
    x = torch.randn(2, 3, height, width)
    small = count_parameters(model) <= BACKWARD_MAX_PARAMS
    with torch.set_grad_enabled(small):
        maps = model.forward_features(x)
        assert len(maps) == len(model.feature_info)
        strides = [info.stride for info in model.feature_info]
        assert strides == sorted(strides), "feature maps must be finest first"
        for info, fmap in zip(model.feature_info, maps):
            assert fmap.shape[:2] == (2, info.channels)
            assert fmap.shape[2:] == (math.ceil(height / info.stride), math.ceil(width / info.stride))
            assert torch.isfinite(fmap).all()
        out = model(x)
        if model.num_classes > 0:
            assert isinstance(out, torch.Tensor) and out.shape[:2] == (2, model.num_classes)
            assert torch.isfinite(out).all()
    if small:
        loss = (out if isinstance(out, torch.Tensor) else sum(m.mean() for m in out)).float().pow(2).mean()
        loss.backward()
        for pname, param in model.named_parameters():
            if param.grad is not None:
                assert torch.isfinite(param.grad).all(), f"{name}: non-finite gradient in {pname}"
        used = sum(p.grad is not None for p in model.parameters())
        assert used > 0.5 * len(list(model.parameters()))
