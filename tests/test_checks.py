"""Posterior predictive checks: test statistics with known answers, p-values, ArviZ wiring."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.checks.predictive import (
    cochran_q,
    egger_slope,
    max_standardised_residual,
    posterior_predictive_check,
    replicate,
)
from analysis.config import DATA_DIR
from analysis.dataset.effects import compute_effects, study_effects
from analysis.dataset.load import load_dataset
from analysis.fitting.random_effects import fit_random_effects
from analysis.fitting.sampling import SamplerSettings
from tests.tolerances import FREQUENTIST_REL

QUICK = SamplerSettings(draws=300, tune=300, chains=2)


def test_cochran_q_matches_metafor_normand1999():
    # metafor 3.8-1 rma(yi, vi, data=escalc(SMD, dat.normand1999)): QE = 123.729274359718
    effects = study_effects(compute_effects(load_dataset(DATA_DIR / "normand1999")), "length_of_stay")
    q = cochran_q(effects["yi"].to_numpy(), effects["vi"].to_numpy())
    assert q == pytest.approx(123.729274359718, rel=FREQUENTIST_REL)


def test_statistics_known_answers():
    vi = np.array([0.04, 0.09, 0.16, 0.25])
    se = np.sqrt(vi)
    assert cochran_q(np.full(4, 0.7), vi) == pytest.approx(0.0, abs=1e-12)
    assert egger_slope(0.3 + 2.0 * se, vi) == pytest.approx(2.0, rel=1e-12)
    assert egger_slope(np.full(4, 0.7), vi) == pytest.approx(0.0, abs=1e-12)
    y = np.array([0.0, 0.0, 0.0, 1.5])
    assert max_standardised_residual(y, vi, np.array(0.0), np.array(0.0)) == pytest.approx(1.5 / 0.5)


def test_replicates_have_mixed_predictive_moments():
    rng = np.random.default_rng(5)
    vi = np.array([0.1, 0.4])
    rep = replicate(np.full(200_000, 1.0), np.full(200_000, 0.5), vi, rng=rng)
    np.testing.assert_allclose(rep.mean(0), 1.0, atol=0.01)
    np.testing.assert_allclose(rep.var(0), vi + 0.25, rtol=0.02)


@pytest.fixture(scope="module")
def fit():
    return fit_random_effects(load_dataset(DATA_DIR / "normand1999"), "length_of_stay", seed=3, sampler=QUICK)


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_identical_effects_give_q_ppp_one(fit):
    """If every study had the same effect, Q_obs = 0 and every replicate is at least as large."""
    fit_copy = type(fit)(**{**fit.__dict__, "studies": fit.studies.assign(yi=-0.5)})
    check = posterior_predictive_check(fit_copy)
    assert check.statistics["Q"]["observed"] == 0.0 and check.statistics["Q"]["ppp"] == 1.0


def test_ppc_on_normand_and_arviz_group(fit):
    check = posterior_predictive_check(fit)
    stats = check.statistics
    assert set(stats) == {"Q", "max_std_residual", "egger_slope"}
    for value in stats.values():
        assert 0.0 <= value["ppp"] <= 1.0
    assert stats["egger_slope"]["ppp_two_sided"] <= 1.0
    # the random-effects model absorbs normand1999's heterogeneity (I2 ~ 95%): Q is not extreme
    assert 0.05 < stats["Q"]["ppp"] < 0.95
    assert fit.posterior["posterior_predictive"]["y"].dims == ("chain", "draw", "study")


def test_undefined_statistics_are_left_out(fit):
    one = type(fit)(**{**fit.__dict__, "studies": fit.studies.iloc[:1]})
    assert set(posterior_predictive_check(one).statistics) == {"max_std_residual"}
    two = type(fit)(**{**fit.__dict__, "studies": fit.studies.iloc[:2]})
    assert set(posterior_predictive_check(two).statistics) == {"max_std_residual", "Q"}


def test_ppc_needs_nuts():
    exact = fit_random_effects(load_dataset(DATA_DIR / "normand1999"), "length_of_stay", engine="exact")
    with pytest.raises(ValueError, match="NUTS"):
        posterior_predictive_check(exact)
