"""Small-study and publication-bias analysis: predictors, the Tb_N case, simulation validation, funnel plot.

Simulation design (animal level, ``simulate_meta``): each candidate study draws n per group
uniformly in 4..15, a true effect theta_i ~ N(delta, 0.3^2) and n control and n treated animals
~ N(0, 1) and N(theta_i, 1); Hedges' g and its variance come from analysis.dataset.smd. With selection, a
study whose one-sided t-test (direction of benefit) has p > 0.025 is published with probability
0.1; studies are drawn until k = 25 are published. Seeds are explicit (0..19, slow).

Criteria of the bias-averaged ensemble (stated before the numbers; the numbers seen are in the
comments; PET/PEESE never enter here: sqrt(1/n~) spans less than a factor 2):

* with selection (delta = 0.5): the unadjusted mu is biased (mean error > 0.3; seen +0.45); the
  model-averaged mu removes at least half of it on average (seen -0.09), its eti95 covers delta in
  >= 75% of seeds (seen 85%; unadjusted 5%) and the bias inclusion BF exceeds 3 in >= 75% (seen 90%).
* without selection and informative studies (delta = 1.0): the bias BF exceeds 3 in <= 10% of
  seeds (seen 0%) and the eti95 covers delta in >= 85% (seen 95%).
* NOT asserted, measured and reported in the README: without selection and underpowered studies
  (delta = 0.5, about 20% power each) the bias BF exceeded 3 in 9 of 20 seeds and the averaged
  mu was 0.28 too low: a real small effect seen through small studies looks like selection.
"""

from __future__ import annotations

import json

import arviz as az
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scipy import stats

from analysis.config import DATA_DIR, DEFAULT_DATASET
from analysis.dataset.effects import compute_effects, study_effects
from analysis.dataset.load import Outcome, load_dataset
from analysis.dataset.smd import hedges_g
from analysis.fitting.bias_averaged import fit_bias_averaged_effects
from analysis.fitting.sampling import SamplerSettings
from analysis.fitting.small_study import fit_small_study, fit_small_study_effects
from analysis.plots.small_study import funnel_plot, predictive_region
from models.priors import PriorSet, PriorSpec
from models.selection import interval_index, interval_labels, normal_thresholds
from models.small_study import predictor_values
from tests.tolerances import (
    GATE_DIVERGENCES_MAX,
    GATE_ESS_BULK_MIN,
    GATE_R_HAT_MAX,
    MCSE_MULTIPLE,
)

SIM_OUTCOME = Outcome(id="sim", label="simulated outcome", unit="", direction=1)
N_SEEDS_SLOW = 20


def simulate_meta(
    seed: int, *, delta: float, select: bool, k: int = 25, tau: float = 0.3, keep_nonsignificant: float = 0.1
) -> pd.DataFrame:
    """Animal-level simulation of k published two-group studies (see the module docstring)."""
    rng = np.random.default_rng(seed)
    rows, candidate = [], 0
    while len(rows) < k:
        candidate += 1
        n = int(rng.integers(4, 16))
        theta = rng.normal(delta, tau)
        control, treated = rng.normal(0.0, 1.0, n), rng.normal(theta, 1.0, n)
        p = stats.ttest_ind(treated, control, alternative="greater").pvalue
        if select and p > 0.025 and rng.uniform() > keep_nonsignificant:
            continue
        g, v = hedges_g(treated.mean(), treated.std(ddof=1), n, control.mean(), control.std(ddof=1), n)
        rows.append({"study": f"S{candidate}", "yi": float(g), "vi": float(v), "n_treatment": n, "n_control": n})
    return pd.DataFrame(rows)


def test_intervals_and_predictors():
    assert interval_labels((0.05,)) == ["p<=0.05", "p>0.05"]
    thresholds = normal_thresholds(np.ones(4), (0.025, 0.5))
    np.testing.assert_array_equal(interval_index(np.array([2.5, 1.0, -0.5, 1.959]), thresholds), [0, 1, 2, 1])
    with pytest.raises(ValueError, match="cutpoints"):
        interval_labels((0.5, 0.025))
    x = predictor_values("sqrt_inv_n", np.array([0.3, 0.2]), np.array([5, 10]), np.array([5, 10]))
    np.testing.assert_allclose(x, np.sqrt([0.4, 0.2]))
    with pytest.raises(ValueError, match="group sizes"):
        predictor_values("inv_n", np.array([0.3]), np.array([0]), np.array([5]))


# --- the analysis on real datasets ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tbn():
    return fit_small_study(load_dataset(DEFAULT_DATASET), "Tb_N", seed=1)


@pytest.fixture(scope="module")
def bcg():
    return fit_small_study(load_dataset(DATA_DIR / "bcg"), "tb_log_rr", seed=1)


def test_measures_whose_se_is_not_a_function_of_the_effect_use_the_se(bcg):
    """A log risk ratio's SE does not grow with the effect: PET/PEESE on SE and vi, normal-test p-values."""
    assert list(bcg.regressions) == ["PET-sei", "PEESE-vi"]
    out = json.loads(json.dumps(bcg.to_dict(), allow_nan=False))
    assert out["model"] == "small-study" and out["studies"][0]["n_tilde"] is None
    avg = out["bias_averaged"]
    assert avg["model"] == "bias-averaged" and avg["pet_predictor"] == "sei" and avg["selection_test"] == "z"
    assert out["mu"] == avg["mu"] and out["inclusion_bf"] == avg["inclusion_bf"]
    assert "headline" not in out
    assert out["egger"]["zval"] == pytest.approx(
        -0.803329112070106, rel=1e-4
    )  # metafor regtest, as in its reference test


def test_pet_intercept_is_the_egger_limit_estimate_under_flat_priors():
    """With near-flat priors the Bayesian PET-sei is metafor's regtest meta-regression (loosely, as BAYES_VS_REML)."""
    dataset = load_dataset(DATA_DIR / "bcg")
    flat = PriorSet(
        mu=PriorSpec.parse("normal:0:100"), slope=PriorSpec.parse("normal:0:100"), tau=PriorSpec.parse("uniform:0:10")
    )
    result = fit_small_study(dataset, "tb_log_rr", priors=flat)
    pet, egger = result.regressions["PET-sei"], result.egger
    se = (egger.limit_ci_ub - egger.limit_ci_lb) / (2 * 1.959964)
    assert abs(pet.intercept["median"] - egger.limit_estimate) <= 0.1 * se


def test_accepts_the_random_effects_prior_set():
    """The CLI passes the PriorSet of --mu-prior/--tau-prior: it sets beta0 (and selection mu) and tau."""
    dataset = load_dataset(DATA_DIR / "bcg")
    priors = PriorSet(mu=PriorSpec.parse("normal:0:2"), tau=PriorSpec.parse("halfcauchy:0.5"))
    result = fit_small_study(
        dataset,
        "tb_log_rr",
        engine="exact",
        priors=priors,
        seed=1,
        sampler=SamplerSettings(),
        table=compute_effects(dataset),
        progressbar=False,
    )
    assert result.priors["beta0"] == "normal:0:2" and result.priors["tau"] == "halfcauchy:0.5"
    assert str(result.averaged.priors.mu) == "normal:0:2" and str(result.averaged.priors.tau) == "halfcauchy:0.5"
    with pytest.raises(ValueError, match="slope"):
        PriorSet(slope=PriorSpec.parse("halfnormal:1"))
    with pytest.raises(ValueError, match="engine"):
        fit_small_study(dataset, "tb_log_rr", engine="laplace")


def test_direction_mirrors_the_analysis(tbn):
    """Lower-is-better data are the mirror image: same P(small-study) and bias BF, negated estimates."""
    effects = study_effects(compute_effects(load_dataset(DEFAULT_DATASET)), "Tb_N")
    mirrored = effects.assign(yi=-effects["yi"])
    flipped = fit_small_study_effects(mirrored, outcome=Outcome("x", "x", "", -1), seed=1)
    for name, fit in tbn.regressions.items():
        assert flipped.regressions[name].prob_small_study == pytest.approx(fit.prob_small_study, abs=1e-9)
        assert flipped.regressions[name].intercept["mean"] == pytest.approx(-fit.intercept["mean"], abs=1e-9)
    out, ref = flipped.to_dict(), tbn.to_dict()
    assert out["inclusion_bf"]["bias"] == pytest.approx(ref["inclusion_bf"]["bias"], rel=1e-9)
    assert out["mu"]["mean"] == pytest.approx(-ref["mu"]["mean"], abs=1e-9)
    assert out["mu"]["q025"] == pytest.approx(-ref["mu"]["q975"], abs=1e-9)


def test_tb_n_small_study_regressions_point_the_right_way_but_do_not_flag(tbn):
    """Tb_N of the default data: 3 of 9 planned reports dropped for non-significance (truth.json).

    What the 6 remaining studies can say: the sqrt(1/n~) bias parameters lean towards small-study
    inflation (P = 0.6-0.8) but every eti95 contains 0; k = 6 and the precision barely varies
    (sqrt(1/n~) takes 3 distinct values), as the notes say, so PET/PEESE stay out of the ensemble.
    All six studies are significant (p <= 0.025); the ensemble's bias BF is weak (1.68) and the
    model-averaged mu (1.41) lies below the unadjusted one (1.55).
    """
    assert tbn.k == 6 and tbn.provenance == "simulated"
    assert list(tbn.regressions) == ["PET-sqrt_inv_n", "PEESE-inv_n"]  # an SMD: no SE-based PET
    for fit in tbn.regressions.values():
        assert 0.55 < fit.prob_small_study < 0.9
        assert fit.slope["q025"] < 0.0 < fit.slope["q975"]
    assert any("k = 6" in n for n in tbn.notes) and any("3 distinct values" in n for n in tbn.notes)
    assert any("PET and PEESE are not in the ensemble" in n for n in tbn.notes)
    assert (tbn.studies["p_interval"] == "p<=0.025").all()
    avg = tbn.averaged
    assert 1.0 < avg.inclusion_bf["bias"] < 3.0
    assert avg.mu["mean"] < avg.unadjusted["mean"] and avg.mu["q025"] <= 0.0
    assert "[SIMULATED DATA]" in str(tbn)


def test_smd_fits_have_no_se_based_pet_and_the_n_models_find_nothing():
    """Only Tb_N had selection simulated, yet Egger's test "flags" outcomes without any selection.

    SMD and its SE are correlated (v = 1/n~ + g^2 / 2N) and these effects are large (g ~ 1-3):
    Egger p < 0.05 for outcomes without any selection (the frequentist reference, kept for
    comparison), whereas the sqrt(1/n~) models find nothing anywhere (every eti95 contains 0).
    SE-based PET/PEESE are not fitted for an SMD (Zwetsloot et al. 2017).
    """
    dataset = load_dataset(DEFAULT_DATASET)
    table = compute_effects(dataset)
    results = {o: fit_small_study(dataset, o, seed=1, table=table) for o in dataset.outcomes}
    assert sum(r.egger.pval < 0.05 for o, r in results.items() if o != "Tb_N") >= 4
    assert results["Tb_N"].egger.pval > 0.05
    for r in results.values():
        assert list(r.regressions) == ["PET-sqrt_inv_n", "PEESE-inv_n"]
        for fit in r.regressions.values():
            assert fit.prob_small_study < 0.8 and fit.slope["q025"] < 0.0 < fit.slope["q975"]


# --- simulation validation (exact engine: fast) --------------------------------------------------


def _averaged_runs(delta: float, select: bool) -> pd.DataFrame:
    rows = []
    for seed in range(N_SEEDS_SLOW):
        r = fit_bias_averaged_effects(simulate_meta(seed, delta=delta, select=select), outcome=SIM_OUTCOME)
        rows.append(
            {
                "re": r.unadjusted["mean"],
                "adjusted": r.mu["mean"],
                "covered": r.mu["q025"] <= delta <= r.mu["q975"],
                "re_covered": r.unadjusted["q025"] <= delta <= r.unadjusted["q975"],
                "bf_bias": r.inclusion_bf["bias"],
                "pet_in_ensemble": any(f.model.bias in ("PET", "PEESE") for f in r.models),
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_model_averaging_moves_towards_the_truth_under_selection():
    delta = 0.5
    runs = _averaged_runs(delta, select=True)
    bias_re, bias_adj = runs["re"].mean() - delta, runs["adjusted"].mean() - delta
    assert bias_re > 0.3
    assert abs(bias_adj) < 0.5 * bias_re
    assert runs["covered"].mean() >= 0.75 and runs["re_covered"].mean() <= 0.25
    assert (runs["bf_bias"] > 3).mean() >= 0.75
    assert not runs["pet_in_ensemble"].any()


@pytest.mark.slow
def test_no_bias_is_invented_with_informative_studies():
    runs = _averaged_runs(1.0, select=False)
    assert (runs["bf_bias"] > 3).mean() <= 0.10
    assert runs["covered"].mean() >= 0.85


# --- funnel plot ----------------------------------------------------------------------------------


def test_predictive_region_is_the_normal_interval_for_a_point_posterior():
    x = np.array([0.0, 0.3, 0.6])
    lo, hi = predictive_region(np.full(50, 1.2), np.full(50, 0.4), x)
    np.testing.assert_allclose(hi, 1.2 + 1.959964 * np.sqrt(0.16 + x**2), atol=1e-5)
    np.testing.assert_allclose(lo, 1.2 - 1.959964 * np.sqrt(0.16 + x**2), atol=1e-5)
    lo_n, _ = predictive_region(np.full(50, 1.2), np.full(50, 0.4), x, smd_n_scale=True)
    np.testing.assert_allclose(lo_n, 1.2 - 1.959964 * np.sqrt(0.16 + x**2 * (1 + 1.44 / 8)), atol=1e-5)


def test_funnel_plot(tbn, bcg):
    fig = funnel_plot(tbn)
    assert isinstance(fig, Figure)
    se_ax, n_ax = (next(a for a in fig.axes if a.get_gid() == gid) for gid in ("funnel_se", "funnel_n"))
    points = next(c for c in se_ax.collections if c.get_gid() == "studies")
    np.testing.assert_allclose(points.get_offsets(), tbn.studies[["yi", "sei"]].to_numpy())
    assert se_ax.get_ylim()[0] > se_ax.get_ylim()[1] == 0.0  # inverted, precise studies on top
    assert {ln.get_gid() for ln in n_ax.get_lines()} >= {"pet_line", "peese_line", "pooled_mu", "averaged_mu"}
    averaged = next(ln for ln in n_ax.get_lines() if ln.get_gid() == "averaged_mu")
    assert averaged.get_xdata()[0] == pytest.approx(tbn.averaged.mu["mean"])  # Tb_N: direction +1
    assert any(c.get_gid() == "predictive_region" for c in n_ax.collections)
    assert len(fig.findobj(lambda a: a.get_gid() == "simulated_marker")) == 1
    plain = funnel_plot(bcg)
    assert [a.get_gid() for a in plain.axes] == ["funnel_se"]
    assert not plain.findobj(lambda a: a.get_gid() == "simulated_marker")


# --- NUTS (slow) ------------------------------------------------------------------------------------


def _assert_gates(diagnostics):
    assert diagnostics.divergences <= GATE_DIVERGENCES_MAX, diagnostics
    assert diagnostics.r_hat_max <= GATE_R_HAT_MAX and diagnostics.ess_bulk_min >= GATE_ESS_BULK_MIN, diagnostics


@pytest.mark.slow
def test_nuts_pet_peese_match_the_exact_engine():
    effects = simulate_meta(3, delta=0.5, select=True)
    nuts = fit_small_study_effects(effects, outcome=SIM_OUTCOME, engine="nuts", seed=4)
    exact = fit_small_study_effects(effects, outcome=SIM_OUTCOME, engine="exact", seed=4)
    for name, fit in nuts.regressions.items():
        _assert_gates(fit.diagnostics)
        mcse = az.mcse(fit.posterior, var_names=["beta"], method="mean")
        node = mcse["posterior"] if "posterior" in mcse.children else mcse
        for j, part in enumerate(("intercept", "slope")):
            gap = abs(getattr(fit, part)["mean"] - getattr(exact.regressions[name], part)["mean"])
            assert gap <= MCSE_MULTIPLE * float(node["beta"][j]), (name, part, gap)
