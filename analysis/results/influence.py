"""Result object of the influence analysis (:mod:`analysis.checks.influence`): JSON and report text."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from analysis.config import INTERVAL_KIND
from analysis.dataset.load import Outcome
from analysis.results.diagnostics import Diagnostics
from models.frequentist import RmaFit

#: Pareto k above which the PSIS-LOO estimate of a study is unreliable (Vehtari et al. 2024).
PARETO_K_THRESHOLD: float = 0.7


@dataclass
class InfluenceResult:
    """Per-study influence on the random-effects posterior of one outcome.

    Attributes
    ----------
    dataset, provenance, measure : str
    outcome : Outcome
    priors : dict
        Prior strings of mu and tau.
    engine : str
        Source of the PSIS-LOO draws: ``"nuts"`` or ``"exact"`` (independent exact draws).
    table : pandas.DataFrame
        Index ``study`` (the study left out). Columns ``yi, vi``; ``pareto_k``, ``elpd_psis``
        (PSIS-LOO ``log p(y_i | y_-i)``) and ``elpd_exact`` (exact); exact refits without the
        study ``mu_{mean,median,q025,q975}``, ``tau_{...}`` and their shifts ``mu_shift``,
        ``tau_shift`` (posterior mean without minus with the study); metafor's REML
        ``leave1out`` as ``freq_estimate, freq_se, freq_ci_lb, freq_ci_ub, freq_tau2``.
    full : dict
        Exact full-data summaries of ``mu`` and ``tau``.
    frequentist : RmaFit
        Full-data REML fit.
    elpd_loo, elpd_loo_se, p_loo, good_k : float
        ArviZ PSIS-LOO totals and its sample-size-dependent Pareto k threshold.
    diagnostics : Diagnostics or None
        NUTS convergence of the draws (``None`` for exact draws).
    default : pandas.DataFrame or None
        Leave-one-study-out of the *default* (arm-level) fit by integrated PSIS, no refits
        (:func:`analysis.checks.influence_arm.arm_leave_one_out`): index ``study``, columns
        ``n_comparisons, pareto_k, reliable, elpd_i`` and ``mu_/tau_/omega_{mean,q025,q975,shift}``.
        ``None`` when the default model is the normal one.
    """

    dataset: str
    provenance: str
    outcome: Outcome
    measure: str
    priors: dict[str, str]
    engine: str
    table: pd.DataFrame
    full: dict[str, dict[str, float]]
    frequentist: RmaFit
    elpd_loo: float
    elpd_loo_se: float
    p_loo: float
    good_k: float
    diagnostics: Diagnostics | None = None
    retried: bool = False
    settings: dict = field(default_factory=dict)
    default: pd.DataFrame | None = None

    @property
    def k(self) -> int:
        """Number of studies."""
        return len(self.table)

    @property
    def high_k(self) -> list[str]:
        """Studies whose Pareto k exceeds :data:`PARETO_K_THRESHOLD`."""
        return [str(s) for s in self.table.index[self.table["pareto_k"] > PARETO_K_THRESHOLD]]

    @property
    def elpd_exact(self) -> float:
        """Exact leave-one-study-out elpd, ``sum_i log p(y_i | y_-i)``."""
        return float(self.table["elpd_exact"].sum())

    def most_influential(self, parameter: str = "mu") -> str:
        """Study whose removal moves the posterior mean of ``parameter`` the most."""
        return str(self.table[f"{parameter}_shift"].abs().idxmax())

    def to_dict(self) -> dict:
        """JSON-ready dict (DESIGN.md §3 style keys; one entry per left-out study)."""
        t = self.table
        studies = []
        for study, row in t.iterrows():
            studies.append(
                {
                    "study": str(study),
                    "yi": float(row["yi"]),
                    "vi": float(row["vi"]),
                    "pareto_k": float(row["pareto_k"]),
                    "elpd_psis": float(row["elpd_psis"]),
                    "elpd_exact": float(row["elpd_exact"]),
                    "mu": {key: float(row[f"mu_{key}"]) for key in ("mean", "median", "q025", "q975")},
                    "tau": {key: float(row[f"tau_{key}"]) for key in ("mean", "median", "q025", "q975")},
                    "mu_shift": float(row["mu_shift"]),
                    "tau_shift": float(row["tau_shift"]),
                    "frequentist": {
                        key: float(row[f"freq_{key}"]) for key in ("estimate", "se", "ci_lb", "ci_ub", "tau2")
                    },
                }
            )
        out = {
            "dataset": self.dataset,
            "provenance": self.provenance,
            "outcome": self.outcome.id,
            "outcome_label": self.outcome.label,
            "direction": self.outcome.direction,
            "model": "random-effects",
            "analysis": "influence",
            "engine": self.engine,
            "priors": dict(self.priors),
            "k": self.k,
            "interval": INTERVAL_KIND,
            "measure": self.measure,
            "full": {p: dict(s) for p, s in self.full.items()} | {"frequentist": self.frequentist.to_dict()},
            "loo": {
                "elpd_psis": self.elpd_loo,
                "se": self.elpd_loo_se,
                "p_loo": self.p_loo,
                "elpd_exact": self.elpd_exact,
                "good_k": self.good_k,
                "k_threshold": PARETO_K_THRESHOLD,
                "high_k": self.high_k,
            },
            "most_influential": {"mu": self.most_influential("mu"), "tau": self.most_influential("tau")},
            "studies": studies,
            "settings": dict(self.settings),
        }
        if self.diagnostics is not None:
            out["diagnostics"] = self.diagnostics.to_dict() | {"retried": self.retried}
        if self.default is not None:
            out["default_model"] = _default_dict(self.default)
        return out

    def __str__(self) -> str:
        return format_influence(self)


def _default_dict(table: pd.DataFrame) -> dict:
    """JSON of the default fit's PSIS leave-one-study-out (one entry per left-out study)."""
    params = [p for p in ("mu", "tau", "omega") if f"{p}_mean" in table]
    studies = [
        {
            "study": str(study),
            "n_comparisons": int(row["n_comparisons"]),
            "pareto_k": float(row["pareto_k"]),
            "reliable": bool(row["reliable"]),
        }
        | {p: {key: float(row[f"{p}_{key}"]) for key in ("mean", "q025", "q975")} for p in params}
        | {f"{p}_shift": float(row[f"{p}_shift"]) for p in params}
        for study, row in table.iterrows()
    ]
    return {
        "likelihood": "arm",
        "method": "integrated PSIS leave-one-study-out of the default fit's draws (no refits)",
        "unreliable": [str(s) for s in table.index[~table["reliable"].astype(bool)]],
        "most_influential": {"mu": str(table["mu_shift"].abs().idxmax())},
        "studies": studies,
    }


def influential_rows(result: InfluenceResult, max_rows: int | None) -> pd.DataFrame:
    """The leave-one-out table, or its ``max_rows`` rows with the largest shift of mu (in study order)."""
    if max_rows is None or result.k <= max_rows:
        return result.table
    keep = result.table["mu_shift"].abs().nlargest(max_rows).index
    return result.table.loc[result.table.index.isin(keep)]


def format_influence(result: InfluenceResult, max_rows: int | None = None) -> str:
    """Report text: the leave-one-out table with PSIS-LOO, exact refits and metafor's leave1out.

    With ``max_rows``, only that many studies (those whose removal shifts mu most) are listed.
    """
    o = result.outcome
    banner = "  [SIMULATED DATA]" if result.provenance == "simulated" else ""
    cols = {
        "pareto_k": "pareto_k",
        "elpd_psis": "elpd_psis",
        "elpd_exact": "elpd_exact",
        "mu_mean": "mu_mean",
        "mu_q025": "mu_eti95_lo",
        "mu_q975": "mu_eti95_hi",
        "tau_median": "tau_median",
        "freq_estimate": "REML_mu",
        "freq_tau2": "REML_tau2",
    }
    shown = influential_rows(result, max_rows)
    table = shown[list(cols)].rename(columns=cols)
    mu, tau = result.full["mu"], result.full["tau"]
    draws = (
        "exact posterior draws (independent)"
        if result.engine == "exact"
        else "NUTS draws" + _diag(result.diagnostics, result.retried)
    )
    high = ", ".join(result.high_k) or "none"
    return "\n".join(
        [
            f"Study influence: leave-one-study-out (exact refits) and PSIS-LOO{banner}",
            f"dataset: {result.dataset}   outcome: {o.id} ({o.label})   k = {result.k}",
            (
                f"priors: mu ~ {result.priors['mu']}, tau ~ {result.priors['tau']}; "
                f"intervals: 95% equal-tailed ({INTERVAL_KIND})"
            ),
            (
                f"full data: mu mean {mu['mean']:.4f} (eti95 {mu['q025']:.4f} to {mu['q975']:.4f}), "
                f"tau median {tau['median']:.4f}; "
                f"REML mu {result.frequentist.mu:.4f}, tau2 {result.frequentist.tau2:.4f}"
            ),
            (
                f"PSIS-LOO from {draws}: elpd_loo = {result.elpd_loo:.3f} (se {result.elpd_loo_se:.3f}), "
                f"p_loo = {result.p_loo:.2f}; exact elpd = {result.elpd_exact:.3f}"
            ),
            f"Pareto k > {PARETO_K_THRESHOLD}: {high} (the exact refit is the answer for those studies)",
            (
                f"largest shift of mu: dropping {result.most_influential('mu')}; "
                f"of tau: dropping {result.most_influential('tau')}"
            ),
            "rows: the study left out"
            + ("" if len(shown) == result.k else f" ({len(shown)} of {result.k}: the largest shifts of mu)"),
            "",
            table.to_string(float_format=lambda z: f"{z:.4f}"),
            *_default_lines(result.default, max_rows),
        ]
    )


def _default_lines(table: pd.DataFrame | None, max_rows: int | None) -> list[str]:
    """The default (arm-level) fit's PSIS leave-one-study-out, if computed."""
    if table is None:
        return []
    shown = (
        table
        if max_rows is None or len(table) <= max_rows
        else table.loc[table.index.isin(table["mu_shift"].abs().nlargest(max_rows).index)]
    )
    cols = ["n_comparisons", "pareto_k", "reliable", "mu_mean", "mu_q025", "mu_q975", "mu_shift", "tau_mean"]
    cols += ["tau_shift"] + (["omega_mean"] if "omega_mean" in table else [])
    unreliable = ", ".join(str(s) for s in table.index[~table["reliable"].astype(bool)]) or "none"
    return [
        "",
        "Default model (arm-level likelihood): leave-one-study-out by integrated PSIS of its draws (no refits)",
        f"unreliable (Pareto k above the threshold; a refit would be needed): {unreliable}",
        f"largest shift of mu: dropping {table['mu_shift'].abs().idxmax()}"
        + ("" if len(shown) == len(table) else f"; rows: {len(shown)} of {len(table)} (the largest shifts of mu)"),
        "",
        shown[cols].to_string(float_format=lambda z: f"{z:.4f}"),
    ]


def _diag(d: Diagnostics | None, retried: bool) -> str:
    if d is None:
        return ""
    status = "passed" if d.passed else "FAILED: " + "; ".join(d.failures())
    return (
        f" (r_hat max {d.r_hat_max:.3f}, ess_bulk min {d.ess_bulk_min:.0f}, divergences {d.divergences} -> "
        f"{status}{', after one retry' if retried else ''})"
    )
