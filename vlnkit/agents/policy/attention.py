"""Training-free attention interventions on the policy agent's cross-attention, switched on by its config.

The ``attention`` block of ``configs/agent/policy.yaml`` names them (each null = off); all act on the
cross-attention of the decision token and the query slots to the latents (sites ``blocks.*.cross_attn``,
:mod:`vlnkit.perception.attention`):

- ``var``: VAR (:class:`~vlnkit.perception.attention.interventions.VAR`) with the given sink ``dims`` of the
  cross-attention's key inputs (the normalised latents; find them with
  :func:`~vlnkit.perception.attention.interventions.calibrate_sink_dimensions` on captured
  ``key_inputs``), ``tau`` (null: ``20 sqrt(D / 4096)``), ``p``,
  ``rho``, ``summ``; the visual tokens are the view tokens.
- ``vhr``: VHR. At an episode's first step the policy also runs on a null panorama (all-zero landmark features
  and links); per cross-attention layer, the heads whose output at the decision token moves most
  (:func:`~vlnkit.perception.attention.interventions.vhr_heads`) are multiplied by ``alpha`` for the episode.
- ``paint``: PAINT on the last layer: the decision token's logits on the "local" views (top 25% of the
  first layer's decision-token attention over the views, this step) get ``+ alpha |z|``, on the "summary"
  views (upper-IQR outliers of the last layer's attention at the previous step) ``+ beta |z|``.
- ``carve``: CARVE. Each step the decision token's attention over the views, averaged over heads and summed
  over layers, is contrasted with the same under a ``general`` instruction (``A / (A_general + lam)``); the
  views outside the ``carve_regions`` (top ``p``, ``k`` regions, the panorama's ends touching) lose their
  landmark features and the step is decided again (3 passes a step).
- ``mask``: ``{layer: [head, ...]}`` (a block index or a site name), heads whose outputs are zeroed
  (pruning).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import ExitStack
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vlnkit.agents.policy.model import FlamePolicy
from vlnkit.perception.attention import AttentionCall, Capture, Probe, attach
from vlnkit.perception.attention.interventions import (
    PAINT,
    VAR,
    HeadScale,
    carve_contrast,
    carve_regions,
    head_divergence,
    paint_logits,
    paint_tokens,
    segment_mask,
    vhr_heads,
)

CROSS = "blocks.*.cross_attn"
"""The sites the interventions act on."""

KNOWN = ("var", "vhr", "paint", "carve", "mask")

Decide = Callable[..., tuple[Tensor, Tensor]]
"""One policy decision ``decide(panorama, links, instruction=None) -> (logits, h_t)`` from a panorama
``(1, S, C)``, link bins ``(1, S)`` and, when given, other instruction slots than the episode's."""


class _PolicyPaint(Probe):
    """PAINT on the policy (see the module docstring): selects views from the first and last layers'
    decision-token attention and boosts them in the last layer's logits."""

    def __init__(self, first: str, last: str, alpha: float, beta: float) -> None:
        self.first, self.last, self.alpha, self.beta = first, last, alpha, beta
        self.local: Tensor | None = None
        self.summary: Tensor | None = None
        self.previous_late: np.ndarray | None = None

    def _views(self, call: AttentionCall, probs: Tensor) -> tuple[Tensor, np.ndarray]:
        views = segment_mask(call.key_segments, "view", probs.shape[-1], probs.device)
        return views, probs[0, :, 0][:, views].sum(0).detach().float().cpu().numpy()

    def on_probs(self, call: AttentionCall, probs: Tensor) -> None:
        views, attention = self._views(call, probs)
        if call.site == self.first:
            late = self.previous_late if self.previous_late is not None else attention
            local, summary = paint_tokens(attention, late)
            index = torch.nonzero(views).flatten()
            self.local = torch.zeros_like(views)
            self.local[index[torch.from_numpy(local)]] = True
            self.summary = torch.zeros_like(views)
            self.summary[index[torch.from_numpy(summary)]] = True
        elif call.site == self.last:
            self.previous_late = attention

    def on_logits(self, call: AttentionCall, logits: Tensor) -> Tensor | None:
        if call.site != self.last or self.local is None:
            return None
        return paint_logits(logits, self.local, self.summary, self.alpha, self.beta, row=0)


class PolicyAttention:
    """The interventions of one :class:`~vlnkit.agents.policy.agent.PolicyAgent` (see the module docstring),
    from the ``attention`` block of its config (None or all-null: none, and :meth:`decide` is the plain
    decision). ``encode`` turns a text into instruction slots (CARVE's general instruction needs it)."""

    def __init__(self, model: FlamePolicy, settings: Mapping[str, Any] | None,
                 encode: Callable[[str], Tensor] | None = None) -> None:
        settings = {k: v for k, v in dict(settings or {}).items() if v is not None}
        unknown = sorted(set(settings) - set(KNOWN))
        if unknown:
            raise ValueError(f"agent.attention: unknown intervention {unknown[0]!r}; expected one of {list(KNOWN)}")
        self.model, self.settings = model, settings
        layers = len(model.blocks)
        self.sites = [f"blocks.{i}.cross_attn" for i in range(layers)]
        heads = model.config.heads
        self.probes: list[Probe] = []
        if "mask" in settings:
            scales = {}
            for key, chosen in dict(settings["mask"]).items():
                site = str(key) if str(key).startswith("blocks.") else f"blocks.{key}.cross_attn"
                if site not in self.sites or any(not 0 <= int(h) < heads for h in chosen):
                    raise ValueError(f"agent.attention.mask: {site}: {list(chosen)} is not a cross-attention site "
                                     f"of {self.sites} with heads in 0..{heads - 1}")
                scales[site] = torch.ones(heads).index_fill(0, torch.tensor([int(h) for h in chosen], dtype=torch.long), 0.0)
            self.probes.append(HeadScale(scales))
        if "var" in settings:
            v = dict(settings["var"])
            self.probes.append(VAR(v.get("dims", []), v.get("tau"), float(v.get("p", 0.6)), float(v.get("rho", 0.5)),
                                   float(v.get("summ", 0.2))))
        if "paint" in settings:
            p = dict(settings["paint"])
            self.probes.append(_PolicyPaint(self.sites[0], self.sites[-1], float(p.get("alpha", 0.7)),
                                            float(p.get("beta", 0.3))))
        self.carve = None
        if "carve" in settings:
            c = dict(settings["carve"])
            if encode is None:
                raise ValueError("agent.attention.carve needs the agent's instruction encoder")
            with torch.inference_mode():
                general = encode(str(c.get("general", "describe the surroundings")))
            self.carve = {"general": general, "lam": float(c.get("lam", 1e-8)), "p": float(c.get("p", 0.2)),
                          "k": int(c.get("k", 3))}
        self.vhr_alpha = float(dict(settings["vhr"]).get("alpha", 2.0)) if "vhr" in settings else None
        self.vhr: HeadScale | None = None
        self.chosen: dict[str, list[int]] = {}

    @property
    def active(self) -> bool:
        """Whether any intervention is on."""
        return bool(self.settings)

    def reset(self) -> None:
        """Forget the episode's choices (VHR heads, PAINT's previous attention)."""
        self.vhr, self.chosen = None, {}
        for probe in self.probes:
            if isinstance(probe, _PolicyPaint):
                probe.previous_late = None

    def decide(self, decide: Decide, panorama: Tensor, links: Tensor) -> tuple[Tensor, Tensor]:
        """``decide(panorama, links)`` under the interventions; VHR picks its heads on the first call after
        :meth:`reset`."""
        if not self.active:
            return decide(panorama, links)
        if self.vhr_alpha is not None and self.vhr is None:
            self.vhr = self._choose_vhr_heads(decide, panorama, links)
        probes = [*self.probes, *([self.vhr] if self.vhr is not None else [])]
        if self.carve is not None:
            panorama = self._carve(decide, panorama, links, probes)
        with ExitStack() as stack:
            if probes:
                stack.enter_context(attach(self.model, CROSS, *probes))
            return decide(panorama, links)

    def _carve(self, decide: Decide, panorama: Tensor, links: Tensor, probes: list[Probe]) -> Tensor:
        """The panorama with the views CARVE finds uninformative blanked (see the module docstring)."""
        def view_attention(instruction: Tensor | None) -> np.ndarray:
            capture = Capture()
            with attach(self.model, CROSS, *probes, capture):
                decide(panorama, links, instruction)
            total = 0.0
            for records in capture.calls.values():
                record = records[-1]
                views = segment_mask(record.call.key_segments, "view", record.probs.shape[-1])
                total = total + record.probs[0, :, 0][:, views].mean(0).double().numpy()
            return total

        c = self.carve
        contrast = carve_contrast(view_attention(None), view_attention(c["general"]), c["lam"])
        keep = torch.from_numpy(carve_regions(contrast, c["p"], c["k"], wrap=True))
        self.kept_views = keep
        return panorama * keep[None, :, None].to(panorama.dtype)

    def vision_divergence(self, decide: Decide, panorama: Tensor, links: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """Per cross-attention site, VHD ``(H,)`` (the decision token's head outputs with the panorama against
        a null one: all-zero features and links) and the null pass's squared output norms ``TA`` ``(H,)``,
        with this agent's other probes attached, as the decision will see them."""
        seen, blind = Capture(), Capture()
        with attach(self.model, CROSS, *self.probes, seen):
            decide(panorama, links)
        with attach(self.model, CROSS, *self.probes, blind):
            decide(torch.zeros_like(panorama), torch.zeros_like(links))
        out = {}
        for site in self.sites:
            with_view, without = seen.calls[site][0].heads[..., :1, :], blind.calls[site][0].heads[..., :1, :]
            out[site] = head_divergence(with_view, without)[0], without[0, :, 0].float().pow(2).sum(-1)
        return out

    def _choose_vhr_heads(self, decide: Decide, panorama: Tensor, links: Tensor) -> HeadScale:
        """VHR's heads for this episode from :meth:`vision_divergence`."""
        scales = {}
        for site, (vhd, ta) in self.vision_divergence(decide, panorama, links).items():
            chosen = vhr_heads(vhd, ta)
            self.chosen[site] = torch.nonzero(chosen).flatten().tolist()
            scales[site] = 1.0 + (self.vhr_alpha - 1.0) * chosen.float()
        return HeadScale(scales)

