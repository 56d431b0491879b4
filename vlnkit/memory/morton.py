"""Morton (Z-order) codes for signed integer cells: 21 bits per axis, 63 bits per code.

Cell coordinates are signed integers in ``[MIN_CELL, MAX_CELL]`` (about +-1.05 million cells per axis, so
+-1,048 km at a 1 m leaf). Each axis is bias-encoded (``cell + BIAS``) into an unsigned 21-bit field and the
three fields are bit-interleaved (x in bit 0, y in bit 1, z in bit 2 of every triple) with the classic
magic-number spreads, all vectorised over numpy ``uint64`` arrays. Because the bias is a power of two,
dropping the low ``3 * level`` bits of a code gives the code of the enclosing cell ``level`` levels up, and
coarse cells stay aligned across zero.
"""

from __future__ import annotations

import numpy as np

BITS = 21
BIAS = 1 << (BITS - 1)
MIN_CELL = -BIAS
MAX_CELL = BIAS - 1
MAX_LEVEL = BITS

_MASK = np.uint64((1 << BITS) - 1)
_SPREAD = [
    (32, np.uint64(0x1F00000000FFFF)),
    (16, np.uint64(0x1F0000FF0000FF)),
    (8, np.uint64(0x100F00F00F00F00F)),
    (4, np.uint64(0x10C30C30C30C30C3)),
    (2, np.uint64(0x1249249249249249)),
]
_COMPACT = [
    (2, np.uint64(0x10C30C30C30C30C3)),
    (4, np.uint64(0x100F00F00F00F00F)),
    (8, np.uint64(0x1F0000FF0000FF)),
    (16, np.uint64(0x1F00000000FFFF)),
    (32, _MASK),
]


def _spread(a: np.ndarray) -> np.ndarray:
    """Insert two zero bits after each of the low 21 bits of ``a`` (uint64)."""
    a = a & _MASK
    for shift, mask in _SPREAD:
        a = (a | (a << np.uint64(shift))) & mask
    return a


def _compact(a: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_spread`: gather every third bit of ``a`` (uint64) into the low 21 bits."""
    a = a & _SPREAD[-1][1]
    for shift, mask in _COMPACT:
        a = (a ^ (a >> np.uint64(shift))) & mask
    return a


def interleave(biased: np.ndarray) -> np.ndarray:
    """Morton codes (int64) of unsigned biased cell coordinates ``(..., 3)`` already in ``[0, 2**21)``."""
    u = np.asarray(biased).astype(np.uint64, copy=False)
    code = _spread(u[..., 0]) | (_spread(u[..., 1]) << np.uint64(1)) | (_spread(u[..., 2]) << np.uint64(2))
    return code.astype(np.int64)


def deinterleave(codes: np.ndarray) -> np.ndarray:
    """Unsigned biased cell coordinates ``(..., 3)`` (int64) of Morton ``codes``."""
    c = np.asarray(codes).astype(np.uint64)
    axes = [_compact(c >> np.uint64(axis)) for axis in range(3)]
    return np.stack(axes, axis=-1).astype(np.int64)


def encode(cells: np.ndarray) -> np.ndarray:
    """Morton codes (int64, ``(...)``) of signed integer cells ``(..., 3)``; raises outside the 21-bit range."""
    cells = np.asarray(cells, dtype=np.int64)
    if cells.shape[-1] != 3:
        raise ValueError(f"cells must have a last axis of size 3, got shape {cells.shape}")
    if cells.size and (cells.min() < MIN_CELL or cells.max() > MAX_CELL):
        raise ValueError(
            f"cell coordinates must lie in [{MIN_CELL}, {MAX_CELL}]; use a larger leaf size for this world"
        )
    return interleave(cells + BIAS)


def decode(codes: np.ndarray) -> np.ndarray:
    """Signed integer cells ``(..., 3)`` (int64) of Morton ``codes``."""
    return deinterleave(codes) - BIAS


_SPREAD_INT = [(shift, int(mask)) for shift, mask in _SPREAD]
_COMPACT_INT = [(shift, int(mask)) for shift, mask in _COMPACT]


def _spread_int(a: int) -> int:
    """Scalar :func:`_spread` on a Python int (cheaper than numpy for a single point)."""
    a &= (1 << BITS) - 1
    for shift, mask in _SPREAD_INT:
        a = (a | (a << shift)) & mask
    return a


def encode_cell(x: int, y: int, z: int) -> int:
    """Morton code of one signed integer cell (scalar :func:`encode`)."""
    if not (MIN_CELL <= x <= MAX_CELL and MIN_CELL <= y <= MAX_CELL and MIN_CELL <= z <= MAX_CELL):
        raise ValueError(
            f"cell coordinates must lie in [{MIN_CELL}, {MAX_CELL}]; use a larger leaf size for this world"
        )
    return _spread_int(x + BIAS) | (_spread_int(y + BIAS) << 1) | (_spread_int(z + BIAS) << 2)


def _compact_int(a: int) -> int:
    """Scalar :func:`_compact` on a Python int."""
    a &= _SPREAD_INT[-1][1]
    for shift, mask in _COMPACT_INT:
        a = (a ^ (a >> shift)) & mask
    return a


def decode_code(code: int) -> tuple[int, int, int]:
    """Signed integer cell of one Morton code (scalar :func:`decode`)."""
    code = int(code)
    x, y, z = (_compact_int(code >> axis) - BIAS for axis in range(3))
    return x, y, z


def cells_of(positions: np.ndarray, cell_size: float) -> np.ndarray:
    """Signed integer cells ``(..., 3)`` holding metric ``positions`` for cubic cells of ``cell_size`` metres."""
    positions = np.asarray(positions, dtype=np.float64)
    return np.floor(positions / cell_size).astype(np.int64)
