"""vlnkit: a platform for vision-and-language navigation research.

Importing the package registers the Gymnasium environments (``vlnkit/Touchdown-v0``,
``vlnkit/Map2Seq-v0``) so that ``gymnasium.make`` finds them.
"""

from vlnkit.envs import register_envs

__version__ = "0.1.0"
__all__ = ["Evaluation", "evaluate"]

register_envs()


def __getattr__(name: str):  # noqa: ANN202  (module attributes loaded on first use)
    """``vlnkit.evaluate`` and ``vlnkit.Evaluation`` (:mod:`vlnkit.eval.api`), imported when first used so
    that ``import vlnkit`` stays light."""
    if name in __all__:
        from vlnkit.eval import api

        return getattr(api, name)
    raise AttributeError(f"module 'vlnkit' has no attribute {name!r}")
