r"""Posterior predictive check of the arm-level (default) fit: replicated animals, recomputed effects.

The arm-level model (:mod:`models.arm_level`) is a model of the arm summaries, so its
replicated data are arm summaries. For each posterior draw, from the *mixed* predictive
distribution (Gelman, Meng & Stern 1996; new study and comparison effects, as in
:mod:`analysis.checks.predictive`):

.. math::

    \theta^{rep}_{ij} = x_{ij}^\top\beta + \tau z^{rep}_i + \omega v^{rep}_{ij}, \qquad
    z^{rep}_i, v^{rep}_{ij} \sim \mathcal N(0, 1),

and for every baseline group (a control arm :math:`c` and the treatment arms :math:`j` compared
with it), in units of the study's within-group SD :math:`\sigma_i`,

.. math::

    m^{rep}_c \sim \mathcal N(0, 1/n_c), \quad m^{rep}_j \sim \mathcal N(\theta^{rep}_{ij}, 1/n_j), \quad
    (n_a - 1)\, (s^{rep}_a)^2 \sim \chi^2_{n_a - 1}.

Hedges' g is invariant to the location and scale of the data, so neither the control mean nor
:math:`\sigma_i` is needed: the replicated :math:`g^{rep}_{ij}` and its large-sample variance
:math:`v^{rep}_{ij}` are computed from the replicated summaries exactly as the observed ones
(:func:`analysis.dataset.smd.hedges_g`), and two treatment arms of one group share the
replicated control arm. Unlike the normal-likelihood check, each replicate carries *its own*
variances, so the correlation of g with its standard error that small arms create is in the
replicates as it is in the data.

The statistics are those of :mod:`analysis.checks.predictive`, over comparisons: Cochran's Q
(the comparisons' own weights, shared controls ignored, identically for data and replicates),
the largest standardised residual :math:`\max_{ij} |g_{ij} - x_{ij}^\top\beta| /
\sqrt{v_{ij} + \tau^2 + \omega^2}`, and the Egger-type slope of g on its standard error (two-sided).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from analysis.checks.predictive import (
    SAMPLED_REPLICATES,
    SAMPLED_STREAM,
    cochran_q,
    egger_slope,
    sampled_draw,
    sampled_statistics,
    statistics_of,
)
from analysis.dataset.load import Dataset
from analysis.dataset.measures import comparison_pairs
from analysis.dataset.smd import hedges_g
from analysis.fitting.arm_level import outcome_arm_summaries
from analysis.results.predictive import PPCResult
from analysis.results.random_effects import MetaAnalysisResult
from models.arm_level import ArmSummaries

__all__ = ["arm_posterior_predictive_check", "observed_comparisons", "replicate_arms"]

#: Separate random stream for the replicated data (after sampler and theta streams).
_PPC_STREAM = 2


def observed_comparisons(dataset: Dataset, outcome: str, data: ArmSummaries) -> pd.DataFrame:
    """Observed Hedges' g and variance of each comparison, in the order of ``data.comparison``.

    Returns
    -------
    pandas.DataFrame
        Index ``study/arm`` (the comparison labels), columns ``yi, vi``.
    """
    pairs = comparison_pairs(dataset.arms)
    pairs = pairs[pairs["outcome"] == outcome]
    yi, vi = hedges_g(pairs["mean_t"], pairs["sd_t"], pairs["n_t"], pairs["mean_c"], pairs["sd_c"], pairs["n_c"])
    table = pd.DataFrame({"yi": yi, "vi": vi}, index=pairs["study"].astype(str) + "/" + pairs["arm"].astype(str))
    return table.loc[list(data.comparison)]


def replicate_arms(theta: np.ndarray, data: ArmSummaries, *, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Replicated Hedges' g and LS variance of every comparison, given the true comparison effects.

    Parameters
    ----------
    theta : numpy.ndarray
        True SMD of each comparison, shape ``(..., comparisons)`` in the order of ``data.comparison``.
    data : ArmSummaries
        Arm sizes and baseline groups (:func:`analysis.fitting.arm_level.outcome_arm_summaries`).
    rng : numpy.random.Generator
        Source of the replicated animals.

    Returns
    -------
    g_rep, v_rep : numpy.ndarray
        Shape of ``theta``; comparisons of one group share their replicated control arm.
    """
    theta = np.asarray(theta, dtype=float)
    n_t = np.asarray(data.comparison_n, dtype=float)
    groups, group_of = np.unique(data.group_start, return_inverse=True)
    n_c = np.asarray(data.n_before, dtype=float)[groups]  # N_<j of a group's first treatment arm = n_control
    lead = theta.shape[:-1]
    m_c = rng.standard_normal(lead + (groups.size,)) / np.sqrt(n_c)
    sd_c = np.sqrt(rng.chisquare(n_c - 1.0, size=lead + (groups.size,)) / (n_c - 1.0))
    m_t = theta + rng.standard_normal(theta.shape) / np.sqrt(n_t)
    sd_t = np.sqrt(rng.chisquare(n_t - 1.0, size=theta.shape) / (n_t - 1.0))
    return hedges_g(m_t, sd_t, n_t, m_c[..., group_of], sd_c[..., group_of], n_c[group_of])


def _location(post: xr.Dataset, data: ArmSummaries) -> np.ndarray:
    """Fixed part ``x'beta`` of each comparison's effect: ``theta_comparison`` minus its random effects."""
    loc = (
        post["theta_comparison"].to_numpy()
        - post["tau"].to_numpy()[..., None] * (post["z"].to_numpy()[..., data.comparison_study])
    )
    if "omega" in post:
        loc = loc - post["omega"].to_numpy()[..., None] * post["v"].to_numpy()
    return loc


def arm_posterior_predictive_check(result: MetaAnalysisResult, dataset: Dataset, *, seed: int = 1) -> PPCResult:
    """Posterior predictive check of an arm-level NUTS fit (:func:`analysis.fitting.arm_level.fit_arm_level`).

    Parameters
    ----------
    result : MetaAnalysisResult
        The arm-level fit, with its draws (``settings["likelihood"] == "arm"``).
    dataset : Dataset
        The dataset it was fitted to.
    seed : int
        Seed of the replicated data.

    Returns
    -------
    PPCResult
        ``unit="comparison"``: replicated Hedges' g per comparison and the Q, max-residual and
        Egger-slope statistics with their p-values. The fit's DataTree gains
        ``posterior_predictive`` and ``observed_data`` variables ``g`` (dim ``comparison``) for
        ArviZ's PPC plots.
    """
    if result.posterior is None or result.settings.get("likelihood") != "arm":
        raise ValueError("arm_posterior_predictive_check needs an arm-level NUTS fit with its draws")
    oid = result.outcome.id
    data = outcome_arm_summaries(dataset, oid, list(result.studies["study"]))
    obs = observed_comparisons(dataset, oid, data)
    yi, vi = obs["yi"].to_numpy(), obs["vi"].to_numpy()
    post = result.posterior.posterior
    loc = _location(post, data)
    tau = post["tau"].to_numpy()
    omega = post["omega"].to_numpy() if "omega" in post else np.zeros_like(tau)
    base_seed = result.settings.get("seed", seed)
    rng = np.random.default_rng([base_seed, _PPC_STREAM, seed])
    g_rep, v_rep = replicate_arms(_new_effects(loc, tau, omega, data, rng), data, rng=rng)
    stats, observed, replicated = statistics_of(
        _discrepancies(yi, vi, loc, tau, omega), _discrepancies(g_rep, v_rep, loc, tau, omega)
    )
    rng = np.random.default_rng([base_seed, SAMPLED_STREAM, seed])
    s = sampled_draw(tau.size, rng=rng)
    loc_s = np.broadcast_to(loc.reshape(-1, loc.shape[-1])[s], (SAMPLED_REPLICATES, loc.shape[-1]))
    tau_s, omega_s = np.full(SAMPLED_REPLICATES, tau.ravel()[s]), np.full(SAMPLED_REPLICATES, omega.ravel()[s])
    g_s, v_s = replicate_arms(_new_effects(loc_s, tau_s, omega_s, data, rng), data, rng=rng)
    sampled = sampled_statistics(
        _discrepancies(yi, vi, loc_s[:1], tau_s[:1], omega_s[:1]), _discrepancies(g_s, v_s, loc_s, tau_s, omega_s)
    )
    coords = {"comparison": list(data.comparison)}
    result.posterior["posterior_predictive"] = xr.DataTree(
        xr.Dataset({"g": xr.DataArray(g_rep, dims=("chain", "draw", "comparison"), coords=coords)})
    )
    observed_data = result.posterior["observed_data"].to_dataset()
    result.posterior["observed_data"] = xr.DataTree(
        observed_data.assign(g=xr.DataArray(yi, dims=("comparison",), coords=coords))
    )
    return PPCResult(
        outcome=oid,
        y_rep=g_rep,
        statistics=stats,
        unit="comparison",
        observed=observed,
        replicated=replicated,
        sampled=sampled,
        sampled_draw=s,
    )


def _new_effects(
    loc: np.ndarray, tau: np.ndarray, omega: np.ndarray, data: ArmSummaries, rng: np.random.Generator
) -> np.ndarray:
    """True comparison effects of replicated studies: new study and comparison effects around ``loc``."""
    z = rng.standard_normal(tau.shape + (data.k,))[..., data.comparison_study]
    return loc + tau[..., None] * z + omega[..., None] * rng.standard_normal(loc.shape)


def _discrepancies(
    g: np.ndarray, v: np.ndarray, loc: np.ndarray, tau: np.ndarray, omega: np.ndarray
) -> dict[str, np.ndarray]:
    """Max standardised residual, Q and slope of comparisons ``g`` with variances ``v`` (own per replicate).

    ``loc`` is ``x'beta`` per draw and comparison; ``tau`` and ``omega`` one value per draw. Q needs
    two comparisons and the slope three of different precision; undefined statistics are left out.
    """
    scale = np.sqrt(v + tau[..., None] ** 2 + omega[..., None] ** 2)
    out = {"max_std_residual": (np.abs(g - loc) / scale).max(axis=-1)}
    if g.shape[-1] >= 2:
        out["Q"] = cochran_q(g, v)
    if g.shape[-1] >= 3 and np.ptp(v) > 0:
        out["egger_slope"] = egger_slope(g, v)
    return out
