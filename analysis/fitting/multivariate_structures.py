"""Choosing the between-study correlation structure of the multivariate model by PSIS-LOO over studies.

With ~10 studies the K(K-1)/2 correlations of an unstructured R are barely identified (their
posteriors stay close to the LKJ prior), so :func:`fit_multivariate_structures` fits the three
structures of :data:`models.multivariate.STRUCTURES` - unstructured LKJ, compound symmetry (one
shared correlation) and independent outcomes - and compares their expected log predictive
density for a *new study* (leave-one-study-out: the unit left out is a study with all the
outcomes it reports, whose log likelihood is :func:`models.multivariate_gls.pointwise_log_lik`),
estimated by Pareto-smoothed importance sampling (Vehtari, Gelman & Gabry 2017; ``arviz.loo``).

Table (one row per structure, best first): ``elpd_loo``, its ``se``, ``p_loo`` (effective number of
parameters), ``elpd_diff`` and ``se_diff`` against the best (paired over studies, as ``loo_compare``
in R's loo package), ``pareto_k_max`` and ``n_pareto_k_high`` (k > 0.7: that study's LOO estimate is
unreliable), and ``selected``. The structure with the highest ``elpd_loo`` is selected; when its
lead is within two ``se_diff`` the report says the data do not distinguish the structures.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from analysis.dataset.effects import EffectTable, compute_effects
from analysis.dataset.load import Dataset
from analysis.fitting.multivariate import fit_multivariate_data, univariate_from_dataset
from analysis.fitting.multivariate_data import multivariate_data_from_dataset
from analysis.fitting.sampling import SamplerSettings
from analysis.results.multivariate import MultivariateResult
from models.multivariate import STRUCTURES
from models.priors import PriorSet, default_priors

__all__ = ["COMPARISON_COLUMNS", "PARETO_K_HIGH", "compare_structures", "fit_multivariate_structures"]

#: Pareto k above which a study's importance-sampling LOO estimate is unreliable.
PARETO_K_HIGH = 0.7

COMPARISON_COLUMNS = ["elpd_loo", "se", "p_loo", "elpd_diff", "se_diff", "pareto_k_max", "n_pareto_k_high", "selected"]


def _loo(result: MultivariateResult) -> tuple[np.ndarray, float, float, np.ndarray]:
    """Pointwise elpd, total p_loo, se and Pareto k of one fit (from its ``log_likelihood/y``)."""
    post = result.posterior
    tree = xr.DataTree.from_dict(
        {"posterior": post["posterior"].to_dataset()[["mu"]], "log_likelihood": post["log_likelihood"].to_dataset()}
    )
    with warnings.catch_warnings():
        # high Pareto k is reported in the table (n_pareto_k_high), not warned about
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto", category=UserWarning)
        elpd = az.loo(tree, pointwise=True, var_name="y")
    return np.asarray(elpd.elpd_i), float(elpd.p), float(elpd.se), np.asarray(elpd.pareto_k)


def compare_structures(fits: dict[str, MultivariateResult]) -> pd.DataFrame:
    """PSIS-LOO comparison table of fits of different structures (see the module docstring)."""
    loos = {name: _loo(fit) for name, fit in fits.items()}
    best = max(loos, key=lambda name: loos[name][0].sum())
    rows = {}
    for name, (elpd_i, p_loo, se, k) in loos.items():
        diff = loos[best][0] - elpd_i
        rows[name] = {
            "elpd_loo": float(elpd_i.sum()),
            "se": se,
            "p_loo": p_loo,
            "elpd_diff": float(diff.sum()),
            "se_diff": float(np.sqrt(diff.size * diff.var())) if name != best else 0.0,
            "pareto_k_max": float(np.max(k)),
            "n_pareto_k_high": int(np.sum(k > PARETO_K_HIGH)),
            "selected": name == best,
        }
    table = pd.DataFrame.from_dict(rows, orient="index")[COMPARISON_COLUMNS]
    return table.sort_values("elpd_loo", ascending=False)


def fit_multivariate_structures(
    dataset: Dataset,
    *,
    outcomes: Sequence[str] | str | None = None,
    rho_within: float | np.ndarray | None = None,
    seed: int = 1,
    sampler: SamplerSettings | None = None,
    table: EffectTable | None = None,
    priors: PriorSet | None = None,
    structures: Sequence[str] = STRUCTURES,
    progressbar: bool = False,
) -> tuple[MultivariateResult, dict[str, MultivariateResult]]:
    """Fit each structure, compare them by PSIS-LOO over studies and return the selected fit.

    Parameters
    ----------
    dataset : Dataset
        A validated dataset.
    outcomes, rho_within, seed, sampler, table, priors, progressbar
        As in :func:`analysis.fitting.multivariate.fit_multivariate` (ρ_w estimated by default).
    structures : sequence of str
        Structures to compare (default all of :data:`models.multivariate.STRUCTURES`).

    Returns
    -------
    selected : MultivariateResult
        The fit with the highest elpd_loo, its ``structure_comparison`` and
        ``prior_posterior_by_structure`` (every structure's prior-against-posterior rows) set.
    fits : dict
        Every fit by structure.
    """
    bad = [s for s in structures if s not in STRUCTURES]
    if bad or not structures:
        raise ValueError(f"structures must be a non-empty subset of {STRUCTURES}, got {list(structures)}")
    priors = priors or default_priors(dataset.effect_measure)
    table = table or compute_effects(dataset)
    data = multivariate_data_from_dataset(dataset, outcomes=outcomes, rho_within=rho_within, table=table)
    univariate = univariate_from_dataset(dataset, table, data, priors)
    fits = {
        s: fit_multivariate_data(
            data, priors=priors, seed=seed, sampler=sampler, progressbar=progressbar, univariate=univariate, structure=s
        )
        for s in structures
    }
    comparison = compare_structures(fits)
    selected = fits[str(comparison.index[0])]
    selected.structure_comparison = comparison
    selected.prior_posterior_by_structure = pd.concat(
        [fits[str(s)].prior_posterior.assign(structure=str(s)) for s in comparison.index], axis=0
    )
    return selected, fits
