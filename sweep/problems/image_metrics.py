"""Sample quality of image models, measured in the feature space of a real-data classifier.

A small MLP classifier is trained once per data config on the real training images (class-
balanced loss, fixed seed; cached in the process). Its last hidden layer is the feature
space of

  * ``fd``: Frechet distance between Gaussians fit to the features of generated and held-out
    real images (FID's formula, Heusel et al. 2017, with this small network in place of
    Inception); standard error by bootstrap over the generated images;
  * ``precision`` / ``recall``: the k-NN manifold estimates of Kynkaenniemi et al. (2019):
    the share of generated images inside some real image's k-NN ball, and of real images
    inside some generated image's ball; binomial standard errors;
  * ``diversity``: mean pairwise distance between generated images' features, with the
    U-statistic's leading-order standard error 2 sd(mean distance per image) / sqrt(n);
  * ``minority_share``: share of generated images the classifier assigns to the minority
    class (truth: ``minority_truth``), and ``class_tv``: total variation between the
    predicted class shares and the true ones, standard errors binomial / bootstrap.

Without labels the features are the top principal components of the real training images
and the class metrics are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

#: k of the k-NN balls of precision / recall (Kynkaenniemi et al. use 3).
PR_K = 3
#: Bootstrap replicates for the standard errors of fd and class_tv.
BOOTSTRAP = 30
_CACHE: dict[tuple, FeatureExtractor] = {}


@dataclass
class FeatureExtractor:
    """Features (and, with labels, class predictions) of flattened images."""

    net: nn.Module | None  # the classifier (None: PCA features)
    pca_mean: np.ndarray | None = None
    pca_basis: np.ndarray | None = None  # (D, k)
    classes: np.ndarray | None = None
    test_accuracy: float = float("nan")

    @torch.no_grad()
    def features(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.net is None:
            return (x - self.pca_mean) @ self.pca_basis
        return self.net[:-1](torch.from_numpy(x)).numpy().astype(np.float64)

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Index into ``classes`` of each image's most likely class."""
        if self.net is None:
            raise ValueError("no labels: this feature extractor has no classes")
        return self.net(torch.from_numpy(np.asarray(x, dtype=np.float32))).argmax(-1).numpy()


def train_extractor(train_x: np.ndarray, train_y: np.ndarray | None, test_x: np.ndarray,
                    test_y: np.ndarray | None, *, hidden: int = 128, features: int = 64,
                    epochs: int = 60, seed: int = 0) -> FeatureExtractor:
    """A classifier D -> hidden -> features -> classes (SiLU), or PCA without labels."""
    if train_y is None:
        mean = train_x.mean(0)
        _, _, vt = np.linalg.svd(train_x - mean, full_matrices=False)
        return FeatureExtractor(None, pca_mean=mean, pca_basis=vt[:min(32, len(vt))].T)
    classes = np.unique(train_y)
    y = torch.from_numpy(np.searchsorted(classes, train_y))
    x = torch.from_numpy(np.asarray(train_x, dtype=np.float32))
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # default init from the seed, global RNG untouched
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(x.size(1), hidden), nn.SiLU(), nn.Linear(hidden, features),
                            nn.SiLU(), nn.Linear(features, len(classes)))
    counts = torch.bincount(y, minlength=len(classes)).float()
    loss_fn = nn.CrossEntropyLoss(weight=counts.sum() / (len(classes) * counts))  # balanced
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(128):
            loss = loss_fn(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    ext = FeatureExtractor(net, classes=classes)
    if test_y is not None:
        ext.test_accuracy = float((classes[ext.predict(test_x)] == test_y).mean())
    return ext


def cached_extractor(key: tuple, train_x: np.ndarray, train_y: np.ndarray | None,
                     test_x: np.ndarray, test_y: np.ndarray | None) -> FeatureExtractor:
    """``train_extractor`` once per data config ``key`` in this process."""
    if key not in _CACHE:
        _CACHE[key] = train_extractor(train_x, train_y, test_x, test_y)
    return _CACHE[key]


# --------------------------------------------------------------------------- the metrics
def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of Gaussians fit to rows."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr((S_a S_b)^(1/2)) = sum of sqrt(eigenvalues of S_a S_b), which are real and >= 0.
    eig = np.linalg.eigvals(s_a @ s_b)
    tr_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr_sqrt)


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(d2, 0, None))


def _knn_radius(x: np.ndarray, k: int) -> np.ndarray:
    d = _pairwise(x, x)
    return np.sort(d, axis=1)[:, min(k, len(x) - 1)]  # column 0 is the point itself


def _coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """For each point: inside at least one ball (centre, radius)?"""
    return (_pairwise(points, centres) <= radii[None, :]).any(axis=1)


def _binomial_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))


def image_metrics(samples: np.ndarray, real: np.ndarray, extractor: FeatureExtractor, *,
                  real_labels: np.ndarray | None = None, minority_class: int | None = None,
                  rng: np.random.Generator | None = None) -> dict[str, float]:
    """Every metric of the module docstring, with ``<name>_se`` standard errors."""
    rng = rng or np.random.default_rng(0)
    fs, fr = extractor.features(samples), extractor.features(real)
    if not np.isfinite(fs).all():
        return {"fd": float("inf"), "precision": 0.0, "recall": 0.0, "diversity": float("nan")}
    out: dict[str, float] = {}
    out["fd"] = frechet_distance(fs, fr)
    boots = [frechet_distance(fs[rng.integers(len(fs), size=len(fs))], fr) for _ in range(BOOTSTRAP)]
    out["fd_se"] = float(np.std(boots, ddof=1))
    precision = _coverage(fs, fr, _knn_radius(fr, PR_K)).mean()
    recall = _coverage(fr, fs, _knn_radius(fs, PR_K)).mean()
    out.update(precision=float(precision), precision_se=_binomial_se(precision, len(fs)),
               recall=float(recall), recall_se=_binomial_se(recall, len(fr)))
    d = _pairwise(fs, fs)
    per_image = d.sum(1) / max(len(fs) - 1, 1)
    out["diversity"] = float(per_image.mean())
    out["diversity_se"] = float(2 * per_image.std(ddof=1) / math.sqrt(len(fs)))
    if extractor.classes is not None and real_labels is not None:
        classes = extractor.classes
        truth = np.array([(real_labels == k).mean() for k in classes])
        pred = extractor.predict(samples)
        shares = np.bincount(pred, minlength=len(classes)) / len(pred)
        out["class_tv"] = float(0.5 * np.abs(shares - truth).sum())
        tv_boot = [0.5 * np.abs(np.bincount(rng.choice(pred, len(pred)), minlength=len(classes))
                                / len(pred) - truth).sum() for _ in range(BOOTSTRAP)]
        out["class_tv_se"] = float(np.std(tv_boot, ddof=1))
        if minority_class is not None:
            j = int(np.searchsorted(classes, minority_class))
            out["minority_share"] = float(shares[j])
            out["minority_share_se"] = _binomial_se(shares[j], len(pred))
            out["minority_truth"] = float(truth[j])
    return out
