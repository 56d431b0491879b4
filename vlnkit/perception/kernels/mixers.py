"""Token-mixer registry: the attention a transformer layer uses, chosen by name from its config.

Every mixer is an ``nn.Module`` whose ``forward(q, k, v)`` takes per-head queries, keys and values
[B, H, N, D] (values may have their own last dim E) and returns the mixed values [B, H, N, E]. Projections,
head splitting and the output projection stay in the transformer; only the token mixing is swapped::

    mixer = create_token_mixer(cfg.mixer.name, **cfg.mixer.params)   # e.g. name="lightning", num_heads=8
    out = mixer(q, k, v)

Registered names: ``softmax`` (SDPA), ``lightning``, ``longgen``, ``anchor``, ``paro``, ``sparsifiner``, and the
relaxed variants of "Deconstructing Attention" (:mod:`.deconstructed`): ``mlp`` (no token mixing), ``taylor``
(2nd-order Taylor kernel, "Approx") and ``key_only`` (key-position-only scores, "Non-approx").
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention.flex_attention import BlockMask

from .anchor import AnchorConfig, anchor_attention
from .deconstructed import KeyOnlyMixer, MLPMixer, TaylorMixer
from .lightning import lightning_attn, transnormer_slopes
from .longgen import longgen_attention, longgen_block_mask, longgen_layer_schedule
from .paro import ParoPlan, calibrate_paro, paro_attention
from .sparsifiner import (
    AttentionMode,
    MaskPredictor,
    SparsifinerAttentionOutput,
    attention_budget,
    check_mode,
    sparsifiner_attention,
)

TOKEN_MIXERS: dict[str, type[nn.Module]] = {}


def register_token_mixer(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a mixer to :data:`TOKEN_MIXERS` under ``name``."""

    def register(cls: type[nn.Module]) -> type[nn.Module]:
        if name in TOKEN_MIXERS:
            raise ValueError(f"token mixer {name!r} is already registered")
        TOKEN_MIXERS[name] = cls
        return cls

    return register


def create_token_mixer(name: str, **cfg: Any) -> nn.Module:
    """Build the registered mixer ``name`` with keyword config ``cfg`` (see each mixer's docstring)."""
    if name not in TOKEN_MIXERS:
        raise KeyError(f"unknown token mixer {name!r}; registered: {sorted(TOKEN_MIXERS)}")
    return TOKEN_MIXERS[name](**cfg)


def available_token_mixers() -> list[str]:
    """Names of the registered mixers."""
    return sorted(TOKEN_MIXERS)


@register_token_mixer("softmax")
class SoftmaxMixer(nn.Module):
    """Dense softmax attention through SDPA (flash/efficient kernels on CUDA).

    Config: ``causal`` (default True), ``scale`` (default 1/sqrt(D)).
    """

    def __init__(self, causal: bool = True, scale: float | None = None) -> None:
        super().__init__()
        self.causal = causal
        self.scale = scale

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=self.scale)


@register_token_mixer("lightning")
class LightningMixer(nn.Module):
    """Lightning attention (causal linear attention with per-head decay, no softmax).

    Config: ``num_heads``; ``layer_idx`` and ``num_layers`` for the TransNormerLLM slope schedule, or explicit
    ``slopes`` (decay rates s, one per head); ``chunk_size``. The decay rates are a buffer, not learned.
    ``forward(q, k, v, initial_state=None, output_final_state=False)`` streams like :func:`lightning_attn`.
    """

    def __init__(
        self,
        num_heads: int,
        layer_idx: int = 0,
        num_layers: int = 1,
        slopes: list[float] | None = None,
        chunk_size: int = 64,
    ) -> None:
        super().__init__()
        if slopes is None:
            rates = transnormer_slopes(num_heads, layer_idx, num_layers)
        else:
            rates = torch.as_tensor(slopes, dtype=torch.float32)
            if rates.shape != (num_heads,):
                raise ValueError(f"need {num_heads} slopes, got {tuple(rates.shape)}")
        self.register_buffer("s", rates, persistent=False)
        self.chunk_size = chunk_size

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, initial_state: Tensor | None = None, output_final_state: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        return lightning_attn(q, k, v, self.s, initial_state, output_final_state, chunk_size=self.chunk_size)


@register_token_mixer("longgen")
class LongGenMixer(nn.Module):
    """LongGen hybrid attention: layers in the middle third are dense causal (SDPA), the others sparse.

    Config: ``layer_idx``, ``num_layers``, ``full_fraction`` (1/3) place the layer in the schedule;
    ``pattern`` ("sink_window" or "strided") with ``sink``, ``window`` or ``block``, ``local_blocks``,
    ``stride``; ``block_size`` of the block mask (128 on CUDA). Block masks are built once per length.
    """

    def __init__(
        self,
        layer_idx: int = 0,
        num_layers: int = 1,
        full_fraction: float = 1.0 / 3.0,
        pattern: Literal["sink_window", "strided"] = "sink_window",
        block_size: int = 128,
        scale: float | None = None,
        **pattern_params: int,
    ) -> None:
        super().__init__()
        self.full = longgen_layer_schedule(num_layers, full_fraction)[layer_idx] == "full"
        self.pattern = pattern
        self.block_size = block_size
        self.scale = scale
        self.pattern_params = pattern_params
        self._masks: dict[tuple[int, str], BlockMask] = {}

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if self.full:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        key = (q.shape[2], str(q.device))
        if key not in self._masks:
            self._masks[key] = longgen_block_mask(
                self.pattern, q.shape[2], q.device, self.block_size, **self.pattern_params
            )
        return longgen_attention(q, k, v, self._masks[key], scale=self.scale)


@register_token_mixer("anchor")
class AnchorMixer(nn.Module):
    """Causal AnchorAttention (dynamic stripe sparsity for long prefill).

    Config: the fields of :class:`AnchorConfig` (``group_size``, ``block_size``, ``init_tokens``, ``theta``,
    ``scale``). The sequence length must be a multiple of ``block_size``.
    """

    def __init__(self, **cfg: Any) -> None:
        super().__init__()
        self.cfg = AnchorConfig(**cfg)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return anchor_attention(q, k, v, self.cfg)


@register_token_mixer("paro")
class ParoMixer(nn.Module):
    """PAROAttention for visual tokens (bidirectional): per-head token order, static block mask, INT8 QK.

    Config: ``grid`` (frames, height, width), ``n_text``, ``block_size``, ``density``, ``quantize``,
    ``rows_per_block`` (calibration sampling), ``scale``. Call :meth:`calibrate` with calibration q, k once
    (or set ``plan``) before the first forward.
    """

    def __init__(
        self,
        grid: tuple[int, int, int],
        n_text: int = 0,
        block_size: int = 128,
        density: float = 0.3,
        quantize: bool = True,
        rows_per_block: int | None = None,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.n_text = n_text
        self.block_size = block_size
        self.density = density
        self.quantize = quantize
        self.rows_per_block = rows_per_block
        self.scale = scale
        self.plan: ParoPlan | None = None

    @torch.no_grad()
    def calibrate(self, q: Tensor, k: Tensor) -> ParoPlan:
        """Fit the per-head orders and block masks on calibration q, k [B, H, N, D]; returns the plan."""
        self.plan = calibrate_paro(q, k, self.grid, self.n_text, self.block_size, self.density, self.scale,
                                   self.rows_per_block)
        return self.plan

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if self.plan is None:
            raise RuntimeError("ParoMixer needs a plan: call calibrate(q, k) on calibration data first")
        return paro_attention(q, k, v, self.plan, quantize=self.quantize, scale=self.scale)


@register_token_mixer("sparsifiner")
class SparsifinerMixer(nn.Module):
    """Sparsifiner attention (bidirectional): a learned per-instance mask keeps ``⌈keep_rate · N⌉`` keys per
    non-CLS query (CLS row dense); see :func:`~vlnkit.perception.kernels.sparsifiner.sparsifiner_attention`.

    Config: ``num_tokens`` (the fixed N, CLS first), ``num_heads``, ``head_dim``; ``keep_rate`` (0.25),
    ``reduce_n_factor`` (6), ``reduce_c_factor`` (2), ``basis_threshold`` (0.02), ``basis_topk`` (8) of its
    :class:`MaskPredictor` (``mask_predictor``, learned); ``mode`` ("sparse", or "dense" for the
    attention-reconstruction phase); ``scale`` (default 1/sqrt(D)). :meth:`attend` also returns the attention map,
    the predictor's approximation and the mask for the reconstruction loss. Dense masked reference (CPU): the
    masked attention costs as much as dense attention.
    """

    def __init__(
        self,
        num_tokens: int,
        num_heads: int,
        head_dim: int,
        keep_rate: float = 0.25,
        reduce_n_factor: int = 6,
        reduce_c_factor: int = 2,
        basis_threshold: float = 0.02,
        basis_topk: int = 8,
        mode: AttentionMode = "sparse",
        scale: float | None = None,
    ) -> None:
        super().__init__()
        check_mode(mode)
        attention_budget(keep_rate, num_tokens)
        self.mask_predictor = MaskPredictor(num_tokens, head_dim, num_heads, reduce_n_factor, reduce_c_factor,
                                            basis_threshold, basis_topk)
        self.keep_rate = keep_rate
        self.mode = mode
        self.scale = scale

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> SparsifinerAttentionOutput:
        """Mixed values with the attention map, approximation and mask of this call."""
        return sparsifiner_attention(q, k, v, self.mask_predictor, self.keep_rate, self.mode, self.scale)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return self.attend(q, k, v).out


register_token_mixer("mlp")(MLPMixer)
register_token_mixer("taylor")(TaylorMixer)
register_token_mixer("key_only")(KeyOnlyMixer)
