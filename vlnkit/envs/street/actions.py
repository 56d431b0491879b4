"""Discrete street actions, shared by navigators, environments, agents and metrics.

The integer values follow VLN-CE's ordering (STOP=0, FORWARD=1, LEFT=2, RIGHT=3) so that agents that
act in both kinds of environment use the same ids; TURN_AROUND (VELMA/FLAME only) comes last.
"""

from enum import IntEnum


class StreetAction(IntEnum):
    """An action on the street graph."""

    STOP = 0
    FORWARD = 1
    LEFT = 2
    RIGHT = 3
    TURN_AROUND = 4
