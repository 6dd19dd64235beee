"""Fast tests of the calibration study of the predictive checks (:mod:`analysis.studies.calibration`); no NUTS."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.studies.calibration import make_tasks, markdown_table, summarise


def test_tasks_continue_with_the_same_seeds():
    assert make_tasks(2, seed=5) + make_tasks(3, seed=5, first_rep=2) == make_tasks(5, seed=5)


def test_false_alarm_rate_and_its_clustered_monte_carlo_se():
    rows = pd.DataFrame(
        {
            "rep": [0, 0, 1, 1, 2, 2, 3, 3],
            "statistic": ["Q"] * 8,
            "p_value": [0.01, 0.5, 0.2, 0.07, 0.9, 0.03, 0.6, 0.4],
            "outcome": list("abababab"),
        }
    )
    summary = summarise(pd.concat([rows, rows.assign(statistic="", p_value=np.nan)]))  # error rows are not checks
    (row,) = summary.to_dict(orient="records")
    assert row["n_checks"] == 8 and row["n_datasets"] == 4
    assert row["rate_0.05"] == pytest.approx(2 / 8) and row["rate_0.1"] == pytest.approx(3 / 8)
    per_rep = np.array([1, 0, 1, 0]) / 2  # flags at 0.05 per replicate (2 outcomes each)
    expected_se = np.sqrt(4 / 3 * np.sum((2 * per_rep - 2 * 0.25) ** 2)) / 8
    assert row["rate_0.05_mcse"] == pytest.approx(expected_se)
    assert "| Q | 8 (4) | 25.0%" in markdown_table(summary)


def test_outlier_scenario_moves_the_treatment_arms_of_one_study_only():
    from analysis.dataset.simulate import simulate_dataset
    from analysis.studies.calibration import OUTLIER_SHIFT, shift_one_study

    arms = simulate_dataset(3, omit_probability=0.0).arms
    shifted, study = shift_one_study(arms, np.random.default_rng(0))
    moved = (shifted["mean"] - arms["mean"]).abs() > 0
    assert set(arms.loc[moved, "study"]) == {study} and set(arms.loc[moved, "role"]) == {"treatment"}
    sd = arms["sd"].fillna(arms["sem"] * np.sqrt(arms["n"]))  # some simulated studies report SEM
    ratio = (shifted["mean"] - arms["mean"])[moved] / sd[moved]
    assert np.allclose(ratio.abs(), OUTLIER_SHIFT) and np.sign(ratio).nunique() == 1  # one sign per dataset
    assert len(make_tasks(2, seed=1, scenario="outlier")) == 2
    with pytest.raises(ValueError, match="scenario"):
        make_tasks(1, seed=1, scenario="nope")
