"""Training objectives (ant-method.md): in-batch InfoNCE, image→text alignment, full softmax,
and a sampled softmax for catalogues too large to score whole.

Scores come from the model's own scoring (cosine over a temperature, or a dot product for the
SASRec baseline); only the alignment loss scores by cosine itself. The full softmax holds at
most `max_logits` logits at once: rows are taken in chunks whose logits are recomputed in the
backward pass, so its memory is set by that bound, not by batch × catalogue.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (users [N, d], items [M, d]) → [N, M]


def cosine_logits(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature


def distinct_targets(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the batch's distinct target items, each position's column among them): an item that
    appears several times in the batch is one candidate, so copies of the positive are never
    negatives."""
    return targets.unique(return_inverse=True)


def in_batch_infonce(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """logits [N, distinct targets], label [N]: each user state against the batch's items."""
    return F.cross_entropy(logits, label)


def alignment_infonce(image: torch.Tensor, text: torch.Tensor, has_image: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """Image→text InfoNCE over distinct items: item i's h_image should pick its own h_text."""
    rows = torch.nonzero(has_image).flatten()
    if len(rows) == 0:
        return image.sum() * 0
    return F.cross_entropy(cosine_logits(image[rows], text, temperature), rows)


def _catalogue_ce(users: torch.Tensor, targets: torch.Tensor, items: torch.Tensor, score: Score) -> torch.Tensor:
    """Summed cross-entropy of `users` over every item but row 0, the padding item."""
    return F.cross_entropy(score(users, items[1:]), targets - 1, reduction="sum")


def full_softmax(users: torch.Tensor, targets: torch.Tensor, items: torch.Tensor, score: Score,
                 max_logits: int = 1 << 62) -> torch.Tensor:
    """Mean cross-entropy over the whole catalogue, at most `max_logits` logits held at once."""
    rows = max(1, max_logits // len(items))
    if len(users) <= rows:
        return _catalogue_ce(users, targets, items, score) / len(users)
    total = sum(checkpoint(_catalogue_ce, users[start:start + rows], targets[start:start + rows], items, score,
                           use_reentrant=False) for start in range(0, len(users), rows))
    return total / len(users)


def sampled_softmax(positive: torch.Tensor, negative: torch.Tensor, target_ids: torch.Tensor,
                    negative_ids: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each positive against shared sampled negatives, with the logQ correction
    (every logit minus the log of its item's sampling probability), so the estimate of the full
    softmax is unbiased in expectation; a negative that is the row's own target is masked.
    positive [N], negative [N, K] scores; target_ids [N], negative_ids [K]; log_q [n_items + 1]."""
    logits = torch.cat([(positive - log_q[target_ids])[:, None], negative - log_q[negative_ids][None, :]], dim=1)
    hits = torch.cat([torch.zeros_like(target_ids[:, None], dtype=torch.bool),
                      negative_ids[None, :] == target_ids[:, None]], dim=1)
    return F.cross_entropy(logits.masked_fill(hits, float("-inf")), torch.zeros_like(target_ids))
