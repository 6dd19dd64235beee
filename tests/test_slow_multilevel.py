"""Three-level model: NUTS versus the exact quadrature posterior at small k (slow: real NUTS).

Flagship simulated dataset ``bmsc_ev_osteoporosis``: each outcome has 4-9 studies, most with two
EV arms (low and high dose) sharing one OVX control, so the comparisons carry Gleser–Olkin
covariances and omega is identified only weakly (its posterior leans on the HalfNormal(0.5)
prior). The exact engine (``models/exact/multilevel.py``) integrates mu analytically and
(tau, omega) on a 2-D Gauss–Legendre grid; NUTS must pass the convergence gates and its posterior
means of mu, tau, omega, theta_new and of every study effect must lie within ``MCSE_MULTIPLE``
Monte Carlo standard errors of the exact ones (default priors of the SMD measure).
"""

from __future__ import annotations

import arviz as az
import pytest

from analysis.dataset.effects import compute_effects
from analysis.dataset.load import load_dataset
from analysis.fitting.multilevel import comparison_covariance, fit_multilevel
from models.exact.multilevel import exact_multilevel_posterior
from models.priors import default_priors
from tests.tolerances import GATE_DIVERGENCES_MAX, GATE_ESS_BULK_MIN, GATE_R_HAT_MAX, MCSE_MULTIPLE

pytestmark = pytest.mark.slow

OUTCOMES = ["BMD", "Tb_Th"]


@pytest.fixture(scope="module")
def dataset():
    return load_dataset("data/bmsc_ev_osteoporosis")


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_nuts_matches_exact(dataset, outcome):
    priors = default_priors(dataset.effect_measure)
    result = fit_multilevel(dataset, outcome, seed=11)
    d = result.diagnostics
    assert (
        d.divergences <= GATE_DIVERGENCES_MAX and d.r_hat_max <= GATE_R_HAT_MAX and d.ess_bulk_min >= GATE_ESS_BULK_MIN
    ), d
    rows, V = comparison_covariance(compute_effects(dataset), outcome)
    exact = exact_multilevel_posterior(
        rows["yi"].to_numpy(),
        V,
        list(rows["study"]),
        mu_prior=priors.mu,
        tau_prior=priors.tau,
        omega_prior=priors.omega,
    )
    post = result.posterior.posterior
    for name in ("mu", "tau", "omega", "theta_new"):
        mcse = float(az.mcse(post[name].to_numpy(), method="mean"))
        gap = abs(float(post[name].mean()) - exact.summary(name)["mean"])
        assert gap <= MCSE_MULTIPLE * mcse, (outcome, name, gap, mcse)
    # study effects: NUTS draws (exact conditional given each draw) versus the exact mixtures
    theta = post["theta"].to_numpy()
    exact_rows = exact.study_summaries()
    for i, row in enumerate(exact_rows):
        mcse = float(az.mcse(theta[..., i], method="mean"))
        assert abs(theta[..., i].mean() - row["mean"]) <= MCSE_MULTIPLE * mcse, (outcome, i, row)
    # the exact engine through fit_multilevel gives the same numbers as the oracle used here
    exact_fit = fit_multilevel(dataset, outcome, engine="exact")
    assert exact_fit.summaries["mu"] == pytest.approx(exact.summary("mu"), abs=1e-12)
