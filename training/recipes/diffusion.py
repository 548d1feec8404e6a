"""Training recipe of the diffusion family: captioned images -> a prompt-to-image model.

Data: the bundled captioned scenes (`training.data.scenes`: 48×48 shapes whose attributes
vary independently, four captions a scene at random levels of detail, one drawn each
time the scene is), or a folder of captioned images (`training.data.captions`), held out
by `val_fraction` or given as the validation channel. The tokenizer is a byte-level BPE
fitted to the training captions.

Each step: a batch of images, one caption each (the empty prompt for
`condition_dropout` of them), one DDPM loss (training.models.diffusion), one update,
and the exponential moving average of the weights, which is what samples and is exported.

Evaluation: the held-out denoising loss at fixed timesteps and noise (`val_loss`); on the
bundled scenes also the prompt-detail evaluation (training.evaluation.prompting), judged
by a classifier trained on other real scenes.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image

from training import checkpoint, distributed
from training.artifact import write_artifact
from training.averaging import moving_average
from training.config import TrainConfig
from training.data.captions import load_captioned_folder
from training.data.errors import DataError
from training.data.scenes import SIZE, CaptionedScenes, bundled_scenes, random_caption
from training.data.tokens import split
from training.loop import optimizer_step
from training.models.convnets import ImageSpec
from training.models.diffusion import (
    DiffusionConfig,
    PromptDiffusion,
    PromptTokens,
    diffusion_loss,
    generate,
    model_args,
    noise_schedule,
)
from training.models.formats.png import encode_png, grid
from training.models.formats.tokenizer import TOKENIZER_FILE, TextTokenizer

FAMILY = "diffusion"
SAMPLES_FILE = "samples/grid.png"
PROMPTS_FILE = "samples/prompts.json"
#: The bundled data: held-out scenes, captions drawn per scene (`scenes` are trained on).
HELD_OUT_SCENES, CAPTIONS_PER_SCENE = 512, 4
#: Held-out images and timesteps the denoising loss is measured on.
VAL_LOSS_IMAGES, VAL_LOSS_TIMESTEPS = 256, (50, 200, 400, 600, 800, 950)
#: The prompt-detail evaluation: real scenes the judge learns from, pictures for the
#: Fréchet distance at most (8 per prompted scene; `eval_prompts` one- and two-thing
#: scenes are prompted).
JUDGE_SCENES, FID_IMAGES = 6000, 256


def _square(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, size, size, C): centre-cropped to a square, resized."""
    _, h, w, c = images.shape
    if (h, w) == (size, size):
        return images
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    out = []
    for image in images[:, top:top + side, left:left + side]:
        pil = Image.fromarray(image[..., 0] if c == 1 else image)
        out.append(np.asarray(pil.resize((size, size), Image.Resampling.LANCZOS)))
    stacked = np.stack(out)
    return stacked[..., None] if c == 1 else stacked


def _pixel_statistics(images: torch.Tensor) -> dict[str, Any]:
    """The training images' per-channel mean and spread about it, in the UNet's [-1, 1]
    (the model's preconditioning reads them)."""
    x = images.float() / 127.5 - 1.0
    mean = x.mean(dim=(0, 2, 3))
    std = (x - mean.view(1, -1, 1, 1)).pow(2).mean().sqrt()
    return {"data_mean": tuple(round(float(m), 6) for m in mean),
            "data_std": round(max(float(std), 1e-3), 6)}


@functools.cache
def scene_judge(seed: int) -> Any:
    """The scene judge, trained on real scenes no prompt is made from (once a process)."""
    from training.evaluation.attributes import SceneJudge

    return SceneJudge.fit(bundled_scenes(JUDGE_SCENES, seed + 2), seed=seed)


class Recipe:
    """The diffusion family's training (a Recipe of training.recipes.contract)."""

    modality = "captioned"

    def __init__(self, run: TrainConfig, model_cfg: DiffusionConfig, *,
                 train_dir: Path | None, validation_dir: Path | None, device: torch.device,
                 log: Callable[[str], None] = print) -> None:
        self.run, self.cfg, self.device, self.log = run, model_cfg, device, log
        self.bundled = train_dir is None
        self.scenes: CaptionedScenes | None = None
        if self.bundled:
            if model_cfg.image_size != SIZE:
                raise DataError(f"the bundled scenes are {SIZE}×{SIZE}: set image_size={SIZE} "
                                f"or give a train channel of your own captioned images")
            rng = np.random.default_rng(run.seed)
            scenes = bundled_scenes(model_cfg.scenes, run.seed)
            captions = [[random_caption(s, rng) for _ in range(CAPTIONS_PER_SCENE)]
                        for s in scenes.scenes]
            self.scenes = bundled_scenes(HELD_OUT_SCENES, run.seed + 1)
            train_images, val_images = scenes.images, self.scenes.images
            val_captions = self.scenes.captions
            source, files = "bundled captioned scenes (training.data.scenes)", 0
            log(f"no train channel: using {model_cfg.scenes} {source}")
        else:
            data = load_captioned_folder(train_dir)  # type: ignore[arg-type]
            pairs = list(zip(data.images, data.captions, strict=True))
            if validation_dir is not None:
                held = load_captioned_folder(validation_dir)
                if held.mode != data.mode:
                    raise DataError(f"the validation channel's images are {held.mode}, the "
                                    f"train channel's {data.mode}: give both one colour mode")
                val_pairs = list(zip(held.images, held.captions, strict=True))
            else:
                pairs, val_pairs = split(pairs, run.val_fraction, run.seed,
                                         f"{train_dir}'s captioned images")
            train_images = _square(np.stack([p[0] for p in pairs]), model_cfg.image_size)
            val_images = _square(np.stack([p[0] for p in val_pairs]), model_cfg.image_size)
            captions = [[p[1]] for p in pairs]
            val_captions = [p[1] for p in val_pairs]
            source, files = str(train_dir), len(data)
            log(f"train channel: {len(data)} captioned {data.mode} images")
        self.tokenizer = TextTokenizer.train([c for cs in captions for c in cs],
                                             vocab_size=model_cfg.vocab_size)
        self.tokens = PromptTokens(self.tokenizer, model_cfg.max_prompt_tokens)
        self.spec = ImageSpec(size=model_cfg.image_size, channels=train_images.shape[-1],
                              classes=())
        # Pixels stay uint8 (N, C, S, S) until a batch is drawn.
        self.x_train = torch.from_numpy(np.ascontiguousarray(train_images.transpose(0, 3, 1, 2)))
        self.cfg = model_cfg = replace(model_cfg, **_pixel_statistics(self.x_train))
        self.x_val = torch.from_numpy(np.ascontiguousarray(val_images.transpose(0, 3, 1, 2)))
        flat = [c for cs in captions for c in cs]
        ids, mask = self.tokens(flat)
        per = len(captions[0])
        self.ids = ids.view(len(captions), per, -1)
        self.mask = mask.view(len(captions), per, -1)
        self.empty_ids, self.empty_mask = self.tokens([""])
        self.val_ids, self.val_mask = self.tokens(val_captions)
        self.val_captions = val_captions
        self.data_summary = {
            "source": source, "modality": "captioned", "files": files,
            "images": len(self.x_train) + len(self.x_val), "train_images": len(self.x_train),
            "validation_images": len(self.x_val), "mode": self.spec.mode,
            "size": self.spec.size, "captions": len(flat),
            "tokenizer_vocab": self.tokenizer.vocab_size,
        }

        torch.manual_seed(run.seed)
        self.model = PromptDiffusion(model_cfg, self.spec).to(device)
        self.ema = moving_average(self.model, model_cfg.ema_decay)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=run.learning_rate,
                                           weight_decay=run.weight_decay)
        self.schedule = noise_schedule(model_cfg)
        self.batches = torch.Generator().manual_seed(run.seed)
        self.noise = torch.Generator(device=device).manual_seed(run.seed + 3)
        self.last_prompting: Any = None
        parameters = sum(p.numel() for p in self.model.parameters())
        unet = cast(torch.nn.Module, self.model.unet)
        log(f"model: {parameters:,} parameters (UNet "
            f"{sum(p.numel() for p in unet.parameters()):,}, prompt encoder "
            f"{sum(p.numel() for p in self.model.text.parameters()):,}); data: "
            f"{len(self.x_train):,} train / {len(self.x_val):,} held-out "
            f"{self.spec.size}×{self.spec.size} {self.spec.mode} images")
        self.references: dict[str, float] = {}

    # --- training ------------------------------------------------------------------
    def state_objects(self) -> dict[str, checkpoint.Stateful]:
        return {"batches": self.batches, "noise": self.noise, "model": self.model,
                "ema": self.ema, "optimizer": self.optimizer}

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's rows of a global batch: images in [0, 1], prompt ids and mask (the
        empty prompt for `condition_dropout` of them)."""
        b = self.run.batch_size
        idx = torch.randint(len(self.x_train), (b,), generator=self.batches)
        pick = torch.randint(self.ids.shape[1], (b,), generator=self.batches)
        drop = torch.rand(b, generator=self.batches) < self.cfg.condition_dropout
        part = distributed.current().part(b)
        idx, pick, drop = idx[part], pick[part], drop[part]
        ids = torch.where(drop[:, None], self.empty_ids, self.ids[idx, pick])
        mask = torch.where(drop[:, None], self.empty_mask, self.mask[idx, pick])
        x = self.x_train[idx].to(self.device).float() / 255.0
        return x, ids.to(self.device), mask.to(self.device)

    def train_step(self, lr: float) -> dict[str, float]:
        self.model.train()
        x, ids, mask = self.batch()
        loss = diffusion_loss(self.model, self.schedule, x, ids, mask, self.noise)
        optimizer_step(self.optimizer, loss, lr=lr, grad_clip=self.run.grad_clip)
        self.ema.update_parameters(self.model)
        return {"train_loss": loss.item(), "images": float(len(x))}

    @property
    def sampler_model(self) -> PromptDiffusion:
        """The weights that generate: the moving average once this run has trained, else
        the model's own (an artifact's weights, loaded by rebuild, are the average)."""
        module = self.ema.module if int(self.ema.n_averaged) > 0 else self.model
        assert isinstance(module, PromptDiffusion)
        return module.eval()

    # --- evaluation ----------------------------------------------------------------
    @torch.no_grad()
    def val_loss(self) -> float:
        """The held-out denoising loss at fixed timesteps and noise, so runs compare."""
        model = self.sampler_model
        n = min(VAL_LOSS_IMAGES, len(self.x_val))
        x = self.x_val[:n].to(self.device).float() / 255.0
        ids, mask = self.val_ids[:n].to(self.device), self.val_mask[:n].to(self.device)
        losses = []
        for t in VAL_LOSS_TIMESTEPS:
            generator = torch.Generator(device=self.device).manual_seed(self.run.seed + t)
            steps = torch.full((n,), t, dtype=torch.long, device=self.device)
            losses.append(float(diffusion_loss(model, self.schedule, x, ids, mask, generator,
                                               timesteps=steps)))
        return float(np.mean(losses))

    def draw(self, prompts: Sequence[str], guidance: float) -> np.ndarray:
        """Pictures for prompts at a guidance scale, uint8 (N, S, S, C), seeded."""
        images = generate(self.sampler_model, self.tokens, list(prompts), steps=self.cfg.steps,
                          guidance_scale=guidance, seed=self.run.seed + 7)
        return (images.permute(0, 2, 3, 1).cpu().numpy() * 255.0).round().astype(np.uint8)

    def judge(self) -> Any:
        return scene_judge(self.run.seed)

    def prompting(self) -> Any:
        """The prompt-detail evaluation (bundled scenes only)."""
        from training.evaluation.prompting import prompt_evaluation

        assert self.scenes is not None
        judge = self.judge()
        count = min(FID_IMAGES, 8 * self.cfg.eval_prompts)
        reference = bundled_scenes(count, self.run.seed + 5)
        real = CaptionedScenes(images=self.scenes.images[:count],
                               scenes=self.scenes.scenes[:count],
                               captions=self.scenes.captions[:count])
        self.last_prompting = prompt_evaluation(
            self.draw, judge, one_thing=bundled_scenes(self.cfg.eval_prompts, self.run.seed + 3,
                                                       things=1).scenes,
            two_things=bundled_scenes(self.cfg.eval_prompts, self.run.seed + 4,
                                      things=2).scenes,
            real=real, reference=reference, guidance=self.cfg.guidance_scale)
        return self.last_prompting

    def evaluate(self) -> dict[str, float]:
        out = {"val_loss": self.val_loss()}
        if self.bundled:
            out.update(self.prompting().metrics)
        return out

    # --- the artifact ----------------------------------------------------------------
    def samples(self) -> tuple[np.ndarray, list[str], int]:
        """Pictures for the samples grid, their prompts, and the grid's columns: on the
        bundled scenes, six scenes (columns) at rising detail (rows); else held-out
        captions."""
        if self.last_prompting is not None:
            shown = self.last_prompting
            return shown.detail_grid, shown.detail_prompts, len(shown.detail_grid) // 6
        prompts = self.val_captions[:16]
        pictures = self.draw(prompts, self.cfg.guidance_scale)
        return pictures.transpose(0, 3, 1, 2).astype(np.float32) / 255.0, prompts, 4

    def export(self, directory: Path, *, config: dict[str, object],
               metrics: dict[str, float]) -> None:
        pictures, prompts, columns = self.samples()
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer_path, grid_path = Path(tmp) / TOKENIZER_FILE, Path(tmp) / "grid.png"
            prompts_path = Path(tmp) / "prompts.json"
            self.tokenizer.save(tokenizer_path)
            grid_path.write_bytes(encode_png(grid(pictures, columns=columns), scale=2))
            prompts_path.write_text(json.dumps(prompts, indent=1) + "\n", encoding="utf-8")
            write_artifact(
                directory, family=FAMILY, modality="captioned", config=config,
                model_args=model_args(self.cfg, self.spec, bundled=self.bundled),
                tensors=self.sampler_model.state_dict(), data=self.data_summary,
                metrics={**self.references, **metrics},
                extra_files={TOKENIZER_FILE: tokenizer_path, SAMPLES_FILE: grid_path,
                             PROMPTS_FILE: prompts_path})

