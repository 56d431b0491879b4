"""Temporal consistency after FloAt (``docs/perception-vision.md`` §6): the previous observation's attention,
warped by the exact flow between the two observations, blended into the current attention (training-free).

The simulator knows the ego-motion, so the flow needs no estimator:

* a turn on the spot is a horizontal circular shift of a cylindrical panorama (:func:`shift_flow`);
* a move reprojects the new panorama's depth with the known translation into the previous panorama
  (:func:`reprojection_flow`); a token whose point is hidden there (the previous depth along that ray is
  shorter) or outside it is invalid: the binarized flow map.

A flow here is backward and token-level, as attention needs it: for every token ``q`` of the current map,
``index[q]``, the token of the previous map that shows the same point (nearest token), and ``valid[q]``.

:func:`warp_attention` warps the previous attention along its key axis, ``Ã[..., q] = A_prev[..., index[q]]``
(zero where invalid), which is what a cross-attention map needs (its queries, landmark categories, do not
move); :func:`warp_self_attention` warps both axes, ``Ã[p, q] = A_prev[index[p], index[q]]``, for
self-attention. :func:`float_blend` then forms ``A' = lam * A + (1 - lam) * Ã`` and renormalises every row
(rows where ``Ã`` keeps no mass stay ``A``; with ``row_valid`` only those rows are blended), so ``lam = 1``
is the identity and a static scene (identity flow, the same image) is a fixed point.

:class:`FloAtReadout` applies it to a :class:`~vlnkit.perception.heads.ReadoutPredictor` along a sequence of
panoramas: each prediction's last cross-attention is blended with the previous one's, warped by the flow
between the two camera positions. FloAt's own layer set and weight are unknown (the paper gives neither); here
it is the readout's last cross-attention and ``lam`` a setting.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from vlnkit.perception.heads.readout import ReadoutPredictor

__all__ = [
    "FloAtReadout",
    "float_blend",
    "panorama_directions",
    "reprojection_flow",
    "shift_flow",
    "warp_attention",
    "warp_self_attention",
]


def shift_flow(height: int, width: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """The flow of a panorama turned so that what was at column ``c + columns`` is now at column ``c``
    (a circular shift of the ``height x width`` token grid): every token valid."""
    rows, cols = np.divmod(np.arange(height * width), width)
    return rows * width + (cols + columns) % width, np.ones(height * width, dtype=bool)


def panorama_directions(height: int, width: int) -> np.ndarray:
    """Unit ray ``(east, north, up)`` through the centre of each cell of an ``height x width`` grid over an
    equirectangular panorama whose column 0 starts at bearing 0 (north) and runs clockwise, row 0 at the
    zenith: ``(H, W, 3)``."""
    bearing = np.deg2rad((np.arange(width) + 0.5) / width * 360.0)
    lat = np.deg2rad(90.0 - (np.arange(height) + 0.5) / height * 180.0)
    b, la = np.meshgrid(bearing, lat)
    return np.stack([np.cos(la) * np.sin(b), np.cos(la) * np.cos(b), np.sin(la)], axis=-1)


def _cell_of(vectors: np.ndarray, height: int, width: int) -> np.ndarray:
    """The grid cell (flat index) of each direction ``(..., 3)`` (east, north, up)."""
    east, north, up = vectors[..., 0], vectors[..., 1], vectors[..., 2]
    bearing = np.rad2deg(np.arctan2(east, north)) % 360.0
    lat = np.rad2deg(np.arctan2(up, np.hypot(east, north)))
    col = np.clip((bearing / 360.0 * width).astype(np.int64), 0, width - 1)
    row = np.clip(((90.0 - lat) / 180.0 * height).astype(np.int64), 0, height - 1)
    return row * width + col


def cell_depth(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    """The depth at the centre pixel of each cell of an ``height x width`` grid over a depth panorama
    ``(H', W')`` or ``(H', W', 1)`` (metres along the ray, 0 for the sky): ``(height, width)``."""
    d = np.asarray(depth, dtype=np.float64).reshape(depth.shape[0], depth.shape[1])
    rows = ((np.arange(height) + 0.5) * d.shape[0] / height).astype(np.int64)
    cols = ((np.arange(width) + 0.5) * d.shape[1] / width).astype(np.int64)
    return d[np.ix_(rows, cols)]


def reprojection_flow(depth: np.ndarray, depth_prev: np.ndarray, motion: np.ndarray, height: int, width: int,
                      tolerance: float = 0.15, min_tolerance_m: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The flow from the current panorama to the previous one after the camera moved by ``motion`` (metres
    east, north, up; the panoramas keep north at column 0, so a move is a translation only).

    Each cell's ray hits the point ``depth * ray`` (cell-centre depth, :func:`cell_depth`); seen from the previous
    camera it is ``point + motion``, in the cell ``index``. It is ``valid`` when the previous panorama's depth
    in that cell agrees with the point's distance within ``max(tolerance * distance, min_tolerance_m)`` (not
    hidden there). Sky cells (depth 0) are points at infinity: the same direction, valid where the previous
    cell is sky too. Returns ``index`` and ``valid``, both ``(height * width,)``.
    """
    rays = panorama_directions(height, width).reshape(-1, 3)
    d = cell_depth(depth, height, width).reshape(-1)
    d_prev = cell_depth(depth_prev, height, width).reshape(-1)
    sky = d <= 0.0
    points = rays * d[:, None] + np.asarray(motion, dtype=np.float64).reshape(1, 3)
    index = np.where(sky, np.arange(height * width), _cell_of(points, height, width))
    distance = np.linalg.norm(points, axis=1)
    seen = d_prev[index]
    agree = np.abs(seen - distance) <= np.maximum(tolerance * distance, min_tolerance_m)
    valid = np.where(sky, d_prev[index] <= 0.0, (seen > 0.0) & agree)
    return index, valid


def warp_attention(attn_prev: Tensor, index: Tensor | np.ndarray, valid: Tensor | np.ndarray) -> Tensor:
    """The previous attention ``(..., N)`` warped along its key axis: ``out[..., q] = attn_prev[..., index[q]]``
    where ``valid[q]``, else 0."""
    index = torch.as_tensor(index, device=attn_prev.device, dtype=torch.long)
    valid = torch.as_tensor(valid, device=attn_prev.device, dtype=torch.bool)
    return attn_prev.index_select(-1, index) * valid.to(attn_prev.dtype)


def warp_self_attention(attn_prev: Tensor, index: Tensor | np.ndarray, valid: Tensor | np.ndarray) -> Tensor:
    """The previous self-attention ``(..., N, N)`` warped along both axes: ``out[..., p, q] =
    attn_prev[..., index[p], index[q]]`` where both are valid, else 0."""
    index = torch.as_tensor(index, device=attn_prev.device, dtype=torch.long)
    valid = torch.as_tensor(valid, device=attn_prev.device, dtype=torch.bool).to(attn_prev.dtype)
    rows = attn_prev.index_select(-2, index) * valid[:, None]
    return rows.index_select(-1, index) * valid


def float_blend(attn: Tensor, warped: Tensor, lam: float, row_valid: Tensor | None = None,
                eps: float = 1e-6) -> Tensor:
    """``lam * attn + (1 - lam) * warped``, each row renormalised to sum to 1 (see the module docstring).
    Rows where ``warped`` holds less than ``eps`` of mass, and rows outside ``row_valid`` (broadcast over the
    query axis), keep ``attn``."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if lam == 1.0:
        return attn
    mixed = lam * attn + (1.0 - lam) * warped
    mixed = mixed / mixed.sum(-1, keepdim=True).clamp_min(eps)
    keep = warped.sum(-1, keepdim=True) >= eps
    if row_valid is not None:
        keep = keep & torch.as_tensor(row_valid, device=attn.device, dtype=torch.bool)[..., :, None]
    return torch.where(keep, mixed, attn)


class FloAtReadout:
    """A :class:`ReadoutPredictor` run over a sequence of panoramas with FloAt on its readout's last
    cross-attention (``lam`` as in :func:`float_blend`; 1 is the plain model).

    ``predict(image, depth, position)`` takes the normalised panorama ``(1, 3, H, W)`` (column 0 at bearing 0),
    its depth panorama (metres along each ray, 0 for the sky) and the camera position ``(east, north, up)``,
    and returns the closeness ``(sectors, categories)``. The previous step's attention, depth and position are
    kept; :meth:`reset` forgets them (a new episode). A step of more than ``max_move_m`` is not blended.
    """

    def __init__(self, model: ReadoutPredictor, lam: float, max_move_m: float = 30.0) -> None:
        self.model = model
        self.lam = float(lam)
        self.max_move_m = float(max_move_m)
        self.reset()

    def reset(self) -> None:
        """Forget the previous observation."""
        self._previous: tuple[Tensor, np.ndarray, np.ndarray] | None = None

    def predict(self, image: Tensor, depth: np.ndarray, position: np.ndarray) -> np.ndarray:
        """Closeness of one panorama, blended with the previous one's warped attention (see the class doc)."""
        readout = self.model.readout
        position = np.asarray(position, dtype=np.float64).reshape(3)
        edit = None
        if self._previous is not None and self.lam < 1.0:
            attn_prev, depth_prev, position_prev = self._previous
            motion = position - position_prev
            if float(np.linalg.norm(motion)) <= self.max_move_m:
                def edit(attn: Tensor, size: tuple[int, int]) -> Tensor:
                    index, valid = reprojection_flow(depth, depth_prev, motion, *size)
                    warped = warp_attention(attn_prev.to(attn.dtype), index, valid)
                    if readout.sectored:   # keep each sector query on its own columns
                        warped = warped * readout.sector_masks(*size)[1].to(warped.dtype)
                    return float_blend(attn, warped, self.lam)
        readout.attention_edit = edit
        try:
            with torch.no_grad():
                closeness = self.model(image)[0].float().cpu().numpy()
        finally:
            readout.attention_edit = None
        self._previous = (readout.attention, np.asarray(depth), position)
        return closeness

