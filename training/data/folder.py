"""A user's data folder: one consistent modality, or a clear refusal naming the odd files."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from training.data.errors import DataError

#: File suffixes genkiln reads, and the modality each belongs to.
MODALITY_BY_SUFFIX = {
    ".txt": "text",
    ".jsonl": "text",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".mid": "music",
    ".midi": "music",
}

_MAX_NAMED = 20


def _name_some(paths: list[Path], root: Path) -> str:
    names = [str(p.relative_to(root)) for p in sorted(paths)[:_MAX_NAMED]]
    more = len(paths) - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def _supported() -> str:
    by_modality: dict[str, list[str]] = {}
    for suffix, modality in MODALITY_BY_SUFFIX.items():
        by_modality.setdefault(modality, []).append(suffix)
    return "; ".join(f"{m}: {' '.join(s)}" for m, s in by_modality.items())


@dataclass(frozen=True)
class FolderScan:
    """What a folder holds: its modality and its files, sorted for reproducible order."""

    root: Path
    modality: str
    files: list[Path]

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)


#: The file of a captioned folder that captions its images (training.data.captions).
CAPTIONS_FILE = "captions.jsonl"


def _captioned(by_modality: dict[str, list[Path]], root: Path) -> bool:
    """Images whose text is their captions: one captions.jsonl at the top, or a .txt
    beside an image of the same name (training.data.captions checks the pairing)."""
    texts = by_modality["text"]
    if any(p.relative_to(root).as_posix() == CAPTIONS_FILE for p in texts):
        return True
    stems = {p.with_suffix("") for p in by_modality["image"]}
    return all(p.suffix.lower() == ".txt" for p in texts) and \
        sum(p.with_suffix("") in stems for p in texts) * 2 > len(texts)


def scan_folder(root: Path) -> FolderScan:
    """Check that ``root`` holds files of one modality and return them.

    Images with their captions (a captions.jsonl, or a .txt beside most images) are one
    modality, "captioned". Hidden files (``.DS_Store``, editor swap files) are skipped.
    Anything else that genkiln can't read, or a mix of modalities, is refused with the
    files named, so the user knows exactly what to move or remove.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root} does not exist")
    if root.is_file():
        files = [root]
        root = root.parent
    else:
        files = sorted(
            p for p in root.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
    if not files:
        raise DataError(f"{root} holds no files; put .txt/.jsonl, image or MIDI files there")

    unsupported = [p for p in files if p.suffix.lower() not in MODALITY_BY_SUFFIX]
    if unsupported:
        raise DataError(
            f"{root} holds files genkiln cannot read: {_name_some(unsupported, root)}. "
            f"Remove them or convert them; supported types are {_supported()}"
        )

    by_modality: dict[str, list[Path]] = {}
    for p in files:
        by_modality.setdefault(MODALITY_BY_SUFFIX[p.suffix.lower()], []).append(p)
    if set(by_modality) == {"image", "text"} and _captioned(by_modality, root):
        return FolderScan(root=root, modality="captioned", files=files)
    if len(by_modality) > 1:
        counts = Counter({m: len(ps) for m, ps in by_modality.items()})
        majority = counts.most_common(1)[0][0]
        odd = [p for m, ps in by_modality.items() if m != majority for p in ps]
        mix = ", ".join(f"{n} {m}" for m, n in counts.most_common())
        raise DataError(
            f"{root} mixes modalities ({mix} files); one folder must hold one type. "
            f"Move these out: {_name_some(odd, root)}"
        )
    (modality, kept), = by_modality.items()
    return FolderScan(root=root, modality=modality, files=kept)
