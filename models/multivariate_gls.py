r"""Closed-form quantities of the marginal multivariate model per posterior draw (numpy, no PyMC graph).

Notation as in :mod:`models.multivariate`: study :math:`i` reports outcomes :math:`O_i`; given a
draw of the between-study covariance :math:`\Sigma` (and of :math:`\rho_w` when it is estimated),
its reported effects have covariance :math:`C_i = \Sigma_{O_iO_i} + S_{i,O_iO_i}`, and
:math:`P_i` denotes :math:`C_i^{-1}` embedded in a :math:`K \times K` matrix (zero rows and columns
for unreported outcomes).

**Pointwise log likelihood** (:func:`pointwise_log_lik`), per draw and study: the normal density
of the reported effects, :math:`\log \mathcal N(y_{i,O_i} \mid \mu_{O_i}, C_i)`, the quantity PSIS-LOO
over studies needs.

**Conditional GLS estimates of μ** (:func:`gls_contrast`). Given :math:`\Sigma` and the
independent priors :math:`\mu_j \sim \mathcal N(m_0, s_0^2)`, the posterior of :math:`\mu` is
normal with precision :math:`\Lambda = I/s_0^2 + \sum_i P_i` and mean
:math:`\Lambda^{-1}(m_0 1/s_0^2 + \sum_i P_i y_i)`; its j-th element is the *multivariate*
estimate :math:`m^{MV}_j` with variance :math:`V^{MV}_j = (\Lambda^{-1})_{jj}`. The *univariate*
estimate uses outcome j of the studies reporting it only, with weights
:math:`w_i = 1/(\tau_j^2 + v_{ij})`: :math:`m^{UV}_j = (m_0/s_0^2 + \sum w_i y_{ij}) / (1/s_0^2 + \sum w_i)`,
variance :math:`V^{UV}_j = 1/(1/s_0^2 + \sum w_i)`.

When missingness is ignorable both are unbiased for :math:`\mu_j` and the multivariate one is
efficient (it is the best linear unbiased estimator given :math:`\Sigma`), so the covariance of
the two equals :math:`V^{MV}_j` and the contrast :math:`d_j = m^{MV}_j - m^{UV}_j` has variance
:math:`V^{UV}_j - V^{MV}_j` (Hausman 1978; exact for flat priors, near-exact for the weak
N(0, 3²)). When the studies that did not report outcome j are those whose other outcomes were
worse (outcome-reporting bias), the correlations pull :math:`m^{MV}_j` below :math:`m^{UV}_j`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["GLSContrast", "gls_contrast", "pointwise_log_lik", "study_covariances"]


def study_covariances(
    sigma: np.ndarray, S: np.ndarray, reported: np.ndarray, rho_within: np.ndarray | None
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Per study: its index, reported outcome indices and the ``(n, |O_i|, |O_i|)`` covariances C_i per draw.

    Parameters
    ----------
    sigma : numpy.ndarray
        ``(n, K, K)`` between-study covariance per draw.
    S : numpy.ndarray
        ``(k, K, K)`` within-study covariances; with ``rho_within`` only their diagonals are used.
    reported : numpy.ndarray
        ``(k, K)`` boolean.
    rho_within : numpy.ndarray or None
        ``(n,)`` within-study correlation per draw (estimated), or None (``S`` as given).
    """
    for i in range(reported.shape[0]):
        obs = np.flatnonzero(reported[i])
        between = sigma[:, obs][:, :, obs]
        if rho_within is None:
            within = np.broadcast_to(S[i][np.ix_(obs, obs)], between.shape)
        else:
            sd = np.sqrt(np.diagonal(S[i])[obs])
            corr = rho_within[:, None, None] + (1.0 - rho_within[:, None, None]) * np.eye(obs.size)
            within = sd[None, :, None] * corr * sd[None, None, :]
        yield i, obs, between + within


def pointwise_log_lik(
    yi: np.ndarray, S: np.ndarray, location: np.ndarray, sigma: np.ndarray, rho_within: np.ndarray | None
) -> np.ndarray:
    """``(n, k)`` log density of each study's reported effects per draw (marginal model).

    ``location`` is the ``(n, k or 1, K)`` mean of θ_i per draw (``mu`` plus moderators).
    """
    reported = ~np.isnan(yi)
    n, k = sigma.shape[0], yi.shape[0]
    location = np.broadcast_to(location, (n, k, yi.shape[1]))
    out = np.empty((n, k))
    for i, obs, cov in study_covariances(sigma, S, reported, rho_within):
        chol = np.linalg.cholesky(cov)
        resid = yi[i, obs][None, :] - location[:, i, obs]
        z = np.linalg.solve(chol, resid[..., None])[..., 0]
        log_det = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        out[:, i] = -0.5 * (obs.size * np.log(2.0 * np.pi) + log_det + (z**2).sum(axis=1))
    return out


@dataclass(frozen=True, eq=False)
class GLSContrast:
    """Multivariate and univariate conditional estimates of every μ_j, per draw (``(n, K)`` arrays).

    Attributes
    ----------
    mv_mean, mv_var : numpy.ndarray
        ``m^MV`` and ``V^MV`` (all studies, all outcomes, correlations used).
    uv_mean, uv_var : numpy.ndarray
        ``m^UV`` and ``V^UV`` (outcome j of the studies reporting it).
    """

    mv_mean: np.ndarray
    mv_var: np.ndarray
    uv_mean: np.ndarray
    uv_var: np.ndarray

    @property
    def difference(self) -> np.ndarray:
        """``d = m^MV - m^UV`` per draw and outcome."""
        return self.mv_mean - self.uv_mean

    @property
    def null_sd(self) -> np.ndarray:
        """``sqrt(V^UV - V^MV)``: the SD of ``d`` under ignorable missingness (clipped at 0)."""
        return np.sqrt(np.clip(self.uv_var - self.mv_var, 0.0, None))


def gls_contrast(
    yi: np.ndarray,
    S: np.ndarray,
    sigma: np.ndarray,
    rho_within: np.ndarray | None,
    *,
    prior_mean: float,
    prior_sd: float,
    keep: np.ndarray | None = None,
) -> GLSContrast:
    """The conditional GLS estimates of μ per draw (see the module docstring).

    Parameters
    ----------
    yi : numpy.ndarray
        ``(k, K)`` benefit-oriented effects, NaN where not reported.
    S : numpy.ndarray
        ``(k, K, K)`` within-study covariances (diagonals only when ``rho_within`` is given).
    sigma : numpy.ndarray
        ``(n, K, K)`` between-study covariance per draw.
    rho_within : numpy.ndarray or None
        ``(n,)`` within-study correlation per draw, or None.
    prior_mean, prior_sd : float
        The normal prior of each μ_j.
    keep : numpy.ndarray, optional
        ``(k,)`` boolean: studies entering the multivariate estimate (default all); the univariate
        estimate always uses every study reporting the outcome.

    Returns
    -------
    GLSContrast
    """
    reported = ~np.isnan(yi)
    n, K = sigma.shape[0], yi.shape[1]
    keep = np.ones(yi.shape[0], dtype=bool) if keep is None else keep
    precision = np.broadcast_to(np.eye(K) / prior_sd**2, (n, K, K)).copy()
    score = np.full((n, K), prior_mean / prior_sd**2)
    for i, obs, cov in study_covariances(sigma, S, reported, rho_within):
        if not keep[i]:
            continue
        inv = np.linalg.inv(cov)
        precision[:, obs[:, None], obs[None, :]] += inv
        score[:, obs] += np.einsum("nab,b->na", inv, yi[i, obs])
    mv_cov = np.linalg.inv(precision)
    mv_mean = np.einsum("nab,nb->na", mv_cov, score)
    mv_var = np.diagonal(mv_cov, axis1=1, axis2=2)
    tau2 = np.diagonal(sigma, axis1=1, axis2=2)
    vi = np.where(reported, np.diagonal(S, axis1=1, axis2=2), np.inf)
    weights = 1.0 / (tau2[:, None, :] + vi[None])
    uv_precision = 1.0 / prior_sd**2 + weights.sum(axis=1)
    uv_mean = (prior_mean / prior_sd**2 + (weights * np.where(reported, yi, 0.0)[None]).sum(axis=1)) / uv_precision
    return GLSContrast(mv_mean, mv_var, uv_mean, 1.0 / uv_precision)
