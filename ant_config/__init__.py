"""The pipeline's configuration: `ant_config.config` holds the typed, validated models and
`load_config`; `errors`, `protocol` and `releases` are plain Python shared by every layer.

`from ant_config import AntConfig` works as usual, but the pydantic models are built only on
first use (PEP 562 module `__getattr__`), so a command that reads no config (`ant --help`)
never pays for them. Importing the package also sets OpenMP's wait policy for torch (below).
"""
from __future__ import annotations

import importlib
import os

# Before torch loads (every package that imports torch imports this one first): OpenMP threads
# that find no work sleep instead of spinning. On 2 busy cores a spinning torch ran an epoch 3.2x
# slower (37.2 s vs 11.8 s, and a test 980 s vs 86 s); on quiet cores passive is no slower
# (7.5-8.0 s vs 9.5 s). Set OMP_WAIT_POLICY yourself to choose otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def __getattr__(name: str):
    config = importlib.import_module("ant_config.config")  # not `from ant_config import`: that calls this
    try:
        return getattr(config, name)
    except AttributeError:
        raise AttributeError(f"module 'ant_config' has no attribute {name!r}") from None
