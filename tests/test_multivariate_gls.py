"""Closed-form quantities of the marginal multivariate model (models.multivariate_gls) and the diagnostic."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from models.multivariate import correlation_prior_marginals, cs_lower_bound, within_covariance
from models.multivariate_gls import gls_contrast, pointwise_log_lik
from models.priors import PriorSpec

RNG_SEED = 20261202
K = 3
MU = np.array([1.0, 0.8, 0.5])
TAU = np.array([0.4, 0.3, 0.5])
R = np.array([[1.0, 0.6, 0.4], [0.6, 1.0, 0.5], [0.4, 0.5, 1.0]])
SIGMA = TAU[:, None] * R * TAU[None, :]
RHO_W = 0.5
VI = np.array([[0.1, 0.12, 0.15], [0.2, 0.1, 0.1], [0.15, 0.2, 0.1], [0.1, 0.1, 0.2], [0.3, 0.2, 0.1], [0.1, 0.2, 0.2]])
REPORTED = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 1]], dtype=bool)


def _simulate(rng: np.random.Generator) -> np.ndarray:
    theta = MU + rng.standard_normal((len(VI), K)) @ np.linalg.cholesky(SIGMA).T
    chol_s = np.linalg.cholesky(within_covariance(VI, RHO_W))
    y = theta + np.einsum("kab,kb->ka", chol_s, rng.standard_normal((len(VI), K)))
    return np.where(REPORTED, y, np.nan)


def test_pointwise_log_lik_is_the_reported_outcomes_normal_density():
    rng = np.random.default_rng(RNG_SEED)
    yi = _simulate(rng)
    S = within_covariance(VI, RHO_W)
    sigma = np.stack([SIGMA, 2.0 * SIGMA])
    rho_w = np.array([0.3, 0.7])
    got = pointwise_log_lik(yi, S, MU[None, None, :], sigma, rho_w)
    for n in range(2):
        S_n = within_covariance(VI, rho_w[n])
        for i in range(len(VI)):
            o = np.flatnonzero(REPORTED[i])
            cov = sigma[n][np.ix_(o, o)] + S_n[i][np.ix_(o, o)]
            assert got[n, i] == pytest.approx(stats.multivariate_normal(MU[o], cov).logpdf(yi[i, o]), rel=1e-10)
    fixed = pointwise_log_lik(yi, S, MU[None, None, :], sigma[:1], None)
    S_fix = within_covariance(VI, RHO_W)
    o = np.flatnonzero(REPORTED[1])
    cov = SIGMA[np.ix_(o, o)] + S_fix[1][np.ix_(o, o)]
    assert fixed[0, 1] == pytest.approx(stats.multivariate_normal(MU[o], cov).logpdf(yi[1, o]), rel=1e-10)


def test_gls_contrast_against_direct_gls_and_univariate_weighted_mean():
    rng = np.random.default_rng(RNG_SEED + 1)
    yi = _simulate(rng)
    S = within_covariance(VI, RHO_W)
    c = gls_contrast(yi, S, SIGMA[None], None, prior_mean=0.0, prior_sd=3.0)
    # direct stacked GLS with the N(0, 9) prior as extra observations
    rows, design, cov_blocks = [], [], []
    for i in range(len(VI)):
        o = np.flatnonzero(REPORTED[i])
        rows.append(yi[i, o])
        design.append(np.eye(K)[o])
        cov_blocks.append(SIGMA[np.ix_(o, o)] + S[i][np.ix_(o, o)])
    y = np.concatenate(rows + [np.zeros(K)])
    X = np.vstack(design + [np.eye(K)])
    sizes = [b.shape[0] for b in cov_blocks] + [K]
    V = np.zeros((sum(sizes), sum(sizes)))
    at = 0
    for b in cov_blocks + [9.0 * np.eye(K)]:
        V[at : at + b.shape[0], at : at + b.shape[0]] = b
        at += b.shape[0]
    P = np.linalg.inv(V)
    cov_mu = np.linalg.inv(X.T @ P @ X)
    np.testing.assert_allclose(c.mv_mean[0], cov_mu @ X.T @ P @ y, rtol=1e-10)
    np.testing.assert_allclose(c.mv_var[0], np.diag(cov_mu), rtol=1e-10)
    for j in range(K):
        seen = REPORTED[:, j]
        w = 1.0 / (TAU[j] ** 2 + VI[seen, j])
        assert c.uv_mean[0, j] == pytest.approx((w * yi[seen, j]).sum() / (w.sum() + 1 / 9.0), rel=1e-10)
        assert c.uv_var[0, j] == pytest.approx(1.0 / (w.sum() + 1 / 9.0), rel=1e-10)
    assert np.all(c.mv_var <= c.uv_var)


def test_contrast_variance_under_ignorable_missingness_is_the_hausman_difference():
    """Over repeated data sets with known Σ and MCAR missingness, Var(d) = V_UV - V_MV and E[d] = 0.

    Also for the outcome every study reports: the multivariate estimate still uses the other
    outcomes' residuals, so the contrast is not zero there either.
    """
    rng = np.random.default_rng(RNG_SEED + 2)
    S = within_covariance(VI, RHO_W)
    draws = np.array(
        [
            gls_contrast(_simulate(rng), S, SIGMA[None], None, prior_mean=0.0, prior_sd=1e3).difference[0]
            for _ in range(2000)
        ]
    )
    c = gls_contrast(_simulate(rng), S, SIGMA[None], None, prior_mean=0.0, prior_sd=1e3)
    expected_sd = c.null_sd[0]
    # SE of a sample SD over 2000 draws is 1.6%: 5% is three of them
    np.testing.assert_allclose(draws.std(axis=0), expected_sd, rtol=0.05)
    assert np.all(np.abs(draws.mean(axis=0)) < 4 * expected_sd / np.sqrt(len(draws)))


def test_contrast_is_negative_when_the_missing_studies_are_the_worse_ones():
    rng = np.random.default_rng(RNG_SEED + 3)
    S = within_covariance(VI, RHO_W)
    zs = []
    for _ in range(300):
        theta = rng.multivariate_normal(MU, SIGMA, size=len(VI))
        y = np.array([rng.multivariate_normal(t, s) for t, s in zip(theta, S, strict=True)])
        seen = y / np.sqrt(VI) > 1.96
        seen[:, 0] = True
        if seen[:, 1:].sum(axis=0).min() < 2:
            continue
        c = gls_contrast(np.where(seen, y, np.nan), S, SIGMA[None], None, prior_mean=0.0, prior_sd=1e3)
        zs.append(np.where(~seen.all(axis=0), c.difference[0] / np.maximum(c.null_sd[0], 1e-12), np.nan)[1:])
    assert np.nanmean(np.array(zs)) < -0.5


def test_correlation_prior_marginals_match_lkj_and_cs_priors():
    import pymc as pm

    ids = ["a", "b", "c", "d"]
    m = correlation_prior_marginals("unstructured", ids, 2.0, PriorSpec.parse("beta:2:2"))
    assert set(m) == {"rho[a~b]", "rho[a~c]", "rho[a~d]", "rho[b~c]", "rho[b~d]", "rho[c~d]", "rho_within"}
    a, b, loc, scale = m["rho[a~b]"]
    assert (a, b, loc, scale) == (3.0, 3.0, -1.0, 2.0)
    chol = pm.draw(pm.LKJCorr.dist(n=4, eta=2.0), draws=4000, random_seed=RNG_SEED)
    corr = chol @ np.swapaxes(chol, -1, -2)
    r01 = corr[:, 0, 1]
    assert stats.kstest(r01, stats.beta(a, b, loc=loc, scale=scale).cdf).pvalue > 0.001
    cs = correlation_prior_marginals("cs", ids, 2.0, None)
    assert cs == {"rho_shared": (2.0, 2.0, cs_lower_bound(4), 1.0 - cs_lower_bound(4))}
    assert correlation_prior_marginals("independent", ids, 2.0, PriorSpec.parse("uniform:0.2:0.9")) == {
        "rho_within": (1.0, 1.0, 0.2, pytest.approx(0.7))
    }
    # with two outcomes compound symmetry is the LKJ(eta) prior of the single correlation
    two = correlation_prior_marginals("unstructured", ["a", "b"], 2.0, None)["rho[a~b]"]
    assert two == correlation_prior_marginals("cs", ["a", "b"], 2.0, None)["rho_shared"]
