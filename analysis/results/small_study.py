"""Result objects of the small-study and publication-bias analysis: JSON (``to_dict``) and report text (``__str__``).

Built by :mod:`analysis.fitting.small_study`. All location summaries are on the natural scale of the
outcome (treatment minus control); "small-study inflation" and "benefit" use the outcome's
``direction``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from analysis.config import INTERVAL_KIND
from analysis.dataset.load import Outcome
from analysis.results.bias_averaged import BiasAveragedResult, format_bias_averaged
from analysis.results.diagnostics import Diagnostics
from models.frequentist import RegTest

Summary = dict[str, float]


def _diag_text(d: Diagnostics | None, retried: bool) -> str:
    if d is None:
        return "exact (quadrature over tau)"
    status = "passed" if d.passed else "FAILED: " + "; ".join(d.failures())
    return (
        f"NUTS: r_hat max {d.r_hat_max:.3f}, ess_bulk min {d.ess_bulk_min:.0f}, divergences "
        f"{d.divergences} -> {status}" + (" (after one retry)" if retried else "")
    )


@dataclass
class RegressionFit:
    """One Bayesian PET or PEESE meta-regression ``theta_i ~ N(beta0 + beta1 x_i, tau^2)``.

    Attributes
    ----------
    name : str
        ``"PET-sei"``, ``"PEESE-vi"``, ``"PET-sqrt_inv_n"`` or ``"PEESE-inv_n"``.
    kind, predictor : str
        ``"PET"``/``"PEESE"`` and the predictor (:data:`models.small_study.PREDICTORS`).
    intercept : dict
        ``beta0``: the effect of a study with ``x = 0`` (infinitely precise), ``{mean, sd, median, q025, q975}``.
    slope : dict
        ``beta1``: the small-study (bias) parameter.
    tau : dict
        Residual between-study SD.
    prob_small_study : float
        ``P(direction * beta1 > 0 | y)``: small studies report larger benefits.
    prob_benefit : float
        ``P(direction * beta0 > 0 | y)``.
    engine : str
        ``"exact"`` or ``"nuts"``.
    log_marginal_likelihood : float or None
        Evidence of the regression (exact engine only).
    diagnostics : Diagnostics or None
        NUTS convergence (``None`` for the exact engine).
    draws : dict
        ``intercept`` and ``slope`` posterior draws (for plotting; not serialised).
    posterior : xarray.DataTree or None
        The NUTS draws (``engine="nuts"`` only).
    """

    name: str
    kind: str
    predictor: str
    intercept: Summary
    slope: Summary
    tau: Summary
    prob_small_study: float
    prob_benefit: float
    engine: str
    log_marginal_likelihood: float | None = None
    diagnostics: Diagnostics | None = None
    retried: bool = False
    draws: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    posterior: xr.DataTree | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """JSON-ready dict (no draws)."""
        out = {
            "name": self.name,
            "kind": self.kind,
            "predictor": self.predictor,
            "engine": self.engine,
            "intercept": dict(self.intercept),
            "slope": dict(self.slope),
            "tau": dict(self.tau),
            "prob_small_study": self.prob_small_study,
            "prob_benefit": self.prob_benefit,
            "log_marginal_likelihood": self.log_marginal_likelihood,
        }
        if self.diagnostics is not None:
            out["diagnostics"] = self.diagnostics.to_dict() | {"retried": self.retried}
        return out


@dataclass
class SmallStudyResult:
    """Publication-bias analysis of one outcome: the bias-averaged ensemble and PET/PEESE single models.

    Attributes
    ----------
    dataset, provenance, measure : str
    outcome : Outcome
    priors : dict
        Prior strings of every parameter.
    studies : pandas.DataFrame
        ``study, yi, vi, sei, n_treatment, n_control, n_tilde, p_one_sided, p_interval``.
    random_effects : dict
        Unadjusted exact random-effects posterior: ``mu``, ``tau`` summaries.
    regressions : dict
        Name -> :class:`RegressionFit` (PET/PEESE single models; empty for an SMD without group sizes).
    averaged : BiasAveragedResult
        The bias-averaged ensemble: the adjusted estimate (model-averaged mu), the inclusion
        Bayes factors, and the selection models as single models.
    egger : RegTest
        metafor-style frequentist Egger test, for reference.
    notes : list of str
        Skipped analyses and warnings about what the data can tell.
    re_draws : dict
        Exact posterior draws of ``mu`` and ``tau`` (funnel predictive region; not serialised).
    """

    dataset: str
    provenance: str
    outcome: Outcome
    measure: str
    priors: dict[str, str]
    studies: pd.DataFrame
    random_effects: dict[str, Summary]
    regressions: dict[str, RegressionFit]
    averaged: BiasAveragedResult
    egger: RegTest
    notes: list[str]
    re_draws: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    settings: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        """Number of studies."""
        return len(self.studies)

    def to_dict(self) -> dict:
        """JSON-ready dict in the style of DESIGN.md §3 (``model = "small-study"``).

        ``mu``, ``tau`` and ``prob_benefit`` are the bias-averaged ensemble's (model-averaged,
        natural scale), ``mu_unadjusted`` its random-effects model without bias, ``inclusion_bf``
        its inclusion Bayes factors; ``engine`` is the engine of the PET/PEESE regressions.
        """
        cols = ["study", "yi", "vi", "sei", "n_tilde", "p_one_sided", "p_interval"]
        studies = [
            {c: (row[c] if c in ("study", "p_interval") else _num(row[c])) for c in cols}
            for _, row in self.studies.iterrows()
        ]
        averaged = self.averaged.to_dict()
        return {
            "dataset": self.dataset,
            "provenance": self.provenance,
            "outcome": self.outcome.id,
            "outcome_label": self.outcome.label,
            "direction": self.outcome.direction,
            "model": "small-study",
            "measure": self.measure,
            "k": self.k,
            "interval": INTERVAL_KIND,
            "priors": dict(self.priors),
            "mu": averaged["mu"],
            "tau": averaged["tau"],
            "prob_benefit": averaged["prob_benefit"],
            "mu_unadjusted": averaged["mu_unadjusted"],
            "inclusion_bf": averaged["inclusion_bf"],
            "random_effects": {p: dict(s) for p, s in self.random_effects.items()},
            "regressions": {name: fit.to_dict() for name, fit in self.regressions.items()},
            "engine": self.settings.get("engine", "exact"),
            "bias_averaged": averaged,
            "egger": self.egger.to_dict(),
            "notes": list(self.notes),
            "studies": studies,
            "settings": dict(self.settings),
        }

    def __str__(self) -> str:
        return format_small_study(self)


def _num(x: float) -> float | None:
    value = float(x)
    return None if np.isnan(value) else value


def _regression_table(result: SmallStudyResult) -> str:
    rows = {}
    for name, fit in result.regressions.items():
        rows[name] = {
            "beta0_mean": fit.intercept["mean"],
            "beta0_q025": fit.intercept["q025"],
            "beta0_q975": fit.intercept["q975"],
            "beta1_mean": fit.slope["mean"],
            "beta1_q025": fit.slope["q025"],
            "beta1_q975": fit.slope["q975"],
            "tau_median": fit.tau["median"],
            "P(small-study)": fit.prob_small_study,
        }
    return pd.DataFrame.from_dict(rows, orient="index").to_string(float_format=lambda z: f"{z:.3f}")


def format_small_study(result: SmallStudyResult) -> str:
    """Report text: the bias-averaged ensemble, then the PET/PEESE single models and Egger's test."""
    lines = [format_bias_averaged(result.averaged), ""]
    counts = result.studies["p_interval"].value_counts()
    lines.append(
        "studies per one-sided p-value interval: " + ", ".join(f"{lab}: {n}" for lab, n in counts.sort_index().items())
    )
    if result.regressions:
        lines += [
            "",
            "PET/PEESE single meta-regressions (beta0 = effect of an infinitely precise study, beta1 = "
            "small-study effect; not an adjusted estimate on their own):",
            _regression_table(result),
            "engine: " + ", ".join(sorted({_diag_text(f.diagnostics, f.retried) for f in result.regressions.values()})),
        ]
    lines += ["", f"frequentist reference: {str(result.egger).splitlines()[1]}"]
    lines += [f"note: {n}" for n in result.notes if n not in result.averaged.notes]
    return "\n".join(lines)
