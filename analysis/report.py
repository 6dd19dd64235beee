"""The report: writes fit outputs and the analysis report (``report.md``, figures, tables, manifest).

Everything goes through the atomic writers of :mod:`analysis.outputs`, so an interrupted run
leaves complete files or none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from analysis.atomic import staged_directory, write_text_atomic
from analysis.config import INTERVAL_KIND
from analysis.outputs import pooled_table, save_posterior, write_csv, write_figure, write_json
from analysis.results import MetaAnalysisResult

if TYPE_CHECKING:
    from analysis.pipeline import RunResult


def fits_json(results: Sequence[object], *, all_outcomes: bool) -> dict:
    """The JSON object of ``evmeta fit``: one fit's dict, or ``{dataset, fits: {outcome: dict}}``."""
    if not all_outcomes and len(results) == 1:
        return results[0].to_dict()
    return {
        "dataset": results[0].dataset if results else None,
        "provenance": results[0].provenance if results else None,
        "fits": {r.outcome.id: r.to_dict() for r in results},
    }


def write_fit_outputs(
    results: Sequence[object], *, json_path: Path | None, out_dir: Path | None, all_outcomes: bool
) -> list[Path]:
    """Write what ``evmeta fit`` produces and return the paths written.

    Parameters
    ----------
    results : sequence of MetaAnalysisResult
        Fits to write.
    json_path : pathlib.Path, optional
        JSON file of the summaries (DESIGN.md §3 layout).
    out_dir : pathlib.Path, optional
        Folder for ``figures/`` (forest plots, pooled summary), ``tables/`` (pooled summary and
        study effects as CSV) and ``posteriors/`` (NetCDF DataTrees of NUTS fits).
    all_outcomes : bool
        Whether the fits came from ``--all`` (changes the JSON layout).
    """
    written: list[Path] = []
    if json_path is not None:
        written.append(write_json(json_path, fits_json(results, all_outcomes=all_outcomes)))
    if out_dir is not None and results:
        written += write_fit_figures(results, Path(out_dir) / "figures")
        written += write_fit_tables(results, Path(out_dir) / "tables")
        for result in results:
            path = save_posterior(result, Path(out_dir) / "posteriors" / f"{result.outcome.id}.nc")
            written += [path] if path else []
    return written


def write_fit_figures(results: Sequence[MetaAnalysisResult], folder: Path) -> list[Path]:
    """Forest plot per outcome and, for several outcomes, the pooled summary figure."""
    from analysis.plots_forest import forest_plot, pooled_summary_plot

    written = []
    pooled = [r for r in results if isinstance(r, MetaAnalysisResult)]
    for result in results:
        if isinstance(result, MetaAnalysisResult):
            written += write_figure(forest_plot(result, measure=result.measure), folder / f"forest_{result.outcome.id}")
        elif type(result).__name__ == "MetaRegressionResult":
            from analysis.plots_subgroups import subgroup_plot

            written += write_figure(subgroup_plot(result), folder / f"subgroups_{result.outcome.id}")
    if len(pooled) > 1:
        written += write_figure(pooled_summary_plot(pooled, measure=pooled[0].measure), folder / "pooled_summary")
    return written


def write_fit_tables(results: Sequence[MetaAnalysisResult], folder: Path) -> list[Path]:
    """Pooled summary table (one row per outcome) and the study-effects table of each outcome."""
    pooled = [r for r in results if isinstance(r, MetaAnalysisResult)]
    written = [write_csv(folder / "pooled_summary.csv", pooled_table(pooled))] if pooled else []
    for result in results:
        written.append(write_csv(folder / f"studies_{result.outcome.id}.csv", result.studies))
    return written


def manifest(run: RunResult, elapsed: float) -> dict:
    """The ``manifest.json`` content of a run (provenance of every number in the report)."""
    from analysis.manifest import git_revision, package_versions

    ds = run.dataset
    return {
        "dataset": {"name": ds.name, "path": str(ds.path), "provenance": ds.provenance, "sha256": ds.sha256()},
        "packages": package_versions(), "git_revision": git_revision(),
        "seeds": {r.outcome.id: r.settings.get("seed") for r in run.nuts},
        "priors": run.priors.to_dict(), "sampler": asdict(run.sampler), "interval": INTERVAL_KIND,
        "run_time_seconds": round(elapsed, 3), "timings_seconds": {k: round(v, 3) for k, v in run.timings.items()},
        "fits": {r.outcome.id: {"engine": r.engine, "converged": r.converged, "retried": r.retried,
                                "diagnostics": None if r.diagnostics is None else r.diagnostics.to_dict()} for r in run.nuts},
        "failed_fits": run.failed,
    }


def _save(fig: object, stem: Path) -> list[Path]:
    """Save a figure (PNG + SVG) and release it (ArviZ figures live in pyplot's registry)."""
    import matplotlib.pyplot as plt

    try:
        return write_figure(fig, stem)
    finally:
        plt.close(fig)


def write_check_figures(run: RunResult, folder: Path) -> None:
    """Per outcome: PPC density and statistics, power-scaling, prior grid, comparison forest; and the RoB figure."""
    from analysis.compare import compare_forest
    from analysis.plots_checks import ppc_density_plot, ppc_statistics_plot, prior_grid_plot, psense_plot
    from analysis.plots_rob import rob_columns, rob_summary_plot
    from analysis.plots_subgroups import subgroup_plot

    for oid, a in run.outcomes.items():
        _save(ppc_density_plot(a.nuts), folder / f"ppc_{oid}")
        _save(ppc_statistics_plot(a.nuts, a.ppc), folder / f"ppc_stats_{oid}")
        _save(psense_plot(a.nuts), folder / f"psense_{oid}")
        _save(prior_grid_plot(a.prior_grid), folder / f"prior_grid_{oid}")
        _save(compare_forest({"NUTS": a.nuts, "exact engine": a.exact}), folder / f"compare_{oid}")
        if a.subgroups:
            _save(subgroup_plot(dict(a.subgroups)), folder / f"subgroups_{oid}")
    if rob_columns(run.dataset.studies):
        _save(rob_summary_plot(run.dataset.studies, simulated=run.dataset.is_simulated), folder / "risk_of_bias")


def write_check_tables(run: RunResult, folder: Path) -> None:
    """PPC statistics, power-scaling, prior grids and comparison tables (all outcomes stacked)."""
    import pandas as pd

    ppc = [{"outcome": oid, "statistic": k, **v} for oid, a in run.outcomes.items() for k, v in a.ppc.statistics.items()]
    write_csv(folder / "ppc_statistics.csv", pd.DataFrame(ppc))
    psense = [a.psense.reset_index(names="parameter").assign(outcome=oid) for oid, a in run.outcomes.items()]
    write_csv(folder / "power_scaling.csv", pd.concat(psense, ignore_index=True))
    write_csv(folder / "prior_grid.csv", pd.concat([a.prior_grid for a in run.outcomes.values()], ignore_index=True))
    write_csv(folder / "comparison.csv", pd.concat([a.comparison for a in run.outcomes.values()], ignore_index=True))
    subgroups = [{"outcome": oid, "moderator": m, **{k: v for k, v in g.items() if k != "moderator"}}
                 for oid, a in run.outcomes.items() if a.subgroups for m, fit in a.subgroups.items() for g in fit.subgroups]
    if subgroups:
        write_csv(folder / "subgroups.csv", pd.DataFrame(subgroups))
    if any(a.subgroups for a in run.outcomes.values()):
        write_json(folder.parent / "fits" / "subgroups.json", {oid: a.subgroups.to_dict() for oid, a in run.outcomes.items() if a.subgroups})


def write_run_report(run: RunResult, out_dir: Path, *, elapsed: float) -> Path:
    """Write the whole report of a run to ``out_dir`` (replaced only once complete).

    Layout: ``report.md``, ``report.html`` (self-contained), ``manifest.json``, ``figures/`` (PNG + SVG), ``tables/`` (CSV),
    ``fits/`` (JSON per outcome, NUTS and exact), ``posteriors/`` (NetCDF DataTrees).
    """
    from analysis.pipeline import engine_check
    from analysis.report_html import markdown_to_html
    from analysis.report_md import build_report_markdown

    with staged_directory(Path(out_dir)) as stage:
        write_csv(stage / "tables" / "effects.csv", run.table.data)
        if run.table.covariance:
            write_csv(stage / "tables" / "effects.covariance.csv", run.table.covariance_long())
        write_fit_outputs(run.nuts, json_path=stage / "fits" / "nuts.json", out_dir=stage, all_outcomes=True)
        write_json(stage / "fits" / "exact.json", fits_json(run.exact, all_outcomes=True))
        write_csv(stage / "tables" / "pooled_summary_exact.csv", pooled_table(run.exact))
        write_csv(stage / "tables" / "engine_check.csv", engine_check(run.nuts, run.exact))
        write_check_figures(run, stage / "figures")
        write_check_tables(run, stage / "tables")
        markdown = build_report_markdown(run)
        write_text_atomic(stage / "report.md", markdown)
        write_text_atomic(stage / "report.html", markdown_to_html(markdown, folder=stage, title=f"evmeta report: {run.dataset.name}"))
        write_json(stage / "manifest.json", manifest(run, elapsed))
    return Path(out_dir)
