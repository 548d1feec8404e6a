"""Container-mode preparation that needs no Docker: what gets mounted, and from where."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from genkiln import deploy as deployer
from genkiln import launch


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "genkiln.json").write_text(json.dumps({"format_version": 1}))
    (folder / "model.safetensors").write_bytes(b"\1" * 8)
    return folder


def test_a_tarball_is_unpacked_into_a_scratch_folder(artifact: Path, tmp_path: Path) -> None:
    tarball = tmp_path / "model.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for member in artifact.iterdir():
            tar.add(member, arcname=member.name)
    before = sorted(p.name for p in tmp_path.iterdir())
    with deployer._model_folder(tarball) as folder:
        assert sorted(p.name for p in folder.iterdir()) == ["genkiln.json", "model.safetensors"]
        assert tmp_path not in folder.parents
    # Nothing was unpacked beside the user's tarball, and the scratch folder is gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not folder.exists()


def test_a_folder_is_mounted_as_a_copy(artifact: Path) -> None:
    with deployer._model_folder(artifact) as folder:
        assert folder != artifact
        assert (folder / "model.safetensors").read_bytes() == b"\1" * 8


def test_a_missing_artifact_says_to_train_first(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train one first"), \
            deployer._model_folder(tmp_path / "absent"):
        pass


def test_a_file_channel_is_mounted_as_a_folder_holding_it(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one\ntwo\n")
    root = tmp_path / "root"
    root.mkdir()
    folder = launch._as_folder(corpus, root)
    assert folder.parent == root
    assert [p.name for p in folder.iterdir()] == ["corpus.txt"]
    assert launch._as_folder(tmp_path, root) == tmp_path.resolve()


def test_container_mode_refuses_cloud_instance_types(tmp_path: Path) -> None:
    training = launch.TrainingLaunch(family="transformer", hyperparameters={},
                                     instance_type="ml.g5.xlarge")
    with pytest.raises(ValueError, match="local_cpu or local_gpu"):
        launch.train_in_container(training, image="genkiln:latest", model_dir=tmp_path)


@pytest.mark.parametrize(("name", "expected"), [
    ("genkiln-transformer", "genkiln-transformer"),
    ("my_experiment.v2", "my-experiment-v2"),
    ("x" * 80, "x" * 32),
])
def test_job_base_names_fit_sagemaker(name: str, expected: str) -> None:
    training = launch.TrainingLaunch(family="transformer", hyperparameters={}, job_name=name)
    assert training.base_job_name() == expected


def test_deploy_env_pairs_are_parsed_and_checked() -> None:
    assert deployer._parse_env(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        deployer._parse_env(["novalue"])
