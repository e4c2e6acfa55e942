"""Gaussian mixture fit by EM (scikit-learn), the Shumailov et al. toy case.

The truth is a mixture whose last component is a minority mode; collapse erases it first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.base import check_items

_LOG_2PI = float(np.log(2 * np.pi))


class GaussianMixture:
    """Diagonal-free (full covariance) mixture of ``components`` Gaussians in ``dim`` dims."""

    def __init__(self, components: int, dim: int = 1, *, weights=None, means=None, covs=None,
                 max_iter: int = 100) -> None:
        self.components, self.dim, self.max_iter = components, dim, max_iter
        self.weights = np.full(components, 1 / components) if weights is None else np.asarray(weights, float)
        self.means = np.zeros((components, dim)) if means is None else np.asarray(means, float)
        self.covs = np.tile(np.eye(dim), (components, 1, 1)) if covs is None else np.asarray(covs, float)
        self.temperature = 1.0
        self.top_p = 1.0
        self.top_k = 0  # items are not tokens: ignored
        self.last_iters = 0

    @classmethod
    def truth(cls, components: int, dim: int, *, minority_weight: float, separation: float
              ) -> GaussianMixture:
        """Components on a line ``separation`` apart; the last holds ``minority_weight``."""
        if components == 1:
            weights = np.ones(1)
        else:
            weights = np.full(components, (1 - minority_weight) / (components - 1))
            weights[-1] = minority_weight
        means = np.zeros((components, dim))
        means[:, 0] = separation * (np.arange(components) - (components - 1) / 2)
        return cls(components, dim, weights=weights, means=means)

    def fit(self, data: np.ndarray, rng: np.random.Generator) -> None:
        from sklearn.mixture import GaussianMixture as SkGMM

        x = check_items(data, ndim=2)
        k = min(self.components, len(np.unique(x, axis=0)))
        gm = SkGMM(k, covariance_type="full", max_iter=self.max_iter, reg_covar=1e-6,
                   random_state=int(rng.integers(2**31 - 1)))
        gm.fit(x)
        self.weights = np.zeros(self.components)
        self.weights[:k] = gm.weights_
        self.means = np.zeros((self.components, self.dim))
        self.means[:k] = gm.means_
        self.covs = np.tile(np.eye(self.dim), (self.components, 1, 1))
        self.covs[:k] = gm.covariances_
        self.last_iters = int(gm.n_iter_)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        comp = rng.choice(self.components, size=n, p=self.weights / self.weights.sum())
        z = rng.standard_normal((n, self.dim)) * np.sqrt(self.temperature)
        chol = np.linalg.cholesky(self.covs)
        return self.means[comp] + np.einsum("nij,nj->ni", chol[comp], z)

    def log_prob(self, data: np.ndarray) -> np.ndarray:
        return self._log_prob(check_items(data, ndim=2), self.covs)

    def sample_log_prob(self, data: np.ndarray) -> np.ndarray:
        """Log-density of what ``sample`` draws: every component's covariance times T."""
        return self._log_prob(check_items(data, ndim=2), self.covs * self.temperature)

    def _log_prob(self, x: np.ndarray, covs: np.ndarray) -> np.ndarray:
        chol = np.linalg.cholesky(covs)
        logdet = 2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        diff = x[None, :, :] - self.means[:, None, :]  # (k, n, d)
        sol = np.linalg.solve(chol[:, None, :, :], diff[..., None])[..., 0]
        comp = -0.5 * (np.sum(sol**2, axis=-1) + logdet[:, None] + self.dim * _LOG_2PI)
        with np.errstate(divide="ignore"):
            comp = comp + np.log(self.weights)[:, None]
        top = comp.max(axis=0)
        return top + np.log(np.exp(comp - top).sum(axis=0))

    def flops(self, op: str, n_items: int) -> float:
        k, d = self.components, self.dim
        per_item = k * (d * d + 3 * d + 4)  # responsibilities: k Mahalanobis terms + normalise
        if op == "fit":  # E and M steps per EM iteration
            return max(self.last_iters, 1) * n_items * (per_item + k * 2 * d * d)
        if op == "sample":
            return n_items * (d * d + d + np.log2(max(k, 2)))
        if op == "score":
            return n_items * per_item
        raise ValueError(f"op: {op!r} (allowed: fit, sample, score)")

    def reset(self, rng: np.random.Generator) -> None:
        """A closed-form fit has no initialisation: nothing to reset, nothing drawn."""

    def item_size(self, data: np.ndarray) -> None:
        """Every item is one unit."""
        return None

    def summary(self) -> dict[str, float]:
        return {"minority_weight": float(self.weights[np.argmax(self.means[:, 0])]),
                "components_alive": float(np.count_nonzero(self.weights > 1e-3))}

    def state_dict(self) -> dict[str, Any]:
        # last_iters: the EM iterations of the fit that made these parameters, so that a model
        # loaded from it (a shared generation 0) reports the same fit FLOPs.
        return {"weights": self.weights.copy(), "means": self.means.copy(), "covs": self.covs.copy(),
                "last_iters": self.last_iters}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights = np.asarray(state["weights"], float)
        self.means = np.asarray(state["means"], float)
        self.covs = np.asarray(state["covs"], float)
        self.last_iters = int(state.get("last_iters", 0))
