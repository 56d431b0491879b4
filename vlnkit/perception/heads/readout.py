"""Category readout in the style of the Transformer brain encoders (``docs/perception-vision.md`` §8).

One learned query per landmark category attends over a panorama's feature map through one pre-norm DETR-style
decoder layer, and each category's output vector is read out as ``S`` sector closeness values in ``[0, 1]``.
The output ``(B, S, C)`` is the street environments' semantic panorama
(:class:`vlnkit.envs.street.panorama.SceneFeatureSource`): sector ``k`` covers the clockwise bearings
``[k, k + 1) * 360 / S`` from the agent's heading (to the nearest sector), so sector 0 starts at the heading and
spans the first ``360 / S`` degrees to its right, and entry ``(k, c)`` is ``max(0, 1 - d / radius)`` of the
nearest landmark of category ``c`` there; what :class:`vlnkit.agents.modular.perception.Perception` reads.
The readout learns that order from such targets; the architecture fixes only the shape and the range.

With ``sectored=True`` the readout is instead one query per (sector, category): category ``c``'s query ``E_c``
is shared by all sectors, and the query of sector ``k`` attends (cross- and self-attention) only to the map's
columns in that sector (column centres ``[k, k + 1) * W / S``, images with column 0 at bearing 0) and to the
other categories' queries of that sector. Its closeness is ``sigmoid(w_c . t_{k,c} + b_c)``, shared over
sectors, and the column encoding repeats every sector. So a sector's output depends on its own columns only,
and turning the panorama by whole sectors turns the output exactly. Without it the value vectors carry no
position (DETR adds the encoding to keys only), so a category's one pooled vector says what is in the panorama
but hardly where: on the synthetic city the plain readout learned only trees.

Layer math, with target ``t = 0``, category queries ``E``, memory ``F`` (projected backbone features) and its
2-D sine position encoding ``P``::

    t <- t + SA(LN(t) + E, LN(t) + E, LN(t))
    t <- t + CA(LN(t) + E, F + P, F)
    t <- t + FFN(LN(t))
    t <- LN(t)

The cross-attention weights of the last layer ``(B, heads, C, H * W)`` are kept (:attr:`CategoryReadout.attention`):
for each category, where in the panorama its evidence was read. :func:`bearing_from_attention` turns them into a
bearing, the check that a category's attention sits at its landmark's heading.

With ``circular=True`` the horizontal encoding is periodic in the width (harmonics ``sin / cos(k 2 pi x / W)``),
so the two sides of a panorama's 0/360 seam are neighbours for the attention as they are in the world.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from vlnkit.perception.attention.hook import AttentionSite, probe_heads, probe_logits, probe_probs
from vlnkit.perception.backbones.layers import count_parameters

__all__ = [
    "CategoryReadout",
    "ReadoutPredictor",
    "panorama_augment",
    "readout_scores",
    "ReadoutDecoderLayer",
    "ReadoutAttention",
    "bearing_from_attention",
    "sine_position_encoding",
]


def sine_position_encoding(height: int, width: int, dim: int, circular: bool = False,
                           period: float | None = None, temperature: float = 10000.0) -> Tensor:
    """A ``(dim, height, width)`` 2-D sine position encoding: ``dim / 2`` channels for the row, then ``dim / 2``
    for the column, each as interleaved ``(sin, cos)`` pairs.

    An axis of ``n`` cells encodes cell centres ``u = 2 pi (i + 0.5) / n`` (DETR's normalised sine encoding,
    scale ``2 pi``) at the frequencies ``temperature ** (-2j / (dim / 2))``, ``j < dim / 4``. With ``circular``
    the column encoding is instead the harmonics ``sin / cos(k * 2 pi (x + 0.5) / period)``, ``k = 1 .. dim / 4``,
    periodic in ``period`` columns (default ``width``), so column ``x`` and column ``x + period`` get one code.
    Harmonics above ``width / 2`` repeat lower ones up to sign (they alias); they are kept so that ``dim`` is
    free.
    """
    if dim < 4 or dim % 4:
        raise ValueError(f"position encoding dim must be a positive multiple of 4, got {dim}")
    if height < 1 or width < 1:
        raise ValueError(f"position encoding needs a positive height and width, got {height} x {width}")
    pairs = dim // 4
    freqs = temperature ** (-2.0 * torch.arange(pairs, dtype=torch.float64) / (dim // 2))

    def encode(angles: Tensor) -> Tensor:
        return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)

    rows = encode(((torch.arange(height, dtype=torch.float64) + 0.5) / height * 2 * math.pi)[:, None] * freqs)
    columns = torch.arange(width, dtype=torch.float64) + 0.5
    if circular:
        cycle = float(width if period is None else period)
        if cycle <= 0:
            raise ValueError(f"circular period must be positive, got {period}")
        harmonics = torch.arange(1, pairs + 1, dtype=torch.float64)
        cols = encode((columns / cycle * 2 * math.pi)[:, None] * harmonics)
    else:
        cols = encode((columns / width * 2 * math.pi)[:, None] * freqs)
    grid = torch.cat([rows[:, None, :].expand(height, width, -1), cols[None, :, :].expand(height, width, -1)], -1)
    return grid.permute(2, 0, 1).float()


def bearing_from_attention(attn: Tensor, width: int, origin: float = 0.0) -> Tensor:
    """The circular centre of mass of attention over the columns of a ``width``-column map, in degrees.

    ``attn`` is ``(..., H * W)`` (tokens row-major, as :attr:`CategoryReadout.attention`; flatten an
    ``(H, W)`` map first); its mass is summed over rows, column ``x`` stands for the bearing
    ``origin + (x + 0.5) * 360 / width`` (its centre; ``origin`` is the bearing of the left edge of column 0)
    and the result is ``atan2(sum m sin, sum m cos)`` in ``[0, 360)``, shape ``(...)``. Mass at 350 and 10
    degrees averages to 0, not 180. For the environments' egocentric panoramas (:class:`~vlnkit.envs.street.panorama.ImageFolderSource`
    puts the heading at the centre column) ``origin=-180`` gives bearings clockwise from the heading, the
    convention of the sectors. A uniform map has no centre; it gives an arbitrary angle.
    """
    if width < 1:
        raise ValueError(f"width must be positive, got {width}")
    if attn.ndim < 1 or attn.shape[-1] % width:
        raise ValueError(
            f"attention of shape {tuple(attn.shape)}: expected a last axis of H * W tokens, a multiple of width={width}"
        )
    columns = attn.reshape(*attn.shape[:-1], attn.shape[-1] // width, width).sum(-2)
    angles = torch.deg2rad(origin + (torch.arange(width, dtype=columns.dtype, device=columns.device) + 0.5)
                           * 360.0 / width)
    sin, cos = (columns * angles.sin()).sum(-1), (columns * angles.cos()).sum(-1)
    return torch.rad2deg(torch.atan2(sin, cos)) % 360.0


class ReadoutAttention(nn.Module, AttentionSite):
    """Multi-head attention with separate q / k / v / output projections that also returns its weights. An
    attention site of :mod:`vlnkit.perception.attention` (probes act before ``edit``).

    ``forward(query (B, L, d), key (B, N, d), value (B, N, d))`` -> output ``(B, L, d)`` and the softmax
    weights ``(B, heads, L, N)`` (before attention dropout), as DETR's ``nn.MultiheadAttention`` computes them.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"d_model={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None,
                edit: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Attention output and weights (see the class docstring); ``mask`` ``(L, N)``, true where a query may
        attend (every query must have one key); ``edit`` replaces the weights before they weigh the values
        (e.g. FloAt's blend, :mod:`vlnkit.perception.temporal`), and the edited weights are returned."""
        b, length, dim = query.shape
        head_dim = dim // self.heads

        def split(x: Tensor) -> Tensor:
            return x.reshape(b, x.shape[1], self.heads, head_dim).transpose(1, 2)

        q, k, v = split(self.q_proj(query)), split(self.k_proj(key)), split(self.v_proj(value))
        logits = q @ k.transpose(-2, -1) / math.sqrt(head_dim)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        weights = probe_probs(self, torch.softmax(probe_logits(self, logits), dim=-1))
        if edit is not None:
            weights = edit(weights)
        out = probe_heads(self, self.dropout(weights) @ v).transpose(1, 2).reshape(b, length, dim)
        return self.out_proj(out), weights


class ReadoutDecoderLayer(nn.Module):
    """One pre-norm DETR decoder layer: self-attention among queries, cross-attention to memory, FFN.

    ``forward(t, query_pos, memory, memory_pos)`` -> the updated target and the cross-attention weights
    (layer math in the module docstring; the final LayerNorm is :class:`CategoryReadout`'s).
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = ReadoutAttention(dim, heads, dropout)
        self.cross_attn = ReadoutAttention(dim, heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, dim))
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop1, self.drop2, self.drop3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, t: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor, self_mask: Tensor | None = None,
                cross_mask: Tensor | None = None,
                cross_edit: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Updated target ``(B, C, d)`` and cross-attention weights ``(B, heads, C, N)``; the masks (true: may
        attend) restrict the self- and cross-attention, ``cross_edit`` edits the cross-attention weights."""
        x = self.norm1(t)
        t = t + self.drop1(self.self_attn(x + query_pos, x + query_pos, x, self_mask)[0])
        x = self.norm2(t)
        routed, weights = self.cross_attn(x + query_pos, memory + memory_pos, memory, cross_mask, cross_edit)
        t = t + self.drop2(routed)
        return t + self.drop3(self.ffn(self.norm3(t))), weights


class CategoryReadout(nn.Module):
    """Per-sector closeness of each landmark category from a panorama feature map: ``(B, sectors, categories)``.

    ``in_channels`` is the channel count of the backbone map read (``features[level]`` when a list of maps is
    given, the coarsest by default); ``categories`` a count or the category names (in the order of the
    closeness array's columns, e.g. ``SceneFeatureSource.categories``); ``sectors`` the rows. ``d_model``,
    ``heads``, ``ffn_dim``, ``dropout`` and ``layers`` size the decoder (doc defaults: one layer, 0.1 dropout);
    ``circular`` makes the horizontal position encoding periodic in the width (panoramas); ``sectored`` reads
    each sector from its own columns (see the module docstring; the encoding then repeats every sector).

    Closeness of category ``c`` in sector ``k`` is ``sigmoid(w_{c,k} . t_c + b_{c,k})`` of that category's
    decoder output ``t_c`` only, the doc's ROI-to-vertex readout where every (sector, category) "vertex" lies
    in exactly one "ROI". After each forward :attr:`attention` holds the last layer's cross-attention weights
    ``(B, heads, categories, H * W)`` (detached) and :attr:`attention_size` the map's ``(H, W)``. While
    :attr:`attention_edit` is set, ``attention_edit(weights, (H, W))`` replaces the last layer's cross-attention
    weights before they are used (FloAt, :class:`vlnkit.perception.temporal.FloAtReadout`).
    """

    attention: Tensor | None
    attention_size: tuple[int, int] | None
    attention_edit: Callable[[Tensor, tuple[int, int]], Tensor] | None

    def __init__(self, in_channels: int, categories: int | Sequence[str], sectors: int = 8, d_model: int = 256,
                 heads: int = 8, ffn_dim: int = 1024, dropout: float = 0.1, layers: int = 1, circular: bool = False,
                 level: int = -1, sectored: bool = False) -> None:
        super().__init__()
        if isinstance(categories, int):
            self.category_names: list[str] | None = None
            self.categories = categories
        else:
            self.category_names = [str(c) for c in categories]
            self.categories = len(self.category_names)
        for name, value in (("in_channels", in_channels), ("categories", self.categories), ("sectors", sectors),
                            ("layers", layers)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if d_model < 4 or d_model % 4:
            raise ValueError(f"d_model must be a positive multiple of 4 (the 2-D sine encoding), got {d_model}")
        self.sectors, self.d_model, self.circular, self.level = sectors, d_model, circular, level
        self.sectored = sectored
        self.input_proj = nn.Conv2d(in_channels, d_model, 1)
        self.query_embed = nn.Parameter(torch.randn(self.categories, d_model))
        self.layers = nn.ModuleList(ReadoutDecoderLayer(d_model, heads, ffn_dim, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        bound = 1.0 / math.sqrt(d_model)
        rows = 1 if sectored else sectors
        self.readout_weight = nn.Parameter(torch.empty(self.categories, rows, d_model).uniform_(-bound, bound))
        self.readout_bias = nn.Parameter(torch.zeros(self.categories, rows))
        self.attention = None
        self.attention_size = None
        self.attention_edit = None
        self._pos_cache: dict[tuple[int, int], Tensor] = {}

    def position_encoding(self, height: int, width: int) -> Tensor:
        """The memory's position encoding ``(H * W, d_model)`` for an ``H x W`` map (cached per size)."""
        key = (height, width)
        if key not in self._pos_cache:
            if self.sectored:
                pe = sine_position_encoding(height, width, self.d_model, circular=True, period=width / self.sectors)
            else:
                pe = sine_position_encoding(height, width, self.d_model, circular=self.circular)
            self._pos_cache[key] = pe.flatten(1).transpose(0, 1)
        return self._pos_cache[key]

    def sector_masks(self, height: int, width: int) -> tuple[Tensor, Tensor]:
        """For ``sectored``: which queries each query may attend ``(S * C, S * C)`` (those of its sector) and which
        tokens of an ``H x W`` map ``(S * C, H * W)`` (its sector's columns); query ``k * C + c`` is category
        ``c`` in sector ``k``."""
        if width < self.sectors:
            raise ValueError(f"a sectored readout needs a map at least {self.sectors} columns wide, got {width}")
        query_sector = torch.arange(self.sectors).repeat_interleave(self.categories)
        column_sector = ((torch.arange(width) + 0.5) * self.sectors / width).long()
        token_sector = column_sector.repeat(height)
        return query_sector[:, None] == query_sector[None, :], query_sector[:, None] == token_sector[None, :]

    def decode(self, memory: Tensor, memory_pos: Tensor,
               size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        """Decoder outputs ``(B, categories, d_model)`` and last cross-attention ``(B, heads, categories, N)``
        from memory tokens ``(B, N, d_model)`` and their position encodings (``(N, d)`` or ``(B, N, d)``); a
        ``sectored`` readout also needs the map's ``size`` ``(H, W)`` and has ``sectors * categories`` queries."""
        b = memory.shape[0]
        queries = self.query_embed.repeat(self.sectors, 1) if self.sectored else self.query_embed
        query_pos = queries.unsqueeze(0).expand(b, -1, -1)
        t = torch.zeros_like(query_pos)
        self_mask = cross_mask = None
        if self.sectored:
            if size is None or size[0] * size[1] != memory.shape[1]:
                raise ValueError(f"a sectored readout needs the (H, W) of the {memory.shape[1]} memory tokens, got {size}")
            self_mask, cross_mask = (m.to(memory.device) for m in self.sector_masks(*size))
        cross_edit = None
        if self.attention_edit is not None and size is not None:
            hook, hw = self.attention_edit, size

            def cross_edit(weights: Tensor) -> Tensor:
                return hook(weights, hw)

        attention = []
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            t, weights = layer(t, query_pos, memory, memory_pos.expand_as(memory), self_mask, cross_mask,
                               cross_edit if last else None)
            attention.append(weights)
        return self.norm(t), attention[-1]

    def read(self, outputs: Tensor) -> Tensor:
        """Closeness ``(B, sectors, categories)`` from decoder outputs ``(B, categories, d_model)`` (``sectored``:
        ``(B, sectors * categories, d_model)``)."""
        if self.sectored:
            per_sector = outputs.reshape(outputs.shape[0], self.sectors, self.categories, -1)
            logits = torch.einsum("bscd,cd->bsc", per_sector, self.readout_weight[:, 0]) + self.readout_bias[:, 0]
        else:
            logits = torch.einsum("bcd,csd->bsc", outputs, self.readout_weight) + self.readout_bias.t()
        return torch.sigmoid(logits)

    def forward(self, features: Tensor | Sequence[Tensor],
                return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Closeness ``(B, sectors, categories)`` from a feature map ``(B, in_channels, H, W)`` (or a backbone's
        list of maps, of which ``features[level]`` is read); with ``return_attention`` also the cross-attention
        ``(B, heads, categories, H * W)`` (with its graph, e.g. for an attention loss)."""
        x = features if isinstance(features, Tensor) else features[self.level]
        if x.ndim != 4 or x.shape[1] != self.input_proj.in_channels:
            raise ValueError(
                f"feature map has shape {tuple(x.shape)}, expected (B, {self.input_proj.in_channels}, H, W)"
            )
        height, width = x.shape[-2:]
        memory = self.input_proj(x).flatten(2).transpose(1, 2)
        pos = self.position_encoding(height, width).to(device=memory.device, dtype=memory.dtype)
        outputs, weights = self.decode(memory, pos, (int(height), int(width)))
        self.attention = weights.detach()
        self.attention_size = (int(height), int(width))
        closeness = self.read(outputs)
        return (closeness, weights) if return_attention else closeness

    def extra_repr(self) -> str:
        return (f"categories={self.categories}, sectors={self.sectors}, d_model={self.d_model}, "
                f"circular={self.circular}, sectored={self.sectored}, params={count_parameters(self):,}")


class ReadoutPredictor(nn.Module):
    """A backbone and a :class:`CategoryReadout` as one model: panoramas ``(B, 3, H, W)`` -> closeness
    ``(B, sectors, categories)``.

    Without ``neck`` the readout reads the backbone's feature map ``readout.level``; with an
    :class:`~vlnkit.perception.heads.dense.FPNNeck` over the maps from ``neck_from`` on, it reads the neck's fused
    map (deep semantics at the finer stride, where small landmarks still cover a cell)."""

    def __init__(self, backbone: nn.Module, readout: CategoryReadout, neck: nn.Module | None = None,
                 neck_from: int = 0) -> None:
        super().__init__()
        channels = neck.out_channels if neck is not None else backbone.feature_info[readout.level].channels
        if channels != readout.input_proj.in_channels:
            raise ValueError(f"readout expects {readout.input_proj.in_channels} channels but its input map has "
                             f"{channels}")
        self.backbone = backbone
        self.neck = neck
        self.neck_from = neck_from
        self.readout = readout

    def forward(self, images: Tensor) -> Tensor:
        """Closeness ``(B, sectors, categories)`` in ``[0, 1]``."""
        maps = self.backbone.forward_features(images)
        return self.readout(maps if self.neck is None else self.neck(maps[self.neck_from:]))


def panorama_augment(images: Tensor, targets: Tensor, flip: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    """Turn and mirror equirectangular panoramas together with their sector targets, exactly.

    ``images`` ``(B, H, W, C)`` have column 0 at bearing 0 and bearings growing to the right; ``targets``
    ``(B, S, K)`` hold sector ``k`` = bearings ``[k, k + 1) * 360 / S`` (``W`` a multiple of ``S``). ``shift``
    ``(B,)`` integers turn the panorama by ``shift * 360 / S`` degrees (sector ``k + shift`` becomes sector ``k``);
    where ``flip`` ``(B,)`` is true the panorama is then mirrored (bearing ``b`` becomes ``360 - b``, so sector ``k``
    becomes sector ``S - 1 - k``).
    """
    sectors, width = targets.shape[1], images.shape[2]
    if width % sectors:
        raise ValueError(f"panorama width {width} is not a multiple of the {sectors} sectors")
    per = width // sectors
    out_x, out_y = [], []
    for x, y, f, r in zip(images, targets, flip.tolist(), shift.tolist()):
        x, y = torch.roll(x, -int(r) * per, dims=1), torch.roll(y, -int(r), dims=0)
        if f:
            x, y = x.flip(1), y.flip(0)
        out_x.append(x)
        out_y.append(y)
    return torch.stack(out_x), torch.stack(out_y)


def readout_scores(pred: Tensor, target: Tensor, visible: float = 0.2) -> dict[str, float]:
    """How well predicted closeness ``(N, S, K)`` matches the targets: mean absolute error, and precision,
    recall and F1 of "a landmark of this category is seen in this sector" (closeness at least ``visible``, the
    modular agent's threshold)."""
    seen, truth = pred >= visible, target >= visible
    hits = float((seen & truth).sum())
    precision = hits / max(1.0, float(seen.sum()))
    recall = hits / max(1.0, float(truth.sum()))
    f1 = 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)
    return {"mae": float((pred - target).abs().mean()), "precision": precision, "recall": recall, "f1": f1}
