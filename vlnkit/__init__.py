"""vlnkit: a platform for vision-and-language navigation research.

Importing the package registers the Gymnasium environments (``vlnkit/Touchdown-v0``,
``vlnkit/Map2Seq-v0``) so that ``gymnasium.make`` finds them.
"""

from vlnkit.envs import register_envs

__version__ = "0.1.0"

register_envs()
