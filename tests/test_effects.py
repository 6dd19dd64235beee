"""Effect sizes: the J correction, SEM conversion, shared-control covariance and study combination."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.dataset.effects import compute_effects, study_effects
from analysis.dataset.load import load_dataset
from analysis.dataset.smd import correction_j, hedges_g, sd_from_sem, shared_control_covariance
from tests.helpers import write_dataset


def test_correction_j_exact_gamma_form_and_approximation():
    m = 10.0
    exact = math.gamma(m / 2) / (math.sqrt(m / 2) * math.gamma((m - 1) / 2))
    assert correction_j(m) == pytest.approx(exact, rel=1e-12)
    assert correction_j(200.0) == pytest.approx(1 - 3 / (4 * 200 - 1), rel=1e-5)


def test_sem_to_sd():
    np.testing.assert_allclose(sd_from_sem([0.5, 2.0], [4, 9]), [1.0, 6.0])


def test_shared_control_covariance_hand_computed():
    # Control: n=8, mean 10, sd 2. Arm a: n=6, mean 12, sd 2. Arm b: n=7, mean 13, sd 2.5.
    ga, va = hedges_g(12, 2, 6, 10, 2, 8)
    gb, vb = hedges_g(13, 2.5, 7, 10, 2, 8)
    # By hand: m_a = 12, m_b = 13; pooled SDs 2 and sqrt((6*6.25 + 7*4)/13) = sqrt(65.5/13)
    sp_b = math.sqrt(65.5 / 13)
    ja = math.gamma(6) / (math.sqrt(6) * math.gamma(5.5))
    jb = math.gamma(6.5) / (math.sqrt(6.5) * math.gamma(6))
    da, db = 2 / 2, 3 / sp_b
    assert ga == pytest.approx(ja * da, rel=1e-12) and gb == pytest.approx(jb * db, rel=1e-12)
    expected = 1 / 8 + (ja * da) * (jb * db) * 7 / (2 * 12 * 13)
    cov = shared_control_covariance([ga, gb], [va, vb], [6, 7], 8)
    assert cov[0, 1] == pytest.approx(expected, rel=1e-12) and cov[1, 0] == cov[0, 1]
    assert cov[0, 0] == va and cov[1, 1] == vb


def test_shared_control_covariance_monte_carlo():
    """The delta-method covariance agrees with the empirical covariance of simulated g's."""
    rng = np.random.default_rng(20251127)
    reps, n_c, n_a, n_b, delta_a, delta_b = 200_000, 8, 6, 7, 1.0, 1.5
    ctrl = rng.normal(0.0, 1.0, (reps, n_c))
    arm_a = rng.normal(delta_a, 1.0, (reps, n_a))
    arm_b = rng.normal(delta_b, 1.0, (reps, n_b))
    sd = lambda x: x.std(axis=1, ddof=1)  # noqa: E731
    ga, _ = hedges_g(arm_a.mean(1), sd(arm_a), n_a, ctrl.mean(1), sd(ctrl), n_c)
    gb, _ = hedges_g(arm_b.mean(1), sd(arm_b), n_b, ctrl.mean(1), sd(ctrl), n_c)
    empirical = np.cov(ga, gb)[0, 1]
    mean_a, mean_b = ga.mean(), gb.mean()
    theory = shared_control_covariance([mean_a, mean_b], [1.0, 1.0], [n_a, n_b], n_c)[0, 1]
    # Monte Carlo SE of a covariance ~ sqrt(var_a var_b (1 + rho^2) / reps) ~ 0.001 here.
    # Both the formula and metafor's LS variance on the diagonal are first-order: at n = 6-8
    # per arm the LS variance is itself ~9% below the empirical one, so allow 10% relative.
    mc_se = math.sqrt(np.var(ga) * np.var(gb) * 2 / reps)
    assert abs(empirical - theory) < 0.10 * theory + 4 * mc_se
    ls_var_a = 1 / n_a + 1 / n_c + mean_a**2 / (2 * (n_a + n_c))
    assert abs(np.var(ga) - ls_var_a) < 0.10 * ls_var_a + 4 * mc_se
    naive = 0.0  # treating the comparisons as independent would claim zero covariance
    assert abs(empirical - naive) > 10 * abs(empirical - theory)


def test_effects_table_shared_control_group(tmp_path):
    table = compute_effects(load_dataset(write_dataset(tmp_path)))
    group = table.data[table.data["study"] == "B2021"]
    assert list(group["comparison"]) == ["ev_low", "ev_high"]
    assert set(group["cov_group"]) == {"B2021/BMD/ovx"}
    names, cov = table.covariance["B2021/BMD/ovx"]
    assert names == ("ev_low", "ev_high") and cov[0, 1] > 0
    long = table.covariance_long()
    assert len(long) == 1 and long.loc[0, "cov"] == pytest.approx(cov[0, 1])
    # Tb_Sp has direction -1 and, lower with treatment, a negative g.
    sp = table.data[table.data["outcome"] == "Tb_Sp"].iloc[0]
    assert sp["direction"] == -1 and sp["yi"] < 0


def test_study_effects_combine_by_gls(tmp_path):
    table = compute_effects(load_dataset(write_dataset(tmp_path)))
    combined = study_effects(table, "BMD").set_index("study")
    _, cov = table.covariance["B2021/BMD/ovx"]
    y = table.data.loc[table.data["study"] == "B2021", "yi"].to_numpy()
    w = np.linalg.solve(cov, np.ones(2))
    assert combined.at["B2021", "yi"] == pytest.approx(w @ y / w.sum(), rel=1e-12)
    assert combined.at["B2021", "vi"] == pytest.approx(1 / w.sum(), rel=1e-12)
    # the shared control counted once; the combined variance exceeds the naive independent one
    assert combined.at["B2021", "n_control"] == 6
    assert combined.at["B2021", "vi"] > 1 / (1 / cov[0, 0] + 1 / cov[1, 1])
    assert list(combined.index) == ["A2020", "B2021", "C2022"]
    assert study_effects(table, "nothing").empty
