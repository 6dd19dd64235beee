"""The normal-normal model given tau: input validation, likelihood and conditional posterior.

:class:`NormalModel` evaluates, for a vector of tau values, the marginal likelihood
``p(y | tau) = N(y; X b0, diag(v + tau^2) + X B0 X')`` and the conditional posterior
``beta | tau, y ~ N(m(tau), V(tau))`` (conjugate generalised least squares):

    V(tau)^-1 = B0^-1 + X' W X,    m(tau) = V(tau) (B0^-1 b0 + X' W y),    W = diag(1 / (v + tau^2))

    log p(y | tau) = -1/2 [k log(2 pi) + sum log(v_i + tau^2) + log|B0| + log|V(tau)^-1|
                           + (y - X m)' W (y - X m) + (m - b0)' B0^-1 (m - b0)]

(matrix determinant lemma and Woodbury; the quadratic form is written as a sum of two
non-negative terms for numerical stability).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.priors import DEFAULT_MU_PRIOR, PriorSpec

__all__ = ["NormalModel", "build_model", "tau_log_posterior", "typical_variance"]


@dataclass(frozen=True)
class NormalModel:
    """Data and conjugate normal prior of the normal-normal (meta-regression) model."""

    yi: np.ndarray
    vi: np.ndarray
    X: np.ndarray
    beta_mean: np.ndarray
    beta_cov: np.ndarray

    @property
    def k(self) -> int:
        return self.yi.size

    def conditional(self, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Log marginal likelihood, conditional mean and covariance of beta at each tau.

        Parameters
        ----------
        tau : numpy.ndarray
            Shape ``(n,)``, non-negative.

        Returns
        -------
        loglik : numpy.ndarray
            Shape ``(n,)``: ``log p(y | tau)``.
        mean : numpy.ndarray
            Shape ``(n, p)``: ``E[beta | tau, y]``.
        cov : numpy.ndarray
            Shape ``(n, p, p)``: ``Cov[beta | tau, y]``.
        """
        tau = np.asarray(tau, dtype=float)
        prior_prec = np.linalg.inv(self.beta_cov)
        w = 1.0 / (self.vi[None, :] + tau[:, None] ** 2)
        xtw = self.X.T[None, :, :] * w[:, None, :]
        prec = prior_prec[None] + xtw @ self.X
        rhs = (prior_prec @ self.beta_mean)[None, :] + xtw @ self.yi
        chol = np.linalg.cholesky(prec)
        cov = np.linalg.inv(prec)
        mean = np.einsum("nij,nj->ni", cov, rhs)
        resid = self.yi[None, :] - mean @ self.X.T
        dev = mean - self.beta_mean[None, :]
        quad = np.sum(w * resid**2, axis=1) + np.einsum("ni,ij,nj->n", dev, prior_prec, dev)
        logdet = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=1, axis2=2)), axis=1)
        logdet += np.linalg.slogdet(self.beta_cov)[1]
        loglik = -0.5 * (self.k * np.log(2.0 * np.pi) - np.sum(np.log(w), axis=1) + logdet + quad)
        return loglik, mean, cov


def typical_variance(vi: np.ndarray) -> float:
    """Higgins-Thompson typical within-study variance ``s^2`` (``v_1`` when ``k = 1``)."""
    w = 1.0 / np.asarray(vi, dtype=float)
    if w.size == 1:
        return float(1.0 / w[0])
    return float((w.size - 1) * w.sum() / (w.sum() ** 2 - np.sum(w**2)))


def _as_vector(values: object, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; bad positions: {np.flatnonzero(~np.isfinite(arr)).tolist()}")
    return arr


def _regression_prior(
    X: object, k: int, beta_mean: object, beta_cov: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[0] != k or X.shape[1] == 0 or not np.all(np.isfinite(X)):
        raise ValueError(f"X must be a finite ({k}, p) matrix with p >= 1, got shape {X.shape}")
    p = X.shape[1]
    if beta_mean is None or beta_cov is None:
        raise ValueError("meta-regression (X given) needs beta_mean (p,) and beta_cov (p, p)")
    b0 = np.asarray(beta_mean, dtype=float)
    B0 = np.asarray(beta_cov, dtype=float)
    if b0.shape != (p,) or B0.shape != (p, p):
        raise ValueError(f"beta_mean must have shape ({p},) and beta_cov ({p}, {p}); got {b0.shape}, {B0.shape}")
    if not (np.all(np.isfinite(b0)) and np.all(np.isfinite(B0)) and np.allclose(B0, B0.T)):
        raise ValueError("beta_mean and beta_cov must be finite and beta_cov symmetric")
    if np.any(np.linalg.eigvalsh(B0) <= 0):
        raise ValueError("beta_cov must be positive definite")
    return X, b0, B0


def build_model(
    yi: object,
    vi: object,
    *,
    mu_prior: PriorSpec | None,
    X: object | None,
    beta_mean: object | None,
    beta_cov: object | None,
) -> tuple[NormalModel, list[str]]:
    """Validate the inputs of :func:`models.exact.posterior.exact_posterior`; return the model and default names.

    Raises
    ------
    ValueError
        On any invalid input, with a message naming it.
    """
    y = _as_vector(yi, "yi")
    v = _as_vector(vi, "vi")
    if y.size != v.size:
        raise ValueError(f"yi and vi must have the same length, got {y.size} and {v.size}")
    if np.any(v <= 0):
        raise ValueError(f"vi must be > 0; bad positions: {np.flatnonzero(v <= 0).tolist()}")
    if X is None:
        if beta_mean is not None or beta_cov is not None:
            raise ValueError("beta_mean/beta_cov are for meta-regression: pass X, or use mu_prior")
        mu_prior = DEFAULT_MU_PRIOR if mu_prior is None else mu_prior
        if not isinstance(mu_prior, PriorSpec) or mu_prior.family != "normal":
            raise ValueError(f"the exact engine needs a normal:M:S prior on mu, got {mu_prior}")
        b0, B0 = np.array(mu_prior.params[:1]), np.array([[mu_prior.params[1] ** 2]])
        return NormalModel(y, v, np.ones((y.size, 1)), b0, B0), ["mu"]
    if mu_prior is not None:
        raise ValueError("with X, give the prior of all coefficients as beta_mean/beta_cov, not mu_prior")
    design, b0, B0 = _regression_prior(X, y.size, beta_mean, beta_cov)
    return NormalModel(y, v, design, b0, B0), ["intercept"] + [f"x{j}" for j in range(1, design.shape[1])]


def tau_log_posterior(model: NormalModel, prior: PriorSpec, tau: np.ndarray) -> np.ndarray:
    """Unnormalised log posterior of tau (``-inf`` outside the prior support)."""
    tau = np.asarray(tau, dtype=float)
    out = np.full(tau.shape, -np.inf)
    logprior = prior.logpdf(tau)
    ok = np.isfinite(logprior)
    if np.any(ok):
        out[ok] = logprior[ok] + model.conditional(tau[ok])[0]
    return out
