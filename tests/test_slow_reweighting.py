"""PSIS prior reweighting of a NUTS fit against exact refits (slow: NUTS).

The normal model has an exact engine, so the reweighted grid of its NUTS fit
(:func:`analysis.checks.reweighting.reweighted_prior_grid`) can be checked against exact refits
under the same alternative priors (:func:`analysis.checks.sensitivity.prior_grid`). For every
row marked reliable (Pareto k <= 0.7) the reweighted posterior mean of mu must agree with the
exact one within ``MCSE_MULTIPLE`` Monte Carlo standard errors, the MCSE computed from the
smaller of the importance-sampling ESS and the fit's bulk ESS; the same for the median of tau
(MCSE of a median taken as 1.25 x that of a mean for a near-normal posterior, loose for tau).
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis.checks.reweighting import reweighted_prior_grid
from analysis.checks.sensitivity import prior_grid
from analysis.config import DATA_DIR
from analysis.dataset.effects import compute_effects
from analysis.dataset.load import load_dataset
from analysis.fitting.random_effects import fit_random_effects
from tests.tolerances import MCSE_MULTIPLE

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("outcome", ["BMD", "Tb_Th"])
def test_reweighted_grid_matches_exact_refits(outcome):
    dataset = load_dataset(DATA_DIR / "bmsc_ev_osteoporosis")
    table = compute_effects(dataset)
    fit = fit_random_effects(dataset, outcome, engine="nuts", seed=5, table=table)
    reweighted = reweighted_prior_grid(fit)
    exact = prior_grid(dataset, outcome, table=table)
    assert len(reweighted) == len(exact) and reweighted["reliable"].sum() >= len(exact) - 1
    ess_bulk = fit.diagnostics.ess_bulk_min
    tau_sd = fit.summaries["tau"]["sd"]
    for (_, rw), (_, ex) in zip(reweighted.iterrows(), exact.iterrows(), strict=True):
        assert rw["prior"].endswith(ex["prior_tau"] if rw["varied"] == "tau" else ex["prior_mu"])
        if not rw["reliable"]:
            continue
        n_eff = min(rw["ess_is"], ess_bulk)
        assert abs(rw["mu_mean"] - ex["mu_mean"]) <= MCSE_MULTIPLE * rw["mu_sd"] / np.sqrt(n_eff), rw["prior"]
        assert abs(rw["tau_median"] - ex["tau_median"]) <= MCSE_MULTIPLE * 1.25 * tau_sd / np.sqrt(n_eff), rw["prior"]
