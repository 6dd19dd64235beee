"""Multivariate model: graph, marginal likelihood vs scipy, orientation, missingness, inputs, result, plots.

Fast tests compile only small log-density graphs. The result, report and plot checks use the full
fitting code with NUTS replaced by synthetic posterior draws (compiling and sampling this model
takes 15-30 s); the ρ_w sensitivity table is checked for shape with the fit stubbed. Real NUTS
fits (convergence gates, metafor and simulation recovery) are in ``test_slow_multivariate.py``
and ``test_reference_metafor_rma_mv.py``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.figure import Figure
from pytensor.graph.traversal import ancestors
from scipy import stats

import analysis.fitting.multivariate as mv
from analysis.config import DEFAULT_DATASET
from analysis.dataset.effects import compute_effects, study_effects
from analysis.dataset.load import load_dataset
from analysis.fitting.multivariate_data import (
    DEFAULT_OUTCOMES,
    multivariate_data_from_dataset,
    multivariate_data_from_effects,
)
from analysis.fitting.multivariate_structures import compare_structures
from analysis.fitting.nuts import model_fingerprint
from analysis.fitting.sampling import SamplerSettings
from analysis.plots.multivariate import borrowing_plot, correlation_heatmap, prior_posterior_plot, reporting_bias_plot
from analysis.report.markdown import multivariate_section
from analysis.results.multivariate import SUMMARY_COLUMNS
from analysis.studies.benchmark import run_measured
from models.multivariate import (
    build_multivariate_model,
    correlation_matrix,
    draw_theta,
    marginal_logpdf,
    missingness_groups,
    outcome_pairs,
    pad_missing,
    within_covariance,
)
from models.priors import PriorSet
from tests.helpers import write_dataset
from tests.tolerances import EFFECT_SIZE_ABS, MARGINAL_LOGP_ABS, MCSE_MULTIPLE

FAKE = SamplerSettings(draws=250, tune=1, chains=2)
BERKEY = """trial,outcome,yi,v1i,v2i
1,PD,0.47,0.0075,0.003
1,AL,-0.32,0.003,0.0077
2,PD,0.2,0.0057,0.0009
2,AL,-0.6,0.0009,0.0008
"""
#: Hand-built case: 4 studies x 3 outcomes; study 1 misses outcome C, study 3 reports only B.
Y_HAND = np.array([[0.5, 0.2, -0.1], [0.9, 0.4, np.nan], [0.1, np.nan, 0.3], [np.nan, 0.7, np.nan]])
V_HAND = np.array([[0.04, 0.05, 0.06], [0.03, 0.02, np.nan], [0.05, np.nan, 0.08], [np.nan, 0.09, np.nan]])


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(DEFAULT_DATASET)


@pytest.fixture(scope="module")
def data(dataset):
    return multivariate_data_from_dataset(dataset)


def _fake_posterior(data, sampler: SamplerSettings, seed: int) -> xr.DataTree:
    """Synthetic iid 'posterior' draws with the variables and dims of the model's trace."""
    rng = np.random.default_rng(seed)
    n, K, ids = (sampler.chains, sampler.draws), len(data.outcome_ids), data.outcome_ids
    w = rng.standard_normal((*n, K, 2 * K)) + 1.0
    cov = w @ np.swapaxes(w, -1, -2)
    sd = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    R = cov / (sd[..., :, None] * sd[..., None, :])
    upper = np.triu_indices(K, 1)
    posterior = xr.Dataset(
        {
            "mu": (("chain", "draw", "outcome"), 1.2 + 0.2 * rng.standard_normal((*n, K))),
            "tau": (("chain", "draw", "outcome"), np.abs(0.4 * rng.standard_normal((*n, K)))),
            "R": (("chain", "draw", "outcome", "outcome_bis"), R),
            "rho": (("chain", "draw", "pair"), R[..., upper[0], upper[1]]),
            "rho_within": (("chain", "draw"), rng.beta(2.0, 2.0, n)),
        },
        coords={"outcome": ids, "outcome_bis": ids, "pair": outcome_pairs(ids)},
    )
    stats_ = xr.Dataset({"diverging": (("chain", "draw"), np.zeros(n, dtype=bool))})
    return xr.DataTree.from_dict({"posterior": posterior, "sample_stats": stats_})


@pytest.fixture(scope="module")
def quick_fit(dataset):
    """fit_multivariate end to end, with NUTS replaced by synthetic draws (no compilation)."""
    with pytest.MonkeyPatch.context() as patch:
        captured = {}

        def fake_sampler(model, var_names, *, seed, sampler, progressbar):
            captured["free"] = sorted(v.name for v in model.free_RVs)
            data = multivariate_data_from_dataset(dataset)
            return _fake_posterior(data, sampler, seed), sampler, False

        patch.setattr(mv, "sample_with_retry", fake_sampler)
        result = mv.fit_multivariate(dataset, seed=3, sampler=FAKE)
    assert captured["free"] == ["chol_R", "mu", "rho_within", "tau"]
    return result


def test_missingness_groups():
    groups = missingness_groups(Y_HAND)
    assert [(o.tolist(), r.tolist()) for o, r in groups] == [([0, 1, 2], [0]), ([0, 1], [1]), ([0, 2], [2]), ([1], [3])]
    with pytest.raises(ValueError, match="report none"):
        missingness_groups(np.array([[1.0, np.nan], [np.nan, np.nan]]))


def test_default_dataset_groups_and_orientation(dataset, data):
    assert data.outcome_ids == list(DEFAULT_OUTCOMES) and len(data.study) == 10
    patterns = {tuple(o.tolist()): r.size for o, r in missingness_groups(data.yi)}
    assert patterns == {(0, 2, 3): 2, (0, 1, 2, 3): 6, (0,): 2}  # F2021, I2023: BV_TV only
    table = compute_effects(dataset)
    j = data.outcome_ids.index("Tb_Sp")
    natural = study_effects(table, "Tb_Sp").set_index("study")["yi"]
    rows = [data.study.index(s) for s in natural.index]
    np.testing.assert_allclose(data.yi[rows, j], -natural.to_numpy(), atol=EFFECT_SIZE_ABS)
    assert (data.yi[rows, j] > 0).all()  # Tb.Sp falls with treatment: positive on the benefit scale
    # the assumed rho_w = 0.5 is on the benefit scale: S off-diagonals positive, including Tb_Sp
    full = data.reported.all(axis=1)
    assert (data.S[full][:, j, 0] > 0).all()


def test_known_within_cov_is_oriented(dataset):
    table = compute_effects(dataset)
    base = multivariate_data_from_dataset(dataset, outcomes=["BV_TV", "Tb_Sp"], table=table)
    vi = base.vi[0]
    cov = np.array([[vi[0], -0.4 * np.sqrt(vi[0] * vi[1])], [-0.4 * np.sqrt(vi[0] * vi[1]), vi[1]]])  # natural scale
    given = multivariate_data_from_dataset(
        dataset, outcomes=["BV_TV", "Tb_Sp"], table=table, within_cov={base.study[0]: cov}
    )
    assert given.S[0, 0, 1] == pytest.approx(0.4 * np.sqrt(vi[0] * vi[1]))
    with pytest.raises(ValueError, match="diagonal"):
        multivariate_data_from_dataset(
            dataset, outcomes=["BV_TV", "Tb_Sp"], table=table, within_cov={base.study[0]: 2 * cov}
        )


def test_tiny_dataset_sign_flip(tmp_path):
    tiny = load_dataset(write_dataset(tmp_path))
    data = multivariate_data_from_dataset(tiny, outcomes=["BMD", "Tb_Sp"])
    g = study_effects(compute_effects(tiny), "Tb_Sp")["yi"].iloc[0]
    assert g < 0 and data.yi[0, 1] == pytest.approx(-g)
    assert np.isnan(data.yi[1:, 1]).all() and not np.isnan(data.yi[:, 0]).any()


def test_berkey_loader_builds_known_covariances():
    data = multivariate_data_from_effects(pd.read_csv(pd.io.common.StringIO(BERKEY)), cov_columns=("v1i", "v2i"))
    assert data.outcome_ids == ["AL", "PD"] and data.study == ("1", "2")
    np.testing.assert_array_equal(data.yi, [[-0.32, 0.47], [-0.6, 0.2]])
    np.testing.assert_array_equal(data.S[0], [[0.0077, 0.003], [0.003, 0.0075]])
    flipped = multivariate_data_from_effects(
        pd.read_csv(pd.io.common.StringIO(BERKEY)), cov_columns=("v1i", "v2i"), directions={"AL": -1}
    )
    np.testing.assert_array_equal(flipped.yi[:, 0], [0.32, 0.6])
    assert flipped.S[0, 0, 1] == pytest.approx(-0.003) and flipped.S[0, 0, 0] == pytest.approx(0.0077)


def test_within_covariance_and_validation():
    S = within_covariance(V_HAND, 0.5)
    assert S[0, 0, 1] == pytest.approx(0.5 * np.sqrt(0.04 * 0.05)) and np.isnan(S[1, 2, 0])
    with pytest.raises(ValueError, match="scalar"):
        correlation_matrix(-0.6, 3)  # below -1/(K-1)
    with pytest.raises(ValueError, match="positive definite"):
        correlation_matrix(np.array([[1, 0.9, -0.9], [0.9, 1, 0.9], [-0.9, 0.9, 1]]), 3)


def _at_point(model, outputs, point):
    """Evaluate model quantities at ``point`` (random variables replaced by their values)."""
    values = model.replace_rvs_by_values(outputs)
    return model.compile_fn(values, inputs=model.value_vars, on_unused_input="ignore")(point)


def _point(model, mu, tau, z):
    point = model.initial_point()
    point.update(
        {"mu": np.asarray(mu, float), "tau_log__": np.log(tau), "chol_R_cholesky_corr__": np.asarray(z, float)}
    )
    return point


@pytest.mark.parametrize("with_moderator", [False, True])
def test_marginal_logp_equals_scipy(with_moderator):
    S = within_covariance(V_HAND, np.array([[1, 0.3, 0.5], [0.3, 1, 0.2], [0.5, 0.2, 1]]))
    X = np.array([[-1.5], [-0.5], [0.5], [1.5]]) if with_moderator else None
    model = build_multivariate_model(Y_HAND, S, study=list("abcd"), outcome=list("ABC"), X=X, coef_names=["x"])
    point = _point(model, [0.3, 0.1, -0.2], np.array([0.4, 0.6, 0.3]), [0.4, -0.3, 0.8])
    beta = np.array([[0.2, -0.1, 0.05]])
    if with_moderator:
        point["beta"] = beta
    R, tau, got = _at_point(model, [model["R"], model["tau"], model.logp(vars=model.observed_RVs)], point)
    np.testing.assert_allclose(tau, [0.4, 0.6, 0.3])
    assert np.all(np.linalg.eigvalsh(R) > 0) and not np.allclose(R, np.eye(3))
    sigma = tau[:, None] * R * tau[None, :]
    expected = 0.0
    for i in range(4):
        obs = np.flatnonzero(~np.isnan(Y_HAND[i]))
        loc = point["mu"] + (X[i] @ beta if with_moderator else 0.0)
        expected += marginal_logpdf(Y_HAND[i, obs], loc, sigma, S[i][np.ix_(obs, obs)], obs)
        if obs.size == 1:  # the single-outcome study is a univariate normal
            assert marginal_logpdf(Y_HAND[i, obs], loc, sigma, S[i][np.ix_(obs, obs)], obs) == pytest.approx(
                stats.norm.logpdf(Y_HAND[i, obs[0]], loc[obs[0]], np.sqrt(sigma[obs[0], obs[0]] + V_HAND[i, obs[0]]))
            )
    assert abs(got - expected) <= MARGINAL_LOGP_ABS


def test_graph_builds_with_finite_logp_and_dlogp(data):
    model = build_multivariate_model(data.yi, data.S, study=data.study, outcome=data.outcome_ids)
    assert {"mu", "tau", "chol_R"} <= {v.name for v in model.free_RVs}
    assert [v.name for v in model.observed_RVs] == ["y"]
    point = model.initial_point()
    logp, dlogp = model.logp_dlogp_function(ravel_inputs=True)(np.concatenate([np.ravel(v) for v in point.values()]))
    assert np.isfinite(logp) and dlogp.shape == (4 + 4 + 6,) and np.all(np.isfinite(dlogp)) and np.any(dlogp != 0)


def test_padding_leaves_each_study_density_unchanged():
    """pad_missing: a padded study's normal density over all K outcomes equals that of its reported ones."""
    S = within_covariance(V_HAND, 0.4)
    loc = np.array([0.3, 0.1, -0.2])
    sigma = np.array([[0.25, 0.1, 0.12], [0.1, 0.16, 0.05], [0.12, 0.05, 0.36]])
    reported, y, s_pad = pad_missing(Y_HAND, S)
    assert np.isfinite(y).all() and np.isfinite(s_pad).all()
    for i in range(len(Y_HAND)):
        obs = np.flatnonzero(reported[i])
        cov = sigma * np.outer(reported[i], reported[i]) + s_pad[i]
        padded = stats.multivariate_normal(reported[i] * loc, cov).logpdf(y[i])
        assert (
            abs(padded - marginal_logpdf(Y_HAND[i, obs], loc, sigma, S[i][np.ix_(obs, obs)], obs)) <= MARGINAL_LOGP_ABS
        )


@pytest.mark.parametrize("parameterisation", ["marginal", "noncentred"])
def test_graph_size_does_not_grow_with_missingness_patterns(dataset, parameterisation):
    """One likelihood term for any missingness: 4 outcomes (3 patterns) and all 7 (8 patterns) give equal-sized graphs.

    One ``MvNormal`` per pattern made compiling all 7 outcomes exhaust memory (module docstring).
    """
    sizes = {}
    for outcomes in (None, "all"):
        d = multivariate_data_from_dataset(dataset, outcomes=outcomes)
        model = build_multivariate_model(
            d.yi, d.S, study=d.study, outcome=d.outcome_ids, parameterisation=parameterisation
        )
        assert [v.name for v in model.observed_RVs] == ["y"]
        sizes[len(missingness_groups(d.yi))] = len(list(ancestors([model.logp()])))
    assert list(sizes) == [3, 8] and sizes[3] == sizes[8], sizes


def test_one_compiled_model_serves_every_rho_within(dataset):
    """The padded within-study covariances are data (``S``): the rho_w grid shares one model structure."""
    prints = set()
    for rho_w in (0.0, 0.8):
        d = multivariate_data_from_dataset(dataset, outcomes="all", rho_within=rho_w)
        prints.add(model_fingerprint(build_multivariate_model(d.yi, d.S, study=d.study, outcome=d.outcome_ids)))
    assert len(prints) == 1


def test_run_measured_reports_the_childs_own_peak_memory():
    """The benchmark's child-process measurement (used for the all-outcome fit) sees the child's memory only."""
    child = run_measured([sys.executable, "-c", "b = b'x' * (200 * 2**20)"])
    assert child["exit_code"] == 0 and not child["timed_out"]
    assert 200 <= child["peak_rss_mib"] < 400, child


@pytest.mark.parametrize(("parameterisation", "lkj"), [("noncentred", "corr"), ("marginal", "cholesky_cov")])
def test_alternative_graphs_build(data, parameterisation, lkj):
    model = build_multivariate_model(
        data.yi, data.S, study=data.study, outcome=data.outcome_ids, parameterisation=parameterisation, lkj=lkj
    )
    assert all(np.isfinite(v) for v in model.point_logps().values())
    with pytest.raises(ValueError, match="parameterisation"):
        build_multivariate_model(
            data.yi, data.S, study=data.study, outcome=data.outcome_ids, parameterisation="centred"
        )


def test_conditional_theta_draws_match_gaussian_conditioning():
    """θ_i | y: Monte Carlo moments against conditioning the joint normal of (θ_i, y_i,obs) directly."""
    n, yi = 40000, Y_HAND[1:2]
    S = within_covariance(V_HAND[1:2], 0.4)
    mu = np.array([0.2, 0.1, 0.3])
    sigma = np.array([[0.25, 0.1, 0.12], [0.1, 0.16, 0.05], [0.12, 0.05, 0.36]])
    theta = draw_theta(
        yi, S, np.broadcast_to(mu, (n, 1, 3)), np.broadcast_to(sigma, (n, 3, 3)), rng=np.random.default_rng(5)
    )[:, 0]
    obs = [0, 1]
    prec = np.linalg.inv(sigma)
    prec[np.ix_(obs, obs)] += np.linalg.inv(S[0][np.ix_(obs, obs)])
    cov = np.linalg.inv(prec)
    rhs = np.linalg.solve(sigma, mu)
    rhs[obs] += np.linalg.solve(S[0][np.ix_(obs, obs)], yi[0, obs])
    mean = cov @ rhs
    se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(theta.mean(axis=0) - mean) <= MCSE_MULTIPLE * se)
    np.testing.assert_allclose(np.cov(theta.T), cov, atol=MCSE_MULTIPLE * np.sqrt(2.0 / n) * cov.max())


def test_univariate_reference_is_fit_random_effects_oriented(dataset, data):
    table = compute_effects(dataset)
    from_fit = mv.univariate_from_dataset(dataset, table, data, PriorSet())
    from_exact = mv._univariate_exact(data, PriorSet())
    pd.testing.assert_frame_equal(from_fit.astype(float), from_exact.astype(float), atol=1e-9, rtol=0)
    assert from_fit.loc["Tb_Sp", "mean"] > 0


def test_rho_within_sensitivity_shape(dataset, monkeypatch):
    def stub(data, **_):
        frame = pd.DataFrame(
            {c: data.rho_within for c in ("mean", "sd", "median", "q025", "q975")}, index=data.outcome_ids
        )
        pairs = pd.DataFrame({c: 0.0 for c in ("mean", "sd", "median", "q025", "q975")}, index=["a~b", "a~c"])
        return SimpleNamespace(mu=frame, tau=frame, rho=pairs, converged=True)

    monkeypatch.setattr(mv, "fit_multivariate_data", stub)
    table = mv.rho_within_sensitivity(dataset, outcomes=["BV_TV", "Tb_N", "Tb_Sp"])
    assert len(table) == len(mv.RHO_WITHIN_GRID) * (3 + 3 + 2)
    assert list(table.columns) == [
        "rho_within",
        "parameter",
        "outcome",
        "mean",
        "sd",
        "median",
        "q025",
        "q975",
        "converged",
        "method",
        "pareto_k",
        "ess",
    ]
    assert set(table["method"]) == {"refit"}  # no fit given: nothing to reweight
    assert table.groupby("rho_within")["mean"].first().index.tolist() == list(mv.RHO_WITHIN_GRID)
    mu = table[table["parameter"] == "mu"]
    np.testing.assert_allclose(mu["mean"], mu["rho_within"])


def test_quick_fit_result(quick_fit):
    r = quick_fit
    assert r.diagnostics.divergences == 0 and r.settings["draws"] == FAKE.draws
    theta = r.posterior.posterior["theta"]
    assert theta.dims == ("chain", "draw", "study", "outcome") and np.isfinite(theta).all()
    reported = r.theta[r.theta["reported"]]
    assert (reported["yi"].notna()).all() and r.predictions["yi"].isna().all()
    assert list(r.mu.index) == list(DEFAULT_OUTCOMES) and r.rho.index[0] == "BV_TV~Tb_N"
    assert len(r.predictions) == int((~r.reported).sum()) == 8
    assert set(r.predictions["study"]) == {"SimStudyA2019", "SimStudyF2021", "SimStudyG2022", "SimStudyI2023"}
    np.testing.assert_allclose(np.diag(r.R_mean), 1.0)
    assert (r.borrowing["width_ratio"] > 0).all() and r.borrowing.loc["Tb_N", "k"] == 6
    out = json.loads(json.dumps(r.to_dict()))
    draws = r.posterior.posterior["rho_within"].to_numpy().ravel()
    assert out["rho_within"]["mean"] == pytest.approx(draws.mean())
    assert out["rho_within"]["q025"] == pytest.approx(np.quantile(draws, 0.025))
    assert out["priors"] == {"mu": "normal:0:3", "tau": "halfnormal:1", "R": "lkj:2", "rho_within": "beta:2:2"}
    assert set(out["mu"]["Tb_Sp"]) == {"mean", "sd", "median", "q025", "q975"} and len(out["R"]["pairs"]) == 6
    assert {"r_hat_max", "ess_bulk_min", "divergences"} <= set(out["diagnostics"])
    assert [b["outcome"] for b in out["reporting_bias"]] == ["Tb_N", "Tb_Sp", "Tb_Th"]
    tbn = out["reporting_bias"][0]
    assert sorted(tbn["missing_studies"]) == ["SimStudyA2019", "SimStudyF2021", "SimStudyG2022", "SimStudyI2023"]
    assert tbn["difference"]["q025"] <= tbn["difference"]["mean"] <= tbn["difference"]["q975"]
    text = str(r)
    assert "SIMULATED" in text and "rho_w ~ beta:2:2" in text and "eti95" in text and "sign flipped for Tb_Sp" in text


def test_plots(quick_fit):
    heat, borrow = correlation_heatmap(quick_fit), borrowing_plot(quick_fit)
    assert isinstance(heat, Figure) and isinstance(borrow, Figure)
    cells = heat.findobj(lambda a: a.get_gid() == "cell_text")
    assert len(cells) == 16
    row = quick_fit.rho.loc["BV_TV~Tb_N"]
    assert f"[{row['q025']:.2f}, {row['q975']:.2f}]" in cells[1].get_text()
    for fig in (heat, borrow):
        assert fig.findobj(lambda a: a.get_gid() == "simulated_marker")
    assert len(borrow.findobj(lambda a: a.get_gid() == "width_ratio")) == 4


def _shifted(fit, shift: float | np.ndarray):
    """A copy of ``fit`` whose pointwise log likelihood is lower by ``shift`` (per study) in every draw."""
    tree = fit.posterior.copy()
    log_lik = tree["log_likelihood"].to_dataset()
    tree["log_likelihood"] = log_lik - xr.DataArray(np.broadcast_to(shift, log_lik.sizes["study"]), dims="study")
    return dataclasses.replace(fit, posterior=tree, structure_comparison=None)


def test_structure_comparison_by_psis_loo(quick_fit):
    fits = {"unstructured": _shifted(quick_fit, 0.5), "cs": quick_fit, "independent": _shifted(quick_fit, 1.0)}
    table = compare_structures(fits)
    assert list(table.index) == ["cs", "unstructured", "independent"] and table["selected"].tolist() == [
        True,
        False,
        False,
    ]
    k = quick_fit.k
    # a constant shift of every study's log likelihood moves each elpd_i by exactly that much
    np.testing.assert_allclose(table["elpd_diff"], [0.0, 0.5 * k, 1.0 * k], atol=1e-9)
    np.testing.assert_allclose(table["se_diff"], 0.0, atol=1e-9)
    np.testing.assert_allclose(table["pareto_k_max"], table["pareto_k_max"].iloc[0])
    assert table.loc["cs", "elpd_loo"] - table.loc["independent", "elpd_loo"] == pytest.approx(1.0 * k)


def test_prior_posterior_table_and_figures(quick_fit):
    table = quick_fit.prior_posterior
    assert list(table.index) == [f"rho[{p}]" for p in quick_fit.rho.index] + ["rho_within"]
    row = table.loc["rho_within"]
    assert (row["prior_mean"], row["prior_sd"]) == pytest.approx((0.5, np.sqrt(1 / 20)))
    draws = quick_fit.posterior.posterior["rho_within"].to_numpy().ravel()
    assert row["contraction"] == pytest.approx(1 - draws.std(ddof=1) ** 2 / (1 / 20), rel=1e-6)
    pair = table.loc["rho[BV_TV~Tb_N]"]
    assert (pair["prior_a"], pair["prior_loc"], pair["prior_scale"]) == (3.0, -1.0, 2.0)  # LKJ(2), K = 4
    fig = prior_posterior_plot(quick_fit)
    assert len(fig.findobj(lambda a: a.get_gid() == "prior")) == len(table)
    assert fig.findobj(lambda a: a.get_gid() == "posterior")
    fig = reporting_bias_plot(quick_fit)
    assert len(fig.findobj(lambda a: a.get_gid() == "null_band")) == len(quick_fit.reporting_bias) == 3


def test_multivariate_report_section(quick_fit):
    # cs loses 0.1 in total but gains or loses 0.5 per study: well within two SEs of the difference
    fits = {"unstructured": quick_fit, "cs": _shifted(quick_fit, 0.01 + 0.5 * (-1.0) ** np.arange(quick_fit.k))}
    every = pd.concat([quick_fit.prior_posterior.assign(structure=s) for s in fits])
    result = dataclasses.replace(
        quick_fit, structure_comparison=compare_structures(fits), prior_posterior_by_structure=every
    )
    sensitivity = pd.DataFrame({"rho_within": [0.0, 0.3], "parameter": ["mu", "mu"], "mean": [1.0, 1.1]})
    text = "\n".join(multivariate_section(result, sensitivity, "CALIBRATION SENTENCE."))
    assert "**unstructured** is used below; the data do not distinguish it from cs" in text
    assert "Within-study correlation ρ_w" in text and "beta:2:2" in text and "contraction" in text
    assert "CALIBRATION SENTENCE." in text and "| Tb_N | 6 | 4 |" in text
    assert "multivariate_prior_posterior" in text and "multivariate_reporting_bias" in text
    assert "of every structure compared" in text and text.count("| rho_within | cs |") == 1
    out = json.loads(json.dumps(result.to_dict()))
    assert len(out["prior_posterior_by_structure"]) == len(every)


def test_default_outcomes_of_datasets_without_the_microarchitecture_set(dataset):
    from analysis.fitting.multivariate_data import default_outcomes

    assert default_outcomes(dataset, compute_effects(dataset)) == list(DEFAULT_OUTCOMES)
    fear = load_dataset("data/fearlearning_ssri")
    chosen = default_outcomes(fear, compute_effects(fear))
    # every one of its eight processes is reported together with another one by at least one publication
    assert chosen == list(fear.outcomes) and len(chosen) == 8
    fst = load_dataset("data/fst_martins2025")
    assert len(default_outcomes(fst, compute_effects(fst))) < 2  # one outcome: no multivariate model


def test_multivariate_artifacts_render(quick_fit):
    from analysis.report.render import build_multivariate_artifacts

    sensitivity = pd.DataFrame({"rho_within": [0.0], "parameter": ["mu"], "outcome": ["BV_TV"], "mean": [1.0]})
    art = build_multivariate_artifacts(quick_fit, sensitivity)
    assert {"multivariate_prior_posterior", "multivariate_reporting_bias"} <= set(art.figures)
    assert {"multivariate_prior_posterior", "multivariate_reporting_bias"} <= set(art.tables)
    assert art.tables["multivariate_reporting_bias"].loc[0, "missing_studies"].count(";") == 3
    assert json.loads(json.dumps(art.json))["reporting_bias"][0]["outcome"] == "Tb_N"


def test_no_default_multivariate_outcomes_when_no_two_studies_share_them(tmp_path):
    from analysis.fitting.multivariate_data import default_outcomes

    tiny = load_dataset(write_dataset(tmp_path))  # BMD (3 studies) and Tb_Sp (1 study, also reporting BMD)
    assert default_outcomes(tiny, compute_effects(tiny)) == []


def test_rho_within_grid_reweights_an_estimated_fit(dataset, quick_fit, monkeypatch):
    """The grid from the rho_w-estimated fit's draws (synthetic here): refits exactly where k-hat > 0.7."""

    def stub(data, **_):
        frame = pd.DataFrame({c: data.rho_within for c in SUMMARY_COLUMNS}, index=data.outcome_ids)
        return SimpleNamespace(mu=frame, tau=frame, rho=quick_fit.rho[SUMMARY_COLUMNS] * 0.0, converged=True)

    monkeypatch.setattr(mv, "fit_multivariate_data", stub)
    table = mv.rho_within_sensitivity(dataset, fit=quick_fit, structure=quick_fit.structure)
    per_value = table.groupby("rho_within").first()
    assert per_value.index.tolist() == list(mv.RHO_WITHIN_GRID)
    assert ((per_value["method"] == "refit") == (per_value["pareto_k"] > 0.7)).all(), per_value
    reweighted = table[table["method"] == "reweighted"]
    n = quick_fit.posterior.posterior.sizes["chain"] * quick_fit.posterior.posterior.sizes["draw"]
    assert ((reweighted["ess"] > 0) & (reweighted["ess"] <= n)).all()
    assert (reweighted["q025"] <= reweighted["median"]).all() and (reweighted["median"] <= reweighted["q975"]).all()
    assert set(table["outcome"]) == set(quick_fit.mu.index) | set(quick_fit.rho.index)


def test_rho_within_grid_refuses_to_reweight_a_fit_with_fixed_rho_within(dataset, quick_fit):
    fixed = quick_fit.posterior.copy()
    fixed["posterior"] = xr.DataTree(fixed.posterior.to_dataset().drop_vars("rho_within"))
    with pytest.raises(ValueError, match="rho_within estimated"):
        mv.rho_within_sensitivity(dataset, fit=SimpleNamespace(posterior=fixed))
