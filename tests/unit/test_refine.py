"""Refinement jobs: the DPO objective, the channels they need, each family's method."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from inference.handlers import load_handler
from training.artifact import artifact_sha256, load_artifact
from training.entry import run_training
from training.feedback import FeedbackRecord, GenerationRecord, LocalFeedbackStore
from training.local import emulate_opt_ml
from training.refinement.sequences import dpo_loss

STEPS = {"max_steps": "2", "log_interval": "1", "warmup_steps": "1"}


def test_dpo_loss_is_log_two_at_the_reference_and_falls_as_chosen_gains() -> None:
    zero = torch.zeros(3)
    loss, margins = dpo_loss(zero, zero, zero, zero, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2)) and margins.tolist() == [0, 0, 0]
    gained, margins = dpo_loss(torch.tensor([2.0]), torch.tensor([-1.0]), torch.zeros(1),
                               torch.zeros(1), beta=0.5)
    assert margins.item() == pytest.approx(1.5)  # β (Δ_chosen − Δ_rejected)
    assert gained.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.5))))
    # Only the change from the reference counts, not the log-probabilities themselves.
    shifted, _ = dpo_loss(torch.tensor([-3.0]), torch.tensor([-6.0]), torch.tensor([-5.0]),
                          torch.tensor([-5.0]), beta=0.5)
    assert shifted.item() == pytest.approx(gained.item())


def _refine(tmp_path: Path, hyperparameters: dict[str, str], channels: dict[str, Path],
            data: Path | None = None) -> tuple[int, Path, str]:
    opt_ml = emulate_opt_ml(tmp_path / "refine", hyperparameters=hyperparameters, data=data,
                            channels=channels)
    code = run_training(opt_ml)
    failure = opt_ml.failure_path.read_text() if opt_ml.failure_path.exists() else ""
    return code, opt_ml.model_dir, failure


def _text_store(root: Path, ratings: dict[str, int], pairs: bool) -> LocalFeedbackStore:
    store = LocalFeedbackStore(root)
    texts = {"a": " better than ugly", "b": " is the best", "c": " never"}
    for gid, text in texts.items():
        store.put(GenerationRecord(generation_id=gid, family="transformer", kind="generate",
                                   inputs="Beautiful is", parameters={"seed": 1},
                                   output={"text": text}))
    for gid, rating in ratings.items():
        store.put(FeedbackRecord(feedback_id=f"r-{gid}", generation_id=gid, rating=rating))
    if pairs:
        store.put(FeedbackRecord(feedback_id="p-1", chosen="a", rejected="c"))
    return store


def test_dpo_refinement_records_its_lineage(tmp_path: Path, tiny_artifact: Path,
                                            text_dir: Path) -> None:
    store = _text_store(tmp_path / "store", {"b": 5}, pairs=True)
    code, model, failure = _refine(tmp_path, STEPS, {"model": tiny_artifact,
                                                     "feedback": store.root}, text_dir)
    assert code == 0, failure
    manifest = json.loads((model / "genkiln.json").read_text())
    lineage = manifest["lineage"]
    assert lineage["parent_sha256"] == artifact_sha256(tiny_artifact)
    assert (lineage["method"], lineage["pairs"], lineage["ratings"]) == ("dpo", 1, 0)
    assert lineage["feedback_records"] == 2 and "val_loss" in lineage["metrics_before"]
    assert "dpo_loss" in manifest["history"][-2]  # the refinement's own log, after training's
    assert manifest["config"]["max_steps"] == 2  # the job's settings win over the parent's
    assert load_artifact(model).tensors()["wte.weight"].shape == \
        load_artifact(tiny_artifact).tensors()["wte.weight"].shape


def test_without_pairs_well_rated_outputs_are_fine_tuned_on(tmp_path: Path,
                                                            tiny_artifact: Path,
                                                            text_dir: Path) -> None:
    store = _text_store(tmp_path / "store", {"a": 5, "b": 4, "c": 1}, pairs=False)
    code, model, failure = _refine(tmp_path, STEPS, {"model": tiny_artifact,
                                                     "feedback": store.root}, text_dir)
    assert code == 0, failure
    lineage = json.loads((model / "genkiln.json").read_text())["lineage"]
    assert (lineage["method"], lineage["ratings"]) == ("fine-tuning on well-rated outputs", 2)


def test_refinement_needs_both_channels_and_something_to_learn_from(
        tmp_path: Path, tiny_artifact: Path, text_dir: Path) -> None:
    code, _, failure = _refine(tmp_path / "one", STEPS, {"model": tiny_artifact}, text_dir)
    assert code == 2 and "channel 'feedback' is missing" in failure
    store = _text_store(tmp_path / "store", {"a": 2}, pairs=False)
    code, _, failure = _refine(tmp_path / "two", STEPS, {"model": tiny_artifact,
                                                         "feedback": store.root}, text_dir)
    assert code == 2 and "no preference pairs and no ratings of 4 or more" in failure
    code, _, failure = _refine(tmp_path / "three", {**STEPS, "family": "rnn"},
                               {"model": tiny_artifact, "feedback": store.root}, text_dir)
    assert code == 2 and "the model to start from is a transformer" in failure


def _image_store(root: Path, family: str, digits_dir: Path) -> LocalFeedbackStore:
    store = LocalFeedbackStore(root)
    for i, png in enumerate(sorted(digits_dir.rglob("*.png"))[::3]):
        gid = f"img-{i}"
        store.put(GenerationRecord(
            generation_id=gid, family=family, kind="sample", inputs={"class": png.parent.name},
            parameters={"seed": i, "class": png.parent.name},
            output={"png_base64": base64.b64encode(png.read_bytes()).decode()}))
        store.put(FeedbackRecord(feedback_id=f"r-{gid}", generation_id=gid,
                                 rating=5 if i % 2 else 1))
    return store


# One family per method (the VAE's reward fine-tuning is in the e2e loop test; the
# autoencoder shares the RBM's batches).
@pytest.mark.parametrize(("family", "method"), [
    ("gan", "reward fine-tuning"), ("rbm", "rating-weighted fine-tuning")])
def test_each_image_family_refines_and_still_serves(
        family: str, method: str, tmp_path: Path, digits_dir: Path,
        image_artifacts: Callable[[str], Path]) -> None:
    parent = image_artifacts(family)
    store = _image_store(tmp_path / "store", family, digits_dir)
    code, model, failure = _refine(tmp_path, STEPS, {"model": parent, "feedback": store.root},
                                   digits_dir)
    assert code == 0, failure
    lineage = json.loads((model / "genkiln.json").read_text())["lineage"]
    assert lineage["method"] == method and lineage["parent_sha256"] == artifact_sha256(parent)
    handler = load_handler(load_artifact(model))
    answer = handler.predict(handler.decode({"kind": "sample", "n": 1, "seed": 1}))
    assert len(answer["images"]) == 1


def test_a_judged_image_of_the_wrong_size_names_its_record(
        tmp_path: Path, digits_dir: Path, image_artifacts: Callable[[str], Path]) -> None:
    from PIL import Image

    store = _image_store(tmp_path / "store", "vae", digits_dir)
    big = tmp_path / "big.png"
    Image.new("L", (16, 16)).save(big)
    store.put(GenerationRecord(generation_id="too-big", family="vae", kind="sample",
                               inputs={}, parameters={"seed": 1},
                               output={"png_base64": base64.b64encode(big.read_bytes())
                                       .decode()}))
    store.put(FeedbackRecord(feedback_id="r-big", generation_id="too-big", rating=5))
    code, _, failure = _refine(tmp_path, STEPS, {"model": image_artifacts("vae"),
                                                 "feedback": store.root}, digits_dir)
    assert code == 2
    assert "generations/too-big.json: the image is (1, 16, 16)" in failure

