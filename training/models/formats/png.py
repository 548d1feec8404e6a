"""Images as PNG bytes, and many images as one grid: how image families answer."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(C, H, W) floats in [0, 1] -> (H, W) or (H, W, 3) bytes, as PIL wants them."""
    data = np.clip(np.rint(np.asarray(image, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    return data[0] if data.shape[0] == 1 else data.transpose(1, 2, 0)


def encode_png(image: np.ndarray, *, scale: int = 1) -> bytes:
    """One (C, H, W) image in [0, 1] as PNG bytes, enlarged ``scale`` times (nearest)."""
    pil = Image.fromarray(to_uint8(image))
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def grid(images: np.ndarray, *, columns: int | None = None, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) images -> one (C, H', W') image: rows of ``columns``, ``pad`` px apart."""
    n, c, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    out = np.ones((c, rows * (h + pad) + pad, columns * (w + pad) + pad), dtype=np.float32)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        out[:, top:top + h, left:left + w] = image
    return out


def decode_png(data: bytes) -> np.ndarray:
    """A PNG as a (C, H, W) float32 array in [0, 1]."""
    array = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float32) / 255.0
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)[:3]
