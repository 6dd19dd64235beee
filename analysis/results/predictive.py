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
    """

    outcome: str
    y_rep: np.ndarray
    statistics: dict[str, dict[str, float]]
    unit: str = "study"
    observed: dict[str, np.ndarray] = field(default_factory=dict)
    replicated: dict[str, np.ndarray] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready statistics: ``{outcome, unit, statistics: {name: {observed, replicated_mean, ppp}}}``."""
        return {
            "outcome": self.outcome,
            "unit": self.unit,
            "statistics": {k: dict(v) for k, v in self.statistics.items()},
        }
