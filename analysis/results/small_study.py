"""Result objects of the small-study-effect analysis: JSON (``to_dict``) and report text (``__str__``).

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
from analysis.results.diagnostics import Diagnostics
from models.frequentist import RegTest

Summary = dict[str, float]


def _fmt_summary(s: Summary) -> str:
    return f"{s['mean']:.3f} (median {s['median']:.3f}; eti95 {s['q025']:.3f} to {s['q975']:.3f})"


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
        ``beta0``: bias-adjusted pooled effect (a study with ``x = 0``), ``{mean, sd, median, q025, q975}``.
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
class SelectionFit:
    """Posterior of the step-function selection model (always NUTS).

    Attributes
    ----------
    cutpoints : tuple of float
        One-sided p-value cut-points (direction of benefit).
    intervals : list of str
        Interval labels; ``counts`` gives the number of studies observed in each.
    mu, tau : dict
        Adjusted pooled effect (natural scale) and between-study SD before selection.
    omega : dict
        Interval label -> summary of the relative publication probability (first interval: 1).
    prob_selection : float
        ``P(omega_2 < 1 | y)``: non-significant results in the direction of benefit are
        published less often than significant ones (prior probability ``prior_prob_selection``).
    posterior : xarray.DataTree
        The NUTS draws.
    """

    cutpoints: tuple[float, ...]
    intervals: list[str]
    counts: list[int]
    mu: Summary
    tau: Summary
    omega: dict[str, Summary]
    prob_selection: float
    prior_prob_selection: float
    prob_benefit: float
    diagnostics: Diagnostics
    retried: bool
    omega_prior: str
    posterior: xr.DataTree | None = field(default=None, repr=False)

    @property
    def bayes_factor_selection(self) -> float:
        """Posterior odds over prior odds of ``omega_2 < 1`` vs ``omega_2 > 1``."""
        post = np.clip(self.prob_selection, 1e-12, 1 - 1e-12)
        prior = self.prior_prob_selection
        return float(post / (1 - post) / (prior / (1 - prior)))

    def to_dict(self) -> dict:
        """JSON-ready dict (no draws)."""
        return {
            "cutpoints": list(self.cutpoints),
            "intervals": list(self.intervals),
            "counts": list(self.counts),
            "mu": dict(self.mu),
            "tau": dict(self.tau),
            "omega": {k: dict(v) for k, v in self.omega.items()},
            "omega_prior": self.omega_prior,
            "prob_selection": self.prob_selection,
            "prior_prob_selection": self.prior_prob_selection,
            "bayes_factor_selection": self.bayes_factor_selection,
            "prob_benefit": self.prob_benefit,
            "diagnostics": self.diagnostics.to_dict() | {"retried": self.retried},
            "converged": self.diagnostics.passed,
        }


@dataclass
class SmallStudyResult:
    """Small-study-effect analysis of one outcome: PET/PEESE regressions and a selection model.

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
        Name -> :class:`RegressionFit`.
    headline : str
        Name of the regression chosen by the conditional PET-PEESE rule.
    selection : SelectionFit or None
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
    headline: str
    selection: SelectionFit | None
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

        ``mu``, ``tau`` and ``prob_benefit`` are those of the headline (bias-adjusted) regression;
        ``engine`` is the engine of the regressions (the selection model is always NUTS).
        """
        cols = ["study", "yi", "vi", "sei", "n_tilde", "p_one_sided", "p_interval"]
        studies = [
            {c: (row[c] if c in ("study", "p_interval") else _num(row[c])) for c in cols}
            for _, row in self.studies.iterrows()
        ]
        head = self.regressions[self.headline]
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
            "random_effects": {p: dict(s) for p, s in self.random_effects.items()},
            "regressions": {name: fit.to_dict() for name, fit in self.regressions.items()},
            "engine": self.settings.get("engine", "exact"),
            "headline": self.headline,
            "mu": dict(head.intercept),
            "tau": dict(head.tau),
            "prob_benefit": head.prob_benefit,
            "selection": None if self.selection is None else self.selection.to_dict(),
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


def _selection_lines(sel: SelectionFit) -> list[str]:
    cuts = ", ".join(f"{c:g}" for c in sel.cutpoints)
    lines = [
        (
            f"Step-function selection model (one-sided p cut-points {cuts} in the direction of benefit; "
            f"omega_j ~ {sel.omega_prior}, omega_1 = 1)"
        ),
        "  studies per interval: " + ", ".join(f"{lab}: {n}" for lab, n in zip(sel.intervals, sel.counts, strict=True)),
        f"  adjusted mu  = {_fmt_summary(sel.mu)}",
        f"  tau          = {_fmt_summary(sel.tau)}",
    ]
    lines += [f"  omega[{lab}] = {_fmt_summary(s)}" for lab, s in list(sel.omega.items())[1:]]
    lines.append(
        f"  P(omega_2 < 1) = {sel.prob_selection:.3f} (prior {sel.prior_prob_selection:.2f}; "
        f"Bayes factor {sel.bayes_factor_selection:.2f})"
    )
    lines.append("  " + _diag_text(sel.diagnostics, sel.retried))
    return lines


def format_small_study(result: SmallStudyResult) -> str:
    """Report text of a small-study-effect analysis (metafor/bayesmeta print style)."""
    o = result.outcome
    banner = "  [SIMULATED DATA]" if result.provenance == "simulated" else ""
    infl = "larger" if o.direction > 0 else "more negative"
    head = result.regressions[result.headline]
    lines = [
        f"Bayesian small-study-effect analysis{banner}",
        (
            f"dataset: {result.dataset}   outcome: {o.id} "
            f"({o.label}; {'higher' if o.direction > 0 else 'lower'} is better)"
        ),
        f"k = {result.k} studies; priors: " + ", ".join(f"{p} ~ {s}" for p, s in result.priors.items()),
        f"intervals: 95% equal-tailed ({INTERVAL_KIND}); P(small-study) = P(small studies report {infl} effects)",
        "",
        f"unadjusted random-effects mu = {_fmt_summary(result.random_effects['mu'])}",
        f"bias-adjusted mu ({result.headline}, conditional PET-PEESE rule) = {_fmt_summary(head.intercept)}",
        "",
        "PET/PEESE meta-regressions (beta0 = effect of an infinitely precise study, beta1 = small-study effect):",
        _regression_table(result),
        "engine: " + ", ".join(sorted({_diag_text(f.diagnostics, f.retried) for f in result.regressions.values()})),
        "",
    ]
    if result.selection is not None:
        lines += _selection_lines(result.selection) + [""]
    lines.append(f"frequentist reference: {str(result.egger).splitlines()[1]}")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)
