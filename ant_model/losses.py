"""Training objectives (ant-method.md): in-batch InfoNCE, image→text alignment, full softmax.

Each takes logits the model computed with its own scoring (cosine over a temperature, or a dot
product for the SASRec baseline); only the alignment loss scores by cosine itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


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


def full_softmax(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the whole catalogue (column 0, the padding item, never a candidate)."""
    logits = logits.clone()
    logits[:, 0] = float("-inf")
    return F.cross_entropy(logits, targets)
