"""Text of ``report.md``: provenance banner, failed-fit flags, methods, pooled results, per-outcome sections."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.checks.calibrated import FALSE_ALARM_RATES, calibration_status
from analysis.inference.bias_calibration import bias_flag_calibrated, calibration_text
from analysis.report.artifacts import RunResult
from analysis.report.conclusions import conclusions_section
from analysis.report.figures import INFLUENCE_ROWS, LARGE_K, figure_link, figure_path
from analysis.report.rob_lines import rob_sensitivity_lines
from analysis.report.tables import compare_markdown, interval, markdown_table
from analysis.results.influence import format_influence
from analysis.results.meta_regression import MIN_K_SUBGROUPS, SubgroupResults
from analysis.results.multivariate import MultivariateResult, reporting_bias_row
from analysis.results.outcome import OutcomeAnalysis
from analysis.results.random_effects import MetaAnalysisResult

SIMULATED_BANNER = (
    "> **SIMULATED DATA.** This dataset is a labelled, design-matched simulation, not the published "
    "per-study numbers. No number in this report is a published result."
)


def header_section(run: RunResult) -> list[str]:
    """Title, provenance banner and, at the very top, any fit that failed its gates."""
    ds = run.dataset
    lines = [f"# evmeta report: {ds.title}", ""]
    if run.failed:
        lines += [
            f"> **CONVERGENCE FAILURE:** the NUTS fit of {', '.join(run.failed)} failed its convergence "
            "gates after one retry; its numbers below are not reliable.",
            "",
        ]
    if ds.is_simulated:
        lines += [SIMULATED_BANNER, ""]
    lines += [
        f"- dataset: `{ds.name}` (provenance: **{ds.provenance}**)",
        f"- source: {ds.citation}",
        f"- studies: {len(ds.studies)}; comparisons: {len(run.table.data)}; data level: {ds.level}",
    ]
    if ds.level == "arms":
        lines.append(f"- animals: {_animal_count(ds)}")
    lines.append("")
    if ds.warnings:
        lines += ["**Data checks** (`evmeta validate` warnings; the data were used):", ""]
        lines += [
            f"- `{p.file}{':' + str(p.line) if p.line else ''}` {p.column or ''}: {p.message}" for p in ds.warnings
        ]
        lines.append("")
    return lines


def _animal_count(ds) -> int:
    """Animals in the dataset: each arm counted once (its largest n over outcomes)."""
    return int(ds.arms.groupby(["study", "arm"])["n"].max().sum())


#: How each effect measure's y_i was computed, for the methods section.
_MEASURE_TEXT = {
    "SMD": "Hedges' g (exact J correction, metafor's large-sample variance)",
    "ROM": "the log ratio of means log(m_t/m_c) (metafor's ROM, delta-method variance)",
    "NMD": "direction × the normalised mean difference (Vesterinen et al. 2014: the % of the model-induced "
    "deficit, sham − control, that the treatment restores; sham mean treated as fixed)",
}


def methods_section(run: RunResult) -> list[str]:
    """Model, priors, interval kind, engines and sampler settings."""
    return [
        "## Methods",
        "",
        *_default_model_lines(run),
        "Per outcome, a Bayesian normal–normal random-effects model: y_i ~ N(θ_i, v_i), θ_i ~ N(μ, τ²), "
        f"with {_MEASURE_TEXT.get(run.dataset.effect_measure, run.dataset.effect_measure)} as y_i. Comparisons "
        "sharing a control arm are combined per study by GLS with their sampling covariance.",
        "",
        f"- priors: μ ~ {run.priors.mu}, τ ~ {run.priors.tau} (defaults: weakly informative on the scale of "
        f"{run.dataset.effect_measure}; see models.priors.default_priors)",
        "- intervals: 95% equal-tailed (eti95); θ_new is the true effect of a new study (what the new study would "
        "observe adds its sampling error: see each outcome's 'next experiment'); "
        "I² = τ²/(τ² + s²) with s² the typical within-study variance",
        *_engine_lines(run),
        "",
    ]


def _default_model_lines(run: RunResult) -> list[str]:
    """The default model of arm-level SMD data, when it ran (the headline numbers come from it)."""
    if not any(r.likelihood == "arm" for r in run.primary):
        return []
    return [
        "**Default model (headline numbers): the arm-level likelihood, comparisons nested in studies.** "
        "For comparison j of study i the true SMD is θ_ij = μ + τ z_i + ω v_ij (z, v ~ N(0, 1): τ between "
        "studies, ω between the comparisons of one study, e.g. doses or formulations against one control); "
        "the arm means are normal and the arm variances scaled χ² given θ_ij and the study's within-group SD "
        "σ_i, so the likelihood is exact at any number of animals, and a shared control arm enters once "
        "(models.arm_level). ω is estimated where some study has two or more comparisons of the outcome. "
        f"Priors: μ ~ {run.priors.mu}, τ ~ {run.priors.tau}, ω ~ {run.priors.omega}, log σ_i ~ N(log S_i, 1) "
        "(S_i the study's pooled SD). θ_new is the true effect of a new comparison in a new study; "
        "I² = (τ² + ω²)/(τ² + ω² + s²) with s² the typical sampling variance of the comparisons. Why this is "
        "the default: README, 'The default model'.",
        "",
        "The posterior predictive checks, power-scaling, the reweighted prior grid and a PSIS leave-one-study-out "
        "are of this default fit. The normal-likelihood model below is fitted too: its exact engine cross-checks "
        "NUTS, and the exact prior-grid and leave-one-out refits, subgroup and small-study analyses use it (each "
        "names its likelihood).",
        "",
    ]


def _engine_lines(run: RunResult) -> list[str]:
    """How the posteriors were computed: NUTS with its settings and gates, or the exact engine only."""
    if run.engine == "exact":
        return [
            "- exact engine only (`--engine exact`): quadrature over τ (as R's bayesmeta); the analyses that need "
            "NUTS draws (posterior predictive checks, power-scaling, arm-level likelihood, "
            "PSIS-LOO, multivariate model) were not run"
        ]
    s = run.sampler
    return [
        "- NUTS (nutpie on the PyMC model, θ integrated out, θ_i drawn from its exact conditional): "
        f"{s.chains} chains × {s.draws} draws, "
        f"{s.tune} tuning steps, target_accept {s.target_accept}, "
        f"seeds {run.seed}..{run.seed + max(len(run.primary) - 1, 0)}",
        "- convergence gates: no divergences, r_hat ≤ 1.01, ess_bulk ≥ 400 (one retry: target_accept 0.99, "
        "twice the tuning and draws)",
        "- exact engine: quadrature over τ (as R's bayesmeta), used as a cross-check of every NUTS fit",
    ]


def pooled_section(results: Sequence[MetaAnalysisResult], *, engine: str = "nuts") -> list[str]:
    """The pooled-effects table (one row per outcome) and the summary figure."""
    rows = [
        {
            "outcome": r.outcome.id,
            "better": "higher" if r.outcome.direction > 0 else "lower",
            "k": r.k,
            "μ mean [eti95]": interval(r.summaries["mu"]),
            "τ median [eti95]": (
                f"{r.summaries['tau']['median']:.2f} "
                f"[{r.summaries['tau']['q025']:.2f}, {r.summaries['tau']['q975']:.2f}]"
            ),
            "θ_new (true effect of a new study) eti95": (
                f"[{r.summaries['theta_new']['q025']:.2f}, {r.summaries['theta_new']['q975']:.2f}]"
            ),
            "I² median": f"{100 * r.summaries['I2']['median']:.0f}%",
            "P(benefit)": f"{r.prob_benefit:.3f}",
            "P(benefit > δ)": _prob_above_min(r),
            "likelihood": r.likelihood_label,
            "gates": "passed" if r.converged else "**FAILED**",
        }
        for r in results
    ]
    title = "## Pooled effects (NUTS)" if engine == "nuts" else "## Pooled effects (exact engine, normal likelihood)"
    return [title, "", markdown_table(pd.DataFrame(rows)), "", figure_link("pooled_summary"), ""]


def _prob_above_min(r: MetaAnalysisResult) -> str:
    """P(mu beyond the minimal relevant effect) with delta, or a dash where it was not computed."""
    q = r.decision
    if q is None or q.prob_mu_above_min is None or q.min_effect is None:
        return "—"
    return f"{q.prob_mu_above_min:.3f} (δ = {q.min_effect:g})"


#: What each check's discrepancy measures, for the checks table.
_CHECK_TEXT = {
    "Q": "Cochran's Q (heterogeneity beyond the model's)",
    "max_std_residual": "largest standardised residual (an outlier)",
    "egger_slope": "slope of the effects on their SE (funnel asymmetry; two-sided)",
}


_FLAG_TEXT = {True: "**FLAGGED**", False: "no", None: "—"}


def _status_text(likelihood: str, name: str, measure: str) -> str:
    """How the calibration study judged a statistic, with its measured false-alarm rates."""
    rates = "; ".join(
        f"{100 * rate:.1f}% (MCSE {100 * mcse:.1f}) at {level:g}"
        for (lik, n, level), (rate, mcse) in sorted(FALSE_ALARM_RATES.items())
        if lik == likelihood and n == name
    )
    status = calibration_status(likelihood, name, measure)
    if status is None:
        return f"not measured for {measure}: p-value only"
    return ("calibrated check: " if status else "not a check (more than 2 MCSE from the level): ") + rates


def _checks_table(analysis: OutcomeAnalysis) -> str:
    primary = analysis.primary
    rows = [
        {
            "statistic": _CHECK_TEXT.get(c.name, c.name),
            "T(y)": f"{c.statistic:.3f}",
            "p (sampled)": f"{c.p_value:.3f}",
            f"flagged at {c.nominal_level:g}": _FLAG_TEXT[c.flagged] if c.calibrated else "— (not a calibrated check)",
            "false alarms on healthy data (measured)": _status_text(primary.likelihood, c.name, primary.measure),
        }
        for c in primary.checks
    ]
    return markdown_table(pd.DataFrame(rows))


def _ppc_table(analysis: OutcomeAnalysis) -> str:
    rows = [
        {
            "statistic": name,
            "observed": f"{v['observed']:.3f}",
            "replicated mean": f"{v['replicated_mean']:.3f}",
            "ppp": f"{v['ppp']:.3f}",
            "two-sided": f"{v['ppp_two_sided']:.3f}" if "ppp_two_sided" in v else "",
        }
        for name, v in analysis.ppc.statistics.items()
    ]
    return markdown_table(pd.DataFrame(rows))


def _psense_table(analysis: OutcomeAnalysis) -> str:
    table = analysis.psense.reset_index(names="parameter")
    return markdown_table(
        table.assign(prior=table["prior"].map("{:.3f}".format), likelihood=table["likelihood"].map("{:.3f}".format))
    )


def _reproduction_section(analysis: OutcomeAnalysis) -> list[str]:
    """The published frequentist result beside evmeta's recomputation of it (reproduce, then re-analyse)."""
    r = analysis.reproduction
    if r is None:
        return []
    p = r.published
    route = (
        "each comparison with the control n the paper used"
        if p.control_n_column
        else ("shared controls split among their comparisons" if p.control_n == "split" else "control n as reported")
    )
    verdict = "reproduced to the printed precision" if r.matches else "**not** reproduced to the printed precision"
    return [
        "#### The published analysis, reproduced",
        "",
        f'{p.source}: metafor `rma(method = "{p.method}")` on Hedges\' g, one effect per comparison ({route}, '
        f"comparisons treated as independent){' on the benefit scale' if p.scale == 'benefit' else ''}: {verdict}.",
        "",
        markdown_table(pd.DataFrame(r.rows())),
        "",
    ]


def _ppc_section(oid: str, analysis: OutcomeAnalysis) -> list[str]:
    if analysis.ppc is None:
        return []
    if analysis.ppc.unit == "comparison":
        what = (
            "Replicated arm summaries (new study and comparison effects, new animals) from the arm-level fit, each "
            "comparison's Hedges' g and its variance recomputed from them as from the data."
        )
    else:
        what = "Replicated study effects (new study effects, the studies' own sampling variances) from the fit."
    return [
        f"#### Model checks ({_primary_label(analysis)})",
        "",
        what + " **Checks** are sampled posterior p-values (one posterior draw chosen at random, 2000 data sets "
        "replicated from it: exactly uniform when the model is right; Johnson 2004, Gosselin 2011); each states "
        "the flag rate measured on simulated data without misfit (README, 'Calibration of the checks'); a statistic "
        "whose measured rate lies more than two Monte Carlo SE from the level is shown but is not a check.",
        "",
        _checks_table(analysis),
        "",
        "For description only, the posterior predictive p-values averaged over all draws (ppp = P(T(y_rep) ≥ "
        "T(y) | y)): they use the data twice and sit near 0.5 under a good fit, so they are not tests "
        "(Bayarri & Berger 2000; measured in the README).",
        "",
        _ppc_table(analysis),
        "",
        figure_link("ppc", oid),
        "",
        figure_link("ppc_stats", oid),
        "",
        *_loo_pit_lines(oid, analysis),
    ]


def _loo_pit_lines(oid: str, analysis: OutcomeAnalysis) -> list[str]:
    """The leave-one-study-out PIT of the default fit (a description: its outlier rule is not calibrated)."""
    check = analysis.loo_pit
    if check is None:
        return []
    unreliable = [s for s, ok in zip(check.study, check.reliable, strict=True) if not ok]
    return [
        "Leave-one-study-out PIT (a description, not a check): each study's mean g against its predictive "
        "distribution given the other studies (integrated PSIS weights, new animals with the study's arm sizes). "
        f"Most outlying: {check.most_outlying} (two-sided p = {check.p_value.min():.4f}; Bonferroni over "
        f"{check.k} studies {check.p_adjusted:.3f})"
        + (f"; PIT unreliable (Pareto k too high) for {', '.join(unreliable)}" if unreliable else "")
        + ". As an outlier rule it flags too rarely on data without misfit (README, 'Calibration of the checks'), "
        "so it is shown, not used as a flag.",
        "",
        figure_link("loo_pit", oid),
        "",
    ]


def _decision_section(analysis: OutcomeAnalysis) -> list[str]:
    """P(mu > delta), a new study's true and observed effect, and the replication probability."""
    q = analysis.decision
    if q is None:
        return []
    o = analysis.primary.outcome
    sign = ">" if o.direction > 0 else "<"
    lines = [f"#### What this means for the next experiment ({_primary_label(analysis)})", ""]
    if q.prob_mu_above_min is not None and q.min_effect is not None:
        lines.append(
            f"- P(μ {sign} {o.direction * q.min_effect:g}) = {q.prob_mu_above_min:.3f}: the probability that the "
            f"pooled effect is at least the minimal relevant effect δ = {q.min_effect:g} ({q.measure}; "
            "`--min-effect`, default and its justification in the README)."
        )
    lines.append(
        f"- P(θ_new {sign} 0) = {q.prob_theta_new_benefit:.3f}: the probability that a new study's *true* effect "
        "is a benefit."
    )
    if q.new_study_effect is not None and q.prob_replication is not None:
        e = q.new_study_effect
        lines.append(
            f"- A new study with {q.planned_n} animals per arm (`--planned-n`; default the median arm size) would "
            f"observe g = {e['mean']:.2f}, 95% predictive interval [{e['q025']:.2f}, {e['q975']:.2f}] (θ_new plus "
            f"its sampling error); the probability that its two-sided t-test is significant at 0.05 in the "
            f"direction of benefit (replication probability) is {q.prob_replication:.3f}. Calibration of both on "
            "simulated data: README, 'Calibration of the checks'."
        )
    if q.note:
        lines.append(f"- Not computed: {q.note}.")
    return lines + [""]


def _primary_label(analysis: OutcomeAnalysis) -> str:
    return analysis.primary.likelihood_label


def _psense_section(oid: str, analysis: OutcomeAnalysis) -> list[str]:
    if analysis.psense is None:
        return []
    return [
        f"Power-scaling of the top-level priors ({', '.join(analysis.psense.index)}) of the {_primary_label(analysis)} "
        "fit; sensitivity ≥ 0.05 is flagged.",
        "",
        _psense_table(analysis),
        "",
        figure_link("psense", oid),
        "",
    ]


def _grid_table(analysis: OutcomeAnalysis) -> str:
    g = analysis.prior_grid
    rows = pd.DataFrame(
        {
            "μ prior": g["prior_mu"],
            "τ prior": g["prior_tau"],
            "μ mean [eti95]": [
                f"{m:.2f} [{lo:.2f}, {hi:.2f}]"
                for m, lo, hi in zip(g["mu_mean"], g["mu_q025"], g["mu_q975"], strict=True)
            ],
            "τ median [eti95]": [
                f"{m:.2f} [{lo:.2f}, {hi:.2f}]"
                for m, lo, hi in zip(g["tau_median"], g["tau_q025"], g["tau_q975"], strict=True)
            ],
            "P(benefit)": g["prob_benefit"].map("{:.3f}".format),
        }
    )
    return markdown_table(rows)


def _reweighted_grid_lines(analysis: OutcomeAnalysis) -> list[str]:
    """The default fit under alternative priors by PSIS reweighting (no refit), when it ran."""
    g = analysis.prior_grid_default
    if g is None:
        return []
    rows = pd.DataFrame(
        {
            "prior changed": g["prior"],
            "μ mean [eti95]": [
                f"{m:.2f} [{lo:.2f}, {hi:.2f}]" if ok else "— (refit needed)"
                for m, lo, hi, ok in zip(g["mu_mean"], g["mu_q025"], g["mu_q975"], g["reliable"], strict=True)
            ],
            "τ median [eti95]": [
                f"{m:.2f} [{lo:.2f}, {hi:.2f}]" if ok else "—"
                for m, lo, hi, ok in zip(g["tau_median"], g["tau_q025"], g["tau_q975"], g["reliable"], strict=True)
            ],
            "Pareto k̂": g["pareto_k"].map(lambda k: "—" if not np.isfinite(k) else f"{k:.2f}"),
        }
    )
    return [
        f"The default fit ({analysis.primary.likelihood_label}) under alternative priors, by Pareto-smoothed "
        "importance reweighting of its draws (no refit; k̂ > 0.7 means the reweighting is unreliable and "
        "the row is not reported; validated against exact refits of the normal model in "
        "tests/test_slow_reweighting.py):",
        "",
        markdown_table(rows),
        "",
    ]


#: Stands for the run's number of subgroup comparisons in a per-outcome section: outcome sections are
#: rendered per outcome (in worker processes, cached) before the run's total is known, and
#: :func:`outcome_sections` fills it in (:func:`subgroup_comparison_count`).
SUBGROUP_COUNT_PLACEHOLDER = "{n_subgroup_comparisons}"
#: Line of an outcome's publication-bias section that :func:`outcome_sections` fills from the multivariate model.
REPORTING_BIAS_PLACEHOLDER = "{{outcome_reporting_bias:{outcome}}}"


def subgroup_section(oid: str, analysis: OutcomeAnalysis, n_comparisons: int | None = None) -> list[str]:
    """Exploratory subgroup analyses (one moderator at a time): means, contrasts, slopes, R² posterior.

    Parameters
    ----------
    oid : str
        Outcome id.
    analysis : OutcomeAnalysis
        The outcome's analyses; nothing is shown without an estimable subgroup fit.
    n_comparisons : int, optional
        Subgroup comparisons (contrasts and slopes) made over the whole run, stated in the heading;
        None writes :data:`SUBGROUP_COUNT_PLACEHOLDER`, which :func:`outcome_sections` replaces.

    Returns
    -------
    list of str
        Markdown lines. Below :data:`analysis.results.meta_regression.MIN_K_SUBGROUPS` studies only
        the heading and a note saying why the tables are not shown.
    """
    fits = analysis.subgroups
    if not fits:
        return []
    count = SUBGROUP_COUNT_PLACEHOLDER if n_comparisons is None else str(n_comparisons)
    lines = [
        f"#### Subgroups: exploratory ({count} subgroup comparisons over all outcomes of this report; "
        "one moderator at a time, exact engine, normal likelihood)",
        "",
    ]
    if not fits.shown_in_report:
        return lines + [
            f"Not shown: k = {fits.k} studies, fewer than {MIN_K_SUBGROUPS} (Cochrane Handbook §10.11.5.1: at least "
            f"ten studies per characteristic modelled). The {fits.n_comparisons} comparisons of this outcome are "
            "counted in that total and kept in `fits/subgroups.json` (`shown_in_report: false`).",
            "",
        ]
    means, effects = _subgroup_rows(fits)
    skipped = [f"{k} ({v})" for k, v in fits.skipped.items()]
    lines += [
        f"Exploratory, not pre-specified tests: each moderator is analysed on its own, and with {count} comparisons "
        "in this report some P(favours) near 0 or 1 are expected by chance. R² is the posterior of the share of the "
        "between-study variance explained by the moderator (Bayesian R², Gelman et al. 2019), median [eti95]; at "
        "k near 10 its median is far from 0 even for a pure-noise moderator, so read the interval: only a lower "
        "end clearly above 0 suggests that the moderator explains heterogeneity.",
        "",
    ]
    if means:
        lines += [markdown_table(pd.DataFrame(means)), ""]
    lines += [markdown_table(pd.DataFrame(effects)), "", figure_link("subgroups", oid), ""]
    return lines + ([f"Not estimable for this outcome: {'; '.join(skipped)}", ""] if skipped else [])


def _subgroup_rows(fits: SubgroupResults) -> tuple[list[dict], list[dict]]:
    """Rows of the subgroup-means table and of the contrasts-and-slopes table."""
    means, effects = [], []
    for name, fit in fits.items():
        r2 = f"{100 * fit.R2['median']:.0f}% [{100 * fit.R2['q025']:.0f}%, {100 * fit.R2['q975']:.0f}%]"
        means += [
            {
                "moderator": name,
                "level": g["level"] + (" (ref)" if g["is_reference"] else ""),
                "k": g["n_studies"],
                "mean [eti95]": interval(g),
                "P(benefit)": f"{g['prob_benefit']:.3f}",
            }
            for g in fit.subgroups
        ]
        rows = [(f"{c['level']} − {c['reference']}", interval(c), c) for c in fit.contrasts]
        rows += [("slope per unit", interval(sl, 3), sl) for sl in fit.slopes]
        effects += [
            {
                "moderator": name,
                "effect": effect,
                "mean [eti95]": text,
                "P(favours)": f"{row['prob_benefit']:.3f}",
                "R² of moderator [eti95]": r2,
            }
            for effect, text, row in rows
        ]
    return means, effects


def subgroup_comparison_count(run: RunResult) -> int:
    """Subgroup comparisons (contrasts and slopes) made over every outcome of a run, shown or not."""
    return sum(int(a.jsons["subgroups"]["n_comparisons"]) for a in run.outcomes.values() if "subgroups" in a.jsons)


def _bias_rows(analysis: OutcomeAnalysis) -> pd.DataFrame:
    avg = analysis.small_study.averaged
    d = avg.outcome.direction

    def natural(x: dict) -> dict:
        return x if d > 0 else {"mean": -x["mean"], "q025": -x["q975"], "q975": -x["q025"]}

    rows = [
        ("unadjusted μ (random effects, no bias model)", natural(avg.unadjusted)),
        ("**adjusted μ (model-averaged over effect, heterogeneity and bias)**", natural(avg.mu)),
        ("μ averaged over the models with an effect (conditional)", natural(avg.conditional_mu)),
    ]
    out = [{"quantity": name, "value": interval(s)} for name, s in rows]
    for component in ("bias", "effect", "heterogeneity"):
        inc = avg.inclusion(component)
        out.append(
            {
                "quantity": f"inclusion Bayes factor: {component}",
                "value": f"{inc['inclusion_bf']:.3g} (P = {inc['posterior_prob']:.2f}, prior {inc['prior_prob']:.2f})",
            }
        )
    return pd.DataFrame(out)


def small_study_section(oid: str, analysis: OutcomeAnalysis) -> list[str]:
    """Publication bias (replacing Egger's test): the bias-averaged ensemble, PET/PEESE, funnel plot."""
    if analysis.small_study is None:
        return []
    return [
        "#### Publication bias (replacing Egger's test; normal likelihood)",
        "",
        "Bayesian model averaging over effect (μ = 0 or not), heterogeneity (τ = 0 or not) and publication bias "
        "(none; selection on each study's one-sided t-test p-value with monotone weights, cut-points "
        "0.025/0.05 and 0.05/0.5; PET/PEESE on √(1/ñ) only when k ≥ 10 and study sizes vary), as RoBMA-PSMA "
        "(Bartoš et al. 2023), computed by exact quadrature. The adjusted estimate is the model-averaged μ "
        "(models without an effect count as μ = 0). Measured behaviour (README, 'Publication bias'): "
        + calibration_text()
        + (
            ". The bias Bayes factor is therefore not used as a flag and the model-averaged μ not as the effect "
            "estimate in the conclusions (no calibration, no headline; other designs are not measured): on that "
            "design, with k ≤ 10 studies that are nearly all significant, 'no effect, large heterogeneity and only "
            "significant studies published' fits almost as well as a real effect."
            if not bias_flag_calibrated()
            else "."
        ),
        "",
        markdown_table(_bias_rows(analysis)),
        "",
        REPORTING_BIAS_PLACEHOLDER.format(outcome=oid),
        "",
        "```",
        str(analysis.small_study),
        "```",
        "",
        figure_link("funnel", oid),
        "",
    ]


def _forest_lines(oid: str, r: MetaAnalysisResult) -> list[str]:
    """The forest plot, or at large k a compact summary with the full forest plot as a separate file."""
    if r.k <= LARGE_K:
        return [figure_link("forest", oid), ""]
    return [
        figure_link("caterpillar", oid),
        "",
        f"The forest plot of all {r.k} studies is a tall figure of its own: `{figure_path('forest', oid)}`; "
        f"the study effects are in `tables/studies_{oid}.csv`.",
        "",
    ]


def influence_section(oid: str, analysis: OutcomeAnalysis) -> list[str]:
    """Study influence (replacing leave-one-out): exact leave-one-study-out refits and PSIS-LOO Pareto k."""
    if analysis.influence is None:
        return []
    return [
        "#### Study influence (replacing leave-one-out)",
        "",
        "Normal likelihood: exact leave-one-study-out refits, PSIS-LOO and metafor's leave1out; "
        + (
            "then the default (arm-level) fit: leave-one-study-out by integrated PSIS of its draws "
            "(the study's likelihood integrated over its own random effects and SD; Vehtari et al. 2016)."
            if analysis.influence.default is not None
            else "the default model is this normal one."
        ),
        "",
        "```",
        format_influence(analysis.influence, max_rows=INFLUENCE_ROWS if analysis.influence.k > LARGE_K else None),
        "```",
        "",
        figure_link("influence", oid),
        "",
    ]


def outcome_section(oid: str, analysis: OutcomeAnalysis, n_subgroup_comparisons: int | None = None) -> list[str]:
    """One outcome: forest plot, fit report, predictive checks, prior sensitivity, comparison.

    ``n_subgroup_comparisons`` (the run's total, for the subgroup heading) is left as a placeholder
    when None, filled in by :func:`outcome_sections`.
    """
    r = analysis.primary
    return [
        f"### {r.outcome.label} ({oid})",
        "",
        *_forest_lines(oid, r),
        "```",
        str(r),
        "```",
        "",
        f"**Pooled effect ({r.likelihood_label}):** μ = {interval(r.summaries['mu'])} (eti95); "
        "95% interval of a new study's true effect "
        f"[{r.summaries['theta_new']['q025']:.2f}, {r.summaries['theta_new']['q975']:.2f}]; "
        f"P(benefit) = {r.prob_benefit:.3f}.",
        "",
        *_decision_section(analysis),
        *subgroup_section(oid, analysis, n_subgroup_comparisons),
        *([] if analysis.rob is None else rob_sensitivity_lines(oid, analysis.rob)),
        *small_study_section(oid, analysis),
        *influence_section(oid, analysis),
        *[f"Not run: {reason}." for reason in analysis.skipped.values()],
        *([""] if analysis.skipped else []),
        *_ppc_section(oid, analysis),
        "#### Prior sensitivity",
        "",
        *_psense_section(oid, analysis),
        *_reweighted_grid_lines(analysis),
        "Refits under alternative priors (exact engine, normal likelihood):",
        "",
        _grid_table(analysis),
        "",
        figure_link("prior_grid", oid),
        "",
        *_reproduction_section(analysis),
        "#### Bayesian and frequentist estimates side by side",
        "",
        compare_markdown(analysis.comparison),
        "",
        figure_link("compare", oid),
        "",
    ]


def outcome_sections(run: RunResult) -> list[str]:
    """All per-outcome sections (rendered per outcome by :mod:`analysis.report.render`)."""
    lines = ["## Outcomes", ""]
    for artifacts in run.outcomes.values():
        lines += artifacts.markdown
    count = str(subgroup_comparison_count(run))
    lines = [line.replace(SUBGROUP_COUNT_PLACEHOLDER, count) for line in lines]
    return [_reporting_bias_line(line, run) for line in lines]


def _reporting_bias_line(line: str, run: RunResult) -> str:
    """Fill an outcome's reporting-bias placeholder from the multivariate model's diagnostic (or say why not)."""
    for oid in run.outcomes:
        if line == REPORTING_BIAS_PLACEHOLDER.format(outcome=oid):
            row = reporting_bias_row(None if run.multivariate is None else run.multivariate.json, oid)
            if row is None:
                return (
                    "Outcome-reporting bias (studies leaving this outcome out because it was not significant) is "
                    "assessed by the multivariate model only for outcomes in it with missing studies; not here."
                )
            d = row["difference"]
            return (
                f"Outcome-reporting bias: {len(row['missing_studies'])} studies in the multivariate model did not "
                f"report this outcome; the multivariate minus univariate pooled effect is {d['mean']:+.2f} "
                f"[{d['q025']:.2f}, {d['q975']:.2f}] on the benefit scale, z = {row['z']:.2f} "
                f"({'flagged' if row['flagged'] else 'not flagged'}); see the multivariate section."
            )
    return line


def _float_table(frame: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    shown = frame.copy()
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(f"{{:.{digits}f}}".format)
    return shown


def _structure_lines(result: MultivariateResult) -> list[str]:
    table = result.structure_comparison
    if table is None:
        return [f"Between-study structure: {result.structure} (fixed by the caller, not compared).", ""]
    runner = table.iloc[1] if len(table) > 1 else None
    close = runner is not None and runner["elpd_diff"] < 2.0 * runner["se_diff"]
    verdict = (
        f"the data do not distinguish it from {table.index[1]} (difference {runner['elpd_diff']:.2f}, "
        f"SE {runner['se_diff']:.2f})"
        if close
        else "it predicts new studies best by more than two standard errors"
        if runner is not None
        else "the only structure fitted"
    )
    return [
        f"**Between-study structure**, compared by PSIS-LOO over studies (the expected log predictive density "
        f"of a left-out study with all its outcomes; Pareto k > 0.7 marks an unreliable study): "
        f"**{table.index[0]}** is used below; {verdict}.",
        "",
        markdown_table(_float_table(table.rename_axis("structure").reset_index())),
        "",
    ]


def _prior_posterior_lines(result: MultivariateResult) -> list[str]:
    table = result.prior_posterior
    if table is None or table.empty:
        return []
    columns = ["prior_mean", "prior_sd", "mean", "sd", "q025", "q975", "contraction"]
    every = result.prior_posterior_by_structure
    shown = table[columns] if every is None else every[["structure", *columns]]
    rw = result.rho_within_posterior
    lines = []
    if rw is not None:
        lines += [
            f"**Within-study correlation ρ_w**, estimated under its prior {result.priors.get('rho_within')}: "
            f"posterior mean {rw['mean']:.2f}, 95% ETI [{rw['q025']:.2f}, {rw['q975']:.2f}] "
            f"(contraction {table.loc['rho_within', 'contraction']:.2f}).",
            "",
        ]
    return lines + [
        "**Prior against posterior** of every correlation parameter"
        + ("" if every is None else " of every structure compared (the figure: the structure used)")
        + ": contraction = 1 − posterior variance / prior variance (0: the data taught nothing, 1: the data "
        "determine it).",
        "",
        markdown_table(_float_table(shown.rename_axis("parameter").reset_index(), 2)),
        "",
        figure_link("multivariate_prior_posterior"),
        "",
    ]


def reporting_bias_lines(result: MultivariateResult, calibration: str) -> list[str]:
    """The outcome-reporting-bias table of the multivariate section, with its measured calibration."""
    rb = result.reporting_bias
    if rb is None or rb.empty:
        why = "moderators in the model" if result.beta is not None else "every study reports every outcome"
        return [f"**Outcome-reporting bias**: not assessed ({why}).", ""]
    rows = [
        {
            "outcome": r.outcome,
            "k reported": r.k_reported,
            "missing studies": len(r.missing_studies),
            "multivariate − univariate μ (95% ETI)": f"{r.mean:.2f} [{r.q025:.2f}, {r.q975:.2f}]",
            "SD if ignorable": f"{r.null_sd:.2f}",
            "z": f"{r.z:.2f}",
            "flagged (z ≤ −1.96)": "**yes**" if r.flagged else "no",
            "absences that pull it down most": ", ".join(f"{s} ({v:+.2f})" for s, v in r.drivers[:3] if v < 0)
            or "none",
        }
        for r in rb.itertuples()
    ]
    return [
        "**Outcome-reporting bias.** For each outcome some studies did not report, the multivariate estimate "
        "(which sees the missing studies through their other outcomes and the correlations) minus the univariate "
        "one (reporting studies only), on the benefit scale. If missingness were ignorable both would estimate the "
        "same μ and the contrast would scatter with the SD shown (Hausman); a negative z means the missing "
        "studies' other outcomes were worse than chance explains, the signature of non-significant results left "
        "unreported. The change per absent study is the contrast minus the contrast without that study. " + calibration,
        "",
        markdown_table(pd.DataFrame(rows)),
        "",
        figure_link("multivariate_reporting_bias"),
        "",
    ]


def multivariate_section(result: MultivariateResult, sensitivity: pd.DataFrame, calibration: str) -> list[str]:
    """The multivariate model: structure comparison, ρ_w, prior vs posterior, reporting bias, borrowing, R, ρ_w grid."""
    ids = ", ".join(o.id for o in result.outcomes)
    return [
        f"## Multivariate model across outcomes ({ids})",
        "",
        "θ_i ~ MVN(μ, diag(τ) R diag(τ)) on benefit-oriented effects (lower-is-better outcomes sign-flipped); "
        "each study contributes only the outcomes it reports; the within-study correlation ρ_w (one for every "
        "pair; summary data do not reveal it) is estimated under its prior, and the grid at the end shows what "
        "fixing it would do.",
        "",
        *_structure_lines(result),
        *_prior_posterior_lines(result),
        *reporting_bias_lines(result, calibration),
        "```",
        str(result),
        "```",
        "",
        figure_link("multivariate_borrowing"),
        "",
        figure_link("multivariate_correlation"),
        "",
        f"Sensitivity to a fixed within-study correlation ρ_w ({result.structure} structure):",
        "",
        markdown_table(_float_table(sensitivity)),
        "",
    ]


def diagnostics_section(run: RunResult) -> list[str]:
    """Convergence diagnostics of every NUTS fit."""
    rows = [
        {
            "outcome": r.outcome.id,
            "r_hat max": f"{r.diagnostics.r_hat_max:.3f}",
            "ess_bulk min": f"{r.diagnostics.ess_bulk_min:.0f}",
            "ess_tail min": f"{r.diagnostics.ess_tail_min:.0f}",
            "divergences": r.diagnostics.divergences,
            "retried": "yes" if r.retried else "no",
            "gates": "passed" if r.converged else "**FAILED**",
        }
        for r in run.primary
        if r.diagnostics is not None
    ]
    if not rows:
        return []
    return ["## Convergence diagnostics", "", markdown_table(pd.DataFrame(rows)), ""]


def rob_section(run: RunResult) -> list[str]:
    """The SYRCLE risk-of-bias figure, if the studies table has risk-of-bias columns."""
    if not any(c.startswith("rob_") for c in run.dataset.studies.columns):
        return []
    return ["## Risk of bias (SYRCLE)", "", figure_link("risk_of_bias"), ""]


def engine_section(run: RunResult) -> list[str]:
    """NUTS against the exact engine, per outcome and parameter, in Monte Carlo standard errors."""
    frames = [a.tables["engine_check"] for a in run.outcomes.values() if "engine_check" in a.tables]
    if not frames:
        return []
    check = pd.concat(frames, ignore_index=True)
    shown = check.assign(
        exact_mean=check["exact_mean"].map("{:.4f}".format),
        nuts_mean=check["nuts_mean"].map("{:.4f}".format),
        mcse=check["mcse"].map("{:.4f}".format),
        z_mcse=check["z_mcse"].map("{:.2f}".format),
        within_4_mcse=check["within_4_mcse"].map({True: "yes", False: "**no**"}),
    )
    return ["## NUTS against the exact engine", "", markdown_table(shown), ""]


def build_report_markdown(run: RunResult) -> str:
    """The complete ``report.md`` text of a run."""
    lines = header_section(run) + conclusions_section(run) + methods_section(run)
    lines += pooled_section(run.primary, engine=run.engine)
    if run.skipped:
        lines += ["Outcomes not analysed: " + "; ".join(f"{k} ({v})" for k, v in run.skipped.items()), ""]
    lines += rob_section(run) + outcome_sections(run)
    if run.multivariate is not None:
        lines += run.multivariate.markdown
    lines += [f"Note: {note}." for note in run.notes] + ([""] if run.notes else [])
    lines += diagnostics_section(run) + engine_section(run)
    return "\n".join(lines).rstrip() + "\n"
