"""ANT: ItemEncoder + SequenceEncoder, scored by cosine similarity over a temperature."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ant_config import ModelConfig
from ant_model.items import ItemEncoder
from ant_model.losses import alignment_infonce, full_softmax, in_batch_infonce
from ant_model.sequence import SequenceEncoder


class ANT(nn.Module):
    def __init__(self, feature_dims: dict[str, int], cfg: ModelConfig, n_items: int):
        super().__init__()
        self.cfg = cfg
        self.items = ItemEncoder(feature_dims, cfg, n_items)
        self.sequence = SequenceEncoder(cfg)

    def encode_items(self, features: dict[str, torch.Tensor], idx: torch.Tensor):
        """(vectors, parts) of items `idx`, `features` being full per-item tables."""
        return self.items({m: features[m][idx] for m in self.items.adaptors}, idx)

    def states(self, item_vectors: torch.Tensor, sequences: torch.Tensor) -> torch.Tensor:
        """User states after every position of right-padded `sequences` [B, T] (0 = pad)."""
        return self.sequence(item_vectors[sequences], sequences == 0)

    def user_vectors(self, item_vectors: torch.Tensor, sequences: torch.Tensor) -> torch.Tensor:
        """The state at each sequence's last real item."""
        states = self.states(item_vectors, sequences)
        last = (sequences != 0).sum(dim=1) - 1
        return states[torch.arange(len(sequences), device=states.device), last]

    def scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return F.normalize(users, dim=-1) @ F.normalize(items, dim=-1).T / self.cfg.temperature

    def forward(self, features: dict[str, torch.Tensor], has_image: torch.Tensor | None,
                inputs: torch.Tensor, targets: torch.Tensor, objective: str,
                align_weight: float = 0.0) -> torch.Tensor:
        """The training loss of a batch, every position of every sequence at once.

        objective "full": softmax over the whole catalogue (target domains), all item vectors
        computed once per step. "in_batch": InfoNCE against the batch's distinct targets
        (pre-training), only the batch's items encoded, plus `align_weight` * L_align."""
        tau, mask = self.cfg.temperature, targets != 0
        if objective == "full":
            n = len(next(iter(features.values()))) if features else self.items.ids.num_embeddings
            items, _ = self.encode_items(features, torch.arange(n, device=inputs.device))
            return full_softmax(self.states(items, inputs)[mask], targets[mask], items, tau)
        ids = torch.unique(torch.cat([inputs.new_zeros(1), inputs.flatten(), targets.flatten()]))
        local_inputs = torch.searchsorted(ids, inputs.contiguous())
        local_targets = torch.searchsorted(ids, targets.contiguous())
        items, parts = self.encode_items(features, ids)
        states = self.states(items, local_inputs)
        loss = in_batch_infonce(states[mask], local_targets[mask], items, tau)
        if align_weight and "image" in parts and "text" in parts and has_image is not None:
            distinct = local_targets[mask].unique()
            loss = loss + align_weight * alignment_infonce(
                parts["image"][distinct], parts["text"][distinct], has_image[ids[distinct]], tau)
        return loss
