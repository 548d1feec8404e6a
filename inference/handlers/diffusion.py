"""Serving the diffusion family: a prompt in, pictures out, streamed as they develop.

    {"kind": "generate", "prompt": "a small red circle at the top left",
     "negative_prompt": "", "n": 4, "steps": 25, "guidance_scale": 4.0, "seed": 1}

answers base64 PNGs in JSON (or, for `Accept: image/png`, one PNG: the grid of them).
With `"stream": true` it answers server-sent events: a `preview` event every
`preview_every` denoising steps (the pictures as they stand), then one `final` event
with the images. Requests share denoising batches (inference.denoising): a request
joins the running batch at the next step. A request's noise is drawn from its seed, so
the same seed and parameters give the same pictures, alone or beside other requests (to
the UNet's float rounding, which depends on the batch size).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference.denoising import DenoisingLoop, Work
from inference.errors import ClientError, from_validation_error
from inference.handlers.contract import Binary, ContinuousHandler, Description
from inference.seeds import fresh_seed
from inference.settings import DEFAULTS, ServingSettings
from training.artifact import Artifact
from training.models.diffusion import SAMPLERS, Denoising, from_artifact, start_denoising
from training.models.formats.png import encode_png, grid

PNG = "image/png"
MAX_IMAGES = 16
MAX_PROMPT_CHARS = 2000


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["generate"] = "generate"
    prompt: str = Field("", max_length=MAX_PROMPT_CHARS,
                        description="what to draw; empty draws without a prompt")
    negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS,
                                 description="what to steer away from (guidance > 0)")
    n: int = Field(1, ge=1, le=MAX_IMAGES, description="images to generate")
    steps: int | None = Field(None, ge=1, le=200, description="denoising steps "
                              "(the model's default when left out)")
    guidance_scale: float | None = Field(None, ge=0.0, le=30.0, description=(
        "classifier-free guidance: 0 ignores the prompt, 1 follows it unguided, more "
        "follows it harder (the model's default when left out)"))
    sampler: Literal["dpm", "ddim"] | None = Field(None, description="DPM-Solver++ or DDIM")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="same seed, same images")
    stream: bool = Field(False, description="server-sent events: previews, then the images")
    preview_every: int = Field(5, ge=1, le=200, description="steps between stream previews")


@dataclass(frozen=True)
class Decoded:
    """A validated request with the model's defaults filled in."""

    params: GenerateRequest
    png: bool  # answer with one image/png body


class DiffusionJob:
    """One request's images through the denoising loop; its callbacks run in the loop's
    thread, ``emit`` receiving the stream's events and ``done`` the job once it ends."""

    def __init__(self, handler: DiffusionHandler, request: Decoded, *,
                 emit: Callable[[dict[str, Any]], None] | None,
                 done: Callable[[DiffusionJob], None] | None) -> None:
        self.handler, self.request = handler, request
        self.emit, self.done = emit, done
        self.tokens: list[int] = []  # the steps done (the scheduler's progress count)
        self.finish_reason: str | None = None
        self.failure: str | None = None  # why it ended without images
        self.run: Denoising | None = None
        self.images: torch.Tensor | None = None

    def sequence(self, *, deadline: float = float("inf"),
                 cancelled: threading.Event | None = None) -> Work:
        self.run = self.handler.start(self.request.params)
        return Work(run=self.run, on_step=self._on_step, on_finish=self._on_finish,
                    deadline=deadline, cancelled=cancelled or threading.Event())

    @property
    def streaming(self) -> bool:
        return self.emit is not None and self.request.params.stream

    def _on_step(self, run: Denoising) -> None:
        self.tokens.append(run.done_steps)
        if self.streaming and not run.finished \
                and run.done_steps % self.request.params.preview_every == 0:
            assert self.emit is not None
            self.emit({"event": "preview", "step": run.done_steps, "steps": run.steps,
                       "images": self.handler.encode(run.estimate(self.handler.model))})

    def _on_finish(self, reason: str) -> None:
        if reason == "done" and self.run is not None:
            self.finish_reason = "done"
            self.images = self.handler.model.to_images(self.run.x)
            if self.streaming:
                assert self.emit is not None
                self.emit({"event": "final", "step": self.run.steps, "steps": self.run.steps,
                           **self.handler.answer(self.request.params, self.images)})
        else:
            self.failure = reason
        if self.done is not None:
            self.done(self)


class DiffusionHandler(ContinuousHandler):
    family = "diffusion"
    solo_slots = MAX_IMAGES

    def __init__(self, artifact: Artifact, device: str = "cpu",
                 settings: ServingSettings = DEFAULTS) -> None:
        loaded = from_artifact(artifact, device)
        self.model, self.tokens, self.spec = loaded.model, loaded.tokens, loaded.spec
        self.cfg = self.model.cfg
        self.device = device

    # --- decode ------------------------------------------------------------------
    def decode(self, payload: Any, accept: str | None = None) -> Decoded:
        if isinstance(payload, str):  # a bare JSON string is a prompt
            payload = {"prompt": payload}
        if not isinstance(payload, dict):
            raise ClientError('send a JSON object such as {"prompt": "a red circle", '
                              '"n": 4, "seed": 1}')
        kind = payload.get("kind", "generate")
        if kind != "generate":
            raise ClientError(f"kind {kind!r} is not served by this diffusion model; use: "
                              f"generate")
        try:
            request = GenerateRequest.model_validate(payload)
        except ValidationError as exc:
            raise from_validation_error(exc, valid={"body": sorted(
                GenerateRequest.model_fields)}) from None
        for name in ("prompt", "negative_prompt"):
            count = self.tokens.count(getattr(request, name))
            if count > self.cfg.max_prompt_tokens:
                raise ClientError(f"{name} is {count - 1} tokens; this model reads at most "
                                  f"{self.cfg.max_prompt_tokens - 1}: shorten it")
        png = bool(accept and PNG in accept.lower())
        if png and request.stream:
            raise ClientError(f"a stream answers with events, not one image: drop "
                              f"'Accept: {PNG}' or 'stream'", status=406)
        return Decoded(params=request.model_copy(update={
            "seed": request.seed if request.seed is not None else fresh_seed(2**31),
            "steps": request.steps or self.cfg.steps,
            "guidance_scale": self.cfg.guidance_scale if request.guidance_scale is None
            else request.guidance_scale,
            "sampler": request.sampler or self.cfg.sampler}), png=png)

    # --- the model ----------------------------------------------------------------
    def start(self, request: GenerateRequest) -> Denoising:
        """The request's images as pure noise, with its sampler and guidance."""
        assert request.seed is not None and request.steps is not None
        assert request.guidance_scale is not None
        generator = torch.Generator(device=self.device).manual_seed(request.seed)
        return start_denoising(self.model, self.tokens, request.prompt, n=request.n,
                               steps=request.steps, guidance_scale=request.guidance_scale,
                               negative_prompt=request.negative_prompt,
                               sampler=request.sampler, generator=generator)

    def encode(self, images: torch.Tensor) -> list[str]:
        return [base64.b64encode(encode_png(i)).decode("ascii")
                for i in images.detach().cpu().numpy()]

    def decode_loop(self, slots: int) -> DenoisingLoop:
        return DenoisingLoop(self.model, images=max(1, slots))

    def jobs(self, request: Decoded, *, emit: Callable[[dict[str, Any]], None] | None = None,
             done: Callable[[Any], None] | None = None) -> list[DiffusionJob]:
        return [DiffusionJob(self, request, emit=emit, done=done)]

    def collect(self, request: Decoded, jobs: list[DiffusionJob]) -> Any:
        [job] = jobs
        assert job.images is not None
        if request.png:
            array = job.images.cpu().numpy()
            return Binary(encode_png(array[0] if len(array) == 1 else grid(array)), PNG)
        return self.answer(request.params, job.images)

    def answer(self, params: GenerateRequest, images: torch.Tensor) -> dict[str, Any]:
        return {"kind": "generate", "seed": params.seed, "prompt": params.prompt,
                "steps": params.steps, "guidance_scale": params.guidance_scale,
                "sampler": params.sampler, "media_type": PNG, "images": self.encode(images)}

    def wants_stream(self, request: Decoded) -> bool:
        return request.params.stream

    # --- the rest of the contract ---------------------------------------------------
    def probe(self) -> None:
        self.predict(self.decode(self.smoke_request()))

    def smoke_request(self) -> dict[str, Any]:
        return {"kind": "generate", "prompt": "a red circle", "n": 1, "steps": 2, "seed": 0}

    def request_models(self) -> list[type[BaseModel]]:
        return [GenerateRequest]

    def describe(self) -> Description:
        return Description(playground={
            "input": "text", "input_field": "prompt", "stream": True, "output": "png",
            "template": {"kind": "generate", "n": 4, "steps": self.cfg.steps,
                         "guidance_scale": self.cfg.guidance_scale, "preview_every": 5},
            "samplers": list(SAMPLERS)}, kinds=("generate",))
