import json
import shutil
import tarfile
from pathlib import Path

import pytest

from training.artifact import MANIFEST, WEIGHTS, ArtifactError, load_artifact
from training.models.transformer import from_artifact


@pytest.fixture
def artifact(tiny_artifact: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(tiny_artifact, copy)
    return copy


def test_describes_itself(artifact: Path) -> None:
    manifest = json.loads((artifact / MANIFEST).read_text())
    assert manifest["format_version"] == 1 and manifest["family"] == "transformer"
    assert manifest["config"]["n_layer"] == 1 and manifest["config"]["max_steps"] == 8
    assert manifest["model_args"]["vocab_size"] <= 300
    assert manifest["data"]["modality"] == "text" and manifest["data"]["train_tokens"] > 0
    assert manifest["metrics"]["val_loss"] > 0 and manifest["metrics"]["steps"] == 8
    assert set(manifest["files"]) == {WEIGHTS, "tokenizer.json", "chat_template.jinja"}
    assert (artifact / WEIGHTS).read_bytes()[:8] != b"\x80\x02\x8a\x0a"  # not a pickle


def test_round_trip_reproduces_the_model(artifact: Path) -> None:
    lm = from_artifact(load_artifact(artifact))
    again = from_artifact(load_artifact(artifact))
    ids = [lm.tokenizer.eot_id, *lm.tokenizer.encode("Beautiful")]
    first = [t.id for t in lm.model.generate(ids, max_new_tokens=10, temperature=0.0)]
    assert first == [t.id for t in again.model.generate(ids, max_new_tokens=10,
                                                        temperature=0.0)]
    assert lm.model.lm_head.weight.data_ptr() == lm.model.wte.weight.data_ptr()


def test_unknown_format_version(artifact: Path) -> None:
    manifest = json.loads((artifact / MANIFEST).read_text())
    manifest["format_version"] = 2
    (artifact / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="format version 2; this genkiln reads version 1: "
                                            "upgrade genkiln"):
        load_artifact(artifact)


def test_missing_file(artifact: Path) -> None:
    (artifact / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match="incomplete: tokenizer.json is missing"):
        load_artifact(artifact)


def test_corrupt_weights(artifact: Path) -> None:
    data = bytearray((artifact / WEIGHTS).read_bytes())
    data[-1] ^= 0xFF  # one flipped byte deep in a tensor: only a checksum sees it
    (artifact / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.safetensors is corrupt: its SHA-256"):
        load_artifact(artifact)


def test_corrupt_manifest(artifact: Path) -> None:
    (artifact / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="genkiln.json is corrupt: not valid JSON"):
        load_artifact(artifact)


def test_not_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not a genkiln artifact: genkiln.json is missing"):
        load_artifact(tmp_path)


def test_loads_sagemaker_model_tarball(artifact: Path, tmp_path: Path) -> None:
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for item in artifact.iterdir():
            tar.add(item, arcname=item.name)
    assert load_artifact(archive).family == "transformer"
    archive.write_bytes(b"not a tarball")
    with pytest.raises(ArtifactError, match="is not a readable .tar.gz"):
        load_artifact(archive)
