"""The pipeline's configuration: `ant_config.config` holds the typed, validated models and
`load_config`; `errors`, `protocol` and `releases` are plain Python shared by every layer.

`from ant_config import AntConfig` works as usual, but the pydantic models are built only on
first use (PEP 562 module `__getattr__`), so a command that reads no config (`ant --help`)
never pays for them.
"""
from __future__ import annotations


import importlib


def __getattr__(name: str):
    config = importlib.import_module("ant_config.config")  # not `from ant_config import`: that calls this
    try:
        return getattr(config, name)
    except AttributeError:
        raise AttributeError(f"module 'ant_config' has no attribute {name!r}") from None
