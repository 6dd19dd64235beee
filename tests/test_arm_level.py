"""The exact small-sample (arm-level) likelihood: data layout, graph, logp by hand, errors, a tiny NUTS fit.

The hand computations use scipy only and the raw numbers of the test fixture
(:mod:`tests.helpers`), so they check the data path (SEM -> SD, shared control, sole control
found without ``control_arm``) as well as the graph.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import integrate, stats

from analysis.config import DATA_DIR
from analysis.dataset.load import load_dataset
from analysis.fitting.arm_level import dataset_layout, fit_arm_level, outcome_arm_summaries
from models.arm_level import Layout, arm_summaries, build_arm_level_model
from models.priors import PriorSpec
from tests.helpers import tiny_arm_fit, write_dataset

MU_PRIOR, TAU_PRIOR = PriorSpec.parse("normal:0:3"), PriorSpec.parse("halfnormal:1")
STUDIES = ["A2020", "B2021", "C2022"]
#: BMD arms of the fixture, control first: (mean, sd, n); B2021 reports SEM (sd = sem * sqrt(n)).
ARMS = {
    "A2020": [(0.22, 0.03, 8), (0.26, 0.03, 8)],
    "B2021": [(0.20, 0.01 * np.sqrt(6), 6), (0.23, 0.012 * np.sqrt(6), 6), (0.25, 0.011 * np.sqrt(7), 7)],
    "C2022": [(0.21, 0.04, 10), (0.24, 0.04, 10)],
}
POINT = {"mu": 0.8, "tau": 0.5, "z": np.array([0.3, -1.2, 0.7]), "log_sigma": np.array([0.1, -0.2, 0.05])}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_dataset(write_dataset(tmp_path_factory.mktemp("arm")))


@pytest.fixture(scope="module")
def model(tiny):
    data = outcome_arm_summaries(tiny, "BMD", STUDIES)
    return build_arm_level_model(data, tau_prior=TAU_PRIOR, beta_priors=[MU_PRIOR])


def _model_point(model) -> dict:
    point = model.initial_point()
    point.update(
        {
            "mu": np.array(POINT["mu"]),
            "tau_log__": np.array(np.log(POINT["tau"])),
            "z": POINT["z"],
            "log_sigma": POINT["log_sigma"],
        }
    )
    return point


def _pooled_sd(arms) -> float:
    return float(np.sqrt(sum((n - 1) * sd**2 for _, sd, n in arms) / sum(n - 1 for _, _, n in arms)))


def test_layout_counts_shared_control_once(tiny):
    data = outcome_arm_summaries(tiny, "BMD", STUDIES)
    assert data.study == tuple(STUDIES)
    assert len(data.arm) == 7 and "A2020/sham" not in data.arm  # sham arms are not compared
    assert data.comparison == ("A2020/ev", "B2021/ev_low", "B2021/ev_high", "C2022/ev")
    assert data.comparison_study.tolist() == [0, 1, 1, 2]
    assert data.scale == pytest.approx([_pooled_sd(ARMS[s]) for s in STUDIES], rel=1e-12)
    # first contrast of a group is the plain difference m_t - m_c, in pooled SDs
    assert data.contrast[1] == pytest.approx((0.23 - 0.20) / data.scale[1], rel=1e-12)
    # row sums of the Helmert matrix are the weights n_0 / N_<j of a common theta
    assert data.helmert.sum(axis=1).tolist() == pytest.approx([1.0, 1.0, 6 / 12, 1.0])
    assert data.helmert[2, 1] == pytest.approx(-6 / 12) and data.multilevel


def test_graph_builds_with_expected_variables(model):
    assert {v.name for v in model.free_RVs} == {"mu", "tau", "z", "log_sigma"}
    assert {v.name for v in model.observed_RVs} == {"contrast", "s2"}
    assert {"theta", "sigma"} <= set(model.named_vars)
    point = model.initial_point()
    assert np.isfinite(model.compile_logp()(point)) and np.all(np.isfinite(model.compile_dlogp()(point)))


def test_logp_equals_scipy_by_hand(model):
    """Priors, multivariate normal of the simple contrasts D_j = m_j - m_c (shared control) and chi^2 variances."""
    theta = POINT["mu"] + POINT["tau"] * POINT["z"]
    sig = np.exp(POINT["log_sigma"])  # sigma_i / S_i
    expected = (
        stats.norm.logpdf(POINT["mu"], 0, 3)
        + stats.halfnorm.logpdf(POINT["tau"], scale=1)
        + stats.norm.logpdf(POINT["z"]).sum()
        + stats.norm.logpdf(POINT["log_sigma"], 0, 1).sum()
    )
    for i, study in enumerate(STUDIES):
        arms, scale = ARMS[study], _pooled_sd(ARMS[study])
        (m_c, _, n_c), treated = arms[0], arms[1:]
        d = np.array([(m - m_c) / scale for m, _, _ in treated])
        cov = sig[i] ** 2 * (np.diag([1.0 / n for _, _, n in treated]) + 1.0 / n_c)
        expected += stats.multivariate_normal.logpdf(d, mean=theta[i] * sig[i] * np.ones(d.size), cov=cov)
        for _, sd, n in arms:  # (n-1) s^2 / sigma^2 ~ chi2(n-1), density of s^2 by change of variables
            nu, v = n - 1.0, (sd / scale) ** 2
            expected += stats.chi2.logpdf(nu * v / sig[i] ** 2, nu) + np.log(nu / sig[i] ** 2)
    assert model.compile_logp(jacobian=False)(_model_point(model)) == pytest.approx(expected, rel=1e-9)


def test_contrast_likelihood_is_arm_mean_likelihood_with_baseline_integrated_out(model):
    """For the shared-control study: sum of Helmert terms = log of the integral over alpha of the arm-mean normals."""
    terms = model.compile_logp(vars=[model["contrast"]], jacobian=False, sum=False)(_model_point(model))[0]
    arms, scale = ARMS["B2021"], _pooled_sd(ARMS["B2021"])
    theta, sig = POINT["mu"] + POINT["tau"] * POINT["z"][1], np.exp(POINT["log_sigma"][1])
    means = np.array([m for m, _, _ in arms]) / scale
    n = np.array([n for _, _, n in arms], dtype=float)
    shift = np.array([0.0, 1.0, 1.0]) * theta * sig

    def density(alpha: float) -> float:
        return float(np.prod(stats.norm.pdf(means, alpha + shift, sig / np.sqrt(n))))

    value, _ = integrate.quad(density, means[0] - 10, means[0] + 10, epsabs=0, epsrel=1e-12, points=[means[0]])
    assert terms[1] + terms[2] == pytest.approx(np.log(value), rel=1e-9)


def test_logp_does_not_depend_on_units(tiny):
    """Rescaling a study's data (e.g. g/cm2 -> mg/cm2) leaves the model's log density unchanged."""
    base = tiny.arms[(tiny.arms["outcome"] == "BMD") & (tiny.arms["role"] != "sham")].reset_index(drop=True)
    study_ix = base["study"].map({s: i for i, s in enumerate(STUDIES)})
    args = ((base["role"] == "treatment").astype(float), study_ix, study_ix)  # one control per study: group = study
    factor = np.where(base["study"] == "B2021", 1000.0, 1.0)
    logps = []
    for f in (1.0, factor):
        data = arm_summaries(base["mean"] * f + 5.0, base["sd"] * f, base["n"], *args, study=STUDIES)
        model = build_arm_level_model(data, tau_prior=TAU_PRIOR, beta_priors=[MU_PRIOR])
        logps.append(model.compile_logp()(_model_point(model)))
    assert logps[0] == pytest.approx(logps[1], rel=1e-12)


def test_bad_arm_data_and_design_raise(tiny):
    with pytest.raises(ValueError, match="n >= 2"):
        arm_summaries([0, 1], [1, 1], [1, 5], [0, 1], [0, 0], [0, 0], study=["s"])
    with pytest.raises(ValueError, match="exactly one control"):
        arm_summaries([0, 1], [1, 1], [5, 5], [1, 1], [0, 0], [0, 0], study=["s"])
    with pytest.raises(ValueError, match="first column is ones"):
        fit_arm_level(tiny, "BMD", X=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="not declared"):
        fit_arm_level(tiny, "nope")


def test_effect_level_dataset_raises():
    with pytest.raises(ValueError, match="arm-level data"):
        fit_arm_level(load_dataset(DATA_DIR / "bcg"), "tb_log_rr")


def test_meta_regression_graph_has_coefficients(tiny):
    data = outcome_arm_summaries(tiny, "BMD", STUDIES)
    X = np.column_stack([np.ones(4), [0.0, -4.0, -4.0, 4.0]])  # centred duration_weeks, one row per comparison
    model = build_arm_level_model(
        data,
        tau_prior=TAU_PRIOR,
        beta_priors=[MU_PRIOR, PriorSpec.parse("normal:0:1")],
        X=X,
        coef_names=["intercept", "duration"],
    )
    assert {"beta_intercept", "beta_duration", "beta"} <= set(model.named_vars)
    assert np.isfinite(model.compile_logp()(model.initial_point()))


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_tiny_nuts_fit_result():
    _, result = tiny_arm_fit()
    out = json.loads(json.dumps(result.to_dict()))
    assert out["model"] == "random-effects" and out["engine"] == "nuts" and out["settings"]["likelihood"] == "arm"
    assert out["k"] == 3 and [s["study"] for s in out["studies"]] == STUDIES
    for param in ("mu", "tau", "theta_new", "I2"):
        assert out[param]["q025"] < out[param]["median"] < out[param]["q975"]
    assert 0.0 < out["I2"]["median"] < 1.0 and 0.0 <= result.prob_benefit <= 1.0
    studies = result.studies
    assert np.all((studies["theta_q025"] < studies["theta_mean"]) & (studies["theta_mean"] < studies["theta_q975"]))
    assert result.posterior.posterior["theta"].sizes["study"] == 3 and "diagnostics" in out


def test_padded_layout_changes_the_log_density_by_a_constant_only(tiny):
    """Padded studies, arms and comparisons add prior terms of their own parameters and constants."""
    data = outcome_arm_summaries(tiny, "BMD", STUDIES)
    plain = build_arm_level_model(data, tau_prior=TAU_PRIOR, beta_priors=[MU_PRIOR])
    padded = build_arm_level_model(data, tau_prior=TAU_PRIOR, beta_priors=[MU_PRIOR], layout=Layout(5, 11, 7))
    assert padded.coords["study"][:3] == tuple(STUDIES) and len(padded.coords["comparison"]) == 7
    gaps = []
    for shift in (0.0, 0.7):
        point = _model_point(plain)
        point.update(
            {"mu": np.array(POINT["mu"] + shift), "z": POINT["z"] - shift, "log_sigma": POINT["log_sigma"] + shift}
        )
        wide = dict(point, z=np.r_[point["z"], 0.4, -0.3], log_sigma=np.r_[point["log_sigma"], 0.2, 0.1])
        gaps.append(padded.compile_logp()(wide) - plain.compile_logp()(point))
    assert gaps[0] == pytest.approx(gaps[1], abs=1e-10)
    with pytest.raises(ValueError, match="does not fit"):
        build_arm_level_model(data, tau_prior=TAU_PRIOR, beta_priors=[MU_PRIOR], layout=Layout(2, 11, 7))


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_fit_trims_the_padding_of_the_dataset_layout(tiny):
    assert dataset_layout(tiny).studies >= 3
    _, result = tiny_arm_fit()
    assert list(result.posterior.posterior["theta"].coords["study"].values) == STUDIES
    assert all(
        not str(label).startswith("__padding")
        for label in result.posterior.observed_data["contrast"].coords["comparison"].values
    )


def _evaluate(model, name: str, point: dict) -> np.ndarray:
    """A deterministic at a point of the value variables (random variables replaced by their values)."""
    (expr,) = model.replace_rvs_by_values([model[name]])
    return model.compile_fn(expr, inputs=model.value_vars, on_unused_input="ignore")(point)


def _multilevel_point(model) -> tuple[dict, np.ndarray]:
    point = _model_point(model)
    v = np.array([0.4, -0.9, 1.3, 0.2])
    point.update({"omega_log__": np.array(np.log(0.3)), "v": v})
    theta_c = POINT["mu"] + POINT["tau"] * POINT["z"][[0, 1, 1, 2]] + 0.3 * v
    return point, theta_c


def test_multilevel_contrasts_equal_the_simple_contrast_density_with_distinct_arm_effects(tiny):
    """With omega, each arm has its own theta: Helmert terms = MVN of D_j = m_j - m_c with mean sigma * theta_j."""
    data = outcome_arm_summaries(tiny, "BMD", STUDIES)
    model = build_arm_level_model(data, tau_prior=TAU_PRIOR, beta_priors=[MU_PRIOR], omega_prior=TAU_PRIOR)
    assert {v.name for v in model.free_RVs} == {"mu", "tau", "omega", "z", "v", "log_sigma"}
    point, theta_c = _multilevel_point(model)
    terms = model.compile_logp(vars=[model["contrast"]], jacobian=False, sum=False)(point)[0]
    arms, scale = ARMS["B2021"], _pooled_sd(ARMS["B2021"])
    sig = np.exp(POINT["log_sigma"][1])
    (m_c, _, n_c), treated = arms[0], arms[1:]
    d = np.array([(m - m_c) / scale for m, _, _ in treated])
    cov = sig**2 * (np.diag([1.0 / n for _, _, n in treated]) + 1.0 / n_c)
    expected = stats.multivariate_normal.logpdf(d, mean=sig * theta_c[1:3], cov=cov)
    assert terms[1] + terms[2] == pytest.approx(expected, rel=1e-9)
    theta_comparison = _evaluate(model, "theta_comparison", point)
    assert theta_comparison == pytest.approx(theta_c, rel=1e-12)


def test_comparison_level_moderator_enters_each_arm(tiny):
    """A comparison-level column shifts the two arms of B2021 apart; the study theta uses their mean row."""
    data = outcome_arm_summaries(tiny, "BMD", STUDIES)
    X = np.column_stack([np.ones(4), [0.0, -0.5, 0.5, 0.0]])
    model = build_arm_level_model(
        data,
        tau_prior=TAU_PRIOR,
        beta_priors=[MU_PRIOR, PriorSpec.parse("normal:0:1")],
        X=X,
        coef_names=["intercept", "dose"],
        omega_prior=TAU_PRIOR,
    )
    point = model.initial_point()
    point.update({"beta_intercept": np.array(1.0), "beta_dose": np.array(0.6), "tau_log__": np.array(np.log(0.5))})
    theta_c, theta = _evaluate(model, "theta_comparison", point), _evaluate(model, "theta", point)
    assert theta_c[2] - theta_c[1] == pytest.approx(0.6) and theta[1] == pytest.approx(1.0)
