"""Influence analysis: PSIS-LOO with Pareto k, exact leave-one-study-out refits, the influence plot.

Fast tests use ``engine="exact"`` (independent exact posterior draws for PSIS-LOO); the slow test
runs NUTS. The exact LOO predictive density ``log p(y) - log p(y_-i)`` is the oracle of PSIS-LOO.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.figure import Figure

from analysis.checks.influence import PARETO_K_THRESHOLD, influence_analysis, study_influence
from analysis.config import DATA_DIR, DEFAULT_DATASET
from analysis.dataset.effects import compute_effects, study_effects
from analysis.dataset.load import load_dataset
from analysis.fitting.random_effects import fit_random_effects
from analysis.plots.influence import influence_plot
from models.exact.posterior import exact_posterior
from models.priors import PriorSet
from tests.tolerances import (
    GATE_DIVERGENCES_MAX,
    GATE_ESS_BULK_MIN,
    GATE_R_HAT_MAX,
    PSIS_ELPD_ABS,
)


@pytest.fixture(scope="module")
def bcg_result():
    return influence_analysis(load_dataset(DATA_DIR / "bcg"), "tb_log_rr", engine="exact", seed=11)


@pytest.fixture(scope="module")
def bmd_result():
    return influence_analysis(load_dataset(DEFAULT_DATASET), "BMD", engine="exact", seed=11)


#: PSIS is compared with the exact answer only where k <= 0.5: between 0.5 and 0.7 its error grows
#: (SimStudyI2023 of BMD, k = 0.62-0.64 under NUTS, is off by 0.24-0.29), which is why every study
#: also gets an exact refit.
PSIS_RELIABLE_K = 0.5


def _assert_psis_matches_exact(result):
    ok = result.table["pareto_k"] <= PSIS_RELIABLE_K
    assert ok.sum() >= result.k - 2
    gap = (result.table["elpd_psis"] - result.table["elpd_exact"]).abs()[ok]
    assert gap.max() <= PSIS_ELPD_ABS, gap


def test_psis_loo_matches_exact_leave_one_out(bcg_result, bmd_result):
    for result in (bcg_result, bmd_result):
        assert np.all(np.isfinite(result.table["pareto_k"]))
        _assert_psis_matches_exact(result)
        assert result.elpd_loo == pytest.approx(result.elpd_exact, abs=PSIS_ELPD_ABS * result.k)


def test_refits_are_the_exact_posterior_without_the_study(bcg_result):
    effects = study_effects(compute_effects(load_dataset(DATA_DIR / "bcg")), "tb_log_rr")
    priors = PriorSet()
    for i in (0, 7):
        keep = np.arange(len(effects)) != i
        post = exact_posterior(effects["yi"][keep], effects["vi"][keep], tau_prior=priors.tau, mu_prior=priors.mu)
        row = bcg_result.table.iloc[i]
        assert row["mu_mean"] == pytest.approx(post.mean("mu"), abs=1e-12)
        assert row["tau_q975"] == pytest.approx(post.quantile("tau", 0.975), abs=1e-12)
        assert row["mu_shift"] == pytest.approx(post.mean("mu") - bcg_result.full["mu"]["mean"], abs=1e-12)


def test_outlying_study_is_flagged(bmd_result):
    """SimStudyI2023 (g = -0.02 amid g = 1.1-3.3) dominates both tau and mu and has a high Pareto k."""
    assert bmd_result.most_influential("mu") == "SimStudyI2023"
    assert bmd_result.most_influential("tau") == "SimStudyI2023"
    assert bmd_result.table["pareto_k"].idxmax() == "SimStudyI2023"
    row = bmd_result.table.loc["SimStudyI2023"]
    assert row["tau_median"] < 0.6 * bmd_result.full["tau"]["median"]
    assert row["mu_mean"] - bmd_result.full["mu"]["mean"] > 0.2


def test_to_dict_is_json_ready(bcg_result):
    out = json.loads(json.dumps(bcg_result.to_dict(), allow_nan=False))
    assert out["k"] == 13 and out["analysis"] == "influence" and out["interval"] == "eti95"
    assert out["loo"]["k_threshold"] == PARETO_K_THRESHOLD
    first = out["studies"][0]
    assert set(first) >= {"study", "pareto_k", "elpd_psis", "elpd_exact", "mu", "tau", "frequentist"}
    assert set(first["mu"]) == {"mean", "median", "q025", "q975"}
    assert "diagnostics" not in out  # exact draws


def test_report_text(bcg_result):
    text = str(bcg_result)
    assert "PSIS-LOO" in text and "eti95" in text and "Pareto k > 0.7" in text
    assert "Hart & Sutherland 1977" in text


def test_influence_plot(bmd_result, bcg_result):
    fig = influence_plot(bmd_result)
    assert isinstance(fig, Figure)
    ax, kax = (next(a for a in fig.axes if a.get_gid() == gid) for gid in ("influence_mu", "pareto_k"))
    assert [t.get_text() for t in ax.get_yticklabels()] == list(bmd_result.table.index)
    threshold = next(line for line in kax.get_lines() if line.get_gid() == "k_threshold")
    assert threshold.get_xdata()[0] == pytest.approx(PARETO_K_THRESHOLD)
    points = next(c for c in kax.collections if c.get_gid() == "pareto_k_points")
    np.testing.assert_allclose(points.get_offsets()[:, 0], bmd_result.table["pareto_k"])
    full = next(line for line in ax.get_lines() if line.get_gid() == "full_mu")
    assert full.get_xdata()[0] == pytest.approx(bmd_result.full["mu"]["mean"])
    marker = fig.findobj(lambda artist: artist.get_gid() == "simulated_marker")
    assert len(marker) == 1 and marker[0].get_text() == "SIMULATED DATA"
    assert not influence_plot(bcg_result).findobj(lambda artist: artist.get_gid() == "simulated_marker")


def test_configuration_is_validated():
    effects = study_effects(compute_effects(load_dataset(DATA_DIR / "bcg")), "tb_log_rr")
    outcome = load_dataset(DATA_DIR / "bcg").outcomes["tb_log_rr"]
    with pytest.raises(ValueError, match="engine"):
        study_influence(effects, outcome=outcome, engine="laplace")
    with pytest.raises(ValueError, match="at least 3"):
        study_influence(effects.iloc[:2], outcome=outcome, engine="exact")


@pytest.mark.slow
def test_nuts_influence_matches_exact_and_reuses_a_fit():
    dataset = load_dataset(DEFAULT_DATASET)
    result = influence_analysis(dataset, "BMD", engine="nuts", seed=5)
    d = result.diagnostics
    assert d.divergences <= GATE_DIVERGENCES_MAX and d.r_hat_max <= GATE_R_HAT_MAX
    assert d.ess_bulk_min >= GATE_ESS_BULK_MIN
    _assert_psis_matches_exact(result)
    fit = fit_random_effects(dataset, "BMD", engine="nuts", seed=5)
    reused = influence_analysis(dataset, "BMD", engine="nuts", posterior=fit.posterior)
    np.testing.assert_allclose(reused.table["pareto_k"], result.table["pareto_k"], atol=1e-12)
    assert "log_likelihood" not in fit.posterior.children  # the caller's tree is not modified
