"""A user's folder of captioned images, for prompt-conditioned image models.

Captions come one of two ways, not both:

    captions.jsonl     one record a line, {"file": "cats/1.png", "text": "a cat on a mat"}
    1.png + 1.txt      a text file beside each image, with the same name

Every image needs a caption and every caption an image; the images must share one size
and one colour mode. Anything else is refused with the files named.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from training.data.errors import DataError
from training.data.folder import CAPTIONS_FILE
from training.data.images import GRAYSCALE_MODES
from training.data.text import jsonl_records, read_utf8

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_CAPTION_CHARS = 1000
_NAMED = 10


@dataclass(frozen=True)
class CaptionedImages:
    images: np.ndarray  # (N, H, W, C) uint8; C is 1 (grayscale) or 3 (colour)
    captions: list[str]
    files: list[str]  # relative to the folder, in the images' order
    mode: str  # "L" or "RGB"

    def __len__(self) -> int:
        return len(self.captions)


def _names(paths: list[str]) -> str:
    shown = ", ".join(sorted(paths)[:_NAMED])
    return shown + (f" and {len(paths) - _NAMED} more" if len(paths) > _NAMED else "")


def _read_jsonl(path: Path) -> dict[str, str]:
    captions: dict[str, str] = {}
    for number, record in jsonl_records(path):
        if not isinstance(record.get("file"), str) or not isinstance(record.get("text"), str):
            raise DataError(f"{path}:{number}: a record is "
                            f'{{"file": "<image path>", "text": "<caption>"}}')
        name = Path(record["file"]).as_posix()
        if name in captions:
            raise DataError(f"{path}:{number}: {name} is captioned twice")
        captions[name] = record["text"]
    return captions


def load_captioned_folder(root: Path) -> CaptionedImages:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder of captioned images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    rel = {p.relative_to(root).as_posix(): p for p in files}
    images = [n for n, p in rel.items() if p.suffix.lower() in IMAGE_SUFFIXES]
    texts = [n for n, p in rel.items() if p.suffix.lower() == ".txt"]
    others = [n for n, p in rel.items() if n != CAPTIONS_FILE
              and p.suffix.lower() not in (*IMAGE_SUFFIXES, ".txt")]
    if others:
        raise DataError(f"{root}: captioned images are PNG/JPEG files with a caption each; "
                        f"cannot read {_names(others)}")
    if not images:
        raise DataError(f"{root}: no images (.png, .jpg) in it")
    if CAPTIONS_FILE in rel:
        if texts:
            raise DataError(f"{root}: captions come from {CAPTIONS_FILE} or from a .txt "
                            f"beside each image, not both; remove {_names(texts)} or "
                            f"{CAPTIONS_FILE}")
        captions = _read_jsonl(rel[CAPTIONS_FILE])
    else:
        captions = {}
        stems = {str(Path(n).with_suffix("")): n for n in images}
        orphans = [t for t in texts if str(Path(t).with_suffix("")) not in stems]
        if orphans:
            raise DataError(f"{root}: captions without an image: {_names(orphans)}")
        for text in texts:
            captions[stems[str(Path(text).with_suffix(""))]] = read_utf8(rel[text]).strip()
    missing_images = [n for n in captions if n not in rel]
    if missing_images:
        raise DataError(f"{root}: {CAPTIONS_FILE} captions images that are not in the "
                        f"folder: {_names(missing_images)}")
    uncaptioned = [n for n in images if n not in captions]
    if uncaptioned:
        raise DataError(f"{root}: images without a caption: {_names(uncaptioned)}; add "
                        f"them to {CAPTIONS_FILE} or put a .txt of the same name beside each")
    bad = [n for n, c in captions.items() if not c.strip() or len(c) > MAX_CAPTION_CHARS]
    if bad:
        raise DataError(f"{root}: empty captions or captions over {MAX_CAPTION_CHARS} "
                        f"characters: {_names(bad)}")
    return _read_images(root, images, captions)


def _label(value: object) -> str:
    """A mode or a size as the error says it."""
    if isinstance(value, tuple):
        return f"{value[0]}×{value[1]}"
    return {"L": "grayscale", "RGB": "colour"}.get(str(value), str(value))


def _read_images(root: Path, names: list[str], captions: dict[str, str]) -> CaptionedImages:
    pixels, modes, sizes, unreadable = [], {}, {}, []
    for name in names:
        try:
            with Image.open(root / name) as image:
                image.load()
                mode = "L" if image.mode in GRAYSCALE_MODES else "RGB"
                modes[name], sizes[name] = mode, image.size
                pixels.append(np.asarray(image.convert(mode), dtype=np.uint8))
        except (UnidentifiedImageError, OSError):
            unreadable.append(name)
    if unreadable:
        raise DataError(f"{root}: unreadable images: {_names(unreadable)}")
    for what, seen in (("modes", modes), ("sizes", sizes)):
        counts = Counter(seen.values())
        if len(counts) > 1:
            common = counts.most_common(1)[0][0]
            odd = [n for n, v in seen.items() if v != common]
            shown = ", ".join(f"{_label(v)} ({c})" for v, c in counts.items())
            raise DataError(f"{root}: the images mix {what}: {shown}; make them alike "
                            f"(the odd ones: {_names(odd)})")
    mode = next(iter(modes.values()))
    stacked = np.stack(pixels)
    if stacked.ndim == 3:
        stacked = stacked[..., None]
    return CaptionedImages(images=stacked, captions=[captions[n] for n in names],
                           files=list(names), mode=mode)
