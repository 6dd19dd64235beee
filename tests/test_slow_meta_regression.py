"""NUTS meta-regression against the exact engine (slow: real sampling; run with ``pytest -m slow``).

First the convergence gates (no divergences, r_hat <= 1.01, ess_bulk >= 400 over beta and tau),
then the posterior mean of every coefficient and of tau within 4 Monte Carlo standard errors of
the exact value. Cases: raudenbush1985 with weeks_c (bayesmeta bmr's uncentred design and
priors) and the simulated default dataset's BV_TV with species (default priors, centred).
"""

from __future__ import annotations

import arviz as az
import pytest

from analysis.config import DATA_DIR, DEFAULT_DATASET
from analysis.dataset.load import load_dataset
from analysis.fitting.meta_regression import fit_meta_regression
from models.priors import PriorSet, PriorSpec
from tests.tolerances import (
    GATE_DIVERGENCES_MAX,
    GATE_ESS_BULK_MIN,
    GATE_R_HAT_MAX,
    MCSE_MULTIPLE,
)

pytestmark = pytest.mark.slow

BMR_PRIORS = {
    "priors": PriorSet(mu=PriorSpec.parse("normal:0:10"), tau=PriorSpec.parse("halfnormal:0.5")),
    "beta_prior_sd": 10.0,
    "slope_prior_scale": "unit",
    "center": False,
}
CASES = [
    ("raudenbush1985", DATA_DIR / "raudenbush1985", "iq_smd", "weeks_c", BMR_PRIORS),
    ("default_BV_TV", DEFAULT_DATASET, "BV_TV", "species", {}),
]


@pytest.mark.parametrize(
    ("folder", "outcome", "moderator", "options"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_nuts_meta_regression_matches_exact(folder, outcome, moderator, options):
    dataset = load_dataset(folder)
    nuts = fit_meta_regression(dataset, outcome, moderators=[moderator], engine="nuts", seed=11, **options)
    exact = fit_meta_regression(dataset, outcome, moderators=[moderator], engine="exact", **options)
    d = nuts.diagnostics
    assert (
        d.divergences <= GATE_DIVERGENCES_MAX and d.r_hat_max <= GATE_R_HAT_MAX and d.ess_bulk_min >= GATE_ESS_BULK_MIN
    ), d
    mcse = az.mcse(nuts.posterior, var_names=["beta", "tau"], method="mean")
    node = mcse["posterior"] if "posterior" in mcse.children else mcse
    for name in nuts.design.coef_names:
        gap = abs(nuts.beta[name]["mean"] - exact.beta[name]["mean"])
        assert gap <= MCSE_MULTIPLE * float(node["beta"].sel(coef=name)), (name, gap)
    gap = abs(nuts.summaries["tau"]["mean"] - exact.summaries["tau"]["mean"])
    assert gap <= MCSE_MULTIPLE * float(node["tau"]), ("tau", gap)
    point = "point_ratio_of_medians"
    assert nuts.R2[point]["tau2_median_RE"] == exact.R2[point]["tau2_median_RE"]  # same exact reference fit
