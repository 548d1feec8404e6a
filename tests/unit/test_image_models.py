"""Shapes, sampling and the quantities the image families are trained and scored by."""

import itertools

import numpy as np
import pytest
import torch

from training.evaluation.images import frechet_distance
from training.hyperparameters import HyperparameterError
from training.models.autoencoder import Autoencoder, AutoencoderConfig
from training.models.convnets import ImageSpec
from training.models.gan import GAN, GANConfig
from training.models.rbm import RBM, RBMConfig
from training.models.vae import VAE, VAEConfig

DIGITS = ImageSpec(size=8, channels=1, classes=tuple("0123456789"))
COLOUR = ImageSpec(size=16, channels=3, classes=())


@pytest.mark.parametrize("spec", [DIGITS, COLOUR])
def test_gan_shapes_and_seeded_sampling(spec: ImageSpec) -> None:
    torch.manual_seed(0)
    gan = GAN(GANConfig(image_size=spec.size, g_width=8, d_width=8), spec).eval()
    y = torch.arange(3) if spec.classes else None
    first = gan.sample(3, y, torch.Generator().manual_seed(1))
    assert first.shape == (3, spec.channels, spec.size, spec.size)
    assert first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, gan.sample(3, y, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, gan.sample(3, y, torch.Generator().manual_seed(2)))
    assert gan.discriminator(first * 2 - 1, y).shape == (3,)
    assert gan.d_loss(first, first, y).ndim == 0 and gan.g_loss(first, y).ndim == 0


def test_vae_elbo_sample_reconstruct_interpolate() -> None:
    torch.manual_seed(0)
    vae = VAE(VAEConfig(width=8, latent_dim=4), DIGITS).eval()
    x, y = torch.rand(5, 1, 8, 8), torch.arange(5)
    rec, kl = vae.elbo_terms(x, y)
    assert rec.shape == kl.shape == (5,) and (kl >= 0).all()
    assert vae.loss(x, y).ndim == 0
    assert vae.sample(2, torch.tensor([1, 2])).shape == (2, 1, 8, 8)
    assert vae.reconstruct(x, y).shape == x.shape
    path = vae.interpolate(x[:1], x[1:2], 6, y[:1], y[1:2])
    assert path.shape == (6, 1, 8, 8)
    assert torch.allclose(path[0], vae.reconstruct(x[:1], y[:1])[0], atol=1e-6)
    assert torch.allclose(path[-1], vae.reconstruct(x[1:2], y[1:2])[0], atol=1e-6)
    assert vae.best_class(x) is not None


def test_vae_samples_from_a_mixture_fitted_to_each_class_codes() -> None:
    torch.manual_seed(0)
    vae = VAE(VAEConfig(width=8, latent_dim=3, prior_components=1), DIGITS).eval()
    x = torch.rand(60, 1, 8, 8)
    y = torch.arange(60) % 3  # classes 0-2 only: 3-9 have no images and keep N(0, I)
    vae.fit_prior(x, y, seed=0)
    codes = vae.encode(x, y)[0].double()
    for c in range(3):  # one component: the class's codes' own mean and covariance
        mine = codes[y == c]
        assert torch.allclose(vae.prior_means[c, 0].double(), mine.mean(0), atol=1e-5)
        scale = vae.prior_scales[c, 0].double()
        covariance = torch.cov(mine.T, correction=0) + 1e-4 * torch.eye(3)
        assert torch.allclose(scale @ scale.T, covariance, atol=1e-5)
    assert torch.equal(vae.prior_means[5], torch.zeros(1, 3))
    # Draws follow the fitted density, and the same seed gives the same codes.
    g = torch.Generator().manual_seed(1)
    drawn = vae.prior_codes(4000, torch.full((4000,), 1), g).double()
    assert torch.allclose(drawn.mean(0), codes[y == 1].mean(0), atol=0.05)
    again = vae.prior_codes(5, torch.full((5,), 1), torch.Generator().manual_seed(2))
    assert torch.equal(again, vae.prior_codes(5, torch.full((5,), 1),
                                              torch.Generator().manual_seed(2)))
    # More components than a class has pairs of images: the rest get no weight.
    wide = VAE(VAEConfig(width=8, latent_dim=3, prior_components=8), DIGITS).eval()
    wide.fit_prior(x[:10], y[:10], seed=0)  # 4, 3 and 3 images: 2, 1 and 1 components
    weights = torch.softmax(wide.prior_logits[0], 0)
    assert (weights[:2] > 0).all() and (weights[2:] == 0).all()
    assert wide.sample(3, torch.tensor([0, 1, 7])).shape == (3, 1, 8, 8)
    with pytest.raises(HyperparameterError, match="prior_components"):
        VAEConfig(prior_components=-1).validate()


def test_autoencoder_codes_and_errors() -> None:
    ae = Autoencoder(AutoencoderConfig(width=8, latent_dim=3), COLOUR).eval()
    x = torch.rand(4, 3, 16, 16)
    assert ae.encode(x).shape == (4, 3) and ae(x).shape == x.shape
    assert ae.reconstruction_error(x).shape == (4,)


def test_rbm_pseudo_log_likelihood_is_exact() -> None:
    torch.manual_seed(0)
    rbm = RBM(RBMConfig(n_hidden=3), ImageSpec(size=8, channels=1, classes=()))
    with torch.no_grad():
        rbm.W.normal_(0, 0.5)
        rbm.visible_bias.normal_(0, 0.5)
    v = torch.bernoulli(torch.full((2, 64), 0.3))
    # log p(v_i | v_-i) from free energies, one flipped unit at a time.
    expected = torch.zeros(2)
    for i in range(64):
        flipped = v.clone()
        flipped[:, i] = 1 - flipped[:, i]
        expected += -torch.nn.functional.softplus(rbm.free_energy(v) - rbm.free_energy(flipped))
    assert torch.allclose(rbm.pseudo_log_likelihood(v), expected, atol=1e-4)


def test_rbm_free_energy_matches_brute_force() -> None:
    torch.manual_seed(0)
    rbm = RBM(RBMConfig(n_hidden=4), ImageSpec(size=8, channels=1, classes=()))
    with torch.no_grad():
        rbm.W.normal_(0, 0.3)
    v = torch.bernoulli(torch.full((1, 64), 0.5))
    # F(v) = -log Σ_h exp(-E(v, h)) over all 2^4 hidden states.
    energies = []
    for bits in itertools.product([0.0, 1.0], repeat=4):
        h = torch.tensor([bits])
        energies.append(-(v @ rbm.visible_bias) - (h @ rbm.hidden_bias)
                        - (h @ rbm.W @ v.T).squeeze())
    brute = -torch.logsumexp(-torch.stack(energies).squeeze(), dim=0)
    assert torch.allclose(rbm.free_energy(v)[0], brute, atol=1e-4)


def test_rbm_sampling_is_seeded() -> None:
    rbm = RBM(RBMConfig(n_hidden=8), DIGITS)
    a = rbm.sample(2, 5, torch.Generator().manual_seed(3))
    assert a.shape == (2, 1, 8, 8)
    assert torch.equal(a, rbm.sample(2, 5, torch.Generator().manual_seed(3)))


def test_frechet_distance() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = frechet_distance(a, a + 3.0)
    assert shifted == pytest.approx(4 * 9.0, rel=1e-6)  # only the means differ
    wider = frechet_distance(a, a * 2.0)  # Tr(S + 4S - 2·2S) = Tr(S) ≈ 4
    assert wider == pytest.approx(4.0, rel=0.1)


@pytest.mark.parametrize(("config", "field"), [
    (lambda: GANConfig(image_size=12), "image_size"),
    (lambda: VAEConfig(beta=0), "beta"),
    (lambda: RBMConfig(cd_steps=0), "cd_steps"),
    (lambda: AutoencoderConfig(threshold_percentile=100), "threshold_percentile"),
])
def test_configs_refuse_out_of_range_values(config: object, field: str) -> None:
    with pytest.raises(HyperparameterError, match=f"^{field} "):
        config().validate()  # type: ignore[operator]


def test_gaussian_baselines_sample_each_class_in_turn_from_its_own_fit() -> None:
    import numpy as np

    from training.evaluation.images import gaussian_samples

    rng = np.random.default_rng(0)
    dark = rng.uniform(0.0, 0.2, (50, 1, 4, 4)).astype(np.float32)
    bright = rng.uniform(0.8, 1.0, (50, 1, 4, 4)).astype(np.float32)
    images, labels = np.concatenate([dark, bright]), np.r_[np.zeros(50), np.ones(50)].astype(int)
    drawn = gaussian_samples(images, labels, 10, components=1, num_classes=2, seed=1)
    assert drawn.shape == (10, 1, 4, 4) and drawn.dtype == np.float32
    means = drawn.reshape(10, -1).mean(1)
    assert (means[0::2] < 0.3).all() and (means[1::2] > 0.7).all()  # classes 0, 1, 0, ...
    assert drawn.min() >= 0 and drawn.max() <= 1
    # Without labels, one mixture for all: its two components find the two groups.
    both = gaussian_samples(images, None, 400, components=2, num_classes=1, seed=1)
    means = both.reshape(400, -1).mean(1)
    assert ((means < 0.3) | (means > 0.7)).mean() > 0.95
    assert 0.3 < (means > 0.5).mean() < 0.7
