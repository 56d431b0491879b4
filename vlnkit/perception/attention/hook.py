"""The attention capture-and-intervene hook: one function every vlnkit attention calls, and probes.

Every attention module of vlnkit computes its token mixing through :func:`attend`, or, where its math is
its own (windowed, axial, reversed attention), passes its logits, probabilities and head outputs through
:func:`probe_logits`, :func:`probe_probs` and :func:`probe_heads`. With no probe attached to the module,
:func:`attend` is SDPA, the same call as before the hook existed, and the ``probe_*`` functions return
their input, so outputs are bitwise unchanged. While a :class:`Probe` is attached (by :func:`attach`, a
context manager that selects modules by name pattern), :func:`attend` runs an eager path that exposes, per
head, the pre-softmax logits after the mask, the probabilities and the head outputs before the output
projection, and lets the probe edit each of them in that order (``on_logits`` -> softmax in float32 ->
``on_probs`` -> dropout -> ``@ v`` -> ``on_heads``). Each call also carries the module's query input and
a token segment map (:class:`AttentionCall`) where the module knows them.

Sites (modules that :func:`attach` can select) are every ``batch_first`` :class:`torch.nn.MultiheadAttention`
and the :class:`AttentionSite` modules:

- torch's attention, as the policy (with segment maps), its instruction encoder and OAT use it: while a
  probe is attached, :func:`attach` turns the module into a :class:`HookedMultiheadAttention` (and its
  :class:`torch.nn.TransformerEncoderLayer` into a :class:`HookedEncoderLayer`, whose fused fast path would
  bypass it) and back on leaving, so without probes these are torch's own modules, at torch's speed;
- the reversible LTM Transformer's layers (whose numpy fast path steps aside while probed);
- the backbones' attentions: CSWin's ``LePEAttention``, PP-MobileSeg's ``StridedSeaAttention``,
  DependencyViT's ``ReversedAttention``, Sparsifiner's ``SparsifinerAttention``; the readout head's
  ``ReadoutAttention``;
- the attention modules of a ``transformers`` model (SmolLM2), through :mod:`vlnkit.perception.attention.hf`.

Not sites: the token mixers of :mod:`vlnkit.perception.kernels.mixers` (lightning, longgen, anchor, paro and
the deconstructed variants; linear, block-sparse or fused) form no softmax map over tokens to expose, and
OverLoCK's dynamic kernels are per-pixel convolution weights; the tiny CLIP has no attention.

    with attach(policy, "blocks.*.cross_attn", capture := Capture()):
        policy.step(...)
    capture.calls["blocks.0.cross_attn"][0].probs     # (B, heads, queries, latents)
"""

from __future__ import annotations

import fnmatch
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PROBES_ATTR = "_vlnkit_probes"
"""Attribute of a module that holds the probes attached to it (absent when none)."""


@dataclass
class AttentionCall:
    """What a probe knows about one attention call.

    ``site`` is the module's name in the model :func:`attach` was given; ``inputs`` the module's query input
    ``(B, N_q, C)`` and ``key_inputs`` its key input ``(B, N_k, C)`` (after the layer's pre-norm; None where
    the module has none to give); ``key_segments``
    and ``query_segments`` name token ranges of the keys and the queries (e.g. ``instruction``,
    ``view0`` ... ``view7``, ``memory``), empty where the module does not know them.
    """

    site: str
    inputs: Tensor | None = None
    key_inputs: Tensor | None = None
    key_segments: dict[str, slice] = field(default_factory=dict)
    query_segments: dict[str, slice] = field(default_factory=dict)


class Probe:
    """Sees, and may edit, the attention calls of the sites it is attached to.

    Override any hook; returning a tensor replaces the value (same shape), returning None keeps it. Shapes:
    logits and probabilities ``(B, H, N_q, N_k)``, head outputs ``(B, H, N_q, E)``. Masked logits are
    ``-inf`` when ``on_logits`` sees them.
    """

    def on_logits(self, call: AttentionCall, logits: Tensor) -> Tensor | None:
        """The scaled scores after the mask, before softmax."""
        return None

    def on_probs(self, call: AttentionCall, probs: Tensor) -> Tensor | None:
        """The attention probabilities (rows sum to 1 unless an earlier probe changed that)."""
        return None

    def on_heads(self, call: AttentionCall, heads: Tensor) -> Tensor | None:
        """The per-head outputs ``probs @ v`` before heads are merged and projected."""
        return None


class Capture(Probe):
    """Records every call's logits, probabilities and head outputs (detached), per site, in call order."""

    @dataclass
    class Record:
        """One captured call."""

        call: AttentionCall
        logits: Tensor | None = None
        probs: Tensor | None = None
        heads: Tensor | None = None

    def __init__(self) -> None:
        self.calls: dict[str, list[Capture.Record]] = defaultdict(list)

    def on_logits(self, call: AttentionCall, logits: Tensor) -> None:
        self.calls[call.site].append(Capture.Record(call, logits=logits.detach()))

    def _current(self, call: AttentionCall, stage: str) -> Capture.Record:
        """The record of this call: the site's last one unless it already holds ``stage`` (a module may
        report only some stages)."""
        records = self.calls[call.site]
        if not records or getattr(records[-1], stage) is not None:
            records.append(Capture.Record(call))
        return records[-1]

    def on_probs(self, call: AttentionCall, probs: Tensor) -> None:
        self._current(call, "probs").probs = probs.detach()

    def on_heads(self, call: AttentionCall, heads: Tensor) -> None:
        self._current(call, "heads").heads = heads.detach()


class AttentionSite:
    """Marker base of the modules :func:`attach` may select; their attention goes through :func:`attend`."""


def probes_of(module: nn.Module | None) -> list[Probe]:
    """The probes attached to ``module`` (empty when none, or when ``module`` is None). A plain dict lookup:
    ``nn.Module.__getattr__`` on a missing name costs microseconds, and this runs on every attention call."""
    return module.__dict__.get(PROBES_ATTR) or [] if module is not None else []


def attend(
    module: nn.Module,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    attn_mask: Tensor | None = None,
    key_padding_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    inputs: Tensor | None = None,
    key_inputs: Tensor | None = None,
    key_segments: dict[str, slice] | None = None,
    query_segments: dict[str, slice] | None = None,
) -> Tensor:
    """Attention of per-head ``q`` ``(B, H, N_q, D)``, ``k`` ``(B, H, N_k, D)``, ``v`` ``(B, H, N_k, E)`` for
    the site ``module``: ``(B, H, N_q, E)``.

    ``attn_mask`` follows SDPA (boolean True = may attend, or an additive float mask broadcastable to
    ``(B, H, N_q, N_k)``); ``key_padding_mask`` ``(B, N_k)`` is True at padding keys; ``is_causal`` aligns
    queries to the end of the keys. Without probes this is ``F.scaled_dot_product_attention`` (the key
    padding folded into a boolean mask), otherwise the eager path of the module docstring, which applies
    ``dropout_p`` only while ``module.training``.
    """
    probes = probes_of(module)
    n_q, n_k = q.shape[-2], k.shape[-2]
    if not probes:
        if is_causal and (n_q != n_k or attn_mask is not None or key_padding_mask is not None):
            attn_mask = _with(attn_mask, _causal(n_q, n_k, q.device))   # SDPA's own is_causal is top-left
            is_causal = False
        if key_padding_mask is not None:
            attn_mask = _with(attn_mask, ~key_padding_mask[:, None, None, :])
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                                              scale=scale)
    call = AttentionCall(_site_name(module), inputs, inputs if key_inputs is None else key_inputs, key_segments or {},
                         query_segments or {})
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    logits = (q @ k.transpose(-1, -2)).float() * scale
    if is_causal:
        logits = logits.masked_fill(~_causal(n_q, n_k, q.device), float("-inf"))
    if attn_mask is not None:
        logits = logits.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else logits + attn_mask
    if key_padding_mask is not None:
        logits = logits.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    logits = probe_logits(module, logits, call)
    probs = probe_probs(module, logits.softmax(dim=-1).nan_to_num(0.0).to(q.dtype), call)  # no visible key: 0
    if dropout_p and module.training:
        probs = F.dropout(probs, dropout_p)
    return probe_heads(module, probs @ v, call)


def _site_name(module: nn.Module) -> str:
    return getattr(module, "_vlnkit_site", type(module).__name__)


def _run(stage: str, module: nn.Module | None, value: Tensor, call: AttentionCall | None) -> Tensor:
    """Pass ``value`` through the ``stage`` hook of each probe on ``module``, in order."""
    probes = probes_of(module)
    if not probes:
        return value
    call = call or AttentionCall(_site_name(module))
    for probe in probes:
        value = _edit(getattr(probe, stage)(call, value), value, stage.removeprefix("on_"))
    return value


def probe_logits(module: nn.Module | None, logits: Tensor, call: AttentionCall | None = None) -> Tensor:
    """``logits`` as the probes on ``module`` leave them (``logits`` itself when none is attached): for
    attention modules with their own math, called on the masked pre-softmax scores."""
    return _run("on_logits", module, logits, call)


def probe_probs(module: nn.Module | None, probs: Tensor, call: AttentionCall | None = None) -> Tensor:
    """``probs`` as the probes on ``module`` leave them; called on the attention probabilities."""
    return _run("on_probs", module, probs, call)


def probe_heads(module: nn.Module | None, heads: Tensor, call: AttentionCall | None = None) -> Tensor:
    """``heads`` as the probes on ``module`` leave them; called on the per-head outputs before the heads
    are merged and projected."""
    return _run("on_heads", module, heads, call)


def _causal(n_q: int, n_k: int, device: torch.device) -> Tensor:
    """``(n_q, n_k)`` True where query i may see key j: queries aligned to the end of the keys."""
    return torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril(n_k - n_q)


def _with(mask: Tensor | None, keep: Tensor) -> Tensor:
    """``mask`` (SDPA convention) with the positions outside boolean ``keep`` also masked."""
    if mask is None:
        return keep
    return mask & keep if mask.dtype == torch.bool else mask.masked_fill(~keep, float("-inf"))


def _edit(new: Tensor | None, old: Tensor, what: str) -> Tensor:
    """A probe's replacement for ``old`` (``old`` when it returned None), checked for shape."""
    if new is None:
        return old
    if new.shape != old.shape:
        raise ValueError(f"a probe returned {what} of shape {tuple(new.shape)}; expected {tuple(old.shape)}")
    return new


def sites(model: nn.Module) -> dict[str, nn.Module]:
    """Every attention site inside ``model`` by its module name (``""`` for ``model`` itself)."""
    from vlnkit.perception.attention.hf import is_hf_attention

    return {name: m for name, m in model.named_modules()
            if isinstance(m, (AttentionSite, nn.MultiheadAttention)) and getattr(m, "batch_first", True)
            or is_hf_attention(m)}


@contextmanager
def attach(model: nn.Module, pattern: str, *probes: Probe) -> Iterator[list[str]]:
    """Attach ``probes`` to the sites of ``model`` whose names match the ``fnmatch`` ``pattern`` (``"*"``:
    all) for the ``with`` block; yields the matched names. Raises ValueError, naming the sites, when
    nothing matches. Attachments nest; leaving the block removes exactly these probes."""
    found = sites(model)
    chosen = {name: m for name, m in found.items() if fnmatch.fnmatchcase(name, pattern)}
    if not chosen:
        raise ValueError(f"no attention site of {type(model).__name__} matches {pattern!r}; sites: {sorted(found)}")
    from vlnkit.perception.attention.hf import probing

    swapped = _swap_in(model, chosen.values())
    with probing(model, chosen):
        for name, m in chosen.items():
            setattr(m, PROBES_ATTR, [*probes_of(m), *probes])
            m._vlnkit_site = name
        try:
            yield sorted(chosen)
        finally:
            for m in chosen.values():
                left = probes_of(m)[: len(probes_of(m)) - len(probes)]
                if left:
                    setattr(m, PROBES_ATTR, left)
                else:
                    delattr(m, PROBES_ATTR)
            for m, cls in swapped:
                m.__class__ = cls


def _swap_in(model: nn.Module, chosen: Iterable[nn.Module]) -> list[tuple[nn.Module, type]]:
    """Turn the chosen torch attentions into :class:`HookedMultiheadAttention` and their encoder layers into
    :class:`HookedEncoderLayer` (parameters untouched); returns what was swapped, to swap back."""
    chosen = list(chosen)
    swapped: list[tuple[nn.Module, type]] = []
    for m in model.modules():
        if type(m) is nn.TransformerEncoderLayer and any(m.self_attn is c for c in chosen):
            swapped.append((m, type(m)))
            m.__class__ = HookedEncoderLayer
    for m in chosen:
        if type(m) is nn.MultiheadAttention:
            swapped.append((m, type(m)))
            m.__class__ = HookedMultiheadAttention
    return swapped


class HookedMultiheadAttention(nn.MultiheadAttention, AttentionSite):
    """:class:`torch.nn.MultiheadAttention` (``batch_first`` only, same parameters and state-dict keys) whose
    attention goes through :func:`attend` while probes are attached; without them it is
    ``nn.MultiheadAttention.forward`` itself. :func:`attach` turns a torch attention into one for the time a
    probe sits on it. The owning model may give it a ``segment_map`` attribute, a callable returning the
    ``(key_segments, query_segments)`` of the current call, for the probes' :class:`AttentionCall`."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__(embed_dim, num_heads, dropout=dropout, batch_first=True)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        if not probes_of(self):
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                   attn_mask=attn_mask, average_attn_weights=average_attn_weights,
                                   is_causal=is_causal)
        b, n_q, d = query.shape
        h = self.num_heads
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)

        def heads(x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
            return F.linear(x, w, bias).reshape(x.shape[0], x.shape[1], h, d // h).transpose(1, 2)

        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = ~attn_mask              # nn.MultiheadAttention: True = may not attend
        if key_padding_mask is not None and key_padding_mask.dtype != torch.bool:
            key_padding_mask = key_padding_mask.isinf()
        captured: dict[str, Tensor] = {}
        recorder = _ProbsRecorder(captured) if need_weights else None
        if recorder is not None:
            setattr(self, PROBES_ATTR, [*probes_of(self), recorder])
        try:
            segment_map = self.__dict__.get("segment_map")
            key_segments, query_segments = segment_map() if segment_map is not None else ({}, {})
            out = attend(self, heads(query, w_q, b_q), heads(key, w_k, b_k), heads(value, w_v, b_v),
                         attn_mask=attn_mask, key_padding_mask=key_padding_mask, is_causal=is_causal and attn_mask is None,
                         dropout_p=self.dropout, inputs=query, key_inputs=key, key_segments=key_segments,
                         query_segments=query_segments)
        finally:
            if recorder is not None:
                setattr(self, PROBES_ATTR, probes_of(self)[:-1])
        out = self.out_proj(out.transpose(1, 2).reshape(b, n_q, d))
        if not need_weights:
            return out, None
        probs = captured["probs"]
        return out, probs.mean(dim=1) if average_attn_weights else probs


class _ProbsRecorder(Probe):
    """Keeps the final probabilities of a call, for ``need_weights``."""

    def __init__(self, into: dict[str, Tensor]) -> None:
        self.into = into

    def on_probs(self, call: AttentionCall, probs: Tensor) -> None:
        self.into["probs"] = probs


class HookedEncoderLayer(nn.TransformerEncoderLayer):
    """:class:`torch.nn.TransformerEncoderLayer` while a probe sits on its ``self_attn`` (:func:`attach` swaps
    it in and out): it runs the layer's Python path, which the fused fast path would bypass."""

    def forward(self, src: Tensor, src_mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None,
                is_causal: bool = False) -> Tensor:
        if not probes_of(self.self_attn):
            return super().forward(src, src_mask=src_mask, src_key_padding_mask=src_key_padding_mask,
                                   is_causal=is_causal)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal))
        return self.norm2(x + self._ff_block(x))
