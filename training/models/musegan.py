"""A melody-conditional MuseGAN (Dong et al. 2018): a melody in, three accompanying tracks out.

MuseGAN generates multi-track piano rolls bar by bar with convolutional networks. This
is its track-conditional set-up: the melody's piano roll is given, an encoder E maps
each of its bars to feature maps at the generator's resolutions (mirroring the bar
generator, as in the paper's conditional model), and the bar generator writes the
alto, tenor and bass of that bar from them and from noise. The noise follows MuseGAN's
hybrid model: a vector shared by the whole phrase, one per bar from a temporal network
(so bars differ yet hang together), and one per track (each voice its own character).
The tracks come out of one shared trunk and a private last layer per track. Time is
doubled by repeating steps and mixing them (a resize-convolution) rather than by
MuseGAN's transposed convolutions, whose separate weights for each step of a pair write
sixteenth-note fragments; `upsample="transposed"` keeps MuseGAN's.

The discriminator D scores all four tracks of a phrase: per bar, a piano-roll stream
(convolutions over time and pitch) and a chroma stream (pitch classes per beat, which
is where harmony shows) and an onset stream (where notes start and stop), then a layer
across the bars. Training follows MuseGAN: the
Wasserstein loss with gradient penalty (WGAN-GP, Gulrajani et al. 2017); `loss=hinge`
with spectral normalisation (Miyato et al. 2018) is the cheaper alternative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from training.artifact import Artifact, ArtifactError
from training.hyperparameters import require
from training.models.formats.pianoroll import LOWEST, PITCHES, STEPS_PER_BAR, TRACKS

ACCOMPANIMENT = len(TRACKS) - 1  # tracks the generator writes


@dataclass
class MuseGANConfig:
    n_bars: int = 4  # bars per phrase the networks see (4/4, 16 steps a bar)
    latent_dim: int = 32  # size of each noise vector (phrase, bar, track)
    g_width: int = 32  # channels of the generator's widest feature map
    d_width: int = 32  # channels of the discriminator's widest feature map
    loss: Literal["wgan-gp", "hinge"] = "wgan-gp"  # MuseGAN's WGAN-GP, or hinge + spectral norm
    gp_weight: float = 10.0  # weight of the gradient penalty (wgan-gp)
    d_steps: int = 2  # discriminator updates per generator update
    spectral_norm: bool = False  # spectral norm on D's layers (always on with loss=hinge)
    beta1: float = 0.5  # Adam's first-moment decay for both networks
    beta2: float = 0.9  # Adam's second-moment decay (0.9, as for WGAN-GP)
    transpose: int = 3  # augmentation: each phrase moved by up to ± this many semitones
    binarize: bool = True  # D sees notes, not probabilities (straight-through estimator)
    monophonic: bool = True  # a voice sings one pitch at a time: its likeliest, if > threshold
    onset_stream: bool = True  # D also reads where notes start and end (MuseGAN's third stream)
    # How G doubles its time resolution, quarters to eighths to sixteenths: "resize"
    # (each step repeated, then mixed with its neighbours at eighths, kept per step at
    # sixteenths: voices move in eighths or slower) or MuseGAN's "transposed" convolutions
    # (each step of a pair from its own weights: notes come out in sixteenth fragments).
    upsample: Literal["resize", "transposed"] = "resize"

    def validate(self) -> None:
        require(1 <= self.n_bars <= 16, "n_bars", "must be between 1 and 16")
        require(self.latent_dim >= 1, "latent_dim", "must be at least 1")
        require(self.g_width >= 8 and self.g_width % 4 == 0, "g_width",
                "must be a multiple of 4, at least 8")
        require(self.d_width >= 8 and self.d_width % 4 == 0, "d_width",
                "must be a multiple of 4, at least 8")
        require(self.gp_weight >= 0, "gp_weight", "must be 0 or more")
        require(self.d_steps >= 1, "d_steps", "must be at least 1")
        require(0 <= self.beta1 < 1, "beta1", "must be in [0, 1)")
        require(0 <= self.beta2 < 1, "beta2", "must be in [0, 1)")
        require(0 <= self.transpose <= 6, "transpose", "must be between 0 and 6 semitones")
        require(self.upsample in ("resize", "transposed"), "upsample",
                "must be resize or transposed")


OCTAVES = PITCHES // 12
assert OCTAVES * 12 == PITCHES and STEPS_PER_BAR == 16, "the networks assume 16×(12·k) bars"


class Patch(nn.Module):
    """A convolution whose kernel equals its stride (MuseGAN's are all of this kind), on
    channel-last maps (N, time, pitch, C), as a reshape and one matrix product: CPUs run
    these far faster than convolution kernels for such thin shapes.

    ``axis`` 1 is time, 2 is pitch; ``factor`` > 0 merges that many positions into one
    (a strided convolution), < 0 spreads each position over -factor (a transposed one).
    """

    def __init__(self, c_in: int, c_out: int, *, axis: int, factor: int) -> None:
        super().__init__()
        assert axis in (1, 2) and factor != 0
        self.axis, self.factor, self.c_out = axis, factor, c_out
        self.linear: nn.Module = (nn.Linear(c_in * factor, c_out) if factor > 0
                                  else nn.Linear(c_in, c_out * -factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, p, c = x.shape
        f = abs(self.factor)
        if self.factor > 0:
            if self.axis == 2:
                return self.linear(x.reshape(n, t, p // f, f * c))  # (N, T, P/f, C')
            x = x.reshape(n, t // f, f, p, c).transpose(2, 3).reshape(n, t // f, p, f * c)
            return self.linear(x)  # (N, T/f, P, C')
        y = self.linear(x).view(n, t, p, f, self.c_out)
        if self.axis == 2:
            return y.reshape(n, t, p * f, self.c_out)  # (N, T, P·f, C')
        return y.transpose(2, 3).reshape(n, t * f, p, self.c_out)  # (N, T·f, P, C')


class Resize(nn.Module):
    """Twice the time steps of a channel-last map (N, T, P, C): each step repeated, then a
    layer that reads each step and, with ``neighbours``, the steps either side of it
    (zeros beyond the bar). Unlike a transposed convolution, where the two halves of each
    pair come from separate weights, neighbouring steps start out alike, so a held note
    is the easy thing to write (the resize-convolution of Odena et al. 2016,
    "Deconvolution and checkerboard artifacts")."""

    def __init__(self, c_in: int, c_out: int, *, neighbours: bool) -> None:
        super().__init__()
        self.neighbours = neighbours
        self.linear = nn.Linear((3 if neighbours else 1) * c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.repeat_interleave(2, dim=1)  # (N, 2T, P, C)
        if self.neighbours:
            padded = F.pad(x, (0, 0, 0, 0, 1, 1))  # (N, 2T+2, P, C)
            x = torch.cat([padded[:, :-2], x, padded[:, 2:]], -1)  # (N, 2T, P, 3C)
        return self.linear(x)  # (N, 2T, P, C')


def _norm(norm: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """Batch norm over every position of a channel-last map."""
    return norm(x.reshape(-1, x.shape[-1])).view(x.shape)


class MelodyEncoder(nn.Module):
    """One melody bar (N, 16, P, 1) -> features at (16, k), (8, k) and (4, k), k octaves."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.pitch = Patch(1, width // 4, axis=2, factor=12)  # -> (16, k)
        self.time1 = Patch(width // 4, width // 2, axis=1, factor=2)  # -> (8, k)
        self.time2 = Patch(width // 2, width, axis=1, factor=2)  # -> (4, k)

    def forward(self, bar: torch.Tensor) -> list[torch.Tensor]:
        h16 = F.leaky_relu(self.pitch(bar), 0.2)
        h8 = F.leaky_relu(self.time1(h16), 0.2)
        h4 = F.leaky_relu(self.time2(h8), 0.2)
        return [h4, h8, h16]


class Generator(nn.Module):
    def __init__(self, cfg: MuseGANConfig) -> None:
        super().__init__()
        w, z = cfg.g_width, cfg.latent_dim
        self.cfg = cfg
        self.encoder = MelodyEncoder(w)
        # The temporal network: one phrase-level vector -> one vector per bar.
        self.temporal = nn.Sequential(nn.Linear(z, 2 * z), nn.ReLU(),
                                      nn.Linear(2 * z, z * cfg.n_bars))
        self.project = nn.Linear((2 + ACCOMPANIMENT) * z, 4 * OCTAVES * w)
        self.norm0 = nn.BatchNorm1d(w)

        def up(c_in: int, c_out: int, *, neighbours: bool) -> nn.Module:
            if cfg.upsample == "resize":
                return Resize(c_in, c_out, neighbours=neighbours)
            return Patch(c_in, c_out, axis=1, factor=-2)

        # Resized, eighths may move against their neighbours; sixteenths follow the eighth
        # they come from (and the melody's features, joined at each resolution).
        self.up1 = up(2 * w, w, neighbours=True)  # (4, k) -> (8, k)
        self.norm1 = nn.BatchNorm1d(w)
        self.up2 = up(w + w // 2, w // 2, neighbours=False)  # -> (16, k)
        self.norm2 = nn.BatchNorm1d(w // 2)
        per_track = max(4, w // 8)
        # Each octave position spreads over its 12 pitches: (16, k) -> (16, 12k).
        self.pitch = Patch(w // 2 + w // 4, ACCOMPANIMENT * per_track, axis=2, factor=-12)
        self.norm3 = nn.BatchNorm1d(ACCOMPANIMENT * per_track)
        # The private layer: each track reads only its own channels.
        self.out_weight = nn.Parameter(torch.randn(ACCOMPANIMENT, per_track) / per_track ** 0.5)
        self.out_bias = nn.Parameter(torch.zeros(ACCOMPANIMENT))

    def forward(self, melody: torch.Tensor, z_phrase: torch.Tensor, z_time: torch.Tensor,
                z_tracks: torch.Tensor) -> torch.Tensor:
        """melody (B, bars, 16, P) in {0, 1}; z_phrase, z_time (B, z); z_tracks (B, 3, z)
        -> accompaniment logits (B, 3, bars, 16, P)."""
        b, bars = melody.shape[:2]
        z, n = self.cfg.latent_dim, b * bars
        per_bar = self.temporal(z_time).view(b, bars, z)  # (B, bars, z)
        latent = torch.cat([z_phrase[:, None].expand(b, bars, z), per_bar,
                            z_tracks.reshape(b, 1, -1).expand(b, bars, ACCOMPANIMENT * z)],
                           dim=2).reshape(n, -1)  # (N, (2+3)z)
        h4, h8, h16 = self.encoder(melody.reshape(n, STEPS_PER_BAR, PITCHES, 1))
        h = self.project(latent).view(n, 4, OCTAVES, -1)  # (N, 4, k, w)
        h = F.relu(_norm(self.norm0, h))
        h = F.relu(_norm(self.norm1, self.up1(torch.cat([h, h4], -1))))  # (N, 8, k, w)
        h = F.relu(_norm(self.norm2, self.up2(torch.cat([h, h8], -1))))  # (N, 16, k, w/2)
        h = F.relu(_norm(self.norm3, self.pitch(torch.cat([h, h16], -1))))  # (N, 16, P, 3c)
        h = h.view(n, STEPS_PER_BAR, PITCHES, ACCOMPANIMENT, -1)
        logits = (h * self.out_weight).sum(-1) + self.out_bias  # (N, 16, P, 3)
        return logits.view(b, bars, STEPS_PER_BAR, PITCHES, ACCOMPANIMENT).permute(0, 4, 1, 2, 3)


class Discriminator(nn.Module):
    def __init__(self, cfg: MuseGANConfig) -> None:
        super().__init__()
        w, tracks = cfg.d_width, len(TRACKS)
        sn = spectral_norm if (cfg.spectral_norm or cfg.loss == "hinge") else (lambda m: m)

        def patch(c_in: int, c_out: int, axis: int, factor: int) -> Patch:
            layer = Patch(c_in, c_out, axis=axis, factor=factor)
            layer.linear = sn(layer.linear)
            return layer

        self.roll = nn.ModuleList([
            patch(tracks, w // 4, 2, 12),  # (16, P) -> (16, k)
            patch(w // 4, w // 2, 1, 2),  # -> (8, k)
            patch(w // 2, w, 1, 2),  # -> (4, k)
            patch(w, w, 1, 4),  # -> (1, k)
        ])
        self.chroma = nn.ModuleList([
            patch(tracks, w // 4, 1, 4),  # (16, 12) -> (4 beats, 12)
            patch(w // 4, w // 2, 2, 12),  # -> (4, 1)
        ])
        bar_features = w * OCTAVES + (w // 2) * 4
        self.onset: nn.ModuleList | None = None
        if cfg.onset_stream:
            self.onset = nn.ModuleList([
                patch(tracks, w // 4, 1, 4),  # (16, 1) changes a step -> (4 beats, 1)
                patch(w // 4, w // 2, 1, 4),  # -> (1, 1)
            ])
            bar_features += w // 2
        self.across = sn(nn.Linear(cfg.n_bars * bar_features, w))
        self.head = sn(nn.Linear(w, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, tracks, bars, 16, P) in [0, 1] -> (B,) scores of "real"."""
        b, tracks, bars = x.shape[:3]
        bar = x.permute(0, 2, 3, 4, 1).reshape(b * bars, STEPS_PER_BAR, PITCHES, tracks)
        h = bar
        for layer in self.roll:
            h = F.leaky_relu(layer(h), 0.2)
        c = bar.view(b * bars, STEPS_PER_BAR, OCTAVES, 12, tracks).sum(2)  # (N, 16, 12, T)
        for layer in self.chroma:
            c = F.leaky_relu(layer(c), 0.2)
        streams = [h.flatten(1), c.flatten(1)]
        if self.onset is not None:
            # How many pitches start or stop at each step: fragmented notes show here.
            change = torch.diff(bar, dim=1, prepend=torch.zeros_like(bar[:, :1]))
            o = change.abs().sum(2, keepdim=True)  # (N, 16, 1, T)
            for layer in self.onset:
                o = F.leaky_relu(layer(o), 0.2)
            streams.append(o.flatten(1))
        features = torch.cat(streams, 1).view(b, -1)  # (B, bars·F)
        return self.head(F.leaky_relu(self.across(features), 0.2)).squeeze(1)


class MuseGAN(nn.Module):
    """Both networks, so one state dict (and one artifact) holds the pair."""

    def __init__(self, cfg: MuseGANConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.generator = Generator(cfg)
        self.discriminator = Discriminator(cfg)

    def noise(self, n: int, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        device = next(self.parameters()).device
        z = self.cfg.latent_dim
        parts = torch.randn((n, 2 + ACCOMPANIMENT, z), generator=generator, device=device)
        return parts[:, 0], parts[:, 1], parts[:, 2:]

    def accompany(self, melody: torch.Tensor, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
        """melody (B, bars, 16, P) -> accompaniment probabilities (B, 3, bars, 16, P)."""
        return torch.sigmoid(self.generator(melody, *self.noise(len(melody), generator)))

    def for_critic(self, probabilities: torch.Tensor) -> torch.Tensor:
        """What D sees of generated notes. Real rolls are 0/1, so soft probabilities alone
        would give generated music away; with `binarize`, D sees them thresholded while
        gradients pass through as if it saw the probabilities (the deterministic binary
        neurons and straight-through estimator of BinaryMuseGAN, Dong & Yang 2018)."""
        if not self.cfg.binarize:
            return probabilities
        hard = self.notes(probabilities.detach(), 0.5)
        return hard + probabilities - probabilities.detach()

    def notes(self, probabilities: torch.Tensor, threshold: float) -> torch.Tensor:
        """0/1 notes from probabilities (..., P): every pitch above ``threshold``, or with
        `monophonic` (chorale voices sing one note at a time) only a step's likeliest."""
        if not self.cfg.monophonic:
            return (probabilities > threshold).to(probabilities.dtype)
        top, index = probabilities.max(-1, keepdim=True)
        return torch.zeros_like(probabilities).scatter_(-1, index,
                                                        (top > threshold).to(top.dtype))

    @staticmethod
    def full(melody: torch.Tensor, accompaniment: torch.Tensor) -> torch.Tensor:
        """All four tracks (B, 4, bars, 16, P) from the melody and the accompaniment."""
        return torch.cat([melody[:, None], accompaniment], 1)

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        fake = fake.detach()
        real_score, fake_score = self.discriminator(real), self.discriminator(fake)
        if self.cfg.loss == "hinge":
            return F.relu(1 - real_score).mean() + F.relu(1 + fake_score).mean()
        # Wasserstein critic (Arjovsky et al. 2017) with the gradient penalty of Gulrajani
        # et al. 2017 on points between real and generated phrases, as MuseGAN trains.
        loss = fake_score.mean() - real_score.mean()
        if self.cfg.gp_weight > 0:
            alpha = torch.rand((len(real), 1, 1, 1, 1), device=real.device)
            between = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
            grad, = torch.autograd.grad(self.discriminator(between).sum(), between,
                                        create_graph=True)
            penalty = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
            loss = loss + self.cfg.gp_weight * penalty
        return loss

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        return -self.discriminator(fake).mean()

    @torch.no_grad()
    def arrange(self, melody: torch.Tensor, *, threshold: float = 0.5,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Accompany a melody of any number of bars (B, bars, 16, P) in {0, 1}: phrase by
        phrase of n_bars, sharing the phrase and track noise so the voices keep their
        character. -> all four tracks (B, 4, bars, 16, P) in {0, 1}."""
        b, bars = melody.shape[:2]
        n = self.cfg.n_bars
        chunks = -(-bars // n)
        padded = torch.zeros((b, chunks * n, STEPS_PER_BAR, PITCHES), device=melody.device)
        padded[:, :bars] = melody
        z_phrase, _, z_tracks = self.noise(b, generator)
        device = z_phrase.device
        z_time = torch.randn((b, chunks, self.cfg.latent_dim), generator=generator,
                             device=device)
        logits = self.generator(
            padded.view(b * chunks, n, STEPS_PER_BAR, PITCHES),
            z_phrase.repeat_interleave(chunks, 0), z_time.view(b * chunks, -1),
            z_tracks.repeat_interleave(chunks, 0))  # (B·chunks, 3, n, 16, P)
        logits = logits.view(b, chunks, ACCOMPANIMENT, n, STEPS_PER_BAR, PITCHES)
        logits = logits.transpose(1, 2).reshape(b, ACCOMPANIMENT, chunks * n, STEPS_PER_BAR,
                                                PITCHES)[:, :, :bars]
        return self.full(melody, self.notes(torch.sigmoid(logits), threshold))


#: What the artifact records about its piano rolls; a server checks it against its own.
ROLL = {"tracks": list(TRACKS), "steps_per_bar": STEPS_PER_BAR, "lowest": LOWEST,
        "pitches": PITCHES}


@dataclass(frozen=True)
class LoadedMuseGAN:
    model: MuseGAN
    config: MuseGANConfig
    artifact: Artifact


def from_artifact(artifact: Artifact, device: str | torch.device = "cpu") -> LoadedMuseGAN:
    args = artifact.model_args
    roll = args.pop("roll", None)
    if roll != ROLL:
        raise ArtifactError(f"{artifact.directory}: its piano rolls ({roll}) are not this "
                            f"genkiln's ({ROLL}); re-train the model with this genkiln")
    # Artifacts from before `upsample` existed were all trained with transposed layers.
    args.setdefault("upsample", "transposed")
    try:
        cfg = MuseGANConfig(**args)
        model = MuseGAN(cfg)
        model.load_state_dict(artifact.tensors(device="cpu"))
    except (TypeError, RuntimeError, ValueError) as exc:
        raise ArtifactError(f"{artifact.directory}: weights or model_args do not fit this "
                            f"genkiln's musegan ({exc}); re-export the model") from exc
    return LoadedMuseGAN(model=model.to(device).eval(), config=cfg, artifact=artifact)
