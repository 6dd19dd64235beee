"""Result of the posterior predictive check of one fit (:mod:`analysis.checks.predictive`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class PPCResult:
    """Replicated data and the test statistics of one fit.

    Attributes
    ----------
    outcome : str
        Outcome id.
    y_rep : numpy.ndarray
        Replicated effects, ``(chain, draw, unit)``.
    statistics : dict
        Per statistic: ``observed`` (mean over draws), ``replicated_mean``, ``ppp`` and, for the
        slope, ``ppp_two_sided``.
    unit : {"study", "comparison"}
        What one replicated effect is: a study's (normal likelihood, one effect per study) or a
        comparison's (arm-level likelihood: one Hedges' g per treatment arm against its control).
    observed, replicated : dict of numpy.ndarray
        Per statistic, its values on the observed and on the replicated data, one per posterior
        draw (flattened; the observed value repeats when it does not depend on the draw).
    sampled : dict
        Per statistic, its sampled posterior p-value (the calibrated check,
        :func:`analysis.checks.predictive.sampled_p_values`): ``observed`` (at the chosen draw) and
        ``p_value``.
    sampled_draw : int
        Index of the chosen draw (flattened chain x draw).
    """

    outcome: str
    y_rep: np.ndarray
    statistics: dict[str, dict[str, float]]
    unit: str = "study"
    observed: dict[str, np.ndarray] = field(default_factory=dict)
    replicated: dict[str, np.ndarray] = field(default_factory=dict)
    sampled: dict[str, dict[str, float]] = field(default_factory=dict)
    sampled_draw: int = 0

    def to_dict(self) -> dict:
        """JSON-ready: ``{outcome, unit, statistics: {name: {observed, replicated_mean, ppp, ...}}, sampled}``.

        ``statistics`` holds the descriptive ppp's; ``sampled`` the calibrated sampled p-values.
        """
        return {
            "outcome": self.outcome,
            "unit": self.unit,
            "statistics": {k: dict(v) for k, v in self.statistics.items()},
            "sampled": {k: dict(v) for k, v in self.sampled.items()},
            "sampled_draw": self.sampled_draw,
        }


@dataclass(frozen=True)
class LooPitResult:
    """Leave-one-study-out PIT of every study and the outlier check (:mod:`analysis.checks.loo_pit`).

    Attributes
    ----------
    outcome : str
        Outcome id.
    study : tuple of str
        Studies, model order.
    statistic_observed, pit, p_value, pareto_k : numpy.ndarray
        Per study: the observed statistic (mean g of its comparisons), its LOO-PIT, the two-sided
        p-value ``2 min(PIT, 1 - PIT)`` and the Pareto k of its PSIS weights.
    reliable : numpy.ndarray
        Per study: Pareto k at most the PSIS threshold.
    nominal_level : float
        Level of the Bonferroni outlier check.
    """

    outcome: str
    study: tuple[str, ...]
    statistic_observed: np.ndarray
    pit: np.ndarray
    p_value: np.ndarray
    pareto_k: np.ndarray
    reliable: np.ndarray
    nominal_level: float

    @property
    def k(self) -> int:
        """Number of studies."""
        return len(self.study)

    @property
    def p_adjusted(self) -> float:
        """Bonferroni-adjusted smallest p-value, ``min(1, k min_i p_i)``."""
        return float(min(1.0, self.k * np.min(self.p_value)))

    @property
    def flagged(self) -> bool:
        """True if the adjusted smallest p-value is below the nominal level."""
        return self.p_adjusted < self.nominal_level

    @property
    def most_outlying(self) -> str:
        """The study with the smallest LOO p-value."""
        return self.study[int(np.argmin(self.p_value))]

    def to_dict(self) -> dict:
        """JSON-ready: the check and one entry per study."""
        return {
            "outcome": self.outcome,
            "name": "loo_pit",
            "statistic": "mean Hedges' g of the study's comparisons; LOO-PIT by integrated PSIS",
            "role": "description, not a check: its Bonferroni outlier rule flags too rarely on data without "
            "misfit (reports/calibration.json, statistic loo_outlier)",
            "p_bonferroni": self.p_adjusted,
            "most_outlying": self.most_outlying,
            "studies": [
                {
                    "study": s,
                    "statistic": float(t),
                    "pit": float(pit),
                    "p_value": float(p),
                    "pareto_k": float(kh),
                    "reliable": bool(ok),
                }
                for s, t, pit, p, kh, ok in zip(
                    self.study,
                    self.statistic_observed,
                    self.pit,
                    self.p_value,
                    self.pareto_k,
                    self.reliable,
                    strict=True,
                )
            ],
        }
