"""Training objectives (ant-method.md): in-batch InfoNCE, image→text alignment, full softmax."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_logits(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature


def in_batch_infonce(users: torch.Tensor, targets: torch.Tensor, item_vectors: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """Each user state against the batch's distinct target items: an item that appears several
    times in the batch is one candidate, so copies of the positive are never negatives.
    users [N, d], targets [N] rows of `item_vectors`."""
    distinct, label = targets.unique(return_inverse=True)
    return F.cross_entropy(cosine_logits(users, item_vectors[distinct], temperature), label)


def alignment_infonce(image: torch.Tensor, text: torch.Tensor, has_image: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """Image→text InfoNCE over distinct items: item i's h_image should pick its own h_text."""
    rows = torch.nonzero(has_image).flatten()
    if len(rows) == 0:
        return image.sum() * 0
    return F.cross_entropy(cosine_logits(image[rows], text, temperature), rows)


def full_softmax(users: torch.Tensor, targets: torch.Tensor, all_items: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """Cross-entropy over the whole catalogue (row 0, the padding item, never a candidate)."""
    logits = cosine_logits(users, all_items, temperature)
    logits[:, 0] = float("-inf")
    return F.cross_entropy(logits, targets)
