"""The result of a univariate meta-analysis fit: summaries, study effects, diagnostics, JSON, report text."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import xarray as xr

from analysis.config import INTERVAL_KIND
from analysis.dataset.load import Outcome
from analysis.inference.decision_result import DecisionQuantities
from analysis.results.checks import Check
from analysis.results.diagnostics import Diagnostics

SUMMARY_PARAMS = ("mu", "tau", "theta_new", "I2")


@dataclass
class MetaAnalysisResult:
    """A fitted Bayesian random-effects meta-analysis of one outcome.

    Attributes
    ----------
    dataset, provenance : str
        Dataset name and provenance (``"simulated"`` results are labelled as such everywhere).
    outcome : Outcome
        The outcome (id, label, unit, direction of benefit).
    model, engine : str
        ``"random-effects"``; ``"nuts"`` or ``"exact"``.
    priors : dict
        Prior strings, e.g. ``{"mu": "normal:0:3", "tau": "halfnormal:1"}``.
    summaries : dict
        ``mu, tau, theta_new, I2`` -> ``{mean, sd, median, q025, q975}`` (95% equal-tailed).
    prob_benefit : float
        Posterior probability that the pooled effect favours treatment (uses ``direction``).
    studies : pandas.DataFrame
        Per study: ``study, yi, vi, theta_mean, theta_sd, theta_q025, theta_q975``.
    diagnostics : Diagnostics or None
        Convergence diagnostics (NUTS only); ``retried`` tells whether the fit was rerun.
    posterior : xarray.DataTree or None
        NUTS draws (with ``theta`` and ``theta_new`` added), savable as NetCDF.
    settings : dict
        Seed and sampler settings, for the manifest.
    measure : str
        Effect measure of ``yi`` (``"SMD"`` for Hedges' g; e.g. ``"logRR"`` for effect-level data).
    pymc_model : pymc.Model or None
        The compiled-graph model of a NUTS fit (for log-prior/likelihood and checks); not serialised.
    checks : list of Check
        The calibrated model checks of the fit (:func:`analysis.checks.calibrated.checks_of`); empty
        where none ran (exact fits, models without a predictive check).
    decision : DecisionQuantities or None
        P(mu > delta), the new study's predicted effect and replication probability
        (:func:`analysis.inference.decision.decision_quantities`; NUTS random-effects fits).
    """

    dataset: str
    provenance: str
    outcome: Outcome
    model: str
    engine: str
    priors: dict[str, str]
    summaries: dict[str, dict[str, float]]
    prob_benefit: float
    studies: pd.DataFrame
    diagnostics: Diagnostics | None = None
    retried: bool = False
    posterior: xr.DataTree | None = None
    settings: dict = field(default_factory=dict)
    measure: str = "SMD"
    pymc_model: Any = field(default=None, repr=False)
    checks: list[Check] = field(default_factory=list)
    decision: DecisionQuantities | None = None

    @property
    def k(self) -> int:
        """Number of studies."""
        return len(self.studies)

    @property
    def likelihood(self) -> str:
        """The likelihood the numbers come from: ``"arm"``, ``"normal-multilevel"`` or ``"normal"``."""
        return str(self.settings.get("likelihood", "normal"))

    @property
    def likelihood_label(self) -> str:
        """The likelihood and structure in words, for tables and figures."""
        levels = ", comparisons nested in studies" if self.settings.get("structure") == "multilevel" else ""
        if self.likelihood == "arm":
            return f"arm-level likelihood{levels}"
        if self.likelihood == "normal-multilevel":
            return f"normal likelihood (comparison effects, Gleser–Olkin covariance){levels}"
        return "normal likelihood (one effect per study)"

    @property
    def converged(self) -> bool:
        """True for exact fits and for NUTS fits that pass every convergence gate."""
        return self.diagnostics is None or self.diagnostics.passed

    def to_dict(self) -> dict:
        """JSON-ready dict in the layout of DESIGN.md §3 (plus provenance and settings)."""
        out = {
            "dataset": self.dataset,
            "provenance": self.provenance,
            "outcome": self.outcome.id,
            "outcome_label": self.outcome.label,
            "direction": self.outcome.direction,
            "model": self.model,
            "engine": self.engine,
            "priors": dict(self.priors),
            "k": self.k,
            "interval": INTERVAL_KIND,
            "measure": self.measure,
        }
        out.update({name: dict(self.summaries[name]) for name in SUMMARY_PARAMS})
        if "omega" in self.summaries:
            out["omega"] = dict(self.summaries["omega"])
        out["likelihood"] = self.likelihood
        out["prob_benefit"] = self.prob_benefit
        cols = ["study", "yi", "vi", "theta_mean", "theta_q025", "theta_q975"]
        out["studies"] = [
            {c: (row[c] if c == "study" else float(row[c])) for c in cols} for _, row in self.studies.iterrows()
        ]
        if self.diagnostics is not None:
            out["diagnostics"] = self.diagnostics.to_dict() | {"retried": self.retried}
        out["converged"] = self.converged
        out["checks"] = [c.to_dict() for c in self.checks]
        if self.decision is not None:
            out["decision"] = self.decision.to_dict()
        out["settings"] = dict(self.settings)
        return out

    def summary(self) -> pd.DataFrame:
        """Posterior summaries of mu, tau, (omega,) theta_new and I2: mean, sd, median and the 95% ETI."""
        params = [p for p in (*SUMMARY_PARAMS[:2], "omega", *SUMMARY_PARAMS[2:]) if p in self.summaries]
        table = pd.DataFrame.from_dict({p: self.summaries[p] for p in params}, orient="index")
        return table.rename(columns={"q025": "eti95_lower", "q975": "eti95_upper"})

    def __str__(self) -> str:
        return format_result(self)


def format_result(result: MetaAnalysisResult) -> str:
    """Text report of a fit in the style of metafor's ``print.rma`` / bayesmeta's ``print``."""
    o = result.outcome
    better = "higher" if o.direction > 0 else "lower"
    banner = "  [SIMULATED DATA]" if result.provenance == "simulated" else ""
    engine = "exact (quadrature over tau)" if result.engine == "exact" else _nuts_text(result)
    table = result.summary()
    model = (
        "exact arm-level likelihood: mean differences normal, pooled variances chi-square"
        if result.likelihood == "arm"
        else "normal-normal hierarchical model"
    )
    if result.settings.get("structure") == "multilevel":
        model += f"; {result.settings.get('n_comparisons')} comparisons nested in studies"
    lines = [
        f"Bayesian random-effects meta-analysis ({model}){banner}",
        f"dataset: {result.dataset}   outcome: {o.id} ({o.label}; {better} is better)",
        f"k = {result.k} studies   engine: {engine}",
        "priors: " + ", ".join(f"{name} ~ {prior}" for name, prior in result.priors.items()),
        "intervals: 95% equal-tailed (eti95); theta_new = TRUE effect of a new study"
        + (" (a new comparison in it)" if "omega" in result.summaries else "")
        + " (what it would observe adds sampling error)"
        + ("; omega = SD between a study's comparisons" if "omega" in result.summaries else ""),
        "",
        table.to_string(float_format=lambda z: f"{z:.4f}"),
        "",
        f"P(benefit) = P(mu {'>' if o.direction > 0 else '<'} 0 | data) = {result.prob_benefit:.4f}",
    ]
    lines += _decision_lines(result) + _check_lines(result)
    if result.diagnostics is not None:
        d = result.diagnostics
        status = "passed" if d.passed else "FAILED: " + "; ".join(d.failures())
        lines.append(
            f"diagnostics: r_hat max {d.r_hat_max:.3f}, ess_bulk min {d.ess_bulk_min:.0f}, "
            f"ess_tail min {d.ess_tail_min:.0f}, divergences {d.divergences} -> {status}"
            + (" (after one retry)" if result.retried else "")
        )
    return "\n".join(lines)


def _decision_lines(result: MetaAnalysisResult) -> list[str]:
    q = result.decision
    if q is None:
        return []
    sign = ">" if result.outcome.direction > 0 else "<"
    lines = [f"P(theta_new {sign} 0 | data) = {q.prob_theta_new_benefit:.3f}"]
    if q.prob_mu_above_min is not None and q.min_effect is not None:
        delta = result.outcome.direction * q.min_effect
        lines.insert(0, f"P(mu {sign} {delta:g} | data) = {q.prob_mu_above_min:.3f}  (minimal relevant effect)")
    if q.new_study_effect is not None and q.prob_replication is not None:
        e = q.new_study_effect
        lines.append(
            f"new study with {q.planned_n} animals per arm: observed g {e['mean']:.2f} "
            f"[{e['q025']:.2f}, {e['q975']:.2f}] (95% predictive); P(significant at 0.05 in the direction "
            f"of benefit) = {q.prob_replication:.3f}"
        )
    return lines + ([f"note: {q.note}"] if q.note else [])


def _check_lines(result: MetaAnalysisResult) -> list[str]:
    if not result.checks:
        return []
    parts = []
    for c in result.checks:
        if c.calibrated:
            state = f"{'FLAGGED' if c.flagged else 'not flagged'}; false alarms {100 * c.false_alarm_rate:.1f}%"
        elif c.calibrated is False:
            state = f"not a calibrated check: false alarms {100 * c.false_alarm_rate:.1f}% at this level"
        else:
            state = "calibration not measured"
        parts.append(f"{c.name} p = {c.p_value:.3f} ({state})")
    return [f"model checks (sampled posterior p, level {result.checks[0].nominal_level:g}): " + "; ".join(parts)]


def _nuts_text(result: MetaAnalysisResult) -> str:
    s = result.settings
    return f"NUTS ({s.get('chains')} chains x {s.get('draws')} draws, tune {s.get('tune')}, seed {s.get('seed')})"


def without_model(result: MetaAnalysisResult) -> MetaAnalysisResult:
    """A copy without the PyMC model (picklable; the draws are kept)."""
    return dataclasses.replace(result, pymc_model=None)


def stripped(result: MetaAnalysisResult) -> MetaAnalysisResult:
    """A copy without the posterior draws and the PyMC model (small, picklable)."""
    return dataclasses.replace(result, posterior=None, pymc_model=None)
