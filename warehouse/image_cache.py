"""The content-addressed image cache, `ANT_HOME/images/<sha256[:2]>/<sha256>`, and the check an
image passes before it enters it. `check_and_keep` runs in the fetcher's decoding processes, so
this module imports nothing but PIL (a spawned process pays for every import before its first
image), and the bytes cross to a process once: checked, hashed and written there."""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from PIL import Image


def cached_path(cache: Path, sha256: str) -> Path:
    return cache / sha256[:2] / sha256


def check_and_keep(data: bytes, max_pixels: int, cache: Path) -> tuple[str | None, str | None]:
    """(why `data` is not a usable image, None), or (None, its sha256) once it is in `cache`."""
    reason = check_image(data, max_pixels)
    return (reason, None) if reason else (None, store(cache, data))


def store(cache: Path, data: bytes) -> str:
    """Write `data` to `cache` under its sha256 (atomic: a reader never sees part of a file)."""
    sha = hashlib.sha256(data).hexdigest()
    path = cached_path(cache, sha)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{sha}.{os.getpid()}.{id(data)}.part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return sha


def check_image(data: bytes, max_pixels: int) -> str | None:
    """Why `data` is not a usable image, or None. The whole file is decoded; a JPEG at 1/8
    scale, which still reads every byte of it (a truncated or corrupt one fails) at half the cost."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > max_pixels:
                return f"{width}x{height} pixels exceeds the cap of {max_pixels} (decompression-bomb guard)"
            if im.format == "JPEG":
                im.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            im.load()
    except Image.DecompressionBombError as exc:
        return f"decompression bomb: {exc}"
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for broken files
        return f"cannot decode: {type(exc).__name__}: {exc}"
    return None
