"""Training recipe of the musegan family: accompany melodies, scored by MuseGAN's metrics.

Data: the 4/4 Bach chorales of music21's corpus (or a folder of four-part MIDI files),
split by piece into training and held-out music, cut into phrases of `n_bars` bars
(every bar a start for training, whole phrases held out) and transposed at random by up
to `transpose` semitones each time a phrase is drawn. Each step updates the
discriminator `d_steps` times, then the generator once.

Evaluation accompanies every held-out melody and measures the four tracks with the
paper's metrics (empty bars, pitch classes per bar, qualified notes, tonal distance):
`val_<metric>` for the generated accompaniment, `val_<metric>_real` for Bach's (the
target) and `val_<metric>_untrained` for the untrained generator, plus `val_metric_gap`,
how far the generated metrics are from the real ones, beside the gap of a baseline that
ignores the melody (`blind_bach_metric_gap`: under each held-out melody, the lower
voices of a random training phrase).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training import distributed
from training.artifact import write_artifact
from training.config import TrainConfig
from training.data.errors import DataError
from training.data.folder import scan_folder
from training.data.music import split_by_tune
from training.data.pianoroll import (
    Piece,
    bundled_chorales,
    load_piece_folder,
    phrases,
    piece_tune,
)
from training.evaluation.music import METRICS, metric_gap, music_metrics
from training.loop import format_metrics, optimizer_step
from training.models.formats.midi import write_tracks
from training.models.formats.pianoroll import (
    PITCHES,
    STEPS_PER_BAR,
    TRACKS,
    picture,
    roll_to_notes,
    steps_to_quarters,
)
from training.models.formats.png import encode_png, grid
from training.models.musegan import ROLL, MuseGAN, MuseGANConfig

FAMILY = "musegan"
EVAL_PHRASES = 256  # held-out phrases accompanied per evaluation
SAMPLE_PIECES, SAMPLE_BARS = 4, 8  # held-out melodies accompanied into samples/
SAMPLES_PNG = "samples/pianoroll.png"


def melody_blind_bach(held_out: np.ndarray, train: np.ndarray, seed: int) -> np.ndarray:
    """The baseline that ignores the melody: each held-out phrase's melody over the lower
    three voices of a random training phrase, Bach's own part-writing (rolls (N, 4, ...))."""
    pick = np.random.default_rng(seed).integers(len(train), size=len(held_out))
    return np.concatenate([held_out[:, :1], train[pick, 1:]], axis=1)


def sample_tracks(piece_melody: list[tuple[int, int, int]], arranged: np.ndarray,
                  programs: list[int]) -> list[tuple[str, int, list[tuple[int, float, float]]]]:
    """MIDI tracks: the melody's own notes, then the generated accompaniment's."""
    accompaniment = roll_to_notes(arranged[1:])
    return [(name.capitalize(), program, steps_to_quarters(notes)) for name, program, notes
            in zip(TRACKS, programs, [piece_melody, *accompaniment], strict=True)]


class Recipe:
    """MuseGAN's training (a Recipe of training.recipes.contract, on no shared base)."""

    modality = "music"
    tokenizer = None

    def __init__(self, run: TrainConfig, model_cfg: MuseGANConfig, *, train_dir: Path | None,
                 validation_dir: Path | None, device: torch.device,
                 log: Callable[[str], None] = print) -> None:
        self.run, self.cfg, self.device, self.log = run, model_cfg, device, log
        corpus = bundled_chorales() if train_dir is None else \
            load_piece_folder(scan_folder(train_dir))
        log(("no train channel: using the " if train_dir is None else "train channel: ")
            + f"{corpus.source} ({len(corpus.pieces)} pieces of {corpus.files} files)")
        if validation_dir is not None:
            train, val = corpus.pieces, load_piece_folder(scan_folder(validation_dir)).pieces
            held_out_by = "the validation channel"
        else:
            train, val, held_out_by = split_by_tune(corpus.pieces, piece_tune, run.val_fraction,
                                                    run.seed, corpus.source)
        n = model_cfg.n_bars
        x_train, x_val = phrases(train, n), phrases(val, n, stride=n)
        for name, x in (("training", x_train), ("held-out", x_val)):
            if len(x) == 0:
                raise DataError(f"no {name} piece spans {n} bars with a melody; give longer "
                                f"music or lower n_bars")
        self.val_pieces: list[Piece] = val
        self.x_train = torch.from_numpy(x_train)  # (N, 4, steps, P) uint8, on the CPU
        self.x_val = torch.from_numpy(x_val[:EVAL_PHRASES])
        # How far each training phrase may move without leaving the roll's pitch range.
        active = np.asarray(x_train.any(axis=(1, 2)), dtype=bool)  # (N, P)
        self.lowest = torch.from_numpy(active.argmax(1))
        self.highest = torch.from_numpy(PITCHES - 1 - active[:, ::-1].argmax(1))
        self.data_summary = {
            "source": corpus.source, "modality": "music", "files": corpus.files,
            "pieces": len(train) + len(val), "train_pieces": len(train),
            "validation_pieces": len(val), "train_phrases": len(x_train),
            "validation_phrases": len(self.x_val), "bars_per_phrase": n,
            "held_out": held_out_by,
        }

        torch.manual_seed(run.seed)
        self.model = MuseGAN(model_cfg).to(device)
        betas = (model_cfg.beta1, model_cfg.beta2)
        self.g_opt = torch.optim.Adam(self.model.generator.parameters(),
                                      lr=run.learning_rate, betas=betas)
        self.d_opt = torch.optim.Adam(self.model.discriminator.parameters(),
                                      lr=run.learning_rate, betas=betas)
        self.batches = torch.Generator().manual_seed(run.seed)
        self.noise_rng = torch.Generator(device=device).manual_seed(run.seed + 3)

        self.real = music_metrics(self.x_val.numpy())
        untrained = self.evaluate()
        self.references = {
            **{f"val_{m}_real": self.real[m] for m in METRICS},
            **{f"{k}_untrained": v for k, v in untrained.items()},
            "blind_bach_metric_gap": metric_gap(music_metrics(
                melody_blind_bach(self.x_val.numpy(), x_train, run.seed)), self.real),
        }
        parameters = sum(p.numel() for p in self.model.parameters())
        log(f"model: {parameters:,} parameters; data: {len(x_train):,} train / "
            f"{len(self.x_val):,} held-out phrases of {n} bars ({len(train)} / {len(val)} "
            f"pieces)")
        log(format_metrics(0, self.references))

    def state_objects(self) -> dict[str, Any]:
        return {"batches": self.batches, "model": self.model, "g_optimizer": self.g_opt,
                "d_optimizer": self.d_opt, "noise": self.noise_rng}

    def batch(self) -> torch.Tensor:
        """(B, 4, bars, 16, P) real phrases, each moved by a random number of semitones.

        Every rank draws the whole global batch and keeps its own rows of it.
        """
        idx = torch.randint(len(self.x_train), (self.run.batch_size,), generator=self.batches)
        x = self.x_train[idx].float()
        t = self.cfg.transpose
        low = torch.clamp(-self.lowest[idx], min=-t)
        high = torch.clamp(PITCHES - 1 - self.highest[idx], max=t)
        u = torch.rand(len(idx), generator=self.batches)
        shifts = (low + (u * (high - low + 1).float()).long().clamp(max=high - low)).tolist()
        for shift in set(shifts):
            if shift:
                rows = [i for i, s in enumerate(shifts) if s == shift]
                x[rows] = torch.roll(x[rows], shift, dims=-1)  # never wraps a note (bounds)
        x = x[distributed.current().part(self.run.batch_size)]  # this rank's rows
        b = len(x)
        return x.view(b, len(TRACKS), self.cfg.n_bars, STEPS_PER_BAR, PITCHES).to(self.device)

    def train_step(self, lr: float) -> dict[str, float]:
        self.model.train()
        for _ in range(self.cfg.d_steps):
            real = self.batch()
            melody = real[:, 0]
            fake = self.model.full(melody, self.model.for_critic(
                self.model.accompany(melody, self.noise_rng)))
            d_loss = self.model.d_loss(real, fake)
            optimizer_step(self.d_opt, d_loss, lr=lr, grad_clip=self.run.grad_clip)
        g_loss = self.model.g_loss(fake)
        optimizer_step(self.g_opt, g_loss, lr=lr, grad_clip=self.run.grad_clip)
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item(),
                "bars": float(len(melody) * self.cfg.n_bars)}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        generator = torch.Generator(device=self.device).manual_seed(self.run.seed + 1)
        m = len(self.x_val)
        melody = self.x_val[:, 0].float().view(m, self.cfg.n_bars, STEPS_PER_BAR, PITCHES)
        arranged = self.model.arrange(melody.to(self.device), generator=generator)
        generated = music_metrics(arranged.view(m, len(TRACKS), -1, PITCHES).cpu().numpy())
        return {**{f"val_{k}": v for k, v in generated.items()},
                "val_metric_gap": metric_gap(generated, self.real)}

    def samples(self) -> list[tuple[bytes, np.ndarray]]:
        """A few held-out melodies (up to SAMPLE_BARS bars) with generated accompaniment:
        (MIDI bytes, four-track roll) each."""
        self.model.eval()
        out = []
        for i, piece in enumerate(self.val_pieces[:SAMPLE_PIECES]):
            bars = min(SAMPLE_BARS, piece.bars)
            roll = piece.roll()[:, :bars * STEPS_PER_BAR]
            melody = torch.from_numpy(roll[0]).float().view(1, bars, STEPS_PER_BAR, PITCHES)
            generator = torch.Generator(device=self.device).manual_seed(self.run.seed + i)
            arranged = self.model.arrange(melody.to(self.device), generator=generator)
            arranged_roll = arranged.view(len(TRACKS), -1, PITCHES).cpu().numpy()
            tune = [n for n in piece.tracks[0] if n[1] < bars * STEPS_PER_BAR]
            midi = write_tracks(sample_tracks(tune, arranged_roll, [0] * len(TRACKS)))
            out.append((midi, arranged_roll))
        return out

    def export(self, directory: Path, *, config: dict[str, object],
               metrics: dict[str, float]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            extra: dict[str, Path] = {}
            pictures = []
            for i, (midi, roll) in enumerate(self.samples()):
                path = Path(tmp) / f"sample-{i}.mid"
                path.write_bytes(midi)
                extra[f"samples/sample-{i}.mid"] = path
                image = np.ones((3, PITCHES, SAMPLE_BARS * STEPS_PER_BAR), dtype=np.float32)
                image[:, :, :roll.shape[1]] = picture(roll)
                pictures.append(image)
            if pictures:
                png = Path(tmp) / "pianoroll.png"
                png.write_bytes(encode_png(grid(np.stack(pictures), columns=1, pad=2), scale=3))
                extra[SAMPLES_PNG] = png
            write_artifact(directory, family=FAMILY, modality="music", config=config,
                           model_args={**asdict(self.cfg), "roll": ROLL},
                           tensors=self.model.state_dict(), data=self.data_summary,
                           metrics={**self.references, **metrics}, extra_files=extra)
