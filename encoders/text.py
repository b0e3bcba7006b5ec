"""Frozen text encoders: the CLIP text tower of an open_clip model, or a `transformers`
encoder with CLS or mean pooling (sentence-transformers directories included)."""
from __future__ import annotations

import functools
import logging
import time

import numpy as np
import torch

from ant_config import TextEncoderConfig
from ant_model.device import autocast, pick_device
from encoders.weights import encoder_id, load_weights, resolve

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def load_open_clip(model: str, pretrained: str | None):
    """(model, image preprocess) of an open_clip model, once per process."""
    import open_clip
    net, _, preprocess = load_weights(
        f"open_clip {model!r} (pretrained={pretrained!r})", [model, pretrained],
        lambda: open_clip.create_model_and_transforms(model, pretrained=pretrained))
    return net.eval(), preprocess


class TextEncoder:
    """Encodes strings to float32 vectors, in batches of similar length, without gradients."""

    def __init__(self, cfg: TextEncoderConfig, device: str = "auto"):
        self.cfg = cfg
        self.device = pick_device(device)
        if cfg.kind == "open_clip":
            import open_clip
            model, _ = load_open_clip(cfg.model, cfg.pretrained)
            self.model = model.to(self.device)
            self._tokenizer = open_clip.get_tokenizer(cfg.model)
            self.dim = int(self._encode_batch(["x"]).shape[1])
        else:
            from transformers import AutoModel, AutoTokenizer
            path = resolve(cfg.model)
            self._tokenizer, self.model = load_weights(
                f"transformers {cfg.model!r}", [path],
                lambda: (AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)))
            self.model = self.model.eval().to(self.device)
            self.dim = int(self.model.config.hidden_size)
        self.id = encoder_id(f"{cfg.kind}/{cfg.model}", self.model,
                             {"pretrained": cfg.pretrained, "pooling": cfg.pooling,
                              "max_tokens": cfg.max_tokens, "kind": "text"})

    @torch.inference_mode()
    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        with autocast(self.device):
            if self.cfg.kind == "open_clip":
                out = self.model.encode_text(self._tokenizer(texts).to(self.device))
            else:
                batch = self._tokenizer(texts, padding=True, truncation=True,
                                        max_length=self.cfg.max_tokens, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state
                if self.cfg.pooling == "cls":
                    out = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    out = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return out.float().cpu().numpy()

    def encode(self, texts: list[str]) -> np.ndarray:
        """[len(texts), dim] float32; batches are formed from texts of similar length."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        started = time.monotonic()
        for n, start in enumerate(range(0, len(texts), self.cfg.batch_size)):
            idx = order[start:start + self.cfg.batch_size]
            out[idx] = self._encode_batch([texts[i] for i in idx])
            done = min(start + self.cfg.batch_size, len(texts))
            if n % 20 == 0 or done == len(texts):
                rate = done / max(time.monotonic() - started, 1e-9)
                log.info("text: %d/%d items (%.0f/s, ETA %.0fs)", done, len(texts), rate,
                         (len(texts) - done) / max(rate, 1e-9))
        return out
