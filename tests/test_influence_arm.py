"""Integrated PSIS leave-one-study-out of the arm-level fit: the integrated likelihood by brute force, a tiny fit.

The integrated likelihood (:func:`analysis.checks.influence_arm.integrated_log_likelihood`) is
checked against integrals that do not use its algebra: scipy quadrature over ``(z, log sigma)``
of the model's conditional densities for a single-comparison study, a tensor Gauss–Hermite rule
over ``(z, v_1, v_2)`` of the independent Helmert-contrast densities for the two-comparison
study, and scipy quadrature over ``log sigma`` of the conditional multivariate normal.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, stats

from analysis.checks.influence import influence_analysis
from analysis.checks.influence_arm import arm_leave_one_out, integrated_log_likelihood, pareto_k_threshold
from analysis.dataset.load import load_dataset
from analysis.fitting.arm_level import outcome_arm_summaries
from models.arm_level import arm_summaries
from tests.helpers import tiny_arm_fit, write_dataset

STUDIES = ["A2020", "B2021", "C2022"]
MU, TAU, OMEGA = 0.8, 0.5, 0.3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_dataset(write_dataset(tmp_path_factory.mktemp("arm_loo")))


@pytest.fixture(scope="module")
def data(tiny):
    return outcome_arm_summaries(tiny, "BMD", STUDIES)


def _log_variances(data, i: int, log_sigma: float) -> float:
    """Summed Gamma log densities of study ``i``'s arm variances given ``log sigma~``."""
    arms = data.arm_study == i
    df = data.arm_n[arms] - 1.0
    rate = df / (2.0 * np.exp(2.0 * log_sigma))
    return float(np.sum(stats.gamma.logpdf(data.arm_var[arms], a=df / 2.0, scale=1.0 / rate)))


def _contrast_mvn(data, i: int, log_sigma: float, tau: float, omega: float) -> float:
    """Log density of study ``i``'s contrasts given ``log sigma~`` with z and v integrated (scipy MVN)."""
    rows = np.flatnonzero(data.comparison_study == i)
    H = data.helmert[np.ix_(rows, rows)]
    h, sig = H.sum(axis=1), np.exp(log_sigma)
    cov = np.diag(data.se_factor[rows] ** 2) + tau**2 * np.outer(h, h) + omega**2 * H @ H.T
    return float(stats.multivariate_normal(sig * MU * h, sig**2 * cov).logpdf(data.contrast[rows]))


def test_single_comparison_study_equals_brute_force_integral(data):
    """Study A2020 (one comparison): scipy dblquad over (z, log sigma~) of the conditional densities."""
    i, (j,) = 0, np.flatnonzero(data.comparison_study == 0)
    u, r = float(data.contrast[j]), float(data.se_factor[j])
    ours = integrated_log_likelihood(data, np.array([MU]), np.array([TAU]), np.array([OMEGA]))[0, i]
    theta_sd = float(np.hypot(TAU, OMEGA))  # one comparison: tau z + omega v is N(0, tau^2 + omega^2)
    arms = data.arm_study == i
    df, s2 = data.arm_n[arms] - 1.0, data.arm_var[arms]
    # Gamma(df/2, rate df/(2 sigma~^2)) log densities of the arm variances: const - nu x - Q e^(-2x)/2
    nu, q = float(df.sum()), float(np.sum(df * s2))
    const = float(np.sum(stats.gamma.logpdf(s2, a=df / 2.0, scale=2.0 / df)))  # at x = 0
    half_log_2pi = 0.5 * math.log(2.0 * math.pi)

    def integrand(z: float, x: float) -> float:
        sig = math.exp(x)
        resid = (u - sig * (MU + theta_sd * z)) / (sig * r)
        log_p = -0.5 * resid**2 - math.log(sig * r) - half_log_2pi  # contrast | z, sigma~
        log_p += -0.5 * z * z - half_log_2pi  # z ~ N(0, 1)
        log_p += const - nu * x - 0.5 * q * (math.exp(-2.0 * x) - 1.0)  # arm variances | sigma~
        log_p += -0.5 * x * x - half_log_2pi  # log sigma~ ~ N(0, 1)
        return math.exp(log_p - ours)

    value, err = integrate.dblquad(integrand, -3.0, 3.0, -9.0, 9.0, epsabs=1e-11, epsrel=1e-10)
    assert err < 1e-8
    assert value == pytest.approx(1.0, rel=1e-6)
    assert const - nu * 0.3 - 0.5 * q * (math.exp(-0.6) - 1.0) == pytest.approx(_log_variances(data, i, 0.3))


def test_conditional_contrast_density_equals_tensor_integral_over_z_and_v(data):
    """Study B2021 (two comparisons, one group): the MVN of the contrasts given sigma~ integrates z, v_1, v_2."""
    i, log_sigma = 1, 0.15
    rows = np.flatnonzero(data.comparison_study == i)
    H = data.helmert[np.ix_(rows, rows)]
    sig = np.exp(log_sigma)
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)  # weight exp(-x^2/2): N(0, 1) expectations
    weights = weights / np.sqrt(2.0 * np.pi)
    z, v1, v2 = np.meshgrid(nodes, nodes, nodes, indexing="ij")
    w = weights[:, None, None] * weights[None, :, None] * weights[None, None, :]
    theta = np.stack([MU + TAU * z + OMEGA * v1, MU + TAU * z + OMEGA * v2], axis=-1)
    mean = sig * np.einsum("jk,...k->...j", H, theta)
    log_dens = stats.norm.logpdf(data.contrast[rows], mean, sig * data.se_factor[rows]).sum(axis=-1)
    brute = np.log(np.sum(w * np.exp(log_dens)))
    assert _contrast_mvn(data, i, log_sigma, TAU, OMEGA) == pytest.approx(brute, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("i", [0, 1, 2])
def test_integrated_likelihood_equals_scipy_quadrature_over_log_sigma(data, i):
    ours = integrated_log_likelihood(data, np.array([MU]), np.array([TAU]), np.array([OMEGA]))[0, i]

    def integrand(x: float) -> float:
        log_p = _contrast_mvn(data, i, x, TAU, OMEGA) + _log_variances(data, i, x) + stats.norm.logpdf(x)
        return float(np.exp(log_p - ours))

    value, _ = integrate.quad(integrand, -10.0, 10.0, epsabs=1e-13, epsrel=1e-12, limit=200, points=[0.0])
    assert value == pytest.approx(1.0, rel=1e-6)


def test_quadrature_over_log_sigma_has_converged(data):
    """20 and 40 Gauss-Hermite nodes agree over a wide spread of parameter points (incl. conflicting ones)."""
    rng = np.random.default_rng(5)
    mu = rng.normal(0.0, 3.0, 500)
    tau, omega = np.abs(rng.normal(0.0, 2.0, 500)), np.abs(rng.normal(0.0, 1.0, 500))
    coarse = integrated_log_likelihood(data, mu, tau, omega, nodes=20)
    fine = integrated_log_likelihood(data, mu, tau, omega, nodes=40)
    assert np.all(np.isfinite(fine))
    np.testing.assert_allclose(np.exp(coarse - fine), 1.0, rtol=1e-8, atol=0)
    single = integrated_log_likelihood(data, mu, tau, None, nodes=40)  # single-level: omega = 0
    np.testing.assert_allclose(single, integrated_log_likelihood(data, mu, tau, np.zeros(500), nodes=40))


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_tiny_fit_leave_one_out_table():
    tiny, result = tiny_arm_fit()
    table = arm_leave_one_out(result, tiny)
    assert list(table.index) == list(result.studies["study"]) and table.index.name == "study"
    expected = {"n_comparisons", "pareto_k", "reliable", "elpd_i"}
    expected |= {f"{p}_{s}" for p in ("mu", "tau", "omega") for s in ("mean", "q025", "q975", "shift")}
    assert set(table.columns) == expected  # B2021 has two comparisons: omega is in the model
    assert table["n_comparisons"].tolist() == [1, 2, 1]
    numeric = table.drop(columns="reliable").to_numpy(dtype=float)
    assert np.all(np.isfinite(numeric))
    assert np.all(table["mu_q025"] < table["mu_mean"]) and np.all(table["mu_mean"] < table["mu_q975"])
    assert np.all(table["tau_mean"] > 0) and np.all(table["omega_mean"] > 0)
    mu = result.posterior["posterior"]["mu"].to_numpy()  # the library may have retried with more draws
    assert (table["reliable"] == (table["pareto_k"] <= pareto_k_threshold(mu.size))).all()
    np.testing.assert_allclose(table["mu_shift"], table["mu_mean"] - mu.mean())
    with pytest.raises(ValueError, match="arm-level fit"):
        arm_leave_one_out(_without_likelihood(result), tiny)
    influence = influence_analysis(tiny, "BMD", engine="exact")  # the report's carrier of both analyses
    influence.default = table
    out = json.loads(json.dumps(influence.to_dict()))["default_model"]
    assert out["likelihood"] == "arm" and [s["study"] for s in out["studies"]] == STUDIES
    assert out["studies"][1]["mu"]["mean"] == pytest.approx(table.loc["B2021", "mu_mean"])
    assert out["most_influential"]["mu"] == table["mu_shift"].abs().idxmax()
    assert "Default model (arm-level likelihood)" in str(influence)


def _without_likelihood(result):
    import dataclasses

    return dataclasses.replace(result, settings={k: v for k, v in result.settings.items() if k != "likelihood"})


def test_quadrature_converges_for_the_smallest_studies():
    """Two arms of 3 animals (nu = 4, the least normal integrand in log sigma, as on the forced-swim data).

    There, at parameter points in strong conflict with the data, 20 nodes are off by up to 1.6e-6 in
    log p and 32 by 3e-8 (measured against 120; still far below Monte Carlo error), so the default
    rule (40 nodes) is checked against 80.
    """
    small = arm_summaries(
        [0.0, 2.5, 0.0, -1.0, 0.3],
        [1.0, 0.4, 1.0, 2.0, 1.5],
        [3, 3, 3, 3, 4],
        [0, 1, 0, 1, 1],
        [0, 0, 1, 1, 1],
        [0, 0, 1, 1, 1],
        study=["tiny3", "mixed"],
    )
    rng = np.random.default_rng(11)
    mu = rng.normal(0.0, 3.0, 400)
    tau, omega = np.abs(rng.normal(0.0, 2.0, 400)), np.abs(rng.normal(0.0, 1.0, 400))
    default = integrated_log_likelihood(small, mu, tau, omega)
    fine = integrated_log_likelihood(small, mu, tau, omega, nodes=80)
    np.testing.assert_allclose(np.exp(default - fine), 1.0, rtol=1e-8, atol=0)
