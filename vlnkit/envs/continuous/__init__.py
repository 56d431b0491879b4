"""Continuous navigation (VLN-CE): the simulator backend protocol, the built-in mesh backend, the
habitat-sim backend and the ``vlnkit/VLNCE-v0`` Gymnasium environment.

Importing this package is cheap (trimesh and moderngl load only when a scene is loaded or drawn) and
registers the environment id.
"""

import gymnasium

ENV_ID = "vlnkit/VLNCE-v0"


def register_continuous_envs() -> None:
    """Register ``vlnkit/VLNCE-v0`` with Gymnasium (safe to call more than once)."""
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point="vlnkit.envs.continuous.env:VLNCEEnv")


register_continuous_envs()
