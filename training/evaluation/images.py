"""How image families are scored: a feature space, Fréchet distance, AUROC, linear probes.

The Fréchet distance (Heusel et al. 2017's FID, with a small classifier trained on the
training split in place of Inception) compares the mean and covariance of two sets of
features: 0 for identical distributions. Its floor on real data is the same distance
between the held-out and training images, which differ only by sampling.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Width of the classifier's feature layer: the space Fréchet distances are measured in.
FEATURES = 32


class FeatureSpace:
    """A small MLP classifier trained on the training split (or PCA without labels)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, num_classes: int,
                 *, seed: int, steps: int = 400) -> None:
        flat = images.flatten(1).float()  # (N, C*H*W)
        self.labelled = labels is not None and num_classes > 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self.labelled:
                assert labels is not None
                self.net = nn.Sequential(nn.Linear(flat.shape[1], 128), nn.ReLU(),
                                         nn.Linear(128, FEATURES), nn.ReLU(),
                                         nn.Linear(FEATURES, num_classes))
                self._fit(flat, labels, steps)
            else:
                mean = flat.mean(0, keepdim=True)
                _, _, v = torch.linalg.svd(flat - mean, full_matrices=False)
                self.mean, self.basis = mean, v[:FEATURES].T  # (D, k)

    def _fit(self, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
        optimizer = torch.optim.Adam(self.net.parameters(), lr=3e-3, weight_decay=1e-4)
        for _ in range(steps):
            idx = torch.randint(len(x), (min(128, len(x)),))
            loss = F.cross_entropy(self.net(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        self.net.eval()

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> np.ndarray:
        flat = images.flatten(1).float().cpu()
        if self.labelled:
            return self.net[:4](flat).double().numpy()  # (N, FEATURES)
        return ((flat - self.mean) @ self.basis).double().numpy()

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        assert self.labelled, "class probabilities need a labelled training set"
        return F.softmax(self.net(images.flatten(1).float().cpu()), dim=1)  # (N, classes)

    def confidence(self, images: torch.Tensor) -> float:
        """Mean top-class probability: near 1 for images that look like one clear class."""
        return float(self.probabilities(images).max(dim=1).values.mean())

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self.probabilities(images).argmax(1) == labels.cpu()).float().mean())


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) between two (N, D) feature sets."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((S_a S_b)^1/2) = sum of sqrt eigenvalues of the symmetric S_a^1/2 S_b S_a^1/2.
    w, v = np.linalg.eigh(s_a)
    root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    middle = root @ s_b @ root
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_root = np.sqrt(np.clip(eig, 0.0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * trace_root)


def auroc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """Area under the ROC curve of a score meant to be higher for the anomalous inputs."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
    return float(roc_auc_score(y, np.r_[normal, anomalous]))


def corrupt(images: torch.Tensor, generator: torch.Generator,
            fraction: float = 0.1) -> torch.Tensor:
    """Replace ``fraction`` of each image's pixels by uniform noise."""
    mask = torch.rand(images.shape, generator=generator) < fraction
    noise = torch.rand(images.shape, generator=generator)
    return torch.where(mask, noise, images.cpu())


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray,
                   val_y: np.ndarray, *, C: float) -> float:
    """Held-out accuracy of a logistic regression fit on the training features."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C, max_iter=1000)
    model.fit(train_x, train_y)
    return float(model.score(val_x, val_y))


def gaussian_samples(images: np.ndarray, labels: np.ndarray | None, n: int, *,
                     components: int, num_classes: int, seed: int) -> np.ndarray:
    """``n`` images drawn from Gaussian mixtures of ``components`` fitted to the pixels
    (scikit-learn's `GaussianMixture`; one full-covariance Gaussian when ``components`` is
    1): one mixture a class, the classes in turn as a model's samples cycle through them
    (`ImageRecipe.class_batch`), or one for all the images when ``labels`` is None.
    Clipped to [0, 1]. The baselines a statistician fits before any network."""
    from sklearn.mixture import GaussianMixture

    shape = images.shape[1:]
    flat = images.reshape(len(images), -1).astype(np.float64)
    covariance = "full" if flat.shape[1] <= 1024 else "diag"
    groups = [flat] if labels is None else [flat[labels == k] for k in range(num_classes)]
    counts = [n] if labels is None else [len(range(k, n, num_classes))
                                         for k in range(num_classes)]
    drawn = []
    for k, (group, count) in enumerate(zip(groups, counts, strict=True)):
        mixture = GaussianMixture(n_components=max(1, min(components, len(group) // 2)),
                                  covariance_type=covariance, reg_covar=1e-4,
                                  random_state=seed + k).fit(group)
        drawn.append(mixture.sample(count)[0] if count else np.empty((0, flat.shape[1])))
    if labels is None:
        out = drawn[0]
    else:  # class k's samples at positions k, k + num_classes, ...
        out = np.empty((n, flat.shape[1]))
        for k, samples in enumerate(drawn):
            out[k::num_classes] = samples
    return np.clip(out, 0.0, 1.0).reshape(n, *shape).astype(np.float32)
