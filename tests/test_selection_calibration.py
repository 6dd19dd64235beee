"""PIT calibration of the quadrature selection models (:mod:`analysis.studies.selection_calibration`).

Fast (~15 s): the rejection sampler against the published-study density (interval proportions
and the model's own likelihood), the PIT helpers on hand-made inputs, 60 replications of a design
without information about mu and tau whose PITs are known in closed form, and the check that
the machinery can fail: the same replications fitted to data shifted by +0.5 give non-uniform
PITs. One-cut-point models (three quadrature axes) keep the replications cheap.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from analysis.results.bias_averaged import ModelFit
from analysis.studies import selection_calibration as sc
from models.selection import interval_index, normal_thresholds, selection_log_lik

#: The study's per-test level: 12 tests at family level 0.01.
THRESHOLD = sc.bonferroni_threshold(12)
ONE_CUT = (0.05,)


@pytest.mark.parametrize("cutpoints", [(0.025, 0.05), (0.05, 0.5)])
def test_sampler_publishes_each_interval_in_proportion_to_omega_times_its_probability(cutpoints):
    """mu = 0, tau = 0, v = 1: interval j has probability P_j = a_j - a_(j-1); published share omega_j P_j / sum."""
    omega = np.array([1.0, 0.2, 0.1])
    n = 4_000
    thresholds = normal_thresholds(np.ones(n), cutpoints)
    y = sc.simulate_selected_effects(0.0, 0.0, omega, np.ones(n), thresholds, np.random.default_rng(2))
    counts = np.bincount(interval_index(y, thresholds), minlength=3)
    p = np.diff([0.0, *cutpoints, 1.0])
    expected = omega * p / np.sum(omega * p)
    share = counts / n
    assert np.all(np.abs(share - expected) < 4 * np.sqrt(expected * (1 - expected) / n))
    assert stats.chisquare(counts, n * expected).pvalue > 1e-3


def test_sampler_draws_from_the_models_likelihood():
    """Accepted effects of one study follow exp(selection_log_lik) for one study (KS test)."""
    mu, tau, v, cutpoints = 0.3, 0.4, 0.2, (0.025, 0.05)
    omega = np.array([1.0, 0.3, 0.1])
    increments = [1.0 - 0.3, 0.3 - 0.1, 0.1]
    y = sc.simulate_selected_effects(
        mu,
        tau,
        omega,
        np.full(2000, v),
        normal_thresholds(np.full(2000, np.sqrt(v)), cutpoints),
        np.random.default_rng(5),
    )
    c = normal_thresholds(np.array([np.sqrt(v)]), cutpoints)
    edges = [-4.0, *sorted(c[0]), 5.0]
    grid = np.concatenate([np.linspace(a + 1e-12, b - 1e-12, 401) for a, b in zip(edges[:-1], edges[1:])])
    density = np.exp([selection_log_lik(np.array([g]), np.array([v]), c, mu, tau, increments) for g in grid])
    cdf = integrate.cumulative_trapezoid(density, grid, initial=0.0)
    assert cdf[-1] == pytest.approx(1.0, abs=1e-4)  # the likelihood is a normalised density of y
    assert stats.kstest(y, lambda x: np.interp(x, grid, cdf)).pvalue > 0.01


def test_sampler_rejects_weights_outside_the_unit_interval():
    with pytest.raises(ValueError):
        sc.simulate_selected_effects(0.0, 0.1, [1.0, 1.5], np.ones(2), np.ones((2, 1)), np.random.default_rng(0))
    with pytest.raises(ValueError):
        sc.simulate_selected_effects(0.0, 0.1, [1.0, 0.5], np.ones(2), np.ones((2, 2)), np.random.default_rng(0))


def test_weighted_cdf_interpolates_between_mid_points():
    values, mass = np.array([0.2, 0.6]), np.array([0.5, 0.5])
    assert sc.weighted_cdf(values, mass, 0.2) == pytest.approx(0.25)
    assert sc.weighted_cdf(values, mass, 0.4) == pytest.approx(0.5)
    assert sc.weighted_cdf(values, mass, 0.1) == pytest.approx(0.125)
    assert sc.weighted_cdf(values, mass, 0.8) == pytest.approx(0.875)
    # values constant along an axis of the grid: the mass is summed over it
    grid_mass = np.array([[0.1, 0.2], [0.3, 0.4]])
    assert sc.weighted_cdf(np.array([[0.2, 0.6]]), grid_mass, 0.2) == pytest.approx(0.2)


def test_uniformity_tests_and_coverage():
    rng = np.random.default_rng(9)
    assert sc.uniformity_tests(rng.uniform(size=500))["ks_p_value"] > THRESHOLD
    narrow = stats.norm.cdf(rng.normal(0.0, 1.5, size=500))  # the posterior is too narrow: U shape
    result = sc.uniformity_tests(narrow)
    assert result["ks_p_value"] < THRESHOLD and result["chi2_p_value"] < THRESHOLD
    assert sum(result["counts"]) == 500 and result["df"] == sc.N_BINS - 1
    u = np.array([0.1, 0.3, 0.5, 0.7, 0.9, 0.99, np.nan])
    assert sc.interval_coverage(u, 0.5)["coverage"] == pytest.approx(3 / 6)
    assert sc.interval_coverage(u, 0.95)["coverage"] == pytest.approx(5 / 6)
    assert sc.interval_coverage(u, 0.95)["n"] == 6


def test_marginal_cdf_is_the_model_fits_marginal():
    vi = np.array([0.2, 0.3, 0.25])
    thresholds = normal_thresholds(np.sqrt(vi), ONE_CUT)
    model, integral = sc.fit_selection_model(np.array([0.9, 0.2, 1.1]), vi, thresholds, ONE_CUT, sc.default_priors())
    fit = ModelFit.from_integral(model, integral)
    for name in ("mu", "tau"):
        values, cdf = sc.marginal_cdf(model, integral, name)
        np.testing.assert_array_equal(values, fit.marginals[name][0])
        np.testing.assert_allclose(cdf, fit.marginals[name][1], rtol=1e-12, atol=1e-15)  # summation order


def _omega2_pit_uninformative(w: float, k: int, n2: int, a: float) -> float:
    """Posterior CDF of omega2 at w when the studies say nothing about mu, tau (huge v_i), one cut-point a.

    Prior omega2 ~ U(0, 1) (Dirichlet(1, 1) increments); each study lies in interval 1 with probability
    a, so the likelihood of n2 of k studies in interval 2 is omega2^n2 / (a + omega2 (1 - a))^k.
    """

    def f(x: float) -> float:
        return x**n2 / (a + x * (1.0 - a)) ** k

    return integrate.quad(f, 0.0, w)[0] / integrate.quad(f, 0.0, 1.0)[0]


@pytest.fixture(scope="module")
def uninformative_rows() -> pd.DataFrame:
    """60 replications with v_i = 1e8: the posterior of mu and tau is their prior."""
    return sc.run_calibration([ONE_CUT], reps=60, seed=3, vi=np.full(3, 1e8))


@pytest.mark.slow  # runs a simulation study (issue 19: simulation studies under -m slow)
def test_pits_of_a_small_run_match_the_known_answer(uninformative_rows):
    rows = uninformative_rows
    assert len(rows) == 60 and (rows["error"] == "").all() and rows["seed"].nunique() == 60
    priors = sc.default_priors()
    # truths are the first prior draws of each replication's own seed
    rng = np.random.default_rng(int(rows["seed"].iloc[7]))
    assert rows["mu_true"].iloc[7] == pytest.approx(float(priors.mu.ppf(rng.uniform())))
    np.testing.assert_allclose(rows["pit_mu"], stats.norm.cdf(rows["mu_true"] / 3.0), atol=2e-3)
    np.testing.assert_allclose(rows["pit_tau"], 2.0 * stats.norm.cdf(rows["tau_true"]) - 1.0, atol=2e-3)
    exact = [
        _omega2_pit_uninformative(w, 3, int(n2), ONE_CUT[0]) for w, n2 in zip(rows["omega2_true"], rows["n_interval2"])
    ]
    np.testing.assert_allclose(rows["pit_omega2_axis"], exact, atol=2e-3)
    np.testing.assert_allclose(rows["pit_omega2"], exact, atol=0.02)  # the grid's discretisation
    assert (rows["n_interval1"] + rows["n_interval2"] == 3).all()
    summary = sc.summarise(rows, threshold=THRESHOLD)["0.05"]
    assert summary["n_replications"] == 60 and summary["n_errors"] == 0
    assert summary["quantities"]["mu"]["uniformity"]["n"] == 60
    assert summary["quantities"]["mu"]["pass"]  # the prior's own PIT is uniform


def _shifted_pits(task: sc.CalibrationTask, shift: float) -> dict:
    """The replication of :func:`sc.run_replication`, with the published effects shifted before the fit."""
    rng = np.random.default_rng(task.seed)
    thresholds = normal_thresholds(np.sqrt(task.vi), task.cutpoints)
    truth = sc.draw_parameters(task.priors, len(task.cutpoints) + 1, rng)
    omega = [truth["omega1"], truth["omega2"]]
    y = sc.simulate_selected_effects(truth["mu"], truth["tau"], omega, task.vi, thresholds, rng)
    model, integral = sc.fit_selection_model(y + shift, task.vi, thresholds, task.cutpoints, task.priors)
    return sc.posterior_pits(model, integral, truth)


@pytest.mark.slow  # runs a simulation study (issue 19: simulation studies under -m slow)
def test_a_wrong_posterior_is_caught():
    """Same seeds, flagship variances: the right posterior passes, data shifted by +0.5 fail."""
    tasks = sc.make_tasks(ONE_CUT, 30, 11, sc.flagship_vi(), sc.default_priors())
    right = pd.DataFrame([sc.run_replication(t) for t in tasks])
    again = _shifted_pits(tasks[0], 0.0)
    assert again["pit_mu"] == pytest.approx(right["pit_mu"].iloc[0], abs=1e-12)  # the helper is the replication
    assert again["pit_tau"] == pytest.approx(right["pit_tau"].iloc[0], abs=1e-12)
    wrong = pd.DataFrame([_shifted_pits(t, 0.5) for t in tasks])
    assert sc.uniformity_tests(right["pit_mu"])["ks_p_value"] > THRESHOLD
    assert sc.uniformity_tests(wrong["pit_mu"])["ks_p_value"] < THRESHOLD
    assert (wrong["pit_mu"] < right["pit_mu"]).mean() > 0.9  # the truth now sits low in the posterior


def test_seeds_depend_on_cutpoints_and_rep_only():
    vi, priors = np.ones(2), sc.default_priors()
    a = [t.seed for t in sc.make_tasks((0.025, 0.05), 3, 1, vi, priors)]
    assert a == [t.seed for t in sc.make_tasks((0.025, 0.05), 3, 1, 2 * vi, priors)]
    assert len(set(a) | {t.seed for t in sc.make_tasks((0.05, 0.5), 3, 1, vi, priors)}) == 6


def test_summary_counts_errors_and_main_writes_the_outputs(tmp_path, capsys, monkeypatch):
    rows = pd.DataFrame(
        [
            {"cutpoints": "0.05", "rep": 0, "seed": 1, "error": "RuntimeError: x", "seconds": 0.1},
            *(
                {"cutpoints": "0.05", "rep": r, "seed": r, "error": "", "seconds": 0.1}
                | {c: u for c in sc.PIT_COLUMNS}
                | {"quadrature_error": 1e-3, "n_interval1": 2}
                for r, u in enumerate(np.linspace(0.01, 0.99, 50), start=1)
            ),
        ]
    )
    summary = sc.summarise(rows, threshold=THRESHOLD)["0.05"]
    assert summary["n_errors"] == 1 and summary["errors"] == ["RuntimeError: x"]
    assert summary["all_pass"] and summary["quantities"]["tau"]["uniformity"]["n"] == 50
    monkeypatch.setattr(sc, "CUTPOINT_SETS", (ONE_CUT,))  # one cheap model
    assert sc.main(["--reps", "2", "--out-dir", str(tmp_path)]) == 0
    written = pd.read_csv(tmp_path / "selection_calibration.csv", keep_default_na=False, dtype={"cutpoints": str})
    assert list(written["cutpoints"]) == ["0.05", "0.05"] and (written["error"] == "").all()
    assert (tmp_path / "selection_calibration.json").exists() and "all pass" in capsys.readouterr().out
