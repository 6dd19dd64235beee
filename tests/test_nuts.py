"""nutpie sampling with compiled models cached by structure (analysis/fitting/nuts.py).

The cache must never hand one data set's posterior to another: models that differ only in the
values of their ``pm.Data`` containers share a compiled model, anything else does not, and a
posterior drawn through the cache is identical to one drawn after a fresh compile.
"""

from __future__ import annotations

import arviz as az
import numpy as np
import pytest

import analysis.fitting.nuts as nuts
from models.exact.posterior import exact_posterior
from models.priors import PriorSpec
from models.random_effects import build_random_effects_model
from tests.tolerances import GATE_DIVERGENCES_MAX, MCSE_MULTIPLE

MU, TAU = PriorSpec.parse("normal:0:3"), PriorSpec.parse("halfnormal:1")
SMALL = (np.array([0.2, 0.9, 0.4, 1.1]), np.array([0.05, 0.08, 0.04, 0.1]))
LARGE = (np.array([-0.4, 0.1, -0.2, 0.3, -0.6, 0.0, -0.1]), np.array([0.1, 0.2, 0.05, 0.3, 0.15, 0.1, 0.08]))
SETTINGS = {"draws": 1000, "tune": 1000, "chains": 2, "target_accept": 0.95}  # the project defaults, 2 chains


def _model(data: tuple[np.ndarray, np.ndarray], tau: PriorSpec = TAU):
    yi, vi = data
    return build_random_effects_model(yi, vi, study=[f"s{j}" for j in range(yi.size)], tau_prior=tau, beta_priors=[MU])


@pytest.fixture
def compile_count(monkeypatch):
    import nutpie

    calls = []
    original = nutpie.compile_pymc_model

    def counting(model, **kwargs):
        calls.append(model)
        return original(model, **kwargs)

    monkeypatch.setattr(nutpie, "compile_pymc_model", counting)
    nuts.clear_cache()
    yield calls
    nuts.clear_cache()


def test_fingerprint_ignores_data_values_and_lengths_only():
    assert nuts.model_fingerprint(_model(SMALL)) == nuts.model_fingerprint(_model(LARGE))
    assert nuts.model_fingerprint(_model(SMALL)) != nuts.model_fingerprint(
        _model(SMALL, PriorSpec.parse("halfnormal:0.5"))
    )
    assert nuts.model_fingerprint(_model(SMALL)) != nuts.model_fingerprint(
        _model(SMALL, PriorSpec.parse("halfcauchy:1"))
    )


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_second_data_set_reuses_the_compiled_model_and_gets_its_own_posterior(compile_count):
    first = nuts.sample_nuts(_model(SMALL), seed=3, **SETTINGS)
    second = nuts.sample_nuts(_model(LARGE), seed=3, **SETTINGS)
    assert len(compile_count) == 1
    for draws, (yi, vi) in ((first, SMALL), (second, LARGE)):
        exact = exact_posterior(yi, vi, tau_prior=TAU, mu_prior=MU).summary("mu")["mean"]
        mcse = float(az.mcse(draws.posterior.to_dataset(), var_names=["mu"], method="mean")["mu"])
        assert int(draws.sample_stats["diverging"].sum()) <= GATE_DIVERGENCES_MAX
        assert abs(float(draws.posterior["mu"].mean()) - exact) <= MCSE_MULTIPLE * mcse


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_draws_through_the_cache_equal_draws_after_a_fresh_compile(compile_count):
    nuts.sample_nuts(_model(SMALL), seed=5, **SETTINGS)
    cached = nuts.sample_nuts(_model(LARGE), seed=5, **SETTINGS)
    nuts.clear_cache()
    fresh = nuts.sample_nuts(_model(LARGE), seed=5, **SETTINGS)
    assert len(compile_count) == 2
    np.testing.assert_array_equal(cached.posterior["mu"].to_numpy(), fresh.posterior["mu"].to_numpy())
    np.testing.assert_array_equal(cached.posterior["tau"].to_numpy(), fresh.posterior["tau"].to_numpy())


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_result_has_the_groups_of_pm_sample(compile_count):
    idata = nuts.sample_nuts(_model(SMALL), seed=1, **SETTINGS)
    assert {"posterior", "sample_stats", "observed_data"} <= set(idata.children)
    assert dict(idata.posterior.sizes) == {"chain": 2, "draw": 1000}
    np.testing.assert_array_equal(idata.observed_data["y"].to_numpy(), SMALL[0])


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_draws_carry_the_labels_of_their_own_model(compile_count):
    """A cached compiled model knows the coordinates of the model it was compiled from; the draws must not."""
    import pymc as pm

    def model(labels: list[str], y: list[float]):
        with pm.Model(coords={"group": labels}) as m:
            theta = pm.Normal("theta", 0.0, 1.0, dims="group")
            pm.Normal("y", theta, 1.0, observed=pm.Data("y_obs", np.array(y), dims="group"), dims="group")
        return m

    nuts.sample_nuts(model(["a", "b"], [0.1, 0.2]), seed=1, **SETTINGS)
    second = nuts.sample_nuts(model(["c", "d"], [1.0, -1.0]), seed=1, **SETTINGS)
    assert len(compile_count) == 1
    assert list(second.posterior["theta"].coords["group"].values) == ["c", "d"]
    assert list(second.observed_data["y"].coords["group"].values) == ["c", "d"]
