"""`genkiln data inspect`: what a folder holds, checked and summarised before training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.data.folder import scan_folder
from training.data.images import load_image_folder
from training.data.text import load_text_folder
from training.models import FAMILIES
from training.models.formats.tokenizer import TextTokenizer


def summarize(path: Path, *, vocab_size: int = 2048) -> dict[str, Any]:
    """Check ``path`` holds one readable modality and describe it.

    Text is read completely (so a non-UTF-8 file or a bad JSON line is found now, not
    an hour into a job) and tokenized with the byte-level BPE training would build.
    Images are all decoded (a corrupt file or a mix of grayscale and colour is found now).
    """
    scan = scan_folder(Path(path))
    summary: dict[str, Any] = {
        "path": str(scan.root),
        "modality": scan.modality,
        "files": len(scan.files),
        "bytes": scan.total_bytes,
        "families": ", ".join(f.name for f in FAMILIES.values()
                              if scan.modality in f.modalities) or "none yet",
    }
    if scan.modality == "text":
        corpus = load_text_folder(scan)
        tokenizer = TextTokenizer.train(corpus.documents, vocab_size=vocab_size)
        tokens = sum(len(ids) for ids in tokenizer.encode_batch(corpus.documents))
        summary.update({
            "examples": len(corpus.documents),
            "characters": corpus.characters,
            "tokens": tokens,
            "vocab_size": tokenizer.vocab_size,
        })
    if scan.modality == "image":
        images = load_image_folder(scan, size=8).summary()
        summary.update({"images": images["images"], "mode": images["mode"],
                        "classes": ", ".join(images["classes"]) or "none (unconditional)"})
    return summary
