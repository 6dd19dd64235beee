"""Text of ``report.md``: provenance banner, failed-fit flags, methods, pooled results, per-outcome sections."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from analysis.pipeline import RunResult, engine_check
from analysis.results import MetaAnalysisResult

SIMULATED_BANNER = (
    "> **SIMULATED DATA.** This dataset is a labelled, design-matched simulation, not the published "
    "per-study numbers. No number in this report is a published result."
)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a DataFrame (cells already formatted as text)."""
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def interval(summary: dict[str, float], digits: int = 2) -> str:
    """``mean [q025, q975]`` with the given number of decimals."""
    return f"{summary['mean']:.{digits}f} [{summary['q025']:.{digits}f}, {summary['q975']:.{digits}f}]"


def header_section(run: RunResult) -> list[str]:
    """Title, provenance banner and, at the very top, any fit that failed its gates."""
    ds = run.dataset
    lines = [f"# evmeta report: {ds.title}", ""]
    if run.failed:
        lines += [f"> **CONVERGENCE FAILURE:** the NUTS fit of {', '.join(run.failed)} failed its convergence "
                  "gates after one retry; its numbers below are not reliable.", ""]
    if ds.is_simulated:
        lines += [SIMULATED_BANNER, ""]
    lines += [f"- dataset: `{ds.name}` (provenance: **{ds.provenance}**)", f"- source: {ds.citation}",
              f"- studies: {len(ds.studies)}; comparisons: {len(run.table.data)}; data level: {ds.level}"]
    if ds.level == "arms":
        lines.append(f"- animals: {_animal_count(ds)}")
    return lines + [""]


def _animal_count(ds) -> int:
    """Animals in the dataset: each arm counted once (its largest n over outcomes)."""
    return int(ds.arms.groupby(["study", "arm"])["n"].max().sum())


def methods_section(run: RunResult) -> list[str]:
    """Model, priors, interval kind, engines and sampler settings."""
    s = run.sampler
    return [
        "## Methods", "",
        "Per outcome, a Bayesian normal–normal random-effects model: y_i ~ N(θ_i, v_i), θ_i ~ N(μ, τ²), "
        "with Hedges' g (exact J correction, metafor's large-sample variance) as y_i. Comparisons sharing a "
        "control arm are combined per study by GLS with their sampling covariance.", "",
        f"- priors: μ ~ {run.priors.mu}, τ ~ {run.priors.tau} (weakly informative defaults for animal SMDs)",
        "- intervals: 95% equal-tailed (eti95); θ_new is the prediction for a new study; "
        "I² = τ²/(τ² + s²) with s² the typical within-study variance",
        f"- NUTS (PyMC, θ integrated out, θ_i drawn from its exact conditional): {s.chains} chains × {s.draws} draws, "
        f"{s.tune} tuning steps, target_accept {s.target_accept}, seeds {run.seed}..{run.seed + max(len(run.nuts) - 1, 0)}",
        "- convergence gates: no divergences, r_hat ≤ 1.01, ess_bulk ≥ 400 (one retry: target_accept 0.99, "
        "twice the tuning and draws)",
        "- exact engine: quadrature over τ (as R's bayesmeta), used as a cross-check of every NUTS fit", "",
    ]


def pooled_section(results: Sequence[MetaAnalysisResult]) -> list[str]:
    """The pooled-effects table (one row per outcome) and the summary figure."""
    rows = [{
        "outcome": r.outcome.id, "better": "higher" if r.outcome.direction > 0 else "lower", "k": r.k,
        "μ mean [eti95]": interval(r.summaries["mu"]), "τ median [eti95]":
            f"{r.summaries['tau']['median']:.2f} [{r.summaries['tau']['q025']:.2f}, {r.summaries['tau']['q975']:.2f}]",
        "prediction eti95": f"[{r.summaries['theta_new']['q025']:.2f}, {r.summaries['theta_new']['q975']:.2f}]",
        "I² median": f"{100 * r.summaries['I2']['median']:.0f}%", "P(benefit)": f"{r.prob_benefit:.3f}",
        "gates": "passed" if r.converged else "**FAILED**",
    } for r in results]
    return ["## Pooled effects (NUTS)", "", markdown_table(pd.DataFrame(rows)), "",
            "![Pooled effects of all outcomes](figures/pooled_summary.png)", ""]


def outcome_sections(results: Sequence[MetaAnalysisResult]) -> list[str]:
    """One section per outcome: forest plot and the fit's text report."""
    lines = ["## Outcomes", ""]
    for r in results:
        lines += [f"### {r.outcome.label} ({r.outcome.id})", "",
                  f"![Forest plot of {r.outcome.id}](figures/forest_{r.outcome.id}.png)", "",
                  "```", str(r), "```", ""]
    return lines


def engine_section(run: RunResult) -> list[str]:
    """NUTS against the exact engine, per outcome and parameter, in Monte Carlo standard errors."""
    check = engine_check(run.nuts, run.exact)
    if check.empty:
        return []
    shown = check.assign(exact_mean=check["exact_mean"].map("{:.4f}".format), nuts_mean=check["nuts_mean"].map("{:.4f}".format),
                         mcse=check["mcse"].map("{:.4f}".format), z_mcse=check["z_mcse"].map("{:.2f}".format),
                         within_4_mcse=check["within_4_mcse"].map({True: "yes", False: "**no**"}))
    return ["## NUTS against the exact engine", "", markdown_table(shown), ""]


def build_report_markdown(run: RunResult) -> str:
    """The complete ``report.md`` text of a run."""
    lines = header_section(run) + methods_section(run) + pooled_section(run.nuts)
    if run.skipped:
        lines += ["Outcomes not analysed: " + "; ".join(f"{k} ({v})" for k, v in run.skipped.items()), ""]
    lines += outcome_sections(run.nuts) + engine_section(run)
    return "\n".join(lines).rstrip() + "\n"
