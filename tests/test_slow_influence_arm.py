"""Slow check: integrated PSIS leave-one-study-out of the arm-level fit against real NUTS refits.

On the flagship dataset (simulated BMSC-EV, outcome BMD) the arm-level model is fitted once
with the default sampler (4 x 1000 draws), :func:`analysis.checks.influence_arm.arm_leave_one_out`
estimates the posterior mean of ``mu`` without each study, and for three studies (the one with
the largest Pareto k, the one whose removal moves ``mu`` most, and the one that moves it least)
the model is refitted with NUTS on the dataset without that study. The posterior mean of ``mu``
must agree for all three; that of ``tau`` for those whose Pareto k says PSIS is reliable.

Tolerance, from Monte Carlo error only (no slack for a systematic error, which is what the
check is for): the difference must be within 4 combined Monte Carlo standard errors,
``4 * sqrt(mcse_psis^2 + mcse_refit^2)``. ``mcse_refit`` is ArviZ's MCSE of the posterior mean
in the refit; ``mcse_psis`` is the standard error of the self-normalised importance-sampling
mean, ``sqrt(sum_s w_s^2 (x_s - x_w)^2 / r_eff)`` with ``r_eff`` the relative efficiency
(ESS/S) of the parameter in the full fit, for Markov chain draws. Four standard errors for three
comparisons keep the false-alarm rate of a correct method below 2e-4.
"""

from __future__ import annotations

import dataclasses

import arviz as az
import numpy as np
import pandas as pd
import pytest
from arviz_stats.base import array_stats
from scipy.special import logsumexp

from analysis.checks.influence_arm import arm_leave_one_out, integrated_log_likelihood
from analysis.config import DEFAULT_DATASET
from analysis.dataset.load import Dataset, load_dataset
from analysis.fitting.arm_level import fit_arm_level, outcome_arm_summaries

pytestmark = pytest.mark.slow

OUTCOME, SEED = "BMD", 1
#: Combined Monte Carlo standard errors allowed between PSIS and refit (module docstring).
MCSE_MULTIPLE = 4.0


def _without(dataset: Dataset, study: str) -> Dataset:
    """The dataset with every row of ``study`` removed."""
    return dataclasses.replace(
        dataset,
        studies=dataset.studies[dataset.studies["study"] != study].reset_index(drop=True),
        arms=dataset.arms[dataset.arms["study"] != study].reset_index(drop=True),
    )


def _psis_mcse(result, dataset: Dataset, param: str) -> pd.Series:
    """Per study: Monte Carlo SE of the PSIS mean of ``param`` (self-normalised IS, divided by its r_eff)."""
    post = result.posterior["posterior"]
    draws = post[param].to_numpy().ravel()
    omega = post["omega"].to_numpy() if "omega" in post else None
    data = outcome_arm_summaries(dataset, OUTCOME, list(result.studies["study"]))
    log_lik = integrated_log_likelihood(data, post["mu"].to_numpy(), post["tau"].to_numpy(), omega)
    r_eff = float(az.ess(result.posterior, var_names=[param], method="mean")[param]) / draws.size
    out = {}
    for i, study in enumerate(result.studies["study"]):
        log_w, _ = array_stats.psislw(log_lik[:, i], r_eff=r_eff)
        w = np.exp(log_w - logsumexp(log_w))
        mean = np.sum(w * draws)
        out[study] = float(np.sqrt(np.sum(w**2 * (draws - mean) ** 2) / r_eff))
    return pd.Series(out)


def _chosen(table: pd.DataFrame) -> list[str]:
    """Largest Pareto k, largest |mu shift|, smallest |mu shift| (distinct studies)."""
    chosen = [table["pareto_k"].idxmax()]
    for order in (table["mu_shift"].abs().sort_values(ascending=False), table["mu_shift"].abs().sort_values()):
        chosen.append(next(s for s in order.index if s not in chosen))
    return chosen


def test_psis_leave_one_out_matches_nuts_refits():
    """mu for the three studies; tau where PSIS is reliable (Pareto k <= 0.7), both within 4 combined MCSE."""
    dataset = load_dataset(DEFAULT_DATASET)
    full = fit_arm_level(dataset, OUTCOME, seed=SEED)
    table = arm_leave_one_out(full, dataset)
    mcse_psis = {p: _psis_mcse(full, dataset, p) for p in ("mu", "tau")}
    rows = []
    for study in _chosen(table):
        refit = fit_arm_level(_without(dataset, study), OUTCOME, seed=SEED)
        assert refit.settings["structure"] == full.settings["structure"]
        assert study not in set(refit.studies["study"])
        mcse_refit = az.mcse(refit.posterior, var_names=["mu", "tau"], method="mean")
        row = {"study": study, "pareto_k": table.loc[study, "pareto_k"], "reliable": table.loc[study, "reliable"]}
        for p in ("mu", "tau"):
            row |= {
                f"{p}_full": full.summaries[p]["mean"],
                f"{p}_psis": table.loc[study, f"{p}_mean"],
                f"{p}_refit": refit.summaries[p]["mean"],
                f"{p}_diff": table.loc[study, f"{p}_mean"] - refit.summaries[p]["mean"],
                f"{p}_tol": MCSE_MULTIPLE * float(np.hypot(mcse_psis[p][study], float(mcse_refit[p]))),
            }
        row["refit_divergences"] = refit.diagnostics.divergences
        rows.append(row)
    report = pd.DataFrame(rows).set_index("study")
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(report.T)  # shown with pytest -rP: the numbers behind the verdict
    assert (report["mu_diff"].abs() <= report["mu_tol"]).all(), report.T
    reliable = report[report["reliable"]]
    assert (reliable["tau_diff"].abs() <= reliable["tau_tol"]).all(), report.T
