"""Configuration: TOML files loaded into frozen dataclasses, validated once at load.

A master's file holds ``[master]`` and ``[network]`` (the cluster-wide overlay settings the master
hands to agents); an agent's file holds ``[agent]``. :func:`load_config` reports every problem of a
file at once, each naming the file, the key and the reason.
"""

from vxnet.config import _load, _model, _render
from vxnet.config._load import *  # noqa: F403 - each module's __all__ is its public part
from vxnet.config._model import *  # noqa: F403
from vxnet.config._render import *  # noqa: F403

__all__ = [*_load.__all__, *_model.__all__, *_render.__all__]
