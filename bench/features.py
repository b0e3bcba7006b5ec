"""Feature-extraction throughput: text items/s and images/s with a ViT-B-32-sized open_clip
model (random weights), on CPU and on CUDA when present, with the model's FLOPs per image.

    python bench/features.py [--texts 512] [--images 128] [--model ViT-B-32] [--device auto]

The images are random 500x500 JPEGs (product-photo sized), decoded by DataLoader workers and
preprocessed by the model's own transforms, as `ant features` does.
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from ant_config import ImageEncoderConfig, TextEncoderConfig
from encoders.image import ImageEncoder
from encoders.text import TextEncoder

WORDS = ("wireless", "stainless", "organic", "gift", "card", "case", "black", "premium", "set",
         "pack", "kitchen", "storage", "LED", "cotton", "guitar", "strings", "notebook", "pens")


def titles(n: int, rng: np.random.Generator) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=rng.integers(6, 24))) for _ in range(n)]


def jpegs(folder: Path, n: int, rng: np.random.Generator) -> list[Path]:
    paths = []
    for i in range(n):
        path = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (500, 500, 3), dtype=np.uint8)).save(path, quality=85)
        paths.append(path)
    return paths


def flops_per_image(encoder: ImageEncoder) -> float:
    size = encoder.model.visual.image_size
    size = size if isinstance(size, tuple) else (size, size)
    x = torch.zeros(1, 3, *size, device=encoder.device)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        encoder.model.encode_image(x)
    return float(counter.get_total_flops())


def bench(device: str, args, rng) -> None:
    text = TextEncoder(TextEncoderConfig(model=args.model, pretrained=None, batch_size=args.batch_size), device)
    data = titles(args.texts, rng)
    text.encode(data[: args.batch_size])  # warm-up
    started = time.monotonic()
    text.encode(data)
    text_rate = args.texts / (time.monotonic() - started)

    image = ImageEncoder(ImageEncoderConfig(model=args.model, pretrained=None,
                                            batch_size=args.batch_size, workers=args.workers), device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = jpegs(Path(tmp), args.images, rng)
        image.encode_files(paths[: min(8, len(paths))])  # warm-up
        started = time.monotonic()
        image.encode_files(paths)
        image_rate = args.images / (time.monotonic() - started)
    flops = flops_per_image(image)
    print(f"[{image.device}] text : {text_rate:,.1f} items/s ({args.texts} titles, batch {args.batch_size})")
    print(f"[{image.device}] image: {image_rate:,.1f} images/s ({args.images} JPEGs 500x500, "
          f"{args.workers} decode workers) — {flops / 1e9:.2f} GFLOP/image, "
          f"{image_rate * flops / 1e12:.3f} TFLOP/s achieved")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto = cpu, then cuda too when present")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    devices = [args.device] if args.device != "auto" else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        bench(device, args, rng)
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
