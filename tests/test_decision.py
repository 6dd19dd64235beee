"""Decision quantities (:mod:`analysis.inference.decision`): the new study's observed effect and replication.

The new study's t statistic is checked against the noncentral t (its power is the replication
probability at a known true effect), its g against Hedges' (1981) unbiasedness; the quantities of a
tiny arm-level fit against direct computations from its draws.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

from analysis.inference.decision import (
    ALPHA,
    MIN_EFFECT_DEFAULTS,
    DecisionSettings,
    decision_quantities,
    new_study_draws,
    planned_arm_size,
)
from tests.helpers import tiny_arm_fit
from tests.tolerances import MCSE_MULTIPLE

N_DRAWS = 400_000


@pytest.mark.parametrize(("theta", "n"), [(0.0, 6), (1.0, 8), (2.0, 5)])
def test_replication_probability_is_the_noncentral_t_power(theta, n):
    g, t = new_study_draws(np.full(N_DRAWS, theta), n, rng=np.random.default_rng(1))
    df = 2 * n - 2
    critical = stats.t.ppf(1 - ALPHA / 2, df)
    power = stats.nct.sf(critical, df, theta * np.sqrt(n / 2))  # benefit direction only
    rate = np.mean(t > critical)
    assert abs(rate - power) < MCSE_MULTIPLE * np.sqrt(power * (1 - power) / N_DRAWS)
    assert abs(g.mean() - theta) < MCSE_MULTIPLE * g.std() / np.sqrt(N_DRAWS)  # g is unbiased


def test_new_study_needs_two_animals():
    with pytest.raises(ValueError, match="at least 2"):
        new_study_draws(np.zeros(3), 1, rng=np.random.default_rng(1))
    with pytest.raises(ValueError, match="at least 2"):
        DecisionSettings(planned_n=1)


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_decision_quantities_of_an_arm_fit():
    dataset, fit = tiny_arm_fit()
    post = fit.posterior.posterior
    mu, theta_new = post["mu"].to_numpy().ravel(), post["theta_new"].to_numpy().ravel()
    d = fit.outcome.direction
    q = decision_quantities(fit, dataset, min_effect=0.3, planned_n=10, seed=2)
    assert q.prob_mu_above_min == pytest.approx(np.mean(d * mu > 0.3))
    assert q.prob_theta_new_benefit == pytest.approx(np.mean(d * theta_new > 0))
    assert q.planned_n == 10 and q.min_effect == 0.3
    lo, hi = np.quantile(theta_new, [0.025, 0.975])
    effect = q.new_study_effect
    assert effect is not None and effect["q025"] < lo and effect["q975"] > hi  # sampling error widens it
    assert 0.0 <= q.prob_replication <= q.prob_theta_new_benefit + 0.05
    default = decision_quantities(fit, dataset, seed=2)
    assert default.min_effect == MIN_EFFECT_DEFAULTS["SMD"]
    assert default.planned_n == planned_arm_size(dataset, "BMD")
    n = dataset.arms.loc[dataset.arms["outcome"] == "BMD", "n"]
    assert default.planned_n == max(2, int(np.round(np.median(n))))
    assert set(q.to_dict()) >= {"min_effect", "prob_mu_above_min", "prob_theta_new_benefit", "prob_replication"}


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_measure_without_default_needs_min_effect():
    dataset, fit = tiny_arm_fit()
    other = dataclasses.replace(fit, measure="logRR")
    q = decision_quantities(other, dataset, seed=2)
    assert q.min_effect is None and q.prob_mu_above_min is None and q.new_study_effect is None
    assert "--min-effect" in q.note and "SMD" in q.note
