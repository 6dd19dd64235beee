"""Fitting one outcome: results object, JSON layout, P(benefit) orientation, determinism, NetCDF output."""

from __future__ import annotations

import json

import arviz as az
import numpy as np
import pytest
import xarray as xr

from analysis.config import DATA_DIR, DEFAULT_DATASET
from analysis.dataset.load import load_dataset
from analysis.fitting.random_effects import fit_random_effects
from analysis.fitting.sampling import SamplerSettings
from analysis.report.files import save_posterior
from analysis.report.write import fits_json
from models.exact.posterior import exact_posterior
from models.priors import PriorSet, PriorSpec

QUICK = SamplerSettings(draws=300, tune=300, chains=2)
DESIGN_KEYS = {
    "dataset",
    "outcome",
    "model",
    "engine",
    "priors",
    "k",
    "mu",
    "tau",
    "theta_new",
    "I2",
    "prob_benefit",
    "studies",
}


@pytest.fixture(scope="module")
def normand():
    return load_dataset(DATA_DIR / "normand1999")


@pytest.fixture(scope="module")
def nuts_fit(normand):
    return fit_random_effects(normand, "length_of_stay", engine="nuts", seed=11, sampler=QUICK)


def test_exact_result_json_has_design_layout(normand):
    result = fit_random_effects(normand, "length_of_stay", engine="exact")
    out = json.loads(json.dumps(result.to_dict()))
    assert DESIGN_KEYS <= set(out)
    assert out["k"] == 9 and out["engine"] == "exact" and out["priors"] == {"mu": "normal:0:3", "tau": "halfnormal:1"}
    for param in ("mu", "tau", "theta_new", "I2"):
        assert set(out[param]) == {"mean", "sd", "median", "q025", "q975"}
        assert out[param]["q025"] < out[param]["median"] < out[param]["q975"]
    assert set(out["studies"][0]) == {"study", "yi", "vi", "theta_mean", "theta_q025", "theta_q975"}
    assert "diagnostics" not in out and out["interval"] == "eti95"


def test_prob_benefit_uses_direction(normand):
    """P(benefit) is P(mu < 0) for lower-is-better outcomes and P(mu > 0) for higher-is-better ones."""
    lower = fit_random_effects(normand, "length_of_stay", engine="exact")
    post = exact_posterior(
        lower.studies["yi"],
        lower.studies["vi"],
        tau_prior=PriorSpec.parse("halfnormal:1"),
        mu_prior=PriorSpec.parse("normal:0:3"),
    )
    assert lower.outcome.direction == -1
    assert lower.prob_benefit == pytest.approx(float(post.cdf("mu", 0.0)), abs=1e-12)
    dataset = load_dataset(DEFAULT_DATASET)
    higher = fit_random_effects(dataset, "BMD", engine="exact")
    post = exact_posterior(
        higher.studies["yi"],
        higher.studies["vi"],
        tau_prior=PriorSpec.parse("halfnormal:1"),
        mu_prior=PriorSpec.parse("normal:0:3"),
    )
    assert higher.outcome.direction == 1
    assert higher.prob_benefit == pytest.approx(1.0 - float(post.cdf("mu", 0.0)), abs=1e-12)


def test_report_text_names_model_priors_and_intervals(normand):
    text = str(fit_random_effects(normand, "length_of_stay", engine="exact"))
    for needle in (
        "random-effects",
        "k = 9",
        "mu ~ normal:0:3",
        "tau ~ halfnormal:1",
        "95% equal-tailed",
        "eti95_lower",
        "lower is better",
    ):
        assert needle in text


def test_bad_configuration_raises_before_sampling(normand):
    with pytest.raises(ValueError, match="not declared"):
        fit_random_effects(normand, "BMD")
    with pytest.raises(ValueError, match="engine"):
        fit_random_effects(normand, "length_of_stay", engine="stan")
    with pytest.raises(ValueError, match="normal"):
        PriorSet(mu=PriorSpec.parse("halfnormal:1"))
    with pytest.raises(ValueError, match="tau"):
        PriorSet(tau=PriorSpec.parse("normal:0:1"))
    with pytest.raises(ValueError, match="sampler"):
        SamplerSettings(draws=0)


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_nuts_fit_has_diagnostics_and_theta(nuts_fit):
    assert nuts_fit.diagnostics is not None and nuts_fit.diagnostics.divergences == 0
    post = nuts_fit.posterior.posterior
    assert post["theta"].dims == ("chain", "draw", "study") and post.sizes["study"] == 9
    assert list(post["study"].values)[:2] == ["Edinburgh", "Orpington-Mild"]  # data order, as in metafor
    assert set(nuts_fit.to_dict()["diagnostics"]) >= {"r_hat_max", "ess_bulk_min", "ess_tail_min", "divergences"}


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_same_seed_same_numbers(normand, nuts_fit):
    again = fit_random_effects(normand, "length_of_stay", engine="nuts", seed=11, sampler=QUICK)
    assert json.dumps(again.to_dict()) == json.dumps(nuts_fit.to_dict())
    other = fit_random_effects(normand, "length_of_stay", engine="nuts", seed=12, sampler=QUICK)
    assert other.summaries["mu"]["mean"] != nuts_fit.summaries["mu"]["mean"]


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_posterior_saved_as_netcdf_datatree(tmp_path, nuts_fit):
    path = save_posterior(nuts_fit, tmp_path / "fit.nc")
    tree = xr.open_datatree(path)
    assert {"posterior", "sample_stats", "observed_data"} <= set(tree.children)
    ess = az.ess(tree, var_names=["mu"])
    assert float((ess["posterior"] if "posterior" in ess.children else ess)["mu"]) > 100
    np.testing.assert_allclose(tree.posterior["theta"].values, nuts_fit.posterior.posterior["theta"].values)


def test_fits_json_for_all_outcomes(normand):
    result = fit_random_effects(normand, "length_of_stay", engine="exact")
    out = fits_json([result], all_outcomes=True)
    assert out["dataset"] == "normand1999" and set(out["fits"]) == {"length_of_stay"}


def test_simulated_default_truth_inside_eti95():
    """On the simulated default dataset the true pooled effects (truth.json) lie in the 95% intervals."""
    dataset = load_dataset(DEFAULT_DATASET)
    truth = json.loads((DEFAULT_DATASET / "truth.json").read_text())
    for outcome in dataset.outcomes:
        s = fit_random_effects(dataset, outcome, engine="exact").summaries["mu"]
        assert s["q025"] <= truth["mu"][outcome] <= s["q975"], outcome
