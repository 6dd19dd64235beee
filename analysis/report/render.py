"""Rendering one outcome's analysis (and the multivariate model) to artifacts: figures, tables, text.

Runs in the worker processes of ``evmeta run``; the result (:mod:`analysis.report.artifacts`) holds
no live model or posterior object, so it can be pickled into the cache.
"""

from __future__ import annotations

import pandas as pd

from analysis.checks.sensitivity import top_level_parameters
from analysis.inference.reporting_bias_calibration import reporting_bias_calibration_text
from analysis.plots.compare import compare_forest
from analysis.plots.forest import caterpillar_plot, forest_plot
from analysis.plots.influence import influence_plot
from analysis.plots.meta_regression import subgroup_plot
from analysis.plots.multivariate import (
    borrowing_plot,
    correlation_heatmap,
    prior_posterior_plot,
    reporting_bias_plot,
)
from analysis.plots.predictive import loo_pit_plot, ppc_density_plot, ppc_statistics_plot
from analysis.plots.sensitivity import prior_grid_plot, psense_plot
from analysis.plots.small_study import funnel_plot
from analysis.report.artifacts import MultivariateArtifacts, OutcomeArtifacts
from analysis.report.figures import INFLUENCE_ROWS, LARGE_K, figure_stem
from analysis.report.files import figure_bytes, netcdf_bytes
from analysis.report.markdown import multivariate_section, outcome_section
from analysis.results.multivariate import MultivariateResult
from analysis.results.outcome import OutcomeAnalysis
from analysis.results.random_effects import stripped


def render_figures(analysis: OutcomeAnalysis) -> dict[str, dict[str, bytes]]:
    """All figures of one outcome as bytes, keyed by file stem (figures of skipped analyses are absent)."""
    primary, nuts = analysis.primary, analysis.nuts
    oid = primary.outcome.id
    figures = {figure_stem("forest", oid): figure_bytes(forest_plot(primary, measure=primary.measure))}
    if primary.k > LARGE_K:
        figures[figure_stem("caterpillar", oid)] = figure_bytes(caterpillar_plot(primary, measure=primary.measure))
    if nuts is not None:
        checked = analysis.arm or nuts  # the predictive check is of the primary NUTS fit
        figures[figure_stem("ppc", oid)] = figure_bytes(ppc_density_plot(checked))
        figures[figure_stem("ppc_stats", oid)] = figure_bytes(ppc_statistics_plot(checked, analysis.ppc))
        figures[figure_stem("psense", oid)] = figure_bytes(psense_plot(primary, top_level_parameters(primary)))
    if analysis.loo_pit is not None:
        figures[figure_stem("loo_pit", oid)] = figure_bytes(loo_pit_plot(analysis.arm, analysis.loo_pit))
    figures[figure_stem("prior_grid", oid)] = figure_bytes(prior_grid_plot(analysis.prior_grid))
    compared = {"NUTS, arm-level likelihood (default)": analysis.arm} if analysis.arm else {}
    compared |= {"NUTS, normal likelihood": nuts} if nuts is not None else {}
    compared |= {"exact engine, normal likelihood": analysis.exact}
    figures[figure_stem("compare", oid)] = figure_bytes(compare_forest(compared))
    if analysis.subgroups:
        figures[figure_stem("subgroups", oid)] = figure_bytes(subgroup_plot(dict(analysis.subgroups)))
    if analysis.small_study is not None:
        figures[figure_stem("funnel", oid)] = figure_bytes(funnel_plot(analysis.small_study))
    if analysis.influence is not None:
        rows = INFLUENCE_ROWS if analysis.influence.k > LARGE_K else None
        figures[figure_stem("influence", oid)] = figure_bytes(influence_plot(analysis.influence, max_rows=rows))
    return figures


def render_tables(analysis: OutcomeAnalysis) -> dict[str, pd.DataFrame]:
    """Tables of one outcome (each gets an ``outcome`` column; the report stacks them)."""
    oid = analysis.primary.outcome.id
    tables = {}
    if analysis.ppc is not None:
        rows = [{"outcome": oid, "statistic": k, **v} for k, v in analysis.ppc.statistics.items()]
        tables["ppc_statistics"] = pd.DataFrame(rows)
    if analysis.psense is not None:
        tables["power_scaling"] = analysis.psense.reset_index(names="parameter").assign(outcome=oid)
    tables |= {"prior_grid": analysis.prior_grid, "comparison": analysis.comparison}
    if analysis.prior_grid_default is not None:
        tables["prior_grid_default_model"] = analysis.prior_grid_default
    tables[f"studies_{oid}"] = analysis.primary.studies
    if analysis.engine_check is not None:
        tables["engine_check"] = analysis.engine_check
    if analysis.subgroups:
        rows = [
            {"outcome": oid, "moderator": m, **{k: v for k, v in g.items() if k != "moderator"}}
            for m, fit in analysis.subgroups.items()
            for g in fit.subgroups
        ]
        tables["subgroups"] = pd.DataFrame(rows)
    if analysis.skipped:
        tables["skipped_analyses"] = pd.DataFrame(
            [{"outcome": oid, "analysis": name, "reason": reason} for name, reason in analysis.skipped.items()]
        )
    return tables


def build_artifacts(analysis: OutcomeAnalysis) -> OutcomeArtifacts:
    """Render one outcome's analysis (:class:`analysis.results.outcome.OutcomeAnalysis`) to artifacts."""
    oid = analysis.primary.outcome.id
    jsons = {} if analysis.arm is None else {"arm": analysis.arm.to_dict()}
    jsons |= {} if analysis.nuts is None else {"nuts": analysis.nuts.to_dict()}
    jsons["exact"] = analysis.exact.to_dict()
    if analysis.ppc is not None:
        jsons["ppc"] = analysis.ppc.to_dict()
    if analysis.loo_pit is not None:
        jsons["loo_pit"] = analysis.loo_pit.to_dict()
    if analysis.decision is not None:
        jsons["decision"] = analysis.decision.to_dict()
    if analysis.rob is not None:
        jsons["rob"] = analysis.rob.to_dict()
    if analysis.subgroups:
        jsons["subgroups"] = analysis.subgroups.to_dict()
    if analysis.small_study is not None:
        jsons["small_study"] = analysis.small_study.to_dict()
    if analysis.influence is not None:
        jsons["influence"] = analysis.influence.to_dict()
    if analysis.reproduction is not None:
        jsons["reproduction"] = analysis.reproduction.to_dict()
    if analysis.skipped:
        jsons["skipped"] = dict(analysis.skipped)
    return OutcomeArtifacts(
        outcome=oid,
        nuts=None if analysis.nuts is None else stripped(analysis.nuts),
        exact=stripped(analysis.exact),
        markdown=outcome_section(oid, analysis),
        figures=render_figures(analysis),
        tables=render_tables(analysis),
        jsons=jsons,
        posterior_nc=None if analysis.primary.engine != "nuts" else netcdf_bytes(analysis.primary),
        arm=None if analysis.arm is None else stripped(analysis.arm),
    )


def _multivariate_extra_tables(result: MultivariateResult) -> dict[str, pd.DataFrame]:
    """Structure comparison, prior vs posterior and the reporting-bias diagnostic, where present."""
    tables = {}
    if result.structure_comparison is not None:
        tables["multivariate_structures"] = result.structure_comparison.rename_axis("structure").reset_index()
    every = (
        result.prior_posterior if result.prior_posterior_by_structure is None else result.prior_posterior_by_structure
    )
    if every is not None:
        tables["multivariate_prior_posterior"] = every.rename_axis("parameter").reset_index()
    if result.reporting_bias is not None:
        rb = result.reporting_bias.copy()
        rb["missing_studies"] = rb["missing_studies"].map("; ".join)
        rb["drivers"] = rb["drivers"].map(lambda d: "; ".join(f"{s} {v:+.3f}" for s, v in d))
        tables["multivariate_reporting_bias"] = rb
    return tables


def build_multivariate_artifacts(result: MultivariateResult, sensitivity: pd.DataFrame) -> MultivariateArtifacts:
    """Render a :class:`analysis.results.multivariate.MultivariateResult` and its ρ_w sensitivity table."""
    figures = {
        figure_stem("multivariate_correlation"): figure_bytes(correlation_heatmap(result)),
        figure_stem("multivariate_borrowing"): figure_bytes(borrowing_plot(result)),
        figure_stem("multivariate_prior_posterior"): figure_bytes(prior_posterior_plot(result)),
        figure_stem("multivariate_reporting_bias"): figure_bytes(reporting_bias_plot(result)),
    }
    tables = {
        "multivariate_mu": result.borrowing,
        "multivariate_rho": result.rho,
        "multivariate_rho_within_sensitivity": sensitivity,
        "multivariate_predictions": result.predictions,
        **_multivariate_extra_tables(result),
    }
    return MultivariateArtifacts(
        outcomes=tuple(o.id for o in result.outcomes),
        converged=result.converged,
        markdown=multivariate_section(result, sensitivity, reporting_bias_calibration_text()),
        figures=figures,
        tables=tables,
        json=result.to_dict() | {"rho_within_sensitivity": sensitivity.to_dict(orient="records")},
        posterior_nc=netcdf_bytes(result),
    )
