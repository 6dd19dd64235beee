"""A published frequentist result beside evmeta's recomputation of it (:mod:`analysis.checks.reproduce`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.dataset.load import Published
from models.frequentist import RmaFit


@dataclass(frozen=True)
class Reproduction:
    """A published result and evmeta's recomputation of it, both on the paper's sign scale."""

    outcome: str
    published: Published
    fit: RmaFit
    sign: int

    @property
    def estimate(self) -> float:
        """The recomputed pooled estimate on the published scale."""
        return self.sign * float(self.fit.beta[0])

    @property
    def ci(self) -> tuple[float, float]:
        """The recomputed 95% Wald CI on the published scale."""
        lo, hi = self.sign * float(self.fit.ci_lb[0]), self.sign * float(self.fit.ci_ub[0])
        return min(lo, hi), max(lo, hi)

    @property
    def matches(self) -> bool:
        """True when estimate, CI, k (and I² if published) round to the printed numbers."""
        p = self.published
        same = _rounds_to(self.estimate, p.estimate, p.digits) and self.fit.k == p.k
        same = same and all(_rounds_to(a, b, p.digits) for a, b in zip(self.ci, p.ci))
        return bool(same and (p.i2 is None or _rounds_to(float(self.fit.I2), p.i2, p.i2_digits)))

    def rows(self) -> list[dict]:
        """Rows for the report: the published numbers and the recomputation, side by side."""
        p, d = self.published, self.published.digits
        return [
            {
                "": "published",
                "estimate": f"{p.estimate:.{d}f}",
                "95% CI": _ci(p.ci, d),
                "k": p.k,
                "I²": "" if p.i2 is None else f"{p.i2:.{p.i2_digits}f}%",
            },
            {
                "": "evmeta, the paper's route",
                "estimate": f"{self.estimate:.{d}f}",
                "95% CI": _ci(self.ci, d),
                "k": self.fit.k,
                "I²": f"{float(self.fit.I2):.{p.i2_digits}f}%",
            },
        ]

    def to_dict(self) -> dict:
        """JSON: the published numbers, the recomputation (unrounded) and whether they agree."""
        p = self.published
        return {
            "outcome": self.outcome,
            "source": p.source,
            "method": p.method,
            "control_n": p.control_n,
            "scale": p.scale,
            "published": {"estimate": p.estimate, "ci": list(p.ci), "k": p.k, "i2": p.i2},
            "reproduced": {
                "estimate": self.estimate,
                "ci": list(self.ci),
                "k": int(self.fit.k),
                "i2": float(self.fit.I2),
                "tau2": float(self.fit.tau2),
            },
            "matches_printed_precision": self.matches,
        }

    def comparison_rows(self) -> list[dict]:
        """Rows in the layout of :data:`analysis.checks.compare.COMPARE_COLUMNS` (treatment − control scale)."""
        p, sign = self.published, self.sign
        lo, hi = sorted((sign * p.ci[0], sign * p.ci[1]))
        common = {
            "outcome": self.outcome,
            "model": "random-effects",
            "priors": "",
            "interval": "ci95 (Wald)",
            "tau_lower": np.nan,
            "tau_upper": np.nan,
            "prob_benefit": np.nan,
        }
        return [
            common
            | {
                "label": f"published ({p.source})",
                "engine": p.method,
                "k": p.k,
                "mu_mean": sign * p.estimate,
                "mu_lower": lo,
                "mu_upper": hi,
                "tau": np.nan,
            },
            common
            | {
                "label": "frequentist, the paper's route (reproduced)",
                "engine": p.method,
                "k": int(self.fit.k),
                "mu_mean": float(self.fit.beta[0]),
                "mu_lower": float(self.fit.ci_lb[0]),
                "mu_upper": float(self.fit.ci_ub[0]),
                "tau": float(np.sqrt(self.fit.tau2)),
            },
        ]


def _rounds_to(value: float, printed: float, digits: int) -> bool:
    """``value`` rounded half away from zero to ``digits`` decimals equals ``printed``."""
    scale = 10.0**digits
    return bool(abs(np.sign(value) * np.floor(abs(value) * scale + 0.5) / scale - printed) < 0.5 / scale)


def _ci(ci: tuple[float, float], digits: int) -> str:
    return f"{ci[0]:.{digits}f} to {ci[1]:.{digits}f}"
