"""ANT: ItemEncoder + SequenceEncoder, scored by cosine similarity over a temperature (or by a
plain dot product, as SASRec scores)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ant_config import ModelConfig
from ant_model.items import ItemEncoder
from ant_model.losses import alignment_infonce, distinct_targets, full_softmax, in_batch_infonce, sampled_softmax
from ant_model.sequence import SequenceEncoder


def gather(vectors: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """`vectors[ids]` ([N, d] rows at ids of any shape → [*ids.shape, d]) with a deterministic
    backward. Indexing sums the gradients of repeated ids with parallel accumulation on the CPU,
    in an order that varies run to run (450 × 28 ids over 1,500 items, a Gift_Cards-sized batch:
    20 different gradients in 20 runs), and 5× slower than `F.embedding`'s backward, which is
    what this is."""
    return F.embedding(ids, vectors)


class ANT(nn.Module):
    def __init__(self, feature_dims: dict[str, int], cfg: ModelConfig, n_items: int):
        super().__init__()
        self.cfg = cfg
        self.n_items = n_items
        self.items = ItemEncoder(feature_dims, cfg, n_items)
        self.sequence = SequenceEncoder(cfg)

    def encode_items(self, features: dict[str, torch.Tensor], idx: torch.Tensor):
        """(vectors, parts) of items `idx`, `features` being full per-item tables."""
        return self.items({m: features[m][idx] for m in self.items.adaptors}, idx)

    def all_items(self, features: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        """Vectors of the whole catalogue, row 0 the padding item."""
        return self.encode_items(features, torch.arange(self.n_items + 1, device=device))[0]

    def states(self, item_vectors: torch.Tensor, sequences: torch.Tensor) -> torch.Tensor:
        """User states after every position of right-padded `sequences` [B, T] (0 = pad)."""
        return self.sequence(gather(item_vectors, sequences), sequences == 0)

    def user_vectors(self, item_vectors: torch.Tensor, sequences: torch.Tensor) -> torch.Tensor:
        """The state at each sequence's last real item."""
        states = self.states(item_vectors, sequences)
        last = (sequences != 0).sum(dim=1) - 1
        return states[torch.arange(len(sequences), device=states.device), last]

    def scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if self.cfg.scoring == "dot":
            return users @ items.T
        return F.normalize(users, dim=-1) @ F.normalize(items, dim=-1).T / self.cfg.temperature

    @torch.inference_mode()
    def scorer(self, features: dict[str, torch.Tensor]):
        """histories [B, T] → scores [B, n_items + 1], the item vectors computed once."""
        self.eval()
        device = next(self.parameters()).device
        items = self.all_items(features, device)
        return lambda histories: self.scores(self.user_vectors(items, histories), items)

    def pair_scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Row i of `users` against row i of `items` [N]."""
        if self.cfg.scoring == "dot":
            return (users * items).sum(-1)
        return (F.normalize(users, dim=-1) * F.normalize(items, dim=-1)).sum(-1) / self.cfg.temperature

    def forward(self, features: dict[str, torch.Tensor], has_image: torch.Tensor | None,
                inputs: torch.Tensor, targets: torch.Tensor, objective: str, align_weight: float = 0.0,
                max_logits: int = 1 << 62, negatives: torch.Tensor | None = None,
                log_q: torch.Tensor | None = None) -> torch.Tensor:
        """The training loss of a batch, every position of every sequence at once.

        objective "full": softmax over the whole catalogue (target domains), all item vectors
        computed once per step, at most `max_logits` logits at once. "sampled": the same
        against the sampled `negatives` (item ids) with the logQ correction `log_q`, only the
        batch's and the negatives' items encoded. "in_batch": InfoNCE against the batch's
        distinct targets (pre-training), only the batch's items encoded, plus `align_weight` *
        L_align."""
        mask = targets != 0
        if objective == "full":
            items = self.all_items(features, inputs.device)
            return full_softmax(self.states(items, inputs)[mask], targets[mask], items, self.scores, max_logits)
        extra = [negatives] if objective == "sampled" else []
        ids = torch.unique(torch.cat([inputs.new_zeros(1), inputs.flatten(), targets.flatten(), *extra]))
        local_inputs = torch.searchsorted(ids, inputs.contiguous())
        local_targets = torch.searchsorted(ids, targets.contiguous())
        items, parts = self.encode_items(features, ids)
        states = self.states(items, local_inputs)[mask]
        if objective == "sampled":
            local = local_targets[mask]
            return sampled_softmax(self.pair_scores(states, gather(items, local)),
                                   self.scores(states, gather(items, torch.searchsorted(ids, negatives))),
                                   targets[mask], negatives, log_q)
        distinct, label = distinct_targets(local_targets[mask])
        loss = in_batch_infonce(self.scores(states, items[distinct]), label)
        if align_weight and "image" in parts and "text" in parts and has_image is not None:
            loss = loss + align_weight * alignment_infonce(
                parts["image"][distinct], parts["text"][distinct], has_image[ids[distinct]], self.cfg.temperature)
        return loss
