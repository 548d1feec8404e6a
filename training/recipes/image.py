"""What every image family's recipe shares: data, held-out split, feature space, export.

A family's recipe subclasses `ImageRecipe`, builds its networks in `build()`, and gives
`train_step`, `evaluate`, `tensors` (what goes into model.safetensors) and `samples`
(the image grid saved under samples/ in the artifact).
"""

from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from training import checkpoint, distributed
from training.artifact import write_artifact
from training.config import TrainConfig
from training.data.errors import DataError
from training.data.folder import scan_folder
from training.data.images import ImageSet, bundled_digits, load_image_folder, split
from training.evaluation.images import FeatureSpace, frechet_distance, gaussian_samples
from training.loop import format_metrics
from training.models.convnets import ImageSpec
from training.models.formats.png import encode_png, grid

SAMPLES_FILE = "samples/grid.png"


def load_images(train_dir: Path | None, validation_dir: Path | None, *, size: int,
                val_fraction: float, seed: int,
                log: Callable[[str], None]) -> tuple[ImageSet, ImageSet]:
    """The training and held-out images: user folders, or the bundled digits."""
    if train_dir is None:
        data = bundled_digits(size)
        log(f"no train channel: using the {data.source}")
    else:
        data = load_image_folder(scan_folder(train_dir), size=size)
        log(f"train channel: {len(data)} {data.mode} images from {data.files} files, "
            f"{len(data.classes) or 'no'} classes")
    if validation_dir is None:
        return split(data, val_fraction, seed)
    held_out = load_image_folder(scan_folder(validation_dir), size=size)
    if held_out.mode != data.mode or held_out.classes != data.classes:
        raise DataError(
            f"the validation channel ({held_out.mode}, classes {list(held_out.classes)}) "
            f"does not match the train channel ({data.mode}, classes {list(data.classes)}); "
            f"give both the same colour mode and class subfolders")
    return data, held_out


#: (n, classes or None, noise generator) -> n generated images in [0, 1] that gradients
#: flow back from, and the optimizer of the network that made them.
Sampler = Callable[[int, torch.Tensor | None, torch.Generator],
                   tuple[torch.Tensor, torch.optim.Optimizer]]


class ImageRecipe(ABC):
    """Training, evaluation and samples of an image model (see training.recipes.contract)."""

    family: ClassVar[str]
    modality: ClassVar[str] = "image"
    tokenizer: ClassVar[None] = None
    #: Whether its metrics depend on sampling noise (evaluation averages them over seeds).
    sampled_metrics: ClassVar[bool] = False
    #: Whether the family can use class labels (the config's `conditional` may turn it off).
    conditional: bool = False
    #: Set by a refinement: remakes each training batch (x, y), mixing in rated images.
    batch_mix: Callable[[torch.Tensor, torch.Tensor | None],
                        tuple[torch.Tensor, torch.Tensor | None]] | None = None
    model: torch.nn.Module

    def __init__(self, run: TrainConfig, model_cfg: Any, *, train_dir: Path | None,
                 validation_dir: Path | None, device: torch.device,
                 log: Callable[[str], None] = print) -> None:
        self.run, self.cfg, self.device, self.log = run, model_cfg, device, log
        train, val = load_images(train_dir, validation_dir, size=model_cfg.image_size,
                                 val_fraction=run.val_fraction, seed=run.seed, log=log)
        self.conditional = bool(getattr(model_cfg, "conditional", False)) and bool(train.classes)
        self.spec = ImageSpec(size=model_cfg.image_size, channels=train.images.shape[1],
                              classes=train.classes if self.conditional else ())
        self.x_train = torch.from_numpy(train.images).to(device)  # (N, C, S, S) in [0, 1]
        self.x_val = torch.from_numpy(val.images).to(device)
        self.y_train = None if train.labels is None else torch.from_numpy(train.labels).to(device)
        self.y_val = None if val.labels is None else torch.from_numpy(val.labels).to(device)
        self.data_summary = {**train.summary(), "images": len(train) + len(val),
                             "train_images": len(train), "validation_images": len(val)}
        if train.labels is not None and val.labels is not None:
            counts = np.bincount(np.r_[train.labels, val.labels], minlength=len(train.classes))
            self.data_summary["per_class"] = dict(zip(train.classes, counts.tolist(),
                                                      strict=True))
        self.batches = torch.Generator().manual_seed(run.seed)
        self.features = FeatureSpace(self.x_train.cpu(), None if self.y_train is None
                                     else self.y_train.cpu(), len(train.classes),
                                     seed=run.seed)
        torch.manual_seed(run.seed)
        self.build()
        # Baselines are reported once, by rank 0 (only it logs and exports).
        self.references = self.reference_metrics() if distributed.current().is_main else {}
        log(f"model: {self.num_parameters():,} parameters; data: {len(train):,} train / "
            f"{len(val):,} held-out {self.spec.size}x{self.spec.size} {train.mode} images")
        if self.references:
            log(format_metrics(0, self.references))

    # --- what a family provides ----------------------------------------------------
    @abstractmethod
    def build(self) -> None:
        """Create the family's networks and optimizers."""

    @abstractmethod
    def train_step(self, lr: float) -> dict[str, float]:
        """One optimisation step (training.recipes.contract.Trainable)."""

    @abstractmethod
    def evaluate(self) -> dict[str, float]:
        """Held-out metrics: Fréchet distance and the family's own."""

    @abstractmethod
    def modules(self) -> list[torch.nn.Module]:
        """The networks, for counting parameters and switching train/eval mode."""

    @abstractmethod
    def training_state(self) -> dict[str, checkpoint.Stateful]:
        """Networks, optimizers and random generators a resumed run needs, by name."""

    def state_objects(self) -> dict[str, checkpoint.Stateful]:
        return {"batches": self.batches, **self.training_state()}

    def reference_metrics(self) -> dict[str, float]:
        """Baselines computed once before training (untrained weights, floors)."""
        return {}

    @abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]:
        """The weights the artifact keeps."""

    def model_args(self) -> dict[str, Any]:
        return {**asdict(self.cfg), "image": self.spec.as_dict()}

    @abstractmethod
    def samples(self) -> np.ndarray:
        """(N, C, S, S) images in [0, 1] for the artifact's samples grid."""

    def sampler(self) -> Sampler | None:
        """How to draw generated images that gradients flow through, for reward
        fine-tuning; None for a family without a differentiable sampler (RBM,
        autoencoder)."""
        return None

    # --- shared --------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.numel() for m in self.modules() for p in m.parameters())

    def batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's rows of a random global batch (every rank draws the same indices)."""
        idx = torch.randint(len(self.x_train), (self.run.batch_size,), generator=self.batches)
        idx = idx[distributed.current().part(self.run.batch_size)].to(self.device)
        y = self.y_train[idx] if self.conditional and self.y_train is not None else None
        if self.batch_mix is not None:
            return self.batch_mix(self.x_train[idx], y)
        return self.x_train[idx], y

    def class_batch(self, n: int) -> torch.Tensor | None:
        """Classes for ``n`` generated images: cycling through every class, in order."""
        if not self.conditional:
            return None
        return (torch.arange(n) % self.spec.num_classes).to(self.device)

    @torch.no_grad()
    def fid_metrics(self, generated: torch.Tensor) -> dict[str, float]:
        """Fréchet distance of generated images to the held-out ones, and the classifier's
        mean confidence on them (when the data has classes)."""
        out = {"val_fid": frechet_distance(self.features.features(generated.cpu()),
                                           self.features.features(self.x_val.cpu()))}
        if self.features.labelled:
            out["val_confidence"] = self.features.confidence(generated.cpu())
        return out

    def statistical_baselines(self, *, conditional: bool, samples: int = 1000
                              ) -> dict[str, float]:
        """The Fréchet distance of a full-covariance Gaussian's and a 5-component Gaussian
        mixture's samples (per class when ``conditional``), fitted to the training pixels
        and scored as the model's samples are: what a network has to beat."""
        labels = self.y_train.cpu().numpy() if conditional and self.y_train is not None \
            else None
        real = self.features.features(self.x_val.cpu())
        out = {}
        for name, components in (("gaussian", 1), ("gmm", 5)):
            drawn = gaussian_samples(self.x_train.cpu().numpy(), labels, samples,
                                     components=components, num_classes=self.spec.num_classes
                                     if labels is not None else 1, seed=self.run.seed)
            out[f"val_fid_{name}"] = frechet_distance(
                self.features.features(torch.from_numpy(drawn)), real)
        return out

    def fid_floor(self) -> float:
        """The same distance between held-out and training images: what real data scores."""
        return frechet_distance(self.features.features(self.x_val.cpu()),
                                self.features.features(self.x_train.cpu()))

    def export(self, directory: Path, *, config: dict[str, object],
               metrics: dict[str, float]) -> None:
        for module in self.modules():
            module.eval()
        with tempfile.TemporaryDirectory() as tmp:
            grid_path = Path(tmp) / "grid.png"
            scale = max(1, 64 // self.spec.size)  # tiny digits are enlarged to be seen
            grid_path.write_bytes(encode_png(grid(self.samples()), scale=scale))
            write_artifact(
                directory, family=self.family, modality="image", config=config,
                model_args=self.model_args(), tensors=self.tensors(), data=self.data_summary,
                metrics={**self.references, **metrics},
                extra_files={SAMPLES_FILE: grid_path},
            )


