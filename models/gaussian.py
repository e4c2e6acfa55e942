"""Multivariate Gaussian, the textbook case of model collapse.

Fit by maximum likelihood (covariance / n) or with the unbiased estimator (/ (n - 1)).
Under ``replace`` with the MLE, E[var_g] = ((n - 1) / n) ** (g + 1) (REFERENCES.md, 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.base import check_items

_LOG_2PI = float(np.log(2 * np.pi))


class Gaussian:
    """N(mean, cov) over rows of shape (d,)."""

    def __init__(self, dim: int = 1, *, estimator: str = "mle", mean=None, cov=None) -> None:
        if estimator not in ("mle", "unbiased"):
            raise ValueError(f"estimator: {estimator!r} (allowed: mle, unbiased)")
        self.dim = dim
        self.estimator = estimator
        self.mean = np.zeros(dim) if mean is None else np.asarray(mean, dtype=float).reshape(dim)
        self.cov = np.eye(dim) if cov is None else np.asarray(cov, dtype=float).reshape(dim, dim)
        # Sampling knobs: temperature scales the covariance (p ** (1 / T) of a Gaussian is
        # N(mean, T cov)); top_p keeps the central region of that mass.
        self.temperature = 1.0
        self.top_p = 1.0
        self.top_k = 0  # items are not tokens: ignored
        self._refresh()

    def _refresh(self) -> None:
        # Cache the Cholesky factor and its inverse: sampling and scoring then cost one
        # matrix product each (this runs once per generation, scoring thousands of items).
        if self.dim == 1:  # the common theory case, without LAPACK call overhead
            var = float(self.cov[0, 0])
            self._chol = np.sqrt(max(var, 0.0)).reshape(1, 1)
            self._logdet = np.log(var) if var > 0 else -np.inf
        else:
            try:
                self._chol = np.linalg.cholesky(self.cov)
                self._logdet = 2.0 * float(np.log(np.diagonal(self._chol)).sum())
            except np.linalg.LinAlgError:  # singular: collapsed onto a subspace
                self._chol = np.zeros_like(self.cov)
                self._logdet = -np.inf
        self._inv_chol = np.linalg.inv(self._chol) if np.isfinite(self._logdet) else None

    def fit(self, data: np.ndarray, rng: np.random.Generator | None = None) -> None:
        x = check_items(data, ndim=2)
        n = len(x)
        self.mean = x.mean(axis=0)
        centred = x - self.mean
        ddof = 1 if self.estimator == "unbiased" and n > 1 else 0
        self.cov = centred.T @ centred / (n - ddof)
        self._refresh()

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        scale = np.sqrt(self.temperature)
        if self.top_p >= 1.0:
            z = rng.standard_normal((n, self.dim))
        else:
            z = _central_normal(n, self.dim, self.top_p, rng)
        return self.mean + scale * z @ self._chol.T

    def log_prob(self, data: np.ndarray) -> np.ndarray:
        x = check_items(data, ndim=2)
        if self._inv_chol is None:
            return np.full(len(x), -np.inf)
        maha = self._mahalanobis(x)
        return -0.5 * (maha + self._logdet + self.dim * _LOG_2PI)

    def sample_log_prob(self, data: np.ndarray) -> np.ndarray:
        """Log-density of what ``sample`` draws: N(mean, T cov), cut to the central ball
        holding ``top_p`` of its mass and renormalised."""
        x = check_items(data, ndim=2)
        if self._inv_chol is None:
            return np.full(len(x), -np.inf)
        t, d = self.temperature, self.dim
        maha = self._mahalanobis(x) / t
        lp = -0.5 * (maha + self._logdet + d * np.log(t) + d * _LOG_2PI)
        if self.top_p < 1.0:
            from scipy.stats import chi2

            lp = np.where(maha <= chi2.ppf(self.top_p, d), lp - np.log(self.top_p), -np.inf)
        return lp

    def _mahalanobis(self, x: np.ndarray) -> np.ndarray:
        sol = (x - self.mean) @ self._inv_chol.T
        return np.einsum("ij,ij->i", sol, sol)

    def flops(self, op: str, n_items: int) -> float:
        d = self.dim
        if op == "fit":  # mean (n d) + centring (n d) + X^T X (2 n d^2) + Cholesky (d^3 / 3)
            return 2 * n_items * d + 2 * n_items * d * d + d**3 / 3
        if op == "sample":  # d normals + a triangular product (d^2) per item
            return n_items * (d + d * d)
        if op == "score":  # triangular solve (d^2) + squared norm (2 d) per item
            return n_items * (d * d + 2 * d)
        raise ValueError(f"op: {op!r} (allowed: fit, sample, score)")

    def reset(self, rng: np.random.Generator) -> None:
        """A closed-form fit has no initialisation: nothing to reset, nothing drawn."""

    def item_size(self, data: np.ndarray) -> None:
        """Every item is one unit."""
        return None

    def summary(self) -> dict[str, float]:
        return {"mean": float(self.mean.mean()), "var": float(np.trace(self.cov) / self.dim)}

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.copy(), "cov": self.cov.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean = np.asarray(state["mean"], dtype=float).reshape(self.dim)
        self.cov = np.asarray(state["cov"], dtype=float).reshape(self.dim, self.dim)
        self._refresh()


def _central_normal(n: int, dim: int, mass: float, rng: np.random.Generator) -> np.ndarray:
    """Standard normals restricted to the central ball holding ``mass`` of the probability."""
    from scipy.stats import chi2

    radius2 = chi2.ppf(mass, dim)
    out = np.empty((0, dim))
    while len(out) < n:
        z = rng.standard_normal((int((n - len(out)) / mass) + 8, dim))
        out = np.vstack([out, z[np.einsum("ij,ij->i", z, z) <= radius2]])
    return out[:n]
