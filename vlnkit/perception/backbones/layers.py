"""Small building blocks shared by the backbone families (the helpers timm would provide)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``p`` while training."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Module form of :func:`drop_path`."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.p, self.training)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor``, never more than 10% below ``value`` (MobileNet rule)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def init_weights_trunc_normal(module: nn.Module, std: float = 0.02) -> None:
    """ViT-style initialisation: truncated-normal Linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model`` (trainable or not; buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model: nn.Module, *inputs: Tensor) -> float:
    """Multiply-accumulates of one forward pass, in G, as the papers count them: FLOPs of conv / matmul /
    bmm / einsum from :class:`torch.utils.flop_counter.FlopCounterMode`, divided by 2."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*inputs)
    return counter.get_total_flops() / 2e9


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Weight and bias of the single convolution that equals ``bn(conv(x))`` with ``bn`` in eval mode (its
    running statistics), for re-parameterising a model for deployment. Computed in float64 and returned in the
    convolution's dtype: ``w' = w · γ / sqrt(var + eps)``, ``b' = β + (b − mean) · γ / sqrt(var + eps)``."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    conv_bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
    bias = bn.bias.double() + (conv_bias - bn.running_mean.double()) * scale
    return weight.to(conv.weight.dtype), bias.to(conv.weight.dtype)
