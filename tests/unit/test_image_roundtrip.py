"""Save and load: an exported image model answers exactly as the one that was trained."""

import importlib
from pathlib import Path

import pytest
import torch

from tests.conftest import IMAGE_TINY
from training.artifact import load_artifact
from training.config import TrainConfig
from training.hyperparameters import build
from training.models import get_family
from training.recipes.image import SAMPLES_FILE


@pytest.mark.parametrize("family", ["gan", "vae", "rbm", "autoencoder"])
def test_export_then_load_gives_the_same_model(family: str, digits_dir: Path,
                                               tmp_path: Path) -> None:
    spec = get_family(family)
    values = {**spec.train_defaults, **IMAGE_TINY[family]}
    run = build(TrainConfig, values)
    cfg = build(spec.config_cls, values)
    recipe = spec.build_recipe(run, cfg, train_dir=digits_dir, validation_dir=None,
                               device=torch.device("cpu"), log=lambda _: None)
    for _ in range(3):
        recipe.train_step(1e-3)
    recipe.export(tmp_path, config={}, metrics={"steps": 3.0})
    artifact = load_artifact(tmp_path)
    assert artifact.family == family and artifact.modality == "image"
    assert SAMPLES_FILE in artifact.manifest["files"] and (tmp_path / SAMPLES_FILE).is_file()
    assert artifact.model_args["image"] == {"size": 8, "channels": 1, "classes":
                                            ["3", "7"] if family in ("gan", "vae") else []}
    loaded = importlib.import_module(f"training.models.{family}").from_artifact(artifact)
    kept = recipe.tensors()  # the GAN keeps its averaged generator
    assert set(kept) == set(loaded.model.state_dict())
    for key, value in kept.items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    x = recipe.x_val[:2]
    with torch.no_grad():
        if family == "autoencoder":
            assert torch.equal(loaded.model.encode(x), recipe.model.encode(x))
            assert loaded.threshold == artifact.model_args["threshold"] > 0
        elif family == "rbm":
            assert torch.equal(loaded.model.hidden_probs(x.flatten(1)),
                               recipe.model.hidden_probs(x.flatten(1)))
        else:
            y = torch.tensor([0, 1])
            a = loaded.model.sample(2, y, torch.Generator().manual_seed(0))
            if family == "gan":
                with recipe.sampling() as gan:
                    b = gan.sample(2, y, torch.Generator().manual_seed(0))
                assert not torch.equal(b, recipe.model.sample(
                    2, y, torch.Generator().manual_seed(0)))  # the average, not the last
            else:
                b = recipe.model.sample(2, y, torch.Generator().manual_seed(0))
            assert torch.equal(a, b)


def test_the_anomaly_threshold_is_set_on_held_out_normal_images(digits_dir: Path,
                                                                tmp_path: Path) -> None:
    """Not on the training images, whose errors the model has learned to make small: the
    saved threshold is the percentile of held-out errors, and its false-positive rate is
    measured on the half of the held-out split a threshold was not set on."""
    import numpy as np

    spec = get_family("autoencoder")
    values = {**spec.train_defaults, **IMAGE_TINY["autoencoder"], "threshold_percentile": "90"}
    recipe = spec.build_recipe(build(TrainConfig, values), build(spec.config_cls, values),
                               train_dir=digits_dir, validation_dir=None,
                               device=torch.device("cpu"), log=lambda _: None)
    for _ in range(3):
        recipe.train_step(1e-3)
    with torch.no_grad():
        normal = recipe.model.reconstruction_error(recipe.x_val).numpy()
    recipe.export(tmp_path, config={}, metrics={})
    assert load_artifact(tmp_path).model_args["threshold"] == pytest.approx(
        float(np.percentile(normal, 90)))
    a, b = recipe.halves
    assert sorted([*a, *b]) == list(range(len(normal)))
    by_hand = np.mean([(normal[b] > np.percentile(normal[a], 90)).mean(),
                       (normal[a] > np.percentile(normal[b], 90)).mean()])
    metrics = recipe.evaluate()
    assert metrics["val_false_positive_rate"] == pytest.approx(by_hand)
    assert 0.0 < metrics["val_false_positive_rate"] < 0.3
