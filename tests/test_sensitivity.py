"""Prior sensitivity: power-scaling only on the top-level priors, and the exact prior grid."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import pytest

from analysis.checks.predictive import posterior_predictive_check
from analysis.checks.sensitivity import MU_GRID, TAU_GRID, power_scaling, prior_grid
from analysis.config import DATA_DIR
from analysis.dataset.load import load_dataset
from analysis.fitting.random_effects import fit_random_effects
from analysis.fitting.sampling import SamplerSettings
from analysis.plots.predictive import ppc_density_plot, ppc_statistics_plot
from analysis.plots.sensitivity import prior_grid_plot, psense_plot


@pytest.fixture(scope="module")
def fit():
    dataset = load_dataset(DATA_DIR / "normand1999")
    return fit_random_effects(dataset, "length_of_stay", seed=5, sampler=SamplerSettings(draws=500, tune=500, chains=2))


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_power_scaling_uses_only_top_level_priors(fit):
    table = power_scaling(fit)
    assert list(table.index) == ["mu", "tau"]
    assert set(fit.posterior["log_prior"].data_vars) == {"mu", "tau"}  # not I2 or other auxiliaries
    assert (table[["prior", "likelihood"]] >= 0).all().all()
    # the likelihood of 9 large trials dominates mu: the likelihood, not the prior, drives it
    assert table.at["mu", "likelihood"] > table.at["mu", "prior"]
    assert set(table["diagnosis"]) <= {
        "ok",
        "potential prior-data conflict",
        "potential strong prior / weak likelihood",
    }


def test_prior_grid_exact_refits():
    grid = prior_grid(load_dataset(DATA_DIR / "normand1999"), "length_of_stay")
    assert len(grid) == len(TAU_GRID) + len(MU_GRID)
    assert set(grid["varied"]) == {"tau", "mu"}
    # bayesmeta 3.4, tau ~ HalfNormal(1): posterior median of tau 0.92103 (with mu ~ N(0, 10^2));
    # under mu ~ N(0, 3^2) the tau median differs only slightly
    row = grid[(grid["prior_tau"] == "halfnormal:1") & (grid["varied"] == "tau")].iloc[0]
    assert row["tau_median"] == pytest.approx(0.92103206096484, abs=0.02)
    # a tighter tau prior pulls tau down
    tau = grid[grid["varied"] == "tau"].set_index("prior_tau")["tau_median"]
    assert tau["halfnormal:0.5"] < tau["halfnormal:1"] < tau["halfnormal:2"]


def test_check_figures_render(fit):
    check = posterior_predictive_check(fit)
    power_scaling(fit)
    figures = [
        ppc_density_plot(fit),
        ppc_statistics_plot(fit, check),
        psense_plot(fit),
        prior_grid_plot(prior_grid(load_dataset(DATA_DIR / "normand1999"), "length_of_stay")),
    ]
    for fig in figures:
        fig.savefig(io.BytesIO(), format="png")
        plt.close(fig)
