"""SequenceEncoder: SASRec-style causal Transformer over the last L item vectors.

`LayerNorm(item + position)`, dropout, then causal Transformer layers (GELU). Sequences are
right-padded; the output at every position is the user state after that item, so one pass
trains every next-item prediction of a sequence at once.
"""
from __future__ import annotations

import torch
from torch import nn

from ant_config import ModelConfig


class SequenceEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.position = nn.Embedding(cfg.max_seq_len, cfg.width)
        self.norm = nn.LayerNorm(cfg.width)
        self.dropout = nn.Dropout(cfg.embedding_dropout)
        layer = nn.TransformerEncoderLayer(cfg.width, cfg.heads, cfg.ffn_width, cfg.dropout,
                                           activation="gelu", batch_first=True)
        self.layers = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.reset_embedding()

    def reset_embedding(self) -> None:
        """Re-initialise what re-learning re-learns on the sequence side: positions and norm."""
        nn.init.normal_(self.position.weight, std=0.02)
        self.norm.reset_parameters()

    def forward(self, items: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """items [B, T, d], padding [B, T] (True = pad) → states [B, T, d]."""
        length = items.shape[1]
        positions = self.position(torch.arange(length, device=items.device))
        x = self.dropout(self.norm(items + positions))
        causal = torch.ones(length, length, dtype=torch.bool, device=items.device).triu(1)
        return self.layers(x, mask=causal, src_key_padding_mask=padding, is_causal=True)
