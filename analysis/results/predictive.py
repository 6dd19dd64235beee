"""Result of the posterior predictive check of one fit (:mod:`analysis.checks.predictive`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PPCResult:
    """Replicated data and the test statistics of one fit."""

    outcome: str
    y_rep: np.ndarray
    statistics: dict[str, dict[str, float]]

    def to_dict(self) -> dict:
        """JSON-ready statistics: ``{name: {observed, replicated_mean, ppp}}``."""
        return {"outcome": self.outcome, "statistics": {k: dict(v) for k, v in self.statistics.items()}}
