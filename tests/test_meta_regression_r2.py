"""Variance explained by a moderator (posterior of the Bayesian R²) and the honest subgroup report.

R² per joint posterior draw (Gelman et al. 2019) against its closed form, its range, a moderator
that explains nearly all heterogeneity against one orthogonal to the effects; the exact engine's
joint draws against its exact posterior means; the report's display threshold, exploratory label
and run-wide count of comparisons; the subgroup plot's labels; the measurement script on one seed.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.figure import Figure

from analysis.config import DEFAULT_DATASET
from analysis.dataset.effects import compute_effects
from analysis.dataset.load import load_dataset
from analysis.fitting.meta_regression import R2_N_DRAWS, fit_meta_regression, fit_subgroups_one_at_a_time
from analysis.plots.meta_regression import subgroup_plot
from analysis.report.markdown import (
    SUBGROUP_COUNT_PLACEHOLDER,
    outcome_sections,
    subgroup_comparison_count,
    subgroup_section,
)
from analysis.results.meta_regression import MIN_K_SUBGROUPS
from analysis.studies import subgroup_r2
from models.exact.posterior import exact_posterior
from models.meta_regression import bayes_r2_draws
from models.priors import PriorSpec
from tests.helpers import write_dataset
from tests.tolerances import MCSE_MULTIPLE

# --- bayes_r2_draws --------------------------------------------------------------------------------


def test_r2_draws_match_the_closed_form_and_stay_in_the_unit_interval() -> None:
    X = np.column_stack([np.ones(4), [0.0, 0.0, 1.0, 1.0], [1.0, 2.0, 3.0, 5.0]])
    beta = np.array([[5.0, 2.0, 0.0], [-1.0, 0.0, 0.5], [0.0, 0.0, 0.0], [0.3, 1.0, -1.0]])
    tau = np.array([1.0, 0.0, 0.0, 2.0])
    r2 = bayes_r2_draws(X, beta, tau)
    fitted = [X[:, 1:] @ b[1:] for b in beta]
    v = [np.var(f, ddof=1) for f in fitted]
    # the intercept (5, -1, 0, 0.3) never counts; tau = 0 with a varying fit explains everything;
    # nothing to explain and nothing explained counts as 0
    np.testing.assert_allclose(r2, [v[0] / (v[0] + 1.0), 1.0, 0.0, v[3] / (v[3] + 4.0)], rtol=1e-12)
    assert v[0] == pytest.approx(4 * 1 / 3)  # 2 x indicator of 2/4 studies, ddof = 1
    rng = np.random.default_rng(7)
    many = bayes_r2_draws(X, rng.normal(0, 3, (5000, 3)), np.abs(rng.normal(0, 1, 5000)))
    assert many.shape == (5000,) and np.all((many >= 0.0) & (many <= 1.0)) and 0.0 < many.mean() < 1.0


def test_r2_draws_reject_bad_shapes_and_tau() -> None:
    X = np.column_stack([np.ones(3), [0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match="shapes"):
        bayes_r2_draws(X, np.zeros((5, 3)), np.ones(5))
    with pytest.raises(ValueError, match="shapes"):
        bayes_r2_draws(X[:1], np.zeros((5, 2)), np.ones(5))
    with pytest.raises(ValueError, match="non-negative"):
        bayes_r2_draws(X, np.zeros((2, 2)), np.array([1.0, -0.1]))


# --- constructed datasets: a moderator that explains everything, one that explains nothing ---------

TOML = """name = "r2_fixture"
title = "R2 fixture"
provenance = "simulated"
citation = "test fixture"
effect_measure = "SMD"

[outcomes.BMD]
label = "Bone mineral density"
unit = "g/cm2"
direction = 1

[moderators.group]
type = "categorical"
reference = "a"
levels = ["a", "b"]

[moderators.noise]
type = "numeric"
"""
K_FIXTURE = 24
# group: true effects 0 (a) and 2 (b), tiny jitter and sampling variance: almost all of the
# between-study variance is the group contrast. noise: +1/-1 alternating within pairs of studies
# with equal effects, so its weighted least-squares slope is exactly 0 (orthogonal to the effects).
_PAIR = np.repeat(np.arange(K_FIXTURE // 2), 2)
GROUP = np.where(_PAIR % 2 == 0, "a", "b")
NOISE = np.tile([1.0, -1.0], K_FIXTURE // 2)
YI = np.where(GROUP == "b", 2.0, 0.0) + 0.05 * np.sin(_PAIR)
VI = np.full(K_FIXTURE, 0.01)


@pytest.fixture(scope="module")
def fixture_dataset(tmp_path_factory: pytest.TempPathFactory):
    studies = "study,group,noise\n" + "".join(f"S{i},{g},{x:g}\n" for i, (g, x) in enumerate(zip(GROUP, NOISE)))
    effects = "study,outcome,yi,vi\n" + "".join(
        f"S{i},BMD,{float(y)!r},{float(v)!r}\n" for i, (y, v) in enumerate(zip(YI, VI))
    )
    path = write_dataset(tmp_path_factory.mktemp("r2"), toml=TOML, studies=studies, arms=None, effects=effects)
    return load_dataset(path)


def test_r2_is_high_when_the_moderator_explains_the_heterogeneity(fixture_dataset) -> None:
    result = fit_meta_regression(fixture_dataset, "BMD", moderators=["group"], engine="exact")
    r2 = result.R2
    assert r2["n_draws"] == R2_N_DRAWS
    assert r2["median"] > 0.95 and r2["q025"] > 0.9 and r2["q975"] <= 1.0
    assert r2["q025"] <= r2["median"] <= r2["q975"] and 0.0 <= r2["mean"] <= 1.0


def test_r2_is_low_for_a_moderator_orthogonal_to_the_effects(fixture_dataset) -> None:
    result = fit_meta_regression(fixture_dataset, "BMD", moderators=["noise"], engine="exact")
    r2, (slope,) = result.R2, result.slopes
    assert abs(slope["mean"]) < 1e-8  # orthogonal by construction
    # the slope is still uncertain (k = 24, tau ~ 1), so the upper end is not 0; the interval reaches 0
    assert r2["median"] < 0.05 and r2["q975"] < 0.25 and r2["q025"] < 0.001
    # the former point value (ratio of two models' posterior medians) stays in the JSON only
    assert set(r2["point_ratio_of_medians"]) >= {"value", "tau2_median_RE", "tau2_median_MR", "ratio", "caution"}
    assert "R2" not in r2


def test_r2_posterior_is_reproducible_and_seeded(fixture_dataset) -> None:
    a = fit_meta_regression(fixture_dataset, "BMD", moderators=["noise"], engine="exact", seed=4)
    b = fit_meta_regression(fixture_dataset, "BMD", moderators=["noise"], engine="exact", seed=4)
    c = fit_meta_regression(fixture_dataset, "BMD", moderators=["noise"], engine="exact", seed=5)
    assert a.R2 == b.R2 and a.R2["median"] != c.R2["median"]
    assert json.loads(json.dumps(a.to_dict()))["R2"]["q975"] == a.R2["q975"]


# --- the exact engine's joint draws ----------------------------------------------------------------


def test_joint_draws_reproduce_the_exact_posterior_means_and_the_fit_r2() -> None:
    """ExactPosterior.sample (tau from its quadrature CDF, then beta | tau) against the exact means."""
    y = np.array([0.2, 0.45, 0.3, 1.1, 0.85, 1.3, 0.6, 0.9, 0.1, 1.5])
    v = np.array([0.02, 0.04, 0.03, 0.05, 0.02, 0.04, 0.03, 0.06, 0.05, 0.04])
    X = np.column_stack([np.ones(10), [0, 0, 0, 1, 1, 1, 0, 1, 0, 1], np.linspace(-1, 1, 10)])
    post = exact_posterior(
        y,
        v,
        tau_prior=PriorSpec.parse("halfnormal:1"),
        X=X,
        beta_mean=[0.0, 0.0, 0.0],
        beta_cov=np.diag([9.0, 1.0, 0.25]),
        coef_names=["intercept", "b1", "b2"],
    )
    n = 40_000
    draws = post.sample(n, rng=np.random.default_rng(11))
    for j, name in enumerate(["intercept", "b1", "b2"]):
        mcse = post.sd(name) / np.sqrt(n)
        assert abs(draws["beta"][:, j].mean() - post.mean(name)) <= MCSE_MULTIPLE * mcse, name
    assert abs(draws["tau"].mean() - post.mean("tau")) <= MCSE_MULTIPLE * post.sd("tau") / np.sqrt(n)
    r2 = bayes_r2_draws(X, draws["beta"], draws["tau"])
    assert np.all((r2 >= 0.0) & (r2 <= 1.0)) and 0.0 < r2.mean() < 1.0


def test_fit_r2_matches_independent_draws_of_the_same_posterior(fixture_dataset) -> None:
    """The fit's R² (4000 seeded draws) against 40000 independent draws of the same exact posterior."""
    result = fit_meta_regression(fixture_dataset, "BMD", moderators=["noise"], engine="exact")
    X = result.design.X
    intercept, slope = PriorSpec.parse(result.priors["intercept"]), PriorSpec.parse(result.priors["noise"])
    post = exact_posterior(
        YI,
        VI,
        tau_prior=PriorSpec.parse(result.priors["tau"]),
        X=X,
        beta_mean=[intercept.params[0], slope.params[0]],
        beta_cov=np.diag([intercept.params[1] ** 2, slope.params[1] ** 2]),
    )
    draws = post.sample(40_000, rng=np.random.default_rng(3))
    reference = bayes_r2_draws(X, draws["beta"], draws["tau"])
    mcse = reference.std(ddof=1) * np.sqrt(1 / R2_N_DRAWS + 1 / reference.size)
    assert abs(result.R2["mean"] - reference.mean()) <= MCSE_MULTIPLE * mcse


# --- the report: threshold, exploratory label, run-wide count ---------------------------------------


@pytest.fixture(scope="module")
def flagship_subgroups():
    dataset = load_dataset(DEFAULT_DATASET)
    table = compute_effects(dataset)
    return {o: fit_subgroups_one_at_a_time(dataset, o, engine="exact", table=table) for o in ("BMD", "BV_TV")}


def test_subgroup_results_record_k_count_and_display(flagship_subgroups) -> None:
    bmd, bv_tv = flagship_subgroups["BMD"], flagship_subgroups["BV_TV"]
    assert (bmd.k, bv_tv.k) == (9, 10) and MIN_K_SUBGROUPS == 10
    assert not bmd.shown_in_report and bv_tv.shown_in_report
    expected = sum(len(f.contrasts) + len(f.slopes) for f in bmd.values())
    assert bmd.n_comparisons == expected == 4  # species, engineered (contrasts), two numeric slopes
    out = json.loads(json.dumps(bmd.to_dict()))
    assert out["shown_in_report"] is False and out["k"] == 9 and out["n_comparisons"] == 4
    assert out["min_k_shown"] == MIN_K_SUBGROUPS and out["label"].startswith("exploratory")


def test_below_min_k_the_table_is_hidden_and_a_note_says_why(flagship_subgroups) -> None:
    lines = subgroup_section("BMD", SimpleNamespace(subgroups=flagship_subgroups["BMD"]), 28)
    text = "\n".join(lines)
    assert lines[0].startswith("#### Subgroups: exploratory (28 subgroup comparisons over all outcomes")
    assert "Not shown: k = 9 studies, fewer than 10" in text and "§10.11.5.1" in text
    assert "|" not in text and "figures/subgroups_BMD" not in text and "P(favours)" not in text


def test_at_min_k_the_tables_show_the_r2_posterior_and_the_count(flagship_subgroups) -> None:
    fits = flagship_subgroups["BV_TV"]
    lines = subgroup_section("BV_TV", SimpleNamespace(subgroups=fits), 28)
    text = "\n".join(lines)
    assert "exploratory" in lines[0] and "28 subgroup comparisons" in lines[0]
    assert "with 28 comparisons in this report" in text and "Not shown" not in text
    assert "R² of moderator [eti95]" in text and "figures/subgroups_BV_TV.svg" in text
    r2 = fits["engineered"].R2
    shown = f"{100 * r2['median']:.0f}% [{100 * r2['q025']:.0f}%, {100 * r2['q975']:.0f}%]"
    assert shown in text
    effect_rows = [line for line in text.splitlines() if line.startswith("| engineered | engineered − native")]
    assert len(effect_rows) == 1 and shown in effect_rows[0]


def test_outcome_sections_fill_in_the_runs_count(flagship_subgroups) -> None:
    """Per-outcome sections are rendered before the run's total is known: a placeholder, then the total."""
    outcomes = {}
    for oid, fits in flagship_subgroups.items():
        markdown = subgroup_section(oid, SimpleNamespace(subgroups=fits))
        assert SUBGROUP_COUNT_PLACEHOLDER in markdown[0]
        outcomes[oid] = SimpleNamespace(markdown=markdown, jsons={"subgroups": fits.to_dict()})
    outcomes["no_moderators"] = SimpleNamespace(markdown=["### other", ""], jsons={})
    run = SimpleNamespace(outcomes=outcomes)
    total = sum(f.n_comparisons for f in flagship_subgroups.values())
    assert subgroup_comparison_count(run) == total == 8
    text = "\n".join(outcome_sections(run))
    assert SUBGROUP_COUNT_PLACEHOLDER not in text
    assert text.count(f"exploratory ({total} subgroup comparisons") == 2


def test_format_meta_regression_states_r2_interval_and_small_k(flagship_subgroups) -> None:
    text = str(flagship_subgroups["BMD"]["engineered"])
    r2 = flagship_subgroups["BMD"]["engineered"].R2
    assert "Bayesian R2" in text and f"eti95 [{100 * r2['q025']:.1f}%, {100 * r2['q975']:.1f}%]" in text
    assert "k = 9 < 10 studies" in text and "ratio" not in text
    assert "k = 10 < 10" not in str(flagship_subgroups["BV_TV"]["engineered"])


def test_plot_is_titled_exploratory_and_warns_below_min_k(flagship_subgroups) -> None:
    def warnings(fig: Figure) -> list[str]:
        return [t.get_text() for t in fig.findobj(lambda a: a.get_gid() == "few_studies_warning")]

    small, large = subgroup_plot(flagship_subgroups["BMD"]), subgroup_plot(flagship_subgroups["BV_TV"])
    assert "exploratory" in small.get_suptitle() and "exploratory" in large.get_suptitle()
    (warning,) = warnings(small)
    assert warning.startswith("k = 9 < 10 studies") and warnings(large) == []


# --- the measurement script -----------------------------------------------------------------------


@pytest.mark.slow  # runs a simulation study (issue 19: simulation studies under -m slow)
def test_measurement_script_on_one_seed() -> None:
    runs = subgroup_r2.simulate_and_fit(5)
    assert list(runs.columns) == list(subgroup_r2.COLUMNS)
    noise = runs[runs["is_noise"]]
    assert set(noise["moderator"]) == {subgroup_r2.NOISE} and len(noise) == noise["outcome"].nunique() >= 5
    assert (runs["k"] >= subgroup_r2.MIN_K).all()
    for column in ("r2_q025", "r2_median", "r2_q975", "r2_point"):
        assert runs[column].between(0.0, 1.0).all(), column
    assert (runs["r2_q025"] <= runs["r2_median"]).all() and (runs["r2_median"] <= runs["r2_q975"]).all()
    assert runs.equals(subgroup_r2.simulate_and_fit(5))  # seeded
    table = subgroup_r2.summary_table(runs)
    row = table[(table["moderator"] == subgroup_r2.NOISE) & (table["band"] == "all")].iloc[0]
    assert row["n_fits"] == len(noise)
    assert row["eti_lower_gt_bound"] == pytest.approx((noise["r2_q025"] > subgroup_r2.LOWER_BOUND).mean())
    assert row["point_r2_ge_large"] == pytest.approx((noise["r2_point"] >= subgroup_r2.LARGE_R2).mean())
