"""The result of a Bayesian meta-regression of one outcome: coefficients, subgroups, R², JSON, report text."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import xarray as xr

from analysis.config import INTERVAL_KIND
from analysis.dataset.load import Outcome
from analysis.results.diagnostics import Diagnostics
from models.meta_regression import Design

__all__ = ["MIN_K_SUBGROUPS", "MetaRegressionResult", "SubgroupResults", "format_meta_regression"]

MIN_K_SUBGROUPS: int = 10
"""Fewest studies of an outcome for its subgroup analyses (meta-regressions) to be shown in a report.

The Cochrane Handbook (v6.4, 2023, chapter 10, §10.11.5.1 "Ensure that there are adequate studies
to justify subgroup analyses and meta-regressions") gives the typical advice that at least ten
studies should be available for each characteristic modelled, and warns that even this is too few
when the characteristic is unevenly distributed across studies. The one-at-a-time analyses model
one moderator each, hence 10. The rule of thumb has little empirical support of its own; our
measurement at the flagship design's k (:mod:`analysis.studies.subgroup_r2`: 300 simulated
replicates, 2100 fits of a pure-noise moderator at k = 4-10) shows what small k does: the former
point R² was >= 40% in 10.6% of fits (13.7% at k = 4-6, 8.7% at k = 10) and the posterior
median R² in 16.4%, while the 95% ETI of R² typically spans 0 to > 90% and its lower end exceeded
0.1 in 0.1% of fits; a true 0.5 SMD contrast (engineered EVs) fared no better (0.3%). So even at
k = 10 one-at-a-time subgroup results are exploratory; below it they are not shown. Below the
threshold the fits are still computed and kept in the JSON (``shown_in_report: false``), counted
in the report's number of comparisons, and the report says why it does not show them.
"""

_SUMMARY = ("mean", "sd", "median", "q025", "q975")
_COLUMNS = {"q025": "eti95_lower", "q975": "eti95_upper", "prob_gt_0": "P(>0)", "prob_benefit": "P(benefit)"}


@dataclass
class MetaRegressionResult:
    """A fitted Bayesian random-effects meta-regression of one outcome.

    Attributes
    ----------
    dataset, provenance : str
        Dataset name and provenance (``"simulated"`` results are labelled as such everywhere).
    outcome : Outcome
        The outcome (id, label, unit, direction of benefit).
    engine : str
        ``"nuts"`` or ``"exact"``.
    priors : dict
        Prior string of every parameter: ``intercept``, ``tau`` and each slope (per unit).
    slope_prior : dict
        The slope-prior rule: ``sd`` (S), ``per`` (``"standardised"``/``"unit"``), ``default``.
    design : Design
        Design matrix, coding of each moderator (reference, centre, dropped levels) and notes.
    summaries : dict
        ``mu`` (the intercept: expected effect at the reference levels and numeric moderators at
        their centre), ``tau`` and ``I2`` (residual), ``theta_new`` (a new study at the
        intercept's covariates) -> ``{mean, sd, median, q025, q975}``.
    beta : dict
        Coefficient -> ``{mean, sd, median, q025, q975, prob_gt_0}``.
    subgroups, contrasts, slopes : list of dict
        Subgroup means per level, contrasts level − reference and numeric slopes (per unit),
        each with the five summaries, ``prob_gt_0`` and ``prob_benefit``.
    R2 : dict
        Posterior of the share of the between-study variance explained (Bayesian R², Gelman et
        al. 2019; :func:`models.meta_regression.bayes_r2_draws`): ``mean, sd, median, q025,
        q975, n_draws, draws, definition``; plus ``point_ratio_of_medians``, the former point
        value ``1 - median(tau2_MR) / median(tau2_RE)`` with its parts (JSON only, not reported).
    prob_benefit : float
        P(intercept favours treatment).
    studies : pandas.DataFrame
        ``study, yi, vi, theta_mean, theta_sd, theta_q025, theta_q975``.
    diagnostics, retried, posterior, settings, measure
        As in :class:`analysis.results.random_effects.MetaAnalysisResult`.
    """

    dataset: str
    provenance: str
    outcome: Outcome
    engine: str
    priors: dict[str, str]
    slope_prior: dict
    design: Design
    summaries: dict[str, dict[str, float]]
    beta: dict[str, dict[str, float]]
    subgroups: list[dict]
    contrasts: list[dict]
    slopes: list[dict]
    R2: dict
    prob_benefit: float
    studies: pd.DataFrame
    diagnostics: Diagnostics | None = None
    retried: bool = False
    posterior: xr.DataTree | None = None
    settings: dict = field(default_factory=dict)
    measure: str = "SMD"
    model: str = "meta-regression"

    @property
    def k(self) -> int:
        """Number of studies."""
        return len(self.studies)

    @property
    def moderators(self) -> list[str]:
        """Moderators in the model (after any skipped with a note)."""
        return [t.moderator for t in self.design.terms]

    @property
    def notes(self) -> list[str]:
        """Notes on the coding (dropped or single-study levels, skipped moderators, rank)."""
        return list(self.design.notes)

    @property
    def converged(self) -> bool:
        """True for exact fits and for NUTS fits that pass every convergence gate."""
        return self.diagnostics is None or self.diagnostics.passed

    @property
    def intercept_text(self) -> str:
        """Where the intercept (``mu``) and ``theta_new`` are evaluated."""
        return ", ".join(
            f"{t.moderator} = {t.reference} (reference)"
            if t.type == "categorical"
            else f"{t.moderator} = {t.centre:.4g} ({'mean of analysed studies' if self.design.center else 'raw 0'})"
            for t in self.design.terms
        )

    @property
    def subgroup_text(self) -> str:
        """What a subgroup mean holds the other moderators at."""
        return (
            "other categorical moderators at their reference level, numeric moderators at their mean over "
            "the analysed studies"
        )

    def slope_prior_text(self) -> str:
        """The slope-prior rule in words."""
        s = self.slope_prior
        scale = (
            "per categorical contrast and per 2 SD of each numeric moderator (Gelman 2008)"
            if s["per"] == "standardised"
            else "per unit of every design column"
        )
        origin = " (default for " + ("several moderators" if len(self.design.terms) > 1 else "one moderator") + ")"
        return f"slopes ~ N(0, S^2), S = {s['sd']:g} {scale}" + (origin if s["default"] else "")

    def to_dict(self) -> dict:
        """JSON-ready dict in the layout of DESIGN.md §3, plus the meta-regression parts."""
        out = {
            "dataset": self.dataset,
            "provenance": self.provenance,
            "outcome": self.outcome.id,
            "outcome_label": self.outcome.label,
            "direction": self.outcome.direction,
            "model": self.model,
            "engine": self.engine,
            "priors": dict(self.priors),
            "slope_prior": self.slope_prior | {"text": self.slope_prior_text()},
            "k": self.k,
            "interval": INTERVAL_KIND,
            "measure": self.measure,
            "moderators": self.moderators,
            "coding": [t.to_dict() for t in self.design.terms],
            "center": self.design.center,
            "mu_at": self.intercept_text,
            "subgroups_at": self.subgroup_text,
            "notes": self.notes,
        }
        out.update({name: dict(self.summaries[name]) for name in ("mu", "tau", "theta_new", "I2")})
        out["mu_is"] = "intercept: expected effect at mu_at (theta_new: a new study there)"
        out["prob_benefit"] = self.prob_benefit
        out["beta"] = {name: dict(summary) for name, summary in self.beta.items()}
        out.update(
            {
                "subgroups": [dict(s) for s in self.subgroups],
                "contrasts": [dict(c) for c in self.contrasts],
                "slopes": [dict(s) for s in self.slopes],
                "R2": dict(self.R2),
            }
        )
        cols = ["study", "yi", "vi", "theta_mean", "theta_q025", "theta_q975"]
        out["studies"] = [
            {c: (row[c] if c == "study" else float(row[c])) for c in cols} for _, row in self.studies.iterrows()
        ]
        if self.diagnostics is not None:
            out["diagnostics"] = self.diagnostics.to_dict() | {"retried": self.retried}
        out["converged"] = self.converged
        out["settings"] = dict(self.settings)
        return out

    def __str__(self) -> str:
        return format_meta_regression(self)


class SubgroupResults(dict):
    """``moderator -> MetaRegressionResult`` of one-moderator-at-a-time analyses, plus ``skipped``.

    ``skipped`` maps each moderator that could not be estimated for the outcome to the reason.
    """

    def __init__(self) -> None:
        super().__init__()
        self.skipped: dict[str, str] = {}

    @property
    def k(self) -> int | None:
        """Number of studies of the outcome (shared by every fit); None without an estimable moderator."""
        return next((result.k for result in self.values()), None)

    @property
    def n_comparisons(self) -> int:
        """Subgroup comparisons made: every contrast (level − reference) and every numeric slope of every fit."""
        return sum(len(result.contrasts) + len(result.slopes) for result in self.values())

    @property
    def shown_in_report(self) -> bool:
        """Whether a report shows these fits: ``k >= MIN_K_SUBGROUPS`` (see :data:`MIN_K_SUBGROUPS`)."""
        return self.k is not None and self.k >= MIN_K_SUBGROUPS

    def to_dict(self) -> dict:
        """JSON-ready ``{"fits": {moderator: result.to_dict()}, "skipped": {moderator: reason}, ...}``.

        Also ``k``, ``n_comparisons``, ``min_k_shown`` (:data:`MIN_K_SUBGROUPS`), ``shown_in_report``
        and ``label`` (these one-at-a-time analyses are exploratory).
        """
        return {
            "fits": {name: result.to_dict() for name, result in self.items()},
            "skipped": dict(self.skipped),
            "k": self.k,
            "n_comparisons": self.n_comparisons,
            "min_k_shown": MIN_K_SUBGROUPS,
            "shown_in_report": self.shown_in_report,
            "label": "exploratory: one moderator at a time, not pre-specified hypothesis tests",
        }


def _table(rows: list[dict], index: list[str], extra: tuple[str, ...] = ()) -> str:
    keys = [*extra, *_SUMMARY, "prob_gt_0", "prob_benefit"]
    frame = pd.DataFrame([{k: r.get(k) for k in keys if k in r} for r in rows], index=index).rename(columns=_COLUMNS)
    return frame.to_string(float_format=lambda z: f"{z:.4f}")


def _header(result: MetaRegressionResult) -> list[str]:
    o = result.outcome
    banner = "  [SIMULATED DATA]" if result.provenance == "simulated" else ""
    better = "higher" if o.direction > 0 else "lower"
    coding = "; ".join(
        f"{t.moderator} (categorical, reference {t.reference!r})"
        if t.type == "categorical"
        else (
            f"{t.moderator} (numeric, "
            f"{'centred at ' + format(t.centre, '.4g') if result.design.center else 'not centred'})"
        )
        for t in result.design.terms
    )
    if result.engine == "exact":
        engine = "exact (quadrature over tau)"
    else:
        s = result.settings
        engine = f"NUTS ({s.get('chains')} chains x {s.get('draws')} draws, tune {s.get('tune')}, seed {s.get('seed')})"
    priors = ", ".join(f"{name} ~ {text}" for name, text in result.priors.items())
    return [
        f"Bayesian random-effects meta-regression (normal-normal hierarchical model){banner}",
        f"dataset: {result.dataset}   outcome: {o.id} ({o.label}; {better} is better)",
        f"k = {result.k} studies   moderators: {coding}",
        f"engine: {engine}",
        f"priors: {priors}",
        f"        {result.slope_prior_text()}",
        f"intercept (mu) and theta_new at: {result.intercept_text}",
        "intervals: 95% equal-tailed (eti95); P(benefit) uses the outcome's direction",
    ]


def _r2_lines(result: MetaRegressionResult) -> list[str]:
    """The R² posterior and, below :data:`MIN_K_SUBGROUPS` studies, a warning."""
    r2 = result.R2
    lines = [
        f"between-study variance explained (Bayesian R2, Gelman et al. 2019): median {100 * r2['median']:.1f}%, "
        f"mean {100 * r2['mean']:.1f}%, eti95 [{100 * r2['q025']:.1f}%, {100 * r2['q975']:.1f}%] "
        f"({r2['n_draws']} joint draws of beta and tau)"
    ]
    if result.k < MIN_K_SUBGROUPS:
        lines.append(
            f"caution: k = {result.k} < {MIN_K_SUBGROUPS} studies (Cochrane Handbook 10.11.5.1: at least ten "
            "studies per characteristic modelled); treat these moderator results as exploratory at most"
        )
    return lines


def format_meta_regression(result: MetaRegressionResult) -> str:
    """Text report in the style of metafor's ``print.rma`` with moderators."""
    hetero = pd.DataFrame.from_dict({p: result.summaries[p] for p in ("tau", "I2")}, orient="index")
    lines = _header(result) + [
        "",
        "Residual heterogeneity:",
        hetero.rename(columns=_COLUMNS).to_string(float_format=lambda z: f"{z:.4f}"),
        *_r2_lines(result),
        "",
        "Model results (coefficients; slopes per unit):",
        _table(list(result.beta.values()), list(result.beta)),
    ]
    if result.subgroups:
        lines += [
            "",
            f"Subgroup means (expected effect at each level; {result.subgroup_text}):",
            _table(
                result.subgroups,
                [f"{s['moderator']}={s['level']}" + (" (ref)" if s["is_reference"] else "") for s in result.subgroups],
                extra=("n_studies",),
            ),
        ]
    if result.contrasts:
        lines += [
            "",
            "Contrasts vs reference (level - reference; P(benefit) = P(level more beneficial)):",
            _table(result.contrasts, [f"{c['moderator']}: {c['level']} - {c['reference']}" for c in result.contrasts]),
        ]
    if result.slopes:
        lines += [
            "",
            "Numeric slopes (per unit; P(benefit) = P(more benefit at higher values)):",
            _table(result.slopes, [s["moderator"] for s in result.slopes]),
        ]
    if result.notes:
        lines += ["", "Notes:"] + [f"  - {note}" for note in result.notes]
    if result.diagnostics is not None:
        d = result.diagnostics
        status = "passed" if d.passed else "FAILED: " + "; ".join(d.failures())
        lines.append(
            f"diagnostics: r_hat max {d.r_hat_max:.3f}, ess_bulk min {d.ess_bulk_min:.0f}, "
            f"ess_tail min {d.ess_tail_min:.0f}, divergences {d.divergences} -> {status}"
            + (" (after one retry)" if result.retried else "")
        )
    return "\n".join(lines)
