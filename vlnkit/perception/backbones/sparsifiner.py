"""Sparsifiner (CVPR 2023): a DeiT whose attention layers each learn an instance-dependent sparse connectivity.

Every layer has a :class:`~vlnkit.perception.kernels.sparsifiner.MaskPredictor` that approximates the attention
map from (q, k) at low rank (``Â = α B``); in ``"sparse"`` mode each non-CLS query attends to its
``⌈keep_rate · N⌉`` keys of largest ``Â`` (CLS row dense, mask detached). Training has two phases
(:func:`set_training_phase`):

- ``"attn_recon"``: only the mask predictors train, the model runs ``"dense"`` attention and
  :func:`attention_reconstruction_loss` fits ``Â`` to a frozen dense teacher's maps;
- ``"cls_distill"``: the mask predictors are frozen, the rest fine-tunes in ``"sparse"`` mode with
  :func:`distillation_loss` (CE + KL to the teacher's logits + MSE to its final patch tokens).

Registered: ``sparsifiner_s`` (DeiT-S + 12 mask predictors, 22,251,880 parameters with the 1000-class head) and
``sparsifiner_tiny`` (a 64×64 input, N = 17, for tests). The one feature map is the final patch tokens at stride
16 (CLS dropped) as NCHW; the logits come from the CLS token. The token count N is fixed by ``P_n``/``P_back``,
so the input must be ``img_size × img_size``. Token pruning (off in the default config) is not implemented.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlnkit.perception.attention.hook import AttentionSite
from vlnkit.perception.backbones.base import Backbone, FeatureInfo
from vlnkit.perception.backbones.layers import DropPath, init_weights_trunc_normal
from vlnkit.perception.backbones.registry import register_model
from vlnkit.perception.kernels.sparsifiner import (
    AttentionMode,
    MaskPredictor,
    SparsifinerAttentionOutput,
    attention_budget,
    check_mode,
    sparsifiner_attention,
)

TrainingPhase = Literal["attn_recon", "cls_distill"]


class SparsifinerAttention(nn.Module, AttentionSite):
    """Multi-head self-attention with a per-layer :class:`MaskPredictor` (``mask_predictor``): qkv projection,
    :func:`sparsifiner_attention` on the heads, output projection. An attention site of
    :mod:`vlnkit.perception.attention`."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_tokens: int,
        keep_rate: float,
        qkv_bias: bool = True,
        reduce_n_factor: int = 6,
        reduce_c_factor: int = 2,
        basis_threshold: float = 0.02,
        basis_topk: int = 8,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} must be divisible by num_heads {num_heads}")
        attention_budget(keep_rate, num_tokens)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.keep_rate = keep_rate
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.mask_predictor = MaskPredictor(num_tokens, self.head_dim, num_heads, reduce_n_factor,
                                            reduce_c_factor, basis_threshold, basis_topk)

    def split_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-head q, k, v [B, H, N, d] of tokens x [B, N, C]."""
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def forward(self, x: Tensor, mode: AttentionMode) -> tuple[Tensor, SparsifinerAttentionOutput]:
        """Attention output [B, N, C] and the per-head attention record of this call."""
        q, k, v = self.split_heads(x)
        result = sparsifiner_attention(q, k, v, self.mask_predictor, self.keep_rate, mode, site=self)
        b, _, n, _ = result.out.shape
        return self.proj(result.out.transpose(1, 2).reshape(b, n, -1)), result


class SparsifinerBlock(nn.Module):
    """Pre-norm ViT block ``x + Attn(LN(x))``, ``x + MLP(LN(x))`` with :class:`SparsifinerAttention`."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_tokens: int,
        keep_rate: float,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        **predictor: Any,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SparsifinerAttention(dim, num_heads, num_tokens, keep_rate, qkv_bias, **predictor)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, mode: AttentionMode) -> tuple[Tensor, SparsifinerAttentionOutput]:
        """Block output [B, N, C] and the attention record of this call."""
        attn_out, record = self.attn(self.norm1(x), mode)
        x = x + self.drop_path(attn_out)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, record


@dataclass
class SparsifinerOutput:
    """One forward pass with everything the losses need.

    ``tokens`` [B, N, C]: final (normed) tokens, CLS first; ``logits`` [B, classes] or None without a head;
    per layer: ``approximations`` ``Â_l`` [B, H, N-1, N], ``attentions`` ``A_l`` [B, H, N, N] (the dense maps in
    "dense" mode, the teacher targets), ``masks`` ``M_l`` [B, H, N, N] (None in "dense" mode).
    """

    tokens: Tensor
    logits: Tensor | None
    approximations: list[Tensor]
    attentions: list[Tensor]
    masks: list[Tensor | None]

    @property
    def patch_tokens(self) -> Tensor:
        """The final patch tokens [B, N-1, C] (CLS dropped), the target of the token distillation."""
        return self.tokens[:, 1:]


class Sparsifiner(Backbone):
    """DeiT (patch embedding, CLS token, learned position embedding, pre-norm blocks) with Sparsifiner attention.

    Args:
        img_size: side of the square input; fixes N = (img_size / patch_size)² + 1.
        patch_size: patch side, the stride of the feature map.
        in_chans, num_classes, embed_dim, depth, num_heads, mlp_ratio, qkv_bias, drop_path_rate: the DeiT
            configuration (``num_classes=0``: no head, ``forward`` returns the feature map).
        keep_rate: fraction of keys each non-CLS query keeps in "sparse" mode (``ATTN_KEEP_RATE``).
        reduce_n_factor, reduce_c_factor, basis_threshold, basis_topk: the mask predictor's ``n_down = N //
            reduce_n_factor``, ``c = head_dim // reduce_c_factor``, ``BASIS_THRESHOLD``, ``BASIS_COEF.TOPK``.
        mode: "sparse" (masked attention) or "dense" (teacher / attention-reconstruction phase); change it
            with :meth:`set_mode`, never inside ``forward``.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        keep_rate: float = 0.25,
        reduce_n_factor: int = 6,
        reduce_c_factor: int = 2,
        basis_threshold: float = 0.02,
        basis_topk: int = 8,
        mode: AttentionMode = "sparse",
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} must be a multiple of patch_size {patch_size}")
        check_mode(mode)
        self.mode: AttentionMode = mode
        self.img_size = img_size
        self.grid = img_size // patch_size
        self.num_tokens = self.grid**2 + 1
        self.num_classes = num_classes
        self.default_input_size = (img_size, img_size)
        self.feature_info = [FeatureInfo(stride=patch_size, channels=embed_dim)]
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, embed_dim))
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        predictor = {"reduce_n_factor": reduce_n_factor, "reduce_c_factor": reduce_c_factor,
                     "basis_threshold": basis_threshold, "basis_topk": basis_topk}
        self.blocks = nn.ModuleList(
            SparsifinerBlock(embed_dim, num_heads, self.num_tokens, keep_rate, mlp_ratio, qkv_bias, rate, **predictor)
            for rate in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else None
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_weights_trunc_normal)

    def set_mode(self, mode: AttentionMode) -> None:
        """Switch between "dense" (teacher / recon phase) and "sparse" (masked) attention."""
        check_mode(mode)
        self.mode = mode

    def forward_maps(self, x: Tensor) -> SparsifinerOutput:
        """Final tokens, logits and the per-layer approximations, attention maps and masks of images x."""
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"Sparsifiner has a fixed token count N = {self.num_tokens} (P_n, P_back are "
                             f"N x n_down): expected a {self.img_size}x{self.img_size} input, got "
                             f"{x.shape[-2]}x{x.shape[-1]}")
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        approximations: list[Tensor] = []
        attentions: list[Tensor] = []
        masks: list[Tensor | None] = []
        for block in self.blocks:
            tokens, record = block(tokens, self.mode)
            approximations.append(record.approximation)
            attentions.append(record.attn)
            masks.append(record.mask)
        tokens = self.norm(tokens)
        logits = self.head(tokens[:, 0]) if self.head is not None else None
        return SparsifinerOutput(tokens, logits, approximations, attentions, masks)

    def tokens_to_features(self, tokens: Tensor) -> list[Tensor]:
        """The feature map [B, C, H/16, W/16] of final tokens [B, N, C] (CLS dropped)."""
        b, _, c = tokens.shape
        return [tokens[:, 1:].transpose(1, 2).reshape(b, c, self.grid, self.grid)]

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """One feature map: the final patch tokens at stride ``patch_size`` as NCHW."""
        return self.tokens_to_features(self.forward_maps(x).tokens)

    def forward_head(self, features: list[Tensor] | Tensor) -> Tensor:
        """Class logits from the CLS token of the final tokens [B, N, C] (:attr:`SparsifinerOutput.tokens`).
        The feature maps of :meth:`forward_features` have no CLS token, so they are refused."""
        if self.head is None:
            raise NotImplementedError("Sparsifiner was built with num_classes=0: it has no classifier")
        if not isinstance(features, Tensor) or features.ndim != 3:
            raise ValueError("Sparsifiner classifies from the CLS token: pass the final tokens [B, N, C] "
                             "(forward_maps(x).tokens), not the feature maps (they have the CLS token dropped)")
        return self.head(features[:, 0])

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        """Logits from the CLS token when the model has a classifier, else the feature map."""
        out = self.forward_maps(x)
        return out.logits if out.logits is not None else self.tokens_to_features(out.tokens)


def attention_reconstruction_loss(
    approximations: Sequence[Tensor], teacher_attentions: Sequence[Tensor], weight: float = 0.01
) -> Tensor:
    """Attention-reconstruction loss ``weight · mean_l Σ (Â_l − A^teacher_l[1:])²``: the sum of squared errors
    of each layer's approximation [B, H, N-1, N] against the teacher's dense map [B, H, N, N] without its CLS
    row (the teacher maps are detached), averaged over layers."""
    if len(approximations) != len(teacher_attentions) or not approximations:
        raise ValueError(f"need one teacher map per approximation, got {len(approximations)} approximations and "
                         f"{len(teacher_attentions)} teacher maps")
    errors = []
    for approx, teacher in zip(approximations, teacher_attentions):
        target = teacher.detach()[:, :, 1:]
        if approx.shape != target.shape:
            raise ValueError(f"approximation {tuple(approx.shape)} does not match the teacher map without its CLS "
                             f"row {tuple(target.shape)}")
        errors.append(F.mse_loss(approx, target, reduction="sum"))
    return weight * torch.stack(errors).mean()


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    student_patch_tokens: Tensor,
    teacher_patch_tokens: Tensor,
    kl_weight: float = 0.5,
    token_weight: float = 0.5,
) -> Tensor:
    """The "cls_distill" loss ``CE(student, labels) + kl_weight · KL + token_weight · MSE(tokens)``.

    KL is ``F.kl_div(log_softmax(student), log_softmax(teacher), reduction="batchmean", log_target=True)``, i.e.
    ``Σ p_t (log p_t − log p_s) / B``; MSE is the mean squared error of the final patch tokens (CLS dropped,
    :attr:`SparsifinerOutput.patch_tokens`). The teacher's logits and tokens are detached.
    """
    ce = F.cross_entropy(student_logits, labels)
    kl = F.kl_div(student_logits.log_softmax(dim=-1), teacher_logits.detach().log_softmax(dim=-1),
                  reduction="batchmean", log_target=True)
    mse = F.mse_loss(student_patch_tokens, teacher_patch_tokens.detach())
    return ce + kl_weight * kl + token_weight * mse


def set_training_phase(model: Sparsifiner, phase: TrainingPhase) -> list[str]:
    """Set ``requires_grad`` and the attention mode for a training phase; returns the trainable parameter names.

    ``"attn_recon"``: only parameters named ``mask_predictor`` train, mode "dense"; ``"cls_distill"``: every
    parameter but the mask predictors trains, mode "sparse".
    """
    if phase not in ("attn_recon", "cls_distill"):
        raise ValueError(f"phase must be 'attn_recon' or 'cls_distill', got {phase!r}")
    recon = phase == "attn_recon"
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(("mask_predictor" in name) == recon)
        if param.requires_grad:
            trainable.append(name)
    model.set_mode("dense" if recon else "sparse")
    return trainable


@register_model("sparsifiner_s")
def sparsifiner_s(**kwargs: Any) -> Sparsifiner:
    """Sparsifiner-S: DeiT-S (224², patch 16, dim 384, depth 12, 6 heads) + one mask predictor per layer
    (n_down 32, c 32, keep 0.25 → 50 keys per query, basis threshold 0.02, top-8 coefficients)."""
    return Sparsifiner(**kwargs)


@register_model("sparsifiner_tiny")
def sparsifiner_tiny(**kwargs: Any) -> Sparsifiner:
    """A small Sparsifiner for tests: 64² input (N = 17), dim 32, depth 2, 2 heads, n_down 17 // 2 = 8,
    top-4 coefficients (≤ n_down), keep 0.25 → 5 keys per query, 10 classes."""
    cfg: dict[str, Any] = {"img_size": 64, "num_classes": 10, "embed_dim": 32, "depth": 2, "num_heads": 2,
                           "reduce_n_factor": 2, "basis_topk": 4}
    cfg.update(kwargs)
    return Sparsifiner(**cfg)
