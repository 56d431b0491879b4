"""Habitat's coordinate conventions, as small numpy helpers.

Habitat uses metres with ``y`` up; an agent at identity rotation faces ``-z``. Rotations are unit
quaternions stored as ``[x, y, z, w]``. An agent only ever turns about ``+y``: a positive yaw turns it
to its left (counter-clockwise seen from above), and its heading ``yaw`` is the angle such that the
rotation is ``[0, sin(yaw/2), 0, cos(yaw/2)]``; it is what habitat-lab's ``HeadingSensor`` reports (radians,
0 facing ``-z``, ``pi/2`` facing ``-x``).

Matterport-style ``.glb`` files store ``z`` up with ``+y`` as front (habitat-sim's default frame for
``.glb`` stages); :func:`zup_to_habitat` and :func:`habitat_to_zup` convert between that frame and
Habitat's.
"""

from __future__ import annotations

import math

import numpy as np

ZUP_TO_HABITAT = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
"""Rotation taking a z-up file frame (front ``+y``) to Habitat's frame: ``(x, y, z) -> (x, z, -y)``."""


def zup_to_habitat(points: np.ndarray) -> np.ndarray:
    """Points ``(..., 3)`` of a z-up file frame expressed in Habitat's y-up frame."""
    return np.asarray(points) @ ZUP_TO_HABITAT.T


def habitat_to_zup(points: np.ndarray) -> np.ndarray:
    """Points ``(..., 3)`` of Habitat's frame expressed in a z-up file frame (inverse of :func:`zup_to_habitat`)."""
    return np.asarray(points) @ ZUP_TO_HABITAT


def wrap_angle(angle: float) -> float:
    """``angle`` (radians) wrapped into ``(-pi, pi]``."""
    wrapped = math.remainder(angle, 2.0 * math.pi)
    return math.pi if wrapped == -math.pi else wrapped


def quat_from_yaw(yaw: float) -> np.ndarray:
    """The ``[x, y, z, w]`` quaternion of a rotation by ``yaw`` radians about ``+y``."""
    half = 0.5 * yaw
    return np.array([0.0, math.sin(half), 0.0, math.cos(half)])


def quat_rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vector ``v`` rotated by the unit quaternion ``q`` (``[x, y, z, w]``)."""
    u = np.asarray(q[:3], dtype=np.float64)
    w = float(q[3])
    v = np.asarray(v, dtype=np.float64)
    t = 2.0 * np.cross(u, v)
    return v + w * t + np.cross(u, t)


def yaw_from_quat(q: np.ndarray) -> float:
    """The heading of rotation ``q``: the yaw whose forward vector matches ``q``'s forward vector seen
    from above (any tilt is ignored), in ``(-pi, pi]``."""
    forward = quat_rotate(np.asarray(q, dtype=np.float64), np.array([0.0, 0.0, -1.0]))
    return wrap_angle(math.atan2(-forward[0], -forward[2]))


def forward_vector(yaw: float) -> np.ndarray:
    """The unit horizontal direction an agent with heading ``yaw`` faces: ``(-sin yaw, 0, -cos yaw)``."""
    return np.array([-math.sin(yaw), 0.0, -math.cos(yaw)])


def yaw_of_direction(dx: float, dz: float) -> float:
    """The heading that faces the horizontal direction ``(dx, dz)``."""
    return math.atan2(-dx, -dz)


def rotation_matrix(yaw: float, pitch: float = 0.0) -> np.ndarray:
    """3x3 rotation of a camera turned by ``yaw`` about ``+y`` then tilted by ``pitch`` about its own
    ``+x`` (positive pitch looks up)."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    return ry @ rx
