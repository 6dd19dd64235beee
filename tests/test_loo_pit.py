"""LOO-PIT and the outlier check of the default fit (:mod:`analysis.checks.loo_pit`).

With draws at the true parameters, the PIT of studies drawn from the model is uniform (a KS test
over many studies), and a study shifted by 3 SMD gets a tiny p-value; then the check end to end
on a tiny NUTS fit.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from analysis.checks.loo_pit import arm_loo_pit, loo_pit_values, pit_tree, study_means
from analysis.checks.predictive_arm import replicate_arms
from analysis.plots.predictive import loo_pit_plot
from models.arm_level import arm_summaries
from tests.helpers import tiny_arm_fit

TRUTH = {"mu": 1.0, "tau": 0.5, "omega": 0.3}


def _design(k: int, rng: np.random.Generator):
    """k studies: a control and one or two treatment arms of 5-10 animals (values unused)."""
    n_t = rng.integers(1, 3, size=k)
    treated, study, group, n = [], [], [], []
    for i, m in enumerate(n_t):
        for a in range(m + 1):
            treated.append(int(a > 0))
            study.append(i)
            group.append(i)
            n.append(int(rng.integers(5, 11)))
    size = len(n)
    return arm_summaries(np.zeros(size), np.ones(size), n, treated, study, group, study=[f"s{i}" for i in range(k)])


def _observed(data, rng: np.random.Generator, shift: np.ndarray | None = None) -> np.ndarray:
    theta = TRUTH["mu"] + TRUTH["tau"] * rng.standard_normal(data.k)[data.comparison_study]
    theta = theta + TRUTH["omega"] * rng.standard_normal(len(data.comparison))
    if shift is not None:
        theta = theta + shift[data.comparison_study]
    return study_means(replicate_arms(theta, data, rng=rng)[0], data)


def test_pit_of_studies_from_the_model_is_uniform_and_an_outlier_is_caught():
    rng = np.random.default_rng(7)
    data = _design(400, rng)
    draws = {p: np.full(2000, v) for p, v in TRUTH.items()}  # the posterior collapsed on the truth
    weights = np.full((2000, data.k), 1 / 2000)
    pit = loo_pit_values(data, draws, weights, _observed(data, rng), rng=rng)
    assert stats.kstest(pit, "uniform").pvalue > 0.01
    shift = np.zeros(data.k)
    shift[0] = 3.0
    pit = loo_pit_values(data, draws, weights, _observed(data, rng, shift), rng=rng)
    assert 2 * min(pit[0], 1 - pit[0]) < 0.01


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_check_of_a_tiny_fit():
    tiny, fit = tiny_arm_fit()
    check = arm_loo_pit(fit, tiny, seed=3)
    assert check.study == ("A2020", "B2021", "C2022")
    assert np.all((check.pit >= 0) & (check.pit <= 1))
    np.testing.assert_allclose(check.p_value, 2 * np.minimum(check.pit, 1 - check.pit))
    assert check.p_adjusted == pytest.approx(min(1.0, 3 * check.p_value.min()))
    out = json.loads(json.dumps(check.to_dict()))
    assert out["name"] == "loo_pit" and out["p_bonferroni"] == check.p_adjusted and "flagged" not in out
    assert [s["study"] for s in out["studies"]] == list(check.study)
    assert arm_loo_pit(fit, tiny, seed=3).pit.tolist() == check.pit.tolist()  # seeded
    assert pit_tree(check)["loo_pit"]["T"].sizes["study"] == 3
    loo_pit_plot(fit, check)
