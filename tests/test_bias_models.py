"""Bias models (models/bias_models.py) and step-function selection (models/selection.py) against
their definitions: the selection likelihood, t-test thresholds, the stick-breaking construction
of the cumulative Dirichlet weights, the quadrature marginal likelihood against simple Monte
Carlo from the prior, and the ensemble's prior model probabilities.

Every check recomputes the quantity from its definition in the test (scipy/numpy/math only),
not through the function under test. Fast (a few seconds in all).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from analysis.cli import EXIT_OK, main
from analysis.config import DEFAULT_DATASET
from analysis.dataset.smd import correction_j
from models.bias_models import BiasData, BiasModel, EnsemblePriors, ensemble
from models.exact.cube import integrate
from models.priors import PriorSpec
from models.selection import (
    normal_thresholds,
    omega_from_increments,
    selection_log_lik,
    stick_breaking,
    t_thresholds,
)

# --- tolerance tables (one per kind of quantity) -------------------------------------------------

# Deterministic identities (the same number computed two ways in float64).
CLOSED_FORM_TOL = {
    # Summed log-likelihoods of <= 5 studies, terms of O(1-10): rounding ~1e-14 per term; any
    # modelling slip (omega of the wrong interval, a missing normalising term) moves the sum by
    # > 1e-2, so 1e-10 separates the two by eight orders of magnitude.
    "log_lik_abs": 1e-10,
    # p-value recovered from a threshold: scipy's t.isf then t.sf round trip plus the Hedges
    # correction round trip, each accurate to ~1e-15 relative; 1e-10 absolute on p in (0, 1).
    "p_value_abs": 1e-10,
    # Prior model probabilities: sums and products of a few dyadic fractions and thirds.
    "prob_abs": 1e-12,
    # omega1 = e1 + ... + eJ with the increments summing to 1 by construction: rounding only.
    "omega_abs": 1e-12,
}

# Monte Carlo comparisons: |estimate - expected| <= se_multiple * MC standard error (+ floor).
MC_TOL = {
    # Seeded draws, so the tests are deterministic; 4 SEs would fail by chance with probability
    # 6e-5 per comparison for an unseeded run.
    "se_multiple": 4.0,
    # Quadrature error of the log evidence of a 4-axis selection model (the default grid versus
    # an 80-node grid: <= 3.5e-4 on the RoBMA fixtures, tests/test_reference_robma.py), doubled
    # and rounded up; the Monte Carlo SE of the log estimate here is ~0.01.
    "log_evidence_floor": 0.005,
}

MU_PRIOR = PriorSpec.parse("normal:0:1")
TAU_PRIOR = PriorSpec.parse("invgamma:1:0.15")


def _normal_logpdf(y: float, mean: float, var: float) -> float:
    return -0.5 * math.log(2.0 * math.pi * var) - 0.5 * (y - mean) ** 2 / var


def _phi_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _direct_log_lik(
    y: np.ndarray, se: np.ndarray, cutpoints: tuple[float, ...], mu: np.ndarray, tau: np.ndarray, omega: np.ndarray
) -> np.ndarray:
    """Selection log-likelihood from its definition, for draws ``mu, tau`` (n,) and ``omega`` (n, J).

    Study i has one-sided p-value ``p_i = 1 - Phi(y_i / s_i)`` in interval j (the first with
    ``p_i <= a_j``); its density is ``N(y_i; mu, s_i^2 + tau^2) omega_j`` over
    ``sum_j omega_j P(y in interval j)``, the intervals being ``s_i z_{1-a_j} <= y < s_i z_{1-a_{j-1}}``.
    """
    a = np.asarray(cutpoints)
    j = np.searchsorted(a, stats.norm.sf(y / se))  # 0-based interval of each study
    edges = np.concatenate([[np.inf], stats.norm.isf(a), [-np.inf]])[None, :] * se[:, None]  # (k, J+1), decreasing
    mu, tau = mu[:, None, None], tau[:, None, None]
    sigma = np.sqrt(se[None, :, None] ** 2 + tau**2)
    cdf = stats.norm.cdf((edges[None] - mu) / sigma)  # (n, k, J+1)
    prob = cdf[..., :-1] - cdf[..., 1:]  # (n, k, J): P(y_i in interval j)
    norm = np.sum(omega[:, None, :] * prob, axis=-1)
    dens = stats.norm.logpdf(y[None, :], mu[..., 0], sigma[..., 0])
    return np.sum(dens + np.log(omega[:, j]) - np.log(norm), axis=-1)


# --- selection likelihood ------------------------------------------------------------------------


def test_selection_log_lik_without_selection_is_normal() -> None:
    rng = np.random.default_rng(1)
    y, se = rng.normal(0.3, 0.3, 6), rng.uniform(0.1, 0.4, 6)
    cuts = (0.025, 0.05, 0.5)
    mu, tau = np.linspace(-0.5, 1.0, 7)[:, None], np.array([0.0, 0.05, 0.3, 1.2])[None, :]
    e = [np.zeros(1)] * len(cuts) + [np.ones(1)]  # omega = 1 in every interval
    got = selection_log_lik(y, se**2, normal_thresholds(se, cuts), mu, tau, e)
    expected = np.sum(stats.norm.logpdf(y, mu[..., None], np.sqrt(se**2 + tau[..., None] ** 2)), axis=-1)
    assert got.shape == (7, 4)
    np.testing.assert_allclose(got, expected, rtol=0.0, atol=CLOSED_FORM_TOL["log_lik_abs"])


@pytest.mark.parametrize(("mu", "tau", "omega2"), [(0.2, 0.1, 0.4), (-0.3, 0.0, 0.05), (0.8, 0.5, 1.0)])
def test_selection_log_lik_two_studies_by_hand(mu: float, tau: float, omega2: float) -> None:
    # J = 2 (cut-point 0.05, z = 1.6449): study 1 significant (z = 2.5), study 2 not (z = 0.5).
    y, se, cut = [0.5, 0.15], [0.2, 0.3], 0.05
    z = stats.norm.isf(cut)
    expected = 0.0
    for yi, si in zip(y, se):
        var = si**2 + tau**2
        c = si * z  # significant iff y >= c
        p_sig = 1.0 - _phi_cdf((c - mu) / math.sqrt(var))
        omega = 1.0 if yi >= c else omega2
        expected += _normal_logpdf(yi, mu, var) + math.log(omega) - math.log(1.0 * p_sig + omega2 * (1.0 - p_sig))
    y_arr, se_arr = np.array(y), np.array(se)
    thresholds = se_arr[:, None] * z
    got = selection_log_lik(y_arr, se_arr**2, thresholds, np.array(mu), np.array(tau), [1.0 - omega2, omega2])
    assert abs(float(got) - expected) <= CLOSED_FORM_TOL["log_lik_abs"], (float(got), expected)


# --- t-test thresholds ---------------------------------------------------------------------------


def test_t_thresholds_give_the_cutpoint_p_value() -> None:
    nt, nc = np.array([3.0, 5.0, 8.0, 12.0, 40.0]), np.array([2.0, 6.0, 8.0, 10.0, 35.0])
    cuts = (0.01, 0.025, 0.05, 0.5)
    g = t_thresholds(nt, nc, cuts)
    assert g.shape == (5, 4)
    for i in range(nt.size):
        df = nt[i] + nc[i] - 2.0
        j_corr = float(correction_j(np.array(df)))  # the dataset's J (analysis.dataset.smd)
        for k, a in enumerate(cuts):
            d = g[i, k] / j_corr  # Hedges' g -> Cohen's d
            t = d / math.sqrt(1.0 / nt[i] + 1.0 / nc[i])
            p = float(stats.t.sf(t, df))
            assert abs(p - a) <= CLOSED_FORM_TOL["p_value_abs"], (i, a, p)


# --- cumulative Dirichlet weights ----------------------------------------------------------------


def test_stick_breaking_weights_are_monotone_with_omega1_one() -> None:
    grid = np.linspace(0.0, 1.0, 11)
    fractions = [grid[:, None, None], grid[None, :, None], grid[None, None, :]]
    e = stick_breaking(fractions)
    omega = np.broadcast_arrays(*omega_from_increments(e))
    np.testing.assert_allclose(omega[0], 1.0, rtol=0.0, atol=CLOSED_FORM_TOL["omega_abs"])
    for hi, lo in zip(omega[:-1], omega[1:]):
        assert np.all(lo <= hi + CLOSED_FORM_TOL["omega_abs"])
    assert np.all(omega[-1] >= 0.0)
    np.testing.assert_allclose(np.broadcast_arrays(*e)[0] + sum(e[1:]), 1.0, atol=CLOSED_FORM_TOL["omega_abs"])


@pytest.mark.parametrize("n_intervals", [2, 3, 4])
def test_stick_breaking_of_beta_fractions_is_dirichlet(n_intervals: int) -> None:
    # v_j ~ Beta(1, J - j), j = 1..J-1, gives (e_1..e_J) ~ Dirichlet(1, ..., 1): E e_j = 1/J and
    # E e_j^2 = 2 / (J (J + 1)).
    n, big_j = 20_000, n_intervals
    rng = np.random.default_rng(20240 + big_j)
    e = np.stack(stick_breaking([rng.beta(1.0, big_j - j, n) for j in range(1, big_j)]))
    for moment, expected in ((1, 1.0 / big_j), (2, 2.0 / (big_j * (big_j + 1)))):
        x = e**moment
        se = x.std(axis=1, ddof=1) / math.sqrt(n)
        assert np.all(np.abs(x.mean(axis=1) - expected) <= MC_TOL["se_multiple"] * se), (moment, x.mean(axis=1))


# --- marginal likelihood: quadrature versus Monte Carlo from the prior ---------------------------


def test_selection_marginal_likelihood_matches_prior_monte_carlo() -> None:
    # k = 5 made-up studies; cut-points (0.025, 0.05): three studies in interval 1 (z = 2.5,
    # 2.48, 2.67), one in interval 2 (z = 1.89), one in interval 3 (z = 0.8).
    y, se = np.array([0.45, 0.34, 0.62, 0.12, 0.80]), np.array([0.18, 0.18, 0.25, 0.15, 0.30])
    cuts = (0.025, 0.05)
    priors = EnsemblePriors(mu=MU_PRIOR, tau=TAU_PRIOR)
    model = BiasModel(True, True, "selection", cuts, 1.0, priors)
    data = BiasData(yi=y, vi=se**2, x=se, thresholds={cuts: normal_thresholds(se, cuts)}, predictor="sei", test="z")
    integral = integrate(lambda c: model.log_density(data, c), model.boxes())

    n = 200_000
    rng = np.random.default_rng(7)
    mu = rng.normal(0.0, 1.0, n)
    tau = 0.15 / rng.standard_exponential(n)  # InvGamma(shape 1, scale 0.15): 1/tau ~ Gamma(1, rate 0.15)
    e = rng.dirichlet(np.ones(len(cuts) + 1), n)
    omega = np.cumsum(e[:, ::-1], axis=1)[:, ::-1]  # omega_j = e_j + ... + e_J
    log_lik = _direct_log_lik(y, se, cuts, mu, tau, omega)
    top = log_lik.max()
    lik = np.exp(log_lik - top)
    estimate = top + math.log(lik.mean())
    se_log = lik.std(ddof=1) / math.sqrt(n) / lik.mean()  # delta method: SE(log m) = SE(m) / m
    tol = MC_TOL["se_multiple"] * se_log + MC_TOL["log_evidence_floor"]
    assert abs(integral.log_evidence - estimate) <= tol, (integral.log_evidence, estimate, se_log)


# --- prior model probabilities -------------------------------------------------------------------


def _priors(**kw) -> EnsemblePriors:
    return EnsemblePriors(mu=MU_PRIOR, tau=TAU_PRIOR, **kw)


def _bias_probs(models: list[BiasModel]) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in models:
        out[m.bias_name] = out.get(m.bias_name, 0.0) + m.prior_prob
    return out


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        # default: none 1/2; the other half selection : PET : PEESE = 2 : 1 : 1, the selection
        # share split equally between the two cut-point sets.
        (
            {},
            {
                "none": 1 / 2,
                "selection(0.025, 0.05)": 1 / 8,
                "selection(0.05, 0.5)": 1 / 8,
                "PET": 1 / 8,
                "PEESE": 1 / 8,
            },
        ),
        # without PET/PEESE the selection models share the half equally.
        (
            {"bias": ("none", "selection")},
            {"none": 1 / 2, "selection(0.025, 0.05)": 1 / 4, "selection(0.05, 0.5)": 1 / 4},
        ),
        # three cut-point sets share the selection quarter.
        (
            {"cutpoint_sets": ((0.025,), (0.025, 0.05), (0.05, 0.5))},
            {
                "none": 1 / 2,
                "selection(0.025)": 1 / 12,
                "selection(0.025, 0.05)": 1 / 12,
                "selection(0.05, 0.5)": 1 / 12,
                "PET": 1 / 8,
                "PEESE": 1 / 8,
            },
        ),
        ({"bias": ("none", "PET", "PEESE")}, {"none": 1 / 2, "PET": 1 / 4, "PEESE": 1 / 4}),
        ({"bias": ("none",)}, {"none": 1.0}),
    ],
    ids=["all", "selection-only", "three-cutpoint-sets", "regression-only", "none-only"],
)
def test_ensemble_prior_probabilities(kw: dict, expected: dict[str, float]) -> None:
    models = ensemble(_priors(**kw))
    tol = CLOSED_FORM_TOL["prob_abs"]
    assert abs(sum(m.prior_prob for m in models) - 1.0) <= tol
    assert len(models) == 4 * len(expected)
    for component in ("effect", "heterogeneity"):
        included = sum(m.prior_prob for m in models if getattr(m, component))
        assert abs(included - 0.5) <= tol, component
    got = _bias_probs(models)
    assert set(got) == set(expected)
    for name, p in expected.items():
        assert abs(got[name] - p) <= tol, (name, got[name], p)
    # components are independent: each model's probability is 1/2 * 1/2 * its bias share
    for m in models:
        assert abs(m.prior_prob - 0.25 * expected[m.bias_name]) <= tol, m.name


def test_cli_bias_averaged_json_interface(tmp_path, capsys):
    """``evmeta fit DATASET --outcome ID --model bias-averaged --json F``: the issue's interface."""
    out = tmp_path / "tbn.json"
    assert (
        main(["fit", str(DEFAULT_DATASET), "--outcome", "Tb_N", "--model", "bias-averaged", "--json", str(out)])
        == EXIT_OK
    )
    assert "model-averaged mu" in capsys.readouterr().out
    fit = json.loads(out.read_text())
    five = {"mean", "sd", "median", "q025", "q975"}
    assert set(fit["mu"]) == five and set(fit["tau"]) == five and fit["model"] == "bias-averaged"
    assert set(fit["inclusion_bf"]) == {"effect", "heterogeneity", "bias"}
    assert all(bf > 0 for bf in fit["inclusion_bf"].values())
    rows = fit["models"]
    assert {"name", "prior_prob", "posterior_prob", "log_marginal_likelihood"} <= set(rows[0])
    assert sum(r["prior_prob"] for r in rows) == pytest.approx(1.0) and sum(
        r["posterior_prob"] for r in rows
    ) == pytest.approx(1.0)
    # the inclusion BF is the posterior odds over the prior odds of the models with bias
    post = sum(r["posterior_prob"] for r in rows if r["bias"] != "none")
    prior = sum(r["prior_prob"] for r in rows if r["bias"] != "none")
    assert fit["inclusion_bf"]["bias"] == pytest.approx(post / (1 - post) / (prior / (1 - prior)), rel=1e-9)
    assert fit["mu"]["q025"] <= fit["mu"]["median"] <= fit["mu"]["q975"]


def test_cli_bias_averaged_all_outcomes_writes_model_tables(tmp_path):
    """``--all --out``: a bias-averaged fit writes its model table, not study effects."""
    out = tmp_path / "out"
    args = ["fit", str(DEFAULT_DATASET), "--all", "--model", "bias-averaged", "--out", str(out)]
    assert main(args) == EXIT_OK
    tables = sorted(p.name for p in (out / "tables").iterdir())
    assert "models_BMD.csv" in tables and not any(t.startswith("studies_") for t in tables)
