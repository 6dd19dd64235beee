"""The outcome-reporting-bias power study (analysis.studies.reporting_bias_power).

Fast: the design and truth, the data-generating step (shapes, moments, the two reporting rules,
seeds), the data handed to the fit (dropped outcomes, not fittable replications), the model with
shared data (one fingerprint for every reporting pattern, the builder's log density) and the
summary on hand-made rows. Slow: two replications end to end with short chains.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytensor
import pytest

from analysis.fitting.multivariate import multivariate_model
from analysis.fitting.nuts import model_fingerprint
from analysis.studies import reporting_bias_power as rbp
from models.multivariate import within_covariance
from models.priors import default_priors

PRIORS = default_priors("SMD")


@pytest.fixture(scope="module")
def design() -> rbp.FlagshipDesign:
    return rbp.flagship_design()


@pytest.fixture(scope="module")
def truth() -> rbp.Truth:
    return rbp.true_parameters()


def test_truth_is_the_flagship_simulation_on_the_benefit_scale(truth):
    np.testing.assert_allclose(truth.mu, [2.0, 1.6, 1.5, 1.2])
    np.testing.assert_allclose(truth.tau, [0.6, 0.5, 0.5, 0.45])
    assert truth.R.shape == (4, 4) and np.allclose(truth.R, truth.R.T) and np.allclose(np.diag(truth.R), 1.0)
    assert truth.R[0, 1] == 0.6 and truth.R[2, 3] == 0.2  # BV_TV~Tb_N, Tb_Sp~Tb_Th of R_BETWEEN_BENEFIT
    assert np.linalg.eigvalsh(truth.sigma).min() > 0
    assert truth.rho_within == 0.6


def test_design_fills_unreported_variances_with_the_study_mean(design):
    from analysis.dataset.load import load_dataset
    from analysis.fitting.multivariate_data import multivariate_data_from_dataset

    flagship = multivariate_data_from_dataset(load_dataset(rbp.DEFAULT_DATASET))
    assert design.vi.shape == (10, 4) and not np.isnan(design.vi).any()
    assert design.outcome_ids == ["BV_TV", "Tb_N", "Tb_Sp", "Tb_Th"]
    np.testing.assert_array_equal(design.reported, flagship.reported)
    seen = flagship.reported
    np.testing.assert_array_equal(design.vi[seen], flagship.vi[seen])
    for i, j in zip(*np.nonzero(~seen)):
        assert design.vi[i, j] == pytest.approx(np.mean(flagship.vi[i, seen[i]]))
    assert (~seen).sum() == 8  # 4 studies miss Tb_N, 2 of them also Tb_Sp and Tb_Th


def test_simulation_shapes_and_seed_reproducibility(design, truth):
    for condition in rbp.CONDITIONS:
        a = rbp.simulate_replication(design, truth, condition, np.random.default_rng([5, 1]))
        b = rbp.simulate_replication(design, truth, condition, np.random.default_rng([5, 1]))
        c = rbp.simulate_replication(design, truth, condition, np.random.default_rng([6, 1]))
        assert a.theta.shape == a.y.shape == a.reported.shape == (10, 4) and a.estimable.shape == (4,)
        np.testing.assert_array_equal(a.y, b.y)
        np.testing.assert_array_equal(a.reported, b.reported)
        assert not np.allclose(a.y, c.y)


def test_ignorable_condition_reproduces_the_flagship_pattern(design, truth):
    rng = np.random.default_rng(3)
    for _ in range(20):
        rep = rbp.simulate_replication(design, truth, "ignorable", rng)
        np.testing.assert_array_equal(rep.reported, design.reported)
        assert rep.estimable.all() and rep.fittable


def test_orb_condition_omits_exactly_the_non_significant_cells(design, truth):
    rng = np.random.default_rng(4)
    bv = design.outcome_ids.index("BV_TV")
    omitted = 0
    for _ in range(200):
        rep = rbp.simulate_replication(design, truth, "orb", rng)
        significant = rep.y / np.sqrt(design.vi) > 1.96
        assert rep.reported[:, bv].all()
        others = np.arange(4) != bv
        np.testing.assert_array_equal(rep.reported[:, others], significant[:, others])
        np.testing.assert_array_equal(rep.estimable, rep.reported.sum(axis=0) >= 2)
        omitted += int((~rep.reported).sum())
    assert omitted > 0  # the rule does omit cells on this design


def test_simulated_effects_have_the_true_moments(design, truth):
    rng = np.random.default_rng(11)
    reps = [rbp.simulate_replication(design, truth, "ignorable", rng) for _ in range(3000)]
    theta = np.stack([r.theta for r in reps])
    noise = np.stack([r.y - r.theta for r in reps])
    np.testing.assert_allclose(theta.reshape(-1, 4).mean(axis=0), truth.mu, atol=0.03)
    np.testing.assert_allclose(np.cov(theta.reshape(-1, 4).T), truth.sigma, atol=0.03)
    S = within_covariance(design.vi, 0.6)
    np.testing.assert_allclose(np.cov(noise[:, 2].T), S[2], atol=0.03)  # the study with the largest variances


def _replication(reported: np.ndarray, condition: str = "orb") -> rbp.Replication:
    y = np.arange(40, dtype=float).reshape(10, 4) / 10 + 1
    return rbp.Replication(condition, y.copy(), y, reported, reported.sum(axis=0) >= rbp.MIN_REPORTING)


def test_model_data_drops_outcomes_with_fewer_than_two_studies(design):
    reported = np.ones((10, 4), dtype=bool)
    reported[1:, 1] = False  # Tb_N: one study
    reported[:5, 3] = False
    data = rbp.model_data(design, _replication(reported))
    assert data.outcome_ids == ["BV_TV", "Tb_Sp", "Tb_Th"]
    assert data.provenance == "simulated" and data.rho_within_estimated and data.rho_within is None
    np.testing.assert_array_equal(data.reported, reported[:, [0, 2, 3]])
    np.testing.assert_allclose(data.vi[data.reported], design.vi[:, [0, 2, 3]][data.reported])
    assert np.isnan(data.yi[:5, 2]).all() and np.isnan(data.S[:5, 2, :]).all()
    only_bv = np.zeros((10, 4), dtype=bool)
    only_bv[:, 0] = True
    only_bv[0, 1:] = True  # one study per other outcome: none estimable
    assert rbp.model_data(design, _replication(only_bv)) is None


def test_not_fittable_replications_are_kept_as_rows(design, truth, monkeypatch):
    reported = np.zeros((10, 4), dtype=bool)
    reported[:, 0] = True

    def fake(design, truth, condition, rng):
        return _replication(reported, condition)

    monkeypatch.setattr(rbp, "simulate_replication", fake)
    task = rbp.make_tasks(1, 1, design, truth, PRIORS)[1]
    rows = pd.DataFrame(rbp.run_replication(task))
    assert len(rows) == 4 * 4 and not rows["fittable"].any() and rows["error"].eq("").all()
    assert set(rows["structure"]) == {"unstructured", "cs", "independent", "selected"}


def test_errors_are_rows_not_dropped(design, truth, monkeypatch):
    def broken(design, truth, condition, rng):
        raise RuntimeError("boom")

    monkeypatch.setattr(rbp, "simulate_replication", broken)
    rows = pd.DataFrame(rbp.run_replication(rbp.make_tasks(1, 1, design, truth, PRIORS)[0]))
    assert len(rows) == 16 and rows["error"].str.contains("boom").all()
    summary = rbp.summarise(rows)["ignorable"]
    assert summary["n_replication_errors"] == 1 and summary["n_fittable"] == 0


def test_tasks_have_own_reproducible_seeds_and_interleave_conditions(design, truth):
    tasks = rbp.make_tasks(3, 7, design, truth, PRIORS)
    assert [(t.condition, t.rep) for t in tasks[:4]] == [("ignorable", 0), ("orb", 0), ("ignorable", 1), ("orb", 1)]
    assert len({t.seed for t in tasks}) == 6
    assert [t.seed for t in tasks] == [t.seed for t in rbp.make_tasks(3, 7, design, truth, PRIORS)]
    assert tasks[0].seed != rbp.make_tasks(3, 8, design, truth, PRIORS)[0].seed


def _data_for(design, reported, shift=0.0):
    rep = _replication(reported)
    rep = dataclasses.replace(rep, y=rep.y + shift)
    return rbp.model_data(design, rep)


def test_shared_data_model_has_one_fingerprint_for_every_pattern_and_the_builders_logp(design):
    flagship = _data_for(design, design.reported)
    other = design.reported.copy()
    other[[1, 3], 2] = False
    patterned = _data_for(design, other, shift=0.3)
    complete = _data_for(design, np.ones((10, 4), dtype=bool), shift=-0.2)
    for structure in ("unstructured", "cs", "independent"):
        models = [rbp.shared_data_model(d, PRIORS, structure) for d in (flagship, patterned, complete)]
        assert len({model_fingerprint(m) for m in models}) == 1, structure
    # the log density is the builder's (python linker: no C compile in the fast suite)
    mode = pytensor.compile.mode.Mode(linker="py", optimizer="fast_compile")
    for data in (flagship, patterned):
        shared = rbp.shared_data_model(data, PRIORS, "cs")
        built = multivariate_model(data, PRIORS, structure="cs")
        point = {k: v + 0.2 for k, v in built.initial_point().items()}
        expected = built.compile_logp(mode=mode)(point)
        assert shared.compile_logp(mode=mode)(point) == pytest.approx(expected, rel=1e-12)


def _rows() -> pd.DataFrame:
    """Hand-made rows: 4 ignorable replications, one outcome tested (Tb_N) plus BV_TV, 'selected' structure only."""
    rows = []
    flags = [True, False, False, False]
    for rep, flag in enumerate(flags):
        for outcome, truth, mv, uv in (("BV_TV", 2.0, 2.1, 2.2), ("Tb_N", 1.6, 1.6 + 0.1 * rep, 1.8)):
            tested = outcome == "Tb_N"
            rows.append(
                {
                    "condition": "ignorable",
                    "rep": rep,
                    "seed": rep,
                    "structure": "selected",
                    "selected_structure": "cs" if rep < 3 else "independent",
                    "error": "",
                    "fittable": True,
                    "outcome": outcome,
                    "truth": truth,
                    "estimable": True,
                    "k_reported": 6 if tested else 10,
                    "has_missing": tested,
                    "z": -2.5 if (tested and flag) else (0.5 if tested else np.nan),
                    "flagged": flag if tested else False,
                    "mv_mean": mv,
                    "uv_mean": uv,
                    "mv_error": mv - truth,
                    "uv_error": uv - truth,
                    "converged": rep != 2,
                    "retried": rep == 2,
                    "seconds_replication": 10.0,
                }
            )
    # a fifth replication that was not fittable is left out of the rates
    rows.append(rows[-1] | {"rep": 4, "fittable": False, "estimable": False, "flagged": True, "mv_mean": np.nan})
    return pd.DataFrame(rows)


def test_summary_rates_and_mcses():
    summary = rbp.summarise(_rows(), target_reps=5)["ignorable"]
    assert summary["n_replications"] == 5 and summary["n_fittable"] == 4 and summary["n_not_fittable"] == 1
    assert summary["selection_count"] == {"unstructured": 0, "cs": 3, "independent": 1}
    assert summary["selection_frequency"]["cs"] == pytest.approx(3 / 4)
    selected = summary["structures"]["selected"]
    assert selected["n_fits"] == 4 and selected["n_not_converged"] == 1 and selected["n_retried"] == 1
    tbn = selected["outcomes"]["Tb_N"]
    assert tbn["n_estimable"] == 4 and tbn["n_with_missing"] == 4
    assert tbn["flag"]["rate"] == pytest.approx(0.25)
    assert tbn["flag"]["mcse"] == pytest.approx(np.sqrt(0.25 * 0.75 / 4))
    assert tbn["mean_z"]["mean"] == pytest.approx((-2.5 + 3 * 0.5) / 4)
    assert selected["any_outcome_flagged"]["rate"] == pytest.approx(0.25)
    assert selected["any_outcome_flagged"]["n"] == 4
    est = selected["estimation"]["Tb_N"]
    mv_err = np.array([0.0, 0.1, 0.2, 0.3])
    assert est["mv_mean_error"]["mean"] == pytest.approx(mv_err.mean())
    assert est["mv_mean_error"]["mcse"] == pytest.approx(mv_err.std(ddof=1) / 2)
    assert est["uv_mean_error"]["mean"] == pytest.approx(0.2) and est["uv_mean_error"]["mcse"] == pytest.approx(0.0)
    assert est["mv_rmse"]["rmse"] == pytest.approx(np.sqrt(np.mean(mv_err**2)))
    assert est["uv_rmse"]["rmse"] == pytest.approx(0.2)
    assert est["mv_minus_uv_error"]["mean"] == pytest.approx((mv_err - 0.2).mean())
    assert "BV_TV" not in selected["outcomes"] and "BV_TV" in selected["estimation"]


@pytest.mark.slow
def test_two_replications_end_to_end(design, truth, tmp_path):
    sampler = rbp.SamplerSettings(draws=200, tune=200, chains=2)
    tasks = rbp.make_tasks(1, 3, design, truth, PRIORS, sampler=sampler)
    rows = rbp.run_study(tasks, jobs=1)
    assert rows["error"].fillna("").eq("").all(), rows["error"].unique()
    assert len(rows) == 2 * 4 * 4
    fitted = rows[rows["fittable"] & rows["estimable"]]
    assert fitted["mv_mean"].notna().all() and fitted["uv_mean"].notna().all()
    ignorable = fitted[(fitted["condition"] == "ignorable") & fitted["outcome"].isin(["Tb_N", "Tb_Sp", "Tb_Th"])]
    assert ignorable["z"].notna().all() and (ignorable["k_reported"] == [6, 8, 8] * 4).all()
    selected = rows[rows["structure"] == "selected"]
    assert selected["selected_structure"].isin(["unstructured", "cs", "independent"]).all()
    summary = rbp.summarise(rows, target_reps=1)
    assert set(summary) == {"ignorable", "orb"}
    assert summary["ignorable"]["structures"]["selected"]["outcomes"]["Tb_N"]["n_estimable"] == 1
