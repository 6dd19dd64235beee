"""Prior sensitivity: ArviZ power-scaling on the top-level priors, and refits under a grid of priors.

* Power-scaling (Kallioinen et al. 2024, Stat Comput 34:57; ArviZ ``psense``): the prior (or the
  likelihood) is raised to a power near 1 and the change of the posterior is estimated by
  Pareto-smoothed importance sampling, without refitting. Only the top-level priors (μ, τ and
  β of a meta-regression) are scaled, never auxiliary variables. Sensitivity ≥ 0.05 is the
  conventional flag: prior sensitive and likelihood sensitive → possible prior–data conflict;
  prior sensitive but likelihood not → a strong prior or weak likelihood.
* Prior grid: refits under alternative priors with the exact engine (instant): for SMD τ ~
  half-normal 0.5 / 1 / 2, half-Cauchy 0.5, log-normal(−1, 1) and uniform(0, 5); μ ~ N(0, 1²) and
  N(0, 10²). For ROM and NMD (:data:`PRIOR_GRIDS`) the same grid rescaled to the measure's default
  priors (:func:`models.priors.default_priors`: τ scale ×0.5 and ×50, μ scale ×1/3 and ×100/3,
  rounded), so that the grid brackets the defaults on every scale.
"""

from __future__ import annotations

import arviz as az
import pandas as pd
import pymc as pm

from analysis.dataset.effects import EffectTable
from analysis.dataset.load import Dataset
from analysis.fitting.random_effects import fit_random_effects
from analysis.results.random_effects import MetaAnalysisResult
from models.priors import PriorSet, PriorSpec, default_priors

PSENSE_THRESHOLD = 0.05
TAU_GRID = ("halfnormal:0.5", "halfnormal:1", "halfnormal:2", "halfcauchy:0.5", "lognormal:-1:1", "uniform:0:5")
MU_GRID = ("normal:0:1", "normal:0:10")
#: ``(tau grid, mu grid)`` per effect measure; other measures use the SMD grid (as their default priors).
PRIOR_GRIDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "SMD": (TAU_GRID, MU_GRID),
    "ROM": (
        ("halfnormal:0.25", "halfnormal:0.5", "halfnormal:1", "halfcauchy:0.25", "lognormal:-1.7:1", "uniform:0:2.5"),
        ("normal:0:0.3", "normal:0:3"),
    ),
    "NMD": (
        ("halfnormal:25", "halfnormal:50", "halfnormal:100", "halfcauchy:25", "lognormal:2.9:1", "uniform:0:250"),
        ("normal:0:30", "normal:0:300"),
    ),
}


def _node(tree):
    return tree["posterior"] if hasattr(tree, "children") and "posterior" in tree.children else tree


def _diagnosis(prior: float, likelihood: float) -> str:
    if prior >= PSENSE_THRESHOLD and likelihood >= PSENSE_THRESHOLD:
        return "potential prior-data conflict"
    if prior >= PSENSE_THRESHOLD:
        return "potential strong prior / weak likelihood"
    return "ok"


def top_level_parameters(result: MetaAnalysisResult) -> tuple[str, ...]:
    """The parameters with top-level priors of a random-effects fit: mu, tau and, if estimated, omega."""
    return ("mu", "tau", "omega") if "omega" in result.summaries else ("mu", "tau")


def power_scaling(result: MetaAnalysisResult, top_level: tuple[str, ...] = ("mu", "tau")) -> pd.DataFrame:
    """Power-scaling sensitivity of a NUTS fit for its top-level parameters.

    Parameters
    ----------
    result : MetaAnalysisResult
        A NUTS fit (with ``posterior`` and ``pymc_model``).
    top_level : tuple of str
        Parameters whose priors are power-scaled (and whose posteriors are assessed).

    Returns
    -------
    pandas.DataFrame
        Index: parameter; columns ``prior``, ``likelihood`` (sensitivity values) and ``diagnosis``.
        The fit's DataTree gains ``log_prior`` and ``log_likelihood`` groups.
    """
    if result.posterior is None or result.pymc_model is None:
        raise ValueError("power-scaling needs a NUTS fit (engine='nuts')")
    tree, names = result.posterior, list(top_level)
    if "log_prior" not in tree.children:
        pm.stats.compute_log_prior(tree, var_names=names, model=result.pymc_model, progressbar=False)
    if "log_likelihood" not in tree.children:
        pm.stats.compute_log_likelihood(tree, model=result.pymc_model, progressbar=False)
    prior = _node(az.psense(tree, var_names=names, group="prior", group_var_names=names))
    likelihood = _node(az.psense(tree, var_names=names, group="likelihood"))
    rows = {n: {"prior": float(prior[n]), "likelihood": float(likelihood[n])} for n in names}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["diagnosis"] = [_diagnosis(p, lik) for p, lik in zip(table["prior"], table["likelihood"], strict=True)]
    return table


def prior_grid(
    dataset: Dataset,
    outcome: str,
    *,
    table: EffectTable | None = None,
    tau_priors: tuple[str, ...] | None = None,
    mu_priors: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """Exact refits of one outcome under a grid of alternative priors.

    Each τ prior is combined with the default μ prior, and each μ prior with the default τ prior
    (the defaults and the grids, :data:`PRIOR_GRIDS`, of ``dataset.effect_measure`` unless given).

    Returns
    -------
    pandas.DataFrame
        One row per prior combination: ``prior_mu, prior_tau, varied`` and the mean, q025 and
        q975 of μ and τ, the median of τ, and P(benefit).
    """
    defaults = default_priors(dataset.effect_measure)
    tau_grid, mu_grid = PRIOR_GRIDS.get(dataset.effect_measure, PRIOR_GRIDS["SMD"])
    combos = [(defaults.mu, PriorSpec.parse(t), "tau") for t in (tau_grid if tau_priors is None else tau_priors)]
    combos += [(PriorSpec.parse(m), defaults.tau, "mu") for m in (mu_grid if mu_priors is None else mu_priors)]
    rows = []
    for mu_prior, tau_prior, varied in combos:
        fit = fit_random_effects(
            dataset, outcome, engine="exact", priors=PriorSet(mu=mu_prior, tau=tau_prior), table=table
        )
        mu, tau = fit.summaries["mu"], fit.summaries["tau"]
        rows.append(
            {
                "outcome": outcome,
                "prior_mu": str(mu_prior),
                "prior_tau": str(tau_prior),
                "varied": varied,
                "mu_mean": mu["mean"],
                "mu_q025": mu["q025"],
                "mu_q975": mu["q975"],
                "tau_median": tau["median"],
                "tau_q025": tau["q025"],
                "tau_q975": tau["q975"],
                "prob_benefit": fit.prob_benefit,
            }
        )
    return pd.DataFrame(rows)
