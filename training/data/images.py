"""Image data: scikit-learn's bundled digits, or a user's folder of PNG/JPEG files.

Every image set comes out the same way: a float array (N, C, H, W) with values in [0, 1],
one colour mode for the whole set (grayscale "L", C = 1, or colour "RGB", C = 3) and, when
the images sit in one subfolder per class, integer labels and the class names (sorted).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from training.data.errors import DataError
from training.data.folder import FolderScan

#: PIL modes read as grayscale; every other mode (RGB, RGBA, P, CMYK, ...) is colour.
GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "F"}
CHANNELS = {"L": 1, "RGB": 3}
_MAX_NAMED = 20


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # (N, C, H, W) float32 in [0, 1]
    labels: np.ndarray | None  # (N,) int64 class indices; None for an unconditional set
    classes: tuple[str, ...]  # class name of each index; () when unconditional
    mode: str  # "L" (grayscale) or "RGB"
    source: str  # where the images came from, for logs and the artifact
    files: int  # files read (0 for the bundled set)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> ImageSet:
        labels = None if self.labels is None else self.labels[index]
        return ImageSet(self.images[index], labels, self.classes, self.mode, self.source,
                        self.files)

    def summary(self) -> dict[str, Any]:
        n, _c, h, w = self.images.shape
        out: dict[str, Any] = {"source": self.source, "modality": "image", "files": self.files,
                               "images": n, "mode": self.mode, "height": h, "width": w,
                               "classes": list(self.classes)}
        if self.labels is not None:
            counts = Counter(self.labels.tolist())
            out["per_class"] = {name: counts.get(i, 0) for i, name in enumerate(self.classes)}
        return out


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resize (N, C, h, w) float images to (N, C, size, size), bilinear, through PIL."""
    if images.shape[-2:] == (size, size):
        return images
    out = np.empty((*images.shape[:2], size, size), dtype=np.float32)
    for i, image in enumerate(images):
        for c, plane in enumerate(image):
            pil = Image.fromarray(plane.astype(np.float32), mode="F")
            out[i, c] = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))
    return np.clip(out, 0.0, 1.0)


def bundled_digits(size: int = 8) -> ImageSet:
    """scikit-learn's handwritten digits: 1,797 8×8 grayscale images of 0-9, shipped with it."""
    from sklearn.datasets import load_digits  # imported late: only image families need it

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8), 0..16 -> [0, 1]
    return ImageSet(images=_resize(images, size), labels=digits.target.astype(np.int64),
                    classes=tuple(str(i) for i in range(10)), mode="L",
                    source="bundled: scikit-learn handwritten digits (8x8, 1,797 images)",
                    files=0)


def _name_some(paths: list[Path], root: Path) -> str:
    names = [str(p.relative_to(root)) for p in sorted(paths)[:_MAX_NAMED]]
    more = len(paths) - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later
            return image
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path} is not a readable image ({exc}); replace or remove it"
                        ) from exc


def load_image_folder(scan: FolderScan, *, size: int) -> ImageSet:
    """Read every image of ``scan``, one colour mode for all, resized to size × size.

    Images in subfolders are labelled by the subfolder name; images directly in the
    folder make an unconditional set. A mix of both, of grayscale and colour, or an
    unreadable file is refused with the files named.
    """
    root = scan.root
    if scan.modality != "image":
        raise DataError(f"{root} holds {scan.modality} files; this family trains on images "
                        f"(.png, .jpg, .jpeg)")
    nested = [p for p in scan.files if len(p.relative_to(root).parts) > 1]
    loose = [p for p in scan.files if len(p.relative_to(root).parts) == 1]
    if nested and loose:
        raise DataError(
            f"{root} has images both in class subfolders and loose at its top level; put "
            f"every image in a class subfolder (or none): move {_name_some(loose, root)}")
    opened = [(p, _open(p)) for p in scan.files]
    kinds = {p: ("L" if image.mode in GRAYSCALE_MODES else "RGB") for p, image in opened}
    counts = Counter(kinds.values())
    if len(counts) > 1:
        majority = counts.most_common(1)[0][0]
        odd = [p for p, kind in kinds.items() if kind != majority]
        raise DataError(
            f"{root} mixes grayscale and colour images ({counts['L']} grayscale, "
            f"{counts['RGB']} colour); one folder must hold one mode. Convert or move: "
            f"{_name_some(odd, root)}")
    (mode,) = counts
    arrays = []
    for _, image in opened:
        resized = image.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
        array = np.asarray(resized, dtype=np.float32) / 255.0
        arrays.append(array[None] if mode == "L" else array.transpose(2, 0, 1))
    classes: tuple[str, ...] = ()
    labels = None
    if nested:
        names = [p.relative_to(root).parts[0] for p in scan.files]
        classes = tuple(sorted(set(names)))
        labels = np.asarray([classes.index(n) for n in names], dtype=np.int64)
    return ImageSet(images=np.stack(arrays), labels=labels, classes=classes, mode=mode,
                    source=str(root), files=len(scan.files))


def split(data: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Hold out ``fraction`` of the images (at least one), chosen by ``seed``."""
    if len(data) < 2:
        raise DataError(f"{data.source} holds {len(data)} image; a held-out split needs at "
                        f"least two (add images or give a validation channel)")
    order = np.random.default_rng(seed).permutation(len(data))
    n_val = min(len(data) - 1, max(1, round(len(data) * fraction)))
    return data.subset(np.sort(order[n_val:])), data.subset(np.sort(order[:n_val]))
