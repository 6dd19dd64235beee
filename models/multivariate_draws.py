r"""Posterior draws of the multivariate model's study effects, in numpy (no PyMC graph).

Given posterior draws of the mean :math:`m_i` and between-study covariance :math:`\Sigma`, the
study effects of the marginal model (:mod:`models.multivariate`) have the exact conditional

.. math::

    \theta_i \mid y_{i,O_i}, m_i, \Sigma \sim \mathrm{MVN}\big(m_i + G_i (y_{i,O_i} - m_{i,O_i}),\;
    \Sigma - G_i \Sigma_{O_i\cdot}\big), \qquad G_i = \Sigma_{\cdot O_i} (\Sigma_{O_iO_i} + S_{i,O_iO_i})^{-1},

for all K outcomes (the unreported ones are predictions given the reported ones); a new study
has :math:`\theta_{new} \sim \mathrm{MVN}(\mu, \Sigma)`. :func:`marginal_logpdf` is the
reference (scipy) density of one study's reported effects, used to check the PyMC graph.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from models.multivariate_gls import study_covariances


def marginal_logpdf(
    y_obs: np.ndarray, location: np.ndarray, sigma: np.ndarray, S_obs: np.ndarray, observed: np.ndarray
) -> float:
    """Log density of one study's reported effects under the marginal model (numpy, for checks).

    ``y_obs`` holds the reported effects, ``observed`` their outcome indices; ``location`` and
    ``sigma`` are the full ``(K,)`` mean and ``(K, K)`` between-study covariance.
    """
    cov = sigma[np.ix_(observed, observed)] + S_obs
    return float(stats.multivariate_normal(location[observed], cov).logpdf(y_obs))


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """Symmetric square root of a batch of PSD matrices (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh(0.5 * (cov + np.swapaxes(cov, -1, -2)))
    return v * np.sqrt(np.clip(w, 0.0, None))[..., None, :]


def draw_theta(
    yi: np.ndarray,
    S: np.ndarray,
    location: np.ndarray,
    sigma: np.ndarray,
    *,
    rng: np.random.Generator,
    rho_within: np.ndarray | None = None,
) -> np.ndarray:
    """Draw every study's θ_i (all K outcomes) from its exact conditional, once per posterior draw.

    Parameters
    ----------
    yi : numpy.ndarray
        ``(k, K)`` benefit-oriented effects, NaN where not reported.
    S : numpy.ndarray
        ``(k, K, K)`` within-study covariances.
    location : numpy.ndarray
        ``(n, k, K)`` or ``(n, 1, K)`` mean of θ_i per draw (``mu`` + moderators).
    sigma : numpy.ndarray
        ``(n, K, K)`` between-study covariance per draw.
    rng : numpy.random.Generator
        Seeded generator.
    rho_within : numpy.ndarray, optional
        ``(n,)`` within-study correlation per draw when it is estimated (then only the diagonals
        of ``S`` are used).

    Returns
    -------
    numpy.ndarray
        ``(n, k, K)``; for unreported outcomes these are the model's predictions given the
        study's reported outcomes.
    """
    n, (k, K) = sigma.shape[0], yi.shape
    location = np.broadcast_to(location, (n, k, K))
    out = np.empty((n, k, K))
    for i, obs, total in study_covariances(sigma, S, ~np.isnan(yi), rho_within):
        cross = sigma[:, :, obs]
        gain = np.swapaxes(np.linalg.solve(total, np.swapaxes(cross, 1, 2)), 1, 2)
        resid = yi[i, obs] - location[:, i, obs]
        mean = location[:, i] + np.einsum("nko,no->nk", gain, resid)
        cov = sigma - gain @ np.swapaxes(cross, 1, 2)
        out[:, i] = mean + np.einsum("nkl,nl->nk", _psd_sqrt(cov), rng.standard_normal((n, K)))
    return out


def draw_theta_new(mu: np.ndarray, sigma: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """Draw the effects of a new study, ``θ_new ~ MVN(mu, Σ)``, once per posterior draw (``(n, K)``)."""
    return mu + np.einsum("nkl,nl->nk", _psd_sqrt(sigma), rng.standard_normal(mu.shape))
