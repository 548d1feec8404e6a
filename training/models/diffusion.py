"""Prompt → image: a text-conditioned denoising diffusion model on Hugging Face diffusers.

The denoiser is diffusers' `UNet2DConditionModel`, conditioned on the prompt through
cross-attention; the prompt is read by a small Transformer encoder trained with it, over
the project's own byte-level BPE tokenizer fitted to the captions (nothing is downloaded).
Training is DDPM's (Ho et al. 2020): noise an image to a random timestep of a cosine
schedule and learn to predict v (Salimans & Ho 2022; or the noise), each timestep's loss
weighted by min-SNR (Hang et al. 2023), which converges several times faster; the prompt
is dropped for `condition_dropout` of the images, so the same network also denoises
unconditionally, which classifier-free guidance needs (Ho & Salimans 2022). Sampling runs
diffusers' DPM-Solver++ (Lu et al. 2022) or DDIM (Song et al. 2021) schedulers.

Pixels reach the UNet folded into channels: each `patch`×`patch` square of the image
becomes one position (pixel_unshuffle), so a 48×48 RGB picture is a 12×12 grid of 48
channels. That is lossless (no autoencoder to train, unlike latent diffusion) and 16×
cheaper per step than convolving every pixel, the way "simple diffusion" (Hoogeboom et
al. 2023) scales pixel-space models; the first and last convolutions see every pixel.

Generation is a batch of `Denoising` runs, one per request: each has its own scheduler,
noise generator, prompt and guidance, and `denoise_step` advances any set of them by one
step in one UNet call, so requests can join and leave a running batch between steps
(inference.denoising) and a seeded request gives the same image alone or batched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from training.artifact import Artifact
from training.hyperparameters import require
from training.models.convnets import ImageSpec, load_image_model
from training.models.formats.tokenizer import TOKENIZER_FILE, TextTokenizer

SAMPLERS = ("dpm", "ddim")
PREDICTIONS = ("preconditioned", "v_prediction", "epsilon")


@dataclass
class DiffusionConfig:
    image_size: int = 48  # images are resized to this side (a multiple of 4 × patch)
    patch: int = 4  # pixels a side folded into channels before the UNet (1: none)
    width: int = 64  # channels of the UNet's first level; then 2× and 3× at the next two
    layers_per_block: int = 1  # ResNet layers per UNet level
    text_width: int = 128  # the prompt encoder's width (and the cross-attention's)
    text_layers: int = 2  # Transformer layers of the prompt encoder
    vocab_size: int = 384  # BPE vocabulary fitted to the captions
    max_prompt_tokens: int = 32  # longer prompts are refused at serving, cut in training
    prediction: str = "preconditioned"  # the UNet's output: preconditioned, v_prediction, epsilon
    snr_gamma: float = 5.0  # v_prediction and epsilon: min-SNR loss weighting's cap (0: none)
    data_mean: tuple[float, ...] = (0.0, 0.0, 0.0)  # per channel, in [-1, 1] (set by training)
    data_std: float = 0.5  # the images' spread about data_mean (set by training)
    condition_dropout: float = 0.1  # share of images trained with the empty prompt
    ema_decay: float = 0.999  # exponential moving average of the weights, used to sample
    sampler: str = "dpm"  # dpm (DPM-Solver++ 2M) or ddim
    steps: int = 25  # denoising steps at generation, unless a request says otherwise
    guidance_scale: float = 4.0  # classifier-free guidance at generation (0: unconditional)
    scenes: int = 8000  # bundled scenes to train on (without a train channel)
    eval_prompts: int = 48  # held-out scenes prompted at each level of detail in evaluation

    def validate(self) -> None:
        require(self.patch in (1, 2, 4, 8), "patch", "must be 1, 2, 4 or 8")
        require(self.image_size >= 16 and self.image_size % (4 * self.patch) == 0,
                "image_size", f"must be at least 16 and a multiple of 4 × patch "
                f"({4 * self.patch})")
        require(self.width >= 16 and self.width % 16 == 0, "width",
                "must be a multiple of 16, at least 16")
        require(1 <= self.layers_per_block <= 4, "layers_per_block", "must be 1 to 4")
        require(self.text_width >= 32 and self.text_width % 32 == 0, "text_width",
                "must be a multiple of 32, at least 32")
        require(1 <= self.text_layers <= 12, "text_layers", "must be 1 to 12")
        require(self.vocab_size >= 300, "vocab_size", "must be at least 300 (the 256 bytes "
                "and a few merges)")
        require(4 <= self.max_prompt_tokens <= 256, "max_prompt_tokens", "must be 4 to 256")
        require(self.prediction in PREDICTIONS, "prediction",
                f"must be one of {', '.join(PREDICTIONS)}")
        require(self.snr_gamma >= 0, "snr_gamma", "must be 0 (off) or positive")
        require(self.data_std > 0, "data_std", "must be positive")
        require(0 <= self.condition_dropout < 1, "condition_dropout", "must be in [0, 1)")
        require(0 <= self.ema_decay < 1, "ema_decay", "must be in [0, 1)")
        require(self.sampler in SAMPLERS, "sampler", f"must be one of {', '.join(SAMPLERS)}")
        require(1 <= self.steps <= 200, "steps", "must be 1 to 200")
        require(0 <= self.guidance_scale <= 30, "guidance_scale", "must be 0 to 30")
        require(self.scenes >= 64, "scenes", "must be at least 64")
        require(self.eval_prompts >= 8, "eval_prompts", "must be at least 8")


class PromptEncoder(nn.Module):
    """Token ids -> one vector per token, read by the UNet's cross-attention."""

    def __init__(self, vocab_size: int, width: int, layers: int, max_tokens: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.position = nn.Parameter(torch.zeros(max_tokens, width))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(width, nhead=max(1, width // 32),
                                           dim_feedforward=4 * width, dropout=0.0,
                                           activation="gelu", batch_first=True,
                                           norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask: (B, L) -> (B, L, width); mask is True at real tokens."""
        h = self.embed(ids) + self.position[: ids.shape[1]]
        return self.norm(self.layers(h, src_key_padding_mask=~mask))


class PromptDiffusion(nn.Module):
    """The prompt encoder and the UNet, trained together."""

    alphas_cumprod: torch.Tensor
    grid_mean: torch.Tensor

    def __init__(self, cfg: DiffusionConfig, spec: ImageSpec) -> None:
        from diffusers import UNet2DConditionModel

        super().__init__()
        self.cfg, self.spec = cfg, spec
        self.text = PromptEncoder(cfg.vocab_size, cfg.text_width, cfg.text_layers,
                                  cfg.max_prompt_tokens)
        channels = spec.channels * cfg.patch ** 2
        w = cfg.width
        # Attention costs most at the finest level; the prompt is read at the two coarser.
        # The training schedule's ᾱ (preconditioning) and the data's per-channel mean on
        # the UNet's grid (pixel_unshuffle keeps each channel's p² values together).
        self.register_buffer("alphas_cumprod", noise_schedule(cfg).alphas_cumprod.float(),
                             persistent=False)
        self.register_buffer("grid_mean", torch.tensor(cfg.data_mean, dtype=torch.float32)
                             .repeat_interleave(cfg.patch ** 2).view(1, -1, 1, 1),
                             persistent=False)
        self.unet = UNet2DConditionModel(
            sample_size=cfg.image_size // cfg.patch, in_channels=channels,
            out_channels=channels, block_out_channels=(w, 2 * w, 3 * w),
            layers_per_block=cfg.layers_per_block,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=cfg.text_width, attention_head_dim=32, norm_num_groups=16)

    # --- pixels <-> the UNet's grid ---------------------------------------------------
    def to_grid(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) in [0, 1] -> (B, C·p², S/p, S/p) in [-1, 1]."""
        return F.pixel_unshuffle(images * 2.0 - 1.0, self.cfg.patch)

    def to_images(self, grid: torch.Tensor) -> torch.Tensor:
        return ((F.pixel_shuffle(grid, self.cfg.patch) + 1.0) / 2.0).clamp(0.0, 1.0)

    def grid_shape(self, n: int) -> tuple[int, int, int, int]:
        side = self.cfg.image_size // self.cfg.patch
        return (n, self.spec.channels * self.cfg.patch ** 2, side, side)

    def denoise(self, x: torch.Tensor, t: torch.Tensor, ids: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """The prediction for noisy grids x at timesteps t (B,) under prompts: of the clean
        grid when `preconditioned` (what the samplers read as prediction_type "sample"),
        else the UNet's own output (v or the noise)."""
        hidden = self.text(ids, mask)
        unet = cast(nn.Module, self.unet)  # a torch module (diffusers types it apart)
        out = unet(x, t, encoder_hidden_states=hidden, encoder_attention_mask=mask).sample
        if self.cfg.prediction != "preconditioned":
            return out
        skip, scale = self.preconditioning(t)
        mean = self.grid_mean.to(x.dtype)
        return mean + skip * (x / self.alpha(t) - mean) + scale * out

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """√ᾱ_t, as (B, 1, 1, 1)."""
        return self.alphas_cumprod.to(t.device)[t].sqrt().view(-1, 1, 1, 1)

    def preconditioning(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """EDM's (Karras et al. 2022) skip and output weights at timesteps t: with s the
        noise-to-signal ratio σ_t/√ᾱ_t and σ_d the data's spread, the clean grid is read as
        mean + s_skip·(x/√ᾱ - mean) + s_out·UNet, s_skip = σ_d²/(s² + σ_d²) and s_out =
        s·σ_d/√(s² + σ_d²). At low noise that is the input plus a small correction, at
        high noise the mean plus the UNet's picture, and the UNet's target has unit
        variance throughout. Each (B, 1, 1, 1)."""
        abar = self.alphas_cumprod.to(t.device)[t].view(-1, 1, 1, 1)
        s2 = (1.0 - abar) / abar
        d2 = self.cfg.data_std ** 2
        return d2 / (s2 + d2), (s2 * d2 / (s2 + d2)).sqrt()


def noise_schedule(cfg: DiffusionConfig) -> Any:
    """The training schedule (DDPM, cosine betas), which the samplers are made from."""
    from diffusers import DDPMScheduler

    prediction = "sample" if cfg.prediction == "preconditioned" else cfg.prediction
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                         prediction_type=prediction, clip_sample=False)


def make_sampler(cfg: DiffusionConfig, kind: str, steps: int) -> Any:
    """A fresh sampler (one per generation: samplers keep state between steps)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    base = noise_schedule(cfg).config
    sampler = (DPMSolverMultistepScheduler.from_config(base, algorithm_type="dpmsolver++",
                                                       solver_order=2)
               if kind == "dpm" else
               DDIMScheduler.from_config(base, set_alpha_to_one=True, clip_sample=False))
    sampler.set_timesteps(steps)
    return sampler


def diffusion_loss(model: PromptDiffusion, schedule: Any, images: torch.Tensor,
                   ids: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
                   *, timesteps: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                   reduce: bool = True, weighted: bool = True) -> torch.Tensor:
    """The DDPM objective on a batch, min-SNR weighted (unless not ``weighted``): the
    mean (or, unreduced, each image's) squared error of the UNet's prediction of the noise
    (or of v). ``timesteps`` and ``noise`` are drawn from ``generator`` unless given."""
    x0 = model.to_grid(images)
    n = len(x0)
    if timesteps is None:
        timesteps = torch.randint(0, schedule.config.num_train_timesteps, (n,),
                                  generator=generator, device=x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    noisy = schedule.add_noise(x0, noise, timesteps)
    prediction = model.cfg.prediction
    if prediction == "v_prediction":
        target = schedule.get_velocity(x0, noise, timesteps)
    else:
        target = x0 if prediction == "preconditioned" else noise
    error = (model.denoise(noisy, timesteps, ids, mask) - target).pow(2).flatten(1).mean(1)
    if prediction == "preconditioned":
        # EDM's weighting, 1/s_out²: the UNet's own error, at every noise level alike.
        _, scale = model.preconditioning(timesteps)
        return _reduced(error / scale.flatten().pow(2) if weighted else error, reduce)
    gamma = model.cfg.snr_gamma
    if gamma > 0 and weighted:
        alphas = schedule.alphas_cumprod.to(x0.device)[timesteps]
        snr = alphas / (1.0 - alphas)
        # Min-SNR-γ: the clean image's error weighted by min(SNR, γ) (v: min(SNR + 1, γ),
        # so the mean is still learnt where the SNR is near 0).
        error = error * ((snr + 1.0).clamp(max=gamma) / (snr + 1.0) if prediction ==
                         "v_prediction" else snr.clamp(max=gamma) / snr)
    return _reduced(error, reduce)


def _reduced(error: torch.Tensor, reduce: bool) -> torch.Tensor:
    return error.mean() if reduce else error


# --- prompts -------------------------------------------------------------------------
class PromptTokens:
    """Prompts -> (ids, mask) of max_prompt_tokens: the tokenizer's end-of-text token
    first (so the empty prompt is one token, the unconditional one), then the prompt's."""

    def __init__(self, tokenizer: TextTokenizer, max_tokens: int) -> None:
        self.tokenizer, self.max_tokens = tokenizer, max_tokens

    def count(self, prompt: str) -> int:
        return 1 + len(self.tokenizer.encode(prompt))

    def __call__(self, prompts: Sequence[str], device: torch.device | str = "cpu"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros(len(prompts), self.max_tokens, dtype=torch.long)
        mask = torch.zeros(len(prompts), self.max_tokens, dtype=torch.bool)
        for i, encoded in enumerate(self.tokenizer.encode_batch(list(prompts))):
            row = [self.tokenizer.eot_id, *encoded][: self.max_tokens]
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = True
        return ids.to(device), mask.to(device)


# --- generation ----------------------------------------------------------------------
@dataclass(eq=False)
class Denoising:
    """One request's images on their way from noise: its sampler, prompt and guidance."""

    x: torch.Tensor  # (n, C·p², s, s) the current noisy grids
    sampler: Any
    ids: torch.Tensor  # (n, L) the prompt, repeated per image
    mask: torch.Tensor
    negative_ids: torch.Tensor  # (n, L) the negative (or empty) prompt
    negative_mask: torch.Tensor
    guidance_scale: float
    done_steps: int = 0

    @property
    def steps(self) -> int:
        return len(self.sampler.timesteps)

    @property
    def finished(self) -> bool:
        return self.done_steps >= self.steps

    @property
    def timestep(self) -> torch.Tensor:
        return self.sampler.timesteps[self.done_steps]

    def _branches(self) -> tuple[bool, bool]:
        """Whether it needs the conditional and the unconditional prediction."""
        return self.guidance_scale != 0.0, self.guidance_scale != 1.0

    def rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The UNet inputs of this step: (x, t, ids, mask), the conditional rows first."""
        cond, uncond = self._branches()
        xs, ids, masks = [], [], []
        if cond:
            xs.append(self.x)
            ids.append(self.ids)
            masks.append(self.mask)
        if uncond:
            xs.append(self.x)
            ids.append(self.negative_ids)
            masks.append(self.negative_mask)
        x = self.sampler.scale_model_input(torch.cat(xs), self.timestep)
        t = self.timestep.to(x.device).expand(len(x))
        return x, t, torch.cat(ids), torch.cat(masks)

    def advance(self, prediction: torch.Tensor) -> None:
        """Guide and take one sampler step with this run's rows of the UNet's output."""
        cond, uncond = self._branches()
        if cond and uncond:
            c, u = prediction.chunk(2)
            prediction = u + self.guidance_scale * (c - u)
        self.x = self.sampler.step(prediction, self.timestep, self.x).prev_sample
        self.done_steps += 1

    def estimate(self, model: PromptDiffusion) -> torch.Tensor:
        """The images as they stand: the current grids, read as clean ones (a preview)."""
        return model.to_images(self.x)


def start_denoising(model: PromptDiffusion, tokens: PromptTokens, prompt: str, *, n: int,
                    steps: int, guidance_scale: float, generator: torch.Generator,
                    negative_prompt: str = "", sampler: str | None = None) -> Denoising:
    device = next(model.parameters()).device
    ids, mask = tokens([prompt], device)
    neg_ids, neg_mask = tokens([negative_prompt], device)
    schedule = make_sampler(model.cfg, sampler or model.cfg.sampler, steps)
    x = torch.randn(model.grid_shape(n), generator=generator, device=device)
    x = x * schedule.init_noise_sigma
    return Denoising(x=x, sampler=schedule, ids=ids.expand(n, -1), mask=mask.expand(n, -1),
                     negative_ids=neg_ids.expand(n, -1), negative_mask=neg_mask.expand(n, -1),
                     guidance_scale=guidance_scale)


@torch.no_grad()
def denoise_step(model: PromptDiffusion, runs: Sequence[Denoising]) -> None:
    """Advance every run by one step, all through one UNet call."""
    parts = [run.rows() for run in runs]
    sizes = [len(p[0]) for p in parts]
    x, t, ids, mask = (torch.cat(column) for column in zip(*parts, strict=True))
    out = model.denoise(x, t, ids, mask)
    for run, rows in zip(runs, out.split(sizes), strict=True):
        run.advance(rows)


@torch.no_grad()
def generate(model: PromptDiffusion, tokens: PromptTokens, prompts: Sequence[str], *,
             steps: int, guidance_scale: float, seed: int, batch: int = 64,
             negative_prompt: str = "", sampler: str | None = None) -> torch.Tensor:
    """One image per prompt, (N, C, S, S) in [0, 1]; image i is seeded with seed + i, so
    each is what a request with that seed gets for n=1."""
    out: list[torch.Tensor] = []
    for start in range(0, len(prompts), batch):
        runs = [start_denoising(model, tokens, p, n=1, steps=steps,
                                guidance_scale=guidance_scale, negative_prompt=negative_prompt,
                                sampler=sampler,
                                generator=torch.Generator().manual_seed(seed + start + i))
                for i, p in enumerate(prompts[start:start + batch])]
        while not runs[0].finished:
            denoise_step(model, runs)
        out.extend(model.to_images(r.x) for r in runs)
    return torch.cat(out)


# --- the artifact --------------------------------------------------------------------
@dataclass
class LoadedDiffusion:
    model: PromptDiffusion
    tokens: PromptTokens
    spec: ImageSpec


def from_artifact(artifact: Artifact, device: str | torch.device = "cpu") -> LoadedDiffusion:
    cfg, spec, model, _ = load_image_model(artifact, DiffusionConfig, PromptDiffusion, device)
    tokenizer = TextTokenizer.from_file(artifact.path(TOKENIZER_FILE))
    return LoadedDiffusion(model=model, tokens=PromptTokens(tokenizer, cfg.max_prompt_tokens),
                           spec=spec)


def model_args(cfg: DiffusionConfig, spec: ImageSpec, *, bundled: bool) -> dict[str, Any]:
    """What the artifact's manifest keeps to rebuild the model (`from_artifact`)."""
    return {**asdict(cfg), "image": spec.as_dict(), "bundled": bundled}
