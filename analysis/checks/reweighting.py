r"""Prior sensitivity of a NUTS fit without refitting: Pareto-smoothed importance reweighting.

The exact engine refits the normal model under a grid of priors in milliseconds
(:func:`analysis.checks.sensitivity.prior_grid`); the default model (arm-level likelihood,
:mod:`models.arm_level`) has no exact engine, and a NUTS refit per prior would cost a fit each.
Changing the prior of a top-level parameter :math:`\phi \in \{\mu, \tau, \omega\}` from
:math:`p_0` to :math:`p_1` changes the posterior by the factor :math:`p_1(\phi)/p_0(\phi)`, so
the draws of the fit, weighted by

.. math:: w_s \propto p_1(\phi_s) / p_0(\phi_s),

estimate the posterior under :math:`p_1` (importance sampling with the fitted posterior as
proposal). The raw weights are Pareto-smoothed (PSIS, Vehtari et al. 2024, ``arviz_stats``'
``psislw``); the fitted Pareto shape :math:`\hat k` says whether the estimate can be trusted:
:math:`\hat k \le 0.7` reliable, above it the alternative prior moves the posterior too far
from the fitted one (e.g. a much narrower prior) and only a refit answers: such rows are
marked ``reliable = False`` and must not be read as numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from arviz_stats.base import array_stats

from analysis.checks.sensitivity import PRIOR_GRIDS
from analysis.results.random_effects import MetaAnalysisResult
from models.priors import PriorSpec, measure_scale

__all__ = ["OMEGA_GRID", "PARETO_K_RELIABLE", "psis_weights", "reweighted_prior_grid", "weighted_quantile"]

#: Largest Pareto shape of a trustworthy PSIS estimate (Vehtari et al. 2024, for S >= 2000 draws).
PARETO_K_RELIABLE = 0.7
#: Alternative priors of omega on the SMD scale (scaled by :func:`models.priors.measure_scale`).
OMEGA_GRID = (("halfnormal", 0.25), ("halfnormal", 1.0), ("halfcauchy", 0.5))


def weighted_quantile(x: np.ndarray, weights: np.ndarray, q: float) -> float:
    """Quantile ``q`` of the weighted sample ``x`` (weights need not be normalised)."""
    order = np.argsort(x)
    cdf = np.cumsum(weights[order])
    return float(np.interp(q * cdf[-1], cdf - weights[order] / 2, x[order]))


def psis_weights(log_ratio: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto-smoothed normalised importance weights and their Pareto shape ``k``.

    Draws outside the new prior's support (log ratio ``-inf``) get weight 0; equal ratios
    (the same prior) give equal weights and ``k = -inf``.
    """
    finite = np.isfinite(log_ratio)
    if not finite.any():
        raise ValueError("the alternative prior gives every posterior draw zero density")
    log_w = np.where(finite, log_ratio, -np.inf)
    if np.ptp(log_w[finite]) < 1e-12:
        weights = finite.astype(float)
        return weights / weights.sum(), -np.inf
    # arviz_stats' psislw takes minus the log ratios (the log-likelihood of LOO, whose weights are 1/p(y_i|.))
    smoothed, khat = array_stats.psislw(-(log_w[finite] - log_w[finite].max()), r_eff=1, axis=-1)
    weights = np.zeros_like(log_ratio, dtype=float)
    weights[finite] = np.exp(smoothed - smoothed.max())
    return weights / weights.sum(), float(khat)


def _grid(result: MetaAnalysisResult, measure: str) -> list[tuple[str, PriorSpec]]:
    tau_grid, mu_grid = PRIOR_GRIDS.get(measure, PRIOR_GRIDS["SMD"])
    combos = [("tau", PriorSpec.parse(t)) for t in tau_grid]
    combos += [("mu", PriorSpec.parse(m)) for m in mu_grid]
    if "omega" in result.summaries:
        scale = measure_scale(measure)
        combos += [("omega", PriorSpec(family, (sd * scale,))) for family, sd in OMEGA_GRID]
    return combos


def reweighted_prior_grid(result: MetaAnalysisResult) -> pd.DataFrame:
    """The posterior of mu and tau under a grid of alternative priors, by PSIS reweighting of one NUTS fit.

    Parameters
    ----------
    result : MetaAnalysisResult
        A NUTS fit with draws of ``mu``, ``tau`` (and ``omega``) and its priors.

    Returns
    -------
    pandas.DataFrame
        One row per alternative prior (the grid of :data:`analysis.checks.sensitivity.PRIOR_GRIDS`
        for tau and mu, :data:`OMEGA_GRID` for omega): ``varied``, ``prior``, the mean, SD, q025 and
        q975 of mu, the median, q025 and q975 of tau, P(benefit), ``pareto_k``, the importance
        sampling effective sample size ``ess_is`` (``1 / sum w²``, before autocorrelation) and
        ``reliable``.
    """
    if result.posterior is None:
        raise ValueError("prior reweighting needs posterior draws (a NUTS fit)")
    post = result.posterior.posterior
    draws = {name: post[name].to_numpy().ravel() for name in ("mu", "tau", "omega") if name in post}
    rows = []
    for varied, prior in _grid(result, result.measure):
        fitted = PriorSpec.parse(result.priors[varied])
        weights, khat = psis_weights(prior.logpdf(draws[varied]) - fitted.logpdf(draws[varied]))
        rows.append(_row(result, varied, prior, draws, weights, khat))
    return pd.DataFrame(rows)


def _row(
    result: MetaAnalysisResult,
    varied: str,
    prior: PriorSpec,
    draws: dict[str, np.ndarray],
    weights: np.ndarray,
    khat: float,
) -> dict[str, float | str | bool]:
    mu, tau, w = draws["mu"], draws["tau"], weights / weights.sum()
    benefit = mu > 0 if result.outcome.direction > 0 else mu < 0
    return {
        "outcome": result.outcome.id,
        "varied": varied,
        "prior": f"{varied} ~ {prior}",
        "mu_mean": float(w @ mu),
        "mu_sd": float(np.sqrt(w @ (mu - w @ mu) ** 2)),
        "mu_q025": weighted_quantile(mu, w, 0.025),
        "mu_q975": weighted_quantile(mu, w, 0.975),
        "tau_median": weighted_quantile(tau, w, 0.5),
        "tau_q025": weighted_quantile(tau, w, 0.025),
        "tau_q975": weighted_quantile(tau, w, 0.975),
        "prob_benefit": float(w @ benefit),
        "pareto_k": khat,
        "ess_is": float(1.0 / np.sum(w**2)),
        "reliable": khat <= PARETO_K_RELIABLE,
    }
