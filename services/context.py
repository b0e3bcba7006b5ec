"""A run's configuration and its warehouse, built once and passed down as one object."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ant_config import AntConfig
from warehouse.store import Warehouse


@dataclass(frozen=True)
class Context:
    config: AntConfig
    warehouse: Warehouse

    @classmethod
    def of(cls, config: AntConfig) -> "Context":
        return cls(config, Warehouse(config.home))

    @property
    def artifacts(self) -> Path:
        """Trained models, reports: `artifacts/<kind>/…/<version>/`."""
        return self.warehouse.home / "artifacts"

    @property
    def reports(self) -> Path:
        return self.artifacts / "reports"
