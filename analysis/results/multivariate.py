"""The result of a multivariate meta-analysis fit: summaries, borrowing of strength, JSON, report text."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from analysis.config import INTERVAL_KIND
from analysis.dataset.load import Outcome
from analysis.results.diagnostics import Diagnostics
from analysis.results.summaries import SUMMARY_KEYS

SUMMARY_COLUMNS = list(SUMMARY_KEYS)


@dataclass
class MultivariateResult:
    """A fitted multivariate random-effects meta-analysis (all effects on the benefit scale).

    Attributes
    ----------
    dataset, provenance, measure : str
        Dataset name, provenance and effect measure.
    outcomes : tuple of Outcome
        Modelled outcomes, in order; effects are multiplied by ``direction`` (positive = benefit).
    study : tuple of str
        Studies (those reporting at least one modelled outcome).
    reported : numpy.ndarray
        ``(k, K)`` boolean, which outcomes each study reports.
    priors : dict
        Prior strings (``mu``, ``tau``, ``R``).
    within : str
        How the within-study covariances were obtained (assumption stated).
    rho_within : float, numpy.ndarray or None
        The assumed within-study correlation (None if all covariances were known).
    mu, tau, theta_new : pandas.DataFrame
        Per outcome (index) ``mean, sd, median, q025, q975`` (95% ETI).
    rho : pandas.DataFrame
        Per pair ``A~B`` (index): ``outcome_1, outcome_2`` and the five summaries of R's element.
    R_mean : pandas.DataFrame
        Posterior mean of R (K x K).
    univariate : pandas.DataFrame
        Univariate (exact engine) posterior of mu per outcome on the benefit scale, with ``k``.
    borrowing : pandas.DataFrame
        Per outcome: ``k``, ``width_univariate``, ``width_multivariate`` (of the 95% ETI of mu)
        and ``width_ratio`` = multivariate / univariate (< 1: strength borrowed).
    theta : pandas.DataFrame
        Per study and outcome: ``study, outcome, reported, yi, vi`` and the five summaries of
        θ_ik; rows with ``reported`` False are predictions for unreported outcomes.
    beta : pandas.DataFrame or None
        Moderator slopes (``coef, outcome`` and the five summaries) when moderators were used.
    diagnostics : Diagnostics
        Convergence diagnostics over mu, tau, rho (and beta); ``retried`` if rerun.
    posterior : xarray.DataTree or None
        Draws (with ``theta`` and ``theta_new``), savable as NetCDF.
    settings : dict
        Seed, sampler settings and parameterisation.
    structure : str
        Between-study correlation structure (``unstructured``, ``cs``, ``independent``).
    rho_within_posterior : dict or None
        Posterior summary of the estimated within-study correlation (None when it was fixed).
    reporting_bias : pandas.DataFrame or None
        Outcome-reporting-bias diagnostic (:mod:`analysis.checks.reporting_bias`).
    structure_comparison : pandas.DataFrame or None
        PSIS-LOO over studies of the structures (:mod:`analysis.fitting.multivariate_structures`),
        when the structure was chosen by it.
    prior_posterior : pandas.DataFrame or None
        Prior against posterior of every correlation parameter and ρ_w
        (:func:`analysis.fitting.multivariate.prior_posterior_table`).
    prior_posterior_by_structure : pandas.DataFrame or None
        The same rows for every structure compared (column ``structure``), when they were compared.
    """

    dataset: str
    provenance: str
    measure: str
    outcomes: tuple[Outcome, ...]
    study: tuple[str, ...]
    reported: np.ndarray
    priors: dict[str, str]
    within: str
    rho_within: float | np.ndarray | None
    mu: pd.DataFrame
    tau: pd.DataFrame
    theta_new: pd.DataFrame
    rho: pd.DataFrame
    R_mean: pd.DataFrame
    univariate: pd.DataFrame
    borrowing: pd.DataFrame
    theta: pd.DataFrame
    diagnostics: Diagnostics
    beta: pd.DataFrame | None = None
    retried: bool = False
    posterior: xr.DataTree | None = None
    settings: dict = field(default_factory=dict)
    structure: str = "unstructured"
    rho_within_posterior: dict[str, float] | None = None
    reporting_bias: pd.DataFrame | None = None
    structure_comparison: pd.DataFrame | None = None
    prior_posterior: pd.DataFrame | None = None
    prior_posterior_by_structure: pd.DataFrame | None = None

    @property
    def k(self) -> int:
        """Number of studies."""
        return len(self.study)

    @property
    def converged(self) -> bool:
        """True if the fit passes every convergence gate."""
        return self.diagnostics.passed

    @property
    def predictions(self) -> pd.DataFrame:
        """θ_ik for the outcomes a study did not report (conditional on the ones it did)."""
        return self.theta[~self.theta["reported"]].reset_index(drop=True)

    def to_dict(self) -> dict:
        """JSON-ready dict: mu/tau/theta_new per outcome, R pairs with 95% ETIs, settings and diagnostics."""
        out = {
            "dataset": self.dataset,
            "provenance": self.provenance,
            "model": "multivariate",
            "engine": "nuts",
            "measure": self.measure,
            "scale": "benefit (effect x direction)",
            "interval": INTERVAL_KIND,
            "outcomes": [{"id": o.id, "label": o.label, "direction": o.direction} for o in self.outcomes],
            "k": self.k,
            "k_per_outcome": {o.id: int(n) for o, n in zip(self.outcomes, self.reported.sum(axis=0))},
            "priors": dict(self.priors),
            "within": self.within,
            "structure": self.structure,
            "rho_within": (
                dict(self.rho_within_posterior) if self.rho_within_posterior is not None else _jsonable(self.rho_within)
            ),
        }
        if self.structure_comparison is not None:
            out["structure_comparison"] = _comparison_records(self.structure_comparison)
        out["reporting_bias"] = reporting_bias_records(self.reporting_bias)
        if self.prior_posterior is not None:
            out["prior_posterior"] = {
                str(name): {c: float(v) for c, v in row.items()} for name, row in self.prior_posterior.iterrows()
            }
        if self.prior_posterior_by_structure is not None:
            out["prior_posterior_by_structure"] = [
                {"parameter": str(name), **{c: (v if isinstance(v, str) else float(v)) for c, v in row.items()}}
                for name, row in self.prior_posterior_by_structure.iterrows()
            ]
        for name in ("mu", "tau", "theta_new"):
            out[name] = _records(getattr(self, name))
        out["univariate_mu"] = _records(self.univariate[SUMMARY_COLUMNS])
        out["borrowing"] = {o: {c: float(v) for c, v in row.items()} for o, row in self.borrowing.iterrows()}
        out["R"] = {
            "pairs": [
                {"pair": p, **{c: (v if isinstance(v, str) else float(v)) for c, v in row.items()}}
                for p, row in self.rho.iterrows()
            ],
            "mean": self.R_mean.to_numpy().tolist(),
            "outcomes": [o.id for o in self.outcomes],
        }
        if self.beta is not None:
            out["beta"] = [
                {c: (v if isinstance(v, str) else float(v)) for c, v in row.items()} for _, row in self.beta.iterrows()
            ]
        out["predictions"] = [
            {"study": r.study, "outcome": r.outcome, **{c: float(getattr(r, c)) for c in SUMMARY_COLUMNS}}
            for r in self.predictions.itertuples()
        ]
        out["diagnostics"] = self.diagnostics.to_dict() | {"retried": self.retried}
        out["converged"] = self.converged
        out["settings"] = dict(self.settings)
        return out

    def __str__(self) -> str:
        return format_multivariate(self)


def _comparison_records(frame: pd.DataFrame) -> list[dict]:
    return [
        {"structure": str(name), **{c: (v if isinstance(v, (str, bool)) else float(v)) for c, v in row.items()}}
        for name, row in frame.iterrows()
    ]


def reporting_bias_row(multivariate: dict | None, outcome: str) -> dict | None:
    """The :func:`reporting_bias_records` entry of ``outcome`` in a multivariate fit's JSON dict, if assessed."""
    rows = [] if multivariate is None else multivariate.get("reporting_bias", [])
    return next((r for r in rows if r["outcome"] == outcome), None)


def reporting_bias_records(frame: pd.DataFrame | None) -> list[dict]:
    """The diagnostic as JSON records: ``{outcome, missing_studies, difference: {mean, ..., q975}, ...}``."""
    if frame is None:
        return []
    return [
        {
            "outcome": r.outcome,
            "k_reported": int(r.k_reported),
            "missing_studies": list(r.missing_studies),
            "difference": {c: float(getattr(r, c)) for c in SUMMARY_COLUMNS},
            "null_sd": float(r.null_sd),
            "z": float(r.z),
            "flagged": bool(r.flagged),
            "z_averaged": float(r.z_averaged),
            "drivers": [{"study": s, "change": float(v)} for s, v in r.drivers],
        }
        for r in frame.itertuples()
    ]


def _records(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    return {str(i): {c: float(row[c]) for c in SUMMARY_COLUMNS} for i, row in frame.iterrows()}


def _jsonable(rho: float | np.ndarray | None) -> float | list | None:
    if rho is None or np.ndim(rho) == 0:
        return rho if rho is None else float(rho)
    return np.asarray(rho).tolist()


def _fmt(frame: pd.DataFrame) -> str:
    table = frame.rename(columns={"q025": f"{INTERVAL_KIND}_lower", "q975": f"{INTERVAL_KIND}_upper"})
    return table.to_string(float_format=lambda z: f"{z:.3f}")


def format_multivariate(result: MultivariateResult) -> str:
    """Text report in the style of metafor's ``print.rma.mv``: model, k, priors, tables, diagnostics."""
    banner = "  [SIMULATED DATA]" if result.provenance == "simulated" else ""
    s = result.settings
    flipped = [o.id for o in result.outcomes if o.direction < 0]
    side = pd.DataFrame(
        {
            "k": result.borrowing["k"],
            "mu_mv": result.mu["mean"],
            "mu_uni": result.univariate["mean"],
            "width_mv": result.borrowing["width_multivariate"],
            "width_uni": result.borrowing["width_univariate"],
            "width_ratio": result.borrowing["width_ratio"],
        }
    )
    lines = [
        f"Bayesian multivariate random-effects meta-analysis{banner}",
        f"dataset: {result.dataset}   outcomes: {', '.join(o.id for o in result.outcomes)}   k = {result.k} studies",
        f"scale: benefit-oriented {result.measure} (positive = benefit"
        + (f"; sign flipped for {', '.join(flipped)})" if flipped else ")"),
        (
            "model: theta_i ~ MVN(mu, diag(tau) R diag(tau)); "
            f"{s.get('parameterisation', 'marginal')} parameterisation; "
            "each study contributes only the outcomes it reports"
        ),
        f"within-study: {result.within}",
        f"between-study correlation structure: {result.structure}",
        f"priors: mu_k ~ {result.priors['mu']}, tau_k ~ {result.priors['tau']}, R ~ {result.priors['R']}"
        + (f", rho_w ~ {result.priors['rho_within']}" if "rho_within" in result.priors else ""),
        f"engine: NUTS ({s.get('chains')} chains x {s.get('draws')} draws, tune {s.get('tune')}, seed {s.get('seed')})",
        f"intervals: 95% equal-tailed ({INTERVAL_KIND})",
        "",
        "Pooled effects mu_k",
        _fmt(result.mu),
        "",
        "Between-study SD tau_k",
        _fmt(result.tau),
        "",
        "Between-study correlations (R)",
        _fmt(result.rho.drop(columns=["outcome_1", "outcome_2"])),
        "",
        "Borrowing of strength: mu_k multivariate vs univariate (exact engine, same priors)",
        side.to_string(float_format=lambda z: f"{z:.3f}"),
    ]
    if result.rho_within_posterior is not None:
        lines += [
            "",
            "Within-study correlation rho_w",
            _fmt(pd.DataFrame([result.rho_within_posterior], index=["rho_w"])),
        ]
    if result.structure_comparison is not None:
        lines += ["", "Structures compared by PSIS-LOO over studies", _fmt(result.structure_comparison)]
    if result.reporting_bias is not None and not result.reporting_bias.empty:
        rb = result.reporting_bias.set_index("outcome")[
            ["k_reported", "mean", "q025", "q975", "null_sd", "z", "flagged"]
        ]
        lines += ["", "Outcome-reporting bias: mu_k multivariate - univariate (benefit scale)", _fmt(rb)]
    if result.beta is not None:
        lines += ["", "Moderator slopes beta (centred moderators)", _fmt(result.beta.set_index(["coef", "outcome"]))]
    pred = result.predictions
    if not pred.empty:
        lines += [
            "",
            "Predicted effects for unreported outcomes (theta_ik | reported outcomes)",
            _fmt(pred.set_index(["study", "outcome"])[SUMMARY_COLUMNS]),
        ]
    d = result.diagnostics
    status = "passed" if d.passed else "FAILED: " + "; ".join(d.failures())
    lines += [
        "",
        f"diagnostics (mu, tau, R): r_hat max {d.r_hat_max:.3f}, ess_bulk min {d.ess_bulk_min:.0f}, "
        f"ess_tail min {d.ess_tail_min:.0f}, divergences {d.divergences} -> {status}"
        + (" (after one retry)" if result.retried else ""),
    ]
    return "\n".join(lines)
