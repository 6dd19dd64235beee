r"""Posterior predictive checks of a random-effects fit (replacing the frequentist heterogeneity tests).

Replicated data are drawn from the *mixed* predictive distribution: for each posterior draw
:math:`(\mu, \tau)`, new study effects :math:`\theta^{rep}_i \sim N(\mu, \tau^2)` and replicated
estimates :math:`y^{rep}_i \sim N(\theta^{rep}_i, v_i)` with the studies' own sampling variances
(Gelman, Meng & Stern 1996). This is more sensitive to misfit of the random-effects distribution
than replicating from the fitted :math:`\theta_i`.

Test statistics :math:`T(y, \mu, \tau)`, each with its posterior predictive p-value
:math:`p = P(T(y^{rep}) \ge T(y) \mid y)`:

* Cochran's :math:`Q = \sum_i w_i (y_i - \bar y_w)^2`, :math:`w_i = 1/v_i` (heterogeneity);
* the largest standardised residual :math:`\max_i |y_i - \mu| / \sqrt{v_i + \tau^2}` (outliers);
* the Egger-type funnel-asymmetry slope: the weighted least-squares slope of :math:`y_i` on
  :math:`\sqrt{v_i}` with weights :math:`1/v_i` (small-study effects), with a two-sided p-value.

Q needs at least two studies and the slope at least three of different precision; statistics
that are undefined for an outcome are left out of its result.

These posterior predictive p-values (ppp) average over the posterior and use the data twice: under
a well-fitting model they concentrate near 0.5 (Bayarri & Berger 2000), so they describe, they
do not test. The *checks* are sampled posterior p-values (Johnson 2004; Gosselin 2011): one
posterior draw :math:`\tilde\vartheta` is chosen at random, many data sets are replicated from it,
and :math:`p = P(T(y^{rep}, \tilde\vartheta) \ge T(y, \tilde\vartheta) \mid \tilde\vartheta)`.
If the data come from the model (its prior predictive), :math:`(\tilde\vartheta, y)` has the
joint distribution of :math:`(\vartheta, y)`, so :math:`y` and :math:`y^{rep}` are exchangeable
given :math:`\tilde\vartheta` and :math:`p` is exactly uniform. At a fixed true parameter it is
uniform only asymptotically: on the flagship design (k = 4-10) ``reports/calibration.json``
measures the default fit's three statistics as conservative (about 3% flagged at 5%), so
:mod:`analysis.checks.calibrated` lets them flag only where the measured rate matches the level.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from analysis.results.predictive import PPCResult
from analysis.results.random_effects import MetaAnalysisResult

#: Separate random stream for the replicated data (after sampler and theta streams).
_PPC_STREAM = 2
#: Random stream of the sampled posterior p-values (the chosen draw and its replicates).
SAMPLED_STREAM = 3
#: Data sets replicated from the chosen draw of a sampled posterior p-value.
SAMPLED_REPLICATES = 2000
#: Statistics whose p-value is two-sided (a slope can misfit in either direction).
TWO_SIDED = ("egger_slope",)


def cochran_q(y: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """Cochran's Q of effect vectors ``y`` (last axis = studies) with variances ``vi``.

    ``vi`` is one vector for every row of ``y`` or has the shape of ``y`` (each replicate its own).
    """
    w = 1.0 / np.asarray(vi, dtype=float)
    mean = (y * w).sum(axis=-1, keepdims=True) / w.sum(axis=-1, keepdims=True)
    return (w * (y - mean) ** 2).sum(axis=-1)


def max_standardised_residual(y: np.ndarray, vi: np.ndarray, mu: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """``max_i |y_i - mu| / sqrt(v_i + tau^2)`` for each draw (``mu``, ``tau`` broadcast over studies)."""
    scale = np.sqrt(vi + np.asarray(tau)[..., None] ** 2)
    return (np.abs(y - np.asarray(mu)[..., None]) / scale).max(axis=-1)


def egger_slope(y: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """Weighted least-squares slope of ``y`` on ``sqrt(vi)`` with weights ``1/vi`` (last axis = studies).

    ``vi`` is one vector for every row of ``y`` or has the shape of ``y`` (each replicate its own).
    """
    se = np.sqrt(np.asarray(vi, dtype=float))
    w = 1.0 / se**2
    se_bar = (w * se).sum(axis=-1, keepdims=True) / w.sum(axis=-1, keepdims=True)
    y_bar = (y * w).sum(axis=-1, keepdims=True) / w.sum(axis=-1, keepdims=True)
    return (w * (se - se_bar) * (y - y_bar)).sum(axis=-1) / (w * (se - se_bar) ** 2).sum(axis=-1)


def replicate(mu: np.ndarray, tau: np.ndarray, vi: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """Draw ``y_rep`` (shape ``mu.shape + (k,)``) from the mixed predictive distribution."""
    shape = np.shape(mu) + (np.size(vi),)
    theta_rep = np.asarray(mu)[..., None] + np.asarray(tau)[..., None] * rng.standard_normal(shape)
    return theta_rep + np.sqrt(vi) * rng.standard_normal(shape)


def _stat(observed: np.ndarray, replicated: np.ndarray, *, two_sided: bool = False) -> dict[str, float]:
    p_upper = float(np.mean(replicated >= observed))
    out = {"observed": float(np.mean(observed)), "replicated_mean": float(np.mean(replicated)), "ppp": p_upper}
    if two_sided:
        out["ppp_two_sided"] = float(min(1.0, 2 * min(p_upper, 1 - p_upper + np.mean(replicated == observed))))
    return out


def sampled_p_values(observed: dict[str, float], replicated: dict[str, np.ndarray]) -> dict[str, float]:
    """Sampled posterior p-values: each statistic's observed value against its replicates from one draw.

    Upper tail, ``P(T_rep >= T_obs)``; for :data:`TWO_SIDED` statistics ``2 min(P(T_rep >= T_obs),
    P(T_rep <= T_obs))``, capped at 1.
    """
    out = {}
    for name, rep in replicated.items():
        upper = float(np.mean(rep >= observed[name]))
        out[name] = min(1.0, 2 * min(upper, float(np.mean(rep <= observed[name])))) if name in TWO_SIDED else upper
    return out


def sampled_draw(n_draws: int, *, rng: np.random.Generator) -> int:
    """Index (into the flattened chain x draw axis) of the posterior draw a sampled p-value uses."""
    return int(rng.integers(n_draws))


def statistics_of(
    observed: dict[str, np.ndarray], replicated: dict[str, np.ndarray]
) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Posterior predictive p-values of each statistic (two-sided for the slope) and the flattened values.

    ``observed[name]`` and ``replicated[name]`` hold one value per posterior draw (an observed
    value that does not depend on the draw is broadcast).
    """
    flat_obs, flat_rep, stats = {}, {}, {}
    for name, rep in replicated.items():
        rep = np.asarray(rep, dtype=float).ravel()
        obs = np.broadcast_to(np.asarray(observed[name], dtype=float), np.shape(replicated[name])).ravel()
        stats[name] = _stat(obs, rep, two_sided=name == "egger_slope")
        flat_obs[name], flat_rep[name] = obs, rep
    return stats, flat_obs, flat_rep


def posterior_predictive_check(result: MetaAnalysisResult, *, seed: int = 1) -> PPCResult:
    """Posterior predictive check of a NUTS random-effects fit (normal likelihood).

    Parameters
    ----------
    result : MetaAnalysisResult
        A NUTS fit (with ``posterior``) of the normal likelihood; for the arm-level likelihood see
        :func:`analysis.checks.predictive_arm.arm_posterior_predictive_check`.
    seed : int
        Seed of the replicated data.

    Returns
    -------
    PPCResult
        Replicated effects and the Q, max-residual and Egger-slope statistics with p-values.
        The fit's DataTree gains ``posterior_predictive`` (``y``) for ArviZ's PPC plots.
    """
    if result.posterior is None:
        raise ValueError("posterior predictive checks need a NUTS fit (engine='nuts')")
    if result.settings.get("likelihood") == "arm":
        raise ValueError("an arm-level fit: use analysis.checks.predictive_arm.arm_posterior_predictive_check")
    post = result.posterior.posterior
    mu, tau = post["mu"].to_numpy(), post["tau"].to_numpy()
    yi, vi = result.studies["yi"].to_numpy(dtype=float), result.studies["vi"].to_numpy(dtype=float)
    base_seed = result.settings.get("seed", seed)
    y_rep = replicate(mu, tau, vi, rng=np.random.default_rng([base_seed, _PPC_STREAM, seed]))
    stats, observed, replicated = statistics_of(_discrepancies(yi, vi, mu, tau), _discrepancies(y_rep, vi, mu, tau))
    rng = np.random.default_rng([base_seed, SAMPLED_STREAM, seed])
    s = sampled_draw(mu.size, rng=rng)
    mu_s, tau_s = np.full(SAMPLED_REPLICATES, mu.ravel()[s]), np.full(SAMPLED_REPLICATES, tau.ravel()[s])
    y_rep_s = replicate(mu_s, tau_s, vi, rng=rng)
    sampled = sampled_statistics(_discrepancies(yi, vi, mu_s[:1], tau_s[:1]), _discrepancies(y_rep_s, vi, mu_s, tau_s))
    study = result.studies["study"].tolist()
    result.posterior["posterior_predictive"] = xr.DataTree(
        xr.Dataset({"y": xr.DataArray(y_rep, dims=("chain", "draw", "study"), coords={"study": study})})
    )
    return PPCResult(
        outcome=result.outcome.id,
        y_rep=y_rep,
        statistics=stats,
        observed=observed,
        replicated=replicated,
        sampled=sampled,
        sampled_draw=s,
    )


def _discrepancies(y: np.ndarray, vi: np.ndarray, mu: np.ndarray, tau: np.ndarray) -> dict[str, np.ndarray]:
    """Max residual, Q and slope of effects ``y`` (last axis = studies) for draws ``mu, tau``.

    Q needs two studies and the slope three of different precision; undefined statistics are left out.
    """
    out = {"max_std_residual": max_standardised_residual(y, vi, mu, tau)}
    if y.shape[-1] >= 2:  # Q of a single study is identically 0
        out["Q"] = cochran_q(y, vi)
    if y.shape[-1] >= 3 and np.ptp(vi) > 0:  # a slope on SE needs three studies of different precision
        out["egger_slope"] = egger_slope(y, vi)
    return out


def sampled_statistics(
    observed: dict[str, np.ndarray], replicated: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Per statistic ``{observed, p_value}`` of a sampled posterior p-value (observed at the chosen draw)."""
    obs = {name: float(np.ravel(value)[0]) for name, value in observed.items()}
    p = sampled_p_values(obs, {name: np.asarray(rep, dtype=float).ravel() for name, rep in replicated.items()})
    return {name: {"observed": obs[name], "p_value": p[name]} for name in obs}
