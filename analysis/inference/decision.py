r"""Decision quantities from a NUTS fit: a minimal relevant effect, a new study, its replication.

With the benefit sign :math:`d` of the outcome (``direction``), per posterior draw:

* :math:`P(d\,\mu > \delta \mid y)` for a minimal relevant effect :math:`\delta`
  (``--min-effect``; defaults in :data:`MIN_EFFECT_DEFAULTS`);
* :math:`P(d\,\theta_{new} > 0 \mid y)`: the *true* effect of a new study (a new comparison in
  it) is a benefit. :math:`\theta_{new}` is a true effect, not what the new study would observe;
* the new study's *observed* Hedges' g with :math:`n` animals per arm (SMD only): given
  :math:`\theta_{new}`, control and treatment means :math:`m_c \sim N(0, 1/n)`,
  :math:`m_t \sim N(\theta_{new}, 1/n)` and pooled variance :math:`s_p^2 \sim
  \chi^2_{2n-2}/(2n-2)` in units of the within-group SD, so that
  :math:`g = J\,(m_t - m_c)/s_p` adds the sampling error of :math:`n` animals to
  :math:`\theta_{new}`;
* the replication probability: :math:`P(|t| > t_{0.975,\,2n-2} \text{ and } d\,t > 0)` with
  :math:`t = (m_t - m_c) / (s_p \sqrt{2/n})`, the new study's two-sided t-test significant at 0.05
  in the direction of benefit (Killeen 2005's *p_rep* asks the same of direction alone).

The default :math:`n` is the median arm size of the outcome's data, a typical experiment of this
literature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from analysis.dataset.load import Dataset
from analysis.dataset.smd import correction_j
from analysis.inference.decision_result import DecisionQuantities
from analysis.results.random_effects import MetaAnalysisResult

__all__ = [
    "DEFAULT_DECISION",
    "MIN_EFFECT_DEFAULTS",
    "DecisionSettings",
    "decision_quantities",
    "new_study_draws",
    "planned_arm_size",
]

#: Default minimal relevant effect per measure. SMD 0.5: half a control-group SD, Cohen's
#: "medium" effect and the smallest effect preclinical power calculations usually target
#: (smaller effects need more than 60 animals per arm for 80% power); ROM log(1.2): a 20% change of
#: the group mean; NMD 20: a fifth of the model-induced deficit restored. Other measures: none.
MIN_EFFECT_DEFAULTS: dict[str, float] = {"SMD": 0.5, "ROM": float(np.log(1.2)), "NMD": 20.0}
#: Random stream (after the sampler, theta and predictive-check streams) of the new-study draws.
_DECISION_STREAM = 4
#: Two-sided significance level of the new study's t-test.
ALPHA = 0.05


@dataclass(frozen=True)
class DecisionSettings:
    """The user's decision inputs: minimal relevant effect and planned arm size (None: defaults)."""

    min_effect: float | None = None
    planned_n: int | None = None

    def __post_init__(self) -> None:
        if self.planned_n is not None and self.planned_n < 2:
            raise ValueError(f"the planned arm size must be at least 2, got {self.planned_n}")
        if self.min_effect is not None and not np.isfinite(self.min_effect):
            raise ValueError(f"the minimal relevant effect must be finite, got {self.min_effect}")


#: The defaults: minimal relevant effect of the measure, median arm size.
DEFAULT_DECISION = DecisionSettings()


def planned_arm_size(dataset: Dataset, outcome: str) -> int | None:
    """Median animals per arm of the outcome's arm-level data (at least 2); None for effect-level data."""
    if dataset.arms is None:
        return None
    n = dataset.arms.loc[dataset.arms["outcome"] == outcome, "n"]
    return max(2, int(np.round(np.median(n)))) if len(n) else None


def new_study_draws(theta_new: np.ndarray, n: int, *, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Observed Hedges' g and t statistic of a new two-arm study with ``n`` animals per arm.

    Parameters
    ----------
    theta_new : numpy.ndarray
        True SMD of the new study, one per draw (natural sign).
    n : int
        Animals per arm.
    rng : numpy.random.Generator
        Source of the new animals.

    Returns
    -------
    g, t : numpy.ndarray
        Shape of ``theta_new``.
    """
    if n < 2:
        raise ValueError(f"a new study needs at least 2 animals per arm, got {n}")
    theta_new = np.asarray(theta_new, dtype=float)
    diff = theta_new + rng.standard_normal(theta_new.shape) * np.sqrt(2.0 / n)
    df = 2.0 * n - 2.0
    sp = np.sqrt(rng.chisquare(df, size=theta_new.shape) / df)
    return correction_j(df) * diff / sp, diff / (sp * np.sqrt(2.0 / n))


def decision_quantities(
    result: MetaAnalysisResult,
    dataset: Dataset,
    *,
    min_effect: float | None = None,
    planned_n: int | None = None,
    seed: int = 1,
) -> DecisionQuantities:
    """Decision quantities of a NUTS fit (its ``mu`` and ``theta_new`` draws).

    Parameters
    ----------
    result : MetaAnalysisResult
        A NUTS fit with draws.
    dataset : Dataset
        The dataset it was fitted to (for the default planned arm size).
    min_effect : float, optional
        Minimal relevant effect on the measure's scale, benefit direction (default
        :data:`MIN_EFFECT_DEFAULTS` of the measure, else not computed).
    planned_n : int, optional
        Animals per arm of the new study (default :func:`planned_arm_size`).
    seed : int
        Seed of the new-study draws.
    """
    if result.posterior is None:
        raise ValueError("decision quantities need a fit with posterior draws (engine='nuts')")
    d = result.outcome.direction
    post = result.posterior.posterior
    mu, theta_new = post["mu"].to_numpy().ravel(), post["theta_new"].to_numpy().ravel()
    delta = MIN_EFFECT_DEFAULTS.get(result.measure) if min_effect is None else float(min_effect)
    notes = [] if delta is not None else [f"no minimal relevant effect for {result.measure}: give --min-effect"]
    n = planned_arm_size(dataset, result.outcome.id) if planned_n is None else int(planned_n)
    effect, replication = None, None
    if result.measure != "SMD" or n is None:
        notes.append("the new study's observed effect and replication are computed for SMDs with arm sizes")
    else:
        rng = np.random.default_rng([result.settings.get("seed", seed), _DECISION_STREAM, seed])
        g, t = new_study_draws(theta_new, n, rng=rng)
        effect = {"mean": float(g.mean()), "q025": float(np.quantile(g, 0.025)), "q975": float(np.quantile(g, 0.975))}
        critical = stats.t.ppf(1 - ALPHA / 2, 2 * n - 2)
        replication = float(np.mean((np.abs(t) > critical) & (d * t > 0)))
    return DecisionQuantities(
        outcome=result.outcome.id,
        measure=result.measure,
        min_effect=delta,
        prob_mu_above_min=None if delta is None else float(np.mean(d * mu > delta)),
        prob_theta_new_benefit=float(np.mean(d * theta_new > 0)),
        planned_n=n,
        new_study_effect=effect,
        prob_replication=replication,
        note="; ".join(notes),
    )
