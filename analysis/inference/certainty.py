r"""Certainty of the evidence for one outcome, in the spirit of GRADE for animal studies.

Hooijmans et al. (2018, PLoS One 13:e0187271) adapt GRADE to preclinical evidence: the body of
animal studies starts at *high* certainty and is downgraded one level for each serious concern
among risk of bias, imprecision, inconsistency, indirectness and publication bias. evmeta rates
what its numbers can support, with one explicit rule per domain (benefit scale, :math:`d` the
outcome's direction, :math:`\delta` the minimal relevant effect):

* **risk of bias**: serious when fewer than half of the outcome's studies are judged at low risk
  on both key SYRCLE domain groups, randomisation (sequence generation, allocation concealment)
  and blinding (performance, outcome assessment); not rated without judgements;
* **imprecision**: serious when the 95% interval of :math:`d\mu` contains :math:`\delta` (it
  admits both relevant and irrelevant effects), or, without :math:`\delta`, contains 0;
* **inconsistency**: serious when the 95% interval of a new study's true effect
  :math:`d\theta_{new}` contains 0 (the studies disagree about the direction, not only the size);
* **publication bias**: serious when the calibrated funnel-asymmetry check (sampled posterior
  p-value of the slope of the effects on their SE, where ``reports/calibration.json`` measured it
  calibrated) flags; fewer than :data:`MIN_K_ASYMMETRY` studies are noted as too few to judge
  asymmetry (Sterne et al. 2011, BMJ 343:d4002), not downgraded; without a calibrated check the
  domain is not rated (noted); also serious when the multivariate model's outcome-reporting-bias
  diagnostic flags the outcome *and* that flag was measured calibrated
  (:mod:`analysis.inference.reporting_bias_calibration`); one downgrade for the domain either way;
* **indirectness** (animal model, outcome and intervention against the reader's question) is not
  rated: it depends on the question, which the data do not contain.

Certainty = high, moderate, low, very low after 0, 1, 2, 3+ downgrades.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CERTAINTY_LEVELS", "MIN_K_ASYMMETRY", "Certainty", "Evidence", "rate"]

CERTAINTY_LEVELS: tuple[str, ...] = ("high", "moderate", "low", "very low")
#: Fewer studies than this cannot show funnel asymmetry reliably (Sterne et al. 2011).
MIN_K_ASYMMETRY: int = 10


@dataclass(frozen=True)
class Evidence:
    """The numbers a certainty rating rests on (benefit scale: larger = more benefit).

    Attributes
    ----------
    k : int
        Studies of the outcome.
    mu_interval, theta_new_interval : tuple of float
        95% ETI of the pooled effect and of a new study's true effect, benefit scale, low to high.
    min_effect : float or None
        Minimal relevant effect (benefit scale), None if none is defined.
    n_low_risk : int or None
        Studies at low risk on randomisation and blinding; None without SYRCLE judgements.
    asymmetry_p : float or None
        p-value of the calibrated asymmetry check, None if it did not run.
    asymmetry_flagged : bool
        Whether that check flagged.
    reporting_bias_z : float or None
        z of the calibrated outcome-reporting-bias flag when it flagged this outcome, else None.
    """

    k: int
    mu_interval: tuple[float, float]
    theta_new_interval: tuple[float, float]
    min_effect: float | None
    n_low_risk: int | None
    asymmetry_p: float | None
    asymmetry_flagged: bool
    reporting_bias_z: float | None = None


@dataclass(frozen=True)
class Certainty:
    """A rating: the level, the reason for each downgrade, and notes on what was not rated."""

    level: str
    downgrades: tuple[tuple[str, str], ...]
    notes: tuple[str, ...]


def rate(evidence: Evidence) -> Certainty:
    """Rate the certainty of one outcome's evidence (rules in the module docstring)."""
    downgrades, notes = [], ["indirectness not rated (depends on the reader's question)"]
    e = evidence
    if e.n_low_risk is None:
        notes.append("risk of bias not rated (no SYRCLE judgements)")
    elif e.n_low_risk < e.k / 2:
        downgrades.append(
            ("risk of bias", f"{e.k - e.n_low_risk} of {e.k} studies not at low risk on randomisation and blinding")
        )
    lo, hi = e.mu_interval
    threshold = 0.0 if e.min_effect is None else e.min_effect
    if lo < threshold < hi:
        what = "no effect" if e.min_effect is None else f"effects below the minimal relevant {e.min_effect:g}"
        downgrades.append(("imprecision", f"95% interval of μ (benefit scale) [{lo:.2f}, {hi:.2f}] includes {what}"))
    lo_new, hi_new = e.theta_new_interval
    if lo_new < 0.0 < hi_new:
        interval = f"95% interval, benefit scale, [{lo_new:.2f}, {hi_new:.2f}]"
        downgrades.append(("inconsistency", f"a new study's true effect could go either way ({interval})"))
    bias = []
    if e.asymmetry_flagged and e.asymmetry_p is not None:
        bias.append(f"funnel-asymmetry check flagged (p = {e.asymmetry_p:.3f})")
    if e.reporting_bias_z is not None:
        bias.append(f"outcome-reporting bias flagged by the multivariate model (z = {e.reporting_bias_z:.2f})")
    if bias:
        downgrades.append(("publication bias", "; ".join(bias)))
    if e.asymmetry_p is None:
        notes.append("publication bias not rated where no calibrated funnel-asymmetry check ran")
    elif e.k < MIN_K_ASYMMETRY:
        notes.append(
            f"publication bias not rated where k < {MIN_K_ASYMMETRY}: too few studies to judge funnel asymmetry "
            "(Sterne et al. 2011); a flag still downgrades"
        )
    level = CERTAINTY_LEVELS[min(len(downgrades), len(CERTAINTY_LEVELS) - 1)]
    return Certainty(level=level, downgrades=tuple(downgrades), notes=tuple(notes))
