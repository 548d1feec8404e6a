"""The diffusion family's parts: prompts, guidance, seeds alone and batched, the denoising
loop, the prompt-detail scoring, and the handler's refusals (on a tiny model)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from inference.denoising import DenoisingLoop, Work
from inference.errors import ClientError
from training.data.folder import scan_folder
from training.data.scenes import ATTRIBUTES, Scene, Thing, bundled_scenes
from training.evaluation.attributes import Reading
from training.evaluation.prompting import (
    agreements,
    chance,
    detail_cases,
    detail_scores,
    relation_accuracy,
)
from training.hyperparameters import HyperparameterError
from training.models.convnets import ImageSpec
from training.models.diffusion import (
    DiffusionConfig,
    PromptDiffusion,
    PromptTokens,
    denoise_step,
    diffusion_loss,
    generate,
    noise_schedule,
    start_denoising,
)
from training.models.formats.tokenizer import TextTokenizer

TINY = DiffusionConfig(image_size=16, patch=4, width=16, text_width=32, text_layers=1,
                       vocab_size=300, max_prompt_tokens=12, steps=4)
COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 170, 60)}


@pytest.fixture(scope="module")
def tiny() -> tuple[PromptDiffusion, PromptTokens]:
    torch.manual_seed(0)
    tokenizer = TextTokenizer.train(["a red square", "a blue square", "a green circle"],
                                    vocab_size=TINY.vocab_size)
    return PromptDiffusion(TINY, ImageSpec(16, 3, ())).eval(), \
        PromptTokens(tokenizer, TINY.max_prompt_tokens)


def test_prompts_start_with_the_end_of_text_token_so_the_empty_prompt_is_one_token(
        tiny: tuple[PromptDiffusion, PromptTokens]) -> None:
    _, tokens = tiny
    ids, mask = tokens(["", "a red square", "red " * 40])
    assert ids.shape == mask.shape == (3, TINY.max_prompt_tokens)
    assert mask.sum(1).tolist()[0] == 1 and ids[0, 0] == tokens.tokenizer.eot_id
    assert mask[1].sum() == tokens.count("a red square")
    assert mask[2].all()  # a long prompt is cut to the model's length in training


def test_bad_hyperparameters_say_what_to_change() -> None:
    for changes, name in (({"image_size": 20}, "image_size"), ({"sampler": "euler"}, "sampler"),
                          ({"prediction": "sample"}, "prediction"), ({"patch": 3}, "patch"),
                          ({"condition_dropout": 1.0}, "condition_dropout")):
        with pytest.raises(HyperparameterError, match=name):
            DiffusionConfig(**changes).validate()  # type: ignore[arg-type]


def test_the_preconditioned_loss_is_the_unets_own_error_at_every_noise_level(
        tiny: tuple[PromptDiffusion, PromptTokens]) -> None:
    model, tokens = tiny
    schedule = noise_schedule(TINY)
    images = torch.rand(4, 3, 16, 16)
    ids, mask = tokens(["a red square"] * 4)
    t = torch.tensor([10, 10, 900, 900])

    def loss(weighted: bool) -> torch.Tensor:
        return diffusion_loss(model, schedule, images, ids, mask,
                              torch.Generator().manual_seed(0), timesteps=t, reduce=False,
                              weighted=weighted)

    with torch.no_grad():
        weighted, plain = loss(True), loss(False)
        skip, scale = model.preconditioning(t)
    assert weighted.shape == (4,)
    # The clean picture's error over s_out²: what the UNet itself gets wrong, so a random
    # UNet's loss is of one size at both noise levels while the picture's error is not.
    assert torch.allclose(weighted, plain / scale.flatten() ** 2, rtol=1e-4)
    assert float(plain[:2].max()) < 0.01 * float(plain[2:].min())
    assert 0.5 < float(weighted[:2].mean() / weighted[2:].mean()) < 2.0
    # Little noise: the input itself (skip near 1); much noise: the mean plus the UNet.
    assert float(skip[0]) > 0.99 and float(skip[2]) < 0.05


def test_v_prediction_is_min_snr_weighted() -> None:
    cfg = DiffusionConfig(**{**TINY.__dict__, "prediction": "v_prediction"})
    torch.manual_seed(0)
    model = PromptDiffusion(cfg, ImageSpec(16, 3, ())).eval()
    tokenizer = TextTokenizer.train(["a red square"], vocab_size=cfg.vocab_size)
    ids, mask = PromptTokens(tokenizer, cfg.max_prompt_tokens)(["a red square"] * 4)
    schedule = noise_schedule(cfg)
    t = torch.tensor([10, 10, 900, 900])
    with torch.no_grad():
        each = diffusion_loss(model, schedule, torch.rand(4, 3, 16, 16), ids, mask,
                              torch.Generator().manual_seed(0), timesteps=t, reduce=False)
    # At a low timestep the SNR is far above gamma: its weight gamma / (snr + 1) is tiny.
    alphas = schedule.alphas_cumprod[t]
    snr = alphas / (1 - alphas)
    assert float((cfg.snr_gamma / (snr[:2] + 1)).max()) < 0.01
    assert torch.isfinite(each).all() and float(each[:2].max()) < float(each[2:].min())


def _one(model: PromptDiffusion, tokens: PromptTokens, prompt: str, seed: int,
         guidance: float = 3.0, negative: str = "") -> torch.Tensor:
    return generate(model, tokens, [prompt], steps=4, guidance_scale=guidance, seed=seed,
                    negative_prompt=negative)


def test_the_same_seed_gives_the_same_image_alone_or_in_a_batch(
        tiny: tuple[PromptDiffusion, PromptTokens]) -> None:
    """Equal to the UNet's float rounding, which depends on the batch's size (measured:
    a few 1e-6 a step). Random weights with guidance are chaotic under DPM-Solver's
    multistep extrapolation, so this untrained model is checked with DDIM; the trained
    model through the server with the default sampler (tests/e2e/test_diffusion.py)."""
    model, tokens = tiny
    prompts = ["a red square", "a blue square", "a green circle"]
    together = generate(model, tokens, prompts, steps=4, guidance_scale=3.0, seed=5,
                        sampler="ddim")
    for i, prompt in enumerate(prompts):
        alone = generate(model, tokens, [prompt], steps=4, guidance_scale=3.0, seed=5 + i,
                         sampler="ddim")
        assert torch.allclose(alone, together[i:i + 1], atol=1e-4)
    assert not torch.equal(together[0], together[1])


def test_guidance_zero_ignores_the_prompt_and_a_negative_prompt_changes_the_image(
        tiny: tuple[PromptDiffusion, PromptTokens]) -> None:
    model, tokens = tiny
    assert torch.equal(_one(model, tokens, "a red square", 1, 0.0),
                       _one(model, tokens, "a blue square", 1, 0.0))
    assert not torch.equal(_one(model, tokens, "a red square", 1, 3.0),
                           _one(model, tokens, "a blue square", 1, 3.0))
    assert not torch.equal(_one(model, tokens, "a red square", 1, 3.0, "blue"),
                           _one(model, tokens, "a red square", 1, 3.0))


def test_runs_at_different_steps_share_one_unet_call(
        tiny: tuple[PromptDiffusion, PromptTokens]) -> None:
    model, tokens = tiny

    def run(prompt: str, steps: int, seed: int) -> Any:
        return start_denoising(model, tokens, prompt, n=2, steps=steps, guidance_scale=2.0,
                               generator=torch.Generator().manual_seed(seed))

    early, late = run("a red square", 6, 1), run("a blue square", 3, 2)
    solo = run("a blue square", 3, 2)
    for _ in range(2):
        denoise_step(model, [early])
    while not late.finished:
        denoise_step(model, [early, late])  # the late one joins two steps behind
        denoise_step(model, [solo])
    assert early.done_steps == 5 and late.done_steps == 3
    assert torch.allclose(late.x, solo.x, atol=1e-5)


def test_the_denoising_loop_admits_requests_between_steps_and_ends_each(
        tiny: tuple[PromptDiffusion, PromptTokens]) -> None:
    model, tokens = tiny
    loop = DenoisingLoop(model, images=8)
    ended: list[str] = []
    all_done = threading.Event()

    def finish(reason: str) -> None:
        ended.append(reason)
        if len(ended) == 4:
            all_done.set()

    cancelled = threading.Event()
    cancelled.set()
    try:
        for i, (steps, gone) in enumerate(((8, False), (4, False), (4, True), (40, False))):
            run = start_denoising(model, tokens, "a red square", n=2, steps=steps,
                                  guidance_scale=2.0, generator=torch.Generator().manual_seed(i))
            loop.submit(Work(run=run, on_step=lambda r: None, on_finish=finish,
                             cancelled=cancelled if gone else threading.Event(),
                             deadline=0.0 if steps == 40 else float("inf")))
        assert all_done.wait(30)
    finally:
        loop.close()
    assert sorted(ended) == ["cancelled", "deadline", "done", "done"]
    assert max(loop.batches) == 2  # the two live requests stepped together


# --- the prompt-detail scoring -------------------------------------------------------
def _perfect(scene: Scene) -> Reading:
    return Reading(background=scene.background,
                   things={t.position: t for t in scene.things},
                   presence={t.position: 0.99 for t in scene.things})


def test_a_picture_that_is_the_scene_scores_every_attribute_right() -> None:
    scenes = bundled_scenes(20, 3, things=1).scenes
    cases = detail_cases(scenes)
    scores = detail_scores([_perfect(c.scene) for c in cases], cases)
    assert all(v == 1.0 for level in scores.levels.values() for v in level.values())
    assert sorted(scores.levels) == list(range(1, len(ATTRIBUTES) + 1))
    assert chance()["position"] == pytest.approx(1 / 9) and chance()["size"] == 0.5


def test_the_surest_thing_is_scored_and_a_missing_thing_is_wrong() -> None:
    scene = Scene((Thing("circle", "red", "small", "solid", "top left"),), "white")
    [case] = [c for c in detail_cases([scene]) if len(c.named) == len(ATTRIBUTES)]
    stray = Thing("square", "blue", "large", "outlined", "centre")
    unsure = Reading("white", {"top left": scene.things[0], "centre": stray},
                     {"top left": 0.6, "centre": 0.9})
    empty = Reading("white", {}, {})
    agree = agreements([unsure, empty], [case, case])
    assert agree["shape"].tolist() == [False, False]
    assert agree["background"].tolist() == [True, True]


def test_a_relation_is_right_only_with_both_things_that_way_round() -> None:
    a = Thing("circle", "red", "small", "solid", "left")
    b = Thing("square", "blue", "small", "solid", "right")
    scene = Scene((a, b), "white")
    swapped = Reading("white", {"right": Thing("circle", "red", "small", "solid", "right"),
                                "left": Thing("square", "blue", "small", "solid", "left")})
    one = Reading("white", {"left": a})
    assert relation_accuracy([_perfect(scene), swapped, one], [scene] * 3) == pytest.approx(1 / 3)


# --- a captioned folder --------------------------------------------------------------
def captioned_folder(root: Path, n: int = 24, size: int = 16) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        colour = list(COLOURS)[i % len(COLOURS)]
        image = np.full((size, size, 3), 245, dtype=np.uint8)
        image[4:12, 4:12] = COLOURS[colour]
        Image.fromarray(image).save(root / f"{i}.png")
        records.append({"file": f"{i}.png", "text": f"a {colour} square"})
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def test_a_captioned_folder_is_its_own_modality(tmp_path: Path) -> None:
    assert scan_folder(captioned_folder(tmp_path / "a")).modality == "captioned"
    beside = tmp_path / "b"
    beside.mkdir()
    Image.new("RGB", (8, 8)).save(beside / "x.png")
    (beside / "x.txt").write_text("a black square")
    assert scan_folder(beside).modality == "captioned"


@pytest.fixture(scope="module")
def handler(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from inference.handlers.diffusion import DiffusionHandler
    from tests.conftest import train_on_one_thread
    from training.artifact import load_artifact
    from training.local import emulate_opt_ml

    root = tmp_path_factory.mktemp("captioned")
    model = train_on_one_thread(emulate_opt_ml(
        root / "opt_ml", data=captioned_folder(root / "data"), hyperparameters={
        "family": "diffusion", "max_steps": "3", "width": "16", "text_width": "32",
        "text_layers": "1", "image_size": "16", "vocab_size": "300", "max_prompt_tokens": "12",
        "steps": "3", "batch_size": "4", "val_fraction": "0.25"}))
    return DiffusionHandler(load_artifact(model))


@pytest.mark.parametrize(("payload", "message"), [
    ({"prompt": "a red square", "n": 0}, "n"),
    ({"prompt": "a red square", "steps": 0}, "steps"),
    ({"prompt": "a red square", "guidance_scale": -1}, "guidance_scale"),
    ({"prompt": "a red square", "sampler": "euler"}, "sampler"),
    ({"prompt": "red " * 40}, "prompt is .* tokens; this model reads at most 11"),
    ({"prompt": "a red square", "colour": "red"}, "colour"),
    ({"kind": "sample"}, "kind 'sample' is not served"),
    ([1, 2], "send a JSON object"),
])
def test_bad_requests_are_refused_before_the_model_runs(handler: Any, payload: Any,
                                                        message: str) -> None:
    with pytest.raises(ClientError, match=message):
        handler.decode(payload)


def test_a_prompt_streams_previews_then_the_images(handler: Any) -> None:
    request = handler.decode({"prompt": "a red square", "n": 2, "steps": 6, "seed": 4,
                              "stream": True, "preview_every": 2})
    events = list(handler.stream(request))
    assert [e["event"] for e in events] == ["preview", "preview", "final"]
    assert [e["step"] for e in events] == [2, 4, 6]
    assert len(events[-1]["images"]) == 2
    whole = handler.predict(handler.decode({"prompt": "a red square", "n": 2, "steps": 6,
                                            "seed": 4}))
    assert whole["images"] == events[-1]["images"] and whole["seed"] == 4
    with pytest.raises(ClientError, match="stream answers with events"):
        handler.decode({"prompt": "x", "stream": True}, "image/png")
