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
            "scenario": ["null"] * 8,
            "likelihood": ["arm"] * 8,
        }
    )
    summary = summarise(pd.concat([rows, rows.assign(statistic="", p_value=np.nan)]))  # error rows are not checks
    (row,) = summary.to_dict(orient="records")
    assert row["n_checks"] == 8 and row["n_datasets"] == 4
    assert row["rate_0.05"] == pytest.approx(2 / 8) and row["rate_0.1"] == pytest.approx(3 / 8)
    per_rep = np.array([1, 0, 1, 0]) / 2  # flags at 0.05 per replicate (2 outcomes each)
    expected_se = np.sqrt(4 / 3 * np.sum((2 * per_rep - 2 * 0.25) ** 2)) / 8
    assert row["rate_0.05_mcse"] == pytest.approx(expected_se)
    assert "| arm | Q | 25.0% (" in markdown_table(summary)


def test_prediction_summary_compares_predicted_and_observed():
    from analysis.studies.calibration import predictions_table, summarise_predictions

    rows = pd.DataFrame(
        {
            "rep": [0, 1, 2, 3, 0, 1, 2, 3],
            "statistic": ["replication"] * 4 + ["new_study_interval"] * 4,
            "predicted": [0.8, 0.6, 0.9, 0.5, 0.95, 0.95, 0.95, 0.95],
            "observed": [1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0],
        }
    )
    out = summarise_predictions(rows).set_index("statistic")
    assert out.loc["replication", "predicted_mean"] == pytest.approx(0.7)
    assert out.loc["replication", "observed_rate"] == pytest.approx(0.75)
    assert out.loc["replication", "brier"] == pytest.approx(np.mean([0.04, 0.36, 0.01, 0.25]))
    assert out.loc["new_study_interval", "observed_rate"] == pytest.approx(0.75)
    assert "| replication | 4 | 70.0% | 75.0%" in predictions_table(out.reset_index())


def test_misfit_scenarios_simulate_what_they_say():
    from analysis.dataset import simulate_design as D
    from analysis.studies.calibration import CalibrationTask, checked_outcomes, simulate_scenario

    null, _ = simulate_scenario(CalibrationTask(0, 11, 1, "null"))
    heavy, _ = simulate_scenario(CalibrationTask(0, 11, 1, "heavy_tails"))
    selected, _ = simulate_scenario(CalibrationTask(0, 11, 1, "selection"))
    assert null.truth["selection"]["omit_probability_if_nonsignificant"] == 0.0
    assert selected.truth["selection"]["omit_probability_if_nonsignificant"] == D.SELECTION_OMIT_PROB
    assert not heavy.arms["mean"].equals(null.arms["mean"])  # other study effects, same design
    assert heavy.arms[["study", "arm", "outcome", "n"]].equals(null.arms[["study", "arm", "outcome", "n"]])
    task = CalibrationTask(0, 11, 1, "null", outcomes_per_dataset=2)
    chosen = checked_outcomes(task, list(D.OUTCOMES))
    assert len(chosen) == 2 and chosen == checked_outcomes(task, list(D.OUTCOMES))
    assert checked_outcomes(CalibrationTask(0, 11, 1, "selection"), list(D.OUTCOMES)) == [D.SELECTION_OUTCOME]


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


def test_heavy_tailed_study_effects_keep_the_normal_covariance():
    from analysis.dataset import simulate_design as D
    from analysis.dataset.simulate import _study_effects

    n = 200_000
    normal = _study_effects(np.random.default_rng(1), np.zeros(n))
    heavy = _study_effects(np.random.default_rng(1), np.zeros(n), effects_df=5.0)
    sd = np.array([D.TAU_RESIDUAL[k] for k in D.OUTCOMES])
    assert np.allclose(normal.std(axis=0), sd, rtol=0.01) and np.allclose(heavy.std(axis=0), sd, rtol=0.03)
    kurtosis = ((heavy - heavy.mean(axis=0)) ** 4).mean(axis=0) / heavy.var(axis=0) ** 2
    assert np.all(kurtosis > 4.5)  # t_5: 3 + 6 / (5 - 4) = 9; normal: 3
    with pytest.raises(ValueError, match="exceed 2"):
        _study_effects(np.random.default_rng(1), np.zeros(3), effects_df=2.0)


def test_runs_combine_when_their_replicates_are_disjoint(tmp_path):
    from analysis.studies.calibration import combine, read_rows

    def run(reps):
        return pd.DataFrame(
            {
                "scenario": "null",
                "rep": reps,
                "outcome": "BMD",
                "likelihood": "arm",
                "statistic": "Q",
                "p_value": 0.5,
            }
        )

    path = tmp_path / "calibration.csv"
    run([0, 1]).to_csv(path, index=False)
    first = read_rows(path)
    assert (first["scenario"] == "null").all()  # "null" is a scenario name, not a missing value
    both = combine([first, run([2, 3])])
    assert sorted(both["rep"]) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="more than one run"):
        combine([first, run([1, 2])])
