"""The report's conclusions: one row per outcome, each statement traceable to a number further down.

Effect (with the likelihood named), consistency, risk of bias, small-study evidence and
robustness come from the outcome's primary fit and its checks; the certainty rating from
:func:`analysis.inference.certainty.rate`. Robustness is the range of the pooled effect over the
prior grid (PSIS-reweighted default fit), over leave-one-study-out (integrated PSIS of the default
fit) and, for outcomes of the multivariate model, over its within-study correlation grid; it says
whether the conclusion about relevance (or, without a minimal relevant effect, direction) survives.
"""

from __future__ import annotations

import pandas as pd

from analysis.checks.risk_of_bias import KEY_DOMAIN_GROUPS, low_risk_studies
from analysis.dataset.load import Dataset
from analysis.inference.bias_calibration import bias_flag_calibrated
from analysis.inference.certainty import Certainty, Evidence, rate
from analysis.inference.reporting_bias_calibration import reporting_bias_flag_calibrated
from analysis.report.artifacts import OutcomeArtifacts, RunResult
from analysis.report.tables import markdown_table
from analysis.results.multivariate import reporting_bias_row
from analysis.results.random_effects import MetaAnalysisResult

__all__ = ["conclusions_section", "outcome_evidence", "robustness_range"]


def _benefit(d: int, lo: float, hi: float) -> tuple[float, float]:
    a, b = d * lo, d * hi
    return (min(a, b), max(a, b))


def _n_low_risk(dataset: Dataset, studies: list[str]) -> int | None:
    """Studies (of ``studies``) at low risk on randomisation and blinding; None without judgements."""
    domains = [d for d in KEY_DOMAIN_GROUPS["both"] if f"rob_{d}" in dataset.studies.columns]
    if not domains:
        return None
    table = dataset.studies[dataset.studies["study"].astype(str).isin(studies)]
    return len(low_risk_studies(table, domains))


def outcome_evidence(fit: MetaAnalysisResult, dataset: Dataset, multivariate: dict | None = None) -> Evidence:
    """The numbers of one outcome's primary fit (and the multivariate model's calibrated flags) a rating rests on."""
    d = fit.outcome.direction
    mu, new = fit.summaries["mu"], fit.summaries["theta_new"]
    asym = next((c for c in fit.checks if c.name == "egger_slope"), None)
    calibrated = asym is not None and asym.flagged is not None
    delta = None if fit.decision is None else fit.decision.min_effect
    return Evidence(
        k=fit.k,
        mu_interval=_benefit(d, mu["q025"], mu["q975"]),
        theta_new_interval=_benefit(d, new["q025"], new["q975"]),
        min_effect=delta,
        n_low_risk=_n_low_risk(dataset, [str(s) for s in fit.studies["study"]]),
        asymmetry_p=asym.p_value if calibrated else None,
        asymmetry_flagged=calibrated and asym.flagged is True,
        reporting_bias_z=_calibrated_reporting_bias_z(fit.outcome.id, multivariate),
    )


def _calibrated_reporting_bias_z(oid: str, multivariate: dict | None) -> float | None:
    """z of the outcome-reporting-bias diagnostic if it flagged ``oid`` and the flag is calibrated."""
    row = reporting_bias_row(multivariate, oid)
    if row is None or not row["flagged"] or not reporting_bias_flag_calibrated():
        return None
    return float(row["z"])


def robustness_range(art: OutcomeArtifacts, multivariate: dict | None) -> dict[str, tuple[float, float]]:
    """Range of the pooled effect's posterior mean (natural scale) under each sensitivity analysis.

    Prior grid and leave-one-study-out of the primary fit: the PSIS-reweighted default (arm-level)
    fit where it ran, else the exact refits of the normal model; the multivariate model's ρ_w grid
    for its outcomes.
    """
    out = {}
    default = art.arm is not None
    grid = art.tables.get("prior_grid_default_model" if default else "prior_grid")
    if grid is not None and len(grid):
        ok = grid[grid["reliable"].astype(bool)] if "reliable" in grid else grid
        if len(ok):
            out["prior grid"] = (float(ok["mu_mean"].min()), float(ok["mu_mean"].max()))
    influence = art.jsons.get("influence") or {}
    loo = (influence.get("default_model") or {}).get("studies") if default else influence.get("studies")
    means = [s["mu"]["mean"] for s in loo or [] if s.get("reliable", True)]
    if means:
        out["leave one study out"] = (float(min(means)), float(max(means)))
    if multivariate:
        # the multivariate model works on the benefit scale (effect x direction): back to the natural one
        sign = art.primary.outcome.direction if str(multivariate.get("scale", "")).startswith("benefit") else 1
        rows = [
            sign * r["mean"]
            for r in multivariate.get("rho_within_sensitivity", [])
            if r["outcome"] == art.outcome and r["parameter"] == "mu"
        ]
        if rows:
            out["within-study correlation (multivariate)"] = (float(min(rows)), float(max(rows)))
    return out


def _effect_text(fit: MetaAnalysisResult) -> str:
    mu = fit.summaries["mu"]
    text = f"μ {mu['mean']:.2f} [{mu['q025']:.2f}, {mu['q975']:.2f}] ({fit.likelihood_label})"
    q = fit.decision
    if q is not None and q.prob_mu_above_min is not None and q.min_effect is not None:
        text += f"; P(benefit > {q.min_effect:g}) = {q.prob_mu_above_min:.2f}"
    return text


def _consistency_text(fit: MetaAnalysisResult) -> str:
    tau, new = fit.summaries["tau"], fit.summaries["theta_new"]
    text = f"τ {tau['median']:.2f}; new study's true effect [{new['q025']:.2f}, {new['q975']:.2f}]"
    if fit.decision is not None:
        text += f", P(benefit) = {fit.decision.prob_theta_new_benefit:.2f}"
    return text


def _rob_text(e: Evidence) -> str:
    if e.n_low_risk is None:
        return "not judged"
    return f"{e.n_low_risk} of {e.k} studies at low risk on randomisation and blinding"


def _bias_text(e: Evidence, fit: MetaAnalysisResult) -> str:
    if e.asymmetry_p is None:
        slope = next((c for c in fit.checks if c.name == "egger_slope"), None)
        if slope is None:
            return "no asymmetry check for this fit"
        why = "not measured for " + fit.measure if slope.calibrated is None else "outside its calibration band"
        return f"funnel slope p = {slope.p_value:.2f}, not a calibrated check ({why}): not judged"
    verdict = "flagged" if e.asymmetry_flagged else "not flagged"
    few = f"; k = {e.k}: little power" if e.k < 10 else ""
    return f"asymmetry check {verdict} (p = {e.asymmetry_p:.2f}){few}"


def _publication_bias_text(small_study: dict | None, e: Evidence, fit: MetaAnalysisResult) -> str:
    """The bias-averaged ensemble's bias inclusion BF and adjusted mu, then the funnel-slope check."""
    check = _bias_text(e, fit)
    if small_study is None or "bias_averaged" not in small_study:
        return check
    avg = small_study["bias_averaged"]
    mu = avg["mu"]
    status = "a calibrated flag" if bias_flag_calibrated() else "not a calibrated flag (README)"
    return (
        f"bias inclusion BF {avg['inclusion_bf']['bias']:.3g}, {status}; model-averaged μ {mu['mean']:.2f} "
        f"[{mu['q025']:.2f}, {mu['q975']:.2f}] (unadjusted {avg['mu_unadjusted']['mean']:.2f}); {check}"
    )


def _reporting_bias_text(oid: str, multivariate: dict | None) -> str:
    """The multivariate model's outcome-reporting-bias contrast for this outcome, if it was assessed."""
    r = reporting_bias_row(multivariate, oid)
    if r is None:
        return ""
    verdict = "flagged" if r["flagged"] else "not flagged"
    status = "a calibrated flag" if reporting_bias_flag_calibrated() else "not a calibrated flag (README)"
    return (
        f"; outcome-reporting bias ({len(r['missing_studies'])} studies missing): multivariate − univariate μ "
        f"{r['difference']['mean']:+.2f} on the benefit scale, z {r['z']:.2f}, {verdict}, {status}"
    )


def _robustness_text(ranges: dict[str, tuple[float, float]], fit: MetaAnalysisResult, e: Evidence) -> str:
    if not ranges:
        return "not assessed"
    d = fit.outcome.direction
    lows = [min(d * lo, d * hi) for lo, hi in ranges.values()]
    threshold = 0.0 if e.min_effect is None else e.min_effect
    parts = "; ".join(f"{name} {lo:.2f} to {hi:.2f}" for name, (lo, hi) in ranges.items())
    holds = "a benefit" if e.min_effect is None else f"beyond the minimal relevant {e.min_effect:g}"
    verdict = f"mean {holds} in every analysis" if min(lows) > threshold else f"mean NOT {holds} in every analysis"
    return f"μ: {parts} ({verdict})"


def _certainty_text(c: Certainty) -> str:
    if not c.downgrades:
        return f"**{c.level}**"
    return f"**{c.level}** (−1 for " + "; −1 for ".join(f"{domain}: {why}" for domain, why in c.downgrades) + ")"


def conclusions_section(run: RunResult) -> list[str]:
    """The conclusions table at the top of the report (one row per outcome) and how to read it."""
    if not run.outcomes:
        return []
    multivariate = None if run.multivariate is None else run.multivariate.json
    rows, notes = [], set()
    for oid, art in run.outcomes.items():
        fit = art.primary
        e = outcome_evidence(fit, run.dataset, multivariate)
        c = rate(e)
        notes.update(c.notes)
        rows.append(
            {
                "outcome": f"{oid}: {fit.outcome.label}, k = {fit.k}",
                "effect (95% ETI)": _effect_text(fit),
                "consistency": _consistency_text(fit),
                "risk of bias": _rob_text(e),
                "publication bias": _publication_bias_text(art.jsons.get("small_study"), e, fit)
                + _reporting_bias_text(oid, multivariate),
                "robustness": _robustness_text(robustness_range(art, multivariate), fit, e),
                "certainty": _certainty_text(c),
            }
        )
    lines = [
        "## Conclusions",
        "",
        "What the evidence supports for each outcome and how firmly. Effects are on the measure's scale "
        "(treatment − control); 'benefit' uses the outcome's direction. Certainty follows GRADE for animal "
        "studies (Hooijmans et al. 2018): it starts high and loses one level per serious concern, with the "
        "reason given; the rules are in the README ('Conclusions and certainty'). Every number is "
        "repeated, with its method, in the outcome's section below.",
        "",
        markdown_table(pd.DataFrame(rows)),
        "",
    ]
    return lines + [f"- {note[0].upper()}{note[1:]}." for note in sorted(notes)] + [""]
