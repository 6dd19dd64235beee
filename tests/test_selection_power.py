"""Operating characteristics of the bias-averaged model (:mod:`analysis.studies.selection_power`).

Fast tests (two simulated datasets fitted in full by deterministic quadrature, ~30 s): the
per-seed frame's columns and values against an independent reading of the simulated dataset
and its truth, the error and coverage definitions, exact summaries of :func:`estimator_table`,
:func:`rates_table`, :func:`bf_quantiles`, :func:`by_outcome_table`, :func:`done_when` and
:func:`default_seed_position` on a hand-made frame, and the default seed's known numbers.
Seeds: simulation seed 1 and the default seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.dataset import simulate_design as D
from analysis.dataset.effects import study_effects
from analysis.dataset.simulate import DEFAULT_SEED, SimulatedDataset, simulate_dataset
from analysis.studies.selection_power import (
    COLUMNS,
    ESTIMATORS,
    INFLATION_TOL,
    _check_counterfactual,
    _load,
    bf_quantiles,
    by_outcome_table,
    default_seed_position,
    done_when,
    estimator_table,
    rates_table,
    simulate_and_fit,
)

SEED = 1


@pytest.fixture(scope="module")
def seed1() -> pd.DataFrame:
    return simulate_and_fit(SEED)


@pytest.fixture(scope="module")
def default_runs() -> pd.DataFrame:
    return simulate_and_fit(DEFAULT_SEED)


def _significant_from_arms(sim: SimulatedDataset, outcome: str, direction: int, tmp_path) -> int:
    """Studies with one-sided p <= 0.025: each single-comparison study's t-test recomputed from the arms,
    the normal test of the pooled estimate for a study with several treatment arms."""
    _, table = _load(sim, tmp_path)
    count = 0
    for _, s in study_effects(table, outcome).iterrows():
        if s["n_comparisons"] > 1:
            count += stats.norm.sf(direction * s["yi"] / s["sei"]) <= 0.025
            continue
        arms = sim.arms[(sim.arms["study"] == s["study"]) & (sim.arms["outcome"] == outcome)].set_index("role")
        sd = arms["sd"].fillna(arms["sem"] * np.sqrt(arms["n"]))  # some studies report the SEM
        t, c = ("treatment", "control") if direction > 0 else ("control", "treatment")
        test = stats.ttest_ind_from_stats(
            arms.loc[t, "mean"],
            sd[t],
            arms.loc[t, "n"],
            arms.loc[c, "mean"],
            sd[c],
            arms.loc[c, "n"],
            alternative="greater",
        )
        count += test.pvalue <= 0.025
    return int(count)


@pytest.mark.slow  # runs a simulation study (issue 19: simulation studies under -m slow)
def test_per_seed_frame_matches_the_simulated_dataset(seed1, tmp_path):
    sim = simulate_dataset(SEED)
    truth = sim.truth
    assert list(seed1.columns) == list(COLUMNS)
    assert list(seed1["outcome"]) == list(D.OUTCOMES) and (seed1["seed"] == SEED).all()
    reporting = sim.arms.groupby("outcome")["study"].nunique()  # independent of the effect table
    by = seed1.set_index("outcome")
    for outcome in D.OUTCOMES:
        assert by.loc[outcome, "k"] == reporting[outcome]
    tbn = by.loc["Tb_N"]
    omitted = truth["selection"]["omitted_studies"]
    assert tbn["selected"] and by["selected"].sum() == 1
    assert tbn["n_omitted"] == len(omitted) and tbn["k"] == tbn["k_planned"] - len(omitted) and tbn["k_planned"] == 9
    others = by.drop(index="Tb_N")
    assert (others["n_omitted"] == 0).all() and (others["k"] == others["k_planned"]).all()
    # benefit orientation: Tb_Sp (direction -1) has a positive population mu and a positive pooled estimate
    assert by.loc["Tb_Sp", "direction"] == -1 and by.loc["Tb_Sp", "mu_true"] == pytest.approx(-D.MU["Tb_Sp"])
    assert (by["unadjusted_mean"] > 0).all() and (by["conditional_mean"] > 0).all()
    # truth: mean true effects recomputed from truth.json; the target is the planned mean for Tb_N only
    effects = truth["study_effects"]
    planned = [s for s in effects if s not in truth["selection"]["not_planned_studies"]]
    assert tbn["mean_true_planned"] == pytest.approx(np.mean([effects[s]["Tb_N"] for s in planned]))
    reported_tbn = [s for s in planned if s not in omitted]
    assert tbn["mean_true_reported"] == pytest.approx(np.mean([effects[s]["Tb_N"] for s in reported_tbn]))
    assert tbn["truth_target"] == tbn["mean_true_planned"]
    np.testing.assert_array_equal(others["truth_target"], others["mean_true_reported"])
    tb_sp_studies = sim.arms.loc[sim.arms["outcome"] == "Tb_Sp", "study"].unique()
    assert by.loc["Tb_Sp", "truth_target"] == pytest.approx(-np.mean([effects[s]["Tb_Sp"] for s in tb_sp_studies]))
    # the counterfactual (exact random effects) only differs for Tb_N, and only if a study was omitted;
    # elsewhere it is the ensemble's unadjusted model up to quadrature error
    np.testing.assert_allclose(others["mu_unadjusted_all_planned"], others["unadjusted_mean"], rtol=0, atol=1e-4)
    assert (abs(tbn["mu_unadjusted_all_planned"] - tbn["unadjusted_mean"]) > INFLATION_TOL) == (len(omitted) > 0)
    # significant studies: recomputed from the arms
    for outcome in ("Tb_N", "Tb_Sp", "BMD"):
        expected = _significant_from_arms(sim, outcome, int(by.loc[outcome, "direction"]), tmp_path / outcome)
        assert by.loc[outcome, "n_significant"] == expected
    assert by["analysed"].all() and (by["n_significant"] <= by["k"]).all()


@pytest.mark.slow  # runs a simulation study (issue 19: simulation studies under -m slow)
def test_error_coverage_and_evidence_columns(seed1, default_runs):
    runs = pd.concat([seed1, default_runs], ignore_index=True)
    for estimator in ESTIMATORS:
        mean, lo, hi = (runs[f"{estimator}_{s}"] for s in ("mean", "q025", "q975"))
        np.testing.assert_allclose(runs[f"{estimator}_error"], mean - runs["truth_target"], rtol=0, atol=1e-12)
        covered = (lo <= runs["truth_target"]) & (runs["truth_target"] <= hi)
        assert (runs[f"{estimator}_covered"].astype(bool) == covered).all()
        assert (lo <= hi).all()
    for column in ("bf_effect", "bf_heterogeneity", "bf_bias"):
        assert (runs[column] > 0).all()
    posts = runs[["post_none", "post_selection", "post_PET", "post_PEESE"]]
    np.testing.assert_allclose(posts.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    # this design never has k >= 10 studies with a sqrt(1/n~) spread ratio >= 2: no PET/PEESE models
    assert (runs["post_PET"] == 0).all() and (runs["post_PEESE"] == 0).all() and (runs["n_models"] == 12).all()
    assert runs["prob_benefit"].between(0, 1).all() and (runs["fit_seconds"] > 0).all()


@pytest.mark.slow  # runs a simulation study (issue 19: simulation studies under -m slow)
def test_default_seed_reproduces_the_known_tb_n_numbers(default_runs):
    """The default dataset's Tb_N: k = 6 (3 of 9 omitted, all six significant).

    Everything is deterministic quadrature; the values are those of a direct
    :func:`analysis.fitting.bias_averaged.fit_bias_averaged` call. The unadjusted mu is 1.545 as
    in the issue, the counterfactual with all 9 planned results reported gives 1.195 (the
    selection inflated the estimate); the averaged mu 1.415 is closer to the planned mean 1.400.
    The bias Bayes factor is only 1.68: six studies carry little evidence about selection.
    """
    by = default_runs.set_index("outcome")
    tbn = by.loc["Tb_N"]
    assert tbn["k"] == 6 and tbn["n_omitted"] == 3 and tbn["n_significant"] == 6
    assert tbn["unadjusted_mean"] == pytest.approx(1.545, abs=0.001)
    assert tbn["mu_unadjusted_all_planned"] == pytest.approx(1.195, abs=0.001)
    assert tbn["truth_target"] == pytest.approx(1.400, abs=0.001)
    assert tbn["averaged_mean"] == pytest.approx(1.4147, abs=0.001)
    assert tbn["conditional_mean"] == pytest.approx(1.4802, abs=0.001)
    assert tbn["bf_bias"] == pytest.approx(1.679, abs=0.01) and tbn["bf_effect"] == pytest.approx(21.6, abs=0.1)
    assert tbn["mean_true_reported"] - tbn["mean_true_planned"] > 0.1  # the omitted studies had smaller true effects


def test_counterfactual_adds_back_exactly_the_omitted_tb_n_results():
    """Omission probability 0 reproduces the dataset plus the omitted Tb_N rows; anything else is rejected."""
    sim = simulate_dataset(DEFAULT_SEED)
    full = simulate_dataset(DEFAULT_SEED, omit_probability=0.0)
    assert D.SELECTION_OMIT_PROB == 0.9  # restored after the context
    assert full.truth["selection"]["omitted_studies"] == []
    assert len(full.arms) - len(sim.arms) == 4 + 3 + 4  # Tb_N rows of SimStudyA2019, F2021 (one EV arm), I2023
    _check_counterfactual(sim, full)  # passes
    with pytest.raises(RuntimeError, match="counterfactual"):
        _check_counterfactual(sim, simulate_dataset(DEFAULT_SEED + 1))
    with pytest.raises(RuntimeError, match="counterfactual"):
        _check_counterfactual(sim, sim)  # the omitted rows are missing


#: Hand-made frame: errors, 95% half-widths and Bayes factors per seed 1..4.
_TBN = {
    "averaged": ([0.1, -0.1, 0.2, 0.0], [0.5, 0.5, 0.15, 0.5]),  # seed 3 not covered
    "conditional": ([0.2, 0.2, 0.2, 0.2], [0.4] * 4),
    "unadjusted": ([0.3, 0.1, 0.3, 0.1], [0.35] * 4),
}
_OTHER = {  # (BMD, Tb_Sp) per seed
    "averaged": ([(0.1, -0.1)] * 3 + [(0.1, 0.3)], [(0.5, 0.5)] * 3 + [(0.5, 0.25)]),  # Tb_Sp seed 4 not covered
    "conditional": ([(0.0, 0.0)] * 4, [(0.4, 0.4)] * 4),
    "unadjusted": ([(-0.2, 0.2)] * 4, [(0.35, 0.35)] * 4),
}
_TBN_BF_BIAS, _OTHER_BF_BIAS = [5.0, 12.0, 0.2, 3.0], [(0.5, 1.0), (2.0, 1.0), (0.2, 3.0), (1.0, 0.25)]


def _row(seed: int, outcome: str, target: float, errors: dict, halves: dict, **extra) -> dict:
    row = {"seed": seed, "outcome": outcome, "analysed": True, "truth_target": target, "bf_heterogeneity": 1.0}
    for estimator in ESTIMATORS:
        mean = target + errors[estimator]
        row |= {
            f"{estimator}_mean": mean,
            f"{estimator}_q025": mean - halves[estimator],
            f"{estimator}_q975": mean + halves[estimator],
            f"{estimator}_error": errors[estimator],
            f"{estimator}_covered": mean - halves[estimator] <= target <= mean + halves[estimator],
        }
    return row | extra


def _hand_made() -> pd.DataFrame:
    """4 seeds: Tb_N plus BMD and Tb_Sp each, and one unanalysable row (Ct_Th, k = 2) with extreme values."""
    rows = []
    for i, seed in enumerate(range(1, 5)):
        target = [1.4, 1.4, 1.6, 1.5][i]
        rows.append(
            _row(
                seed,
                "Tb_N",
                target,
                {e: v[0][i] for e, v in _TBN.items()},
                {e: v[1][i] for e, v in _TBN.items()},
                selected=True,
                k=6,
                n_significant=[6, 5, 6, 6][i],
                n_omitted=[3, 4, 3, 3][i],
                mean_true_planned=target,
                mean_true_reported=target + 0.1,
                mu_unadjusted_all_planned=[1.5, 1.6, 1.6, 1.6][i],
                bf_bias=_TBN_BF_BIAS[i],
                bf_effect=[10.0, 10.0, 10.0, 0.1][i],
                post_selection=[0.8, 0.9, 0.3, 0.6][i],
            )
        )
        for j, outcome in enumerate(("BMD", "Tb_Sp")):
            errors = {e: v[0][i][j] for e, v in _OTHER.items()}
            rows.append(
                _row(
                    seed,
                    outcome,
                    1.0,
                    errors,
                    {e: v[1][i][j] for e, v in _OTHER.items()},
                    selected=False,
                    k=8,
                    n_significant=8 if (j == 0 and i < 2) else 7,
                    n_omitted=0,
                    mean_true_planned=1.0,
                    mean_true_reported=1.0,
                    mu_unadjusted_all_planned=1.0 + errors["unadjusted"],
                    bf_bias=_OTHER_BF_BIAS[i][j],
                    bf_effect=4.0 if j == 0 else 2.0,
                    post_selection=0.5,
                )
            )
    bad = _row(4, "Ct_Th", 1.0, dict.fromkeys(ESTIMATORS, 5.0), dict.fromkeys(ESTIMATORS, 0.1), selected=False)
    rows.append(bad | {"analysed": False, "k": 2, "bf_bias": 100.0, "bf_effect": 100.0, "post_selection": 1.0})
    return pd.DataFrame(rows).reindex(columns=list(COLUMNS))


def test_estimator_table_on_a_hand_made_frame():
    table = estimator_table(_hand_made()).set_index(["group", "estimator"])
    assert (table.loc["selected", "n"] == 4).all() and (table.loc["unselected", "n"] == 8).all()  # Ct_Th left out
    avg = table.loc[("selected", "averaged")]
    assert avg["mean_error"] == pytest.approx(0.05)
    assert avg["rmse"] == pytest.approx(np.sqrt(0.015))
    assert avg["coverage"] == pytest.approx(0.75) and avg["coverage_mcse"] == pytest.approx(0.25)
    assert avg["mean_width"] == pytest.approx((1.0 + 1.0 + 0.3 + 1.0) / 4)
    # one row per seed: the MC SE is the plain sd / sqrt(4)
    assert avg["mean_error_mcse"] == pytest.approx(np.std([0.1, -0.1, 0.2, 0.0], ddof=1) / 2)
    assert table.loc[("selected", "unadjusted"), "mean_error"] == pytest.approx(0.2)
    assert table.loc[("selected", "conditional"), "rmse"] == pytest.approx(0.2)
    other = table.loc[("unselected", "averaged")]
    assert other["mean_error"] == pytest.approx(0.05)
    # clustered by seed: per-seed totals 0, 0, 0, 0.4 over 2 rows each -> sqrt(4/3 * 0.12) / 8
    assert other["mean_error_mcse"] == pytest.approx(0.05)
    assert other["coverage"] == pytest.approx(7 / 8) and other["mean_width"] == pytest.approx(7.5 / 8)
    unadj = table.loc[("unselected", "unadjusted")]
    assert unadj["mean_error"] == pytest.approx(0.0, abs=1e-12) and unadj["rmse"] == pytest.approx(0.2)
    assert unadj["coverage"] == 1.0


def test_rates_and_quantiles_on_a_hand_made_frame():
    runs = _hand_made()
    rates = rates_table(runs).set_index("quantity")
    assert rates.loc["bf_bias_gt_3", "selected"] == pytest.approx(0.5)  # 5, 12 (3.0 is not > 3)
    assert rates.loc["bf_bias_gt_3", "selected_mcse"] == pytest.approx(np.std([1, 1, 0, 0], ddof=1) / 2)
    assert rates.loc["bf_bias_gt_10", "selected"] == pytest.approx(0.25)
    assert rates.loc["bf_bias_lt_1/3", "selected"] == pytest.approx(0.25)
    assert rates.loc["bf_bias_gt_3", "unselected"] == 0.0 and rates.loc["bf_bias_lt_1/3", "unselected"] == 0.25
    assert (rates["selected_n"] == 4).all() and (rates["unselected_n"] == 8).all()
    assert rates.loc["bf_effect_gt_3", "selected"] == pytest.approx(0.75)
    assert rates.loc["bf_effect_lt_1/3", "selected"] == pytest.approx(0.25)
    assert rates.loc["bf_effect_gt_3", "unselected"] == pytest.approx(0.5)  # BMD 4, Tb_Sp 2
    assert rates.loc["bf_heterogeneity_gt_3", "selected"] == 0.0
    assert rates.loc["post_selection", "selected"] == pytest.approx(0.65)
    assert rates.loc["share_all_significant", "selected"] == pytest.approx(0.75)
    assert rates.loc["share_all_significant", "unselected"] == pytest.approx(2 / 8)
    assert rates.loc["n_omitted", "selected"] == pytest.approx(3.25)
    assert rates.loc["true_mean_reported_minus_planned", "selected"] == pytest.approx(0.1)
    # unadjusted means 1.7, 1.5, 1.9, 1.6 vs counterfactual 1.5, 1.6, 1.6, 1.6
    assert rates.loc["inflation_by_selection", "selected"] == pytest.approx(0.1)
    assert rates.loc["share_inflated_by_selection", "selected"] == pytest.approx(0.5)  # a zero shift is not inflation
    assert rates.loc["share_inflated_by_selection", "unselected"] == 0.0
    assert rates.loc["averaged_minus_all_planned", "selected"] == pytest.approx(-0.05)
    assert rates.loc["averaged_minus_unadjusted", "selected"] == pytest.approx(-0.15)
    assert rates.loc["conditional_minus_unadjusted", "unselected"] == pytest.approx(0.0, abs=1e-12)
    q = bf_quantiles(runs).set_index("group")
    # unselected values sorted: 0.2, 0.25, 0.5, 1, 1, 1, 2, 3 (linear interpolation)
    assert q.loc["unselected", "n"] == 8
    np.testing.assert_allclose(
        q.loc["unselected", ["q05", "q25", "q50", "q75", "q95"]].to_numpy(dtype=float),
        [0.2175, 0.4375, 1.0, 1.25, 2.65],
    )
    assert q.loc["selected", "q50"] == pytest.approx(4.0)  # 0.2, 3, 5, 12


def test_by_outcome_done_when_and_default_position_on_a_hand_made_frame():
    runs = _hand_made()
    by = by_outcome_table(runs).set_index("outcome")
    assert list(by.index) == ["BMD", "Tb_N", "Tb_Sp"]  # design order; Ct_Th has no analysed row
    assert by.loc["Tb_N", "selected"] and by.loc["Tb_N", "bf_bias_gt_3"] == pytest.approx(0.5)
    assert by.loc["BMD", "bf_bias_lt_1/3"] == pytest.approx(0.25) and by.loc["Tb_Sp", "bf_bias_lt_1/3"] == 0.25
    assert by.loc["BMD", "bf_bias_q50"] == pytest.approx(0.75)  # 0.2, 0.5, 1, 2
    assert by.loc["Tb_Sp", "averaged_coverage"] == pytest.approx(0.75) and by.loc["BMD", "averaged_coverage"] == 1.0
    assert by.loc["Tb_Sp", "averaged_mean_error"] == pytest.approx(0.0, abs=1e-12)
    assert by.loc["BMD", "unadjusted_mean_error"] == pytest.approx(-0.2)
    checks = done_when(runs)
    a, b, c = (checks[k] for k in ("a_unselected_averaged", "b_tb_n_averaged_vs_unadjusted", "c_bias_false_alarm"))
    assert a["mean_error"] == pytest.approx(0.05) and a["coverage"] == pytest.approx(7 / 8)
    assert not a["passed"]  # |mean error| 0.05 <= 0.15 but coverage 0.875 < 0.90
    # paired by seed: |0.05| - |0.2| = -0.15; per-seed differences -0.2, -0.2, -0.1, -0.1
    assert b["abs_mean_error_difference"] == pytest.approx(-0.15)
    assert b["abs_mean_error_difference_mcse"] == pytest.approx(np.std([-0.2, -0.2, -0.1, -0.1], ddof=1) / 2)
    assert b["mean_abs_error_difference"] == pytest.approx(0.1 - 0.2) and b["passed"]
    assert c["rate"] == 0.0 and c["n"] == 8 and c["passed"]
    assert checks["all_passed"] is False
    pos = default_seed_position(runs.iloc[0], runs)  # Tb_N of seed 1: BF_bias 5
    assert pos["bf_bias"]["value"] == 5.0
    assert pos["bf_bias"]["rank_among_selected"] == pytest.approx(3 / 4)  # 5, 0.2, 3
    assert pos["bf_bias"]["rank_among_unselected"] == 1.0
    assert pos["inflation_by_selection"]["value"] == pytest.approx(0.2)
    assert pos["averaged_error"]["rank_among_selected"] == pytest.approx(3 / 4)  # 0.1, -0.1, 0.0
