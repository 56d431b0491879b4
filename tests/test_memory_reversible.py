"""The reversible Transformer's inverse is exact: R^-1(R(x)) == x on fresh random inputs; the numpy fast
path computes the same R as the torch module."""

import numpy as np
import pytest
import torch

from vlnkit.memory.reversible import NumpyReversible, ReversibleTransformer


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randomised(dim: int, dtype: torch.dtype, seed: int) -> ReversibleTransformer:
    """Default geometry (depth 6, 8 heads) with weights redrawn so R is far from the identity."""
    torch.manual_seed(seed)
    model = ReversibleTransformer(dim).to(dtype)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    return model


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_inverse_undoes_forward(dtype, tolerance):
    model = _randomised(128, dtype, seed=0)
    generator = torch.Generator().manual_seed(1)
    for batch in (1, 3, 64):
        x = torch.randn(batch, 256, generator=generator, dtype=dtype)
        y = model(x)
        assert (y - x).abs().max() > 1.0  # a real transformation, not the identity
        assert (model.inverse(y) - x).abs().max() <= tolerance
        assert (model(model.inverse(x)) - x).abs().max() <= tolerance


def test_inverse_is_exact_for_default_initialisation_and_in_training_mode():
    torch.manual_seed(2)
    model = ReversibleTransformer(64, depth=6, heads=8, seq_len=4).train()
    x = torch.randn(16, 128)
    assert (model.inverse(model(x)) - x).abs().max() <= 1e-5


def test_gradients_reach_every_parameter_through_forward_and_inverse():
    torch.manual_seed(3)
    model = ReversibleTransformer(32, depth=2, heads=4, seq_len=2)
    x = torch.randn(5, 64)
    (model(x).square().sum() + model.inverse(x).square().sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_shapes_and_validation():
    model = ReversibleTransformer(16, depth=1, heads=2, seq_len=4)
    assert model(torch.zeros(256)[:32]).shape == (32,)
    assert model(torch.zeros(2, 3, 32)).shape == (2, 3, 32)
    with pytest.raises(ValueError):
        model(torch.zeros(4, 30))
    with pytest.raises(ValueError):
        ReversibleTransformer(30, seq_len=4)


def test_cached_parameters_follow_dtype_changes_and_loading():
    torch.manual_seed(4)
    model = ReversibleTransformer(16, depth=2, heads=2, seq_len=2)
    other = ReversibleTransformer(16, depth=2, heads=2, seq_len=2)
    x = torch.randn(3, 32)
    other(x)  # caches its own parameter references
    other.load_state_dict(model.state_dict(), assign=True)
    assert torch.equal(other(x), model(x))
    model.double()
    assert (model.inverse(model(x.double())) - x.double()).abs().max() <= 1e-12


@pytest.mark.parametrize("std, bounded", [(None, True), (0.2, True), (0.5, False)])
def test_numpy_forward_equals_the_torch_module(std, bounded):
    """Default initialisation, redrawn weights, and weights large enough that the softmax needs its max
    shift (the fast path's other branch): float32 agreement within 1e-5 of the output's scale."""
    torch.manual_seed(5)
    model = ReversibleTransformer(128)  # the reference geometry: depth 6, 8 heads
    if std is not None:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.normal_(0.0, std)
    fast = NumpyReversible(model)
    assert all(layer.bounded == bounded for layer in fast.layers)
    generator = torch.Generator().manual_seed(6)
    for batch in (1, 2, 5, 33):
        x = torch.randn(batch, 256, generator=generator)
        with torch.no_grad():
            expected = model(x).numpy()
        scale = max(1.0, float(np.abs(expected).max()))
        assert np.abs(fast(x.numpy()) - expected).max() <= 1e-5 * scale
