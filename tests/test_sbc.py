"""Simulation-based calibration machinery (analysis.studies.sbc) and one small run on a dask cluster.

Fast: ranks, thinning, the uniformity test on synthetic ranks (uniform passes, biased fails), and
a conjugate normal toy case in which a posterior computed with the wrong prior is caught, so the
machinery can fail. Slow: a few real replications of the arm-level model through a dask
LocalCluster. (The quadrature selection models are calibrated in ``tests/test_selection_calibration.py``.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from analysis.plots.sbc import sbc_rank_figure, uniform_band
from analysis.studies import sbc

#: The Bonferroni threshold of the study: 17 ranked parameters at family level 0.01.
THRESHOLD = sbc.bonferroni_threshold(17)


def test_rank_counts_draws_below_the_truth():
    draws = np.array([0.1, 0.5, -1.0, 2.0, 0.3])
    assert sbc.rank_statistic(draws, 0.4) == 3
    assert sbc.rank_statistic(draws, -5.0) == 0
    assert sbc.rank_statistic(draws, 5.0) == draws.size


def test_thinning_keeps_evenly_spaced_draws_of_every_chain():
    draws = np.arange(4 * 250, dtype=float).reshape(4, 250)
    kept = sbc.thin_draws(draws, 99)
    assert kept.size == 99
    assert kept[0] == 0 and kept[24] == 249 and kept[25] == 250  # first and last draw of chain 0, then chain 1
    assert np.all(np.diff(kept[:25]) >= 10)  # stride ~10.4 within a chain
    with pytest.raises(ValueError):
        sbc.thin_draws(np.zeros((4, 10)), 99)


def test_histogram_bins_ranks_evenly():
    counts = sbc.rank_histogram(np.arange(100), n_ranks=100, n_bins=20)
    assert counts.tolist() == [5] * 20
    with pytest.raises(ValueError):
        sbc.rank_histogram([0, 1], n_ranks=101, n_bins=20)
    with pytest.raises(ValueError):
        sbc.rank_histogram([100], n_ranks=100, n_bins=20)


def _ranks_against(posterior_mean: float, posterior_sd: float, reps: int, rng: np.random.Generator) -> np.ndarray:
    """Ranks of truths ~ N(0, 1) among 99 draws of N(posterior_mean, posterior_sd^2) (the right one: 0, 1)."""
    return np.array(
        [sbc.rank_statistic(rng.normal(posterior_mean, posterior_sd, 99), rng.normal()) for _ in range(reps)]
    )


def test_uniform_ranks_pass_and_biased_ranks_fail():
    rng = np.random.default_rng(7)
    assert sbc.uniformity_test(rng.integers(0, 100, size=200))[1] > THRESHOLD
    assert sbc.uniformity_test(_ranks_against(0.0, 1.0, 200, rng))[1] > THRESHOLD
    # biased by 0.75 SD: the truth lands too often in the low ranks
    assert sbc.uniformity_test(_ranks_against(0.75, 1.0, 200, rng))[1] < THRESHOLD
    # too narrow (half the SD): a U shape
    assert sbc.uniformity_test(_ranks_against(0.0, 0.5, 200, rng))[1] < THRESHOLD


def test_the_nuts_models_and_the_bonferroni_family():
    """The NUTS models without an exact oracle: three multivariate structures and the arm-level model.

    Ranked: unstructured 8 (mu, tau) + 2 pairs + rho_within = 11, arm-level 7, compound symmetry
    8 + rho_shared + rho_within = 10, independent 8 + rho_within = 9: a family of 37.
    """
    designs = sbc.flagship_designs()
    assert sbc.MODELS == ("multivariate", "arm_level", "multivariate_cs", "multivariate_independent")
    assert set(designs) == set(sbc.MODELS) == set(sbc._cases())
    assert sbc.n_ranked_parameters(designs) == 37
    names = {m: [p.name for p in sbc.ranked_parameters(m, designs[m])] for m in sbc.MULTIVARIATE_STRUCTURES}
    assert "rho_shared" in names["multivariate_cs"] and "rho[BV_TV~Tb_N]" in names["multivariate"]
    assert all(n[-1] == "rho_within" for n in names.values())
    assert not any(p.startswith("rho[") or p == "rho_shared" for p in names["multivariate_independent"])
    assert sbc.describe_design(designs["multivariate_cs"])["structure"] == "cs"
    assert sbc.describe_design(designs["arm_level"])["comparisons"] == 19


def test_earlier_rows_of_models_not_rerun_are_kept(tmp_path):
    rows = pd.DataFrame({"model": ["selection", "arm_level", "multivariate"], "rep": [0, 0, 0], "rank": [1, 2, 3]})
    rows.to_csv(tmp_path / "sbc.csv", index=False)
    kept = sbc._earlier_rows(tmp_path, ["multivariate"])
    assert kept["model"].tolist() == ["arm_level"]  # the removed selection model is dropped, the rerun one replaced
    assert sbc._earlier_rows(tmp_path / "nowhere", ["multivariate"]).empty


def test_bonferroni_threshold():
    assert sbc.bonferroni_threshold(17) == pytest.approx(0.01 / 17)
    with pytest.raises(ValueError):
        sbc.bonferroni_threshold(0)


def _conjugate_ranks(fit_prior_sd: float, reps: int, rng: np.random.Generator) -> np.ndarray:
    """theta ~ N(0, 1), y ~ N(theta, 1); exact posterior draws under the prior N(0, fit_prior_sd^2)."""
    ranks = []
    for _ in range(reps):
        theta = rng.normal()
        y = rng.normal(theta, 1.0)
        precision = 1.0 + 1.0 / fit_prior_sd**2
        draws = rng.normal(y / precision, np.sqrt(1.0 / precision), size=(4, 250))
        ranks.append(sbc.rank_statistic(sbc.thin_draws(draws), theta))
    return np.array(ranks)


def test_sbc_accepts_the_right_posterior_and_catches_a_wrong_prior():
    """The simulation prior is N(0, 1); fitting with N(0, 0.5^2) shrinks too much and is too narrow."""
    right = _conjugate_ranks(1.0, 200, np.random.default_rng(11))
    wrong = _conjugate_ranks(0.5, 200, np.random.default_rng(11))
    assert sbc.uniformity_test(right)[1] > THRESHOLD
    assert sbc.uniformity_test(wrong)[1] < THRESHOLD


def test_rank_figure_has_one_panel_per_model_and_parameter():
    rng = np.random.default_rng(3)
    rows = pd.DataFrame(
        [
            {"model": m, "parameter": p, "rank": int(r)}
            for m, params in (("a", ["mu", "tau"]), ("b", ["x"]))
            for p in params
            for r in rng.integers(0, 100, size=40)
        ]
    )
    fig = sbc_rank_figure(rows, n_ranks=100, n_bins=20, p_values={("a", "mu"): 0.5}, threshold=THRESHOLD)
    assert isinstance(fig, Figure)
    assert sorted(ax.get_gid() for ax in fig.axes) == ["sbc_a_mu", "sbc_a_tau", "sbc_b_x"]
    lo, hi = uniform_band(200, 20)
    assert lo < 10 < hi


@pytest.mark.slow
def test_arm_level_sbc_on_a_dask_cluster():
    """Three replications on a 2-worker LocalCluster; one rerun in this process gives the same ranks."""
    distributed = pytest.importorskip("distributed")
    designs = sbc.flagship_designs()
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        rows = sbc.run_sbc(["arm_level"], reps=3, seed=4, designs=designs, executor=client)
    params = [p.name for p in sbc.ranked_parameters("arm_level", designs["arm_level"])]
    assert len(rows) == 3 * len(params)
    assert (rows["error"] == "").all()
    assert rows["rank"].between(0, sbc.N_KEEP).all()
    assert (rows["n_draws_after_thinning"] == sbc.N_KEEP).all()
    task = sbc.make_tasks("arm_level", 3, 4, designs["arm_level"], sbc.default_priors("SMD"))[1]
    again = pd.DataFrame(sbc.run_replication(task))
    first = rows[rows["rep"] == 1].reset_index(drop=True)
    assert again["rank"].tolist() == first["rank"].tolist()
    assert again["truth"].tolist() == pytest.approx(first["truth"].tolist())
