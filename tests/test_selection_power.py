"""Power study of the small-study models for the simulated design (:mod:`analysis.studies.selection_power`).

Fast tests (two simulated datasets fitted in full, ~15 s with the nutpie compile): the per-seed
frame's columns and values against an independent reading of the simulated dataset and its
truth, exact rates of :func:`power_table` on a hand-made frame, and the default seed's known
numbers. Seeds: simulation seed 1 and the default seed; fit seed ``FIT_SEED`` (1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.dataset import simulate_design as D
from analysis.dataset.simulate import DEFAULT_SEED, simulate_dataset
from analysis.studies.selection_power import (
    COLUMNS,
    FIT_SEED,
    _check_counterfactual,
    default_seed_position,
    flag_rates_by_outcome,
    power_table,
    simulate_and_fit,
)

SEED = 1


@pytest.fixture(scope="module")
def seed1() -> pd.DataFrame:
    return simulate_and_fit(SEED)


@pytest.fixture(scope="module")
def default_runs() -> pd.DataFrame:
    return simulate_and_fit(DEFAULT_SEED)


def test_per_seed_frame_matches_the_simulated_dataset(seed1):
    sim = simulate_dataset(SEED)
    truth = sim.truth
    assert list(seed1.columns) == list(COLUMNS) and FIT_SEED == 1
    assert list(seed1["outcome"]) == list(D.OUTCOMES) and (seed1["seed"] == SEED).all()
    reporting = sim.arms.groupby("outcome")["study"].nunique()  # independent of the effect table
    by = seed1.set_index("outcome")
    for outcome in D.OUTCOMES:
        assert by.loc[outcome, "k"] == reporting[outcome]
    tbn = by.loc["Tb_N"]
    omitted = truth["selection"]["omitted_studies"]
    assert tbn["selected"] and by["selected"].sum() == 1
    assert tbn["n_omitted"] == len(omitted) and tbn["k"] == tbn["k_planned"] - len(omitted) and tbn["k_planned"] == 9
    assert (by.drop(index="Tb_N")["n_omitted"] == 0).all() and (
        by.drop(index="Tb_N")["k"] == by.drop(index="Tb_N")["k_planned"]
    ).all()
    # benefit orientation: Tb_Sp (direction -1) has a positive population mu and a positive pooled estimate
    assert by.loc["Tb_Sp", "direction"] == -1 and by.loc["Tb_Sp", "mu_true"] == pytest.approx(-D.MU["Tb_Sp"])
    assert (by["mu_unadjusted"] > 0).all() and (by["mu_selection"] > 0).all()
    # truth: planned-study mean recomputed from truth.json, Tb_N over all nine planning studies
    planned = [s for s in truth["study_effects"] if s not in truth["selection"]["not_planned_studies"]]
    assert tbn["mean_true_planned"] == pytest.approx(np.mean([truth["study_effects"][s]["Tb_N"] for s in planned]))
    # the counterfactual only differs for Tb_N, and only if a study was omitted
    others = by.drop(index="Tb_N")
    np.testing.assert_allclose(others["mu_unadjusted_all_planned"], others["mu_unadjusted"], rtol=0, atol=1e-12)
    assert (tbn["mu_unadjusted_all_planned"] != tbn["mu_unadjusted"]) == (len(omitted) > 0)
    for col in ("prob_selection", "pet_n_prob", "pet_se_prob"):
        assert by[col].between(0, 1).all()
    assert (by["pet_n_slope_q025"] < by["pet_n_slope_q975"]).all()
    assert (by["pet_n_excludes0"] == (by["pet_n_slope_q025"] > 0)).all()
    assert by["selection_converged"].all() and by["analysed"].all()
    assert (by["n_significant"] <= by["k"]).all()


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


def _hand_made() -> pd.DataFrame:
    """4 seeds: Tb_N plus two unselected outcomes each, and one unanalysable row (k = 2)."""
    rows = []
    tbn_prob = [0.85, 0.90, 0.97, 0.50]  # 0.90 sits on a threshold: not flagged (strict >)
    other_prob = [[0.81, 0.10], [0.20, 0.30], [0.91, 0.40], [0.50, 0.96]]
    tbn_unadj, tbn_all = [1.7, 1.5, 1.9, 1.6], [1.5, 1.6, 1.6, 1.6]
    planned_mean, sel_mu = [1.4, 1.5, 1.6, 1.7], [1.6, 1.5, 1.7, 1.6]
    for i, seed in enumerate(range(1, 5)):
        rows.append(
            {
                "seed": seed,
                "outcome": "Tb_N",
                "selected": True,
                "analysed": True,
                "n_omitted": i,
                "prob_selection": tbn_prob[i],
                "pet_n_prob": 0.5,
                "pet_se_prob": 0.99,
                "pet_n_excludes0": i == 0,
                "pet_se_excludes0": True,
                "mu_true": 1.6,
                "mu_unadjusted": tbn_unadj[i],
                "mu_unadjusted_all_planned": tbn_all[i],
                "mean_true_planned": planned_mean[i],
                "mean_true_reported": planned_mean[i] + 0.1,
                "mu_selection": sel_mu[i],
                "mu_headline": tbn_unadj[i] - 0.5,
                "selection_converged": i != 3,
            }
        )
        for j, outcome in enumerate(("BMD", "Tb_Sp")):
            rows.append(
                {
                    "seed": seed,
                    "outcome": outcome,
                    "selected": False,
                    "analysed": True,
                    "n_omitted": 0,
                    "prob_selection": other_prob[i][j],
                    "pet_n_prob": 0.2,
                    "pet_se_prob": 0.85,
                    "pet_n_excludes0": (i, j) == (2, 1),
                    "pet_se_excludes0": False,
                    "mu_true": 1.0,
                    "mu_unadjusted": 1.0,
                    "mu_unadjusted_all_planned": 1.0,
                    "mean_true_planned": 1.0,
                    "mean_true_reported": 1.0,
                    "mu_selection": 0.9,
                    "mu_headline": 0.8,
                    "selection_converged": True,
                }
            )
    rows.append(
        {
            "seed": 4,
            "outcome": "Ct_Th",
            "selected": False,
            "analysed": False,
            "n_omitted": 0,
            "mu_true": 1.0,
            "mean_true_planned": 1.0,
            "selection_converged": False,
            "prob_selection": 0.99,
            "pet_n_excludes0": True,
            "pet_se_excludes0": True,
        }
    )
    return pd.DataFrame(rows).reindex(columns=list(COLUMNS))


def test_power_table_rates_on_a_hand_made_frame():
    table = power_table(_hand_made())
    rates = table[table["quantity"] == "flag_rate"].set_index(["rule", "threshold"])
    expect_sel = {0.8: 0.75, 0.9: 0.25, 0.95: 0.25}
    expect_other = {0.8: 3 / 8, 0.9: 2 / 8, 0.95: 1 / 8}
    for t in (0.8, 0.9, 0.95):
        assert rates.loc[("selection", t), "selected"] == pytest.approx(expect_sel[t])
        assert rates.loc[("selection", t), "unselected"] == pytest.approx(expect_other[t])
        assert rates.loc[("PET-sqrt_inv_n", t), "selected"] == 0.0
        assert rates.loc[("PET-sei", t), "selected"] == 1.0
        assert rates.loc[("PET-sei", t), "unselected"] == (1.0 if t == 0.8 else 0.0)
    eti = table[(table["quantity"] == "flag_rate") & table["threshold"].isna()].set_index("rule")
    assert eti.loc["PET-sqrt_inv_n eti95", "selected"] == pytest.approx(0.25)
    assert eti.loc["PET-sqrt_inv_n eti95", "unselected"] == pytest.approx(1 / 8)
    assert eti.loc["PET-sei eti95", "selected"] == 1.0 and eti.loc["PET-sei eti95", "unselected"] == 0.0
    # the unanalysable row is left out: 4 and 8 analyses
    assert (rates["selected_n"] == 4).all() and (rates["unselected_n"] == 8).all()
    # one row per seed in the selected group: the MC SE is the plain sd / sqrt(n) ([1, 1, 1, 0]: 0.5 / 2)
    assert rates.loc[("selection", 0.8), "selected_mcse"] == pytest.approx(0.25)
    q = table[table["quantity"] != "flag_rate"].set_index("quantity")
    assert q.loc["inflation_vs_population_mu", "selected"] == pytest.approx(0.075)
    assert q.loc["inflation_by_selection", "selected"] == pytest.approx(0.1)
    assert q.loc["share_inflated_by_selection", "selected"] == pytest.approx(0.5)  # a zero shift is not inflation
    assert q.loc["inflation_vs_planned_mean", "selected"] == pytest.approx(0.125)
    assert q.loc["shift_selection_adjusted", "selected"] == pytest.approx(-0.075)
    assert q.loc["shift_headline_adjusted", "selected"] == pytest.approx(-0.5)
    assert q.loc["true_mean_reported_minus_planned", "selected"] == pytest.approx(0.1)
    assert q.loc["selection_converged", "selected"] == pytest.approx(0.75)
    assert q.loc["n_omitted", "selected"] == pytest.approx(1.5)
    assert q.loc["inflation_vs_population_mu", "unselected"] == pytest.approx(0.0)
    assert q.loc["shift_selection_adjusted", "unselected"] == pytest.approx(-0.1)
    assert q.loc["selection_converged", "unselected"] == 1.0


def test_flag_rates_by_outcome_and_rank_of_a_row():
    runs = _hand_made()
    by = flag_rates_by_outcome(runs).set_index(["rule", "threshold"])
    assert by.loc[("selection", 0.8), "Tb_N"] == pytest.approx(0.75)
    assert by.loc[("selection", 0.8), "BMD"] == pytest.approx(0.5)  # 0.81, 0.20, 0.91, 0.50
    assert by.loc[("selection", 0.8), "Tb_Sp"] == pytest.approx(0.25)  # 0.10, 0.30, 0.40, 0.96
    assert np.isnan(by.loc[("selection", 0.8), "Ct_Th"])  # only an unanalysable row
    pos = default_seed_position(runs.iloc[0], runs)  # Tb_N of seed 1: P = 0.85
    assert pos["prob_selection"]["value"] == pytest.approx(0.85)
    assert pos["prob_selection"]["rank_among_selected"] == pytest.approx(2 / 4)  # 0.85, 0.50
    assert pos["prob_selection"]["rank_among_unselected"] == pytest.approx(6 / 8)
    assert pos["inflation_by_selection"]["value"] == pytest.approx(0.2)


def test_default_seed_reproduces_the_known_tb_n_numbers(default_runs):
    """The default dataset: Tb_N k = 6 (3 of 9 omitted), P(omega_2 < 1) about 0.78-0.80.

    P(omega_2 < 1) is a NUTS estimate from 4 x 1000 draws (bulk ESS > 1000): its Monte Carlo SE is
    about sqrt(0.8 * 0.2 / 1000) = 0.013, so (0.6, 0.9) is > 7 SE either side of the values seen
    (0.78 in the issue, 0.796 with the current sampler) and still excludes a decisive flag (> 0.9).
    The unadjusted mu comes from the exact engine (deterministic): 1.545 as in the issue, whereas
    the counterfactual with all 9 planned results reported gives 1.195: the selection DID inflate
    the estimate, even though 1.545 is below the population mu 1.6.
    """
    by = default_runs.set_index("outcome")
    tbn = by.loc["Tb_N"]
    assert tbn["k"] == 6 and tbn["n_omitted"] == 3 and tbn["n_significant"] == 6
    assert 0.6 < tbn["prob_selection"] < 0.9
    assert tbn["selection_converged"]
    assert tbn["mu_unadjusted"] == pytest.approx(1.545, abs=0.001)
    assert tbn["mu_unadjusted_all_planned"] == pytest.approx(1.195, abs=0.001)
    assert tbn["mu_unadjusted"] < tbn["mu_true"] == pytest.approx(1.6)
    assert tbn["mean_true_reported"] - tbn["mean_true_planned"] > 0.1  # the omitted studies had smaller true effects
    assert not tbn["pet_n_excludes0"] and not tbn["pet_se_excludes0"]
    assert by.loc["BMD", "prob_selection"] > 0.85  # an outcome without selection scores higher than Tb_N
