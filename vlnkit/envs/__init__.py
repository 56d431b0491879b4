"""Gymnasium environments and the data they stand on."""

import gymnasium


def register_envs() -> None:
    """Register vlnkit's environment ids with Gymnasium (safe to call more than once)."""
    from vlnkit.envs.continuous import register_continuous_envs

    register_continuous_envs()
    for env_id, task in (("vlnkit/Touchdown-v0", "touchdown"), ("vlnkit/Map2Seq-v0", "map2seq")):
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point="vlnkit.envs.street.env:StreetEnv", kwargs={"task": task})
