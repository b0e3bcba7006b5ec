"""Modality adaptors: map a frozen feature (text 512-d, price 64-d, …) to the model width.

A mixture of experts per modality (ant-method.md): text and image experts are parametric
whitening layers `W_k (dropout(x) - b_k)`, price experts are linear layers with bias; a
softmax gate over the raw feature picks the mixture, with noisy gating while training.
`W_gate` and `W_noise` start at zero, so gates start uniform.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ant_model.dropout import UniformDropout

NOISE_FLOOR = 0.01  # the spec's "+ 0.01" under the softplus noise scale


class WhiteningExpert(nn.Module):
    """`W (dropout(x) - b)`: a learned centre, then a projection without bias."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float, init_std: float):
        super().__init__()
        self.dropout = UniformDropout(dropout)
        self.center = nn.Parameter(torch.zeros(in_dim))
        self.proj = nn.Linear(in_dim, out_dim, bias=False)
        self.init_std = init_std
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.center)
        nn.init.normal_(self.proj.weight, std=self.init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(x) - self.center)


class LinearExpert(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, dropout: float, init_std: float):
        super().__init__()
        self.dropout = UniformDropout(dropout)
        self.proj = nn.Linear(in_dim, out_dim)
        self.init_std = init_std
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.proj.weight, std=self.init_std)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(x))


class MoEAdaptor(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, n_experts: int, whitening: bool, dropout: float,
                 init_std: float):
        super().__init__()
        expert = WhiteningExpert if whitening else LinearExpert
        self.experts = nn.ModuleList(expert(in_dim, out_dim, dropout, init_std) for _ in range(n_experts))
        self.w_gate = nn.Parameter(torch.zeros(in_dim, n_experts))
        self.w_noise = nn.Parameter(torch.zeros(in_dim, n_experts))

    def reset_parameters(self) -> None:
        for e in self.experts:
            e.reset_parameters()
        nn.init.zeros_(self.w_gate)
        nn.init.zeros_(self.w_noise)

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        logits = x @ self.w_gate
        if self.training:
            noise_std = F.softplus(x @ self.w_noise) + NOISE_FLOOR
            logits = logits + torch.randn_like(logits) * noise_std
        return logits.softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = torch.stack([e(x) for e in self.experts], dim=-2)  # [..., E, d]
        return (self.gates(x).unsqueeze(-1) * outputs).sum(dim=-2)


def make_adaptor(modality: str, in_dim: int, out_dim: int, n_experts: int, moe: bool,
                 dropout: float, init_std: float) -> nn.Module:
    """The adaptor of one modality; `moe=False` is the single-linear ablation."""
    if not moe:
        return LinearExpert(in_dim, out_dim, dropout, init_std)
    return MoEAdaptor(in_dim, out_dim, n_experts, whitening=modality != "price", dropout=dropout,
                      init_std=init_std)


def redraw_experts_xavier(module: nn.Module) -> None:
    """Re-draw the projection of every expert inside `module` from Xavier normal
    (std = sqrt(2 / (in + out)): 0.0625 for 384 → 128 against `init_std` 0.02), as the authors'
    finetune.py re-initialises them (their `Whitening._init_weights`); biases stay as they are."""
    for m in module.modules():
        if isinstance(m, (WhiteningExpert, LinearExpert)):
            nn.init.xavier_normal_(m.proj.weight)
