"""Prompt → image speed: genkiln's server against diffusers' own denoising loop (issue 17).

    python -m bench.diffusion [--quick] [--artifact DIR] [--threads N]

The same weights (the default diffusion model's shape, random weights unless --artifact
names a trained one) and the same scheduler (DPM-Solver++ 2M, 25 steps, guidance 4):

- genkiln: `genkiln serve` in a child process, JSON over HTTP, one client with n=1, then
  8 concurrent clients (their requests share denoising steps, inference/denoising.py).
- diffusers: the loop its text-to-image pipelines run (`StableDiffusionPipeline.__call__`
  without the VAE and safety checker): set the scheduler's timesteps, and per step
  duplicate the latents for guidance, `scale_model_input`, one UNet call, guide,
  `scheduler.step`; in-process, no HTTP. At batch 1, at 8 requests one after another (a
  pipeline behind a simple server), and at batch 8 in one call (offline, its best case).

Images per second, medians over interleaved rounds; the load average is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from bench.loadclient import Connection
from bench.machine import Report, interleaved, load_average
from bench.serving import Server
from training.artifact import load_artifact, write_artifact
from training.data.scenes import bundled_scenes
from training.models.convnets import ImageSpec
from training.models.diffusion import (
    DiffusionConfig,
    PromptDiffusion,
    PromptTokens,
    from_artifact,
    make_sampler,
    model_args,
)
from training.models.formats.tokenizer import TOKENIZER_FILE, TextTokenizer

STEPS, GUIDANCE = 25, 4.0
PROMPT = "a small red striped circle at the top left on a pale blue background"


def random_artifact(root: Path) -> Path:
    """The default configuration with random weights: speed does not depend on them."""
    cfg = DiffusionConfig()
    captions = bundled_scenes(500, 0).captions
    tokenizer = TextTokenizer.train(captions, vocab_size=cfg.vocab_size)
    spec = ImageSpec(cfg.image_size, 3, ())
    torch.manual_seed(0)
    model = PromptDiffusion(cfg, spec)
    tokenizer.save(root / TOKENIZER_FILE)
    return write_artifact(root / "diffusion", family="diffusion", modality="captioned",
                          config=asdict(cfg), model_args=model_args(cfg, spec, bundled=True),
                          tensors=model.state_dict(), data={}, metrics={},
                          extra_files={TOKENIZER_FILE: root / TOKENIZER_FILE})


@torch.inference_mode()
def diffusers_loop(model: PromptDiffusion, tokens: PromptTokens, prompts: list[str],
                   seed: int) -> torch.Tensor:
    """diffusers' text-to-image pipeline loop over ``prompts`` in one batch."""
    n = len(prompts)
    ids, mask = tokens(prompts)
    empty_ids, empty_mask = tokens([""] * n)
    hidden = model.text(torch.cat([empty_ids, ids]), torch.cat([empty_mask, mask]))
    both_masks = torch.cat([empty_mask, mask])
    scheduler = make_sampler(model.cfg, "dpm", STEPS)
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(model.grid_shape(n), generator=generator) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        latent_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        noise = model.unet(latent_input, t, encoder_hidden_states=hidden,  # type: ignore
                           encoder_attention_mask=both_masks).sample
        uncond, cond = noise.chunk(2)
        noise = uncond + GUIDANCE * (cond - uncond)
        latents = scheduler.step(noise, t, latents).prev_sample
    return model.to_images(latents)


async def served(url: str, clients: int, per_client: int) -> float:
    """Images/s of ``clients`` concurrent clients, ``per_client`` requests each."""
    async def client(k: int) -> None:
        async with Connection(url) as http:
            for i in range(per_client):
                status, body = await http.post({"prompt": PROMPT, "n": 1, "steps": STEPS,
                                                "guidance_scale": GUIDANCE,
                                                "seed": 100 * k + i})
                assert status == 200, body

    started = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    return clients * per_client / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--artifact", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rounds = 2 if args.quick else 4
    report = Report("diffusion", "prompt -> image bench (issue 17)")
    report.add(f"# load average at the start {load_average()}; {args.threads} threads; "
               f"{STEPS} DPM-Solver++ steps, guidance {GUIDANCE}, 48x48 RGB")
    with tempfile.TemporaryDirectory(prefix="genkiln-bench-") as tmp:
        artifact = args.artifact or random_artifact(Path(tmp))
        loaded = from_artifact(load_artifact(artifact))
        model, tokens = loaded.model, loaded.tokens
        server = Server(artifact, {"GENKILN_NUM_THREADS": str(args.threads)},
                        Path(tmp) / "server.log")
        try:
            url = f"{server.url}/invocations"
            one, eight, loop1, loop_seq, loop8 = interleaved(
                rounds,
                lambda: asyncio.run(served(url, 1, 2)),
                lambda: asyncio.run(served(url, 8, 1)),
                lambda: 2 / _timed(lambda: [diffusers_loop(model, tokens, [PROMPT], s)
                                            for s in range(2)]),
                lambda: 8 / _timed(lambda: [diffusers_loop(model, tokens, [PROMPT], s)
                                            for s in range(8)]),
                lambda: 8 / _timed(lambda: diffusers_loop(model, tokens, [PROMPT] * 8, 0)))
        finally:
            server.stop()
    report.add("| row | genkiln (server, HTTP) | diffusers loop (in-process) | ratio |")
    report.add("|---|---|---|---|")
    report.add(f"| batch 1, one client | {one:.2f} images/s | {loop1:.2f} images/s | "
               f"{one / loop1:.2f}x |")
    report.add(f"| 8 concurrent clients | {eight:.2f} images/s | {loop_seq:.2f} images/s "
               f"(one after another) | {eight / loop_seq:.2f}x |")
    report.add(f"| 8 concurrent clients vs offline batch 8 | {eight:.2f} images/s | "
               f"{loop8:.2f} images/s (one call of 8) | {eight / loop8:.2f}x |")
    report.save()


def _timed(work: object) -> float:
    started = time.perf_counter()
    work()  # type: ignore[operator]
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
