"""PriceEncoder: a documented, re-appliable encoding of a price into a fixed-width vector.

The paper does not document its price encoding; this project's (ant-method.md):
`z` = log1p(price) standardised within the domain (so $20 is cheap in Electronics and dear in
Pantry), `p` = the within-domain percentile, then `[z, p, sin(f_k z), cos(f_k z)]` for
frequencies f_k spaced geometrically between `min_frequency` and `max_frequency`. A missing
price is the zero vector with `has_price = false`. The fitted statistics (scaler and quantiles)
are part of the encoder's state and id, so the same encoding can be re-applied later.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
from sklearn.preprocessing import QuantileTransformer, StandardScaler

from ant_config import PriceEncoderConfig


class PriceEncoder:
    def __init__(self, cfg: PriceEncoderConfig):
        self.cfg = cfg
        self.dim = cfg.dim
        n_freq = (cfg.dim - 2) // 2
        self.frequencies = np.geomspace(cfg.min_frequency, cfg.max_frequency, n_freq).astype(np.float32)
        self.scaler: StandardScaler | None = None
        self.quantiles: QuantileTransformer | None = None

    def fit(self, prices: np.ndarray) -> "PriceEncoder":
        """Fit on one domain's known prices (NaN = missing, ignored)."""
        logs = np.log1p(prices[~np.isnan(prices)]).reshape(-1, 1)
        if len(logs) == 0:
            logs = np.zeros((1, 1))
        self.scaler = StandardScaler().fit(logs)
        self.quantiles = QuantileTransformer(n_quantiles=min(self.cfg.n_quantiles, len(logs)),
                                             output_distribution="uniform").fit(logs)
        return self

    def encode(self, prices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vectors [n, dim] float32, has_price [n] bool)."""
        has = ~np.isnan(prices)
        out = np.zeros((len(prices), self.dim), dtype=np.float32)
        if has.any():
            logs = np.log1p(prices[has]).reshape(-1, 1)
            z = self.scaler.transform(logs)[:, 0].astype(np.float32)
            p = self.quantiles.transform(logs)[:, 0].astype(np.float32)
            angles = z[:, None] * self.frequencies[None, :]
            out[has] = np.concatenate([z[:, None], p[:, None], np.sin(angles), np.cos(angles)], axis=1)
        return out, has

    def state(self) -> dict:
        """Everything needed to re-apply the encoding (JSON-serialisable)."""
        return {"config": self.cfg.model_dump(),
                "mean": self.scaler.mean_.tolist(), "scale": self.scaler.scale_.tolist(),
                "quantiles": self.quantiles.quantiles_[:, 0].tolist(),
                "references": self.quantiles.references_.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> "PriceEncoder":
        enc = cls(PriceEncoderConfig(**state["config"]))
        enc.scaler = StandardScaler()
        enc.scaler.mean_ = np.array(state["mean"])
        enc.scaler.scale_ = np.array(state["scale"])
        enc.scaler.var_ = enc.scaler.scale_ ** 2
        enc.scaler.n_features_in_ = 1
        enc.quantiles = QuantileTransformer(n_quantiles=len(state["quantiles"]), output_distribution="uniform")
        enc.quantiles.quantiles_ = np.array(state["quantiles"]).reshape(-1, 1)
        enc.quantiles.references_ = np.array(state["references"])
        enc.quantiles.n_features_in_ = 1
        return enc

    @property
    def id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.state(), sort_keys=True).encode()).hexdigest()[:16]
        return f"price/sincos{self.dim}@{digest}"
