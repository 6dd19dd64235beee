r"""Leave-one-study-out PIT of the default (arm-level) fit: a per-study description and an outlier rule.

Posterior predictive p-values averaged over the posterior use the data twice and are conservative
(:mod:`analysis.studies.calibration` measures by how much). Leaving the study out removes that: for
study :math:`i` with statistic :math:`T_i` (the mean Hedges' g of its comparisons), the
leave-one-out probability integral transform

.. math::

    \mathrm{PIT}_i = P\!\left(T_i^{rep} \le T_i \mid y_{-i}\right)
        \approx \sum_s w_{is}\, \mathbf 1\{T^{rep}_{is} \le T_i\}

is uniform if the model is right (Gelfand, Dey & Chang 1992; Gabry et al. 2019, JRSS A). The draws
:math:`\phi_s = (\mu, \tau, \omega)_s` are reweighted to the posterior without study :math:`i` by the
integrated PSIS weights :math:`w_{is}` of :func:`analysis.checks.influence_arm.loo_weights`, and
:math:`T^{rep}_{is}` is the statistic of a new study *with study i's arm sizes* drawn from
:math:`\phi_s`: new study and comparison effects, new animals, g recomputed
(:func:`analysis.checks.predictive_arm.replicate_arms`; g does not depend on :math:`\sigma_i`).

**The outlier rule.** Each study's two-sided LOO p-value :math:`p_i = 2\min(\mathrm{PIT}_i, 1 -
\mathrm{PIT}_i)`; the rule fires when the smallest, Bonferroni-adjusted over the :math:`k` studies,
:math:`\min(1, k \min_i p_i)`, is below the nominal level. :mod:`analysis.studies.calibration`
measures it (statistic ``loo_outlier``): it fires far less often than its level on data without
misfit (each study's predictive distribution integrates over the posterior uncertainty of
:math:`\mu, \tau`, wide at small k), so the report shows the LOO-PIT as a description and uses the
sampled posterior p-values of :mod:`analysis.checks.calibrated` as its checks. A study whose Pareto
:math:`\hat k` exceeds the PSIS threshold has an unreliable PIT (marked; still used).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from analysis.checks.influence_arm import arm_draws, loo_weights
from analysis.checks.predictive_arm import observed_comparisons, replicate_arms
from analysis.dataset.load import Dataset
from analysis.results.predictive import LooPitResult
from analysis.results.random_effects import MetaAnalysisResult
from models.arm_level import ArmSummaries

__all__ = ["NOMINAL_LEVEL", "arm_loo_pit", "loo_pit_values", "pit_tree", "study_means"]

#: Nominal level of the outlier check.
NOMINAL_LEVEL: float = 0.05
#: Separate random stream for the leave-one-out replicates.
_LOO_PIT_STREAM = 3


def study_means(g: np.ndarray, data: ArmSummaries) -> np.ndarray:
    """Mean over each study's comparisons of ``g`` (last axis = comparisons) -> last axis = studies."""
    counts = np.bincount(data.comparison_study, minlength=data.k)
    onehot = np.zeros((len(data.comparison), data.k))
    onehot[np.arange(len(data.comparison)), data.comparison_study] = 1.0
    return (g @ onehot) / counts


def loo_pit_values(
    data: ArmSummaries,
    draws: dict[str, np.ndarray],
    weights: np.ndarray,
    t_obs: np.ndarray,
    *,
    rng: np.random.Generator,
) -> np.ndarray:
    """LOO-PIT of each study's statistic: one replicated study per draw, weighted.

    Parameters
    ----------
    data : ArmSummaries
        Arm sizes and groups of the outcome.
    draws : dict of numpy.ndarray
        Draws of ``mu``, ``tau`` (and ``omega``), any shape with ``S`` elements.
    weights : numpy.ndarray
        ``(S, k)`` leave-one-study-out weights, columns summing to 1.
    t_obs : numpy.ndarray
        Observed statistic per study (:func:`study_means` of the comparisons' g).
    rng : numpy.random.Generator
        Source of the replicated studies.

    Returns
    -------
    numpy.ndarray
        PIT per study in [0, 1] (ties count one half).
    """
    mu, tau = np.ravel(draws["mu"])[:, None], np.ravel(draws["tau"])[:, None]
    omega = np.ravel(draws["omega"])[:, None] if "omega" in draws else np.zeros_like(tau)
    n_draws, n_comp = mu.shape[0], len(data.comparison)
    theta = mu + tau * rng.standard_normal((n_draws, data.k))[:, data.comparison_study]
    theta = theta + omega * rng.standard_normal((n_draws, n_comp))
    t_rep = study_means(replicate_arms(theta, data, rng=rng)[0], data)
    below = (t_rep < t_obs).astype(float) + 0.5 * (t_rep == t_obs)
    return np.clip(np.sum(weights * below, axis=0), 0.0, 1.0)


def arm_loo_pit(result: MetaAnalysisResult, dataset: Dataset, *, seed: int = 1) -> LooPitResult:
    """LOO-PIT of every study and the Bonferroni outlier check of an arm-level fit.

    Parameters
    ----------
    result : MetaAnalysisResult
        Arm-level random-effects fit with its draws (:func:`analysis.fitting.arm_level.fit_arm_level`).
    dataset : Dataset
        The dataset it was fitted to.
    seed : int
        Seed of the replicated studies.

    Returns
    -------
    LooPitResult
    """
    data, draws = arm_draws(result, dataset)
    loo = loo_weights(data, draws)
    t_obs = study_means(observed_comparisons(dataset, result.outcome.id, data)["yi"].to_numpy(), data)
    rng = np.random.default_rng([result.settings.get("seed", seed), _LOO_PIT_STREAM, seed])
    pit = loo_pit_values(data, draws, loo.weights, t_obs, rng=rng)
    p_values = np.minimum(1.0, 2.0 * np.minimum(pit, 1.0 - pit))
    return LooPitResult(
        outcome=result.outcome.id,
        study=tuple(str(s) for s in data.study),
        statistic_observed=t_obs,
        pit=pit,
        p_value=p_values,
        pareto_k=loo.pareto_k,
        reliable=loo.pareto_k <= loo.threshold,
        nominal_level=NOMINAL_LEVEL,
    )


def pit_tree(check: LooPitResult) -> xr.DataTree:
    """The LOO-PIT values as a DataTree group ``loo_pit`` (variable ``T``, dim ``study``) for ArviZ."""
    ds = xr.Dataset({"T": xr.DataArray(check.pit, dims=("study",), coords={"study": list(check.study)})})
    return xr.DataTree.from_dict({"loo_pit": ds})
