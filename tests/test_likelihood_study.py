"""Fast tests of the likelihood simulation study (:mod:`analysis.studies.likelihood_study`); no NUTS."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.dataset.effects import compute_effects, study_effects
from analysis.dataset.load import load_dataset
from analysis.dataset.simulate import simulate_dataset, write_dataset
from analysis.studies.likelihood_study import (
    EXACT_CANDIDATES,
    LARGE_K,
    combine_runs,
    flagship_truth,
    make_tasks,
    markdown_table,
    run_replicate,
    simulate_large_k,
    summarise,
    verdict,
)


def _rows(candidate: str, errors: list[float], covered: list[bool], outcome: str = "BMD") -> list[dict]:
    rows = []
    for rep, (err, cov) in enumerate(zip(errors, covered, strict=True)):
        half = 0.5 if cov else 0.05  # the interval holds the truth iff |err| < half
        rows.append(
            {
                "design": "flagship",
                "rep": rep,
                "outcome": outcome,
                "candidate": candidate,
                "mu_true": 1.0,
                "mu_mean": 1.0 + err,
                "mu_q025": 1.0 + err - half,
                "mu_q975": 1.0 + err + half,
                "tau_true": 0.5,
                "tau_mean": 0.5,
                "tau_q025": 0.1,
                "tau_q975": 0.9,
                "engine": "exact" if candidate != "arm" else "nuts",
                "failed_gates": rep == 0 and candidate == "arm",
                "retried": False,
                "cpu_seconds": 0.1 * (rep + 1),
                "error": "",
            }
        )
    return rows


def test_summary_bias_coverage_and_monte_carlo_se():
    errors = [0.1, -0.1, 0.2, 0.0]
    rows = pd.DataFrame(_rows("normal-LS", errors, [True, True, False, True]))
    s = summarise(rows).iloc[0]
    assert s["fits"] == 4
    assert s["mu_bias"] == pytest.approx(0.05)
    assert s["mu_bias_mcse"] == pytest.approx(np.std(errors, ddof=1) / 2)
    assert s["mu_rmse"] == pytest.approx(np.sqrt(np.mean(np.square(errors))))
    assert s["mu_coverage"] == pytest.approx(0.75)
    assert s["mu_coverage_mcse"] == pytest.approx(np.std([1, 1, 0, 1], ddof=1) / 2)
    assert s["mu_width"] == pytest.approx((3 * 1.0 + 0.1) / 4)
    assert s["tau_bias"] == 0.0 and s["tau_coverage"] == 1.0
    assert np.isnan(s["share_failed_gates"])  # no NUTS fits
    assert s["cpu_seconds_median"] == pytest.approx(0.25)


def test_summary_counts_failed_and_errored_fits_and_pools_outcomes():
    rows = _rows("arm", [0.0, 0.0, 0.0, 0.0], [True] * 4) + _rows("arm", [0.0] * 4, [True] * 4, outcome="Tb_N")
    rows[1] = {k: v for k, v in rows[1].items() if not k.startswith(("mu_", "tau_"))} | {
        "mu_true": 1.0,
        "tau_true": 0.5,
        "error": "RuntimeError: boom",
        "failed_gates": True,
        "engine": np.nan,
    }
    table = summarise(pd.DataFrame(rows)).set_index("outcome")
    assert list(table.index) == ["BMD", "Tb_N", "all"]
    assert table.at["BMD", "share_error"] == pytest.approx(0.25)
    assert table.at["BMD", "share_failed_gates"] == pytest.approx(0.5)  # the error and rep 0
    assert table.at["BMD", "mu_coverage"] == 1.0  # over the three fits that returned
    assert table.at["all", "fits"] == 8


def test_verdict_applies_the_issue_criterion_then_rmse():
    rows = pd.DataFrame(
        _rows("normal-LS", [-0.1] * 4, [True] * 4)  # biased
        + _rows("normal-AV", [0.02, -0.02, 0.04, -0.04], [True] * 4)
        + _rows("arm", [0.01, -0.01, 0.01, -0.01], [True] * 4)
    )
    ranked = verdict(summarise(rows))
    assert [v["candidate"] for v in ranked] == ["arm", "normal-AV", "normal-LS"]
    assert ranked[0]["passes"] and ranked[1]["passes"] and not ranked[2]["passes"]
    assert ranked[2]["failing"] == ["flagship/BMD: bias -0.100"]
    assert "| flagship | BMD | arm |" in markdown_table(summarise(rows))


def test_flagship_truth_is_the_mean_effect_of_the_reporting_studies(tmp_path):
    sim = simulate_dataset(7, omit_probability=0.0)
    assert sim.truth["selection"]["omitted_studies"] == []
    table = compute_effects(load_dataset(write_dataset(sim, tmp_path / "flagship")))
    truth = sim.truth
    shifted = 0
    for outcome, d in truth["direction"].items():
        reporting = list(study_effects(table, outcome)["study"])
        got = flagship_truth(truth, outcome, reporting)
        effects = [d * truth["study_effects"][s][outcome] for s in reporting]
        contrib = [truth["moderator_contributions"][s] for s in reporting]
        assert got["mu_true"] == pytest.approx(np.mean(effects))
        assert got["tau_realised"] == pytest.approx(np.std(effects, ddof=1))
        assert got["tau_true"] == pytest.approx(np.sqrt(truth["tau_residual"][outcome] ** 2 + np.var(contrib, ddof=1)))
        assert got["mu_population"] == d * truth["mu"][outcome] > 0  # benefit-oriented
        shifted += abs(np.mean(contrib)) > 0.01
    assert shifted > 0  # some outcome subsets do not average the moderator contributions to zero


@pytest.mark.slow  # runs a simulation study (issue 19: simulation studies under -m slow)
def test_one_flagship_replicate_with_the_exact_candidates():
    (task,) = make_tasks("flagship", 1, seed=3, candidates=EXACT_CANDIDATES)
    rows = pd.DataFrame(run_replicate(task))
    assert len(rows) == 7 * 2 and set(rows["candidate"]) == set(EXACT_CANDIDATES)
    assert (rows["error"] == "").all() and not rows["failed_gates"].any()
    assert rows[["mu_mean", "mu_q025", "mu_q975", "tau_mean", "mu_true", "tau_true"]].notna().all().all()
    assert (rows["mu_q025"] < rows["mu_mean"]).all() and (rows["mu_mean"] < rows["mu_q975"]).all()
    by = rows.pivot(index="outcome", columns="candidate", values="mu_mean")
    assert not np.allclose(by["normal-LS"], by["normal-AV"])  # AV changes the weights
    sim = simulate_dataset(task.data_seed, omit_probability=0.0)
    reporting = set(sim.arms.loc[sim.arms["outcome"] == "BMD", "study"])
    bmd = rows[(rows["outcome"] == "BMD")].iloc[0]
    assert bmd["k"] == len(reporting)
    assert bmd["mu_true"] == pytest.approx(np.mean([sim.truth["study_effects"][s]["BMD"] for s in reporting]))


def test_large_k_design_is_fixed_and_loads(tmp_path):
    a, b = simulate_large_k(1), simulate_large_k(2)
    arms = ["study", "arm", "role", "n", "control_arm"]
    assert a.arms[arms].equals(b.arms[arms]) and not a.arms["mean"].equals(b.arms["mean"])
    dataset = load_dataset(write_dataset(a, tmp_path / "large_k"))
    effects = study_effects(compute_effects(dataset), "y")
    assert len(effects) == LARGE_K.k
    assert effects["n_comparisons"].max() <= LARGE_K.arms_max and effects["n_comparisons"].max() > 1
    assert set(a.truth["theta"]) == set(effects["study"])


def test_a_run_from_first_rep_continues_an_earlier_run_with_the_same_seeds():
    whole = make_tasks("flagship", 6, seed=3, candidates=EXACT_CANDIDATES)
    first, rest = (
        make_tasks("flagship", n, seed=3, candidates=EXACT_CANDIDATES, first_rep=r) for n, r in ((2, 0), (4, 2))
    )
    assert first + rest == whole


def test_combine_accepts_disjoint_replicates_and_refuses_a_replicate_twice(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    rows = pd.DataFrame(_rows("arm", [0.1, -0.1, 0.2], [True, True, False]))
    rows.iloc[:2].to_csv(a, index=False)
    rows.iloc[2:].to_csv(b, index=False)
    combined, payload = combine_runs([a, b])
    assert len(combined) == 3
    assert payload["settings"]["reps_done"] == {"flagship/arm": 3}
    rows.iloc[1:].to_csv(b, index=False)
    with pytest.raises(ValueError, match="in both"):
        combine_runs([a, b])
