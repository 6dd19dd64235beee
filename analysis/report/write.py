"""The report: writes fit outputs and the analysis report (``report.md``, figures, tables, manifest).

Everything goes through the atomic writers of :mod:`analysis.report.files`, so an interrupted run
leaves complete files or none.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from analysis.atomic import staged_directory, write_bytes_atomic, write_text_atomic
from analysis.config import INTERVAL_KIND
from analysis.plots.forest import forest_plot, pooled_summary_plot
from analysis.plots.meta_regression import subgroup_plot
from analysis.plots.risk_of_bias import rob_columns, rob_summary_plot
from analysis.report.artifacts import MultivariateArtifacts, RunResult
from analysis.report.figures import FIGURES_DIR, figure_stem
from analysis.report.files import (
    figure_bytes,
    pooled_table,
    save_posterior,
    write_csv,
    write_figure,
    write_json,
)
from analysis.report.html import markdown_to_html
from analysis.report.manifest import git_revision, package_versions
from analysis.report.markdown import build_report_markdown
from analysis.results.bias_averaged import BiasAveragedResult
from analysis.results.meta_regression import MetaRegressionResult
from analysis.results.outcome import OutcomeFit
from analysis.results.random_effects import MetaAnalysisResult


def fits_json(results: Sequence[OutcomeFit], *, all_outcomes: bool, skipped: Mapping[str, str] | None = None) -> dict:
    """The JSON object of ``evmeta fit``: one fit's dict, or ``{dataset, fits: {outcome: dict}[, skipped]}``.

    ``skipped`` maps each outcome whose model could not run on its data (``--all``) to the reason.
    """
    if not all_outcomes and len(results) == 1:
        return results[0].to_dict()
    out = {
        "dataset": results[0].dataset if results else None,
        "provenance": results[0].provenance if results else None,
        "fits": {r.outcome.id: r.to_dict() for r in results},
    }
    return out | ({"skipped": dict(skipped)} if skipped else {})


def write_fit_outputs(
    results: Sequence[OutcomeFit],
    *,
    json_path: Path | None,
    out_dir: Path | None,
    all_outcomes: bool,
    skipped: Mapping[str, str] | None = None,
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
    skipped : mapping of str to str, optional
        Outcomes not fitted because the model's precondition fails on their data, with the reason.
    """
    written: list[Path] = []
    if json_path is not None:
        written.append(write_json(json_path, fits_json(results, all_outcomes=all_outcomes, skipped=skipped)))
    if out_dir is not None and results:
        written += write_fit_figures(results, Path(out_dir) / FIGURES_DIR)
        written += write_fit_tables(results, Path(out_dir) / "tables")
        for result in results:
            path = save_posterior(result, Path(out_dir) / "posteriors" / f"{result.outcome.id}.nc")
            written += [path] if path else []
    return written


def write_fit_figures(results: Sequence[MetaAnalysisResult], folder: Path) -> list[Path]:
    """Forest plot per outcome and, for several outcomes, the pooled summary figure."""
    written = []
    pooled = [r for r in results if isinstance(r, MetaAnalysisResult)]
    for result in results:
        if isinstance(result, MetaAnalysisResult):
            written += write_figure(
                forest_plot(result, measure=result.measure), folder / figure_stem("forest", result.outcome.id)
            )
        elif isinstance(result, MetaRegressionResult):
            written += write_figure(subgroup_plot(result), folder / figure_stem("subgroups", result.outcome.id))
    if len(pooled) > 1:
        written += write_figure(
            pooled_summary_plot(pooled, measure=pooled[0].measure), folder / figure_stem("pooled_summary")
        )
    return written


def write_fit_tables(results: Sequence[MetaAnalysisResult], folder: Path) -> list[Path]:
    """Pooled summary table (one row per outcome) and the study-effects table of each outcome.

    A bias-averaged fit writes its model table (``models_<outcome>.csv``: name, components, prior
    and posterior probability, log marginal likelihood) instead of study effects.
    """
    pooled = [r for r in results if isinstance(r, MetaAnalysisResult)]
    written = [write_csv(folder / "pooled_summary.csv", pooled_table(pooled))] if pooled else []
    for result in results:
        if isinstance(result, BiasAveragedResult):
            models = pd.DataFrame(
                [{k: v for k, v in m.items() if k != "posterior"} for m in result.to_dict()["models"]]
            )
            written.append(write_csv(folder / f"models_{result.outcome.id}.csv", models))
        else:
            written.append(write_csv(folder / f"studies_{result.outcome.id}.csv", result.studies))
    return written


def manifest(run: RunResult, elapsed: float) -> dict:
    """The ``manifest.json`` content of a run (provenance of every number in the report)."""
    ds = run.dataset
    return {
        "dataset": {"name": ds.name, "path": str(ds.path), "provenance": ds.provenance, "sha256": ds.sha256()},
        "packages": package_versions(),
        "git_revision": git_revision(),
        "engine": run.engine,
        "seeds": {r.outcome.id: r.settings.get("seed") for r in run.primary},
        "priors": run.priors.to_dict(),
        "sampler": asdict(run.sampler),
        "interval": INTERVAL_KIND,
        "run_time_seconds": round(elapsed, 3),
        "timings_seconds": {k: round(v, 3) for k, v in run.timings.items()},
        "fits": {
            oid: {
                "engine": a.primary.engine,
                "converged": a.primary.converged,
                "retried": a.primary.retried,
                "diagnostics": None if a.primary.diagnostics is None else a.primary.diagnostics.to_dict(),
                "from_cache": a.cache_hit,
                "timings_seconds": {k: round(v, 3) for k, v in a.timings.items()},
            }
            for oid, a in run.outcomes.items()
        },
        "failed_fits": run.failed,
        "multivariate": None
        if run.multivariate is None
        else {
            "outcomes": list(run.multivariate.outcomes),
            "converged": run.multivariate.converged,
            "from_cache": run.multivariate.cache_hit,
            "timings_seconds": {k: round(v, 3) for k, v in run.multivariate.timings.items()},
        },
        "run_key": run.key,
    }


def write_artifacts(run: RunResult, stage: Path) -> None:
    """Figures, stacked tables, per-outcome JSON and posteriors of every outcome."""
    stacked: dict[str, list[pd.DataFrame]] = {}
    for oid, art in run.outcomes.items():
        for stem, formats in art.figures.items():
            for fmt, data in formats.items():
                write_bytes_atomic(stage / FIGURES_DIR / f"{stem}.{fmt}", data)
        for name, frame in art.tables.items():
            if name.startswith("studies_"):
                write_csv(stage / "tables" / f"{name}.csv", frame)
            else:
                stacked.setdefault(name, []).append(frame)
        if art.posterior_nc is not None:
            write_bytes_atomic(stage / "posteriors" / f"{oid}.nc", art.posterior_nc)
    for name, frames in stacked.items():
        write_csv(stage / "tables" / f"{name}.csv", pd.concat(frames, ignore_index=True))
    if run.multivariate is not None:
        write_multivariate(run.multivariate, stage)
    kinds = ("arm", "nuts", "exact", "ppc", "loo_pit", "decision", "rob", "subgroups", "small_study", "influence")
    kinds += ("reproduction",)
    for kind in (*kinds, "skipped"):
        parts = {oid: art.jsons[kind] for oid, art in run.outcomes.items() if kind in art.jsons}
        if parts:
            write_json(
                stage / "fits" / f"{kind}.json",
                {"dataset": run.dataset.name, "provenance": run.dataset.provenance, "fits": parts},
            )


def write_multivariate(art: MultivariateArtifacts, stage: Path) -> None:
    """Figures, tables, JSON and posterior of the multivariate model."""
    for stem, formats in art.figures.items():
        for fmt, data in formats.items():
            write_bytes_atomic(stage / FIGURES_DIR / f"{stem}.{fmt}", data)
    for name, frame in art.tables.items():
        write_csv(stage / "tables" / f"{name}.csv", frame)
    write_json(stage / "fits" / "multivariate.json", art.json)
    if art.posterior_nc is not None:
        write_bytes_atomic(stage / "posteriors" / "multivariate.nc", art.posterior_nc)


def write_summary_figures(run: RunResult, folder: Path) -> None:
    """Figures across outcomes: the pooled summary and the SYRCLE risk-of-bias figure."""
    figures = {}
    if run.primary:
        figures[figure_stem("pooled_summary")] = figure_bytes(
            pooled_summary_plot(run.primary, measure=run.primary[0].measure)
        )
    if rob_columns(run.dataset.studies):
        figures[figure_stem("risk_of_bias")] = figure_bytes(
            rob_summary_plot(run.dataset.studies, simulated=run.dataset.is_simulated)
        )
    for stem, formats in figures.items():
        for fmt, data in formats.items():
            write_bytes_atomic(folder / f"{stem}.{fmt}", data)


RUN_TOP_LEVEL = ("report.md", "report.html", "manifest.json")
#: Folders a run writes; any other folder of the report folder (another dataset's report) is kept.
RUN_FOLDERS = (FIGURES_DIR, "tables", "fits", "posteriors")


def _keep_foreign_files(out_dir: Path, stage: Path) -> None:
    """Carry over what the run does not make: top-level files (``benchmark.json``, ``simulation_study.*``)
    and other folders (e.g. ``reports/fst_martins2025/``, the report of another dataset)."""
    if not out_dir.is_dir():
        return
    for path in out_dir.iterdir():
        if path.name.startswith("."):
            continue
        if path.is_file() and path.name not in RUN_TOP_LEVEL:
            write_bytes_atomic(stage / path.name, path.read_bytes())
        elif path.is_dir() and path.name not in RUN_FOLDERS:
            shutil.copytree(path, stage / path.name, symlinks=True)


def write_run_report(run: RunResult, out_dir: Path, *, elapsed: float) -> Path:
    """Write the whole report of a run to ``out_dir`` (replaced only once complete).

    Layout: ``report.md``, ``report.html`` (self-contained), ``manifest.json``, ``figures/`` (SVG),
    ``tables/`` (CSV), ``fits/`` (JSON: NUTS, exact, PPC, subgroups), ``posteriors/`` (NetCDF DataTrees).
    """
    with staged_directory(Path(out_dir)) as stage:
        _keep_foreign_files(Path(out_dir), stage)
        write_csv(stage / "tables" / "effects.csv", run.table.data)
        if run.table.covariance:
            write_csv(stage / "tables" / "effects.covariance.csv", run.table.covariance_long())
        write_artifacts(run, stage)
        write_summary_figures(run, stage / FIGURES_DIR)
        write_csv(stage / "tables" / "pooled_summary.csv", pooled_table(run.primary))
        write_csv(stage / "tables" / "pooled_summary_exact.csv", pooled_table(run.exact))
        markdown = build_report_markdown(run)
        write_text_atomic(stage / "report.md", markdown)
        write_text_atomic(
            stage / "report.html", markdown_to_html(markdown, folder=stage, title=f"evmeta report: {run.dataset.name}")
        )
        write_json(stage / "manifest.json", manifest(run, elapsed))
    return Path(out_dir)
