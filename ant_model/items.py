"""ItemEncoder: an item's vector from its frozen features, never from a shared ID.

`item = h_image + h_text + h_price + beta * (h_image ⊙ h_text)`; each ablation is a switch
(drop modalities, drop the product term, single linear instead of MoE), and the optional
transductive variant adds a per-domain item-ID embedding (alone, it is SASRec's item table).
"""
from __future__ import annotations

import torch
from torch import nn

from ant_config import ModelConfig
from ant_model.adaptors import make_adaptor


class ItemEncoder(nn.Module):
    def __init__(self, feature_dims: dict[str, int], cfg: ModelConfig, n_items: int):
        super().__init__()
        if cfg.modalities is None:
            raise ValueError("the model's modalities are not resolved yet (model.modalities: null means "
                             "'from the data'; the pipeline fills them in before building a model)")
        missing = [m for m in cfg.modalities if m not in feature_dims]
        if missing:
            raise ValueError(f"no {', '.join(missing)} features for the model's modalities {cfg.modalities}")
        self.cfg = cfg
        self.adaptors = nn.ModuleDict({
            m: make_adaptor(m, feature_dims[m], cfg.width, cfg.n_experts, cfg.moe, cfg.adaptor_dropout,
                            cfg.init_std)
            for m in cfg.modalities})
        self.ids = nn.Embedding(n_items + 1, cfg.width, padding_idx=0) if cfg.item_ids else None
        self.reset_ids()

    def reset_ids(self) -> None:
        if self.ids is not None:
            nn.init.normal_(self.ids.weight, std=self.cfg.init_std)
            with torch.no_grad():
                self.ids.weight[0].zero_()

    def reset_parameters(self) -> None:
        for adaptor in self.adaptors.values():
            adaptor.reset_parameters()
        self.reset_ids()

    def forward(self, features: dict[str, torch.Tensor], idx: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(item vectors, per-modality parts) for items `idx`; features are gathered rows."""
        parts = {m: adaptor(features[m]) for m, adaptor in self.adaptors.items()}
        out = sum(parts.values()) if parts else 0
        if self.cfg.fusion_product and "image" in parts and "text" in parts:
            out = out + self.cfg.fusion_beta * parts["image"] * parts["text"]
        if self.ids is not None:
            out = out + self.ids(idx)
        return out, parts
