"""The PyMC random-effects graph: structure, finite logp/dlogp, and the exact conditional draws of theta."""

from __future__ import annotations

import numpy as np
import pytest

from models.priors import PriorSpec
from models.random_effects import build_random_effects_model, draw_theta, draw_theta_new, typical_within_variance

YI = np.array([0.5, 1.2, -0.1, 0.8])
VI = np.array([0.10, 0.25, 0.15, 0.05])
STUDY = ["a", "b", "c", "d"]


def _model(**kw):
    return build_random_effects_model(
        YI,
        VI,
        study=STUDY,
        tau_prior=PriorSpec.parse("halfnormal:1"),
        beta_priors=[PriorSpec.parse("normal:0:3")],
        **kw,
    )


def test_graph_has_marginal_likelihood_and_no_theta():
    model = _model()
    assert {v.name for v in model.free_RVs} == {"mu", "tau"}
    assert [v.name for v in model.observed_RVs] == ["y"]
    assert "theta" not in model.named_vars  # integrated out: no funnel


def test_logp_and_gradient_finite_and_correct_at_initial_point():
    from scipy import stats

    model = _model()
    point = model.initial_point()
    logp = model.compile_logp(jacobian=False)(point)
    dlogp = model.compile_dlogp()(point)
    assert np.isfinite(logp) and np.all(np.isfinite(dlogp))
    mu, tau = point["mu"], np.exp(point["tau_log__"])
    expected = (
        stats.norm.logpdf(mu, 0, 3)
        + stats.halfnorm.logpdf(tau, scale=1)
        + stats.norm.logpdf(YI, mu, np.sqrt(VI + tau**2)).sum()
    )
    assert logp == pytest.approx(expected, rel=1e-7)  # pytensor rewrites the graph (fused, log-space forms)


def test_meta_regression_design_and_bad_shapes():
    X = np.column_stack([np.ones(4), [0.0, 1.0, 2.0, 3.0]])
    model = build_random_effects_model(
        YI,
        VI,
        study=STUDY,
        tau_prior=PriorSpec.parse("halfnormal:1"),
        beta_priors=[PriorSpec.parse("normal:0:3")] * 2,
        X=X,
        coef_names=["intercept", "dose"],
    )
    assert {v.name for v in model.free_RVs} == {"beta_intercept", "beta_dose", "tau"}
    with pytest.raises(ValueError, match="does not match"):
        build_random_effects_model(
            YI,
            VI,
            study=STUDY,
            tau_prior=PriorSpec.parse("halfnormal:1"),
            beta_priors=[PriorSpec.parse("normal:0:3")],
            X=X,
            coef_names=["intercept", "dose"],
        )
    with pytest.raises(ValueError, match=r"\[0, inf\)"):
        build_random_effects_model(
            YI, VI, study=STUDY, tau_prior=PriorSpec.parse("normal:0:1"), beta_priors=[PriorSpec.parse("normal:0:3")]
        )


def test_draw_theta_matches_exact_conditional():
    rng = np.random.default_rng(7)
    mu, tau = np.full(200_000, 0.4), np.full(200_000, 0.5)
    theta = draw_theta(YI, VI, mu[:, None], tau, rng=rng)
    precision = 1 / VI + 1 / 0.25
    np.testing.assert_allclose(
        theta.mean(0), (YI / VI + 0.4 / 0.25) / precision, atol=5 * np.sqrt(1 / precision / 200_000).max()
    )
    np.testing.assert_allclose(theta.var(0), 1 / precision, rtol=0.02)


def test_draw_theta_limit_tau_zero_and_theta_new():
    rng = np.random.default_rng(3)
    theta = draw_theta(YI, VI, np.full((5, 4), 0.3), np.zeros(5), rng=rng)
    np.testing.assert_allclose(theta, 0.3)
    new = draw_theta_new(np.full(100_000, 1.0), np.full(100_000, 2.0), rng=rng)
    assert new.mean() == pytest.approx(1.0, abs=0.03) and new.std() == pytest.approx(2.0, rel=0.01)


def test_typical_within_variance_higgins_thompson():
    w = 1 / VI
    assert typical_within_variance(VI) == pytest.approx((4 - 1) * w.sum() / (w.sum() ** 2 - (w**2).sum()))
    assert typical_within_variance(np.array([0.3])) == pytest.approx(0.3)
    assert typical_within_variance(np.full(6, 0.2)) == pytest.approx(0.2)
