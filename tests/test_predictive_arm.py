"""Posterior predictive check of the arm-level (default) fit (:mod:`analysis.checks.predictive_arm`).

The replicated data are checked against small-sample theory (Hedges 1981: g is unbiased; its
exact variance follows from the noncentral t) and against the shared-control covariance of
Gleser & Olkin; the check itself on a tiny NUTS fit.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from analysis.checks.predictive_arm import arm_posterior_predictive_check, observed_comparisons, replicate_arms
from analysis.dataset.effects import compute_effects
from analysis.dataset.load import load_dataset
from analysis.dataset.smd import correction_j, shared_control_covariance
from analysis.fitting.arm_level import outcome_arm_summaries
from analysis.plots.predictive import ppc_density_plot, ppc_statistics_plot
from models.arm_level import arm_summaries
from tests.helpers import tiny_arm_fit, write_dataset
from tests.tolerances import MCSE_MULTIPLE

STUDIES = ["A2020", "B2021", "C2022"]
N_REP = 200_000


def _two_groups(n_c: float, n_a: float, n_b: float, n_other: float):
    """Study 0: control + two treatment arms; study 1: control + one treatment arm (any means/SDs)."""
    return arm_summaries(
        mean=[0.0, 1.0, 2.0, 0.0, 1.0],
        sd=[1.0, 1.0, 1.0, 1.0, 1.0],
        n=[n_c, n_a, n_b, n_other, n_other],
        treated=[0, 1, 1, 0, 1],
        arm_study=[0, 0, 0, 1, 1],
        arm_group=[0, 0, 0, 1, 1],
        study=["s0", "s1"],
    )


@pytest.fixture(scope="module")
def replicated():
    data = _two_groups(6, 5, 7, 8)
    theta = np.broadcast_to([0.8, 1.5, 1.0], (N_REP, 3))
    return data, theta[0], replicate_arms(theta, data, rng=np.random.default_rng(11))


def test_replicated_g_is_unbiased_with_the_exact_noncentral_t_variance(replicated):
    """Hedges (1981): E g = delta; Var g = J(m)^2 a Var(t), t ~ noncentral t(m, delta / sqrt(a))."""
    data, theta, (g, _) = replicated
    n_t = np.asarray(data.comparison_n, dtype=float)
    n_c = np.array([6.0, 6.0, 8.0])
    a, m = 1 / n_t + 1 / n_c, n_t + n_c - 2
    exact_var = correction_j(m) ** 2 * a * stats.nct.var(m, theta / np.sqrt(a))
    mean_se = np.sqrt(g.var(axis=0) / N_REP)
    var_se = np.sqrt((((g - g.mean(axis=0)) ** 4).mean(axis=0) - g.var(axis=0) ** 2) / N_REP)
    assert np.all(np.abs(g.mean(axis=0) - theta) < MCSE_MULTIPLE * mean_se)
    assert np.all(np.abs(g.var(axis=0) - exact_var) < MCSE_MULTIPLE * var_se)


def test_arms_of_one_group_share_their_replicated_control(replicated):
    """Covariance of two g's with one control: Gleser-Olkin's first-order value; other studies independent."""
    data, theta, (g, _) = replicated
    cov = np.cov(g.T)
    first_order = shared_control_covariance(theta[:2], np.zeros(2), np.array([5.0, 7.0]), 6.0)[0, 1]
    assert cov[0, 1] == pytest.approx(first_order, rel=0.1)
    assert abs(np.corrcoef(g.T)[0, 2]) < 0.01 and abs(np.corrcoef(g.T)[1, 2]) < 0.01


def test_replicated_variance_is_the_ls_formula_of_each_replicate(replicated):
    data, _, (g, v) = replicated
    n_t, n_c = np.asarray(data.comparison_n, dtype=float), np.array([6.0, 6.0, 8.0])
    np.testing.assert_allclose(v, 1 / n_t + 1 / n_c + g**2 / (2 * (n_t + n_c)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_dataset(write_dataset(tmp_path_factory.mktemp("ppc_arm")))


def test_observed_comparisons_are_the_effect_table_rows(tiny):
    data = outcome_arm_summaries(tiny, "BMD", STUDIES)
    observed = observed_comparisons(tiny, "BMD", data)
    table = compute_effects(tiny).data
    rows = table[table["outcome"] == "BMD"]
    label = rows["study"].astype(str) + "/" + rows["comparison"].astype(str)
    expected = rows.assign(label=label).set_index("label").loc[list(data.comparison)]
    np.testing.assert_allclose(observed["yi"], expected["yi"], atol=1e-12)
    np.testing.assert_allclose(observed["vi"], expected["vi"], atol=1e-12)


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_check_of_a_tiny_arm_level_fit():
    tiny, fit = tiny_arm_fit()
    check = arm_posterior_predictive_check(fit, tiny, seed=3)
    out = json.loads(json.dumps(check.to_dict()))
    assert out["unit"] == "comparison" and set(out["statistics"]) == {"max_std_residual", "Q", "egger_slope"}
    sizes = fit.posterior.posterior.sizes  # the library may have retried with more draws
    n_draws = sizes["chain"] * sizes["draw"]
    for name, values in check.replicated.items():
        assert values.shape == check.observed[name].shape == (n_draws,)
        assert 0.0 <= out["statistics"][name]["ppp"] <= 1.0
        assert out["statistics"][name]["ppp"] == pytest.approx(np.mean(values >= check.observed[name]))
    assert check.y_rep.shape == (sizes["chain"], sizes["draw"], 4)
    tree = fit.posterior
    assert tree.posterior_predictive["g"].sizes["comparison"] == 4 and "g" in tree.observed_data
    assert {"contrast", "s2"} <= set(tree.observed_data.data_vars)  # the model's own data are kept
    again = arm_posterior_predictive_check(fit, tiny, seed=3)
    assert again.statistics == check.statistics  # seeded
    ppc_density_plot(fit)
    ppc_statistics_plot(fit, check)


def test_check_refuses_a_normal_likelihood_fit(tiny):
    from analysis.fitting.random_effects import fit_random_effects

    exact = fit_random_effects(tiny, "BMD", engine="exact")
    with pytest.raises(ValueError, match="arm-level NUTS fit"):
        arm_posterior_predictive_check(exact, tiny)
