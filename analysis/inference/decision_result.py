"""Decision quantities of one fit (:mod:`analysis.inference.decision`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DecisionQuantities:
    """What the posterior says about relevance and about the next experiment (benefit scale).

    Attributes
    ----------
    outcome, measure : str
        Outcome id and effect measure.
    min_effect : float or None
        Minimal relevant effect delta on the measure's scale (None: none given or defaulted).
    prob_mu_above_min : float or None
        ``P(benefit * mu > delta | data)``.
    prob_theta_new_benefit : float
        ``P(benefit * theta_new > 0 | data)``: that a new study's TRUE effect is a benefit.
    planned_n : int or None
        Animals per arm of the planned new study.
    new_study_effect : dict or None
        Posterior predictive distribution of the new study's OBSERVED effect (Hedges' g, natural
        sign): ``mean, q025, q975`` (95% ETI); None for measures other than SMD.
    prob_replication : float or None
        Probability that the new study's two-sided t-test is significant at 0.05 in the direction
        of benefit (None for measures other than SMD).
    note : str
        Why a quantity is missing, or "".
    """

    outcome: str
    measure: str
    min_effect: float | None
    prob_mu_above_min: float | None
    prob_theta_new_benefit: float
    planned_n: int | None
    new_study_effect: dict[str, float] | None
    prob_replication: float | None
    note: str = ""

    def to_dict(self) -> dict[str, str | float | int | dict[str, float] | None]:
        """JSON-ready dict of every attribute."""
        return {
            "outcome": self.outcome,
            "measure": self.measure,
            "min_effect": self.min_effect,
            "prob_mu_above_min": self.prob_mu_above_min,
            "prob_theta_new_benefit": self.prob_theta_new_benefit,
            "planned_n": self.planned_n,
            "new_study_effect": self.new_study_effect,
            "prob_replication": self.prob_replication,
            "note": self.note,
        }
