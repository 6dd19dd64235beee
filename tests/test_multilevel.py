"""Three-level model (comparisons in studies): layout, padded likelihood, omega rule, result, exact engine.

Fast tests compile only small log-density graphs; the fitting path runs with NUTS replaced by
synthetic posterior draws. Real NUTS fits versus metafor's ``rma.mv`` (REML) and the exact engine
are in ``test_reference_metafor_rma_mv_multilevel.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from pytensor.graph.traversal import ancestors
from scipy import integrate, stats

import analysis.fitting.multilevel as ml
from analysis.dataset.effects import compute_effects
from analysis.dataset.load import load_dataset
from analysis.fitting.sampling import SamplerSettings
from models.exact.multilevel import _arrange, _log_marginal, exact_multilevel_posterior
from models.multilevel import (
    FORMS,
    build_multilevel_model,
    omega_identified,
    study_layout,
    study_theta_moments,
)
from models.multivariate import PAD_VARIANCE
from models.priors import PriorSpec
from tests.tolerances import CLOSED_FORM_LIMIT_ABS, MARGINAL_LOGP_ABS

TAU_PRIOR = PriorSpec.parse("halfnormal:1")
OMEGA_PRIOR = PriorSpec.parse("halfnormal:0.5")
MU_PRIOR = PriorSpec.parse("normal:0:3")
FAKE = SamplerSettings(draws=200, tune=1, chains=2)

#: Hand-built case: studies a (1 comparison), b (3, two sharing a control), c (2 sharing a control),
#: listed out of study order so that the layout has to regroup them.
STUDY = ["b", "a", "b", "c", "b", "c"]
Y = np.array([0.8, -0.2, 1.1, 0.4, 0.3, 0.9])
V = np.diag([0.10, 0.20, 0.15, 0.08, 0.12, 0.09])
V[0, 2] = V[2, 0] = 0.05
V[3, 5] = V[5, 3] = 0.03
X_MOD = np.column_stack([np.ones(6), [-0.5, 0.5, 1.0, -1.0, 0.0, 0.0]])


def _direct_logp(location: np.ndarray, tau: float, omega: float) -> float:
    """Sum over studies of the unpadded MVN(X_i beta, V_i + tau^2 J + omega^2 I) log density."""
    total = 0.0
    for s in dict.fromkeys(STUDY):
        ix = [j for j, t in enumerate(STUDY) if t == s]
        cov = V[np.ix_(ix, ix)] + tau**2 + omega**2 * np.eye(len(ix))
        total += stats.multivariate_normal(location[ix], cov).logpdf(Y[ix])
    return total


def _observed_terms(model, point: dict) -> np.ndarray:
    """Per-study log-likelihood terms of the observed ``y``."""
    values = model.replace_rvs_by_values([model.logp(vars=model.observed_RVs, sum=False)[0]])
    return np.asarray(model.compile_fn(values, inputs=model.value_vars, on_unused_input="ignore")(point)[0])


def _observed_logp(model, point: dict) -> float:
    values = model.replace_rvs_by_values([model.logp(vars=model.observed_RVs)])
    return float(model.compile_fn(values, inputs=model.value_vars, on_unused_input="ignore")(point)[0])


def test_layout_groups_and_pads():
    lay = study_layout(Y, V, STUDY)
    assert lay.study == ["b", "a", "c"] and lay.slots == 3
    np.testing.assert_array_equal(lay.n_comparisons, [3, 1, 2])
    np.testing.assert_array_equal(lay.row, [[0, 2, 4], [1, -1, -1], [3, 5, -1]])
    np.testing.assert_array_equal(lay.reported, lay.row >= 0)
    np.testing.assert_allclose(lay.y[lay.row >= 0], Y[lay.row[lay.row >= 0]])
    assert np.all(lay.y[lay.row < 0] == 0.0)
    np.testing.assert_allclose(lay.V[0], V[np.ix_([0, 2, 4], [0, 2, 4])])
    np.testing.assert_allclose(lay.V[1], np.diag([0.20, PAD_VARIANCE, PAD_VARIANCE]))
    assert lay.V[2, 0, 1] == 0.03 and lay.V[2, 2, 2] == PAD_VARIANCE and lay.V[2, 0, 2] == 0.0


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("with_moderator", [False, True])
def test_padded_logp_equals_unpadded(with_moderator, form):
    """One padded batched likelihood term has exactly the density of the per-study MVNs."""
    X = X_MOD if with_moderator else None
    names = ["intercept", "dose"] if with_moderator else ["mu"]
    lay = study_layout(Y, V, STUDY, X)
    model = build_multilevel_model(
        lay,
        tau_prior=TAU_PRIOR,
        omega_prior=OMEGA_PRIOR,
        beta_priors=[MU_PRIOR] * len(names),
        coef_names=names,
        form=form,
    )
    point = model.initial_point() | {"tau_log__": np.log(0.4), "omega_log__": np.log(0.3)}
    beta = np.array([0.5, -0.3]) if with_moderator else np.array([0.5])
    if with_moderator:
        point |= {"beta_intercept": beta[0], "beta_dose": beta[1]}
    else:
        point["mu"] = beta[0]
    location = (X if with_moderator else np.ones((6, 1))) @ beta
    assert abs(_observed_logp(model, point) - _direct_logp(location, 0.4, 0.3)) <= MARGINAL_LOGP_ABS


@pytest.mark.parametrize("form", FORMS)
def test_graph_size_does_not_depend_on_comparisons_per_study(form):
    """Studies with 2 or 9 comparisons give log-density graphs of the same size (only tensors grow)."""
    rng = np.random.default_rng(4)
    sizes = []
    for per_study in (2, 9):
        study = [f"s{i}" for i in range(5) for _ in range(per_study)]
        lay = study_layout(rng.normal(size=len(study)), np.diag(rng.uniform(0.1, 0.3, len(study))), study)
        model = build_multilevel_model(
            lay, tau_prior=TAU_PRIOR, omega_prior=OMEGA_PRIOR, beta_priors=[MU_PRIOR], form=form
        )
        sizes.append(len(list(ancestors([model.logp()]))))
    assert sizes[0] == sizes[1]


def test_forms_agree_in_log_density_and_gradient_per_study():
    """mvnormal and spectral: same per-study log-likelihood terms and the same gradient."""
    lay = study_layout(Y, V, STUDY, X_MOD)
    models = [
        build_multilevel_model(
            lay,
            tau_prior=TAU_PRIOR,
            omega_prior=OMEGA_PRIOR,
            beta_priors=[MU_PRIOR] * 2,
            coef_names=["intercept", "dose"],
            form=form,
        )
        for form in FORMS
    ]
    point = models[0].initial_point() | {
        "tau_log__": np.log(0.7),
        "omega_log__": np.log(0.2),
        "beta_intercept": 0.4,
        "beta_dose": 0.1,
    }
    terms = [_observed_terms(m, point) for m in models]
    grads = [m.compile_dlogp()(point) for m in models]
    assert terms[0].shape == (3,) and np.max(np.abs(terms[0] - terms[1])) <= MARGINAL_LOGP_ABS
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("form", FORMS)
def test_omega_dropped_when_every_study_has_one_comparison(form):
    study = ["a", "b", "c"]
    assert not omega_identified(study) and omega_identified(STUDY)
    lay = study_layout(Y[:3], np.diag([0.1, 0.2, 0.3]), study)
    assert lay.slots == 1
    model = build_multilevel_model(lay, tau_prior=TAU_PRIOR, omega_prior=None, beta_priors=[MU_PRIOR], form=form)
    assert sorted(v.name for v in model.free_RVs) == ["mu", "tau"]
    point = model.initial_point() | {"mu": 0.2, "tau_log__": np.log(0.5)}
    expected = stats.norm.logpdf(Y[:3], 0.2, np.sqrt(np.array([0.1, 0.2, 0.3]) + 0.25)).sum()
    assert abs(_observed_logp(model, point) - expected) <= MARGINAL_LOGP_ABS
    with pytest.raises(ValueError, match="omega is not identified"):
        build_multilevel_model(lay, tau_prior=TAU_PRIOR, omega_prior=OMEGA_PRIOR, beta_priors=[MU_PRIOR])


def test_layout_and_builder_errors():
    cross = V.copy()
    cross[0, 1] = cross[1, 0] = 0.01  # studies b and a
    with pytest.raises(ValueError, match="different studies"):
        study_layout(Y, cross, STUDY)
    singular = V.copy()
    singular[3, 5] = singular[5, 3] = 0.5
    with pytest.raises(ValueError, match="not symmetric positive definite"):
        study_layout(Y, singular, STUDY)
    with pytest.raises(ValueError, match="finite"):
        study_layout(np.where(np.arange(6) == 2, np.nan, Y), V, STUDY)
    with pytest.raises(ValueError, match=r"need \(n,\) yi"):
        study_layout(Y, V[:5, :5], STUDY)
    lay = study_layout(Y, V, STUDY)
    with pytest.raises(ValueError, match="design has 1 columns"):
        build_multilevel_model(lay, tau_prior=TAU_PRIOR, omega_prior=OMEGA_PRIOR, beta_priors=[MU_PRIOR] * 2)
    with pytest.raises(ValueError, match="omega"):
        build_multilevel_model(
            lay, tau_prior=TAU_PRIOR, omega_prior=PriorSpec.parse("normal:0:1"), beta_priors=[MU_PRIOR]
        )
    with pytest.raises(ValueError, match="form must be one of"):
        build_multilevel_model(
            lay, tau_prior=TAU_PRIOR, omega_prior=OMEGA_PRIOR, beta_priors=[MU_PRIOR], form="cholesky"
        )


def test_study_theta_moments_match_gaussian_conditioning():
    """theta_i | mu, tau, omega, y from the spectral formula equals dense conditioning of (u_i, y_i)."""
    lay = study_layout(Y, V, STUDY)
    mu, tau, omega = 0.3, 0.5, 0.35
    mean, sd = study_theta_moments(lay, np.array([[mu]]), np.array([tau]), np.array([omega]))
    for i, s in enumerate(lay.study):
        ix = [j for j, t in enumerate(STUDY) if t == s]
        cov_y = V[np.ix_(ix, ix)] + tau**2 + omega**2 * np.eye(len(ix))
        gain = np.full(len(ix), tau**2) @ np.linalg.inv(cov_y)
        assert mean[0, i] == pytest.approx(mu + gain @ (Y[ix] - mu), abs=1e-12)
        assert sd[0, i] == pytest.approx(np.sqrt(tau**2 - gain @ np.full(len(ix), tau**2)), abs=1e-12)


def test_exact_log_marginal_matches_numerical_integration():
    """The Sherman-Morrison closed form of p(y | tau, omega) equals integrating mu out numerically."""
    data = _arrange(Y, V, STUDY)
    tau, omega, m0, s0 = 0.4, 0.3, 0.1, 2.0
    logml, mean, sd = _log_marginal(data, np.array([tau]), omega, m0, s0)

    def joint(mu: float) -> float:
        return np.exp(_direct_logp(np.full(6, mu), tau, omega) + stats.norm.logpdf(mu, m0, s0))

    value, _ = integrate.quad(joint, -10, 10, points=[0.5], epsabs=0, epsrel=1e-12)
    first, _ = integrate.quad(lambda m: m * joint(m), -10, 10, points=[0.5], epsabs=0, epsrel=1e-12)
    assert abs(logml[0] - np.log(value)) <= MARGINAL_LOGP_ABS
    assert mean[0] == pytest.approx(first / value, abs=1e-9)


def test_exact_engine_closed_form_limit():
    """tau, omega ~ HalfNormal(1e-4) and a flat mu prior: mu is the GLS mean with the full V."""
    post = exact_multilevel_posterior(
        Y,
        V,
        STUDY,
        mu_prior=PriorSpec.parse("normal:0:1000"),
        tau_prior=PriorSpec.parse("halfnormal:0.0001"),
        omega_prior=PriorSpec.parse("halfnormal:0.0001"),
        panels=8,
    )
    w = np.linalg.solve(V, np.ones(6))
    summary = post.summary("mu")
    assert abs(summary["mean"] - w @ Y / w.sum()) <= CLOSED_FORM_LIMIT_ABS
    assert abs(summary["sd"] - 1.0 / np.sqrt(w.sum())) <= CLOSED_FORM_LIMIT_ABS
    with pytest.raises(ValueError, match="use mu, tau, omega or theta_new"):
        post.summary("theta")


def _fake_posterior(model, sampler: SamplerSettings, seed: int) -> xr.DataTree:
    """Synthetic iid draws of the model's free variables (names and dims as nutpie returns them)."""
    rng = np.random.default_rng(seed)
    n = (sampler.chains, sampler.draws)
    names = {v.name for v in model.free_RVs}
    data = {"tau": np.abs(rng.normal(0.5, 0.1, n))}
    data |= {"mu": rng.normal(1.0, 0.2, n)} if "mu" in names else {}
    data |= {"omega": np.abs(rng.normal(0.3, 0.05, n))} if "omega" in names else {}
    betas = sorted(name for name in names if name.startswith("beta_"))
    posterior = xr.Dataset({k: (("chain", "draw"), v) for k, v in data.items()})
    if betas:
        coef = list(model.coords["coef"])
        draws = np.stack([rng.normal(0.5, 0.1, n) for _ in coef], axis=-1)
        posterior["beta"] = xr.DataArray(draws, dims=("chain", "draw", "coef"), coords={"coef": coef})
    stats_ = xr.Dataset({"diverging": (("chain", "draw"), np.zeros(n, dtype=bool))})
    return xr.DataTree.from_dict({"posterior": posterior, "sample_stats": stats_})


def _quick_fit(dataset, outcome: str, X: np.ndarray | None = None, coef_names: list[str] | None = None):
    captured = {}

    def fake_sampler(model, var_names, *, seed, sampler, progressbar):
        captured["free"] = sorted(v.name for v in model.free_RVs)
        captured["checked"] = list(var_names)
        return _fake_posterior(model, sampler, seed), sampler, False

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ml, "sample_with_retry", fake_sampler)
        result = ml.fit_multilevel(dataset, outcome, X=X, coef_names=coef_names, seed=5, sampler=FAKE)
    return result, captured


@pytest.fixture(scope="module")
def bmsc():
    return load_dataset("data/bmsc_ev_osteoporosis")


def test_fit_result_with_omega(bmsc):
    result, captured = _quick_fit(bmsc, "BMD")
    assert captured["free"] == ["mu", "omega", "tau"] and captured["checked"] == ["mu", "tau", "omega"]
    assert result.model == "random-effects" and result.engine == "nuts"
    assert result.settings["likelihood"] == "normal-multilevel" and result.settings["omega_identified"]
    assert result.settings["structure"] == "multilevel" and result.settings["form"] == "spectral"
    assert result.settings["n_comparisons"] == 17 and result.settings["slots"] == 2
    assert set(result.summaries) == {"mu", "tau", "omega", "theta_new", "I2"}
    assert result.priors == {"mu": "normal:0:3", "tau": "halfnormal:1", "omega": "halfnormal:0.5"}
    assert list(result.studies.columns[:7]) == [
        "study",
        "yi",
        "vi",
        "theta_mean",
        "theta_sd",
        "theta_q025",
        "theta_q975",
    ]
    assert result.k == 9 and result.studies["n_comparisons"].sum() == 17
    assert result.posterior.posterior["theta"].shape == (2, 200, 9)
    # theta_new = mu + tau e1 + omega e2: its variance is var(mu) + E tau^2 + E omega^2
    post = result.posterior.posterior
    expected = float(post["mu"].var() + (post["tau"] ** 2).mean() + (post["omega"] ** 2).mean())
    assert result.summaries["theta_new"]["sd"] ** 2 == pytest.approx(expected, rel=0.15)
    assert 0.0 < result.summaries["I2"]["mean"] < 1.0
    assert result.to_dict()["settings"]["likelihood"] == "normal-multilevel"


def test_fit_without_omega_is_flagged():
    result, captured = _quick_fit(load_dataset("data/normand1999"), "length_of_stay")
    assert captured["free"] == ["mu", "tau"]
    assert result.settings["omega_identified"] is False and result.settings["slots"] == 1
    assert result.settings["structure"] == "single-level"
    assert "omega" not in result.summaries and "omega" not in result.priors


def test_fit_meta_regression_and_errors(bmsc):
    table = compute_effects(bmsc)
    rows, _ = ml.comparison_covariance(table, "BMD")
    dose = rows["comparison"].str.contains("high").to_numpy(dtype=float)
    X = np.column_stack([np.ones(len(rows)), dose - dose.mean()])
    result, captured = _quick_fit(bmsc, "BMD", X, ["intercept", "high"])
    assert captured["free"] == ["beta_high", "beta_intercept", "omega", "tau"]
    assert set(result.settings["beta"]) == {"intercept", "high"}
    with pytest.raises(ValueError, match="first column is ones"):
        _quick_fit(bmsc, "BMD", X[:, ::-1], ["high", "intercept"])
    with pytest.raises(ValueError, match="not declared"):
        _quick_fit(bmsc, "no_such_outcome")


def test_comparison_covariance_keeps_gleser_olkin_blocks(bmsc):
    table = compute_effects(bmsc)
    rows, cov = ml.comparison_covariance(table, "BMD")
    assert len(rows) == 17 and np.allclose(np.diag(cov), rows["vi"])
    groups = sorted(set(rows["cov_group"]) - {""})
    for group in groups:
        names, block = table.covariance[group]
        ix = [int(rows.index[rows["cov_group"].eq(group) & rows["comparison"].eq(n)][0]) for n in names]
        np.testing.assert_allclose(cov[np.ix_(ix, ix)], block)
    pairs = sum(len(n) * (len(n) - 1) for n, _ in (table.covariance[g] for g in groups))
    assert np.count_nonzero(cov - np.diag(np.diag(cov))) == pairs


def test_exact_engine_result(bmsc):
    result = ml.fit_multilevel(bmsc, "BMD", engine="exact")
    assert result.engine == "exact" and result.diagnostics is None and result.settings["structure"] == "multilevel"
    assert set(result.summaries) == {"mu", "tau", "omega", "theta_new", "I2"}
    s = result.summaries
    # theta_new = mu + tau e1 + omega e2: Var = Var(mu) + E tau^2 + E omega^2 (exact moments of the grid)
    expected = s["mu"]["sd"] ** 2 + sum(s[p]["sd"] ** 2 + s[p]["mean"] ** 2 for p in ("tau", "omega"))
    assert s["theta_new"]["sd"] ** 2 == pytest.approx(expected, rel=1e-6)
    assert s["theta_new"]["mean"] == pytest.approx(s["mu"]["mean"], abs=1e-9)
    rows = result.studies
    assert len(rows) == 9 and (rows["theta_q025"] < rows["theta_mean"]).all()
    assert (rows["theta_mean"] < rows["theta_q975"]).all() and 0.5 < result.prob_benefit <= 1.0
    with pytest.raises(ValueError, match="without moderators"):
        ml.fit_multilevel(bmsc, "BMD", engine="exact", X=np.ones((17, 1)))
    with pytest.raises(ValueError, match="engine must be one of"):
        ml.fit_multilevel(bmsc, "BMD", engine="laplace")


def test_exact_engine_without_omega_is_the_random_effects_engine():
    from analysis.fitting.random_effects import fit_random_effects

    dataset = load_dataset("data/normand1999")
    result = ml.fit_multilevel(dataset, "length_of_stay", engine="exact")
    plain = fit_random_effects(dataset, "length_of_stay", engine="exact")
    assert result.settings["omega_identified"] is False and "omega" not in result.summaries
    for p in ("mu", "tau", "theta_new", "I2"):
        assert result.summaries[p] == pytest.approx(plain.summaries[p], abs=1e-12)
    np.testing.assert_allclose(result.studies["theta_mean"], plain.studies["theta_mean"], atol=1e-12)
