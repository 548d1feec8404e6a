"""The model artifact: a directory that describes itself.

    genkiln.json        format version, family, modality, config, model args,
                        data summary, metrics, and a SHA-256 for every file below
    model.safetensors   weights (never a pickle: loading a pickle runs code)
    tokenizer.json      and any other file the family needs

SageMaker tars the directory into model.tar.gz and unpacks it into /opt/ml/model on an
endpoint. Loading checks the format version, that every listed file is present, and
that its checksum matches, so a truncated upload or a stray edit is caught with a
message that names the file instead of failing somewhere inside the model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT_VERSION = 1
MANIFEST = "genkiln.json"
WEIGHTS = "model.safetensors"


class ArtifactError(ValueError):
    """The artifact can't be loaded; the message names the file and what to do."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_artifact(
    directory: Path,
    *,
    family: str,
    modality: str,
    config: Mapping[str, Any],
    model_args: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    data: Mapping[str, Any],
    metrics: Mapping[str, float],
    extra_files: Mapping[str, Path] | None = None,
) -> Path:
    """Write a complete artifact into ``directory`` (created; must be empty or absent)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Contiguous, un-shared tensors: safetensors refuses tied views (the tied LM head).
    weights = {k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}
    save_file(weights, str(directory / WEIGHTS))
    for name, source in (extra_files or {}).items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)  # samples/...
        shutil.copyfile(source, directory / name)
    files = [WEIGHTS, *(extra_files or {})]
    manifest = {
        "format_version": FORMAT_VERSION,
        "family": family,
        "modality": modality,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": dict(config),
        "model_args": dict(model_args),
        "data": dict(data),
        "metrics": dict(metrics),
        "files": {name: _sha256(directory / name) for name in files},
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return directory


def annotate_artifact(directory: Path, **fields: Any) -> None:
    """Add top-level fields to a written artifact's manifest (the training ``history``, a
    refinement's ``lineage``). Readers ignore fields they don't know, so the format version
    stays; the fields the loader checks cannot be replaced this way."""
    path = Path(directory) / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    protected = {"format_version", "family", "modality", "model_args", "files"} & set(fields)
    assert not protected, f"annotate_artifact must not replace {sorted(protected)}"
    manifest.update(fields)
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def artifact_sha256(directory: Path) -> str:
    """One digest of an artifact: of its manifest's file checksums, which name every byte
    the model is made of (the weights, tokenizer, ...)."""
    manifest = json.loads((Path(directory) / MANIFEST).read_text(encoding="utf-8"))
    return hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Artifact:
    """A verified artifact directory; weights are read on demand."""

    directory: Path
    manifest: dict[str, Any]

    @property
    def family(self) -> str:
        return str(self.manifest["family"])

    @property
    def modality(self) -> str:
        return str(self.manifest["modality"])

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.manifest.get("config", {}))

    @property
    def model_args(self) -> dict[str, Any]:
        return dict(self.manifest["model_args"])

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.manifest.get("metrics", {}))

    def path(self, name: str) -> Path:
        return self.directory / name

    def tensors(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        try:
            return load_file(str(self.path(WEIGHTS)), device=str(device))
        except (SafetensorError, OSError) as exc:
            raise ArtifactError(f"{self.path(WEIGHTS)} is not a readable safetensors file "
                                f"({exc}); re-export the artifact") from exc


def load_artifact(directory: Path) -> Artifact:
    """Open and verify an artifact directory (or a ``model.tar.gz``, unpacked to a temp dir)."""
    directory = Path(directory)
    if directory.is_file() and directory.name.endswith((".tar.gz", ".tgz")):
        directory = _unpack(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(
            f"{directory} is not a genkiln artifact: {MANIFEST} is missing "
            f"(point to the folder that training wrote to its model dir)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{manifest_path} is corrupt: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{manifest_path} is corrupt: expected a JSON object")

    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        hint = ("upgrade genkiln to a release that reads it" if newer
                else "re-export the model with this genkiln")
        raise ArtifactError(
            f"{manifest_path} has format version {version!r}; this genkiln reads version "
            f"{FORMAT_VERSION}: {hint}")
    for key in ("family", "modality", "model_args", "files"):
        if key not in manifest:
            raise ArtifactError(f"{manifest_path} is corrupt: the field {key!r} is missing")

    for name, expected in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{directory} is incomplete: {name} is missing")
        actual = _sha256(path)
        if actual != expected:
            raise ArtifactError(
                f"{path} is corrupt: its SHA-256 is {actual[:12]}…, {MANIFEST} "
                f"expects {expected[:12]}…; copy the artifact again or re-export it")
    return Artifact(directory=directory, manifest=manifest)


def _unpack(archive: Path) -> Path:
    target = Path(tempfile.mkdtemp(prefix="genkiln-artifact-"))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(target, filter="data")  # refuses absolute paths and links out
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArtifactError(f"{archive} is not a readable .tar.gz ({exc})") from exc
    return target
