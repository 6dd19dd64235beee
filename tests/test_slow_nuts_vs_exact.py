"""NUTS against the exact engine (slow: real sampling; run with ``pytest -m slow``).

First the convergence gates (no divergences, r_hat <= 1.01, ess_bulk >= 400), then every
posterior mean of mu, tau and I2 within 4 Monte Carlo standard errors of the exact value.
Cases: normand1999 under the three tau priors of the bayesmeta reference, and every outcome of
the simulated default dataset (where the true pooled effects must also lie in the 95% ETI).
"""

from __future__ import annotations

import json

import arviz as az
import pytest

from analysis.config import DATA_DIR, DEFAULT_DATASET
from analysis.dataset.load import load_dataset
from analysis.fitting.random_effects import fit_random_effects
from models.priors import PriorSet, PriorSpec
from tests.tolerances import GATE_DIVERGENCES_MAX, GATE_ESS_BULK_MIN, GATE_R_HAT_MAX, MCSE_MULTIPLE

pytestmark = pytest.mark.slow
PARAMS = ("mu", "tau", "I2")


def _assert_agrees(dataset, outcome, priors, seed):
    nuts = fit_random_effects(dataset, outcome, engine="nuts", priors=priors, seed=seed)
    exact = fit_random_effects(dataset, outcome, engine="exact", priors=priors)
    d = nuts.diagnostics
    assert (
        d.divergences <= GATE_DIVERGENCES_MAX and d.r_hat_max <= GATE_R_HAT_MAX and d.ess_bulk_min >= GATE_ESS_BULK_MIN
    ), d
    mcse = az.mcse(nuts.posterior, var_names=list(PARAMS), method="mean")
    node = mcse["posterior"] if "posterior" in mcse.children else mcse
    for param in PARAMS:
        gap = abs(nuts.summaries[param]["mean"] - exact.summaries[param]["mean"])
        assert gap <= MCSE_MULTIPLE * float(node[param]), (outcome, param, gap, float(node[param]))
    return nuts


@pytest.mark.parametrize("tau_prior", ["halfnormal:0.5", "halfnormal:1", "halfcauchy:0.5"])
def test_nuts_matches_exact_normand1999(tau_prior):
    priors = PriorSet(mu=PriorSpec.parse("normal:0:10"), tau=PriorSpec.parse(tau_prior))
    _assert_agrees(load_dataset(DATA_DIR / "normand1999"), "length_of_stay", priors, seed=2024)


@pytest.mark.parametrize("outcome", ["BMD", "BV_TV", "Tb_N", "Tb_Sp", "Tb_Th", "Ct_Th", "ultimate_load"])
def test_nuts_matches_exact_default_dataset(outcome):
    dataset = load_dataset(DEFAULT_DATASET)
    nuts = _assert_agrees(dataset, outcome, PriorSet(), seed=7)
    truth = json.loads((DEFAULT_DATASET / "truth.json").read_text())["mu"][outcome]
    assert nuts.summaries["mu"]["q025"] <= truth <= nuts.summaries["mu"]["q975"]
