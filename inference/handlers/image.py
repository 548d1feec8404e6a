"""What the image families' handlers share: request kinds, input images, PNG answers.

A request names its `kind` (each family serves a few, e.g. a GAN only `sample`) and
takes a `seed`; the same seed gives the same images. Input images arrive as base64 PNG
or JPEG (a `data:` URL works too) or as nested lists of pixels in [0, 1] of the model's
size. Images go back as base64 PNGs in JSON, or as one `image/png` body (a grid when
there are several) when the request's Accept header asks for image/png.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference.errors import ClientError, from_validation_error
from inference.handlers.contract import Binary, Description, MicroBatchHandler
from inference.seeds import fresh_seed
from training.models.convnets import ImageSpec
from training.models.formats.png import encode_png, grid

PNG = "image/png"
MAX_IMAGES = 64

#: An input image: base64 PNG/JPEG, or rows of pixels (H, W) or (H, W, 3) in [0, 1].
ImageInput = str | list[Any]


class ImageRequest(BaseModel):
    """Fields every kind takes."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    kind: str
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="same seed, same output")

    def inputs(self) -> list[ImageInput]:
        """The images the request gives the model."""
        return []

    def requested_class(self) -> int | str | None:
        """The class (name or index) the request asks for, where its kind takes one."""
        return None


class SampleRequest(ImageRequest):
    kind: Literal["sample"] = "sample"
    n: int = Field(1, ge=1, le=MAX_IMAGES, description="images to generate")
    class_: int | str | None = Field(None, alias="class",
                                     description="class name or index (conditional models)")

    def requested_class(self) -> int | str | None:
        return self.class_


class OneImageRequest(ImageRequest):
    image: ImageInput = Field(description="base64 PNG/JPEG, or nested lists of pixels")

    def inputs(self) -> list[ImageInput]:
        return [self.image]


@dataclass
class Decoded:
    """A validated request, ready for the model."""

    request: ImageRequest
    seed: int
    png: bool  # answer with an image/png body
    images: list[torch.Tensor]  # decoded input images, (1, C, S, S) each
    label: int | None  # the class index asked for, if any


#: One request on its own, with its seeded generator: images and extra fields, or fields.
RunOne = Callable[["Decoded", torch.Generator], Any]
#: Several requests of one kind as one forward pass: one result each, as `RunOne` gives.
RunMany = Callable[[list["Decoded"], list[torch.Generator]], list[Any]]


@dataclass(frozen=True)
class Kind:
    """One request kind of an image family: its body, and how the model answers it."""

    request: type[ImageRequest]
    run: RunOne
    run_batch: RunMany | None = None  # where the family can answer several at once
    images: bool = False  # answers with images (so Accept: image/png applies)


class ImageHandler(MicroBatchHandler):
    """The image families' handler: requests name a kind (the first is the default), and
    requests that arrive together run as one batch per kind."""

    def __init__(self, spec: ImageSpec, device: str, kinds: dict[str, Kind]) -> None:
        self.spec = spec
        self.device = device
        self.kinds = kinds

    # --- decode ------------------------------------------------------------------
    def decode(self, payload: Any, accept: str | None = None) -> Decoded:
        if not isinstance(payload, dict):
            raise ClientError(f'send a JSON object such as {{"kind": "{next(iter(self.kinds))}", '
                              f'"seed": 1}}')
        kind = payload.get("kind", next(iter(self.kinds)))
        if not isinstance(kind, str) or kind not in self.kinds:
            raise ClientError(f"kind {kind!r} is not served by this {self.family} model; use "
                              f"one of: {', '.join(self.kinds)}")
        model = self.kinds[kind].request
        try:
            request = model.model_validate({**payload, "kind": kind})
        except ValidationError as exc:
            keys = sorted(f.alias or name for name, f in model.model_fields.items())
            raise from_validation_error(exc, valid={"body": keys}) from None
        png = bool(accept and PNG in accept.lower())
        if png and not self.kinds[kind].images:
            raise ClientError(f"kind {kind!r} answers with numbers, not an image: drop "
                              f"'Accept: {PNG}' (or send Accept: application/json)", status=406)
        seed = request.seed if request.seed is not None else fresh_seed(2**31)
        given = request.inputs()
        images = [self.image(value, f"images.{i}" if len(given) > 1 else "image")
                  for i, value in enumerate(given)]
        label = self.label(request.requested_class())
        return Decoded(request=request, seed=seed, png=png, images=images, label=label)

    def label(self, value: int | str | None) -> int | None:
        """A class index or name -> the class index, checked against the model's classes."""
        if value is None:
            return None
        names = self.spec.classes
        if not names:
            raise ClientError(f"this {self.family} model is unconditional (trained without "
                              f"class subfolders): drop 'class'")
        # A class name wins over an index, so 7 means the class named "7" when there is one.
        if str(value) in names:
            return names.index(str(value))
        if isinstance(value, int) and 0 <= value < len(names):
            return value
        shown = ", ".join(names) if len(names) <= 20 else f"{names[0]} … {names[-1]}"
        raise ClientError(f"class {value!r} is out of range: give a class name ({shown}) "
                          f"or an index from 0 to {len(names) - 1}")

    def image(self, value: Any, where: str) -> torch.Tensor:
        """One input image -> (1, C, S, S) in [0, 1], or a ClientError saying what to fix."""
        size, channels = self.spec.size, self.spec.channels
        if isinstance(value, str):
            data = value.split(",", 1)[1] if value.startswith("data:") else value
            try:
                raw = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise ClientError(f"{where}: not valid base64; send a base64-encoded PNG or "
                                  f"JPEG file, or nested lists of pixels") from None
            try:
                with Image.open(io.BytesIO(raw)) as pil:
                    pil.load()
            except (UnidentifiedImageError, OSError, ValueError):
                raise ClientError(f"{where}: the base64 data is not a PNG or JPEG image") \
                    from None
            if pil.size != (size, size):
                raise ClientError(f"{where} is {pil.width}×{pil.height} pixels; this model "
                                  f"takes {size}×{size} images: resize it to {size}×{size}")
            # Grayscale and colour inputs are converted to the model's mode.
            array = np.asarray(pil.convert(self.spec.mode), dtype=np.float32) / 255.0
        else:
            try:
                array = np.asarray(value, dtype=np.float32)
            except (ValueError, TypeError):
                raise ClientError(f"{where}: pixel lists must be rectangular and hold "
                                  f"numbers") from None
            expected = (size, size) if channels == 1 else (size, size, 3)
            if array.shape != expected:
                raise ClientError(f"{where} has shape {list(array.shape)}; this model takes "
                                  f"{list(expected)} pixel lists: resize it to {size}×{size}")
            if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
                raise ClientError(f"{where}: pixels must be in [0, 1] (divide 0-255 values "
                                  f"by 255)")
        chw = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(chw))[None].to(self.device)

    # --- predict -----------------------------------------------------------------
    def smoke_request(self) -> dict[str, Any]:
        """One request of the default kind (on blank images where it takes some): what
        the server times at load and a deployment's smoke test sends."""
        kind = next(iter(self.kinds))
        payload: dict[str, Any] = {"kind": kind, "seed": 0}
        fields = self.kinds[kind].request.model_fields
        blank = np.zeros((self.spec.size, self.spec.size) if self.spec.channels == 1
                         else (self.spec.size, self.spec.size, 3)).tolist()
        if "image" in fields:
            payload["image"] = blank
        if "images" in fields:
            payload["images"] = [blank, blank]
        return payload

    def probe(self) -> None:
        """The smoke request, through decode and predict: what the server times to fit
        the intra-op thread count to this model."""
        self.predict_batch([self.decode(self.smoke_request())])

    def predict_batch(self, batch: list[Decoded]) -> list[Any]:
        """Answer several requests, running each kind's requests as one forward pass where
        the kind has a `run_batch`. Each request draws its noise from its own seeded
        generator, in the order it would alone, so its answer is the one it gets alone."""
        results: list[Any] = [None] * len(batch)
        by_kind: dict[str, list[int]] = {}
        for i, decoded in enumerate(batch):
            by_kind.setdefault(decoded.request.kind, []).append(i)
        with torch.inference_mode():
            for kind, indices in by_kind.items():
                group = [batch[i] for i in indices]
                generators = [torch.Generator(device=self.device).manual_seed(d.seed)
                              for d in group]
                spec = self.kinds[kind]
                if spec.run_batch is not None and len(group) > 1:
                    raws = spec.run_batch(group, generators)
                else:
                    raws = [spec.run(d, g) for d, g in zip(group, generators, strict=True)]
                for i, decoded, raw in zip(indices, group, raws, strict=True):
                    results[i] = self._answer(decoded, raw)
        return results

    def _answer(self, decoded: Decoded, result: Any) -> Any:
        kind = decoded.request.kind
        head = {"kind": kind, "seed": decoded.seed}
        if not self.kinds[kind].images:
            return {**head, **result}
        images, extra = result
        if decoded.png:
            array = images.cpu().numpy()
            return Binary(encode_png(array[0] if len(array) == 1 else grid(array)), PNG)
        encoded = [base64.b64encode(encode_png(i)).decode("ascii") for i in images.cpu().numpy()]
        return {**head, **extra, "media_type": PNG, "images": encoded}

    @staticmethod
    def split(images: torch.Tensor, sizes: list[int],
              extras: list[dict[str, Any]]) -> list[tuple[torch.Tensor, dict[str, Any]]]:
        """A batch's images back to their requests: ``sizes[i]`` images each."""
        return list(zip(images.split(sizes), extras, strict=True))

    def request_models(self) -> list[type[BaseModel]]:
        return [kind.request for kind in self.kinds.values()]

    def describe(self) -> Description:
        """The playground samples an image where the family can, else shows the default
        kind's answer."""
        sample = self.kinds.get("sample")
        form = ({"input": "none", "stream": False, "output": "png",
                 "template": {"kind": "sample", "n": 1}} if sample is not None and sample.images
                else {"input": "none", "stream": False, "output": "json",
                      "template": {"kind": next(iter(self.kinds))}})
        return Description(playground=form, kinds=tuple(self.kinds))

    def classes_for(self, decoded: Decoded, n: int) -> torch.Tensor | None:
        """The class of each of n generated images: the one asked for, or every class in turn."""
        if not self.spec.classes:
            return None
        if decoded.label is not None:
            return torch.full((n,), decoded.label, dtype=torch.long, device=self.device)
        return torch.arange(n, device=self.device) % self.spec.num_classes
