"""Frozen image encoder: the open_clip image tower over up to 4 product images per item,
averaged over the images that exist; an item without one gets zeros and has_image = false."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ant_config import ImageEncoderConfig
from ant_model.device import autocast, pick_device
from encoders.text import load_open_clip
from encoders.weights import encoder_id

log = logging.getLogger(__name__)


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB on a white background: palette, transparency, CMYK and greyscale alike."""
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im, mask=im.getchannel("A"))
        return background
    return im.convert("RGB")


class _Images(Dataset):
    def __init__(self, paths: list[Path], preprocess):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as im:
            return self.preprocess(to_rgb(im))


class ImageEncoder:
    def __init__(self, cfg: ImageEncoderConfig, device: str = "auto"):
        self.cfg = cfg
        self.device = pick_device(device)
        model, self.preprocess = load_open_clip(cfg.model, cfg.pretrained)
        self.model = model.to(self.device)
        self.dim = int(model.visual.output_dim)
        self.id = encoder_id(f"open_clip/{cfg.model}", model,
                             {"pretrained": cfg.pretrained, "kind": "image",
                              "preprocess": repr(self.preprocess)})

    @torch.inference_mode()
    def encode_files(self, paths: list[Path]) -> np.ndarray:
        """[len(paths), dim] float32, decoded in DataLoader workers."""
        out = np.zeros((len(paths), self.dim), dtype=np.float32)
        loader = DataLoader(_Images(paths, self.preprocess), batch_size=self.cfg.batch_size,
                            num_workers=self.cfg.workers, pin_memory=self.device.type == "cuda")
        done, started = 0, time.monotonic()
        for batch in loader:
            with autocast(self.device):
                vectors = self.model.encode_image(batch.to(self.device, non_blocking=True))
            out[done:done + len(batch)] = vectors.float().cpu().numpy()
            done += len(batch)
            rate = done / max(time.monotonic() - started, 1e-9)
            log.info("images: %d/%d encoded (%.1f/s, ETA %.0fs)", done, len(paths), rate,
                     (len(paths) - done) / max(rate, 1e-9))
        return out

    def encode_items(self, files_per_item: list[list[Path]]) -> tuple[np.ndarray, np.ndarray]:
        """(mean vector per item [n, dim], has_image [n]); each distinct file is encoded once."""
        distinct = list(dict.fromkeys(p for files in files_per_item for p in files))
        row = {p: i for i, p in enumerate(distinct)}
        encoded = self.encode_files(distinct) if distinct else np.zeros((0, self.dim), np.float32)
        out = np.zeros((len(files_per_item), self.dim), dtype=np.float32)
        has = np.array([bool(files) for files in files_per_item])
        for i, files in enumerate(files_per_item):
            if files:
                out[i] = encoded[[row[p] for p in files]].mean(axis=0)
        return out, has
