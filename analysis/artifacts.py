"""Per-outcome artifacts: the analysis of one outcome rendered to bytes, tables and report text.

An :class:`OutcomeArtifacts` is what the report needs of one outcome, with no live model or
posterior object in it, so it can be computed in a worker process, pickled into the cache
and assembled into the report later (:mod:`analysis.report`).
"""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.results import MetaAnalysisResult

FIGURE_FORMATS = ("png", "svg")


@dataclass
class OutcomeArtifacts:
    """Everything the report shows of one outcome (plain data: picklable, cacheable)."""

    outcome: str
    nuts: MetaAnalysisResult
    exact: MetaAnalysisResult
    markdown: list[str]
    figures: dict[str, dict[str, bytes]]
    tables: dict[str, pd.DataFrame]
    jsons: dict[str, dict]
    posterior_nc: bytes | None
    timings: dict[str, float] = field(default_factory=dict)
    cache_hit: bool = False


def figure_bytes(fig: object) -> dict[str, bytes]:
    """PNG and SVG bytes of a figure (deterministic metadata); the figure is closed afterwards."""
    import matplotlib
    import matplotlib.pyplot as plt

    out = {}
    try:
        for fmt in FIGURE_FORMATS:
            buffer = io.BytesIO()
            metadata = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
            # deterministic SVG element ids; text kept as text (editable, 5x smaller, 20% faster than glyph paths)
            with matplotlib.rc_context({"svg.hashsalt": "evmeta", "svg.fonttype": "none"}):
                fig.savefig(buffer, format=fmt, dpi=150, bbox_inches="tight", metadata=metadata)
            out[fmt] = buffer.getvalue()
    finally:
        plt.close(fig)
    return out


def netcdf_bytes(result: MetaAnalysisResult) -> bytes | None:
    """The NUTS posterior of a fit as NetCDF4 bytes (h5netcdf), or None without draws."""
    if result.posterior is None:
        return None
    fd, tmp = tempfile.mkstemp(suffix=".nc")
    os.close(fd)
    try:
        result.posterior.to_netcdf(tmp, engine="h5netcdf")
        return Path(tmp).read_bytes()
    finally:
        Path(tmp).unlink(missing_ok=True)


def without_model(result: MetaAnalysisResult) -> MetaAnalysisResult:
    """A copy without the PyMC model (picklable; the draws are kept)."""
    return dataclasses.replace(result, pymc_model=None)


def stripped(result: MetaAnalysisResult) -> MetaAnalysisResult:
    """A copy without the posterior draws and the PyMC model (small, picklable)."""
    return dataclasses.replace(result, posterior=None, pymc_model=None)


def render_figures(analysis: object, dataset: object) -> dict[str, dict[str, bytes]]:
    """All figures of one outcome as bytes, keyed by file stem."""
    from analysis.compare import compare_forest
    from analysis.plots_checks import ppc_density_plot, ppc_statistics_plot, prior_grid_plot, psense_plot
    from analysis.plots_forest import forest_plot

    oid, nuts = analysis.nuts.outcome.id, analysis.nuts
    figures = {
        f"forest_{oid}": figure_bytes(forest_plot(nuts, measure=nuts.measure)),
        f"ppc_{oid}": figure_bytes(ppc_density_plot(nuts)),
        f"ppc_stats_{oid}": figure_bytes(ppc_statistics_plot(nuts, analysis.ppc)),
        f"psense_{oid}": figure_bytes(psense_plot(nuts)),
        f"prior_grid_{oid}": figure_bytes(prior_grid_plot(analysis.prior_grid)),
        f"compare_{oid}": figure_bytes(compare_forest({"NUTS": nuts, "exact engine": analysis.exact}
                                                      | ({"NUTS, arm-level likelihood": analysis.arm} if analysis.arm else {}))),
    }
    if analysis.subgroups:
        from analysis.plots_subgroups import subgroup_plot

        figures[f"subgroups_{oid}"] = figure_bytes(subgroup_plot(dict(analysis.subgroups)))
    if analysis.small_study is not None:
        from analysis.plots_funnel import funnel_plot

        figures[f"funnel_{oid}"] = figure_bytes(funnel_plot(analysis.small_study))
    if analysis.influence is not None:
        from analysis.plots_influence import influence_plot

        figures[f"influence_{oid}"] = figure_bytes(influence_plot(analysis.influence))
    return figures


def render_tables(analysis: object) -> dict[str, pd.DataFrame]:
    """Tables of one outcome (each gets an ``outcome`` column; the report stacks them)."""
    oid = analysis.nuts.outcome.id
    tables = {
        "ppc_statistics": pd.DataFrame([{"outcome": oid, "statistic": k, **v} for k, v in analysis.ppc.statistics.items()]),
        "power_scaling": analysis.psense.reset_index(names="parameter").assign(outcome=oid),
        "prior_grid": analysis.prior_grid,
        "comparison": analysis.comparison,
        f"studies_{oid}": analysis.nuts.studies,
        "engine_check": analysis.engine_check,
    }
    if analysis.subgroups:
        rows = [{"outcome": oid, "moderator": m, **{k: v for k, v in g.items() if k != "moderator"}}
                for m, fit in analysis.subgroups.items() for g in fit.subgroups]
        tables["subgroups"] = pd.DataFrame(rows)
    return tables


def build_artifacts(analysis: object, dataset: object) -> OutcomeArtifacts:
    """Render one outcome's analysis (:class:`analysis.pipeline.OutcomeAnalysis`) to artifacts."""
    from analysis.report_md import outcome_section

    oid = analysis.nuts.outcome.id
    jsons = {"nuts": analysis.nuts.to_dict(), "exact": analysis.exact.to_dict(), "ppc": analysis.ppc.to_dict()}
    if analysis.subgroups:
        jsons["subgroups"] = analysis.subgroups.to_dict()
    if analysis.small_study is not None:
        jsons["small_study"] = analysis.small_study.to_dict()
    if analysis.influence is not None:
        jsons["influence"] = analysis.influence.to_dict()
    return OutcomeArtifacts(
        outcome=oid, nuts=stripped(analysis.nuts), exact=stripped(analysis.exact),
        markdown=outcome_section(oid, analysis), figures=render_figures(analysis, dataset),
        tables=render_tables(analysis), jsons=jsons, posterior_nc=netcdf_bytes(analysis.nuts),
    )


@dataclass
class MultivariateArtifacts:
    """The multivariate model across outcomes, rendered (plain data: picklable, cacheable)."""

    outcomes: tuple[str, ...]
    converged: bool
    markdown: list[str]
    figures: dict[str, dict[str, bytes]]
    tables: dict[str, pd.DataFrame]
    json: dict
    posterior_nc: bytes | None
    timings: dict[str, float] = field(default_factory=dict)
    cache_hit: bool = False


def build_multivariate_artifacts(result: object, sensitivity: pd.DataFrame) -> MultivariateArtifacts:
    """Render a :class:`analysis.multivariate_result.MultivariateResult` and its ρ_w sensitivity table."""
    from analysis.plots_multivariate import borrowing_plot, correlation_heatmap
    from analysis.report_md import multivariate_section

    figures = {"multivariate_correlation": figure_bytes(correlation_heatmap(result)),
               "multivariate_borrowing": figure_bytes(borrowing_plot(result))}
    tables = {"multivariate_mu": result.borrowing, "multivariate_rho": result.rho, "multivariate_rho_within_sensitivity": sensitivity,
              "multivariate_predictions": result.predictions}
    return MultivariateArtifacts(
        outcomes=tuple(o.id for o in result.outcomes), converged=result.converged,
        markdown=multivariate_section(result, sensitivity), figures=figures, tables=tables,
        json=result.to_dict() | {"rho_within_sensitivity": sensitivity.to_dict(orient="records")},
        posterior_nc=netcdf_bytes(result),
    )
